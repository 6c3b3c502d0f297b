//! The validated configuration: what every other module works with. Each
//! type here holds only what survived checking; see `resolve` for how the
//! files' raw text becomes these.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::envplace::Places;

use super::errors::{ConfigError, Origin, Problem};
use super::load::{dropin_dir_for, DEFAULT_CONFIG};

/// How a service receives its secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// An env file written by credloader, named by `EnvironmentFile=`.
    #[default]
    Env,
    /// `LoadCredentialEncrypted=` lines: PID 1 decrypts into the service's
    /// `$CREDENTIALS_DIRECTORY`; no plaintext file is written at all.
    Credential,
}

/// What to do with a consumer whose secrets changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnChange {
    #[default]
    TryRestart,
    TryReloadOrRestart,
    Restart,
    None,
}

impl OnChange {
    /// The `systemctl` verb, if any.
    pub fn verb(self) -> Option<&'static str> {
        match self {
            OnChange::TryRestart => Some("try-restart"),
            OnChange::TryReloadOrRestart => Some("try-reload-or-restart"),
            OnChange::Restart => Some("restart"),
            OnChange::None => None,
        }
    }
}

/// Where credloader keeps things. Paths are as the running system sees them;
/// `--root` is applied when they are opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loader {
    /// Where the sealed `NAME.cred` files are (`/etc/quantum/creds`).
    pub creds_dir: PathBuf,
    /// Where env files go by default (`/run/credloader`).
    pub env_dir: PathBuf,
    /// Where the units' drop-in directories are (`/etc/systemd/system`).
    pub dropin_dir: PathBuf,
    /// Where apply keeps its state (`/var/lib/credloader`).
    pub state_dir: PathBuf,
    /// Directories besides `env_dir` that env files may be placed in
    /// (see [`crate::envplace`]).
    pub env_file_dirs: Vec<PathBuf>,
    /// How many previous sealed generations `rotate` keeps per credential.
    pub keep_generations: u32,
    /// How long a second `apply` waits for the first one's lock.
    #[serde(skip)]
    pub lock_timeout: Duration,
}

impl Loader {
    /// Where env files may be placed ([`crate::envplace`]), for the
    /// configuration whose main file the system sees as `main`: beneath
    /// `env_dir` and `env_file_dirs`, and out of credloader's own places.
    pub fn places(&self, main: &Path) -> Places {
        let mut own: Vec<(PathBuf, &'static str)> = vec![
            (self.creds_dir.clone(), "the sealed credentials"),
            (self.state_dir.clone(), "credloader's state"),
            (self.dropin_dir.clone(), "the unit drop-ins"),
        ];
        for m in [main, Path::new(DEFAULT_CONFIG)] {
            own.push((m.to_path_buf(), "credloader's configuration"));
            own.push((dropin_dir_for(m), "credloader's configuration"));
        }
        Places::new(&self.env_dir, &self.env_file_dirs, own)
    }
}

impl Default for Loader {
    fn default() -> Self {
        Loader {
            creds_dir: "/etc/quantum/creds".into(),
            env_dir: "/run/credloader".into(),
            dropin_dir: "/etc/systemd/system".into(),
            state_dir: "/var/lib/credloader".into(),
            env_file_dirs: Vec::new(),
            keep_generations: 3,
            lock_timeout: Duration::from_secs(60),
        }
    }
}

/// Where a variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The value of the sealed credential of this name.
    Credential(String),
    /// This value, as written in `static` (never a secret).
    Static(String),
}

/// One variable of a service's environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Var {
    /// The environment variable.
    pub name: String,
    /// Where its value comes from.
    pub source: Source,
}

/// A consuming service, validated. It holds no secret (credential names
/// and non-secret `static` values only), so apply records it in its state
/// and can keep serving it when its file later fails to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// `[services.NAME]`.
    pub name: String,
    /// The consuming unit, e.g. `x.service`.
    pub unit: String,
    /// The account the unit runs as, which owns the env file.
    pub user: String,
    /// The env file's group (`None`: the user's own).
    pub group: Option<String>,
    /// Sorted by variable name.
    pub vars: Vec<Var>,
    /// Where its env file goes.
    pub env_file: PathBuf,
    /// Where `env_file` is set (`None`: the default, `<env_dir>/<NAME>.env`).
    #[serde(skip)]
    pub env_file_at: Option<Origin>,
    /// How it receives its secrets.
    pub delivery: Delivery,
    /// `false`: `EnvironmentFile=-PATH`, so the unit may start without it.
    pub required: bool,
    /// What apply does to the unit when its secrets change.
    pub on_change: OnChange,
    /// The argv `rotate` and `rollback` run, as the service, to check it
    /// works with the new value.
    pub health_check: Option<Vec<String>>,
    /// How long that check, and the unit coming back, may take.
    pub health_timeout: Duration,
    /// Its credentials whose value keeps a trailing newline
    /// (`[credentials.NAME] keep_newline = true`; see [`crate::newline`]).
    /// Part of the definition, so a change re-renders its env file.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub keep_newline: BTreeSet<String>,
    /// Where `[services.NAME]` is.
    #[serde(skip)]
    pub origin: Origin,
}

