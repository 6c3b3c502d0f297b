//! `credloader import`: the manual layout (plaintext env file + its
//! `EnvironmentFile=` drop-in, keys sealed by hand) to credloader, in one
//! command. `--dry-run` runs every check the real run does and shows every
//! step; the real run then seals ([`secrets`]), writes the service's config
//! file, replaces the legacy drop-in, applies, and removes the plaintext.

mod preflight;
mod secrets;

use std::ffi::OsStr;
use std::fmt::Write as _;

use serde_json::json;

use super::seal::creds_dir;
use super::{CommandError, Context, Output};
use crate::apply::{self, Options};
use crate::cli::ImportArgs;
use crate::config::dropin_dir_for;
use crate::exit;
use crate::import::{shred_and_remove, DropinChange};
use crate::lock::Lock;
use crate::rotation::Served;
use crate::safefs::{self, Dir, DirPolicy, FsError, Owner};
use preflight::Prepared;
use secrets::SecretPlan;

const SHRED_NOTE: &str = "overwriting is best-effort: on journaling, copy-on-write (btrfs, ZFS) \
                          and flash storage old copies of the blocks may survive";

pub fn run(ctx: &Context, args: ImportArgs) -> Result<Output, CommandError> {
    let prep = preflight::prepare(ctx, &args)?;
    let loader = &prep.config.loader;
    // The real run plans under the lock, so nothing changes in between.
    let held = if args.dry_run {
        None
    } else {
        Some(apply::lock(&prep.config, &ctx.root)?.1)
    };
    let served = Served::load(&ctx.root, &prep.config)?;
    let creds = if args.dry_run {
        match Dir::open(&ctx.root, &loader.creds_dir, DirPolicy::EXISTING) {
            Ok(d) => Some(d),
            Err(FsError::Os {
                errno: nix::errno::Errno::ENOENT,
                ..
            }) => None,
            Err(e) => return Err(CommandError::Environment(format!("creds dir: {e}"))),
        }
    } else {
        Some(creds_dir(&ctx.root, loader)?)
    };
    let mut plans = secrets::plan(
        &args,
        &prep.legacy.vars,
        &prep.config,
        &served,
        creds.as_ref(),
    )?;
    let Some(held) = held else {
        let (mut human, doc) = report(&args, &prep, &plans, true);
        let _ = writeln!(
            human,
            "  apply: would write {} and the drop-in, and restart {}",
            prep.definition().env_file.display(),
            args.unit
        );
        let _ = writeln!(
            human,
            "  plaintext: would overwrite {} with zeros and remove it ({SHRED_NOTE})",
            args.env_file.display()
        );
        return Ok(Output::new(exit::OK, human, doc));
    };
    let creds = creds.expect("opened for a real run");
    secrets::seal_all(&mut plans, &ctx.root, &prep.config, &creds, args.key)?;
    let (human, doc) = report(&args, &prep, &plans, false);
    execute(ctx, &args, &prep, &held, human, doc)
}

/// What import does (or would do), step by step, and its JSON.
fn report(
    args: &ImportArgs,
    prep: &Prepared,
    plans: &[SecretPlan],
    dry: bool,
) -> (String, serde_json::Value) {
    let mut human = String::new();
    if dry {
        human.push_str("dry run: every check passed; nothing is changed\n");
    }
    let verb = |now: &'static str, later: &'static str| if dry { later } else { now };
    let _ = writeln!(
        human,
        "importing {} for unit {} (service {}, user {})",
        args.env_file.display(),
        args.unit,
        prep.service,
        prep.user
    );
    let secrets_doc: Vec<serde_json::Value> = plans
        .iter()
        .map(|p| secrets::describe(p, dry, &mut human))
        .collect();
    for (k, _) in &prep.statics {
        let _ = writeln!(
            human,
            "  {k}: not secret, {} as `static`",
            verb("kept", "would be kept")
        );
    }
    let _ = writeln!(
        human,
        "  config: {} {}",
        verb("wrote", "would write"),
        prep.conf_path.display()
    );
    let dropins_doc = describe_dropins(args, prep, dry, &mut human);
    let required = prep.definition().required;
    if prep.legacy.optional && required {
        let _ = writeln!(
            human,
            "  note: the legacy drop-in loads {env} as optional (EnvironmentFile=-), so {unit} \
             started even without it. credloader's drop-in makes the env file required: {unit} \
             will not start without its secrets. To keep it optional, add `required = false` \
             to {conf}.",
            env = args.env_file.display(),
            unit = args.unit,
            conf = prep.conf_path.display()
        );
    }
    let doc = json!({
        "dry_run": dry,
        "service": prep.service,
        "unit": args.unit,
        "user": prep.user,
        "env_file": args.env_file,
        "secrets": secrets_doc,
        "statics": prep.statics.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        "config_file": prep.conf_path,
        "legacy_dropins": dropins_doc,
        "legacy_optional": prep.legacy.optional,
        "required": required,
        "plaintext_removed": false,
        "note": SHRED_NOTE,
    });
    (human, doc)
}

