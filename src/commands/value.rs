//! A new value as it enters credloader, for `seal`, `rotate`, `sync` and
//! `import`: read (`--from-file`, stdin or the terminal), put through the
//! newline policy ([`newline`]), checked against every env file that will
//! carry it, and sealed.

use std::io::IsTerminal;

use serde_json::json;

use super::prompt::{prompt, raw_stdin};
use super::CommandError;
use crate::cli::ValueInput;
use crate::config::{Config, Delivery, Source};
use crate::creds::hex_digest;
use crate::escape::ShowPath;
use crate::generations::{self, Info};
use crate::newline::{self, Entered};
use crate::rotation::Served;
use crate::secret::{read_secret, Secret};
use crate::systemd_creds::{self, Key, MAX_PLAINTEXT};
use crate::{envfile, state};

/// A value read, entered, checked and sealed (what `seal` and `rotate`
/// take).
pub(super) struct SealedValue {
    pub entered: Entered,
    pub sealed: Vec<u8>,
    pub info: Info,
    pub not_after: Option<u64>,
}

/// Reads the value of `name` as `input` says, applies the newline policy,
/// checks it for every consumer in `served` and seals it.
pub(super) fn take(
    config: &Config,
    served: &Served,
    name: &str,
    input: &ValueInput,
) -> Result<SealedValue, CommandError> {
    let entered = enter(config, served, name, read_value(input, name)?)?;
    validate(served, name, &entered.value)?;
    let not_after = not_after(input)?;
    let (sealed, info) = seal(name, &entered.value, input.key, not_after)?;
    Ok(SealedValue {
        entered,
        sealed,
        info,
        not_after,
    })
}

/// Seals `value`; returns the sealed bytes and what to record about them.
pub(super) fn seal(
    name: &str,
    value: &Secret,
    key: Key,
    not_after: Option<u64>,
) -> Result<(Vec<u8>, Info), CommandError> {
    let at = not_after.map(|t| format!("@{t}"));
    let sealed = systemd_creds::encrypt(name, value, key, at.as_deref()).map_err(|e| {
        CommandError::Environment(format!("credential {name}: sealing failed: {e}"))
    })?;
    let info = Info {
        digest: hex_digest(&sealed),
        not_after,
        key: Some(
            systemd_creds::sealed_key(&sealed)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{key:?}").to_lowercase()),
        ),
        sealed_at: Some(state::now()),
    };
    Ok((sealed, info))
}

pub(super) fn not_after(input: &ValueInput) -> Result<Option<u64>, CommandError> {
    input
        .not_after
        .as_deref()
        .map(|t| generations::parse_not_after(t, state::now()))
        .transpose()
        .map_err(|e| CommandError::Usage(e.to_string()))
}

/// Whether `name` keeps a trailing newline: `[credentials.NAME]
/// keep_newline = true`, as the configuration has it now or as a service
/// served from its last good definition had it.
pub(super) fn keeps_newline(config: &Config, served: &Served, name: &str) -> bool {
    config.keeps_newline(name)
        || served
            .consumers(name)
            .any(|s| s.keep_newline.contains(name))
}

/// `value`, about to be sealed as `name`, after the newline policy
/// ([`newline`]); refused when nothing but line breaks is left of it.
pub(super) fn enter(
    config: &Config,
    served: &Served,
    name: &str,
    value: Secret,
) -> Result<Entered, CommandError> {
    let entered = newline::enter(value, keeps_newline(config, served, name));
    if entered.value.is_empty() && entered.removed > 0 {
        return Err(CommandError::Usage(format!(
            "credential {name}: the value is nothing but a line break; nothing was sealed"
        )));
    }
    Ok(entered)
}

/// The JSON of a value that entered: masked, its length as sealed, and
/// what the newline policy did to it.
pub(super) fn value_doc(entered: &Entered) -> serde_json::Value {
    json!({
        "masked": entered.value.masked(),
        "length": entered.value.len(),
        "newline_removed": entered.removed > 0,
        "newline_kept": entered.kept,
    })
}

/// Checks a value before sealing: not empty, within systemd-creds' limits,
/// and carriable by every env file that will hold it (those of the services
/// served from their last good definition too).
pub(super) fn validate(served: &Served, name: &str, value: &Secret) -> Result<(), CommandError> {
    if value.is_empty() {
        return Err(CommandError::Usage(format!(
            "credential {name}: the value is empty; nothing was sealed"
        )));
    }
    if value.len() > MAX_PLAINTEXT {
        return Err(CommandError::Usage(format!(
            "credential {name}: the value is {} bytes; systemd-creds can carry at most {MAX_PLAINTEXT}",
            value.len()
        )));
    }
    for service in served.services.values() {
        if service.delivery != Delivery::Env {
            continue;
        }
        for var in &service.vars {
            if var.source == Source::Credential(name.to_string()) {
                if let Err(e) = envfile::check_value(&var.name, value.expose()) {
                    return Err(CommandError::Usage(format!(
                        "credential {name}: service {} gets it as variable {} through an env file, \
                         and the value {e}; nothing was sealed",
                        service.name, var.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Reads the value: `--from-file`, else stdin; on a terminal, asks twice
/// without echo.
pub(super) fn read_value(input: &ValueInput, name: &str) -> Result<Secret, CommandError> {
    if let Some(path) = &input.from_file {
        let file = std::fs::File::open(path).map_err(|e| {
            CommandError::Usage(format!(
                "credential {name}: cannot read {}: {e}",
                path.shown()
            ))
        })?;
        return read_secret(file, MAX_PLAINTEXT + 1)
            .map_err(|e| read_error(name, e, || format!("cannot read {}", path.shown())));
    }
    if std::io::stdin().is_terminal() {
        return ask_twice(name);
    }
    read_secret(&*raw_stdin(), MAX_PLAINTEXT + 1)
        .map_err(|e| read_error(name, e, || "cannot read stdin".to_string()))
}

/// A value that could not be read from `what`: too large, or the error.
fn read_error(name: &str, e: std::io::Error, what: impl FnOnce() -> String) -> CommandError {
    CommandError::Usage(match e.kind() {
        std::io::ErrorKind::InvalidData => format!(
            "credential {name}: the value is larger than {MAX_PLAINTEXT} bytes, the most systemd-creds can carry"
        ),
        _ => format!("credential {name}: {}: {e}", what()),
    })
}

/// The value from the terminal, entered twice the same.
fn ask_twice(name: &str) -> Result<Secret, CommandError> {
    let first = prompt(&format!("Value for {name}: "))?;
    let second = prompt(&format!("Again, to confirm {name}: "))?;
    if !first.ct_eq(second.expose()) {
        return Err(CommandError::Usage(format!(
            "credential {name}: the two entries differ; nothing was sealed"
        )));
    }
    Ok(first)
}
