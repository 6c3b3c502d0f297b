//! Everything `import` checks before it changes anything, the same for
//! `--dry-run` and the real run: a dry run that passes is a real run that
//! gets past its checks.

use std::path::PathBuf;

use super::super::{CommandError, Context};
use crate::cli::ImportArgs;
use crate::config::{self, dropin_dir_for, Config, Service};
use crate::import::{self, config_text, Legacy};
use crate::root::Root;
use crate::safefs::{self, Dir, DirPolicy, FsError};
use crate::users::Accounts;
use crate::{envfile, names, runas};

/// The legacy layout as found, and the configuration import would add.
pub struct Prepared {
    pub service: String,
    pub user: String,
    pub legacy: Legacy,
    /// The keys kept in plain text, with their values.
    pub statics: Vec<(String, String)>,
    pub conf_path: PathBuf,
    pub conf_text: String,
    /// The configuration with the imported service in it.
    pub config: Config,
}

impl Prepared {
    /// The imported service, as the new configuration defines it.
    pub fn definition(&self) -> &Service {
        &self.config.services[&self.service]
    }
}

fn usage(m: String) -> CommandError {
    CommandError::Usage(m)
}

/// Runs every check; changes nothing.
pub fn prepare(ctx: &Context, args: &ImportArgs) -> Result<Prepared, CommandError> {
    let (service, existing) = free_service_name(ctx, args)?;
    let legacy = legacy(ctx, args)?;
    unit_exists(ctx, args, &legacy)?;
    let user = user(args, &legacy)?;
    every_key_named(args, &legacy)?;
    let statics = statics(args, &legacy)?;
    let conf_path = conf_path(ctx, &service)?;
    let conf_text = config_text(
        &service,
        &args.unit,
        &user,
        &args.secrets,
        &statics,
        &args.env_file,
    );
    let config = with_service(&existing, &service, &conf_path, &conf_text)?;
    let prepared = Prepared {
        service,
        user,
        legacy,
        statics,
        conf_path,
        conf_text,
        config,
    };
    owner_check(ctx, &prepared)?;
    places(ctx, &prepared)?;
    Ok(prepared)
}

/// The service's name (`--service`, else the unit's), valid and not yet
/// defined, and the configuration as it is.
fn free_service_name(ctx: &Context, args: &ImportArgs) -> Result<(String, Config), CommandError> {
    names::unit(&args.unit)?;
    let service = args
        .service
        .clone()
        .unwrap_or_else(|| args.unit.trim_end_matches(".service").to_string());
    names::service(&service)?;
    let existing = ctx.load_config_or_default()?;
    if let Some(s) = existing.services.get(&service) {
        return Err(usage(format!(
            "service {service} is already configured ({}); pick another name with --service",
            s.origin
        )));
    }
    // A broken or refused file may define it: a second definition would
    // only break both.
    if let Some(problems) = existing.broken.get(&service) {
        return Err(usage(format!(
            "service {service} is defined in a file that cannot be used: {}; fix that file, \
             or pick another name with --service",
            crate::state::describe(problems)
        )));
    }
    Ok((service, existing))
}

/// The legacy layout, which systemd must have read whole.
fn legacy(ctx: &Context, args: &ImportArgs) -> Result<Legacy, CommandError> {
    let legacy = import::inspect(
        &ctx.root,
        &args.env_file,
        &args.unit,
        args.dropin.as_deref(),
    )
    .map_err(|e| usage(format!("import of {}: {e}", args.unit)))?;
    if !legacy.issues.is_empty() {
        return Err(usage(format!(
            "{}: systemd would ignore parts of it ({}); fix the file first",
            args.env_file.display(),
            legacy.issues.join("; ")
        )));
    }
    Ok(legacy)
}

/// The service's config file, which must not exist yet.
fn conf_path(ctx: &Context, service: &str) -> Result<PathBuf, CommandError> {
    let (main, _) = ctx.config_path();
    let conf_path = dropin_dir_for(&main).join(format!("{service}.toml"));
    if conf_path.exists() {
        return Err(usage(format!(
            "{} already exists; pick another name with --service",
            conf_path.display()
        )));
    }
    Ok(conf_path)
}

/// The directories the real run writes to can be opened as it opens them:
/// the config drop-in dir (or it does not exist yet, and is created) and
/// each legacy drop-in's.
fn places(ctx: &Context, p: &Prepared) -> Result<(), CommandError> {
    let conf_dir = dropin_dir_for(&ctx.config_path().0);
    match Dir::open(&Root::live(), &conf_dir, DirPolicy::EXISTING) {
        Ok(_)
        | Err(FsError::Os {
            errno: nix::errno::Errno::ENOENT,
            ..
        }) => {}
        Err(e) => return Err(CommandError::Environment(e.to_string())),
    }
    for d in &p.legacy.dropins {
        let (dir, _) = safefs::split(&d.path);
        Dir::open(&ctx.root, dir, DirPolicy::EXISTING)
            .map_err(|e| CommandError::Environment(e.to_string()))?;
    }
    Ok(())
}

