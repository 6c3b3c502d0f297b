//! The `apply` pipeline: config → credentials → render → write → restart.
//!
//! Each service is handled on its own: a bad credential or a failed write
//! fails that service only (its last good files stay, it is not restarted)
//! and every other service is still served. A service whose inputs are the
//! same as at the last apply, and whose files are untouched since, is not
//! decrypted at all, so a re-apply with nothing changed costs a few stats.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::{Config, Delivery, Service, Source};
use crate::creds::{self, CredError, Decrypter, Plain, Sealed, Store};
use crate::envfile;
use crate::escape::ShowPath;
use crate::holds::Hold;
use crate::lock::{self, LockError};
use crate::newline;
use crate::provenance::{self, Pending};
use crate::root::Root;
use crate::runas;
use crate::safefs::{self, Dir, DirCache, DirPolicy, Existing, FsError, Owner};
use crate::secret::Secret;
use crate::state::{self, FileId, ServiceState, State};
use crate::systemd::Manager;
use crate::users::{Account, Accounts, UserError};

/// Errors that stop the whole run (per-service failures are in the report).
#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("no service named `{0}` in the configuration")]
    UnknownService(String),
    #[error("state directory: {0}")]
    StateDir(#[from] FsError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Accounts(#[from] UserError),
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
    fn failed(name: &str, error: String) -> ServiceReport {
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
    fn fail(&mut self, message: String) {
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

/// A run killed mid-write leaves its temp file (`.NAME.credloader-tmp-*`)
/// beside the target. Whoever takes the lock next removes them from the
/// directories credloader writes only under the lock: state, generations,
/// sealed credentials and the env dir (an env file's temp holds plaintext
/// and its service may since have left the configuration). Drop-in and
/// custom env-file directories are swept before each write there.
fn sweep_stale_temps(config: &Config, root: &Root, state: &Dir) {
    let mut dirs = Vec::new();
    for path in [&config.loader.creds_dir, &config.loader.env_dir] {
        if let Ok(d) = Dir::open(root, path, DirPolicy::EXISTING) {
            dirs.push(d);
        }
    }
    if let Ok(gens) = state.subdir(std::ffi::OsStr::new("generations"), DirPolicy::EXISTING) {
        for name in gens.list().unwrap_or_default() {
            if let Ok(d) = gens.subdir(&name, DirPolicy::EXISTING) {
                dirs.push(d);
            }
        }
    }
    for d in std::iter::once(state).chain(&dirs) {
        match d.remove_all_stale_temps() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                "{}: removed {n} temp file(s) of an interrupted run",
                d.path().shown()
            ),
            Err(e) => tracing::warn!("could not remove temp files of an interrupted run: {e}"),
        }
    }
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

fn run(
    config: &Config,
    root: &Root,
    manager: Manager,
    opts: &Options,
    state_dir: Option<Dir>,
) -> Result<Report, ApplyError> {
    let loader = &config.loader;
    let mut warnings = Vec::new();
    let mut state = match &state_dir {
        Some(d) => {
            let (s, warning) = State::load(d)?;
            warnings.extend(warning);
            s
        }
        None => State::default(),
    };
    let loaded = state.clone();
    // A service whose file is broken is still one (see `State::fallbacks`).
    for name in &opts.only {
        if !config.services.contains_key(name) && !state.fallbacks(config).any(|(n, ..)| n == name)
        {
            return Err(ApplyError::UnknownService(name.clone()));
        }
    }
    let wanted = |name: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == name);

    // A service whose definition is broken keeps being served from the
    // definition it was last applied from; it is still reported as failed.
    let (stored, unservable) = state.stored_definitions(config, wanted);
    let mut selected: Vec<(&Service, Option<&str>)> = config
        .services
        .values()
        .filter(|s| wanted(&s.name))
        .map(|s| (s, None))
        .collect();
    selected.extend(stored.iter().map(|(s, e)| (s, Some(e.as_str()))));

    let accounts = Accounts::new(root)?;
    let store = Store::open(root, &loader.creds_dir);
    let dirs = DirCache::new(root);
    if let Ok(dir) = store.dir() {
        if let Ok(st) = dir.stat() {
            if st.st_mode & 0o077 != 0 {
                warnings.push(format!(
                    "{} is mode {:04o}; make it 0700 (`chmod 0700 {}`)",
                    dir.path().shown(),
                    st.st_mode & 0o7777,
                    dir.path().shown()
                ));
            }
        }
    }

    // Plan: what each service is made of, and whether it is already done.
    let mut plans: Vec<Plan> = selected
        .iter()
        .map(|(s, config_error)| {
            let mut plan = Plan::new(s, &dirs, loader, &accounts, &store, &state);
            plan.config_error = config_error.map(str::to_string);
            plan
        })
        .collect();

    // Whoever owns an env file can add variables to it: it must be the user
    // the unit runs as (see `runas`). Checked for new and changed
    // definitions (one `systemctl show` for all); `check` audits them all.
    let owner_check: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].needs_owner_check())
        .collect();
    if !owner_check.is_empty() {
        let units: Vec<&str> = owner_check
            .iter()
            .map(|&i| plans[i].service.unit.as_str())
            .collect();
        let runs_as = runas::units(manager, root, &units);
        for (&i, r) in owner_check.iter().zip(&runs_as) {
            let plan = &mut plans[i];
            let owner = plan.account.expect("checked");
            if let Some((why, fix)) = runas::mismatch(plan.service, owner, r, &accounts) {
                plan.error = Some(format!("refusing to write its env file: {why}; {fix}"));
            } else if let Some(w) = runas::unsure(plan.service, r) {
                warnings.push(w);
            }
        }
    }

    // Decrypt what is needed, each credential once, from the bytes read
    // now (should a file have changed since its fingerprint was taken, the
    // service is recorded with what was actually read).
    // A credential whose sealed bytes are the ones the service was last
    // built from is not decrypted again: its value is taken from the
    // service's own env file, when that file is provably the one written.
    let mut wanted: BTreeMap<String, Sealed> = BTreeMap::new();
    for plan in plans
        .iter_mut()
        .filter(|p| p.error.is_none() && !p.up_to_date)
    {
        plan.reused = plan.reusable_values(&dirs);
        let mut errors = Vec::new();
        for name in plan.digests.keys().cloned().collect::<Vec<_>>() {
            if plan.reused.contains_key(&name) {
                continue;
            }
            match store.sealed(&name) {
                Ok(s) => {
                    plan.digests.insert(name.clone(), s.digest.clone());
                    wanted.insert(name, s);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            plan.inputs = plan.digest();
        } else {
            plan.error = Some(errors.join("; "));
        }
    }
    let decrypter = Decrypter::detect(root, manager);
    let list: Vec<&Sealed> = wanted.values().collect();
    let jobs = if opts.jobs == 0 {
        creds::default_jobs()
    } else {
        opts.jobs
    };
    let (plain, decrypt) = decrypter.decrypt_all(&list, jobs, state_dir.as_ref());
    if !list.is_empty() {
        tracing::info!(
            "decrypted {} credentials: {} handed over, {} by PID 1, {} by systemd-creds",
            list.len(),
            decrypt.handed,
            decrypt.pid1,
            decrypt.systemd_creds
        );
    }
    warnings.extend(newline_warnings(&plans, &plain));
    for (name, p) in &plain {
        if let Ok(Plain { legacy: true, .. }) = p {
            warnings.push(format!(
                "credential {name} was sealed without --name (legacy name `{name}.cred`); \
                 reseal it with `credloader rotate {name}` to carry its own name"
            ));
        }
    }

    // Before any file changes, record that the services about to be
    // written owe a reload and a restart, so that a crash or a failed
    // systemctl call from here on is made good by the next run.
    if let (false, Some(d)) = (opts.dry_run, &state_dir) {
        let mut intent = false;
        // Only services this run will write: one whose credential did not
        // decrypt writes nothing and owes nothing (nor gets a record).
        for plan in plans.iter().filter(|p| {
            p.error.is_none() && !p.up_to_date && p.credential_errors(&plain).is_empty()
        }) {
            let rec = state
                .services
                .entry(plan.service.name.clone())
                .or_insert_with(|| plan.provisional_record());
            if !(rec.pending_reload && rec.pending_restart) {
                rec.pending_reload = true;
                rec.pending_restart = true;
                intent = true;
            }
            // A moved env file is credloader's from now on, even if this run
            // dies before its record names it (see `Plan::env_file_ours`).
            let recorded = rec.env_file.clone();
            if let Some(new) = plan.env_path().filter(|p| recorded.as_ref() != Some(*p)) {
                intent |= state.leftover_env_files.insert(new.clone());
            }
        }
        if intent {
            if let Err(e) = state.save(d) {
                warnings.push(format!("could not record the state: {e}"));
            }
        }
    }

    // Render and write, service by service.
    // Each written env file stays open until its identity is settled: in
    // batches, so that a large fleet stays far below the open-file limit.
    let mut reports = Vec::with_capacity(plans.len());
    let (mut open, max_open) = (0, max_open_pending());
    for i in 0..plans.len() {
        reports.push(plans[i].execute(&dirs, &plain, opts.dry_run));
        warnings.append(&mut plans[i].warnings);
        open += plans[i].pending.is_some() as usize;
        if open >= max_open {
            settle_env_ids(&mut plans[..=i], &mut warnings);
            open = 0;
        }
    }
    settle_env_ids(&mut plans, &mut warnings);

    for (name, text) in unservable {
        tracing::error!(service = %name, "{text}");
        reports.push(ServiceReport::failed(&name, text));
    }

    // Services that left the configuration: remove their files. Not while
    // the configuration has errors (the service may be in the broken file),
    // not for another configuration than the one the state belongs to, and
    // never a path a configured service still uses.
    let mut removed = Vec::new();
    let mut dropins_removed = false;
    let same_config = state.config.as_ref().is_none_or(|c| *c == config.main);
    if !config.is_clean() || !same_config {
        let gone = state.services.keys().any(|n| {
            !config.services.contains_key(n) && !state.fallbacks(config).any(|(f, ..)| f == n)
        });
        if gone && opts.only.is_empty() {
            warnings.push(if same_config {
                "the configuration has errors, so no service's files are removed in this run"
                    .to_string()
            } else {
                format!(
                    "the state belongs to {}, not {}: no service's files are removed",
                    state
                        .config
                        .as_ref()
                        .map(|c| c.shown().to_string())
                        .unwrap_or_default(),
                    config.main.shown()
                )
            });
        }
    }
    // The paths configured services still use: every drop-in, and the env
    // file of each service delivered by env file.
    let claimed: BTreeSet<PathBuf> = config
        .services
        .values()
        .chain(stored.iter().map(|(s, _)| s))
        .flat_map(|s| {
            std::iter::once(s.dropin_path(loader))
                .chain((s.delivery == Delivery::Env).then(|| s.env_file.clone()))
        })
        .collect();
    if opts.only.is_empty() && config.is_clean() && same_config {
        let gone: Vec<String> = state
            .services
            .keys()
            .filter(|n| !config.services.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let old = &state.services[&name];
            if !opts.dry_run {
                if let Err(e) = remove_files(&dirs, old, &claimed) {
                    warnings.push(format!(
                        "service {name} left the configuration, but its files stay: {e}"
                    ));
                    continue;
                }
                state.services.remove(&name);
            }
            dropins_removed = true;
            removed.push(name);
        }
    }

    let mut report = Report {
        dry_run: opts.dry_run,
        daemon_reload: reports.iter().any(|r| r.dropin_written) || dropins_removed,
        services: reports,
        removed,
        decrypt,
        config_problems: config
            .orphan_problems
            .iter()
            .chain(&config.place_problems)
            .map(|p| p.to_string())
            .collect(),
        warnings,
    };

    if !opts.dry_run {
        // Record what succeeded; failed services keep their last good record.
        // An env file a record no longer names is remembered in the same
        // save, so that it is removed even if this run dies first.
        for plan in &plans {
            if let Some(rec) = &plan.record {
                if let Some(old) = plan.previous.as_ref().and_then(|p| p.env_file.as_ref()) {
                    if rec.env_file.as_ref() != Some(old) {
                        state.leftover_env_files.insert(old.clone());
                    }
                }
                state
                    .services
                    .insert(plan.service.name.clone(), rec.clone());
            }
        }
        if state.config.is_none() {
            state.config = Some(config.main.clone());
        }
        // Remember the sealed files read in full, forget those no service uses.
        state
            .sealed
            .extend(store.read_records(&plain, &state.sealed));
        let used = config.all_credentials();
        state.sealed.retain(|n, _| {
            used.contains(n.as_str())
                || stored
                    .iter()
                    .any(|(s, _)| s.credentials().contains(&n.as_str()))
        });
        let names: BTreeSet<String> = plans.iter().map(|p| p.service.name.clone()).collect();
        // A credential credloader-generator hands to PID 1 (see `boot`) that
        // no longer decrypts would fail the next start of credloader.service
        // (243): the generator must run again, at a daemon-reload, to leave
        // it out.
        if manager != Manager::Absent
            && state
                .sealed
                .iter()
                .any(|(n, r)| !r.verified && loaded.sealed.get(n).is_some_and(|o| o.verified))
        {
            report.daemon_reload = true;
        }
        // A daemon-reload re-runs credloader-generator, which reads the
        // state: it must see what this run learnt (a credential that no
        // longer decrypts is no longer handed to PID 1).
        let reload_due = report.daemon_reload || state.services.values().any(|r| r.pending_reload);
        if let (Some(d), true) = (&state_dir, reload_due && manager != Manager::Absent) {
            if state != loaded {
                if let Err(e) = state.save(d) {
                    report
                        .warnings
                        .push(format!("could not record the state: {e}"));
                }
            }
        }
        settle(
            manager,
            &mut report,
            opts.restart,
            &plans,
            &names,
            &mut state,
        );
        remove_left_env_files(&dirs, &claimed, &mut state, &mut report);
        if let Some(d) = &state_dir {
            if state != loaded {
                if let Err(e) = state.save(d) {
                    let w = format!("could not record the state: {e}");
                    // The same failure may already have been reported when the
                    // intent was recorded.
                    if !report.warnings.contains(&w) {
                        report.warnings.push(w);
                    }
                }
            }
        }
    }
    // Something loaded after credloader's env file would win over it. From
    // the unit files only: asking systemd too costs several D-Bus calls per
    // unit (the bench: +700 ms a run for 50 services); status, check and
    // rotate ask it.
    let served: Vec<&Service> = plans.iter().map(|p| p.service).collect();
    let files_only = Manager::Absent;
    let found = crate::overrides::warnings(files_only, root, loader, &served);
    report.warnings.extend(found);
    Ok(report)
}

/// A warning for each credential decrypted in this run whose sealed value
/// ends in a newline that its consumers being built do not keep: env files
/// get it without (as `$(cat ...)` did), `delivery = "credential"` gets it
/// as sealed. Only runs that decrypt it say so, so no-op runs stay no-ops;
/// the state records the fact for `check`.
fn newline_warnings(
    plans: &[Plan],
    plain: &BTreeMap<String, Result<Plain, CredError>>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, p) in plain {
        let Ok(p) = p else { continue };
        if !newline::ends_in_newline(p.secret.expose()) {
            continue;
        }
        let (mut stripped, mut handed) = (Vec::new(), Vec::new());
        for plan in plans.iter().filter(|p| {
            p.error.is_none()
                && !p.up_to_date
                && p.digests.contains_key(name)
                && !p.reused.contains_key(name)
                && !p.service.keep_newline.contains(name)
        }) {
            match plan.service.delivery {
                Delivery::Env => stripped.push(plan.service.name.as_str()),
                Delivery::Credential => handed.push(plan.service.name.as_str()),
            }
        }
        if !stripped.is_empty() {
            warnings.push(newline::stripped_warning(name, &stripped));
        }
        if !handed.is_empty() {
            warnings.push(newline::handed_warning(name, &handed));
        }
    }
    warnings
}

