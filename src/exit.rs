//! Exit codes, the same for every command (docs/exit-codes.md).

/// Everything asked for was done.
pub const OK: u8 = 0;
/// Some services failed (the others were served), or `check` found problems.
pub const FAILED: u8 = 1;
/// Bad arguments or a bad configuration: nothing was changed.
pub const USAGE: u8 = 2;
/// credloader could not run: lock timeout, unusable state dir, missing tools.
pub const ENVIRONMENT: u8 = 3;
/// `rotate`: the new value failed verification and the previous one was restored.
pub const ROLLED_BACK: u8 = 4;
/// `sync`: the remote source was unreachable, refused us or throttled us;
/// every local credential was kept.
pub const SOURCE: u8 = 5;
