//! `credloader rotate NAME`: seal a new value, keep the old one as a
//! generation, apply to exactly its consumers, verify each, and put the old
//! value back (exit 4) if any verification fails. The apply lock is held
//! from before the seal to after the verdict.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::seal::{self, creds_dir, install, read_value, validate};
use super::{CommandError, Context, Output};
use crate::apply::{self, Options, Outcome, Report};
use crate::cli::RotateArgs;
use crate::config::{Config, Delivery, Service, Source};
use crate::creds::{hex_digest, Store};
use crate::generations::{History, Info};
use crate::health::{self, RunAs};
use crate::lock::Lock;
use crate::root::Root;
use crate::secret::Secret;
use crate::systemd::Manager;
use crate::users::Accounts;
use crate::{exit, names};

pub fn run(ctx: &Context, args: RotateArgs) -> Result<Output, CommandError> {
    let name = args.name;
    names::credential(&name).map_err(CommandError::Usage)?;
    let config = ctx.load_config()?;
    let (_dir, held) = apply::lock(&config, &ctx.root)?;
    let creds = creds_dir(&ctx.root, &config.loader)?;
    let Some(previous) = seal::current_sealed(&creds, &name)? else {
        return Err(CommandError::Usage(format!(
            "credential {name} does not exist in {}; seal it first with `credloader seal {name}`",
            creds.path().display()
        )));
    };
    let value = read_value(&args.input, &name)?;
    validate(&config, &name, &value)?;
    let not_after = seal::not_after(&args.input)?;
    let (sealed, info) = seal::seal(&name, &value, args.input.key, not_after)?;
    let masked = value.masked();
    let length = value.len();
    let note = seal::newline_note(&value);
    drop(value);

    let mut history = History::open(&ctx.root, &config.loader.state_dir, &name, true)
        .map_err(|e| CommandError::Environment(format!("credential {name}: generations: {e}")))?;
    let prev_digest = hex_digest(&previous);
    let prev_info = history.info_for(&prev_digest).cloned();
    let generation = history
        .push(&previous, prev_info.clone(), config.loader.keep_generations)
        .map_err(|e| {
            CommandError::Environment(format!(
                "credential {name}: keeping the previous generation: {e}"
            ))
        })?;
    install(&creds, &name, &sealed)?;
    if let Err(e) = history.set_current(info) {
        tracing::warn!("credential {name}: could not record its metadata: {e}");
    }

    let consumers: Vec<String> = config.consumers(&name).map(|s| s.name.clone()).collect();
    let mut human = format!(
        "credential {name}: new value {masked} ({length} bytes) installed; previous value kept as generation {generation}\n"
    );
    human.push_str(&note);
    let mut doc = json!({
        "name": name,
        "value": { "masked": masked, "length": length },
        "previous_generation": generation,
        "consumers": consumers,
        "applied": false,
        "rolled_back": false,
    });
    if args.no_apply {
        human.push_str("staged only (--no-apply): nothing applied or restarted; run `credloader apply` to deliver it\n");
        return Ok(Output::new(exit::OK, human, doc));
    }
    if consumers.is_empty() {
        human.push_str("no service uses it: nothing to apply\n");
        return Ok(Output::new(exit::OK, human, doc));
    }

    let manager = ctx.manager();
    let outcome = apply_and_verify(ctx, &config, manager, &consumers, &held)?;
    human.push_str(&outcome.human("apply"));
    doc["applied"] = json!(true);
    doc["apply"] = serde_json::to_value(&outcome.report).expect("serializes");
    doc["verification"] = serde_json::to_value(&outcome.checks).expect("serializes");
    if manager == Manager::Absent {
        doc["units_checked"] = json!(false);
    }
    if outcome.ok() {
        doc["verified"] = json!(true);
        human.push_str("every consumer verified\n");
        return Ok(Output::new(exit::OK, human, doc));
    }
    doc["verified"] = json!(false);

    // Put the previous value back and deliver it again.
    let _ = writeln!(
        human,
        "verification failed: restoring the previous value of {name} (generation {generation})"
    );
    install(&creds, &name, &previous)?;
    let restored = prev_info.unwrap_or(Info {
        digest: prev_digest,
        ..Info::default()
    });
    if let Err(e) = history.set_current(restored) {
        tracing::warn!("credential {name}: could not record its metadata: {e}");
    }
    let again = apply_and_verify(ctx, &config, manager, &consumers, &held)?;
    human.push_str(&again.human("re-apply of the previous value"));
    doc["rolled_back"] = json!(true);
    doc["rollback"] = json!({
        "apply": again.report,
        "verification": again.checks,
        "verified": again.ok(),
    });
    let _ = writeln!(
        human,
        "rotation of {name} rolled back{}",
        if again.ok() {
            "; the consumers run the previous value again"
        } else {
            "; the previous value did not verify either: look at the consumers now"
        }
    );
    Ok(Output::new(exit::ROLLED_BACK, human, doc))
}