/// Makes systemd catch up with the files: one daemon-reload if any drop-in
/// changed (or a reload is still owed from an earlier run), then each changed
/// service's `on_change` verb, queued without waiting. What systemd accepted
/// is cleared from the state; what failed stays owed, and that service counts
/// as failed for this run.
///
/// Each of these restarts is deliberate, so the unit's start-rate counter is
/// reset first: ten rotations in a minute must not leave a consumer down on
/// `StartLimitBurst=`. A consumer that is `failed` (typically because its
/// credential was bad) is started, since its credentials just changed; one
/// that an operator stopped stays stopped.
fn settle(
    manager: Manager,
    report: &mut Report,
    restart: bool,
    plans: &[Plan],
    names: &BTreeSet<String>,
    state: &mut State,
) {
    if manager == Manager::Absent {
        // An offline image (or a host without systemd): its services start
        // with the new files; there is nothing to reload or restart.
        for rec in state.services.values_mut() {
            rec.pending_reload = false;
            rec.pending_restart = false;
        }
        return;
    }
    let owed_reload = state.services.values().any(|r| r.pending_reload);
    if report.daemon_reload || owed_reload {
        match manager.daemon_reload() {
            Ok(()) => {
                report.daemon_reload = true;
                for rec in state.services.values_mut() {
                    rec.pending_reload = false;
                }
            }
            Err(e) => {
                for r in report.services.iter_mut() {
                    if state
                        .services
                        .get(&r.service)
                        .is_some_and(|s| s.pending_reload)
                    {
                        r.fail(format!(
                            "{e}; its drop-in is not loaded yet (the next apply retries)"
                        ));
                    }
                }
            }
        }
    }
    if !restart {
        return;
    }
    let mut owed: Vec<(usize, &'static str)> = Vec::new();
    for (i, r) in report.services.iter().enumerate() {
        let pending = state
            .services
            .get(&r.service)
            .is_some_and(|s| s.pending_restart);
        if !pending || !names.contains(&r.service) || r.outcome == Outcome::Failed {
            continue;
        }
        let on_change = plans
            .iter()
            .find(|p| p.service.name == r.service)
            .map(|p| p.service.on_change);
        match on_change.and_then(|c| c.verb()) {
            Some(verb) => owed.push((i, verb)),
            None => {
                if let Some(rec) = state.services.get_mut(&r.service) {
                    rec.pending_restart = false;
                }
            }
        }
    }
    if owed.is_empty() {
        return;
    }
    let all: Vec<String> = owed
        .iter()
        .map(|&(i, _)| report.services[i].unit.clone())
        .collect();
    let units: Vec<&str> = all.iter().map(String::as_str).collect();
    let states = manager.unit_states(&units);
    // What runs gets its verb; a failed consumer (its credential was bad,
    // say) is started; what does not run holds no old secret, so nothing is
    // owed for it, unless its on_change is `restart`, which starts it.
    let mut by_verb: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut reset: Vec<String> = Vec::new();
    for (&(i, verb), (load, active)) in owed.iter().zip(&states) {
        let r = &report.services[i];
        let runs = matches!(
            active.as_str(),
            "active" | "activating" | "reloading" | "deactivating"
        );
        let chosen = match active.as_str() {
            _ if load == "not-found" || load == "masked" => {
                report.warnings.push(format!(
                    "{}: unit {} is {load}; nothing to restart",
                    r.service, r.unit
                ));
                None
            }
            "failed" => Some("start"),
            // systemd could not be asked: do what was configured.
            "" => Some(verb),
            _ if runs => Some(verb),
            _ if verb == "restart" => Some(verb),
            _ => None,
        };
        match chosen {
            Some(v) => {
                if runs || active == "failed" {
                    // Only a unit that has run has a start-rate counter.
                    reset.push(r.unit.clone());
                }
                by_verb.entry(v).or_default().push(i);
            }
            None => {
                let name = r.service.clone();
                if let Some(rec) = state.services.get_mut(&name) {
                    rec.pending_restart = false;
                }
            }
        }
    }
    let reset: Vec<&str> = reset.iter().map(String::as_str).collect();
    if let Err(e) = manager.reset_failed(&reset) {
        report.warnings.push(e.to_string());
    }
    for (verb, idx) in by_verb {
        let units: Vec<String> = idx
            .iter()
            .map(|&i| report.services[i].unit.clone())
            .collect();
        let units: Vec<&str> = units.iter().map(String::as_str).collect();
        let result = manager.queue(verb, &units);
        for i in idx {
            let r = &mut report.services[i];
            match &result {
                Ok(()) => {
                    r.action = Some(verb.to_string());
                    if let Some(rec) = state.services.get_mut(&r.service) {
                        rec.pending_restart = false;
                    }
                }
                Err(e) => r.fail(format!(
                    "{e}; it still runs with its old secrets (the next apply retries)"
                )),
            }
        }
    }
}

/// A service that moved its env file, or now gets its credentials from
/// PID 1 (`delivery = "credential"`), leaves plaintext behind in its old env
/// file ([`State::leftover_env_files`]). It is removed once systemd has
/// loaded every drop-in (settle's daemon-reload), since until then a restart
/// would still read it; what cannot be removed yet stays recorded for the
/// next run. A path a configured service uses again is forgotten, not
/// removed.
fn remove_left_env_files(
    dirs: &DirCache,
    claimed: &BTreeSet<PathBuf>,
    state: &mut State,
    report: &mut Report,
) {
    let reloaded = !state.services.values().any(|r| r.pending_reload);
    let mut left = std::mem::take(&mut state.leftover_env_files);
    left.retain(|old| {
        if claimed.contains(old) {
            return false;
        }
        let (dir, file) = safefs::split(old);
        let removed = match dirs.open(dir, DirPolicy::EXISTING) {
            Ok(d) if reloaded => d.remove(file).map_err(|e| e.to_string()),
            Ok(_) => Err("systemd has not loaded the new drop-ins yet".to_string()),
            // Gone with its directory: nothing left to remove.
            Err(FsError::Os {
                errno: nix::errno::Errno::ENOENT,
                ..
            }) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        match removed {
            Ok(()) => {
                tracing::info!("removed {}, which no service uses any more", old.shown());
                false
            }
            Err(e) => {
                report.warnings.push(format!(
                    "{} holds secrets no service uses any more and stays until a later run \
                     can remove it ({e})",
                    old.shown()
                ));
                true
            }
        }
    });
    state.leftover_env_files = left;
}

fn remove_files(
    dirs: &DirCache,
    old: &ServiceState,
    claimed: &BTreeSet<PathBuf>,
) -> Result<(), FsError> {
    let (dir, name) = safefs::split(&old.dropin);
    if claimed.contains(&old.dropin) {
        // Another service (say, this one renamed) now owns that drop-in.
    } else if let Ok(d) = dirs.open(dir, DirPolicy::EXISTING) {
        d.remove(name)?;
        if let (Some(parent), Some(unit_d)) = (dir.parent(), dir.file_name()) {
            if let Ok(p) = dirs.open(parent, DirPolicy::EXISTING) {
                p.remove_dir_if_empty(unit_d);
            }
        }
    }
    if let Some(env) = old.env_file.as_ref().filter(|e| !claimed.contains(*e)) {
        let (dir, name) = safefs::split(env);
        if let Ok(d) = dirs.open(dir, DirPolicy::EXISTING) {
            d.remove(name)?;
        }
    }
    Ok(())
}

/// What [`Plan::write_env`] did.
struct EnvWrite {
    written: bool,
    /// Its content changed (or could not be compared).
    changed: bool,
    /// The file, to prove before its identity is recorded.
    pending: Option<Pending>,
}

impl EnvWrite {
    /// A dry run: it would be written.
    fn would(changed: bool) -> EnvWrite {
        EnvWrite {
            written: true,
            changed,
            pending: None,
        }
    }
}

/// How many written env files a run keeps open before it settles their
/// identities: a quarter of the open-file limit (often 1024), within 16..256.
fn max_open_pending() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| usize::try_from(soft / 4).unwrap_or(256))
        .unwrap_or(64)
        .clamp(16, 256)
}

