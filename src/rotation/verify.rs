//! Apply, then verify every consumer: its unit active again (and
//! restarted when a restart was queued), its health check passing, nothing
//! in its unit taking the new value's variables from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::health_check::run_health;
use super::unit_wait::{snapshot, wait_unit, UnitSnapshot};
use super::{RotationError, Served};
use crate::apply::{self, Options, Outcome, Report};
use crate::config::{Config, Service, Source};
use crate::escape::text;
use crate::health;
use crate::lock::Lock;
use crate::overrides::{self, Override};
use crate::root::Root;
use crate::systemd::Manager;

/// What apply-then-verify found.
pub struct Verified {
    /// The apply's report.
    pub report: Report,
    /// Each consumer's verification, in the report's order.
    pub checks: Vec<Check>,
}

impl Verified {
    /// Every consumer was delivered to and verified. A consumer served from
    /// its last good definition (its config file is broken) carries that
    /// as an error in the report, but counts when its delivery and checks
    /// passed: it gets the value either way, and a rollback would not mend
    /// its file.
    ///
    /// A file whose services cannot be named ([`Report::config_problems`])
    /// does not fail it either: every service it may define that was ever
    /// applied is among the consumers (served from its last good
    /// definition), and the problem is said in [`Verified::human`].
    pub fn ok(&self) -> bool {
        self.report
            .services
            .iter()
            .all(|s| s.outcome != Outcome::Failed)
            && self.checks.iter().all(|c| c.ok)
    }

    /// The human account, each line of the apply prefixed with `what`.
    pub fn human(&self, what: &str) -> String {
        let mut out = String::new();
        for s in &self.report.services {
            let _ = writeln!(
                out,
                "{what}: {} ({}): {}{}",
                text(&s.service),
                text(&s.unit),
                match s.outcome {
                    Outcome::Unchanged => "unchanged",
                    Outcome::Updated => "updated",
                    Outcome::Failed => "FAILED",
                },
                s.action
                    .as_ref()
                    .map(|a| format!(", {a} queued"))
                    .unwrap_or_default()
            );
            if let Some(e) = &s.error {
                let _ = writeln!(out, "  error: {}", text(e));
            }
        }
        for p in &self.report.config_problems {
            let _ = writeln!(out, "config error: {p}");
        }
        for w in &self.report.warnings {
            let _ = writeln!(out, "warning: {}", text(w));
        }
        for c in &self.checks {
            out.push_str(&c.describe());
        }
        out
    }
}

impl Check {
    /// How it went, with the check's last lines when it failed.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "verify {}: unit {}; health check {}{}\n",
            text(&self.service),
            text(&self.unit_state),
            self.health
                .as_ref()
                .map(|h| h.describe())
                .unwrap_or_else(|| "none configured".into()),
            if self.ok { "" } else { "  => FAILED" }
        );
        for o in &self.overridden {
            let _ = writeln!(out, "  overridden: {o}");
        }
        let lines = self.health.as_ref().map(|h| h.output()).unwrap_or_default();
        if !lines.is_empty() {
            out.push_str("  its last lines of output (secrets masked):\n");
            for l in lines {
                let _ = writeln!(out, "  | {l}");
            }
        }
        out
    }

    /// The descriptions of the checks that failed (what `-q` shows).
    pub fn failures(checks: &[Check]) -> Vec<String> {
        checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.describe().trim_end().to_string())
            .collect()
    }
}

/// One consumer's verification.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The consumer.
    pub service: String,
    /// Its unit.
    pub unit: String,
    /// What was seen of the unit ("active, restarted", "not checked: ...").
    pub unit_state: String,
    /// The unit is as it should be.
    pub unit_ok: bool,
    /// How its health check went (`None`: none configured, or not run
    /// because the apply failed for it).
    pub health: Option<health::Outcome>,
    /// What in its unit wins over credloader's env file (it then does not
    /// get the new value, so it does not verify).
    pub overridden: Vec<String>,
    /// It verified: unit, health check and nothing overriding.
    pub ok: bool,
}

