//! The reload/restart stage: systemd catches up with the files.
//!
//! One daemon-reload if any drop-in changed (or a reload is still owed from
//! an earlier run), then each changed service's `on_change` verb, queued
//! without waiting. What systemd accepted is cleared from the state; what
//! failed stays owed, and that service counts as failed for this run.
//!
//! Each of these restarts is deliberate, so the unit's start-rate counter is
//! reset first: ten rotations in a minute must not leave a consumer down on
//! `StartLimitBurst=`. A consumer that is `failed` (typically because its
//! credential was bad) is started, since its credentials just changed; one
//! that an operator stopped stays stopped.

use std::collections::{BTreeMap, BTreeSet};

use super::plan::Plan;
use super::report::{Outcome, Report};
use super::Run;
use crate::state::State;
use crate::systemd::Manager;

impl Run<'_> {
    /// Makes systemd catch up with the files (see the module docs).
    pub(super) fn settle(&mut self) {
        let mut settle = Settle {
            manager: self.manager,
            report: &mut self.report,
            state: &mut self.state,
        };
        if self.manager == Manager::Absent {
            settle.offline();
            return;
        }
        settle.reload();
        if self.opts.restart {
            let owed = settle.owed_restarts(&self.plans);
            settle.restart(&owed);
        }
    }
}

/// What the stage works on: the report it completes, and the state whose
/// debts (pending reloads and restarts) it pays.
struct Settle<'r> {
    manager: Manager,
    report: &'r mut Report,
    state: &'r mut State,
}

