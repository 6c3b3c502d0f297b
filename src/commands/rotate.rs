//! `credloader rotate NAME`: seal a new value, keep the old one as a
//! generation, apply to exactly its consumers, verify each, and put the old
//! value back (exit 4) if any verification fails. The apply lock is held
//! from before the seal to after the verdict; the work itself is
//! [`crate::rotation`], which `sync` shares.

use serde_json::json;

use super::seal::{self, creds_dir, read_value, validate};
use super::{CommandError, Context, Output};
use crate::apply;
use crate::cli::RotateArgs;
use crate::config::Config;
use crate::escape::ShowPath;
use crate::lock::Lock;
use crate::rotation::{self, Check, NewValue, Served, Verified};
use crate::systemd::Manager;
use crate::{exit, names};

pub fn run(ctx: &Context, args: RotateArgs) -> Result<Output, CommandError> {
    let name = args.name;
    names::credential(&name).map_err(CommandError::Usage)?;
    let config = ctx.load_config()?;
    let (_dir, held) = apply::lock(&config, &ctx.root)?;
    let creds = creds_dir(&ctx.root, &config.loader)?;
    let served = Served::load(&ctx.root, &config)?;
    if seal::current_sealed(&creds, &name)?.is_none() {
        return Err(CommandError::Usage(format!(
            "credential {name} does not exist in {}; seal it first with `credloader seal {name}`",
            creds.path().shown()
        )));
    }
    let entered = seal::enter(&config, &served, &name, read_value(&args.input, &name)?)?;
    validate(&served, &name, &entered.value)?;
    let not_after = seal::not_after(&args.input)?;
    let (sealed, info) = seal::seal(&name, &entered.value, args.input.key, not_after)?;
    let masked = entered.value.masked();
    let length = entered.value.len();
    let note = entered.note(&name).map(|n| n + "\n").unwrap_or_default();
    let value_doc = seal::value_doc(&entered);
    drop(entered);

    let manager = ctx.manager();
    let new = NewValue {
        name: name.clone(),
        sealed,
        info,
        masked: masked.clone(),
        length,
    };
    let r = rotation::rotate(&ctx.root, &config, manager, vec![new], args.no_apply, &held)?;
    let consumers = &r.credentials[0].consumers;
    let generation = r.credentials[0].previous_generation;
    let rejected = r.credentials[0].rejected_generation;

    // The rotation's account, with the note after its first line.
    let mut human = String::new();
    let mut lines = r.human.split_inclusive('\n');
    human.push_str(lines.next().unwrap_or_default());
    human.push_str(&note);
    let mut doc = json!({
        "name": name,
        "value": value_doc,
        "previous_generation": generation,
        "consumers": consumers,
        "applied": r.applied,
        "rolled_back": r.rolled_back,
    });
    if args.no_apply || consumers.is_empty() {
        // Nothing is applied: why some consumers are served from their last
        // good definition, or that a broken file may hide one, is said here.
        let hidden = seal::say_note(&served, consumers, &mut human, &mut doc);
        human.push_str(match (args.no_apply, hidden) {
            (true, _) => "staged only (--no-apply): nothing applied or restarted; run `credloader apply` to deliver it\n",
            (false, true) => "the new value is installed, but no service got it\n",
            (false, false) => "no service uses it: nothing to apply\n",
        });
        let code = if hidden && !args.no_apply {
            exit::FAILED
        } else {
            exit::OK
        };
        return Ok(Output::new(code, human, doc));
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
        return Ok(Output::new(exit::OK, human, doc));
    }
    doc["rollback"] = json!(r.rollback);
    doc["rejected_generation"] = json!(rejected);
    let mut errors = Check::failures(&r.verification);
    errors.push(format!(
        "credential {name}: the new value failed verification and was rolled back{}",
        rejected
            .map(|n| format!(
                "; it is kept as generation {n} (`credloader rollback {name} --to {n}` retries it)"
            ))
            .unwrap_or_default()
    ));
    Ok(Output::new(exit::ROLLED_BACK, human, doc).with_errors(errors))
}

/// [`rotation::apply_and_verify`] for the commands (`rollback`).
pub(super) fn apply_and_verify(
    ctx: &Context,
    config: &Config,
    served: &Served,
    manager: Manager,
    what: (&[String], &[&str]),
    held: &Lock,
) -> Result<Verified, CommandError> {
    Ok(rotation::apply_and_verify(
        &ctx.root, config, served, manager, what, held,
    )?)
}
