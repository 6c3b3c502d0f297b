//! `credloader list`: every credential in the creds dir and every one the
//! configuration names, with consumers, size, mtime, key, not-after and
//! generations; orphans (nobody uses them) and missing ones are marked.
//! Nothing is decrypted.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use super::{CommandError, Context, Output};
use crate::audit::EXPIRY_WARNING_SECS;
use crate::config::Config;
use crate::creds::{CredError, Sealed, Store};
use crate::escape::{self, text};
use crate::generations::{format_utc, History};
use crate::state::{Served, State};
use crate::{exit, systemd_creds};

#[derive(Debug, Serialize)]
pub struct Entry {
    pub name: String,
    /// ok, orphan (nobody uses it), expiring (its not-after is within
    /// [`EXPIRY_WARNING_SECS`]), expired, damaged, missing or unreadable.
    pub status: &'static str,
    pub consumers: Vec<String>,
    /// Those of `consumers` whose own definition is broken: they are served
    /// from the definition they were last applied from.
    pub last_good_consumers: Vec<String>,
    /// Bytes of the sealed file (not of the value: `show` gives that).
    pub size: Option<usize>,
    pub mtime: Option<i64>,
    pub key: Option<&'static str>,
    pub not_after: Option<u64>,
    pub generations: Vec<u32>,
    pub error: Option<String>,
}

pub fn run(ctx: &Context) -> Result<Output, CommandError> {
    let config = ctx.load_config_or_default()?;
    let store = Store::open(&ctx.root, &config.loader.creds_dir);
    let on_disk = store.sealed_names();
    // As apply serves them: a service whose file is broken still uses its
    // credentials (its last good definition does).
    let state = State::inspect(&ctx.root, &config.loader.state_dir);
    let served = Served::new(&config, &state);
    let referenced: BTreeSet<String> = served
        .all_credentials()
        .into_iter()
        .map(String::from)
        .collect();
    let entries: Vec<Entry> = on_disk
        .union(&referenced)
        .map(|name| entry(ctx, &config, &store, &served, name))
        .collect();
    Ok(output(ctx, &config, &served, &entries))
}

/// What is known of credential `name`, without decrypting it.
fn entry(ctx: &Context, config: &Config, store: &Store, served: &Served, name: &str) -> Entry {
    let consumers: Vec<String> = served.consumers(name).map(|s| s.name.clone()).collect();
    let last_good_consumers = consumers
        .iter()
        .filter(|c| served.stored.contains_key(c.as_str()))
        .cloned()
        .collect();
    let history = History::open(&ctx.root, &config.loader.state_dir, name, false).ok();
    let generations = history
        .as_ref()
        .and_then(|h| h.list().ok())
        .map(|l| l.iter().map(|g| g.number).collect())
        .unwrap_or_default();
    let mut e = Entry {
        name: name.to_string(),
        status: "ok",
        consumers,
        last_good_consumers,
        size: None,
        mtime: None,
        key: None,
        not_after: None,
        generations,
        error: None,
    };
    match store.sealed(name) {
        Ok(s) => examine(&mut e, &s, history.as_ref()),
        Err(CredError::Missing { .. }) => e.status = "missing",
        Err(err) => {
            e.status = "unreadable";
            e.error = Some(err.to_string());
        }
    }
    e
}

/// Fills in what the sealed file `s` says of entry `e`: its size, time,
/// key, and not-after (from `history`); damaged, orphan, expired or
/// expiring.
fn examine(e: &mut Entry, s: &Sealed, history: Option<&History>) {
    let name = &e.name;
    e.size = Some(s.bytes.len());
    e.mtime = Some(s.mtime);
    e.key = systemd_creds::sealed_key(&s.bytes);
    if e.key.is_none() {
        e.status = "damaged";
        e.error = Some(format!(
            "not a credential systemd-creds can read; seal a new value with \
             `credloader rotate {name}`"
        ));
    }
    e.not_after = history
        .and_then(|h| h.info_for(&s.digest))
        .and_then(|i| i.not_after);
    if e.consumers.is_empty() && e.status == "ok" {
        e.status = "orphan";
    }
    expiry(e, crate::state::now());
}

/// What `list` says: a table, then why some consumers are served from their
/// last good definition. Always exit 0: listing is not auditing, `check` is
/// the command that fails on problems.
fn output(ctx: &Context, config: &Config, served: &Served, entries: &[Entry]) -> Output {
    let mut human = String::new();
    if entries.is_empty() {
        let _ = writeln!(
            human,
            "no credentials in {} and none configured",
            store_path(&ctx.root, config)
        );
    } else {
        let _ = writeln!(
            human,
            "{:<28} {:<10} {:>8} {:<20} {:<9} {:<20} {:<6} CONSUMERS",
            "NAME", "STATUS", "SEALED", "MODIFIED", "KEY", "NOT AFTER", "GENS"
        );
    }
    for e in entries {
        row(&mut human, e);
    }
    for (name, problems) in &served.stored {
        let _ = writeln!(
            human,
            "* {}: served from its last good definition: {}",
            text(name),
            text(&crate::state::describe(problems))
        );
    }
    if !config.is_clean() {
        let _ = writeln!(
            human,
            "the configuration has errors, so a credential may be used by a service it does not show; \
             `credloader check` lists them"
        );
    }
    Output::new(
        exit::OK,
        human,
        serde_json::json!({ "credentials": entries }),
    )
}

/// One line of the table (and its error, if any).
fn row(human: &mut String, e: &Entry) {
    let _ = writeln!(
        human,
        "{:<28} {:<10} {:>8} {:<20} {:<9} {:<20} {:<6} {}",
        text(&e.name),
        e.status,
        e.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        e.mtime
            .map(|t| format_utc(t.max(0) as u64))
            .unwrap_or_else(|| "-".into()),
        e.key.unwrap_or("-"),
        e.not_after.map(format_utc).unwrap_or_else(|| "-".into()),
        e.generations.len(),
        if e.consumers.is_empty() {
            "-".into()
        } else {
            e.consumers
                .iter()
                .map(|c| match e.last_good_consumers.contains(c) {
                    true => format!("{}*", text(c)),
                    false => text(c).into_owned(),
                })
                .collect::<Vec<_>>()
                .join(",")
        }
    );
    if let Some(err) = &e.error {
        let _ = writeln!(human, "  error: {}", text(err));
    }
}

/// Marks an `ok` or `orphan` entry whose not-after has passed, or is near.
fn expiry(e: &mut Entry, now: u64) {
    let Some(at) = e.not_after.filter(|_| matches!(e.status, "ok" | "orphan")) else {
        return;
    };
    if at <= now {
        e.status = "expired";
        e.error = Some(format!(
            "expired at {}: it no longer decrypts, and its consumers cannot get it; seal a new \
             value with `credloader rotate {}`",
            format_utc(at),
            e.name
        ));
    } else if at - now <= EXPIRY_WARNING_SECS {
        e.status = "expiring";
    }
}

fn store_path(root: &crate::root::Root, config: &Config) -> String {
    escape::path(&root.host(&config.loader.creds_dir)).into_owned()
}
