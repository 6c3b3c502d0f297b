//! credloader: sealed systemd credentials into the services that need them.
//!
//! The `apply` pipeline is a few plain stages, each a module:
//! `config` (load) → `creds` (read and decrypt) → [`envfile`] and
//! [`dropin`] (render) → `safefs` (write) → `systemd` (reload/restart),
//! tied together by `apply`. Plaintext only ever lives in `secret::Secret`.
//! docs/architecture.md ("Layout") says what each module owns.
//!
//! The library exists for the `credloader` binary and for the project's own
//! tests, fuzz targets and benchmarks: every module is private, and this is
//! the whole public surface, chosen for those users:
//!
//! - what `main` needs to run a command line: [`Cli`], [`run`], its
//!   [`Output`] or [`CommandError`], the exit codes ([`exit`]), and the
//!   process setup ([`no_core_dumps`], [`drop_capabilities`],
//!   [`init_logging`], [`Hints`], the generator's [`generator_main`] and
//!   [`GENERATOR_NAME`], shell completion's [`COMPLETE_VAR`]);
//! - the file formats credloader reads and writes, which the tests and fuzz
//!   targets check exactly as the binary uses them: [`config`] (the
//!   configuration), [`envfile`] (env files), [`dropin`] (the unit drop-in)
//!   and [`unitfile`] (unit files read as PID 1 reads them).
#![deny(missing_docs)]

mod apply;
mod audit;
mod boot;
mod chain;
mod cli;
mod commands;
mod complete;
pub mod config;
mod creds;
pub mod dropin;
pub mod envfile;
mod envplace;
mod escape;
pub mod exit;
mod generations;
mod harden;
mod health;
mod hint;
mod holds;
mod import;
mod lock;
mod logging;
mod manifest;
mod manpage;
mod names;
mod newline;
mod overrides;
mod provenance;
mod root;
mod rotation;
mod runas;
mod safefs;
mod sealed;
mod secret;
mod sources;
mod stamp;
mod state;
mod systemd;
mod systemd_creds;
pub mod unitfile;
mod users;

pub use boot::{generator_main, GENERATOR_NAME};
pub use cli::Cli;
pub use commands::{run, CommandError, Output};
pub use complete::VAR as COMPLETE_VAR;
pub use harden::{drop_capabilities, no_core_dumps};
pub use hint::Hints;
pub use logging::init as init_logging;
