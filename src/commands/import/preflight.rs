//! Everything `import` checks before it changes anything, the same for
//! `--dry-run` and the real run: a dry run that passes is a real run that
//! gets past its checks.

use std::path::PathBuf;

use thiserror::Error;

use super::super::{CommandError, Context};
use super::ImportError;
use crate::cli::ImportArgs;
use crate::config::{self, dropin_dir_for, Config, ConfigError, Origin, Problem, Service};
use crate::import::{self, config_text, Legacy, LegacyError};
use crate::root::Root;
use crate::safefs::{self, Dir, DirPolicy, FsError};
use crate::users::{Accounts, UserError};
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

/// Why `import` refuses before it changes anything (exit 2).
#[derive(Debug, Error)]
pub enum PreflightError {
    /// The service's name is configured already.
    #[error(
        "service {service} is already configured ({origin}); pick another name with --service"
    )]
    Configured {
        /// The service.
        service: String,
        /// Where.
        origin: Origin,
    },
    /// A file that cannot be used defines the service's name.
    #[error(
        "service {service} is defined in a file that cannot be used: {}; fix that file, \
         or pick another name with --service",
        crate::state::describe(problems)
    )]
    DefinedBroken {
        /// The service.
        service: String,
        /// What is wrong with the file.
        problems: Vec<Problem>,
    },
    /// The legacy layout cannot be read.
    #[error("import of {unit}: {error}")]
    Legacy {
        /// `--unit`.
        unit: String,
        /// Why.
        error: LegacyError,
    },
    /// systemd would not read the env file whole.
    #[error(
        "{}: systemd would ignore parts of it ({}); fix the file first",
        env_file.display(),
        issues.join("; ")
    )]
    Ignored {
        /// `--env-file`.
        env_file: PathBuf,
        /// What systemd would ignore.
        issues: Vec<String>,
    },
    /// The service's config file exists already.
    #[error("{} already exists; pick another name with --service", path.display())]
    ConfigExists {
        /// The config file.
        path: PathBuf,
    },
    /// No such unit.
    #[error("unit {unit} does not exist; install it first or fix --unit")]
    NoUnit {
        /// `--unit`.
        unit: String,
    },
    /// No `--user`, and the unit has no `User=`.
    #[error(
        "unit {unit} has no User=, so it runs as root and its env file must be root's: \
         pass --user root, or give {unit} a User= first (then import takes it from there)"
    )]
    NoUser {
        /// `--unit`.
        unit: String,
    },
    /// A `--secret` is no valid credential name.
    #[error("--secret {key}: {error}")]
    SecretName {
        /// The key.
        key: String,
        /// Why.
        error: crate::names::NameError,
    },
    /// A `--secret` the env file does not have.
    #[error(
        "--secret {key}: {} has no variable {key} (it has: {})",
        env_file.display(),
        has.join(", ")
    )]
    NoSecret {
        /// The key.
        key: String,
        /// `--env-file`.
        env_file: PathBuf,
        /// Its variables.
        has: Vec<String>,
    },
    /// A key named by both `--secret` and `--static`.
    #[error("{key} is named by both --secret and --static; pick one")]
    Both {
        /// The key.
        key: String,
    },
    /// A `--static` the env file does not have.
    #[error("--static {key}: {} has no variable {key}", env_file.display())]
    NoStatic {
        /// The key.
        key: String,
        /// `--env-file`.
        env_file: PathBuf,
    },
    /// Variables named by neither `--secret` nor `--static`.
    #[error(
        "{} also has {}: say for each whether it is secret (--secret KEY, sealed) or not \
         (--static KEY, kept in plain text in the configuration)",
        env_file.display(),
        keys.join(", ")
    )]
    Unclassified {
        /// `--env-file`.
        env_file: PathBuf,
        /// The keys.
        keys: Vec<String>,
    },
    /// A value an env file credloader writes could not carry.
    #[error("{}: the value of {key} {error}; fix it before importing", env_file.display())]
    NotCarriable {
        /// `--env-file`.
        env_file: PathBuf,
        /// The key.
        key: String,
        /// Why.
        error: envfile::ValueError,
    },
    /// The configuration with the service in it does not load.
    #[error("the imported service would not be a valid configuration: {0}")]
    Invalid(ConfigError),
    /// The service as the new configuration defines it is broken.
    #[error(
        "the imported service would not be a valid configuration: {}",
        problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
    )]
    Broken {
        /// What is wrong with it.
        problems: Vec<Problem>,
    },
    /// The accounts cannot be read.
    #[error("{0}")]
    Accounts(UserError),
    /// The service's user or group does not exist.
    #[error("import of {unit}: {error}")]
    Owner {
        /// The unit.
        unit: String,
        /// Why.
        error: UserError,
    },
    /// The unit runs as someone its env file's owner must not be.
    #[error(
        "import of {unit}: refusing to hand its env file to {user}: {why}; pass \
         --user with the user {unit} runs as, or set User={user} in {unit}"
    )]
    RunsAs {
        /// The unit.
        unit: String,
        /// The service's user.
        user: String,
        /// Whom it runs as, and why that is refused.
        why: String,
    },
}