/// What apply-then-verify found.
pub(super) struct Verified {
    pub report: Report,
    pub checks: Vec<Check>,
}

impl Verified {
    pub fn ok(&self) -> bool {
        self.report.all_ok() && self.checks.iter().all(|c| c.ok)
    }

    pub fn human(&self, what: &str) -> String {
        let mut out = String::new();
        for s in &self.report.services {
            let _ = writeln!(
                out,
                "{what}: {} ({}): {}{}",
                s.service,
                s.unit,
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
                let _ = writeln!(out, "  error: {e}");
            }
        }
        for w in &self.report.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        for c in &self.checks {
            let _ = writeln!(
                out,
                "verify {}: unit {}; health check {}{}",
                c.service,
                c.unit_state,
                c.health
                    .as_ref()
                    .map(|h| h.describe())
                    .unwrap_or_else(|| "none configured".into()),
                if c.ok { "" } else { "  => FAILED" }
            );
        }
        out
    }
}

/// One consumer's verification.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Check {
    pub service: String,
    pub unit: String,
    /// What was seen of the unit ("active, restarted", "not checked: ...").
    pub unit_state: String,
    pub unit_ok: bool,
    pub health: Option<health::Outcome>,
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
/// its unit is active again (and restarted, when a restart was queued), and
/// its health check passes.
pub(super) fn apply_and_verify(
    ctx: &Context,
    config: &Config,
    manager: Manager,
    only: &[String],
    held: &Lock,
) -> Result<Verified, CommandError> {
    let before: BTreeMap<String, Option<UnitSnapshot>> = only
        .iter()
        .map(|s| {
            let unit = &config.services[s].unit;
            (s.clone(), snapshot(manager, unit))
        })
        .collect();
    let opts = Options {
        dry_run: false,
        only: only.to_vec(),
        restart: true,
        jobs: 0,
    };
    let report = apply::apply_locked(config, &ctx.root, manager, &opts, held)?;
    let mut checks = Vec::new();
    for s in &report.services {
        let service = &config.services[&s.service];
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
                .map(|argv| run_health(ctx, config, service, argv))
        };
        let ok = unit_ok && health.as_ref().is_none_or(|h| h.passed());
        checks.push(Check {
            service: s.service.clone(),
            unit: s.unit.clone(),
            unit_state,
            unit_ok,
            health,
            ok,
        });
    }
    Ok(Verified { report, checks })
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

/// Runs the service's health check with its new environment, decrypted
/// again from the sealed files it is built from.
fn run_health(
    ctx: &Context,
    config: &Config,
    service: &Service,
    argv: &[String],
) -> health::Outcome {
    let accounts = match Accounts::new(&ctx.root) {
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
    let env = match service_env(&ctx.root, config, service) {
        Ok(e) => e,
        Err(reason) => return health::Outcome::NotRun { reason },
    };
    let who = RunAs::resolve(&ctx.root, &service.user, account.uid, account.gid);
    health::run(argv, &who, &env, service.health_timeout)
}

/// The variables an env-delivery service receives (none for credential
/// delivery), decrypted with `systemd-creds` from the creds dir.
pub(super) fn service_env(
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
                Source::Credential(c) => Secret::copy_from(plain[c.as_str()].expose()),
                Source::Static(s) => Secret::copy_from(s.as_bytes()),
            };
            (v.name.clone(), value)
        })
        .collect())
}
