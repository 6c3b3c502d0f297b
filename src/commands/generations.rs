//! `credloader generations NAME`: the kept sealed generations.

use std::fmt::Write as _;

use serde_json::json;

use super::{CommandError, Context, Output};
use crate::cli::NameArg;
use crate::creds::{hex_digest, Store};
use crate::generations::{format_utc, History};
use crate::{exit, names, systemd_creds};

pub fn run(ctx: &Context, args: NameArg) -> Result<Output, CommandError> {
    let name = args.name;
    names::credential(&name).map_err(CommandError::Usage)?;
    let config = super::seal::load_config_or_default(ctx)?;
    let history = History::open(&ctx.root, &config.loader.state_dir, &name, false)
        .map_err(|e| CommandError::Environment(format!("credential {name}: generations: {e}")))?;
    let kept = history
        .list()
        .map_err(|e| CommandError::Environment(format!("credential {name}: generations: {e}")))?;
    let store = Store::open(&ctx.root, &config.loader.creds_dir);
    let current = store.sealed(&name).ok();
    if current.is_none() && kept.is_empty() {
        return Err(CommandError::Usage(format!(
            "credential {name} does not exist and has no kept generations; seal it with `credloader seal {name}`"
        )));
    }
    let mut human = String::new();
    let current_doc = current.as_ref().map(|s| {
        let info = history.info_for(&hex_digest(&s.bytes));
        json!({
            "size": s.bytes.len(),
            "mtime": s.mtime,
            "digest": s.digest,
            "key": systemd_creds::sealed_key(&s.bytes),
            "not_after": info.and_then(|i| i.not_after),
        })
    });
    match &current {
        Some(s) => {
            let _ = writeln!(
                human,
                "current    {} bytes, sealed {}",
                s.bytes.len(),
                format_utc(s.mtime.max(0) as u64)
            );
        }
        None => {
            let _ = writeln!(human, "current    missing");
        }
    }
    for g in &kept {
        let _ = writeln!(
            human,
            "{:<10} {} bytes, kept {}{}{}{}",
            g.number,
            g.size,
            format_utc(g.mtime.max(0) as u64),
            g.not_after
                .map(|t| format!(", not after {}", format_utc(t)))
                .unwrap_or_default(),
            g.rejected_at
                .map(|t| format!(", REJECTED: failed verification at {}", format_utc(t)))
                .unwrap_or_default(),
            if current.as_ref().is_some_and(|c| c.digest == g.digest) {
                " (same as current)"
            } else {
                ""
            }
        );
    }
    if kept.is_empty() {
        let _ = writeln!(
            human,
            "no kept generations (`credloader rotate {name}` keeps one each time)"
        );
    } else {
        let _ = writeln!(
            human,
            "restore one with `credloader rollback {name} --to N` \
             (a plain `rollback` takes the newest one not rejected)"
        );
    }
    Ok(Output::new(
        exit::OK,
        human,
        json!({
            "name": name,
            "current": current_doc,
            "generations": kept,
            "keep": config.loader.keep_generations,
        }),
    ))
}
