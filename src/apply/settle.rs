//! The reload/restart stage: systemd catches up with the files.

use std::collections::{BTreeMap, BTreeSet};

use super::plan::Plan;
use super::report::{Outcome, Report};
use super::Run;
use crate::state::State;
use crate::systemd::Manager;

impl Run<'_> {
    /// Reload and restart (see [`settle`]).
    pub(super) fn settle(&mut self) {
        let names: BTreeSet<String> = self.plans.iter().map(|p| p.service.name.clone()).collect();
        settle(
            self.manager,
            &mut self.report,
            self.opts.restart,
            &self.plans,
            &names,
            &mut self.state,
        );
    }
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
