//! The decrypt stage: each credential a service being written needs, once,
//! and only what changed.

use std::collections::BTreeMap;

use super::plan::Plan;
use super::Run;
use crate::config::Delivery;
use crate::creds::{self, CredError, Decrypter, Plain, Sealed, Store};
use crate::newline;
use crate::safefs::DirCache;

impl Run<'_> {
    /// Decrypt what is needed, each credential once, from the bytes read
    /// now (should a file have changed since its fingerprint was taken, the
    /// service is recorded with what was actually read).
    pub(super) fn decrypt(&mut self) {
        let mut wanted: BTreeMap<String, Sealed> = BTreeMap::new();
        for plan in self
            .plans
            .iter_mut()
            .filter(|p| p.error.is_none() && !p.up_to_date)
        {
            plan.read_sealed(&self.dirs, &self.store, &mut wanted);
        }
        let decrypter = Decrypter::detect(self.root, self.manager);
        let list: Vec<&Sealed> = wanted.values().collect();
        let jobs = if self.opts.jobs == 0 {
            creds::default_jobs()
        } else {
            self.opts.jobs
        };
        let (plain, decrypt) = decrypter.decrypt_all(&list, jobs, self.state_dir.as_ref());
        if !list.is_empty() {
            tracing::info!(
                "decrypted {} credentials: {} handed over, {} by PID 1, {} by systemd-creds",
                list.len(),
                decrypt.handed,
                decrypt.pid1,
                decrypt.systemd_creds
            );
        }
        self.report.decrypt = decrypt;
        let warnings = &mut self.report.warnings;
        warnings.extend(newline_warnings(&self.plans, &plain));
        for (name, p) in &plain {
            if let Ok(Plain { legacy: true, .. }) = p {
                warnings.push(format!(
                    "credential {name} was sealed without --name (legacy name `{name}.cred`); \
                     reseal it with `credloader rotate {name}` to carry its own name"
                ));
            }
        }
        self.plain = plain;
    }
}

impl Plan<'_> {
    /// Reads the sealed bytes of each credential this service needs
    /// decrypted into `wanted`, and digests its inputs from them. A
    /// credential whose sealed bytes are the ones the service was last
    /// built from is not decrypted again: its value is taken from the
    /// service's own env file, when that file is provably the one written.
    fn read_sealed(
        &mut self,
        dirs: &DirCache,
        store: &Store,
        wanted: &mut BTreeMap<String, Sealed>,
    ) {
        self.reused = self.reusable_values(dirs);
        let mut errors = Vec::new();
        for name in self.digests.keys().cloned().collect::<Vec<_>>() {
            if self.reused.contains_key(&name) {
                continue;
            }
            match store.sealed(&name) {
                Ok(s) => {
                    self.digests.insert(name.clone(), s.digest.clone());
                    wanted.insert(name, s);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            self.inputs = self.digest();
        } else {
            self.error = Some(errors.join("; "));
        }
    }
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
