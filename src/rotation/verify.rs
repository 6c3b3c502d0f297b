//! Apply, then verify every consumer: its unit active again (and
//! restarted when a restart was queued), its health check passing, nothing
//! in its unit taking the new value's variables from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{RotationError, Served};
use crate::apply::{self, Options, Outcome, Report};
use crate::config::{Config, Delivery, Service, Source};
use crate::creds::Store;
use crate::escape::text;
use crate::health::{self, RunAs};
use crate::lock::Lock;
use crate::overrides;
use crate::root::Root;
use crate::secret::Secret;
use crate::systemd::Manager;
use crate::users::Accounts;

/// What apply-then-verify found.
pub struct Verified {
    pub report: Report,
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
    pub service: String,
    pub unit: String,
    /// What was seen of the unit ("active, restarted", "not checked: ...").
    pub unit_state: String,
    pub unit_ok: bool,
    pub health: Option<health::Outcome>,
    /// What in its unit wins over credloader's env file (it then does not
    /// get the new value, so it does not verify).
    pub overridden: Vec<String>,
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct UnitSnapshot {
    active: String,
    main_pid: String,
    started: String,
}

fn snapshot(manager: Manager, unit: &str) -> Option<UnitSnapshot> {
    Some(UnitSnapshot {
        active: manager.property(unit, "ActiveState")?,
        main_pid: manager.property(unit, "MainPID")?,
        started: manager.property(unit, "ExecMainStartTimestampMonotonic")?,
    })
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
    let before: BTreeMap<String, Option<UnitSnapshot>> = only
        .iter()
        .map(|s| {
            let unit = &served.services[s].unit;
            (s.clone(), snapshot(manager, unit))
        })
        .collect();
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
        let (unit_state, unit_ok) = if s.outcome == Outcome::Failed {
            ("not checked: the apply failed for it".to_string(), false)
        } else {
            wait_unit(
                manager,
                service,
                before.get(&s.service).cloned().flatten(),
                s.action.is_some(),
            )
        };
        let health = if s.outcome == Outcome::Failed {
            None
        } else {
            service
                .health_check
                .as_ref()
                .map(|argv| run_health(root, config, manager, service, argv))
        };
        let carried = carriers(service, credentials);
        let overridden: Vec<String> = overridden
            .next()
            .unwrap_or_default()
            .iter()
            .filter(|o| o.takes(service).iter().any(|v| carried.contains(v)))
            .map(|o| o.problem(root, service))
            .collect();
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

/// Waits (up to the service's health timeout) for its unit to be active
/// and, if a restart was queued, to have restarted.
fn wait_unit(
    manager: Manager,
    service: &Service,
    before: Option<UnitSnapshot>,
    restarted: bool,
) -> (String, bool) {
    if manager == Manager::Absent {
        return (
            "not checked: no running systemd (--root or not booted)".into(),
            true,
        );
    }
    let unit = &service.unit;
    let was_active = before.as_ref().is_some_and(|b| b.active == "active");
    let try_verb = matches!(
        service.on_change.verb(),
        Some("try-restart" | "try-reload-or-restart")
    );
    if !was_active && try_verb {
        return (
            format!(
                "not running before the rotation ({}), so it was left stopped",
                before.map(|b| b.active).unwrap_or_else(|| "unknown".into())
            ),
            true,
        );
    }
    let deadline = Instant::now() + service.health_timeout;
    let mut last = None;
    loop {
        if let Some(now) = snapshot(manager, unit) {
            let changed = before
                .as_ref()
                .is_none_or(|b| b.main_pid != now.main_pid || b.started != now.started);
            if now.active == "active" && (changed || !restarted) {
                return (
                    if restarted {
                        format!("active, restarted (MainPID {})", now.main_pid)
                    } else {
                        "active".into()
                    },
                    true,
                );
            }
            last = Some(now);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = last
        .map(|l| format!("ActiveState={}, MainPID {}", l.active, l.main_pid))
        .unwrap_or_else(|| "no answer from systemctl".into());
    (
        format!(
            "did not come back active{} within {}s ({seen}); see `journalctl -u {unit}`",
            if restarted { " after its restart" } else { "" },
            service.health_timeout.as_secs()
        ),
        false,
    )
}

/// Runs the service's health check with its new environment. On a running
/// systemd, as a transient unit with the service's own user and environment
/// source (the values never pass through credloader); otherwise (an image,
/// or no bus) in-process, with the values decrypted again from the sealed
/// files the service is built from.
fn run_health(
    root: &Root,
    config: &Config,
    manager: Manager,
    service: &Service,
    argv: &[String],
) -> health::Outcome {
    if manager == Manager::Live {
        let env = match service.delivery {
            Delivery::Env => health::UnitEnv::EnvFile(&service.env_file),
            Delivery::Credential => health::UnitEnv::Credentials(
                service
                    .credentials()
                    .into_iter()
                    .map(|c| {
                        (
                            c.to_string(),
                            config.loader.creds_dir.join(format!("{c}.cred")),
                        )
                    })
                    .collect(),
            ),
        };
        let group = service.group.as_deref();
        let mask = || health::secrets::of_service(root, config, service);
        let timeout = service.health_timeout;
        if let Some(outcome) = health::run_in_unit(argv, &service.user, group, &env, &mask, timeout)
        {
            return outcome;
        }
        tracing::info!(
            "no D-Bus for systemd-run: running the health check of {} in-process",
            service.name
        );
    }
    let accounts = match Accounts::new(root) {
        Ok(a) => a,
        Err(e) => {
            return health::Outcome::NotRun {
                reason: e.to_string(),
            }
        }
    };
    let account = match accounts.lookup(&service.user, service.group.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            return health::Outcome::NotRun {
                reason: e.to_string(),
            }
        }
    };
    let env = match service_env(root, config, service) {
        Ok(e) => e,
        Err(reason) => return health::Outcome::NotRun { reason },
    };
    let who = RunAs::resolve(root, &service.user, account.uid, account.gid);
    let mask = || Ok(health::secrets::from_env(service, &env));
    health::run(argv, &who, &env, &mask, service.health_timeout)
}

/// The variables an env-delivery service receives (none for credential
/// delivery), decrypted with `systemd-creds` from the creds dir.
pub fn service_env(
    root: &Root,
    config: &Config,
    service: &Service,
) -> Result<Vec<(String, Secret)>, String> {
    if service.delivery != Delivery::Env {
        return Ok(Vec::new());
    }
    let store = Store::open(root, &config.loader.creds_dir);
    let mut plain: BTreeMap<&str, Secret> = BTreeMap::new();
    for name in service.credentials() {
        let sealed = store.sealed(name).map_err(|e| e.to_string())?;
        let (secret, _) = crate::systemd_creds::decrypt(name, &sealed.bytes)
            .map_err(|e| format!("credential {name}: {e}"))?;
        plain.insert(name, secret);
    }
    Ok(service
        .vars
        .iter()
        .map(|v| {
            let value = match &v.source {
                // What apply delivers (see `crate::newline`).
                Source::Credential(c) => Secret::copy_from(crate::newline::delivered(
                    plain[c.as_str()].expose(),
                    service.keep_newline.contains(c),
                )),
                Source::Static(s) => Secret::copy_from(s.as_bytes()),
            };
            (v.name.clone(), value)
        })
        .collect())
}
