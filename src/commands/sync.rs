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
use thiserror::Error;

use super::common::say_note;
use super::value::{self, validate, ValueError};
use super::{CommandError, Context, Output};
use crate::apply;
use crate::chain::Chain;
use crate::cli::SyncArgs;
use crate::config::{Config, Manage, Problem, Sources};
use crate::newline::Entered;
use crate::rotation::{self, Check, NewValue, Rotation};
use crate::safefs::Dir;
use crate::secret::Secret;
use crate::sources::{self, Fetched, OpenError, Retry, Source, SourceError, Unavailable};
use crate::systemd_creds::{self, Key};
use crate::{exit, names, sealed};

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
    let sources = sources_of(&config)?;
    // As apply serves them: a service whose file is broken or refused still
    // uses its credentials (its last good definition does).
    let served = rotation::Served::load(&ctx.root, &config)?;
    let wanted = wanted(&config, sources, &served, &args.names)?;
    let source = open_source(ctx, &config)?;
    let run = Run {
        source: &*source,
        environment: sources.environment.as_str(),
        dry_run: args.dry_run,
    };
    if wanted.is_empty() {
        return Ok(nothing_to_sync(&run, &served));
    }
    // 1. Fetch everything, with no lock held and nothing touched.
    let fetched = fetch(&run, &wanted, sources.attempts)?;
    // 2. Under the lock: compare, validate, seal what changed.
    let held = match args.dry_run {
        true => None,
        false => Some(apply::lock(&config, &ctx.root)?.1),
    };
    let creds = match args.dry_run {
        true => sealed::existing_creds_dir(&ctx.root, &config.loader)?,
        false => Some(sealed::creds_dir(&ctx.root, &config.loader)?),
    };
    let served = rotation::Served::load(&ctx.root, &config)?;
    let compare = Compare {
        ctx,
        config: &config,
        served: &served,
        creds: creds.as_ref(),
        dry_run: args.dry_run,
    };
    let (mut items, batch) = compare.all(&run, fetched)?;
    // 3. One rotation for everything that changed.
    let rotation = match (batch.is_empty(), &held) {
        (false, Some(held)) => Some(rotation::rotate(
            &ctx.root,
            &config,
            ctx.manager(),
            batch,
            false,
            held,
        )?),
        _ => None,
    };
    if rotation.as_ref().is_some_and(|r| r.rolled_back) {
        mark_rolled_back(&mut items);
    }
    Ok(output(&run, &served, &items, rotation.as_ref()))
}

/// What the whole run is about: where from, for which environment, and
/// whether anything may change.
struct Run<'a> {
    source: &'a dyn Source,
    environment: &'a str,
    dry_run: bool,
}

impl Run<'_> {
    /// The JSON every outcome starts from.
    fn doc(&self) -> serde_json::Value {
        json!({
            "source": self.source.kind(),
            "environment": self.environment,
            "dry_run": self.dry_run,
        })
    }
}

/// Why `sync` changes nothing at all.
#[derive(Debug, Error)]
pub enum SyncError {
    /// No `[sources]` (exit 2). `unknown`: the problems of files that
    /// cannot be used and may hold it.
    #[error(
        "no [sources] in the configuration: sync needs [sources.aws] (see docs/aws.md){}",
        may_hold(unknown)
    )]
    NoSources {
        /// Files that cannot be used, with why.
        unknown: Vec<Problem>,
    },
    /// A credential named on the command line is not sync's (exit 2).
    #[error(
        "credential {name} is not managed by sync: no service uses it and \
         [sources] does not list it"
    )]
    NotManaged {
        /// The credential.
        name: String,
    },
    /// The source could not be opened (exit 2 for a configuration it
    /// cannot use, else 5).
    #[error("{}", match .0 {
        OpenError::Usage(m) => m.clone(),
        OpenError::Source(e) => format!("{e}; every local credential was kept"),
    })]
    Open(OpenError),
    /// The source stopped the whole fetch: unavailable, or it refused us
    /// (exit 5).
    #[error(
        "the {kind} source {}: {error}; nothing was changed, every local credential was kept",
        match error.error {
            SourceError::Auth(_) => "refused us",
            _ => "is unavailable",
        }
    )]
    Unavailable {
        /// `aws` or `file`.
        kind: &'static str,
        /// What stopped it.
        error: Unavailable,
    },
}

impl SyncError {
    /// 2 for what the configuration or command line asks, 5 for the source.
    pub(super) fn exit_code(&self) -> u8 {
        match self {
            SyncError::NoSources { .. }
            | SyncError::NotManaged { .. }
            | SyncError::Open(OpenError::Usage(_)) => exit::USAGE,
            SyncError::Open(OpenError::Source(_)) | SyncError::Unavailable { .. } => exit::SOURCE,
        }
    }
}

