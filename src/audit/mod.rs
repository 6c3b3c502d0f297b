//! `check`: an audit of everything credloader manages. Each problem is a
//! [`Finding`] with a severity, the thing it is about, what is wrong and how
//! to fix it. Nothing is decrypted and nothing is changed.
//!
//! [`audit`] is a list of checks, one function per kind of finding, each
//! reading what it needs from one `Audit` context: the configuration
//! (`configuration.rs`), the directories credloader writes to (`paths.rs`),
//! the creds dir and each sealed credential (`creds.rs`), and each served
//! service (`services.rs`). `units.rs` reads a consumer's unit files.

mod configuration;
mod creds;
mod paths;
mod services;
mod units;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config::{Config, Loader};
use crate::creds::Store;
use crate::escape::ShowPath;
use crate::root::Root;
use crate::state::{Served, State};
use crate::systemd::Manager;
use crate::users::Accounts;

pub use units::{assignments, dropins, unit_file};

/// Expiry closer than this is a warning.
pub const EXPIRY_WARNING_SECS: u64 = 14 * 86400;

/// How bad a finding is (errors sort first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// `check` fails (exit 1): something is or will be wrong for a service.
    Error,
    /// Worth fixing; `check` still passes.
    Warning,
}

/// One problem `check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// What it is about: a path, `credential NAME`, `service NAME`.
    pub subject: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

/// The findings so far, in the order they were made.
struct Findings(Vec<Finding>);

impl Findings {
    fn add(
        &mut self,
        severity: Severity,
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.0.push(Finding {
            severity,
            subject: subject.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }
}

/// What every check reads: the configuration as apply serves it, the
/// state, the creds dir and the accounts, read once.
struct Audit<'a> {
    config: &'a Config,
    loader: &'a Loader,
    root: &'a Root,
    manager: Manager,
    state: &'a State,
    /// Services as apply serves them: one whose own definition is broken
    /// is served from its last good definition, so it is checked (and its
    /// credentials count as used) like any other.
    served: Served<'a>,
    store: Store,
    /// The credentials sealed in the creds dir.
    on_disk: BTreeSet<String>,
    accounts: Option<Accounts>,
    now: u64,
}

impl Audit<'_> {
    /// Where the sealed file of `name` is, as shown.
    fn sealed_path(&self, name: &str) -> String {
        let sys = self.loader.creds_dir.join(format!("{name}.cred"));
        self.root.host(&sys).shown().to_string()
    }
}

/// Every check, in the order its findings are made (which orders findings
/// about the same subject).
const CHECKS: &[fn(&Audit, &mut Findings)] = &[
    configuration::broken_services,
    configuration::orphan_files,
    configuration::unnamed_services,
    configuration::undeclarable_places,
    configuration::sources,
    configuration::main_file_missing,
    paths::symlinks_on_managed_paths,
    creds::creds_dir,
    creds::sealed_files,
    creds::symlinks,
    creds::missing,
    creds::unused,
    creds::recorded,
    creds::newlines,
    paths::env_dirs,
    services::each,
    services::overrides,
];

/// Runs every check.
pub fn audit(config: &Config, root: &Root, manager: Manager) -> Vec<Finding> {
    let loader = &config.loader;
    let now = crate::state::now();
    let state = State::inspect(root, &loader.state_dir);
    let store = Store::open(root, &loader.creds_dir);
    let audit = Audit {
        config,
        loader,
        root,
        manager,
        state: &state,
        served: Served::new(config, &state),
        on_disk: store.sealed_names(),
        store,
        accounts: Accounts::new(root).ok(),
        now,
    };
    let mut f = Findings(Vec::new());
    for check in CHECKS {
        check(&audit, &mut f);
    }
    f.0.sort_by(|a, b| (a.severity, &a.subject).cmp(&(b.severity, &b.subject)));
    f.0
}

/// The file type bits of `st_mode`.
fn libc_ifmt() -> u32 {
    0o170000
}
