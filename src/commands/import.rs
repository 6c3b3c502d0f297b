//! `credloader import`: the manual layout (plaintext env file + its
//! `EnvironmentFile=` drop-in) to credloader. `--dry-run` shows every step.

use std::ffi::OsStr;
use std::fmt::Write as _;

use serde_json::json;

use super::seal::{
    creds_dir, current_sealed, install, load_config_or_default, record_current, seal,
};
use super::{CommandError, Context, Output};
use crate::apply::{self, Options};
use crate::cli::ImportArgs;
use crate::config::{self, dropin_dir_for};
use crate::generations::History;
use crate::import::{self, config_text, shred_and_remove};
use crate::safefs::{self, Dir, DirPolicy, Owner};
use crate::{envfile, exit, names, systemd_creds};

const SHRED_NOTE: &str = "overwriting is best-effort: on journaling, copy-on-write (btrfs, ZFS) \
                          and flash storage old copies of the blocks may survive";

pub fn run(ctx: &Context, args: ImportArgs) -> Result<Output, CommandError> {
    names::unit(&args.unit).map_err(CommandError::Usage)?;
    let service = args
        .service
        .clone()
        .unwrap_or_else(|| args.unit.trim_end_matches(".service").to_string());
    names::service(&service).map_err(CommandError::Usage)?;
    let existing = load_config_or_default(ctx)?;
    if existing.services.contains_key(&service) {
        return Err(CommandError::Usage(format!(
            "service {service} is already configured ({}); pick another name with --service",
            existing.services[&service].origin
        )));
    }
    let loader = existing.loader.clone();
    let legacy = import::inspect(
        &ctx.root,
        &args.env_file,
        &args.unit,
        args.dropin.as_deref(),
    )
    .map_err(|e| CommandError::Usage(format!("import of {}: {e}", args.unit)))?;
    if !legacy.issues.is_empty() {
        return Err(CommandError::Usage(format!(
            "{}: systemd would ignore parts of it ({}); fix the file first",
            args.env_file.display(),
            legacy.issues.join("; ")
        )));
    }
    if legacy.unit_file.is_none() && !args.dry_run {
        return Err(CommandError::Usage(format!(
            "unit {} does not exist; install it first or fix --unit",
            args.unit
        )));
    }
    let user = args
        .user
        .clone()
        .or(legacy.unit_user.clone())
        .ok_or_else(|| {
            CommandError::Usage(format!(
                "unit {} has no User=; name the service's user with --user",
                args.unit
            ))
        })?;
    for key in &args.secrets {
        names::credential(key).map_err(|m| CommandError::Usage(format!("--secret {key}: {m}")))?;
        if !legacy.vars.iter().any(|(k, _)| k == key) {
            return Err(CommandError::Usage(format!(
                "--secret {key}: {} has no variable {key} (it has: {})",
                args.env_file.display(),
                legacy
                    .vars
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    // Every key must be classified: a forgotten --secret would otherwise put
    // a secret in plain text into a configuration file.
    for key in &args.statics {
        if args.secrets.contains(key) {
            return Err(CommandError::Usage(format!(
                "{key} is named by both --secret and --static; pick one"
            )));
        }
        if !legacy.vars.iter().any(|(k, _)| k == key) {
            return Err(CommandError::Usage(format!(
                "--static {key}: {} has no variable {key}",
                args.env_file.display()
            )));
        }
    }
    let unclassified: Vec<&str> = legacy
        .vars
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !args.secrets.iter().any(|s| s == k) && !args.statics.iter().any(|s| s == k))
        .collect();
    if !unclassified.is_empty() {
        return Err(CommandError::Usage(format!(
            "{} also has {}: say for each whether it is secret (--secret KEY, sealed) or not \
             (--static KEY, kept in plain text in the configuration)",
            args.env_file.display(),
            unclassified.join(", ")
        )));
    }
    let mut statics = Vec::new();
    for (k, v) in &legacy.vars {
        if let Err(e) = envfile::check_value(k, v.expose()) {
            return Err(CommandError::Usage(format!(
                "{}: the value of {k} {e}; fix it before importing",
                args.env_file.display()
            )));
        }
        if !args.secrets.contains(k) {
            let text = std::str::from_utf8(v.expose())
                .expect("checked")
                .to_string();
            statics.push((k.clone(), text));
        }
    }
    let (main, _) = ctx.config_path();
    let conf_dir = dropin_dir_for(&main);
    let conf_path = conf_dir.join(format!("{service}.toml"));
    if conf_path.exists() {
        return Err(CommandError::Usage(format!(
            "{} already exists; pick another name with --service",
            conf_path.display()
        )));
    }
    let conf_text = config_text(
        &service,
        &args.unit,
        &user,
        &args.secrets,
        &statics,
        &args.env_file,
    );
    // The configuration with the new service must load before anything changes.
    let mut texts = Vec::new();
    for f in &existing.files {
        texts.push((f.clone(), std::fs::read_to_string(f).unwrap_or_default()));
    }
    texts.push((conf_path.clone(), conf_text.clone()));
    let new_config = config::from_texts(texts).map_err(|e| {
        CommandError::Usage(format!(
            "the imported service would not be a valid configuration: {e}"
        ))
    })?;
    if let Some(problems) = new_config.broken.get(&service) {
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        return Err(CommandError::Usage(format!(
            "the imported service would not be a valid configuration: {}",
            text.join("; ")
        )));
    }

    // What each secret will become (nothing written yet).
    let creds = creds_dir(&ctx.root, &loader)?;
    let mut plan = Vec::new();
    for key in &args.secrets {
        let value = &legacy
            .vars
            .iter()
            .find(|(k, _)| k == key)
            .expect("checked")
            .1;
        let action = match current_sealed(&creds, key)? {
            None => "seal",
            Some(bytes) => match systemd_creds::decrypt(key, &bytes) {
                Ok((old, legacy_name)) if old.ct_eq(value.expose()) => {
                    if legacy_name {
                        "reseal"
                    } else {
                        "reuse"
                    }
                }
                Ok(_) => {
                    return Err(CommandError::Usage(format!(
                        "credential {key} already exists in {} with a different value than {}; \
                         decide which is right (`credloader show {key}`), then remove one",
                        creds.path().display(),
                        args.env_file.display()
                    )))
                }
                Err(e) => {
                    return Err(CommandError::Usage(format!(
                        "credential {key} already exists and cannot be read: {e}"
                    )))
                }
            },
        };
        plan.push((key.clone(), action, value.masked(), value.len()));
    }

    let mut human = String::new();
    let dry = args.dry_run;
    if dry {
        human.push_str("dry run: nothing is changed\n");
    }
    let verb = |now: &str, later: &str| {
        if dry {
            later.to_string()
        } else {
            now.to_string()
        }
    };
    let _ = writeln!(
        human,
        "importing {} for unit {} (service {service}, user {user})",
        args.env_file.display(),
        args.unit
    );
    let mut secrets_doc = Vec::new();
    for (key, action, masked, len) in &plan {
        let what = match *action {
            "seal" => verb("sealed", "would seal"),
            "reseal" => verb(
                "resealed with its own name (it was sealed without --name)",
                "would reseal with its own name (it was sealed without --name)",
            ),
            _ => verb(
                "already sealed with this value",
                "is already sealed with this value",
            ),
        };
        let _ = writeln!(human, "  secret {key}: {masked} ({len} bytes) {what}");
        secrets_doc.push(json!({ "key": key, "action": action, "masked": masked, "length": len }));
    }
    for (k, _) in &statics {
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
        conf_path.display()
    );
    let mut dropins_doc = Vec::new();
    for (p, _, new) in &legacy.dropins {
        let action = if new.is_some() { "rewrite" } else { "remove" };
        let _ = writeln!(
            human,
            "  legacy drop-in {}: {}",
            p.display(),
            match (new.is_some(), dry) {
                (true, false) => "its EnvironmentFile= line removed",
                (true, true) => "would lose its EnvironmentFile= line",
                (false, false) => "removed",
                (false, true) => "would be removed",
            }
        );
        dropins_doc.push(json!({ "path": p, "action": action }));
    }
    if legacy.dropins.is_empty() {
        let _ = writeln!(
            human,
            "  no legacy drop-in names {}",
            args.env_file.display()
        );
    }
    let mut doc = json!({
        "dry_run": dry,
        "service": service,
        "unit": args.unit,
        "user": user,
        "env_file": args.env_file,
        "secrets": secrets_doc,
        "statics": statics.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        "config_file": conf_path,
        "legacy_dropins": dropins_doc,
        "plaintext_removed": false,
        "note": SHRED_NOTE,
    });
    if dry {
        let _ = writeln!(
            human,
            "  apply: would write {} and the drop-in, and restart {}",
            new_config.services[&service].env_file.display(),
            args.unit
        );
        let _ = writeln!(
            human,
            "  plaintext: would overwrite {} with zeros and remove it ({SHRED_NOTE})",
            args.env_file.display()
        );
        return Ok(Output::new(exit::OK, human, doc));
    }

    // From here on, things change; the lock is held throughout.
    let (_state, held) = apply::lock(&new_config, &ctx.root)?;
    for (key, action, _, _) in &plan {
        if *action == "reuse" {
            continue;
        }
        let value = &legacy
            .vars
            .iter()
            .find(|(k, _)| k == key)
            .expect("checked")
            .1;
        let (sealed, info) = seal(key, value, args.key, None)?;
        if let Some(old) = current_sealed(&creds, key)? {
            if let Ok(mut h) = History::open(&ctx.root, &loader.state_dir, key, true) {
                let _ = h.push(&old, None, loader.keep_generations);
            }
        }
        install(&creds, key, &sealed)?;
        record_current(&ctx.root, &loader, key, info);
    }
    let conf = Dir::open(
        &crate::root::Root::live(),
        &conf_dir,
        DirPolicy::create(0o755),
    )
    .map_err(|e| CommandError::Environment(e.to_string()))?;
    let conf_name = OsStr::new(conf_path.file_name().expect("has a name"));
    conf.write_atomic(conf_name, conf_text.as_bytes(), Owner::ROOT_0644)
        .map_err(|e| CommandError::Environment(e.to_string()))?;
    let dropin_change = |restore: bool| -> Result<(), CommandError> {
        for (p, old, new) in &legacy.dropins {
            let (d, name) = safefs::split(p);
            let dir = Dir::open(&ctx.root, d, DirPolicy::EXISTING)
                .map_err(|e| CommandError::Environment(e.to_string()))?;
            let r = match (restore, new) {
                (true, _) => dir.write_atomic(name, old.as_bytes(), Owner::ROOT_0644),
                (false, Some(t)) => dir.write_atomic(name, t.as_bytes(), Owner::ROOT_0644),
                (false, None) => dir.remove(name),
            };
            r.map_err(|e| CommandError::Environment(e.to_string()))?;
        }
        Ok(())
    };
    dropin_change(false)?;
    let opts = Options {
        dry_run: false,
        only: vec![service.clone()],
        restart: true,
        jobs: 0,
    };
    let report = apply::apply_locked(&new_config, &ctx.root, ctx.manager(), &opts, &held)?;
    doc["apply"] = serde_json::to_value(&report).expect("serializes");
    if !report.all_ok() {
        // Put the legacy layout back; the plaintext stays.
        dropin_change(true)?;
        let _ = conf.remove(conf_name);
        let errors: Vec<String> = report.failed().filter_map(|s| s.error.clone()).collect();
        let _ = writeln!(
            human,
            "apply failed for {service}: {}\nthe legacy drop-in and {} are left in place, {} was removed; \
             the sealed credentials stay in the creds dir",
            errors.join("; "),
            args.env_file.display(),
            conf_path.display()
        );
        if ctx.manager() == crate::systemd::Manager::Live {
            let _ = ctx.manager().daemon_reload();
        }
        return Ok(Output::new(exit::FAILED, human, doc));
    }
    let env = &new_config.services[&service].env_file;
    let _ = writeln!(
        human,
        "  applied: {} written{}",
        env.display(),
        report
            .services
            .first()
            .and_then(|s| s.action.as_ref())
            .map(|a| format!(", {a} of {} queued", args.unit))
            .unwrap_or_default()
    );
    match shred_and_remove(&ctx.root, &args.env_file) {
        Ok(()) => {
            doc["plaintext_removed"] = json!(true);
            let _ = writeln!(
                human,
                "  plaintext: {} overwritten with zeros and removed ({SHRED_NOTE})",
                args.env_file.display()
            );
        }
        Err(e) => {
            let _ = writeln!(
                human,
                "  plaintext: could NOT remove {}: {e}; remove it yourself (`shred -u {}`)",
                args.env_file.display(),
                args.env_file.display()
            );
            return Ok(Output::new(exit::FAILED, human, doc));
        }
    }
    Ok(Output::new(exit::OK, human, doc))
}