/// Records the identity of each env file this run wrote or found equal,
/// once proven to hold what credloader wrote (one wait for the whole run,
/// see [`crate::provenance`]); one that is not proven is recorded with no
/// identity, so that the next run writes it again.
fn settle_env_ids(plans: &mut [Plan], warnings: &mut Vec<String>) {
    let (mut owners, mut pending) = (Vec::new(), Vec::new());
    for (i, plan) in plans.iter_mut().enumerate() {
        if let Some(p) = plan.pending.take() {
            owners.push(i);
            pending.push(p);
        }
    }
    if pending.is_empty() {
        return;
    }
    let (count, started) = (pending.len(), std::time::Instant::now());
    let settled = provenance::settle(pending);
    tracing::debug!(
        "proved what {count} env file(s) hold in {:?}",
        started.elapsed()
    );
    for (i, proven) in owners.into_iter().zip(settled) {
        let plan = &mut plans[i];
        match (proven, plan.record.as_mut()) {
            (Ok(st), Some(rec)) => rec.env_file_id = Some(FileId::from(&st)),
            (Ok(_), None) => {}
            (Err(e), _) => {
                let text = format!("service {}: {e}", plan.service.name);
                tracing::warn!(service = %plan.service.name, "{text}");
                warnings.push(text);
            }
        }
    }
}

