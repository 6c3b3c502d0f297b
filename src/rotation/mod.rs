//! The rotation core that `rotate` and `sync` share: install new sealed
//! values for one or many credentials under one held apply lock, keep each
//! replaced value as a generation, apply once to the union of their
//! consumers, verify every consumer (its unit active again, and restarted
//! when a restart was queued, on a live system; its health check), and put
//! back the previous value of EVERY credential of the batch when any
//! verification fails.
//!
//! Sealing happens before (the caller owns where values come from); nothing
//! here sees plaintext except the health check's environment, decrypted
//! again from the sealed files.

mod health_check;
mod job;
mod served;
mod undo;
mod unit_wait;
mod verify;

use serde::Serialize;

use crate::apply::Report;
use crate::generations::Info;
use crate::sealed::StoreError;

pub use job::rotate;
pub use served::Served;
pub use verify::{apply_and_verify, Check, Verified};

/// Why a rotation could not run at all (a failed verification is not an
/// error: it is a rollback, reported in [`Rotation`]).
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// Sealed files or generations could not be read or written.
    #[error("{0}")]
    Environment(String),
    /// The apply could not run at all.
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    /// The creds dir or a sealed file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// It failed after new values were installed; `undo` says how putting
    /// the previous values back went.
    #[error("{error}; {undo}")]
    Undone {
        /// What stopped the rotation.
        error: Box<RotationError>,
        /// Which previous values are back, and which could not be put back
        /// (with the generation that holds each).
        undo: String,
    },
}

/// One credential's new value, already sealed.
pub struct NewValue {
    /// The credential.
    pub name: String,
    /// Its new value, sealed with `systemd-creds`.
    pub sealed: Vec<u8>,
    /// What to record about `sealed` (digest, key, not-after).
    pub info: Info,
    /// The value masked, and its length: for reports only.
    pub masked: String,
    /// The value's length in bytes.
    pub length: usize,
}

/// What happened to one credential of the batch.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    /// The credential.
    pub name: String,
    /// Its new value, masked.
    pub value: Masked,
    /// The generation the replaced value is kept as; `None` when the
    /// credential did not exist before (a first `sync`), or when the
    /// rotation was rolled back (that value is current again, and its
    /// generation was dropped rather than kept as a duplicate).
    pub previous_generation: Option<u32>,
    /// After a rollback: the generation the rejected new value is kept as,
    /// marked rejected, for a deliberate retry (`rollback --to N`).
    pub rejected_generation: Option<u32>,
    /// Its consumers, sorted.
    pub consumers: Vec<String>,
}

/// A value as reports show it: masked (`abc...***`), and its length.
#[derive(Debug, Clone, Serialize)]
pub struct Masked {
    /// Its first characters, then `...***`.
    pub masked: String,
    /// Its length in bytes.
    pub length: usize,
}

/// How a batch went; serializable, never holds a value.
#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    /// Each credential of the batch, in order.
    pub credentials: Vec<Installed>,
    /// The union of the consumers, sorted.
    pub consumers: Vec<String>,
    /// Whether the new values were applied (not when staged only, nor
    /// when nobody consumes them).
    pub applied: bool,
    /// Whether units were looked at (false under `--root` / without systemd).
    pub units_checked: bool,
    /// The apply of the new values.
    pub apply: Option<Report>,
    /// Each consumer's verification with the new values.
    pub verification: Vec<Check>,
    /// `None` when nothing was applied.
    pub verified: Option<bool>,
    /// A consumer did not verify, and the previous values were put back.
    pub rolled_back: bool,
    /// The re-apply of the previous values, when rolled back.
    pub rollback: Option<Rollback>,
    /// The human account of it, line by line.
    #[serde(skip)]
    pub human: String,
}

impl Rotation {
    /// Nothing done yet.
    fn new(units_checked: bool) -> Rotation {
        Rotation {
            credentials: Vec::new(),
            consumers: Vec::new(),
            applied: false,
            units_checked,
            apply: None,
            verification: Vec::new(),
            verified: None,
            rolled_back: false,
            rollback: None,
            human: String::new(),
        }
    }
}

/// The re-apply of the previous values after a failed verification.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// The apply of the previous values.
    pub apply: Report,
    /// Each consumer's verification with them.
    pub verification: Vec<Check>,
    /// Every consumer verified with the previous values.
    pub verified: bool,
}
