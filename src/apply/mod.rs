//! The `apply` pipeline: config → credentials → render → write → restart.
//!
//! Each service is handled on its own: a bad credential or a failed write
//! fails that service only (its last good files stay, it is not restarted)
//! and every other service is still served. A service whose inputs are the
//! same as at the last apply, and whose files are untouched since, is not
//! decrypted at all, so a re-apply with nothing changed costs a few stats.
//!
//! `run` reads as the stages, each a method of one `Run`: load the state,
//! plan each service (`plan.rs`), check who owns its env file, decrypt
//! what changed (`decrypt.rs`), record the intent (`commit.rs`), write the
//! env files and drop-ins (`write.rs`), remove the files of services that
//! left (`cleanup.rs`), record the results and save them before the
//! daemon-reload, reload and restart (`settle.rs`), remove the env files
//! left behind (`cleanup.rs`), and commit the state. What it did is the
//! [`Report`] (`report.rs`).

mod cleanup;
mod commit;
mod decrypt;
mod plan;
mod report;
mod settle;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use thiserror::Error;

use crate::config::{Config, Service};
use crate::creds::{self, CredError, Plain, Store};
use crate::escape::ShowPath;
use crate::lock::{self, LockError};
use crate::root::Root;
use crate::safefs::{Dir, DirCache, DirPolicy, FsError};
use crate::state::{State, StoredDefinition};
use crate::systemd::Manager;
use crate::users::{Accounts, UserError};

use cleanup::sweep_stale_temps;
use plan::Plan;
pub use report::{Outcome, Report};

/// Errors that stop the whole run (per-service failures are in the report).
#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("no service named `{0}` in the configuration")]
    UnknownService(String),
    #[error("state directory: {0}")]
    StateDir(FsError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Accounts(#[from] UserError),
}

// Not `#[from]`: that would make the FsError, already in the text, also
// its source, and an error's sources are printed after it.
impl From<FsError> for ApplyError {
    fn from(e: FsError) -> Self {
        ApplyError::StateDir(e)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Decide and report, write nothing, restart nothing.
    pub dry_run: bool,
    /// Only these services (all when empty).
    pub only: Vec<String>,
    /// Queue each changed service's `on_change` action.
    pub restart: bool,
    /// Concurrent decrypts.
    pub jobs: usize,
}

/// Opens (creating) the state dir and takes the apply lock, waiting up to
/// the configured bound. Commands that change credentials (rotate, sync)
/// hold it across their whole run and call [`apply_locked`].
pub fn lock(config: &Config, root: &Root) -> Result<(Dir, lock::Lock), ApplyError> {
    let dir = Dir::open(root, &config.loader.state_dir, DirPolicy::create(0o700))?;
    let held = lock::acquire(&dir, config.loader.lock_timeout)?;
    crate::stamp::void(root);
    sweep_stale_temps(config, root, &dir);
    creds::sweep_scratch(&dir);
    Ok((dir, held))
}

/// Runs the pipeline for `config` on `root` (see the module docs), taking
/// the lock itself; a dry run neither creates the state dir nor locks.
pub fn apply(
    config: &Config,
    root: &Root,
    manager: Manager,
    opts: &Options,
) -> Result<Report, ApplyError> {
    if opts.dry_run {
        let dir = Dir::open(root, &config.loader.state_dir, DirPolicy::EXISTING).ok();
        return run(config, root, manager, opts, dir);
    }
    let (dir, _held) = lock(config, root)?;
    run(config, root, manager, opts, Some(dir))
}

/// [`apply`] for a caller that already holds the lock from [`lock`].
pub fn apply_locked(
    config: &Config,
    root: &Root,
    manager: Manager,
    opts: &Options,
    _held: &lock::Lock,
) -> Result<Report, ApplyError> {
    let dir = Dir::open(root, &config.loader.state_dir, DirPolicy::create(0o700))?;
    run(config, root, manager, opts, Some(dir))
}

/// One apply: what it works from, and what it has found and done so far.
/// [`run`] calls its stages in order; each is a method that reads and adds
/// to these fields.
struct Run<'a> {
    config: &'a Config,
    root: &'a Root,
    manager: Manager,
    opts: &'a Options,
    /// None for a dry run that found no state dir.
    state_dir: Option<Dir>,
    /// The state as this run loaded it, and `state` as the run changes it.
    loaded: State,
    state: State,
    /// The services whose config file is broken, served from their last
    /// good definition (see [`State::stored_definitions`]).
    stored: &'a [StoredDefinition],
    accounts: Accounts,
    store: Store,
    dirs: DirCache<'a>,
    /// One per service served in this run, in the order of the report.
    plans: Vec<Plan<'a>>,
    /// Each credential decrypted in this run, by name.
    plain: BTreeMap<String, Result<Plain, CredError>>,
    /// The paths configured services still use: never removed.
    claimed: BTreeSet<PathBuf>,
    report: Report,
}

/// The stages, in order. The state is saved at three points, each with a
/// guarantee: the intent before any file changes, before the daemon-reload
/// (the generator reads it), and last what the run did.
fn run(
    config: &Config,
    root: &Root,
    manager: Manager,
    opts: &Options,
    state_dir: Option<Dir>,
) -> Result<Report, ApplyError> {
    let (state, warning) = load_state(state_dir.as_ref())?;
    opts.check_only(config, &state)?;
    // A service whose definition is broken keeps being served from the
    // definition it was last applied from; it is still reported as failed.
    let (stored, unservable) = state.stored_definitions(config, |n| opts.wants(n));
    let mut run = Run::new(config, root, manager, opts, state_dir, state, &stored)?;
    run.report.warnings.extend(warning);
    run.warn_open_creds_dir();
    run.plan();
    run.check_owners();
    run.decrypt();
    run.record_intent();
    run.write();
    run.report_unservable(unservable);
    // Before the reload: removing a drop-in is what makes one due.
    run.remove_gone_services();
    if !opts.dry_run {
        run.record_results();
        run.save_before_reload();
        run.settle();
        // After the reload: until then a restart still reads these.
        run.remove_left_env_files();
        run.commit();
    }
    run.warn_overrides();
    Ok(run.report)
}

/// The state of the last apply (a default one for a dry run without a
/// state dir), and what was wrong with it if it could not be used.
fn load_state(dir: Option<&Dir>) -> Result<(State, Option<String>), ApplyError> {
    Ok(match dir {
        Some(d) => State::load(d)?,
        None => (State::default(), None),
    })
}

impl Options {
    /// Whether the run serves service `name` (every one when `only` is empty).
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }

    /// Each service named in `only` exists: a service whose file is broken
    /// is still one (see `State::fallbacks`).
    fn check_only(&self, config: &Config, state: &State) -> Result<(), ApplyError> {
        for name in &self.only {
            if !config.services.contains_key(name)
                && !state.fallbacks(config).any(|(n, ..)| n == name)
            {
                return Err(ApplyError::UnknownService(name.clone()));
            }
        }
        Ok(())
    }
}

