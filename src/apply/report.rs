//! What a run did, service by service: the report `apply` returns.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Delivery;
use crate::creds;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Unchanged,
    Updated,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    pub service: String,
    pub unit: String,
    pub outcome: Outcome,
    pub delivery: Delivery,
    pub env_file: Option<PathBuf>,
    pub env_file_written: bool,
    pub dropin: PathBuf,
    pub dropin_written: bool,
    /// The secrets it receives changed (so it is restarted).
    pub secrets_changed: bool,
    /// The `systemctl` verb queued for it, if any.
    pub action: Option<String>,
    pub decrypted: Vec<String>,
    /// Credentials whose sealed value ends in a newline that its env file
    /// got without (see [`crate::newline`]); only on runs that decrypt them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub newline_removed: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub services: Vec<ServiceReport>,
    pub daemon_reload: bool,
    /// Services that left the configuration and whose files were removed.
    pub removed: Vec<String>,
    /// How many credentials were decrypted, and by what.
    pub decrypt: creds::DecryptCounts,
    /// Configuration problems that concern no single service (a drop-in
    /// that cannot be trusted or parsed, naming no service).
    pub config_problems: Vec<String>,
    pub warnings: Vec<String>,
}

impl ServiceReport {
    /// A service that could not even be planned (say, its config file is
    /// broken and it was never applied before).
    pub(super) fn failed(name: &str, error: String) -> ServiceReport {
        ServiceReport {
            service: name.to_string(),
            unit: String::new(),
            outcome: Outcome::Failed,
            delivery: Delivery::Env,
            env_file: None,
            env_file_written: false,
            dropin: PathBuf::new(),
            dropin_written: false,
            secrets_changed: false,
            action: None,
            decrypted: Vec::new(),
            newline_removed: Vec::new(),
            error: Some(error),
        }
    }

    /// Marks the service failed, keeping any earlier error.
    pub(super) fn fail(&mut self, message: String) {
        self.outcome = Outcome::Failed;
        self.error = Some(match self.error.take() {
            Some(e) => format!("{e}; {message}"),
            None => message,
        });
    }
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &ServiceReport> {
        self.services
            .iter()
            .filter(|s| s.outcome == Outcome::Failed)
    }

    /// Nothing was written, reloaded, removed, decrypted or restarted, and
    /// nothing is wrong: a run the next one may repeat (see `crate::stamp`).
    pub fn is_no_op(&self) -> bool {
        self.all_ok()
            && self.warnings.is_empty()
            && !self.daemon_reload
            && self.removed.is_empty()
            && self.services.iter().all(|s| {
                s.outcome == Outcome::Unchanged && s.action.is_none() && s.decrypted.is_empty()
            })
    }

    /// No service failed and none carries an error (a service whose config
    /// file is broken is still served from its last good definition, but
    /// the run does not count as a success).
    pub fn all_ok(&self) -> bool {
        self.config_problems.is_empty()
            && self
                .services
                .iter()
                .all(|s| s.outcome != Outcome::Failed && s.error.is_none())
    }
}
