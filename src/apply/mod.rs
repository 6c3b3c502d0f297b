//! The `apply` pipeline: config → credentials → render → write → restart.
//!
//! Each service is handled on its own: a bad credential or a failed write
//! fails that service only (its last good files stay, it is not restarted)
//! and every other service is still served. A service whose inputs are the
//! same as at the last apply, and whose files are untouched since, is not
//! decrypted at all, so a re-apply with nothing changed costs a few stats.

mod cleanup;
mod plan;
mod report;
mod settle;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use thiserror::Error;

use crate::config::{Config, Delivery, Service};
use crate::creds::{self, CredError, Decrypter, Plain, Sealed, Store};
use crate::escape::ShowPath;
use crate::lock::{self, LockError};
use crate::newline;
use crate::root::Root;
use crate::runas;
use crate::safefs::{Dir, DirCache, DirPolicy, FsError};
use crate::state::State;
use crate::systemd::Manager;
use crate::users::{Accounts, UserError};

use cleanup::{remove_files, remove_left_env_files, sweep_stale_temps};
use plan::Plan;
pub use report::{Outcome, Report, ServiceReport};
use settle::settle;
use write::{max_open_pending, settle_env_ids};

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
