//! `credloader rollback NAME [--to N]`: put a kept sealed generation back,
//! keep the value it replaces as a new generation, apply to the consumers
//! and verify them as `rotate` does (without an automatic undo).

use std::fmt::Write as _;

use serde_json::json;

use super::rotate::apply_and_verify;
use super::seal::{self, creds_dir, install};
use super::{CommandError, Context, Output};
use crate::apply;
use crate::cli::RollbackArgs;
use crate::creds::hex_digest;
use crate::generations::{History, Info};
use crate::rotation::Served;
use crate::{exit, names};

pub fn run(ctx: &Context, args: RollbackArgs) -> Result<Output, CommandError> {
    let name = args.name;
    names::credential(&name).map_err(CommandError::Usage)?;
    let config = ctx.load_config()?;
    let (_dir, held) = apply::lock(&config, &ctx.root)?;
    let creds = creds_dir(&ctx.root, &config.loader)?;
    let served = Served::load(&ctx.root, &config)?;
    let mut history = History::open(&ctx.root, &config.loader.state_dir, &name, false)
        .map_err(|e| CommandError::Environment(format!("credential {name}: generations: {e}")))?;
    let kept = history
        .list()
        .map_err(|e| CommandError::Environment(format!("credential {name}: generations: {e}")))?;
    let numbers: Vec<String> = kept.iter().map(|g| g.number.to_string()).collect();
    let target = match args.to {
        Some(n) => kept.iter().find(|g| g.number == n).ok_or_else(|| {
            CommandError::Usage(format!(
                "credential {name} has no generation {n}; kept: {} (see `credloader generations {name}`)",
                if numbers.is_empty() { "none".into() } else { numbers.join(", ") }
            ))
        })?,
        // The newest one a rotation did not reject: a rejected value comes
        // back only when asked for by number.
        None => kept
            .iter()
            .rev()
            .find(|g| g.rejected_at.is_none())
            .ok_or_else(|| {
                CommandError::Usage(if kept.is_empty() {
                    format!(
                        "credential {name} has no kept generations to roll back to; `credloader rotate {name}` keeps one each time"
                    )
                } else {
                    format!(
                        "credential {name} has only rejected generations ({}): a rotation installed them and \
                         they failed verification; restore one on purpose with `credloader rollback {name} --to N`",
                        numbers.join(", ")
                    )
                })
            })?,
    };
    let rejected_at = target.rejected_at;
    let number = target.number;
    let bytes = history
        .read(number)
        .map_err(|e| {
            CommandError::Environment(format!("credential {name}: generation {number}: {e}"))
        })?
        .ok_or_else(|| {
            CommandError::Environment(format!("credential {name}: generation {number} vanished"))
        })?;
    // It must still decrypt (not expired, right name) before it goes back.
    let (secret, _) = crate::systemd_creds::decrypt(&name, &bytes).map_err(|e| {
        CommandError::Usage(format!(
            "credential {name}: generation {number} cannot be restored: {e}"
        ))
    })?;
    let masked = secret.masked();
    let length = secret.len();
    drop(secret);
    let info = history.info_for(&hex_digest(&bytes)).cloned();

    let mut human = String::new();
    let replaced = match seal::current_sealed(&creds, &name)? {
        Some(current) => {
            let cur_info = history.info_for(&hex_digest(&current)).cloned();
            let n = history
                .push(&current, cur_info, config.loader.keep_generations)
                .map_err(|e| {
                    CommandError::Environment(format!(
                        "credential {name}: keeping the current value: {e}"
                    ))
                })?;
            let _ = writeln!(
                human,
                "credential {name}: the current value is kept as generation {n}"
            );
            Some(n)
        }
        None => None,
    };
    install(&creds, &name, &bytes)?;
    let digest = hex_digest(&bytes);
    let _ = history.set_current(info.unwrap_or(Info {
        digest,
        ..Info::default()
    }));
    let _ = writeln!(
        human,
        "credential {name}: generation {number} restored ({masked}, {length} bytes){}",
        rejected_at
            .map(|t| format!(
                "; note: it failed verification when a rotation installed it at {}",
                crate::generations::format_utc(t)
            ))
            .unwrap_or_default()
    );
    let consumers: Vec<String> = served.consumers(&name).map(|s| s.name.clone()).collect();
    let mut doc = json!({
        "name": name,
        "restored_generation": number,
        "restored_was_rejected": rejected_at.is_some(),
        "replaced_kept_as": replaced,
        "value": { "masked": masked, "length": length },
        "consumers": consumers,
    });
    if consumers.is_empty() {
        if seal::say_note(&served, &consumers, &mut human, &mut doc) {
            human.push_str("the restored value is installed, but no service got it\n");
            return Ok(Output::new(exit::FAILED, human, doc));
        }
        human.push_str("no service uses it: nothing to apply\n");
        return Ok(Output::new(exit::OK, human, doc));
    }
    if !served.problems.is_empty() {
        doc["config_errors"] = json!(served.problems);
    }
    let what = (consumers.as_slice(), &[name.as_str()][..]);
    let v = apply_and_verify(ctx, &config, &served, ctx.manager(), what, &held)?;
    human.push_str(&v.human("apply"));
    doc["apply"] = serde_json::to_value(&v.report).expect("serializes");
    doc["verification"] = serde_json::to_value(&v.checks).expect("serializes");
    doc["verified"] = json!(v.ok());
    if v.ok() && rejected_at.is_some() {
        // It works now (say, the exchange whitelisted the IP).
        if let Err(e) = history.clear_rejected(number) {
            tracing::warn!("credential {name}: generation {number} stays marked rejected: {e}");
        }
    }
    let code = if v.ok() { exit::OK } else { exit::FAILED };
    if !v.ok() {
        human.push_str(
            "verification failed after the rollback: look at the consumers (nothing was undone)\n",
        );
    }
    let mut errors = crate::rotation::Check::failures(&v.checks);
    errors.push(format!(
        "credential {name}: generation {number} is installed but a consumer did not verify with it"
    ));
    Ok(Output::new(code, human, doc).with_errors(errors))
}
