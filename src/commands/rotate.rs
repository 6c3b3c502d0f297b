//! `credloader rotate NAME`: seal a new value, keep the old one as a
//! generation, apply to exactly its consumers, verify each, and put the old
//! value back (exit 4) if any verification fails. The apply lock is held
//! from before the seal to after the verdict; the work itself is
//! [`crate::rotation`], which `sync` shares.

use std::path::PathBuf;

use serde_json::json;
use thiserror::Error;

use super::common::{say_note, Locked};
use super::value;
use super::{CommandError, Context, Output};
use crate::cli::RotateArgs;
use crate::escape::Shown;
use crate::exit;
use crate::rotation::{self, Check, NewValue, Rotation, Served};
use crate::safefs::Dir;
use crate::sealed;

pub fn run(ctx: &Context, args: RotateArgs) -> Result<Output, CommandError> {
    let name = args.name;
    let locked = Locked::take(ctx, &name, Context::load_config)?;
    require_existing(&locked.creds, &name)?;
    let (new, said) = new_value(&locked, &name, &args.input)?;
    let r = rotation::rotate(
        &ctx.root,
        &locked.config,
        ctx.manager(),
        vec![new],
        args.no_apply,
        &locked.held,
    )?;
    Ok(output(&name, args.no_apply, &locked.served, said, &r))
}

/// Only a credential that exists is rotated (`seal` makes a new one).
fn require_existing(creds: &Dir, name: &str) -> Result<(), CommandError> {
    if sealed::current(creds, name)?.is_some() {
        return Ok(());
    }
    Err(RotateError::Missing {
        name: name.to_string(),
        dir: creds.path().to_path_buf(),
    }
    .into())
}

/// Why `rotate` does not start (exit 2).
#[derive(Debug, Error)]
pub enum RotateError {
    /// There is no such credential: `seal` makes a new one.
    #[error(
        "credential {name} does not exist in {}; seal it first with `credloader seal {name}`",
        Shown(dir)
    )]
    Missing {
        /// The credential.
        name: String,
        /// The creds dir.
        dir: PathBuf,
    },
}

/// What `rotate` says of the value it entered (the value itself is gone
/// before anything is applied).
struct Said {
    /// The newline policy's note, with its line break (or nothing).
    note: String,
    doc: serde_json::Value,
}

/// The new value, read and sealed, for the rotation core.
fn new_value(
    locked: &Locked,
    name: &str,
    input: &crate::cli::ValueInput,
) -> Result<(NewValue, Said), CommandError> {
    let v = value::take(&locked.config, &locked.served, name, input)?;
    let said = Said {
        note: v.entered.note(name).map(|n| n + "\n").unwrap_or_default(),
        doc: value::value_doc(&v.entered),
    };
    let new = NewValue {
        name: name.to_string(),
        masked: v.entered.value.masked(),
        length: v.entered.value.len(),
        sealed: v.sealed,
        info: v.info,
    };
    Ok((new, said))
}

/// What `rotate` says: the rotation's account with the note after its
/// first line. Exit 4 when it was rolled back; exit 1 when nothing got
/// the new value and a broken file may hide a consumer.
fn output(name: &str, no_apply: bool, served: &Served, said: Said, r: &Rotation) -> Output {
    let installed = &r.credentials[0];
    let consumers = &installed.consumers;
    let mut lines = r.human.split_inclusive('\n');
    let mut human = lines.next().unwrap_or_default().to_string();
    human.push_str(&said.note);
    let mut doc = json!({
        "name": name,
        "value": said.doc,
        "previous_generation": installed.previous_generation,
        "consumers": consumers,
        "applied": r.applied,
        "rolled_back": r.rolled_back,
    });
    if no_apply || consumers.is_empty() {
        // Nothing is applied: why some consumers are served from their last
        // good definition, or that a broken file may hide one, is said here.
        let hidden = say_note(served, consumers, &mut human, &mut doc);
        human.push_str(match (no_apply, hidden) {
            (true, _) => "staged only (--no-apply): nothing applied or restarted; run `credloader apply` to deliver it\n",
            (false, true) => "the new value is installed, but no service got it\n",
            (false, false) => "no service uses it: nothing to apply\n",
        });
        let code = if hidden && !no_apply {
            exit::FAILED
        } else {
            exit::OK
        };
        return Output::new(code, human, doc);
    }
    if !served.problems.is_empty() {
        doc["config_errors"] = json!(served.problems);
    }
    human.extend(lines);
    doc["apply"] = json!(r.apply);
    doc["verification"] = json!(r.verification);
    if !r.units_checked {
        doc["units_checked"] = json!(false);
    }
    doc["verified"] = json!(r.verified == Some(true));
    if !r.rolled_back {
        return Output::new(exit::OK, human, doc);
    }
    doc["rollback"] = json!(r.rollback);
    doc["rejected_generation"] = json!(installed.rejected_generation);
    let errors = rolled_back_errors(name, installed.rejected_generation, r);
    Output::new(exit::ROLLED_BACK, human, doc).with_errors(errors)
}

/// What `-q` shows of a rotation that was rolled back.
fn rolled_back_errors(name: &str, rejected: Option<u32>, r: &Rotation) -> Vec<String> {
    let mut errors = Check::failures(&r.verification);
    errors.push(format!(
        "credential {name}: the new value failed verification and was rolled back{}",
        rejected
            .map(|n| format!(
                "; it is kept as generation {n} (`credloader rollback {name} --to {n}` retries it)"
            ))
            .unwrap_or_default()
    ));
    errors
}