/// An unchanged credential that is not decrypted again.
enum Reused {
    /// Its value, read back from the env file credloader wrote.
    Value(Secret),
    /// Delivered by PID 1 itself; already vetted when it was last applied.
    Vetted,
}

/// One service's way through the pipeline.
struct Plan<'a> {
    service: &'a Service,
    account: Option<Account>,
    /// Digest of each credential's sealed bytes.
    digests: BTreeMap<String, String>,
    inputs: String,
    dropin_text: String,
    dropin_path: PathBuf,
    previous: Option<ServiceState>,
    /// The service's config file is broken; it is served from its record.
    config_error: Option<String>,
    /// The drop-in's identity, when it was verified by content and differs
    /// from the recorded one.
    dropin_id_now: Option<FileId>,
    /// The state says credloader wrote whatever is at the env file's path
    /// ([`State::wrote_env_file`]). Any other file there is not replaced:
    /// it is not credloader's to hand to the service user.
    env_file_ours: bool,
    /// Values of unchanged credentials, taken back from the env file this
    /// service was last given (see [`Plan::reusable_values`]).
    reused: BTreeMap<String, Reused>,
    /// Credentials whose sealed bytes were never decrypted by a version
    /// that records whether they end in a newline: decrypted once.
    newline_unknown: BTreeSet<String>,
    up_to_date: bool,
    error: Option<String>,
    record: Option<ServiceState>,
    /// The env file this run wrote (or found equal), whose identity is
    /// recorded only once proven (see [`crate::provenance`]).
    pending: Option<Pending>,
    /// What this run has to say about the service without failing it.
    warnings: Vec<String>,
}