/// `; a file that cannot be used may hold it: PROBLEM; ...`, or nothing.
fn may_hold(unknown: &[Problem]) -> String {
    if unknown.is_empty() {
        return String::new();
    }
    let unknown: Vec<String> = unknown.iter().map(|p| p.to_string()).collect();
    format!(
        "; a file that cannot be used may hold it: {}",
        unknown.join("; ")
    )
}

/// The `[sources]` to sync from; other commands only warn about a bad one,
/// sync runs on it.
fn sources_of(config: &Config) -> Result<&Sources, CommandError> {
    if let Some(e) = config.sources_error() {
        return Err(e.into());
    }
    let Some(sources) = &config.sources else {
        // A file that cannot be read may be where it is.
        let unknown = config.orphan_problems.clone();
        return Err(SyncError::NoSources { unknown }.into());
    };
    Ok(sources)
}

/// The credentials to sync, sorted: `names` (each one sync manages), or
/// every one it manages.
fn wanted(
    config: &Config,
    sources: &Sources,
    served: &rotation::Served,
    names: &[String],
) -> Result<Vec<String>, CommandError> {
    let mut managed = config.synced_credentials();
    if sources.manage == Manage::Used {
        managed.extend(served.services.values().flat_map(|s| s.credentials()));
    }
    for n in names {
        names::credential(n)?;
        if !managed.contains(n.as_str()) {
            return Err(SyncError::NotManaged { name: n.clone() }.into());
        }
    }
    if names.is_empty() {
        return Ok(managed.iter().map(|s| s.to_string()).collect());
    }
    let mut v = names.to_vec();
    v.sort();
    v.dedup();
    Ok(v)
}

fn open_source(ctx: &Context, config: &Config) -> Result<Box<dyn Source>, CommandError> {
    sources::open(config, &ctx.root).map_err(|e| SyncError::Open(e).into())
}

/// Nothing is managed: said, and a failure when a broken file may hide a
/// consumer.
fn nothing_to_sync(run: &Run, served: &rotation::Served) -> Output {
    let mut doc = run.doc();
    doc["credentials"] = json!([]);
    let mut human = String::new();
    let hidden = say_note(served, &[], &mut human, &mut doc);
    human.push_str("no credential to sync: no service uses one and [sources] lists none\n");
    let code = if hidden { exit::FAILED } else { exit::OK };
    Output::new(code, human, doc)
}

/// Every value of `wanted`, or the error that stops the whole run.
fn fetch(run: &Run, wanted: &[String], attempts: u32) -> Result<Fetched, CommandError> {
    sources::fetch_all(run.source, wanted, Retry::new(attempts)).map_err(|error| {
        SyncError::Unavailable {
            kind: run.source.kind(),
            error,
        }
        .into()
    })
}

/// Comparing fetched values with the local ones, under the lock.
struct Compare<'a> {
    ctx: &'a Context,
    config: &'a Config,
    served: &'a rotation::Served,
    /// The creds dir (`None` in a dry run without one).
    creds: Option<&'a Dir>,
    dry_run: bool,
}

impl Compare<'_> {
    /// An item for every fetched credential, and the changed ones sealed.
    fn all(&self, run: &Run, fetched: Fetched) -> Result<(Vec<Item>, Vec<NewValue>), CommandError> {
        let mut items = Vec::new();
        let mut batch = Vec::new();
        for (name, result) in fetched {
            let mut item = Item {
                from: run.source.locate(&name),
                name,
                status: Status::Failed,
                error: None,
                newline_removed: false,
                note: None,
            };
            match result
                .map_err(|e| format!("{e}; the local copy was kept"))
                .and_then(|value| self.enter(&item.name, value))
            {
                Err(e) => item.error = Some(e),
                Ok((entered, current)) => batch.extend(self.one(&mut item, entered, current)?),
            }
            items.push(item);
        }
        Ok((items, batch))
    }

    /// The fetched value after the newline policy and the checks, and the
    /// local sealed copy; why not, per credential.
    fn enter(&self, name: &str, value: Secret) -> Result<(Entered, Option<Vec<u8>>), String> {
        let entered = value::enter(self.config, self.served, name, value).map_err(refusal)?;
        validate(self.served, name, &entered.value).map_err(refusal)?;
        let current = match self.creds {
            Some(dir) => sealed::current(dir, name).map_err(|e| e.to_string())?,
            None => None,
        };
        Ok((entered, current))
    }

    /// Decides `item`'s status; a changed value is sealed for the batch
    /// (not in a dry run).
    fn one(
        &self,
        item: &mut Item,
        entered: Entered,
        current: Option<Vec<u8>>,
    ) -> Result<Option<NewValue>, CommandError> {
        let name = &item.name;
        item.newline_removed = entered.removed > 0;
        item.note = entered.note(name);
        let value = entered.value;
        let exists = current.is_some();
        if current.is_some_and(|c| same(name, &c, &value)) {
            item.status = Status::Unchanged;
            return Ok(None);
        }
        if self.dry_run {
            item.status = if exists {
                Status::WouldUpdate
            } else {
                Status::WouldCreate
            };
            return Ok(None);
        }
        // An image is sealed with its key file only (see `commands::run`).
        let key = if self.ctx.root.is_offline() {
            Key::Host
        } else {
            Key::Auto
        };
        let (sealed, info) = value::seal(name, &value, key, None)?;
        item.status = if exists {
            Status::Updated
        } else {
            Status::Created
        };
        Ok(Some(NewValue {
            name: name.clone(),
            sealed,
            info,
            masked: value.masked(),
            length: value.len(),
        }))
    }
}