/// A restart owed: the index of its service's report, and its `on_change` verb.
type Owed = (usize, &'static str);

impl Settle<'_> {
    /// An offline image (or a host without systemd): its services start
    /// with the new files; there is nothing to reload or restart.
    fn offline(&mut self) {
        for rec in self.state.services.values_mut() {
            rec.pending_reload = false;
            rec.pending_restart = false;
        }
    }

    /// One daemon-reload, if this run changed a drop-in or one is owed. If
    /// it fails, each service whose drop-in is not loaded counts as failed.
    fn reload(&mut self) {
        let owed_reload = self.state.services.values().any(|r| r.pending_reload);
        if !(self.report.daemon_reload || owed_reload) {
            return;
        }
        match self.manager.daemon_reload() {
            Ok(()) => {
                self.report.daemon_reload = true;
                for rec in self.state.services.values_mut() {
                    rec.pending_reload = false;
                }
            }
            Err(e) => {
                for r in self.report.services.iter_mut() {
                    if self
                        .state
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

    /// The services of `plans` that owe a restart and did not fail, with
    /// their verb. One whose `on_change` queues nothing owes nothing.
    fn owed_restarts(&mut self, plans: &[Plan]) -> Vec<Owed> {
        let names: BTreeSet<String> = plans.iter().map(|p| p.service.name.clone()).collect();
        let mut owed = Vec::new();
        for (i, r) in self.report.services.iter().enumerate() {
            let pending = self
                .state
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
                None => paid(self.state, &r.service),
            }
        }
        owed
    }

    /// Asks systemd once what the owed units are doing, resets the
    /// start-rate counter of those that ran, and queues each verb once for
    /// all its units.
    fn restart(&mut self, owed: &[Owed]) {
        if owed.is_empty() {
            return;
        }
        let all: Vec<String> = owed
            .iter()
            .map(|&(i, _)| self.report.services[i].unit.clone())
            .collect();
        let units: Vec<&str> = all.iter().map(String::as_str).collect();
        let states = self.manager.unit_states(&units);
        let (by_verb, reset) = self.choose(owed, &states);
        let reset: Vec<&str> = reset.iter().map(String::as_str).collect();
        if let Err(e) = self.manager.reset_failed(&reset) {
            self.report.warnings.push(e.to_string());
        }
        for (verb, idx) in by_verb {
            self.queue(verb, &idx);
        }
    }

    /// What each owed unit gets, from its `(load, active)` state: the
    /// report indices by verb, and the units whose counter is reset. A unit
    /// that gets nothing owes nothing any more.
    fn choose(
        &mut self,
        owed: &[Owed],
        states: &[(String, String)],
    ) -> (BTreeMap<&'static str, Vec<usize>>, Vec<String>) {
        let mut by_verb: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
        let mut reset: Vec<String> = Vec::new();
        for (&(i, verb), (load, active)) in owed.iter().zip(states) {
            let r = &self.report.services[i];
            match choose(verb, load, active) {
                Choice::Queue { verb, reset: ran } => {
                    if ran {
                        reset.push(r.unit.clone());
                    }
                    by_verb.entry(verb).or_default().push(i);
                }
                Choice::Missing => {
                    self.report.warnings.push(format!(
                        "{}: unit {} is {load}; nothing to restart",
                        r.service, r.unit
                    ));
                    paid(self.state, &r.service);
                }
                Choice::Nothing => paid(self.state, &r.service),
            }
        }
        (by_verb, reset)
    }

    /// Queues `verb` for the units of the reports at `idx`: each accepted
    /// one is paid; if systemd refused, each stays owed and fails.
    fn queue(&mut self, verb: &'static str, idx: &[usize]) {
        let units: Vec<String> = idx
            .iter()
            .map(|&i| self.report.services[i].unit.clone())
            .collect();
        let units: Vec<&str> = units.iter().map(String::as_str).collect();
        let result = self.manager.queue(verb, &units);
        for &i in idx {
            let r = &mut self.report.services[i];
            match &result {
                Ok(()) => {
                    r.action = Some(verb.to_string());
                    paid(self.state, &r.service);
                }
                Err(e) => r.fail(format!(
                    "{e}; it still runs with its old secrets (the next apply retries)"
                )),
            }
        }
    }
}

/// What a unit that owes a restart gets.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// This verb; `reset`: its start-rate counter is reset first (only a
    /// unit that has run has one).
    Queue { verb: &'static str, reset: bool },
    /// The unit is not found or masked: said, and nothing is owed.
    Missing,
    /// It does not run, so it holds no old secret: nothing is owed.
    Nothing,
}

/// What runs gets its verb; a failed consumer (its credential was bad,
/// say) is started; what does not run holds no old secret, so nothing is
/// owed for it, unless its on_change is `restart`, which starts it.
/// `load` and `active` are empty when systemd could not be asked.
fn choose(verb: &'static str, load: &str, active: &str) -> Choice {
    let runs = matches!(
        active,
        "active" | "activating" | "reloading" | "deactivating"
    );
    let chosen = match active {
        _ if load == "not-found" || load == "masked" => return Choice::Missing,
        "failed" => "start",
        // systemd could not be asked: do what was configured.
        "" => verb,
        _ if runs => verb,
        _ if verb == "restart" => verb,
        _ => return Choice::Nothing,
    };
    Choice::Queue {
        verb: chosen,
        reset: runs || active == "failed",
    }
}

/// The restart `service` owed is paid (or no longer owed).
fn paid(state: &mut State, service: &str) {
    if let Some(rec) = state.services.get_mut(service) {
        rec.pending_restart = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_unit_gets_its_verb_a_failed_one_is_started_a_stopped_one_is_left() {
        let queue = |verb, reset| Choice::Queue { verb, reset };
        let c = choose;
        assert_eq!(
            c("try-restart", "loaded", "active"),
            queue("try-restart", true)
        );
        assert_eq!(
            c("try-restart", "loaded", "deactivating"),
            queue("try-restart", true)
        );
        assert_eq!(c("try-restart", "loaded", "failed"), queue("start", true));
        assert_eq!(c("try-restart", "loaded", "inactive"), Choice::Nothing);
        // `restart` starts what does not run; it has no counter to reset.
        assert_eq!(c("restart", "loaded", "inactive"), queue("restart", false));
        // systemd could not be asked: what was configured.
        assert_eq!(c("try-restart", "", ""), queue("try-restart", false));
        assert_eq!(c("restart", "not-found", "inactive"), Choice::Missing);
        assert_eq!(c("restart", "masked", "failed"), Choice::Missing);
    }
}