/// The unit must exist: its file, or (on a running system) a loaded unit.
fn unit_exists(ctx: &Context, args: &ImportArgs, legacy: &Legacy) -> Result<(), CommandError> {
    let loaded = ctx
        .manager()
        .property(&args.unit, "LoadState")
        .is_some_and(|l| l == "loaded");
    if legacy.unit_file.is_none() && !loaded {
        return Err(usage(format!(
            "unit {} does not exist; install it first or fix --unit",
            args.unit
        )));
    }
    Ok(())
}

/// `--user`, else the unit's `User=`.
fn user(args: &ImportArgs, legacy: &Legacy) -> Result<String, CommandError> {
    args.user
        .clone()
        .or(legacy.unit_user.clone())
        .ok_or_else(|| {
            usage(format!(
                "unit {unit} has no User=, so it runs as root and its env file must be root's: \
                 pass --user root, or give {unit} a User= first (then import takes it from there)",
                unit = args.unit
            ))
        })
}

/// Every key of the env file is named by `--secret` or `--static`, once.
fn every_key_named(args: &ImportArgs, legacy: &Legacy) -> Result<(), CommandError> {
    let has = |key: &str| legacy.vars.iter().any(|(k, _)| k == key);
    for key in &args.secrets {
        names::credential(key).map_err(|m| usage(format!("--secret {key}: {m}")))?;
        if !has(key) {
            let all: Vec<&str> = legacy.vars.iter().map(|(k, _)| k.as_str()).collect();
            return Err(usage(format!(
                "--secret {key}: {} has no variable {key} (it has: {})",
                args.env_file.display(),
                all.join(", ")
            )));
        }
    }
    // A forgotten --secret would otherwise put a secret in plain text into
    // a configuration file.
    for key in &args.statics {
        if args.secrets.contains(key) {
            return Err(usage(format!(
                "{key} is named by both --secret and --static; pick one"
            )));
        }
        if !has(key) {
            return Err(usage(format!(
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
        return Err(usage(format!(
            "{} also has {}: say for each whether it is secret (--secret KEY, sealed) or not \
             (--static KEY, kept in plain text in the configuration)",
            args.env_file.display(),
            unclassified.join(", ")
        )));
    }
    Ok(())
}

/// Checks every value can be carried; returns the `--static` ones.
fn statics(args: &ImportArgs, legacy: &Legacy) -> Result<Vec<(String, String)>, CommandError> {
    let mut statics = Vec::new();
    for (k, v) in &legacy.vars {
        if let Err(e) = envfile::check_value(k, v.expose()) {
            return Err(usage(format!(
                "{}: the value of {k} {e}; fix it before importing",
                args.env_file.display()
            )));
        }
        if !args.secrets.contains(k) {
            let text = std::str::from_utf8(v.expose()).expect("checked");
            statics.push((k.clone(), text.to_string()));
        }
    }
    Ok(statics)
}

/// The configuration with the new service file in it; it must load, and
/// the service must be valid.
fn with_service(
    existing: &Config,
    service: &str,
    conf_path: &std::path::Path,
    conf_text: &str,
) -> Result<Config, CommandError> {
    let mut texts = Vec::new();
    for f in &existing.files {
        texts.push((f.clone(), std::fs::read_to_string(f).unwrap_or_default()));
    }
    texts.push((conf_path.to_path_buf(), conf_text.to_string()));
    let invalid = |e: String| {
        usage(format!(
            "the imported service would not be a valid configuration: {e}"
        ))
    };
    let config =
        config::from_texts_with_main(texts, &existing.main).map_err(|e| invalid(e.to_string()))?;
    if let Some(problems) = config.broken.get(service) {
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        return Err(invalid(text.join("; ")));
    }
    Ok(config)
}

/// The check apply makes before it writes an env file: its owner must
/// exist and be the user the unit runs as (or root).
fn owner_check(ctx: &Context, p: &Prepared) -> Result<(), CommandError> {
    let service = p.definition();
    let accounts = Accounts::new(&ctx.root).map_err(|e| usage(e.to_string()))?;
    let owner = accounts
        .lookup(&service.user, service.group.as_deref())
        .map_err(|e| usage(format!("import of {}: {e}", service.unit)))?;
    let runs_as = runas::units(ctx.manager(), &ctx.root, &[&service.unit]);
    if let Some((why, _)) = runas::mismatch(service, owner, &runs_as[0], &accounts) {
        return Err(usage(format!(
            "import of {unit}: refusing to hand its env file to {user}: {why}; pass \
             --user with the user {unit} runs as, or set User={user} in {unit}",
            unit = service.unit,
            user = service.user,
        )));
    }
    Ok(())
}
