//! What a run records in the state, and when: the intent before any file
//! changes, what succeeded once the files are written, and the saves.

use super::plan::Plan;
use super::Run;
use crate::state::State;
use crate::systemd::Manager;

impl Run<'_> {
    /// Before any file changes, record that the services about to be
    /// written owe a reload and a restart, so that a crash or a failed
    /// systemctl call from here on is made good by the next run.
    pub(super) fn record_intent(&mut self) {
        if self.opts.dry_run || self.state_dir.is_none() {
            return;
        }
        let mut intent = false;
        // Only services this run will write: one whose credential did not
        // decrypt writes nothing and owes nothing (nor gets a record).
        for plan in self.plans.iter().filter(|p| {
            p.error.is_none() && !p.up_to_date && p.credential_errors(&self.plain).is_empty()
        }) {
            intent |= owe(&mut self.state, plan);
        }
        if intent {
            self.save_state();
        }
    }

    /// Record what succeeded; failed services keep their last good record.
    /// An env file a record no longer names is remembered in the same
    /// save, so that it is removed even if this run dies first.
    pub(super) fn record_results(&mut self) {
        let state = &mut self.state;
        for plan in &self.plans {
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
            state.config = Some(self.config.main.clone());
        }
        // Remember the sealed files read in full, forget those no service uses.
        state
            .sealed
            .extend(self.store.read_records(&self.plain, &state.sealed));
        let used = self.config.all_credentials();
        let stored = self.stored;
        state.sealed.retain(|n, _| {
            used.contains(n.as_str())
                || stored
                    .iter()
                    .any(|(s, _)| s.credentials().contains(&n.as_str()))
        });
    }

    /// A daemon-reload re-runs credloader-generator, which reads the state:
    /// it must see what this run learnt (a credential that no longer
    /// decrypts is no longer handed to PID 1), so the state is saved first.
    pub(super) fn save_before_reload(&mut self) {
        // A credential credloader-generator hands to PID 1 (see `boot`) that
        // no longer decrypts would fail the next start of credloader.service
        // (243): the generator must run again, at a daemon-reload, to leave
        // it out.
        let loaded = &self.loaded.sealed;
        if self.manager != Manager::Absent
            && self
                .state
                .sealed
                .iter()
                .any(|(n, r)| !r.verified && loaded.get(n).is_some_and(|o| o.verified))
        {
            self.report.daemon_reload = true;
        }
        let reload_due =
            self.report.daemon_reload || self.state.services.values().any(|r| r.pending_reload);
        if reload_due && self.manager != Manager::Absent && self.state != self.loaded {
            self.save_state();
        }
    }

    /// The last save: what the run did, reloaded, restarted and removed.
    pub(super) fn commit(&mut self) {
        if self.state == self.loaded {
            return;
        }
        self.save_state();
    }
}

/// Records in `state` that `plan`'s service, about to be written, owes a
/// reload and a restart. Whether that changed the state.
fn owe(state: &mut State, plan: &Plan) -> bool {
    let mut intent = false;
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
    intent
}
