//! What several commands share: the preamble of the commands that change
//! one credential under the apply lock, opening its generations, and what
//! a command says of a credential's consumers.

use serde_json::json;

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
        .map_err(|e| generations_error(name, e))
}

/// A credential's generations could not be read or written.
pub(super) fn generations_error(name: &str, e: FsError) -> CommandError {
    CommandError::Environment(format!("credential {name}: generations: {e}"))
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