impl<'a> Plan<'a> {
    fn new(
        service: &'a Service,
        dirs: &DirCache,
        loader: &crate::config::Loader,
        accounts: &Accounts,
        store: &Store,
        state: &State,
    ) -> Plan<'a> {
        let previous = state.services.get(&service.name).cloned();
        let mut plan = Plan {
            service,
            account: None,
            digests: BTreeMap::new(),
            inputs: String::new(),
            dropin_text: crate::dropin::render(service, loader),
            dropin_path: service.dropin_path(loader),
            previous,
            config_error: None,
            dropin_id_now: None,
            env_file_ours: state.wrote_env_file(&service.env_file),
            reused: BTreeMap::new(),
            newline_unknown: BTreeSet::new(),
            up_to_date: false,
            error: None,
            record: None,
            pending: None,
            warnings: Vec::new(),
        };
        match accounts.lookup(&service.user, service.group.as_deref()) {
            Ok(a) => plan.account = Some(a),
            Err(e) => {
                plan.error = Some(format!("{e} ({})", service.origin));
                return plan;
            }
        }
        if let Err(e) = plan.check_env_path(dirs) {
            plan.error = Some(e);
            return plan;
        }
        let mut errors = Vec::new();
        for name in service.credentials() {
            match store.fingerprint(name, &state.sealed) {
                Ok(d) => {
                    plan.digests.insert(name.to_string(), d);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !errors.is_empty() {
            plan.error = Some(errors.join("; "));
            return plan;
        }
        plan.inputs = plan.digest();
        plan.newline_unknown = plan
            .digests
            .iter()
            .filter(|(c, d)| {
                state
                    .sealed
                    .get(*c)
                    .is_none_or(|r| r.digest != **d || r.ends_in_newline.is_none())
            })
            .map(|(c, _)| c.clone())
            .collect();
        plan.up_to_date = plan.newline_unknown.is_empty() && plan.check_up_to_date(dirs);
        plan
    }

    /// Digest of the service's configuration, account and sealed inputs.
    fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(self.service).expect("service serializes"));
        let a = self.account.expect("resolved");
        h.update(format!("\0{}:{}\0", a.uid, a.gid));
        h.update(self.dropin_text.as_bytes());
        for (name, d) in &self.digests {
            h.update(format!("\0{name}={d}"));
        }
        creds::hex_digest(&h.finalize())
    }