impl<'a> Run<'a> {
    fn new(
        config: &'a Config,
        root: &'a Root,
        manager: Manager,
        opts: &'a Options,
        state_dir: Option<Dir>,
        state: State,
        stored: &'a [StoredDefinition],
    ) -> Result<Run<'a>, ApplyError> {
        let accounts = Accounts::new(root)?;
        let report = Report {
            dry_run: opts.dry_run,
            services: Vec::new(),
            daemon_reload: false,
            removed: Vec::new(),
            decrypt: creds::DecryptCounts::default(),
            config_problems: config
                .orphan_problems
                .iter()
                .chain(&config.place_problems)
                .map(|p| p.to_string())
                .collect(),
            warnings: Vec::new(),
        };
        Ok(Run {
            config,
            root,
            manager,
            opts,
            state_dir,
            loaded: state.clone(),
            state,
            stored,
            accounts,
            store: Store::open(root, &config.loader.creds_dir),
            dirs: DirCache::new(root),
            plans: Vec::new(),
            plain: BTreeMap::new(),
            claimed: BTreeSet::new(),
            report,
        })
    }

    /// A creds dir others may read is said, not refused.
    fn warn_open_creds_dir(&mut self) {
        let Ok(dir) = self.store.dir() else { return };
        let Ok(st) = dir.stat() else { return };
        if st.st_mode & 0o077 != 0 {
            self.report.warnings.push(format!(
                "{} is mode {:04o}; make it 0700 (`chmod 0700 {}`)",
                dir.path().shown(),
                st.st_mode & 0o7777,
                dir.path().shown()
            ));
        }
    }

    /// Writes the state. Failing to is a warning, not an error: the files
    /// are what the services read, and the next run rebuilds the record.
    /// A run saves up to three times; the same failure is said once.
    fn save_state(&mut self) {
        let Some(dir) = self.state_dir.as_ref() else {
            return;
        };
        let Err(e) = self.state.save(dir) else {
            return;
        };
        let warning = format!("could not record the state: {e}");
        if !self.report.warnings.contains(&warning) {
            self.report.warnings.push(warning);
        }
    }

    /// Something loaded after credloader's env file would win over it. From
    /// the unit files only: asking systemd too costs several D-Bus calls per
    /// unit (the bench: +700 ms a run for 50 services); status, check and
    /// rotate ask it.
    fn warn_overrides(&mut self) {
        let served: Vec<&Service> = self.plans.iter().map(|p| p.service).collect();
        let files_only = Manager::Absent;
        let found = crate::overrides::warnings(files_only, self.root, &self.config.loader, &served);
        self.report.warnings.extend(found);
    }
}
