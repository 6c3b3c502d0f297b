//! `credloader rollback NAME [--to N]`: put a kept sealed generation back,
//! keep the value it replaces as a new generation, apply to the consumers
//! and verify them as `rotate` does (without an automatic undo).

use std::fmt::Write as _;

use serde_json::json;
use thiserror::Error;

use super::common::{history, say_note, GenerationsError, Locked};
use super::{CommandError, Context, Output};
use crate::cli::RollbackArgs;
use crate::creds::hex_digest;
use crate::generations::{format_utc, Generation, History, Info};
use crate::rotation::{self, Check, Masked, Served, Verified};
use crate::safefs::Dir;
use crate::sealed::{self, install};
use crate::systemd_creds::CredsError;
use crate::{exit, systemd_creds};

/// Why the generation asked for cannot be put back (exit 2).
#[derive(Debug, Error)]
pub enum RollbackError {
    /// `--to N`: no generation `N` is kept.
    #[error(
        "credential {name} has no generation {number}; kept: {} (see `credloader generations {name}`)",
        if kept.is_empty() { "none".into() } else { join(kept) }
    )]
    NoSuchGeneration {
        /// The credential.
        name: String,
        /// The generation asked for.
        number: u32,
        /// The generations kept.
        kept: Vec<u32>,
    },
    /// No generation is kept at all.
    #[error(
        "credential {name} has no kept generations to roll back to; `credloader rotate {name}` keeps one each time"
    )]
    NoneKept {
        /// The credential.
        name: String,
    },
    /// Every kept generation was rejected by a rotation.
    #[error(
        "credential {name} has only rejected generations ({}): a rotation installed them and \
         they failed verification; restore one on purpose with `credloader rollback {name} --to N`",
        join(kept)
    )]
    OnlyRejected {
        /// The credential.
        name: String,
        /// The generations kept.
        kept: Vec<u32>,
    },
    /// The generation no longer decrypts (expired, another name or key).
    #[error("credential {name}: generation {number} cannot be restored")]
    NotRestorable {
        /// The credential.
        name: String,
        /// The generation.
        number: u32,
        /// Why.
        #[source]
        error: CredsError,
    },
}

/// `1, 2, 3`.
fn join(numbers: &[u32]) -> String {
    let numbers: Vec<String> = numbers.iter().map(u32::to_string).collect();
    numbers.join(", ")
}

/// A generation put back, for the report.
struct Restored {
    name: String,
    number: u32,
    /// When a rotation had installed it and rolled it back.
    rejected_at: Option<u64>,
    /// The generation the value it replaced is kept as.
    replaced: Option<u32>,
    value: Masked,
    consumers: Vec<String>,
}

pub fn run(ctx: &Context, args: RollbackArgs) -> Result<Output, CommandError> {
    let name = args.name;
    let locked = Locked::take(ctx, &name, Context::load_config)?;
    let mut history = history(ctx, &locked.config, &name, false)?;
    let target = choose(&history, &name, args.to)?;
    let (number, rejected_at) = (target.number, target.rejected_at);
    let bytes = read_generation(&history, &name, number)?;
    let value = check_restorable(&name, number, &bytes)?;
    let info = history.info_for(&hex_digest(&bytes)).cloned();
    let replaced = keep_current(&mut history, &locked, &name)?;
    put_back(&locked.creds, &mut history, &name, &bytes, info)?;
    let restored = Restored {
        consumers: locked.served.consumer_names(&name),
        name,
        number,
        rejected_at,
        replaced,
        value,
    };
    if restored.consumers.is_empty() {
        return Ok(output(&restored, &locked.served, None));
    }
    let what = (restored.consumers.as_slice(), &[restored.name.as_str()][..]);
    let (config, served) = (&locked.config, &locked.served);
    let v =
        rotation::apply_and_verify(&ctx.root, config, served, ctx.manager(), what, &locked.held)?;
    if v.ok() && rejected_at.is_some() {
        clear_rejected(&mut history, &restored);
    }
    Ok(output(&restored, &locked.served, Some(&v)))
}

/// The generation to put back: number `to`, else the newest one a rotation
/// did not reject (a rejected value comes back only when asked for by
/// number).
fn choose(history: &History, name: &str, to: Option<u32>) -> Result<Generation, CommandError> {
    let kept = history.list().map_err(GenerationsError::list(name))?;
    let numbers: Vec<u32> = kept.iter().map(|g| g.number).collect();
    let found = match to {
        Some(n) => kept.into_iter().find(|g| g.number == n),
        None => kept.into_iter().rev().find(|g| g.rejected_at.is_none()),
    };
    let name = name.to_string();
    let missing = match to {
        Some(number) => RollbackError::NoSuchGeneration {
            name,
            number,
            kept: numbers,
        },
        None if numbers.is_empty() => RollbackError::NoneKept { name },
        None => RollbackError::OnlyRejected {
            name,
            kept: numbers,
        },
    };
    found.ok_or_else(|| missing.into())
}

