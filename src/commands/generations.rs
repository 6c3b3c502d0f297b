//! `credloader generations NAME`: every value of a credential credloader
//! keeps, by its number (a value keeps its number for good, see
//! [`crate::generations`]), oldest first: the kept generations and the
//! current value, marked, each masked (`abc...***`) when it can be
//! decrypted here.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::json;

use super::common::GenerationsError;
use super::{CommandError, Context, Output};
use crate::cli::NameArg;
use crate::creds::Store;
use crate::generations::{format_utc, History};
use crate::{exit, names, systemd_creds};

/// One value, as listed.
#[derive(Debug, Default, Serialize)]
struct Row {
    /// `None`: the current value has no number yet (sealed before
    /// credloader recorded numbers, or put there by hand).
    number: Option<u32>,
    current: bool,
    /// A sealed copy is kept in the generations directory.
    kept: bool,
    /// When a rotation installed it and rolled it back.
    rejected_at: Option<u64>,
    /// `None` when it cannot be decrypted here (see `unmasked`).
    masked: Option<String>,
    length: Option<usize>,
    /// Why there is no masked form.
    unmasked: Option<String>,
    /// Bytes of the sealed file.
    size: u64,
    /// When it was sealed (current) or kept (a generation).
    mtime: i64,
    digest: String,
    key: Option<&'static str>,
    not_after: Option<u64>,
}

pub fn run(ctx: &Context, args: NameArg) -> Result<Output, CommandError> {
    let name = args.name;
    names::credential(&name)?;
    let config = ctx.load_config_or_default()?;
    let history = super::common::history(ctx, &config, &name, false)?;
    let rows = rows(
        ctx,
        &name,
        &history,
        &Store::open(&ctx.root, &config.loader.creds_dir),
    )?;
    if rows.is_empty() {
        return Err(GenerationsError::Unknown { name }.into());
    }
    let human = human(&name, &rows);
    Ok(Output::new(
        exit::OK,
        human,
        json!({
            "name": name,
            "current": rows.iter().find(|r| r.current),
            "generations": rows.iter().filter(|r| r.kept).collect::<Vec<_>>(),
            "keep": config.loader.keep_generations,
        }),
    ))
}

/// The kept generations and the current value, by number.
fn rows(
    ctx: &Context,
    name: &str,
    history: &History,
    store: &Store,
) -> Result<Vec<Row>, CommandError> {
    let kept = history.list().map_err(GenerationsError::list(name))?;
    let current = store.sealed(name).ok();
    let digest = current.as_ref().map(|c| c.digest.as_str());
    // The current value's number: as recorded for these very bytes, else
    // the newest kept generation that holds them.
    let recorded = history.meta.current.as_ref().map(|i| i.digest.as_str());
    let current_number = match digest {
        Some(d) if recorded == Some(d) && history.meta.current_number.is_some() => {
            history.meta.current_number
        }
        Some(d) => kept.iter().rev().find(|g| g.digest == d).map(|g| g.number),
        None => None,
    };
    let masker = Masker::new(ctx);
    let mut rows = Vec::new();
    for g in &kept {
        let bytes = history.read(g.number).ok().flatten().unwrap_or_default();
        let row = Row {
            number: Some(g.number),
            current: digest == Some(g.digest.as_str()) && current_number == Some(g.number),
            kept: true,
            rejected_at: g.rejected_at,
            size: g.size,
            mtime: g.mtime,
            digest: g.digest.clone(),
            not_after: g.not_after,
            ..Row::default()
        };
        rows.push(masker.row(name, &bytes, row));
    }
    if let Some(c) = current.filter(|_| !rows.iter().any(|r| r.current)) {
        let row = Row {
            number: current_number,
            current: true,
            size: c.bytes.len() as u64,
            mtime: c.mtime,
            not_after: history.info_for(&c.digest).and_then(|i| i.not_after),
            digest: c.digest,
            ..Row::default()
        };
        rows.push(masker.row(name, &c.bytes, row));
    }
    rows.sort_by_key(|r| r.number.unwrap_or(u32::MAX));
    Ok(rows)
}

/// Decrypts each value only long enough to mask it.
struct Masker {
    /// Why nothing can be decrypted here, if so.
    unable: Option<String>,
}

impl Masker {
    fn new(ctx: &Context) -> Masker {
        // An image's values decrypt only with the key file named for it;
        // this host's own key is never used for an image.
        let keyless = ctx.root.is_offline()
            && std::env::var_os("SYSTEMD_CREDENTIAL_SECRET").is_none_or(|v| v.is_empty());
        Masker {
            unable: keyless.then(|| "--root without SYSTEMD_CREDENTIAL_SECRET".to_string()),
        }
    }

    fn row(&self, name: &str, sealed: &[u8], mut row: Row) -> Row {
        row.key = systemd_creds::sealed_key(sealed);
        if let Some(why) = &self.unable {
            row.unmasked = Some(why.clone());
            return row;
        }
        match systemd_creds::decrypt(name, sealed) {
            Ok((secret, _)) => {
                row.masked = Some(secret.masked());
                row.length = Some(secret.len());
            }
            Err(e) => row.unmasked = Some(e.to_string()),
        }
        row
    }
}

fn human(name: &str, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<5} {:<9} {:<16} {:>8}  {:<20} NOTES",
        "GEN", "STATE", "VALUE", "BYTES", "SEALED OR KEPT"
    );
    for r in rows {
        let state = match (r.current, r.rejected_at.is_some()) {
            (true, _) => "current",
            (false, true) => "REJECTED",
            (false, false) => "kept",
        };
        let mut notes = Vec::new();
        if let Some(t) = r.rejected_at {
            notes.push(format!(
                "{}failed verification at {}",
                if r.current { "REJECTED: " } else { "" },
                format_utc(t)
            ));
        }
        if let Some(t) = r.not_after {
            notes.push(format!("not after {}", format_utc(t)));
        }
        if let Some(why) = &r.unmasked {
            notes.push(format!("not decrypted: {why}"));
        }
        let line = format!(
            "{:<5} {:<9} {:<16} {:>8}  {:<20} {}",
            r.number
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            state,
            r.masked.as_deref().unwrap_or("-"),
            r.length
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            format_utc(r.mtime.max(0) as u64),
            notes.join("; ")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if rows.iter().any(|r| !r.current) {
        let _ = writeln!(
            out,
            "restore one with `credloader rollback {name} --to GEN` \
             (a plain `rollback` takes the newest kept one not rejected)"
        );
    } else {
        let _ = writeln!(
            out,
            "no kept generations (`credloader rotate {name}` keeps one each time)"
        );
    }
    out
}