    /// Same inputs as last time, and the files on disk are what we wrote.
    fn check_up_to_date(&mut self, dirs: &DirCache) -> bool {
        let Some(prev) = &self.previous else {
            return false;
        };
        if prev.inputs != self.inputs {
            return false;
        }
        // The drop-in: untouched since written (one stat), or else the same text.
        let (dir, name) = safefs::split(&self.dropin_path);
        let now = dirs
            .open(dir, DirPolicy::EXISTING)
            .ok()
            .and_then(|d| d.entry(name).ok().flatten())
            .map(|st| FileId::from(&st));
        let untouched = now.is_some() && now == prev.dropin_id;
        if !untouched {
            if read_dropin(dirs, &self.dropin_path).as_deref() != Some(self.dropin_text.as_bytes())
            {
                return false;
            }
            // Same text, other identity (first run of this version, or a
            // touch): remember it, so the next run needs one stat again.
            self.dropin_id_now = now;
        }
        if self.service.delivery == Delivery::Env {
            let (dir, name) = safefs::split(&self.service.env_file);
            let Ok(d) = dirs.open(dir, DirPolicy::EXISTING) else {
                return false;
            };
            match d.entry(name) {
                Ok(Some(st)) => prev.env_file_id == Some(FileId::from(&st)),
                _ => false,
            }
        } else {
            true
        }
    }

    /// The credentials of this service that need no decryption, because
    /// their sealed bytes are the ones its files were last built from.
    ///
    /// For an env file, the value is read back from the file, but only when
    /// that file still has the identity recorded right after credloader
    /// wrote it (nobody changed it since: any write or chmod moves its
    /// ctime), and the variable held that same credential then. Rendering
    /// and parsing are exact inverses (fuzzed in `fuzz/props.rs`), so the
    /// value read back is the value that was decrypted. Anything less
    /// certain returns nothing, and everything is decrypted as before.
    fn reusable_values(&self, dirs: &DirCache) -> BTreeMap<String, Reused> {
        let mut out = BTreeMap::new();
        let Some(prev) = self.previous.as_ref().filter(|p| !p.inputs.is_empty()) else {
            return out;
        };
        let unchanged = |c: &str| {
            !self.newline_unknown.contains(c)
                && prev
                    .credentials
                    .get(c)
                    .is_some_and(|d| self.digests.get(c) == Some(d))
        };
        if self.service.delivery == Delivery::Credential {
            // PID 1 decrypts these itself; apply only vets changed ones.
            if prev.delivery == Delivery::Credential {
                for c in self
                    .service
                    .credentials()
                    .into_iter()
                    .filter(|c| unchanged(c))
                {
                    out.insert(c.to_string(), Reused::Vetted);
                }
            }
            return out;
        }
        let (Some(old_def), Some(old_id)) = (&prev.definition, prev.env_file_id) else {
            return out;
        };
        if prev.env_file.as_ref() != Some(&self.service.env_file) {
            return out;
        }
        let (dir, name) = safefs::split(&self.service.env_file);
        let Ok(d) = dirs.open(dir, DirPolicy::EXISTING) else {
            return out;
        };
        let Ok(Some((text, st))) = d.read_secret(name, envfile::MAX_ASSIGNMENT * 64) else {
            return out;
        };
        if FileId::from(&st) != old_id {
            return out;
        }
        let (assignments, issues) = envfile::parse(text.expose());
        if !issues.is_empty() {
            return out;
        }
        for var in &old_def.vars {
            let Source::Credential(c) = &var.source else {
                continue;
            };
            // A value rendered under another newline choice is not the one due now.
            let same_keep =
                old_def.keep_newline.contains(c) == self.service.keep_newline.contains(c);
            if out.contains_key(c) || !unchanged(c) || !same_keep {
                continue;
            }
            // The last assignment wins, as in systemd.
            if let Some(a) = assignments.iter().rev().find(|a| a.key == var.name) {
                out.insert(
                    c.clone(),
                    Reused::Value(Secret::copy_from(a.value.expose())),
                );
            }
        }
        out
    }

    /// The env file this service is written, if it is delivered by one.
    fn env_path(&self) -> Option<&PathBuf> {
        (self.service.delivery == Delivery::Env).then_some(&self.service.env_file)
    }

    /// What the state says about a service before its first files exist:
    /// enough to find and remove them, nothing that marks it as applied.
    fn provisional_record(&self) -> ServiceState {
        ServiceState {
            unit: self.service.unit.clone(),
            delivery: self.service.delivery,
            inputs: String::new(),
            credentials: BTreeMap::new(),
            env_file: (self.service.delivery == Delivery::Env)
                .then(|| self.service.env_file.clone()),
            env_file_id: None,
            dropin: self.dropin_path.clone(),
            dropin_id: None,
            applied_at: 0,
            pending_reload: false,
            pending_restart: false,
            definition: None,
        }
    }

    /// A service to be written whose env file goes to a user other than
    /// root, and whose definition is new or changed since the last apply.
    fn needs_owner_check(&self) -> bool {
        self.error.is_none()
            && !self.up_to_date
            && self.service.delivery == Delivery::Env
            && self.account.is_some_and(|a| a.uid != 0)
            && !self
                .previous
                .as_ref()
                .and_then(|p| p.definition.as_ref())
                .is_some_and(|d| d.same_definition(self.service))
    }

    /// Why the credentials this run needs cannot be used: a credential
    /// that did not decrypt, or one PID 1 could not load under its name.
    fn credential_errors(&self, plain: &BTreeMap<String, Result<Plain, CredError>>) -> Vec<String> {
        let mut errors = Vec::new();
        for name in self.digests.keys() {
            if self.reused.contains_key(name) {
                continue;
            }
            match plain.get(name) {
                Some(Ok(p)) if p.legacy && self.service.delivery == Delivery::Credential => errors.push(format!(
                    "credential {name} was sealed without --name, so PID 1 cannot load it under that name; \
                     reseal it with `credloader rotate {name}`"
                )),
                Some(Ok(_)) => {}
                Some(Err(e)) => errors.push(e.to_string()),
                None => errors.push(format!("credential {name} was not decrypted")),
            }
        }
        errors
    }