/// The batch was rolled back: what it changed is no longer changed.
fn mark_rolled_back(items: &mut [Item]) {
    for i in items {
        if matches!(i.status, Status::Updated | Status::Created) {
            i.status = Status::RolledBack;
        }
    }
}

/// What `sync` says: a line per credential, the rotation's account, a
/// summary. Exit 4 when the batch was rolled back, else 1 when a credential
/// failed or a broken file may hide the consumers of the new values.
fn output(
    run: &Run,
    served: &rotation::Served,
    items: &[Item],
    rotation: Option<&Rotation>,
) -> Output {
    let mut doc = run.doc();
    let mut code = exit::OK;
    let mut failures = Vec::new();
    let mut rotation_human = String::new();
    if let Some(r) = rotation {
        let hidden;
        (rotation_human, hidden) = rotation_account(served, r, &mut doc);
        failures = Check::failures(&r.verification);
        code = match (r.rolled_back, hidden) {
            (true, _) => exit::ROLLED_BACK,
            (false, true) => exit::FAILED,
            (false, false) => exit::OK,
        };
    }
    let failed = items.iter().filter(|i| i.status == Status::Failed).count();
    if failed > 0 && code == exit::OK {
        code = exit::FAILED;
    }
    let mut human = items_human(items);
    human.push_str(&rotation_human);
    human.push_str(&summary(run, items, failed, code));
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
    Output::new(code, human, doc).with_errors(errors)
}

/// The rotation's account, and what is said when nobody consumes the new
/// values (true: a broken file may hide one). Puts the rotation in `doc`.
fn rotation_account(
    served: &rotation::Served,
    r: &Rotation,
    doc: &mut serde_json::Value,
) -> (String, bool) {
    let mut human = r.human.clone();
    let mut hidden = false;
    if r.consumers.is_empty() {
        hidden = say_note(served, &[], &mut human, doc);
        human.push_str(match hidden {
            true => "the new values are installed, but no service got them\n",
            false => "no service uses them: nothing to apply\n",
        });
    } else if !served.problems.is_empty() {
        doc["config_errors"] = json!(served.problems);
    }
    doc["rotation"] = json!(r);
    (human, hidden)
}

/// A line per credential, with the newline policy's note.
fn items_human(items: &[Item]) -> String {
    let mut human = String::new();
    for i in items {
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
    human
}

/// The last line: how many credentials, changed and failed.
fn summary(run: &Run, items: &[Item], failed: usize, code: u8) -> String {
    let changed = items
        .iter()
        .filter(|i| {
            matches!(
                i.status,
                Status::Updated | Status::Created | Status::WouldUpdate | Status::WouldCreate
            )
        })
        .count();
    format!(
        "sync from {} ({}): {} credential(s), {changed} {}, {failed} failed{}\n",
        run.source.kind(),
        run.environment,
        items.len(),
        if run.dry_run {
            "would change"
        } else {
            "changed"
        },
        if code == exit::ROLLED_BACK {
            "; the batch was rolled back"
        } else {
            ""
        }
    )
}

/// What `seal` refuses, as a per-credential refusal.
fn refusal(e: ValueError) -> String {
    match e {
        ValueError::Refused(r) => format!("{r}; refused, the local copy was kept"),
        e => format!("{}; refused, the local copy was kept", Chain(&e)),
    }
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