impl Service {
    /// The same definition, wherever it was written (`origin` is not part
    /// of a definition: the state records none).
    pub fn same_definition(&self, other: &Service) -> bool {
        let mut other = other.clone();
        other.origin = self.origin.clone();
        other.env_file_at = self.env_file_at.clone();
        *self == other
    }

    /// Where its env file is set, for messages: the `env_file` line, or the
    /// service's own line for the default one.
    pub fn env_file_setting(&self) -> String {
        match &self.env_file_at {
            Some(at) => format!("env_file at {at}"),
            None => format!(
                "the default env file of service {} ({})",
                self.name, self.origin
            ),
        }
    }

    /// The distinct credentials this service needs, sorted.
    pub fn credentials(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .vars
            .iter()
            .filter_map(|v| match &v.source {
                Source::Credential(c) => Some(c.as_str()),
                Source::Static(_) => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The deployment environment a host belongs to (`[sources] environment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Dev,
    Shadow,
    Soak,
    Prod,
}

impl Environment {
    pub const ALL: [Environment; 4] = [
        Environment::Dev,
        Environment::Shadow,
        Environment::Soak,
        Environment::Prod,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Dev => "dev",
            Environment::Shadow => "shadow",
            Environment::Soak => "soak",
            Environment::Prod => "prod",
        }
    }

    /// Whether secret id `id` may be read by a host of this environment:
    /// no directory segment names another environment, and a prod host
    /// reads only ids with a `prod` directory segment (`mm-bot/prod/...`).
    pub fn allows(self, id: &str) -> Result<(), String> {
        let mut segments: Vec<&str> = id.split('/').collect();
        segments.pop(); // the last segment is the secret's own name
        for other in Environment::ALL {
            if other != self && segments.contains(&other.as_str()) {
                return Err(format!(
                    "secret id `{id}` belongs to the {} environment and this host is configured \
                     environment = \"{}\"",
                    other.as_str(),
                    self.as_str()
                ));
            }
        }
        if self == Environment::Prod && !segments.contains(&"prod") {
            return Err(format!(
                "secret id `{id}` has no /prod/ segment; a host configured environment = \"prod\" \
                 reads only prod secrets"
            ));
        }
        Ok(())
    }
}

/// Which credentials `sync` manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Manage {
    /// Every credential any service uses, plus those listed under the
    /// source's `credentials` table.
    #[default]
    Used,
    /// Only those listed under the source's `credentials` table.
    Listed,
}

/// Per-credential settings of the AWS source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AwsCredential {
    /// The secret id (name or ARN); `{environment}` and `{name}` are filled in.
    pub secret_id: Option<String>,
    /// The secret is a JSON object: take this key's (string) value.
    pub json_key: Option<String>,
    /// `AWSCURRENT` when not set.
    pub version_stage: Option<String>,
}

/// `[sources.aws]`: AWS Secrets Manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AwsSource {
    pub region: String,
    /// Another endpoint (a VPC endpoint; a local test server).
    pub endpoint_url: Option<String>,
    /// The secret id template, e.g. `mm-bot/{environment}/{name}`.
    pub secret_id: String,
    pub credentials: BTreeMap<String, AwsCredential>,
}

/// Where one credential is read from in AWS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AwsLocation {
    pub secret_id: String,
    pub json_key: Option<String>,
    pub version_stage: Option<String>,
}

impl AwsSource {
    /// Where credential `name` is read from in `environment`.
    pub fn locate(&self, environment: Environment, name: &str) -> AwsLocation {
        let o = self.credentials.get(name).cloned().unwrap_or_default();
        let template = o.secret_id.as_deref().unwrap_or(&self.secret_id);
        AwsLocation {
            secret_id: fill_template(template, environment, name),
            json_key: o.json_key,
            version_stage: o.version_stage,
        }
    }
}

/// `{environment}` and `{name}` filled in.
pub fn fill_template(template: &str, environment: Environment, name: &str) -> String {
    template
        .replace("{environment}", environment.as_str())
        .replace("{name}", name)
}

/// `[sources.file]`: a JSON or TOML file of name → value, for development.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSource {
    pub path: PathBuf,
    /// Credentials listed explicitly (`[sources.file.credentials.NAME]`),
    /// with the key to read in the file when it differs from the name.
    pub credentials: BTreeMap<String, Option<String>>,
}

/// `[sources]`: where `sync` gets values from. Defined in one file only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sources {
    pub environment: Environment,
    pub manage: Manage,
    /// Tries per secret on network errors, throttling and 5xx (1..10).
    pub attempts: u32,
    /// Bound on one request (connect + answer).
    #[serde(skip)]
    pub timeout: Duration,
    pub aws: Option<AwsSource>,
    pub file: Option<FileSource>,
    #[serde(skip)]
    pub origin: Origin,
}

impl Sources {
    /// The names listed in the configured source's `credentials` table.
    pub fn listed(&self) -> Vec<&str> {
        match (&self.aws, &self.file) {
            (Some(a), _) => a.credentials.keys().map(String::as_str).collect(),
            (None, Some(f)) => f.credentials.keys().map(String::as_str).collect(),
            (None, None) => Vec::new(),
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main file (it may not exist when only drop-ins do).
    pub main: PathBuf,
    /// Services whose definition is broken (a bad key, a duplicate, a file
    /// that does not parse), with what is wrong. They are not in
    /// `services`; apply keeps serving them from their last good definition.
    pub broken: BTreeMap<String, Vec<Problem>>,
    /// Problems that no service name could be attached to: a file that
    /// cannot be read (a symlink, not UTF-8) or that does not parse and
    /// names no `[services.NAME]`. What it defines is unknown, so every
    /// service the state records that is not configured may be defined
    /// there: apply keeps serving it from its last good definition and
    /// removes nothing (see [`crate::state::State::fallbacks`]).
    pub orphan_problems: Vec<Problem>,
    /// `[loader]`: where things are.
    pub loader: Loader,
    /// The services to serve, by name.
    pub services: BTreeMap<String, Service>,
    /// `[sources]`, if any: what `sync` reads. `None` when it has problems.
    pub sources: Option<Sources>,
    /// `[loader] env_file_dirs` entries that are no place for env files
    /// (see [`crate::envplace`]). Each service whose env file lies beneath
    /// one is broken by it; `check` reports every one.
    pub place_problems: Vec<Problem>,
    /// Mistakes in `[sources]`. Only `sync` uses it, so only `sync` refuses
    /// to run over them (see [`Config::sources_error`]); every other
    /// command reports them and goes on.
    pub sources_problems: Vec<Problem>,
    /// `[credentials.NAME]`: options of single credentials, whichever
    /// service uses them.
    pub credentials: BTreeMap<String, CredentialOptions>,
    /// The files it was read from, in order.
    pub files: Vec<PathBuf>,
}

/// `[credentials.NAME]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialOptions {
    /// The value keeps a trailing newline: sealed and delivered as given
    /// (default: trailing line breaks are not part of a value).
    pub keep_newline: bool,
    pub origin: Origin,
}

impl Config {
    /// Every problem found while loading, for `check` and reports.
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.broken
            .values()
            .flatten()
            .chain(&self.orphan_problems)
            .chain(&self.sources_problems)
    }

    /// What stops `sync`: a `[sources]` that has mistakes.
    pub fn sources_error(&self) -> Option<ConfigError> {
        (!self.sources_problems.is_empty()).then(|| ConfigError::Invalid {
            problems: self.sources_problems.clone(),
        })
    }

    /// The `[sources]` mistakes as warnings for commands other than `sync`:
    /// they concern `sync` alone, and no service depends on them.
    pub fn sources_warnings(&self) -> Vec<String> {
        self.sources_only_problems()
            .map(|p| {
                format!(
                    "{p} ([sources] is ignored: `credloader sync` refuses to run until it is fixed; \
                     every service is still served)"
                )
            })
            .collect()
    }

    /// The `[sources]` mistakes not already reported as a broken file (a
    /// file that does not parse at all is both).
    pub fn sources_only_problems(&self) -> impl Iterator<Item = &Problem> {
        self.sources_problems.iter().filter(|p| {
            !self.orphan_problems.contains(p) && !self.broken.values().flatten().any(|b| b == *p)
        })
    }

    /// True when every file loaded cleanly, as far as services are
    /// concerned (a mistake in `[sources]` concerns `sync` only).
    pub fn is_clean(&self) -> bool {
        self.broken.is_empty() && self.orphan_problems.is_empty()
    }

    /// The services that consume `credential`.
    pub fn consumers<'a>(&'a self, credential: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .values()
            .filter(move |s| s.credentials().contains(&credential))
    }

    /// Whether `[credentials.NAME] keep_newline = true` is set for `name`.
    pub fn keeps_newline(&self, name: &str) -> bool {
        self.credentials.get(name).is_some_and(|c| c.keep_newline)
    }

    /// Every credential any service needs.
    pub fn all_credentials(&self) -> std::collections::BTreeSet<&str> {
        self.services
            .values()
            .flat_map(|s| s.credentials())
            .collect()
    }

    /// The credentials `sync` manages: those listed in the source's
    /// `credentials` table, plus (with `manage = "used"`, the default)
    /// every credential any service uses.
    pub fn synced_credentials(&self) -> std::collections::BTreeSet<&str> {
        let Some(sources) = &self.sources else {
            return Default::default();
        };
        let mut names: std::collections::BTreeSet<&str> = sources.listed().into_iter().collect();
        if sources.manage == Manage::Used {
            names.extend(self.all_credentials());
        }
        names
    }
}
