//! `credloader sync [--dry-run] [NAME...]`: fetch credentials from the
//! configured source (AWS Secrets Manager; a file on development hosts),
//! compare each with the local sealed value in memory, and put the changed
//! ones through the rotation core as one batch: seal, keep generations,
//! apply once to the union of their consumers, verify, roll back all of them
//! on failure (exit 4).
//!
//! Everything is fetched before anything local is touched: an unreachable,
//! throttling or refusing source (after bounded retries) stops the run with
//! exit 5 and every local credential as it was. A credential that cannot be
//! had (not found, JSON key missing) or whose value is refused (empty, too
//! large, not carriable by its env files) keeps its local copy; the others
//! proceed, and the run exits 1.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::json;

use super::seal::{self, validate};
use super::{CommandError, Context, Output};
use crate::apply;
use crate::cli::SyncArgs;
use crate::config::Manage;
use crate::rotation::{self, NewValue};
use crate::safefs::{Dir, DirPolicy};
use crate::secret::Secret;
use crate::sources::{self, OpenError, Retry, SourceError};
use crate::systemd_creds::{self, Key};
use crate::{exit, names};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Status {
    Unchanged,
    Created,
    Updated,
    WouldCreate,
    WouldUpdate,
    RolledBack,
    Failed,
}

#[derive(Debug, Serialize)]
struct Item {
    name: String,
    /// Where it was read from (secret id, file key); never a value.
    from: String,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Trailing line breaks were removed from the fetched value (see
    /// `crate::newline`).
    newline_removed: bool,
    /// What the newline policy did, for the human output.
    #[serde(skip)]
    note: Option<String>,
}

pub fn run(ctx: &Context, args: SyncArgs) -> Result<Output, CommandError> {
    let config = ctx.load_config()?;
    // Other commands only warn about a bad `[sources]`; sync runs on it.
    if let Some(e) = config.sources_error() {
        return Err(e.into());
    }
    let Some(sources) = &config.sources else {
        // A file that cannot be read may be where it is.
        let unknown: Vec<String> = config
            .orphan_problems
            .iter()
            .map(|p| p.to_string())
            .collect();
        return Err(CommandError::Usage(format!(
            "no [sources] in the configuration: sync needs [sources.aws] (see docs/aws.md){}",
            match unknown.is_empty() {
                true => String::new(),
                false => format!(
                    "; a file that cannot be used may hold it: {}",
                    unknown.join("; ")
                ),
            }
        )));
    };
    // As apply serves them: a service whose file is broken or refused still
    // uses its credentials (its last good definition does).
    let served = rotation::Served::load(&ctx.root, &config)?;
    let mut managed = config.synced_credentials();
    if sources.manage == Manage::Used {
        managed.extend(served.services.values().flat_map(|s| s.credentials()));
    }
    for n in &args.names {
        names::credential(n).map_err(CommandError::Usage)?;
        if !managed.contains(n.as_str()) {
            return Err(CommandError::Usage(format!(
                "credential {n} is not managed by sync: no service uses it and \
                 [sources] does not list it"
            )));
        }
    }
    let wanted: Vec<String> = if args.names.is_empty() {
        managed.iter().map(|s| s.to_string()).collect()
    } else {
        let mut v = args.names.clone();
        v.sort();
        v.dedup();
        v
    };
    let source = sources::open(&config, &ctx.root).map_err(|e| match e {
        OpenError::Usage(m) => CommandError::Usage(m),
        OpenError::Source(e) => {
            CommandError::Source(format!("{e}; every local credential was kept"))
        }
    })?;
    let environment = sources.environment.as_str();
    let mut doc = json!({
        "source": source.kind(),
        "environment": environment,
        "dry_run": args.dry_run,
    });
    if wanted.is_empty() {
        doc["credentials"] = json!([]);
        let mut human = String::new();
        let hidden = seal::say_note(&served, &[], &mut human, &mut doc);
        human.push_str("no credential to sync: no service uses one and [sources] lists none\n");
        let code = if hidden { exit::FAILED } else { exit::OK };
        return Ok(Output::new(code, human, doc));
    }

    // 1. Fetch everything, with no lock held and nothing touched.
    let fetched =
        sources::fetch_all(&*source, &wanted, Retry::new(sources.attempts)).map_err(|u| {
            let kind = match u.error {
                SourceError::Auth(_) => "refused us",
                _ => "is unavailable",
            };
            CommandError::Source(format!(
                "the {} source {kind}: {u}; nothing was changed, every local credential was kept",
                source.kind()
            ))
        })?;

    // 2. Under the lock: compare, validate, seal what changed.
    let held = if args.dry_run {
        None
    } else {
        Some(apply::lock(&config, &ctx.root)?.1)
    };
    let creds = if args.dry_run {
        Dir::open(&ctx.root, &config.loader.creds_dir, DirPolicy::EXISTING).ok()
    } else {
        Some(seal::creds_dir(&ctx.root, &config.loader)?)
    };
    let served = rotation::Served::load(&ctx.root, &config)?;
    let mut items = Vec::new();
    let mut batch = Vec::new();
    for (name, result) in fetched {
        let from = source.locate(&name);
        let mut item = Item {
            name: name.clone(),
            from,
            status: Status::Failed,
            error: None,
            newline_removed: false,
            note: None,
        };
        match result
            .map_err(|e| format!("{e}; the local copy was kept"))
            .and_then(|value| {
                let entered = seal::enter(&config, &served, &name, value).map_err(refusal)?;
                validate(&served, &name, &entered.value).map_err(refusal)?;
                let current = match &creds {
                    Some(dir) => seal::current_sealed(dir, &name).map_err(|e| e.to_string())?,
                    None => None,
                };
                Ok((entered, current))
            }) {
            Err(e) => item.error = Some(e),
            Ok((entered, current)) => {
                item.newline_removed = entered.removed > 0;
                item.note = entered.note(&name);
                let value = entered.value;
                let exists = current.is_some();
                if current.is_some_and(|c| same(&name, &c, &value)) {
                    item.status = Status::Unchanged;
                } else if args.dry_run {
                    item.status = if exists {
                        Status::WouldUpdate
                    } else {
                        Status::WouldCreate
                    };
                } else {
                    // An image is sealed with its key file only (see `commands::run`).
                    let key = if ctx.root.is_offline() {
                        Key::Host
                    } else {
                        Key::Auto
                    };
                    let (sealed, info) = seal::seal(&name, &value, key, None)?;
                    item.status = if exists {
                        Status::Updated
                    } else {
                        Status::Created
                    };
                    batch.push(NewValue {
                        name: name.clone(),
                        sealed,
                        info,
                        masked: value.masked(),
                        length: value.len(),
                    });
                }
            }
        }
        items.push(item);
    }

    // 3. One rotation for everything that changed.
    let mut code = exit::OK;
    let mut rotation_human = String::new();
    let mut failures = Vec::new();
    if let (false, Some(held)) = (batch.is_empty(), &held) {
        let r = rotation::rotate(&ctx.root, &config, ctx.manager(), batch, false, held)?;
        if r.rolled_back {
            code = exit::ROLLED_BACK;
            for i in &mut items {
                if matches!(i.status, Status::Updated | Status::Created) {
                    i.status = Status::RolledBack;
                }
            }
        }
        failures = rotation::Check::failures(&r.verification);
        rotation_human = r.human.clone();
        if r.consumers.is_empty() {
            let hidden = seal::say_note(&served, &[], &mut rotation_human, &mut doc);
            rotation_human.push_str(match hidden {
                true => "the new values are installed, but no service got them\n",
                false => "no service uses them: nothing to apply\n",
            });
            if hidden && code == exit::OK {
                code = exit::FAILED;
            }
        } else if !served.problems.is_empty() {
            doc["config_errors"] = json!(served.problems);
        }
        doc["rotation"] = json!(r);
    }
    let failed = items.iter().filter(|i| i.status == Status::Failed).count();
    if failed > 0 && code == exit::OK {
        code = exit::FAILED;
    }

    let mut human = String::new();
    for i in &items {
        let _ = writeln!(
            human,
            "{}: {}{} ({})",
            i.name,
            match i.status {
                Status::Unchanged => "unchanged",
                Status::Created => "new, sealed",
                Status::Updated => "changed, sealed",
                Status::WouldCreate => "new (dry run: would be sealed)",
                Status::WouldUpdate => "changed (dry run: would be sealed)",
                Status::RolledBack => "changed, ROLLED BACK",
                Status::Failed => "FAILED",
            },
            i.error
                .as_ref()
                .map(|e| format!(": {}", crate::escape::text(e)))
                .unwrap_or_default(),
            crate::escape::text(&i.from)
        );
        if let Some(note) = &i.note {
            let _ = writeln!(human, "  {note}");
        }
    }
    human.push_str(&rotation_human);
    let changed = items
        .iter()
        .filter(|i| {
            matches!(
                i.status,
                Status::Updated | Status::Created | Status::WouldUpdate | Status::WouldCreate
            )
        })
        .count();
    let _ = writeln!(
        human,
        "sync from {} ({environment}): {} credential(s), {changed} {}, {failed} failed{}",
        source.kind(),
        items.len(),
        if args.dry_run {
            "would change"
        } else {
            "changed"
        },
        if code == exit::ROLLED_BACK {
            "; the batch was rolled back"
        } else {
            ""
        }
    );
    doc["credentials"] = json!(items);
    let errors = items
        .iter()
        .filter(|i| matches!(i.status, Status::Failed | Status::RolledBack))
        .map(|i| match &i.error {
            Some(e) => format!("{}: FAILED: {e} ({})", i.name, i.from),
            None => format!("{}: changed, ROLLED BACK ({})", i.name, i.from),
        })
        .chain(failures)
        .collect();
    Ok(Output::new(code, human, doc).with_errors(errors))
}

/// What `seal` refuses, as a per-credential refusal.
fn refusal(e: CommandError) -> String {
    let m = e.to_string();
    let m = m.strip_suffix("; nothing was sealed").unwrap_or(&m);
    format!("{m}; refused, the local copy was kept")
}

/// Whether the sealed `current` holds `value` (decrypted in memory only).
fn same(name: &str, current: &[u8], value: &Secret) -> bool {
    match systemd_creds::decrypt(name, current) {
        Ok((plain, _)) => plain.ct_eq(value.expose()),
        Err(e) => {
            tracing::warn!(
                "credential {name}: the local copy does not decrypt ({e}); replacing it"
            );
            false
        }
    }
}