fn describe_dropins(
    args: &ImportArgs,
    prep: &Prepared,
    dry: bool,
    human: &mut String,
) -> Vec<serde_json::Value> {
    let mut doc = Vec::new();
    for d in &prep.legacy.dropins {
        let rewrite = matches!(d.change, DropinChange::Rewrite(_));
        let _ = writeln!(
            human,
            "  legacy drop-in {}: {}",
            d.path.display(),
            match (rewrite, dry) {
                (true, false) => "its EnvironmentFile= line removed",
                (true, true) => "would lose its EnvironmentFile= line",
                (false, false) => "removed",
                (false, true) => "would be removed",
            }
        );
        let action = if rewrite { "rewrite" } else { "remove" };
        doc.push(json!({ "path": d.path, "action": action }));
    }
    if prep.legacy.dropins.is_empty() {
        let _ = writeln!(
            human,
            "  no legacy drop-in names {}",
            args.env_file.display()
        );
    }
    doc
}

/// Writes the config file and the legacy drop-ins (or puts them back).
fn change_dropins(ctx: &Context, prep: &Prepared, restore: bool) -> Result<(), CommandError> {
    for d in &prep.legacy.dropins {
        let (dir, name) = safefs::split(&d.path);
        let dir = Dir::open(&ctx.root, dir, DirPolicy::EXISTING)
            .map_err(|e| CommandError::Environment(e.to_string()))?;
        let r = match (restore, &d.change) {
            (true, _) => dir.write_atomic(name, d.text.as_bytes(), Owner::ROOT_0644),
            (false, DropinChange::Rewrite(t)) => {
                dir.write_atomic(name, t.as_bytes(), Owner::ROOT_0644)
            }
            (false, DropinChange::Remove) => dir.remove(name),
        };
        r.map_err(|e| CommandError::Environment(e.to_string()))?;
    }
    Ok(())
}

/// The rest of a real run, once the secrets are sealed: the config file,
/// the legacy drop-ins, apply (undone if it fails), the plaintext.
fn execute(
    ctx: &Context,
    args: &ImportArgs,
    prep: &Prepared,
    held: &Lock,
    mut human: String,
    mut doc: serde_json::Value,
) -> Result<Output, CommandError> {
    let conf_dir = dropin_dir_for(&ctx.config_path().0);
    let conf = Dir::open(
        &crate::root::Root::live(),
        &conf_dir,
        DirPolicy::create(0o755),
    )
    .map_err(|e| CommandError::Environment(e.to_string()))?;
    let conf_name = OsStr::new(prep.conf_path.file_name().expect("has a name"));
    conf.write_atomic(conf_name, prep.conf_text.as_bytes(), Owner::ROOT_0644)
        .map_err(|e| CommandError::Environment(e.to_string()))?;
    change_dropins(ctx, prep, false)?;
    let opts = Options {
        dry_run: false,
        only: vec![prep.service.clone()],
        restart: true,
        jobs: 0,
    };
    let report = apply::apply_locked(&prep.config, &ctx.root, ctx.manager(), &opts, held)?;
    doc["apply"] = serde_json::to_value(&report).expect("serializes");
    if !report.all_ok() {
        // Put the legacy layout back; the plaintext stays.
        change_dropins(ctx, prep, true)?;
        let _ = conf.remove(conf_name);
        let errors: Vec<String> = report.failed().filter_map(|s| s.error.clone()).collect();
        let _ = writeln!(
            human,
            "apply failed for {}: {}\nthe legacy drop-in and {} are left in place, {} was removed; \
             the sealed credentials stay in the creds dir",
            prep.service,
            errors.join("; "),
            args.env_file.display(),
            prep.conf_path.display()
        );
        if ctx.manager() == crate::systemd::Manager::Live {
            let _ = ctx.manager().daemon_reload();
        }
        return Ok(Output::new(exit::FAILED, human, doc));
    }
    let _ = writeln!(
        human,
        "  applied: {} written{}",
        prep.definition().env_file.display(),
        report
            .services
            .first()
            .and_then(|s| s.action.as_ref())
            .map(|a| format!(", {a} of {} queued", args.unit))
            .unwrap_or_default()
    );
    for w in &report.warnings {
        let _ = writeln!(human, "  warning: {w}");
    }
    match shred_and_remove(&ctx.root, &args.env_file) {
        Ok(()) => {
            doc["plaintext_removed"] = json!(true);
            let _ = writeln!(
                human,
                "  plaintext: {} overwritten with zeros and removed ({SHRED_NOTE})",
                args.env_file.display()
            );
            Ok(Output::new(exit::OK, human, doc))
        }
        Err(e) => {
            let _ = writeln!(
                human,
                "  plaintext: could NOT remove {}: {e}; its secrets are sealed now: remove it \
                 yourself (`shred -u {}`)",
                args.env_file.display(),
                args.env_file.display()
            );
            Ok(Output::new(exit::FAILED, human, doc))
        }
    }
}