    fn fail(&self, message: String) -> ServiceReport {
        tracing::error!(service = %self.service.name, unit = %self.service.unit, "{message}");
        let mut report = self.report_base();
        report.fail(message);
        report
    }

    fn report_base(&self) -> ServiceReport {
        ServiceReport {
            service: self.service.name.clone(),
            unit: self.service.unit.clone(),
            outcome: Outcome::Unchanged,
            delivery: self.service.delivery,
            env_file: (self.service.delivery == Delivery::Env)
                .then(|| self.service.env_file.clone()),
            env_file_written: false,
            dropin: self.dropin_path.clone(),
            dropin_written: false,
            secrets_changed: false,
            action: None,
            decrypted: Vec::new(),
            newline_removed: Vec::new(),
            error: self.config_error.clone(),
        }
    }

    fn execute(
        &mut self,
        dirs: &DirCache,
        plain: &BTreeMap<String, Result<Plain, CredError>>,
        dry_run: bool,
    ) -> ServiceReport {
        if let Some(e) = &self.error {
            return self.fail(e.clone());
        }
        if self.up_to_date {
            tracing::debug!(service = %self.service.name, "unchanged since the last apply");
            if let (Some(id), Some(prev)) = (self.dropin_id_now, &self.previous) {
                self.record = Some(ServiceState {
                    dropin_id: Some(id),
                    ..prev.clone()
                });
            }
            return self.report_base();
        }
        let mut report = self.report_base();
        report.decrypted = self
            .digests
            .keys()
            .filter(|n| !self.reused.contains_key(*n))
            .cloned()
            .collect();

        // Every credential must have decrypted (or be unchanged).
        let errors = self.credential_errors(plain);
        if !errors.is_empty() {
            return self.fail(errors.join("; "));
        }
        if self.service.delivery == Delivery::Env {
            report.newline_removed = report
                .decrypted
                .iter()
                .filter(|c| !self.service.keep_newline.contains(*c))
                .filter(|c| {
                    plain
                        .get(*c)
                        .and_then(|p| p.as_ref().ok())
                        .is_some_and(|p| newline::ends_in_newline(p.secret.expose()))
                })
                .cloned()
                .collect();
        }

        let account = self.account.expect("resolved");
        match self.service.delivery {
            Delivery::Env => match self.write_env(dirs, account, plain, dry_run) {
                Ok(w) => {
                    report.env_file_written = w.written;
                    report.secrets_changed = w.changed;
                    self.pending = w.pending;
                }
                Err(e) => return self.fail(e),
            },
            Delivery::Credential => {
                // PID 1 decrypts at the next (re)start; it changed if the sealed bytes did.
                report.secrets_changed = match &self.previous {
                    Some(prev) => self
                        .digests
                        .iter()
                        .any(|(n, d)| prev.credentials.get(n) != Some(d)),
                    None => true,
                };
            }
        }

        match self.write_dropin(dirs, dry_run) {
            Ok(w) => report.dropin_written = w,
            Err(e) => return self.fail(e),
        }
        let dropin_id = {
            let (dir, name) = safefs::split(&self.dropin_path);
            dirs.open(dir, DirPolicy::EXISTING)
                .ok()
                .and_then(|d| d.entry(name).ok().flatten())
                .map(|st| FileId::from(&st))
        };

        if report.env_file_written || report.dropin_written || report.secrets_changed {
            report.outcome = Outcome::Updated;
        }
        self.record = Some(ServiceState {
            unit: self.service.unit.clone(),
            delivery: self.service.delivery,
            inputs: self.inputs.clone(),
            credentials: self.digests.clone(),
            env_file: (self.service.delivery == Delivery::Env)
                .then(|| self.service.env_file.clone()),
            // Settled with the other env files of the run (`settle_env_ids`).
            env_file_id: None,
            dropin: self.dropin_path.clone(),
            dropin_id,
            applied_at: state::now(),
            pending_reload: report.dropin_written
                || self.previous.as_ref().is_some_and(|p| p.pending_reload),
            pending_restart: report.secrets_changed
                || report.dropin_written
                || self.previous.as_ref().is_some_and(|p| p.pending_restart),
            definition: Some(self.service.clone()),
        });
        tracing::info!(
            service = %self.service.name,
            unit = %self.service.unit,
            outcome = ?report.outcome,
            "applied"
        );
        report
    }

    /// Renders and (if different) writes the env file. What its owner
    /// holds on the old file (another name, a lease) keeps it from being
    /// read, not from being replaced: see [`crate::holds`].
    fn write_env(
        &mut self,
        dirs: &DirCache,
        account: Account,
        plain: &BTreeMap<String, Result<Plain, CredError>>,
        dry_run: bool,
    ) -> Result<EnvWrite, String> {
        let rendered = self.render_env(plain)?;
        let (dir_path, name) = safefs::split(&self.service.env_file);
        let dir = open_target_dir(dirs, dir_path, dry_run).map_err(|e| e.to_string())?;
        let owner = Owner {
            uid: account.uid,
            gid: account.gid,
            mode: 0o600,
        };
        let Some(dir) = dir else {
            return Ok(EnvWrite::would(true)); // dry run, directory not there yet
        };
        if let Some(st) = dir.entry(name).map_err(|e| e.to_string())? {
            if !self.env_file_ours {
                return Err(self.not_ours(dir.path(), name, &st));
            }
        }
        if !dry_run {
            dir.remove_stale_temps(name).map_err(|e| e.to_string())?;
        }
        let host = dir.path().join(name);
        let same_content = match dir
            .read_existing(name, envfile::MAX_ASSIGNMENT * 64)
            .map_err(|e| e.to_string())?
        {
            Existing::Read { secret, stat, file } if rendered.ct_eq(secret.expose()) => {
                if owner.matches(&stat) {
                    let pending = (!dry_run)
                        .then(|| Pending::new(file, rendered, &host))
                        .transpose()
                        .map_err(|e| e.to_string())?;
                    return Ok(EnvWrite {
                        written: false,
                        changed: false,
                        pending,
                    });
                }
                true
            }
            Existing::Held(hold) => {
                self.warn_held(&host, hold);
                false
            }
            Existing::Read { .. } | Existing::Absent => false,
        };
        if dry_run {
            return Ok(EnvWrite::would(!same_content));
        }
        let file = dir
            .replace(name, rendered.expose(), owner, true)
            .map_err(|e| e.to_string())?;
        let pending = Pending::new(file, rendered, &host).map_err(|e| e.to_string())?;
        Ok(EnvWrite {
            written: true,
            changed: !same_content,
            pending: Some(pending),
        })
    }