/// Runs every check; changes nothing.
pub fn prepare(ctx: &Context, args: &ImportArgs) -> Result<Prepared, CommandError> {
    flags(args)?;
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
        return Err(PreflightError::Configured {
            service,
            origin: s.origin.clone(),
        }
        .into());
    }
    // A broken or refused file may define it: a second definition would
    // only break both.
    if let Some(problems) = existing.broken.get(&service) {
        return Err(PreflightError::DefinedBroken {
            service,
            problems: problems.clone(),
        }
        .into());
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
    .map_err(|error| PreflightError::Legacy {
        unit: args.unit.clone(),
        error,
    })?;
    if !legacy.issues.is_empty() {
        return Err(PreflightError::Ignored {
            env_file: args.env_file.clone(),
            issues: legacy.issues.clone(),
        }
        .into());
    }
    Ok(legacy)
}

/// The service's config file, which must not exist yet.
fn conf_path(ctx: &Context, service: &str) -> Result<PathBuf, CommandError> {
    let (main, _) = ctx.config_path();
    let conf_path = dropin_dir_for(&main).join(format!("{service}.toml"));
    if conf_path.exists() {
        return Err(PreflightError::ConfigExists { path: conf_path }.into());
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
        Err(e) => return Err(ImportError::Files(e).into()),
    }
    for d in &p.legacy.dropins {
        let (dir, _) = safefs::split(&d.path);
        Dir::open(&ctx.root, dir, DirPolicy::EXISTING).map_err(ImportError::Files)?;
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
        return Err(PreflightError::NoUnit {
            unit: args.unit.clone(),
        }
        .into());
    }
    Ok(())
}

/// `--user`, else the unit's `User=`.
fn user(args: &ImportArgs, legacy: &Legacy) -> Result<String, CommandError> {
    args.user
        .clone()
        .or(legacy.unit_user.clone())
        .ok_or_else(|| {
            PreflightError::NoUser {
                unit: args.unit.clone(),
            }
            .into()
        })
}

/// What the flags alone can tell, before anything is read: every
/// `--secret` a valid credential name, no key both `--secret` and `--static`.
fn flags(args: &ImportArgs) -> Result<(), CommandError> {
    for key in &args.secrets {
        names::credential(key).map_err(|error| PreflightError::SecretName {
            key: key.clone(),
            error,
        })?;
    }
    // One key cannot be both sealed and kept in plain text.
    if let Some(key) = args.statics.iter().find(|k| args.secrets.contains(k)) {
        return Err(PreflightError::Both { key: key.clone() }.into());
    }
    Ok(())
}

/// Every key of the env file is named by `--secret` or `--static`.
fn every_key_named(args: &ImportArgs, legacy: &Legacy) -> Result<(), CommandError> {
    let has = |key: &str| legacy.vars.iter().any(|(k, _)| k == key);
    for key in &args.secrets {
        if !has(key) {
            return Err(PreflightError::NoSecret {
                key: key.clone(),
                env_file: args.env_file.clone(),
                has: legacy.vars.iter().map(|(k, _)| k.clone()).collect(),
            }
            .into());
        }
    }
    // A forgotten --secret would otherwise put a secret in plain text into
    // a configuration file.
    for key in &args.statics {
        if !has(key) {
            return Err(PreflightError::NoStatic {
                key: key.clone(),
                env_file: args.env_file.clone(),
            }
            .into());
        }
    }
    let unclassified: Vec<String> = legacy
        .vars
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !args.secrets.contains(k) && !args.statics.contains(k))
        .collect();
    if !unclassified.is_empty() {
        return Err(PreflightError::Unclassified {
            env_file: args.env_file.clone(),
            keys: unclassified,
        }
        .into());
    }
    Ok(())
}

/// Checks every value can be carried; returns the `--static` ones.
fn statics(args: &ImportArgs, legacy: &Legacy) -> Result<Vec<(String, String)>, CommandError> {
    let mut statics = Vec::new();
    for (k, v) in &legacy.vars {
        if let Err(error) = envfile::check_value(k, v.expose()) {
            return Err(PreflightError::NotCarriable {
                env_file: args.env_file.clone(),
                key: k.clone(),
                error,
            }
            .into());
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
    let config =
        config::from_texts_with_main(texts, &existing.main).map_err(PreflightError::Invalid)?;
    if let Some(problems) = config.broken.get(service) {
        return Err(PreflightError::Broken {
            problems: problems.clone(),
        }
        .into());
    }
    Ok(config)
}

/// The check apply makes before it writes an env file: its owner must
/// exist and be the user the unit runs as (or root).
fn owner_check(ctx: &Context, p: &Prepared) -> Result<(), CommandError> {
    let service = p.definition();
    let accounts = Accounts::new(&ctx.root).map_err(PreflightError::Accounts)?;
    let owner = accounts
        .lookup(&service.user, service.group.as_deref())
        .map_err(|error| PreflightError::Owner {
            unit: service.unit.clone(),
            error,
        })?;
    let runs_as = runas::units(ctx.manager(), &ctx.root, &[&service.unit]);
    if let Some((why, _)) = runas::mismatch(service, owner, &runs_as[0], &accounts) {
        return Err(PreflightError::RunsAs {
            unit: service.unit.clone(),
            user: service.user.clone(),
            why,
        }
        .into());
    }
    Ok(())
}
