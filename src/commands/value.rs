//! A new value as it enters credloader, for `seal`, `rotate`, `sync` and
//! `import`: read (`--from-file`, stdin or the terminal), put through the
//! newline policy ([`newline`]), checked against every env file that will
//! carry it, and sealed.

use std::io::IsTerminal;
use std::path::PathBuf;

use serde_json::json;
use thiserror::Error;

use super::prompt::{prompt, raw_stdin, PromptError};
use crate::cli::ValueInput;
use crate::config::{Config, Delivery, Source};
use crate::creds::hex_digest;
use crate::escape::ShowPath;
use crate::generations::{self, Info, NotAfterError};
use crate::newline::{self, Entered};
use crate::rotation::Served;
use crate::secret::{read_secret, Secret};
use crate::systemd_creds::{self, CredsError, Key, MAX_PLAINTEXT};
use crate::{envfile, exit, state};

/// Why a new value was not sealed.
#[derive(Debug, Error)]
pub enum ValueError {
    /// A check refused the value (exit 2).
    #[error("{0}; nothing was sealed")]
    Refused(Refusal),
    /// More than systemd-creds can carry (exit 2).
    #[error("credential {name}: the value is {len} bytes; systemd-creds can carry at most {MAX_PLAINTEXT}")]
    TooLarge {
        /// The credential.
        name: String,
        /// The value's length.
        len: usize,
    },
    /// A bad `--not-after` (exit 2).
    #[error(transparent)]
    NotAfter(#[from] NotAfterError),
    /// The value could not be read (exit 2).
    #[error("credential {name}: cannot read {from}")]
    Read {
        /// The credential.
        name: String,
        /// Where from.
        from: Input,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// What was read is more than systemd-creds can carry (exit 2).
    #[error("credential {name}: the value is larger than {MAX_PLAINTEXT} bytes, the most systemd-creds can carry")]
    ReadTooLarge {
        /// The credential.
        name: String,
    },
    /// The terminal could not be asked, or the operator cancelled.
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// systemd-creds could not seal it (exit 3).
    #[error("credential {name}: sealing failed")]
    Seal {
        /// The credential.
        name: String,
        /// What systemd-creds said.
        #[source]
        error: CredsError,
    },
}

impl ValueError {
    /// Its exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            ValueError::Prompt(e) => e.exit_code(),
            ValueError::Seal { .. } => exit::ENVIRONMENT,
            _ => exit::USAGE,
        }
    }
}

/// A value refused by a check before sealing. (Its text does not say that
/// nothing was sealed: `seal` adds that, `sync` says the local copy was
/// kept.)
#[derive(Debug, Error)]
pub enum Refusal {
    /// Nothing but line breaks, which the newline policy removes.
    #[error("credential {name}: the value is nothing but a line break")]
    OnlyLineBreaks {
        /// The credential.
        name: String,
    },
    /// An empty value.
    #[error("credential {name}: the value is empty")]
    Empty {
        /// The credential.
        name: String,
    },
    /// An env file that will hold it cannot carry it.
    #[error(
        "credential {name}: service {service} gets it as variable {var} through an env file, \
         and the value {why}"
    )]
    NotCarriable {
        /// The credential.
        name: String,
        /// The service whose env file would hold it.
        service: String,
        /// The variable.
        var: String,
        /// Why the env file cannot carry it (part of the sentence).
        why: envfile::ValueError,
    },
    /// The two entries on the terminal differ.
    #[error("credential {name}: the two entries differ")]
    Differ {
        /// The credential.
        name: String,
    },
}

/// Where a value is read from, as messages name it.
#[derive(Debug)]
pub enum Input {
    /// `--from-file PATH`.
    File(PathBuf),
    /// Standard input.
    Stdin,
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::File(path) => write!(f, "{}", path.shown()),
            Input::Stdin => f.write_str("stdin"),
        }
    }
}

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
) -> Result<SealedValue, ValueError> {
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
) -> Result<(Vec<u8>, Info), ValueError> {
    let at = not_after.map(|t| format!("@{t}"));
    let sealed = systemd_creds::encrypt(name, value, key, at.as_deref()).map_err(|error| {
        ValueError::Seal {
            name: name.to_string(),
            error,
        }
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

pub(super) fn not_after(input: &ValueInput) -> Result<Option<u64>, ValueError> {
    Ok(input
        .not_after
        .as_deref()
        .map(|t| generations::parse_not_after(t, state::now()))
        .transpose()?)
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
) -> Result<Entered, ValueError> {
    let entered = newline::enter(value, keeps_newline(config, served, name));
    if entered.value.is_empty() && entered.removed > 0 {
        return Err(ValueError::Refused(Refusal::OnlyLineBreaks {
            name: name.to_string(),
        }));
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
pub(super) fn validate(served: &Served, name: &str, value: &Secret) -> Result<(), ValueError> {
    if value.is_empty() {
        return Err(ValueError::Refused(Refusal::Empty {
            name: name.to_string(),
        }));
    }
    if value.len() > MAX_PLAINTEXT {
        return Err(ValueError::TooLarge {
            name: name.to_string(),
            len: value.len(),
        });
    }
    for service in served.services.values() {
        if service.delivery != Delivery::Env {
            continue;
        }
        for var in &service.vars {
            if var.source == Source::Credential(name.to_string()) {
                if let Err(why) = envfile::check_value(&var.name, value.expose()) {
                    return Err(ValueError::Refused(Refusal::NotCarriable {
                        name: name.to_string(),
                        service: service.name.clone(),
                        var: var.name.clone(),
                        why,
                    }));
                }
            }
        }
    }
    Ok(())
}

/// Reads the value: `--from-file`, else stdin; on a terminal, asks twice
/// without echo.
pub(super) fn read_value(input: &ValueInput, name: &str) -> Result<Secret, ValueError> {
    if let Some(path) = &input.from_file {
        let from = || Input::File(path.clone());
        let file = std::fs::File::open(path).map_err(|error| ValueError::Read {
            name: name.to_string(),
            from: from(),
            error,
        })?;
        return read_secret(file, MAX_PLAINTEXT + 1).map_err(|e| read_error(name, e, from()));
    }
    if std::io::stdin().is_terminal() {
        return ask_twice(name);
    }
    read_secret(&*raw_stdin(), MAX_PLAINTEXT + 1).map_err(|e| read_error(name, e, Input::Stdin))
}

/// A value that could not be read `from`: too large, or the error.
fn read_error(name: &str, error: std::io::Error, from: Input) -> ValueError {
    let name = name.to_string();
    match error.kind() {
        std::io::ErrorKind::InvalidData => ValueError::ReadTooLarge { name },
        _ => ValueError::Read { name, from, error },
    }
}

/// The value from the terminal, entered twice the same.
fn ask_twice(name: &str) -> Result<Secret, ValueError> {
    let first = prompt(&format!("Value for {name}: "))?;
    let second = prompt(&format!("Again, to confirm {name}: "))?;
    if !first.ct_eq(second.expose()) {
        return Err(ValueError::Refused(Refusal::Differ {
            name: name.to_string(),
        }));
    }
    Ok(first)
}