    /// The env file's text: each variable's value, checked that an env
    /// file can carry it.
    fn render_env(
        &self,
        plain: &BTreeMap<String, Result<Plain, CredError>>,
    ) -> Result<Secret, String> {
        let mut values: Vec<(&str, &[u8])> = Vec::with_capacity(self.service.vars.len());
        for var in &self.service.vars {
            let (value, what): (&[u8], String) = match &var.source {
                Source::Credential(c) => match (self.reused.get(c), plain.get(c)) {
                    (Some(Reused::Value(v)), _) => (v.expose(), format!("credential {c}")),
                    (_, Some(Ok(p))) => (
                        newline::delivered(
                            p.secret.expose(),
                            self.service.keep_newline.contains(c),
                        ),
                        format!("credential {c}"),
                    ),
                    _ => unreachable!("checked above"),
                },
                Source::Static(s) => (s.as_bytes(), format!("static {}", var.name)),
            };
            if let Err(e) = envfile::check_value(&var.name, value) {
                let fix = match &var.source {
                    Source::Credential(c) => {
                        format!("; seal a value without it with `credloader rotate {c}`")
                    }
                    Source::Static(_) => String::new(),
                };
                return Err(format!(
                    "{what} (variable {}): the value {e}{fix}",
                    var.name
                ));
            }
            values.push((var.name.as_str(), value));
        }
        Ok(envfile::render(values.iter().copied()))
    }

    /// The old env file cannot be read because its owner holds it: say what
    /// that means. It is replaced anyway (and counted as changed).
    fn warn_held(&mut self, host: &Path, hold: Hold) {
        let path = host.shown().to_string();
        let text = format!(
            "service {}: {path} {}, so credloader could not compare it and replaced it \
             anyway (counted as changed); that only keeps the old file, with its old values, \
             reachable to whoever holds it. A service has no reason to do this: if {} did not \
             mean to, treat it as compromised and rotate its credentials ({})",
            self.service.name,
            hold.describe(),
            self.service.unit,
            hold.finder(&path),
        );
        tracing::warn!(service = %self.service.name, "{text}");
        self.warnings.push(text);
    }

    /// Refuses, before anything is recorded or decrypted, an env file path
    /// where a file that credloader did not write already is.
    fn check_env_path(&self, dirs: &DirCache) -> Result<(), String> {
        if self.env_file_ours || self.service.delivery != Delivery::Env {
            return Ok(());
        }
        let (dir, name) = safefs::split(&self.service.env_file);
        // A directory that is missing, or unsafe (said when it is written).
        let Ok(dir) = dirs.open(dir, DirPolicy::EXISTING) else {
            return Ok(());
        };
        match dir.entry(name).map_err(|e| e.to_string())? {
            Some(st) => Err(self.not_ours(dir.path(), name, &st)),
            None => Ok(()),
        }
    }

    /// Why what was found at the env file's path (in `dir`, host path) is
    /// not replaced: what safefs refuses anyway (a symlink...), or a file
    /// credloader did not write.
    fn not_ours(
        &self,
        dir: &Path,
        name: &std::ffi::OsStr,
        st: &nix::sys::stat::FileStat,
    ) -> String {
        let setting = self.service.env_file_setting();
        if let Some(e) = safefs::unreplaceable(&dir.join(name), st, false) {
            return format!("{e} ({setting})");
        }
        let path = self.service.env_file.shown();
        format!(
            "refusing to write {path} ({setting}): a file is already there that credloader did \
             not write, and its service user would own it; move it away \
             (`mv {path} {path}.orig`) or pick another env_file"
        )
    }

    /// Writes the drop-in if its content differs. Returns whether it wrote.
    fn write_dropin(&self, dirs: &DirCache, dry_run: bool) -> Result<bool, String> {
        if read_dropin(dirs, &self.dropin_path).as_deref() == Some(self.dropin_text.as_bytes()) {
            return Ok(false);
        }
        if dry_run {
            return Ok(true);
        }
        let (dir_path, name) = safefs::split(&self.dropin_path);
        let dir = dirs
            .open(dir_path, DirPolicy::create(0o755))
            .map_err(|e| e.to_string())?;
        dir.remove_stale_temps(name).map_err(|e| e.to_string())?;
        dir.write_atomic(name, self.dropin_text.as_bytes(), Owner::ROOT_0644)
            .map_err(|e| e.to_string())?;
        Ok(true)
    }
}

fn open_target_dir(
    dirs: &DirCache,
    path: &Path,
    dry_run: bool,
) -> Result<Option<std::rc::Rc<Dir>>, FsError> {
    if dry_run {
        match dirs.open(path, DirPolicy::EXISTING) {
            Ok(d) => Ok(Some(d)),
            Err(FsError::Os {
                errno: nix::errno::Errno::ENOENT,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    } else {
        dirs.open(path, DirPolicy::create(0o755)).map(Some)
    }
}

fn read_dropin(dirs: &DirCache, path: &Path) -> Option<Vec<u8>> {
    let (dir, name) = safefs::split(path);
    let d = dirs.open(dir, DirPolicy::EXISTING).ok()?;
    d.read(name, 64 * 1024).ok().flatten().map(|(b, _)| b)
}