/// The sealed bytes of generation `number`.
fn read_generation(history: &History, name: &str, number: u32) -> Result<Vec<u8>, CommandError> {
    let name = name.to_string();
    match history.read(number) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(GenerationsError::Vanished { name, number }.into()),
        Err(error) => Err(GenerationsError::Read {
            name,
            number,
            error,
        }
        .into()),
    }
}

/// It must still decrypt (not expired, right name) before it goes back.
fn check_restorable(name: &str, number: u32, bytes: &[u8]) -> Result<Masked, CommandError> {
    let (secret, _) =
        systemd_creds::decrypt(name, bytes).map_err(|error| RollbackError::NotRestorable {
            name: name.to_string(),
            number,
            error,
        })?;
    Ok(Masked {
        masked: secret.masked(),
        length: secret.len(),
    })
}

/// Keeps the current value, if any, as a new generation; its number.
fn keep_current(
    history: &mut History,
    locked: &Locked,
    name: &str,
) -> Result<Option<u32>, CommandError> {
    let Some(current) = sealed::current(&locked.creds, name)? else {
        return Ok(None);
    };
    let info = history.info_for(&hex_digest(&current)).cloned();
    history
        .push(&current, info, locked.config.loader.keep_generations)
        .map(Some)
        .map_err(|error| {
            GenerationsError::Keep {
                name: name.to_string(),
                value: "the current value",
                error,
            }
            .into()
        })
}

/// Installs the generation's `bytes` as the current value, and records
/// what is known of them (best effort).
fn put_back(
    creds: &Dir,
    history: &mut History,
    name: &str,
    bytes: &[u8],
    info: Option<Info>,
) -> Result<(), CommandError> {
    install(creds, name, bytes)?;
    let digest = hex_digest(bytes);
    // As rotate does: the value is live either way; without its metadata
    // `list` and `check` cannot tell its expiry or key.
    if let Err(e) = history.set_current(info.unwrap_or(Info {
        digest,
        ..Info::default()
    })) {
        tracing::warn!("credential {name}: could not record its metadata: {e}");
    }
    Ok(())
}

/// It verified now (say, the exchange whitelisted the IP): no longer
/// rejected.
fn clear_rejected(history: &mut History, r: &Restored) {
    let (name, number) = (&r.name, r.number);
    if let Err(e) = history.clear_rejected(number) {
        tracing::warn!("credential {name}: generation {number} stays marked rejected: {e}");
    }
}

/// What `rollback` says: what was kept and restored, then how applying and
/// verifying went (`None`: nothing to apply). Exit 1 when a consumer did
/// not verify, or when a broken file may hide the consumers.
fn output(r: &Restored, served: &Served, verified: Option<&Verified>) -> Output {
    let name = &r.name;
    let mut human = String::new();
    if let Some(n) = r.replaced {
        let _ = writeln!(
            human,
            "credential {name}: the current value is kept as generation {n}"
        );
    }
    let _ = writeln!(
        human,
        "credential {name}: generation {} restored ({}, {} bytes){}",
        r.number,
        r.value.masked,
        r.value.length,
        r.rejected_at
            .map(|t| format!(
                "; note: it failed verification when a rotation installed it at {}",
                format_utc(t)
            ))
            .unwrap_or_default()
    );
    let mut doc = json!({
        "name": name,
        "restored_generation": r.number,
        "restored_was_rejected": r.rejected_at.is_some(),
        "replaced_kept_as": r.replaced,
        "value": { "masked": r.value.masked, "length": r.value.length },
        "consumers": r.consumers,
    });
    let Some(v) = verified else {
        if say_note(served, &r.consumers, &mut human, &mut doc) {
            human.push_str("the restored value is installed, but no service got it\n");
            return Output::new(exit::FAILED, human, doc);
        }
        human.push_str("no service uses it: nothing to apply\n");
        return Output::new(exit::OK, human, doc);
    };
    if !served.problems.is_empty() {
        doc["config_errors"] = json!(served.problems);
    }
    human.push_str(&v.human("apply"));
    doc["apply"] = serde_json::to_value(&v.report).expect("serializes");
    doc["verification"] = serde_json::to_value(&v.checks).expect("serializes");
    doc["verified"] = json!(v.ok());
    let code = if v.ok() { exit::OK } else { exit::FAILED };
    if !v.ok() {
        human.push_str(
            "verification failed after the rollback: look at the consumers (nothing was undone)\n",
        );
    }
    let mut errors = Check::failures(&v.checks);
    errors.push(format!(
        "credential {name}: generation {} is installed but a consumer did not verify with it",
        r.number
    ));
    Output::new(code, human, doc).with_errors(errors)
}