/// Applies to `only` (restarting what changed), then verifies each of them:
/// its unit is active again (and restarted, when a restart was queued), its
/// health check passes, and nothing in its unit takes from it a variable
/// that carries one of `credentials` (the ones that changed).
pub fn apply_and_verify(
    root: &Root,
    config: &Config,
    served: &Served,
    manager: Manager,
    (only, credentials): (&[String], &[&str]),
    held: &Lock,
) -> Result<Verified, RotationError> {
    let before = snapshots(manager, served, only);
    let opts = Options {
        dry_run: false,
        only: only.to_vec(),
        restart: true,
        jobs: 0,
    };
    let report = apply::apply_locked(config, root, manager, &opts, held)?;
    // Something loaded after its env file that wins over it: the consumer
    // keeps the value it had, whatever its unit and health check say.
    let consumers: Vec<&Service> = report
        .services
        .iter()
        .map(|s| &served.services[&s.service])
        .collect();
    let mut overridden = overrides::find(manager, root, &config.loader, &consumers).into_iter();
    let mut checks = Vec::new();
    for s in &report.services {
        let service = &served.services[&s.service];
        let (unit_state, unit_ok, health) = if s.outcome == Outcome::Failed {
            (
                "not checked: the apply failed for it".to_string(),
                false,
                None,
            )
        } else {
            let before = before.get(&s.service).cloned().flatten();
            let (state, ok) = wait_unit(manager, service, before, s.action.is_some());
            let health = (service.health_check.as_ref())
                .map(|argv| run_health(root, config, manager, service, argv));
            (state, ok, health)
        };
        let found = overridden.next().unwrap_or_default();
        let overridden = overriding(root, service, &found, credentials);
        let ok = unit_ok && health.as_ref().is_none_or(|h| h.passed()) && overridden.is_empty();
        if let (Some(h), false) = (&health, root.is_offline()) {
            journal_failed_check(service, h);
        }
        checks.push(Check {
            service: s.service.clone(),
            unit: s.unit.clone(),
            unit_state,
            unit_ok,
            health,
            overridden,
            ok,
        });
    }
    Ok(Verified { report, checks })
}

/// What systemd says of each of `only`'s units before the apply.
fn snapshots(
    manager: Manager,
    served: &Served,
    only: &[String],
) -> BTreeMap<String, Option<UnitSnapshot>> {
    only.iter()
        .map(|s| {
            let unit = &served.services[s].unit;
            (s.clone(), snapshot(manager, unit))
        })
        .collect()
}

/// What of `found` in its unit takes from `service` a variable that
/// carries one of `credentials`.
fn overriding(
    root: &Root,
    service: &Service,
    found: &[Override],
    credentials: &[&str],
) -> Vec<String> {
    let carried = carriers(service, credentials);
    found
        .iter()
        .filter(|o| o.takes(service).iter().any(|v| carried.contains(v)))
        .map(|o| o.problem(root, service))
        .collect()
}

/// Keeps a failed health check, with its masked output, in the journal.
fn journal_failed_check(service: &Service, health: &health::Outcome) {
    if health.passed() {
        return;
    }
    let mut message = format!(
        "service {} ({}): health check {}",
        text(&service.name),
        text(&service.unit),
        health.describe()
    );
    for line in health.output() {
        let _ = write!(message, "\n| {line}");
    }
    crate::logging::journal(libsystemd::logging::Priority::Warning, &message);
}

/// The variables of `service` that carry one of `credentials`.
fn carriers(service: &Service, credentials: &[&str]) -> Vec<String> {
    service
        .vars
        .iter()
        .filter(|v| matches!(&v.source, Source::Credential(c) if credentials.contains(&c.as_str())))
        .map(|v| v.name.clone())
        .collect()
}
