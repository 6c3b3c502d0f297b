//! The write stage: each service's env file and drop-in, and the proof
//! of what each env file holds (provenance).

use std::collections::BTreeMap;
use std::path::Path;

use super::plan::{Plan, Reused};
use super::report::{Outcome, ServiceReport};
use super::Run;
use crate::config::{Delivery, Source};
use crate::creds::{CredError, Plain};
use crate::envfile;
use crate::escape::ShowPath;
use crate::holds::Hold;
use crate::newline;
use crate::provenance::{self, Pending};
use crate::safefs::{self, Dir, DirCache, DirPolicy, Existing, FsError, Owner};
use crate::secret::Secret;
use crate::state::{self, FileId, ServiceState, Unservable};
use crate::users::Account;
use nix::sys::stat::SFlag;

impl Run<'_> {
    /// Render and write, service by service. Each written env file stays
    /// open until its identity is settled: in batches, so that a large
    /// fleet stays far below the open-file limit.
    pub(super) fn write(&mut self) {
        let (plans, report) = (&mut self.plans, &mut self.report);
        let (mut open, max_open) = (0, max_open_pending());
        for i in 0..plans.len() {
            report
                .services
                .push(plans[i].execute(&self.dirs, &self.plain, self.opts.dry_run));
            report.warnings.append(&mut plans[i].warnings);
            open += plans[i].pending.is_some() as usize;
            if open >= max_open {
                settle_env_ids(&mut plans[..=i], &mut report.warnings);
                open = 0;
            }
        }
        settle_env_ids(plans, &mut report.warnings);
        report.daemon_reload = report.services.iter().any(|r| r.dropin_written);
    }

    /// The services whose config file is broken and that were never
    /// applied: failed, with what is wrong.
    pub(super) fn report_unservable(&mut self, unservable: Vec<Unservable>) {
        for (name, text) in unservable {
            tracing::error!(service = %name, "{text}");
            self.report
                .services
                .push(ServiceReport::failed(&name, text));
        }
    }
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

impl Plan<'_> {
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

    pub(super) fn execute(
        &mut self,
        dirs: &DirCache,
        plain: &BTreeMap<String, Result<Plain, CredError>>,
        dry_run: bool,
    ) -> ServiceReport {
        if let Some(e) = &self.error {
            return self.fail(e.clone());
        }
        if self.up_to_date {
            return self.keep();
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
            report.newline_removed = self.newline_removed(&report.decrypted, plain);
        }
        if let Err(e) = self.deliver(dirs, plain, dry_run, &mut report) {
            return self.fail(e);
        }
        match self.write_dropin(dirs, dry_run) {
            Ok(w) => report.dropin_written = w,
            Err(e) => return self.fail(e),
        }
        let dropin_id = file_id(dirs, &self.dropin_path);
        if report.env_file_written || report.dropin_written || report.secrets_changed {
            report.outcome = Outcome::Updated;
        }
        self.record = Some(self.applied_record(&report, dropin_id));
        tracing::info!(
            service = %self.service.name,
            unit = %self.service.unit,
            outcome = ?report.outcome,
            "applied"
        );
        report
    }

    /// A service unchanged since the last apply keeps its record (with the
    /// drop-in's new identity, if only that moved).
    fn keep(&mut self) -> ServiceReport {
        tracing::debug!(service = %self.service.name, "unchanged since the last apply");
        if let (Some(id), Some(prev)) = (self.dropin_id_now, &self.previous) {
            self.record = Some(ServiceState {
                dropin_id: Some(id),
                ..prev.clone()
            });
        }
        self.report_base()
    }

    /// Of the credentials `decrypted`, those whose value ends in a newline
    /// that the env file gets without.
    fn newline_removed(
        &self,
        decrypted: &[String],
        plain: &BTreeMap<String, Result<Plain, CredError>>,
    ) -> Vec<String> {
        decrypted
            .iter()
            .filter(|c| !self.service.keep_newline.contains(*c))
            .filter(|c| {
                plain
                    .get(*c)
                    .and_then(|p| p.as_ref().ok())
                    .is_some_and(|p| newline::ends_in_newline(p.secret.expose()))
            })
            .cloned()
            .collect()
    }

    /// Delivers the secrets: writes the env file, or (delivered by PID 1)
    /// only tells whether they changed. Fills in `report`.
    fn deliver(
        &mut self,
        dirs: &DirCache,
        plain: &BTreeMap<String, Result<Plain, CredError>>,
        dry_run: bool,
        report: &mut ServiceReport,
    ) -> Result<(), String> {
        let account = self.account.expect("resolved");
        match self.service.delivery {
            Delivery::Env => {
                let w = self.write_env(dirs, account, plain, dry_run)?;
                report.env_file_written = w.written;
                report.secrets_changed = w.changed;
                self.pending = w.pending;
            }
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
        Ok(())
    }

    /// The record of a service this run applied, as `report` says it went.
    /// What it owes systemd adds to what it owed before.
    fn applied_record(&self, report: &ServiceReport, dropin_id: Option<FileId>) -> ServiceState {
        let owed = |f: fn(&ServiceState) -> bool| self.previous.as_ref().is_some_and(f);
        ServiceState {
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
            pending_reload: report.dropin_written || owed(|p| p.pending_reload),
            pending_restart: report.secrets_changed
                || report.dropin_written
                || owed(|p| p.pending_restart),
            definition: Some(self.service.clone()),
        }
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
            if !self.env_file_ours && !self.written_for_it(&st) {
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
    pub(super) fn check_env_path(&self, dirs: &DirCache) -> Result<(), String> {
        if self.env_file_ours || self.service.delivery != Delivery::Env {
            return Ok(());
        }
        let (dir, name) = safefs::split(&self.service.env_file);
        // A directory that is missing, or unsafe (said when it is written).
        let Ok(dir) = dirs.open(dir, DirPolicy::EXISTING) else {
            return Ok(());
        };
        match dir.entry(name).map_err(|e| e.to_string())? {
            Some(st) if !self.written_for_it(&st) => Err(self.not_ours(dir.path(), name, &st)),
            _ => Ok(()),
        }
    }

    /// A file the state does not record, but that is exactly what credloader
    /// writes for this service, where only root can have put it: beneath
    /// `env_dir` (root's, writable by nobody else: checked when opened), a
    /// regular file with one link, owned by the service's account, mode
    /// 0600. Such a file is credloader's from a state that was lost (say,
    /// `/var/lib/credloader` wiped while `/run/credloader` lives on), and
    /// replacing it hands the service user nothing it does not own already.
    fn written_for_it(&self, st: &nix::sys::stat::FileStat) -> bool {
        let Some(account) = self.account else {
            return false;
        };
        let owner = Owner {
            uid: account.uid,
            gid: account.gid,
            mode: 0o600,
        };
        self.in_env_dir
            && st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
            && st.st_nlink == 1
            && owner.matches(st)
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

/// The identity of the file at `path`, if there is one.
pub(super) fn file_id(dirs: &DirCache, path: &Path) -> Option<FileId> {
    let (dir, name) = safefs::split(path);
    dirs.open(dir, DirPolicy::EXISTING)
        .ok()
        .and_then(|d| d.entry(name).ok().flatten())
        .map(|st| FileId::from(&st))
}

pub(super) fn read_dropin(dirs: &DirCache, path: &Path) -> Option<Vec<u8>> {
    let (dir, name) = safefs::split(path);
    let d = dirs.open(dir, DirPolicy::EXISTING).ok()?;
    d.read(name, 64 * 1024).ok().flatten().map(|(b, _)| b)
}
