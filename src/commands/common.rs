//! What several commands share: the preamble of the commands that change
//! one credential under the apply lock, opening its generations, and what
//! a command says of a credential's consumers.

use serde_json::json;
use thiserror::Error;

use super::{CommandError, Context};
use crate::config::Config;
use crate::generations::History;
use crate::lock::Lock;
use crate::rotation::Served;
use crate::safefs::{Dir, FsError};
use crate::sealed::creds_dir;
use crate::{apply, names};

/// What `seal`, `rotate` and `rollback` change one credential with: the
/// configuration, the apply lock (held until this is dropped), the creds
/// dir and the services as apply serves them, read under the lock.
pub(super) struct Locked {
    pub config: Config,
    pub held: Lock,
    pub creds: Dir,
    pub served: Served,
}

impl Locked {
    /// Checks the credential's `name`, loads the configuration with `load`
    /// and takes the apply lock; then opens the creds dir (created if
    /// missing) and reads what is served.
    pub fn take(
        ctx: &Context,
        name: &str,
        load: fn(&Context) -> Result<Config, CommandError>,
    ) -> Result<Locked, CommandError> {
        names::credential(name)?;
        let config = load(ctx)?;
        let (_state_dir, held) = apply::lock(&config, &ctx.root)?;
        let creds = creds_dir(&ctx.root, &config.loader)?;
        let served = Served::load(&ctx.root, &config)?;
        Ok(Locked {
            config,
            held,
            creds,
            served,
        })
    }
}

/// The generations of `name` (see [`History::open`]).
pub(super) fn history(
    ctx: &Context,
    config: &Config,
    name: &str,
    create: bool,
) -> Result<History, CommandError> {
    History::open(&ctx.root, &config.loader.state_dir, name, create)
        .map_err(|e| GenerationsError::list(name)(e).into())
}

/// A credential's kept generations could not be read or written (exit 3),
/// or it has none and no current value either (exit 2).
#[derive(Debug, Error)]
pub enum GenerationsError {
    /// They could not be opened or listed.
    #[error("credential {name}: generations")]
    List {
        /// The credential.
        name: String,
        /// Why.
        #[source]
        error: FsError,
    },
    /// Generation `number` could not be read.
    #[error("credential {name}: generation {number}")]
    Read {
        /// The credential.
        name: String,
        /// The generation.
        number: u32,
        /// Why.
        #[source]
        error: FsError,
    },
    /// Generation `number` was listed, and gone when it was read.
    #[error("credential {name}: generation {number} vanished")]
    Vanished {
        /// The credential.
        name: String,
        /// The generation.
        number: u32,
    },
    /// A value (`the current value`, `the sealed value`...) could not be
    /// kept as a new generation.
    #[error("credential {name}: keeping {value}")]
    Keep {
        /// The credential.
        name: String,
        /// Which value.
        value: &'static str,
        /// Why.
        #[source]
        error: FsError,
    },
    /// Nothing to list: no current value, no kept generation.
    #[error(
        "credential {name} does not exist and has no kept generations; seal it with `credloader seal {name}`"
    )]
    Unknown {
        /// The credential.
        name: String,
    },
}

impl GenerationsError {
    /// [`GenerationsError::List`] of `name`, for `map_err`.
    pub(super) fn list(name: &str) -> impl FnOnce(FsError) -> GenerationsError + '_ {
        move |error| GenerationsError::List {
            name: name.to_string(),
            error,
        }
    }

    /// Exit 2 for a credential that is not there at all, else 3.
    pub(super) fn exit_code(&self) -> u8 {
        match self {
            GenerationsError::Unknown { .. } => crate::exit::USAGE,
            _ => crate::exit::ENVIRONMENT,
        }
    }
}

/// Says in `human` and `doc` what `served` knows of a credential's
/// `consumers` ([`Served::note`]): why some are served from their last good
/// definition, and whether a broken or refused file may hide one. True in
/// that last case: the command must then not end as if nothing were to do.
pub(super) fn say_note(
    served: &Served,
    consumers: &[String],
    human: &mut String,
    doc: &mut serde_json::Value,
) -> bool {
    if !served.problems.is_empty() {
        doc["config_errors"] = json!(served.problems);
    }
    match served.note(consumers) {
        Some((text, hidden)) => {
            human.push_str(&text);
            hidden
        }
        None => false,
    }
}
