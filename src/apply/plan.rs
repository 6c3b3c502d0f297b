//! A `Plan` per service: what it is made of (the digest of its inputs),
//! whether it is already up to date, and which values need no decryption.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::write::{file_id, read_dropin};
use super::Run;
use crate::config::{Delivery, Service, Source};
use crate::creds::{self, CredError, Plain, Store};
use crate::envfile;
use crate::provenance::Pending;
use crate::runas;
use crate::safefs::{self, DirCache, DirPolicy};
use crate::secret::Secret;
use crate::state::{FileId, ServiceState, State};
use crate::users::{Account, Accounts};

impl<'a> Run<'a> {
    /// Plan: what each service is made of, and whether it is already done.
    pub(super) fn plan(&mut self) {
        let config = self.config;
        let stored = self.stored;
        let selected = config
            .services
            .values()
            .filter(|s| self.opts.wants(&s.name))
            .map(|s| (s, None))
            .chain(stored.iter().map(|(s, e)| (s, Some(e.as_str()))));
        let mut plans = Vec::new();
        for (service, config_error) in selected {
            let mut plan = Plan::new(
                service,
                &self.dirs,
                &config.loader,
                &self.accounts,
                &self.store,
                &self.state,
            );
            plan.config_error = config_error.map(str::to_string);
            plans.push(plan);
        }
        self.plans = plans;
    }

    /// Whoever owns an env file can add variables to it: it must be the
    /// user the unit runs as (see `runas`). Checked for new and changed
    /// definitions (one `systemctl show` for all); `check` audits them all.
    pub(super) fn check_owners(&mut self) {
        let owner_check: Vec<usize> = (0..self.plans.len())
            .filter(|&i| self.plans[i].needs_owner_check())
            .collect();
        if owner_check.is_empty() {
            return;
        }
        let units: Vec<&str> = owner_check
            .iter()
            .map(|&i| self.plans[i].service.unit.as_str())
            .collect();
        let runs_as = runas::units(self.manager, self.root, &units);
        for (&i, r) in owner_check.iter().zip(&runs_as) {
            let plan = &mut self.plans[i];
            let owner = plan.account.expect("checked");
            if let Some((why, fix)) = runas::mismatch(plan.service, owner, r, &self.accounts) {
                plan.error = Some(format!("refusing to write its env file: {why}; {fix}"));
            } else if let Some(w) = runas::unsure(plan.service, r) {
                self.report.warnings.push(w);
            }
        }
    }
}

/// An unchanged credential that is not decrypted again.
pub(super) enum Reused {
    /// Its value, read back from the env file credloader wrote.
    Value(Secret),
    /// Delivered by PID 1 itself; already vetted when it was last applied.
    Vetted,
}

/// One service's way through the pipeline.
pub(super) struct Plan<'a> {
    pub(super) service: &'a Service,
    pub(super) account: Option<Account>,
    /// Digest of each credential's sealed bytes.
    pub(super) digests: BTreeMap<String, String>,
    pub(super) inputs: String,
    pub(super) dropin_text: String,
    pub(super) dropin_path: PathBuf,
    pub(super) previous: Option<ServiceState>,
    /// The service's config file is broken; it is served from its record.
    pub(super) config_error: Option<String>,
    /// The drop-in's identity, when it was verified by content and differs
    /// from the recorded one.
    pub(super) dropin_id_now: Option<FileId>,
    /// The state says credloader wrote whatever is at the env file's path
    /// ([`State::wrote_env_file`]). Any other file there is not replaced:
    /// it is not credloader's to hand to the service user.
    pub(super) env_file_ours: bool,
    /// The env file lies beneath `env_dir`, credloader's own directory,
    /// where only root can put a file (see [`Plan::written_for_it`]).
    pub(super) in_env_dir: bool,
    /// Values of unchanged credentials, taken back from the env file this
    /// service was last given (see [`Plan::reusable_values`]).
    pub(super) reused: BTreeMap<String, Reused>,
    /// Credentials whose sealed bytes were never decrypted by a version
    /// that records whether they end in a newline: decrypted once.
    pub(super) newline_unknown: BTreeSet<String>,
    pub(super) up_to_date: bool,
    pub(super) error: Option<String>,
    pub(super) record: Option<ServiceState>,
    /// The env file this run wrote (or found equal), whose identity is
    /// recorded only once proven (see [`crate::provenance`]).
    pub(super) pending: Option<Pending>,
    /// What this run has to say about the service without failing it.
    pub(super) warnings: Vec<String>,
}

impl<'a> Plan<'a> {
    pub(super) fn new(
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
            dropin_path: crate::dropin::path(service, loader),
            previous,
            config_error: None,
            dropin_id_now: None,
            env_file_ours: state.wrote_env_file(&service.env_file),
            in_env_dir: service.env_file.starts_with(&loader.env_dir),
            reused: BTreeMap::new(),
            newline_unknown: BTreeSet::new(),
            up_to_date: false,
            error: None,
            record: None,
            pending: None,
            warnings: Vec::new(),
        };
        if let Err(e) = plan.inspect(dirs, accounts, store, state) {
            plan.error = Some(e);
        }
        plan
    }

    /// Resolves the service's account, checks its env file's path,
    /// fingerprints its credentials and finds whether it is up to date.
    /// The first that fails is why the service cannot be served.
    fn inspect(
        &mut self,
        dirs: &DirCache,
        accounts: &Accounts,
        store: &Store,
        state: &State,
    ) -> Result<(), String> {
        let service = self.service;
        let account = accounts
            .lookup(&service.user, service.group.as_deref())
            .map_err(|e| format!("{e} ({})", service.origin))?;
        self.account = Some(account);
        self.check_env_path(dirs)?;
        let mut errors = Vec::new();
        for name in service.credentials() {
            match store.fingerprint(name, &state.sealed) {
                Ok(d) => {
                    self.digests.insert(name.to_string(), d);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        self.inputs = self.digest();
        self.newline_unknown = self
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
        self.up_to_date = self.newline_unknown.is_empty() && self.check_up_to_date(dirs);
        Ok(())
    }

    /// Digest of the service's configuration, account and sealed inputs.
    pub(super) fn digest(&self) -> String {
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
        let now = file_id(dirs, &self.dropin_path);
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
    pub(super) fn reusable_values(&self, dirs: &DirCache) -> BTreeMap<String, Reused> {
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
        self.values_in_env_file(dirs, prev, unchanged)
    }

    /// The values of the credentials `unchanged` accepts, read back from
    /// the env file `prev` recorded, if it is provably the one written then
    /// (see [`Plan::reusable_values`]).
    fn values_in_env_file(
        &self,
        dirs: &DirCache,
        prev: &ServiceState,
        unchanged: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, Reused> {
        let mut out = BTreeMap::new();
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
    pub(super) fn env_path(&self) -> Option<&PathBuf> {
        (self.service.delivery == Delivery::Env).then_some(&self.service.env_file)
    }

    /// What the state says about a service before its first files exist:
    /// enough to find and remove them, nothing that marks it as applied.
    pub(super) fn provisional_record(&self) -> ServiceState {
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
    pub(super) fn needs_owner_check(&self) -> bool {
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
    pub(super) fn credential_errors(
        &self,
        plain: &BTreeMap<String, Result<Plain, CredError>>,
    ) -> Vec<String> {
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
}
