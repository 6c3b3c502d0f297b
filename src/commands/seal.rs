//! `credloader seal NAME`: read a new credential's value, check it, seal
//! it and install the sealed file; `credloader apply` delivers it.

use std::fmt::Write as _;

use std::path::PathBuf;

use serde_json::json;
use thiserror::Error;

use super::common::{say_note, Locked};
use super::value::{self, SealedValue};
use super::{CommandError, Context, Output};
use crate::cli::SealArgs;
use crate::creds::Store;
use crate::escape::ShowPath;
use crate::escape::Shown;
use crate::generations;
use crate::rotation::Served;
use crate::safefs::{Dir, FsError};
use crate::sealed::install;
use crate::{exit, systemd_creds};

/// Why `seal` does not make a new credential.
#[derive(Debug, Error)]
pub enum SealError {
    /// It exists already: `rotate` replaces its value (exit 2).
    #[error(
        "credential {name} already exists ({}); replace its value with `credloader rotate {name}`",
        Shown(path)
    )]
    Exists {
        /// The credential.
        name: String,
        /// Its sealed file.
        path: PathBuf,
    },
    /// Whether it exists cannot be told (exit 3).
    #[error(transparent)]
    Unknowable(FsError),
}

impl SealError {
    /// 2 for a credential that exists, 3 when that cannot be told.
    pub(super) fn exit_code(&self) -> u8 {
        match self {
            SealError::Exists { .. } => exit::USAGE,
            SealError::Unknowable(_) => exit::ENVIRONMENT,
        }
    }
}

pub fn run(ctx: &Context, args: SealArgs) -> Result<Output, CommandError> {
    let name = args.name;
    let locked = Locked::take(ctx, &name, Context::load_config_or_default)?;
    refuse_existing(&locked.creds, &name)?;
    let new = value::take(&locked.config, &locked.served, &name, &args.input)?;
    install(&locked.creds, &name, &new.sealed)?;
    let state_dir = &locked.config.loader.state_dir;
    generations::record_current(&ctx.root, state_dir, &name, new.info.clone());
    Ok(output(&name, &locked.creds, &locked.served, &new))
}

/// A credential that exists already is rotated, not sealed again.
fn refuse_existing(creds: &Dir, name: &str) -> Result<(), SealError> {
    let file = Store::file_name(name);
    // Only a file known to be absent may be sealed anew: one that cannot be
    // looked at may be the only copy of a key.
    let exists = creds.entry(&file).map_err(SealError::Unknowable)?;
    if exists.is_none() {
        return Ok(());
    }
    Err(SealError::Exists {
        name: name.to_string(),
        path: creds.path().join(file),
    })
}

/// What `seal` says: what was sealed where, and who will get it. Exit 1
/// when a broken file may hide its consumers.
fn output(name: &str, creds: &Dir, served: &Served, new: &SealedValue) -> Output {
    let consumers = served.consumer_names(name);
    let path = creds.path().join(Store::file_name(name));
    let key = systemd_creds::sealed_key(&new.sealed);
    let mut human = format!(
        "sealed credential {name} into {} ({} bytes sealed, key {}{})\n",
        path.shown(),
        new.sealed.len(),
        key.unwrap_or("unknown"),
        new.not_after
            .map(|t| format!(", not after {}", generations::format_utc(t)))
            .unwrap_or_default()
    );
    if let Some(note) = new.entered.note(name) {
        let _ = writeln!(human, "{note}");
    }
    let mut doc = json!({
        "name": name,
        "path": path,
        "sealed_size": new.sealed.len(),
        "key": key,
        "not_after": new.not_after,
        "consumers": consumers,
        "value": value::value_doc(&new.entered),
    });
    let hidden = say_note(served, &consumers, &mut human, &mut doc);
    human.push_str(&next_step(name, &consumers, hidden));
    let code = if hidden { exit::FAILED } else { exit::OK };
    Output::new(code, human, doc)
}

/// The line that says what happens next to a credential just sealed.
fn next_step(name: &str, consumers: &[String], hidden: bool) -> String {
    if hidden {
        return format!("{name} is sealed, but nothing may get it until then\n");
    }
    if !consumers.is_empty() {
        return format!(
            "used by: {}; deliver it with `credloader apply`\n",
            crate::escape::text(&consumers.join(", "))
        );
    }
    // `credentials = [NAME]` makes NAME the variable too, which must be
    // a valid one; any credential can be mapped with `env`.
    let how = if crate::envfile::valid_name(name) {
        "add it to a service's `credentials`".to_string()
    } else {
        format!("map it to a variable in a service's `env` (`env = {{ SOME_VAR = \"{name}\" }}`)")
    };
    format!("no service uses {name} yet; {how} and run `credloader apply`\n")
}
