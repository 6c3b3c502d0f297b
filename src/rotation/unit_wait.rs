//! Waiting for a consumer's unit after an apply: active again, and
//! restarted when a restart was queued.

use std::time::{Duration, Instant};

use crate::config::Service;
use crate::systemd::Manager;

/// What systemd says of a unit, before and after the apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UnitSnapshot {
    active: String,
    main_pid: String,
    started: String,
}

pub(super) fn snapshot(manager: Manager, unit: &str) -> Option<UnitSnapshot> {
    Some(UnitSnapshot {
        active: manager.property(unit, "ActiveState")?,
        main_pid: manager.property(unit, "MainPID")?,
        started: manager.property(unit, "ExecMainStartTimestampMonotonic")?,
    })
}

/// Waits (up to the service's health timeout) for its unit to be active
/// and, if a restart was queued, to have restarted: what was seen, and
/// whether that is good.
pub(super) fn wait_unit(
    manager: Manager,
    service: &Service,
    before: Option<UnitSnapshot>,
    restarted: bool,
) -> (String, bool) {
    if let Some(seen) = not_waited_for(manager, service, &before) {
        return (seen, true);
    }
    let unit = &service.unit;
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
    (timed_out(service, last, restarted), false)
}

/// Why there is nothing to wait for, if there is not: no running systemd,
/// or a unit a `try-` verb left stopped as it was.
fn not_waited_for(
    manager: Manager,
    service: &Service,
    before: &Option<UnitSnapshot>,
) -> Option<String> {
    if manager == Manager::Absent {
        return Some("not checked: no running systemd (--root or not booted)".into());
    }
    let was_active = before.as_ref().is_some_and(|b| b.active == "active");
    let try_verb = matches!(
        service.on_change.verb(),
        Some("try-restart" | "try-reload-or-restart")
    );
    if was_active || !try_verb {
        return None;
    }
    Some(format!(
        "not running before the rotation ({}), so it was left stopped",
        before
            .as_ref()
            .map(|b| b.active.clone())
            .unwrap_or_else(|| "unknown".into())
    ))
}

/// What a unit that did not come back looked like last.
fn timed_out(service: &Service, last: Option<UnitSnapshot>, restarted: bool) -> String {
    let seen = last
        .map(|l| format!("ActiveState={}, MainPID {}", l.active, l.main_pid))
        .unwrap_or_else(|| "no answer from systemctl".into());
    format!(
        "did not come back active{} within {}s ({seen}); see `journalctl -u {}`",
        if restarted { " after its restart" } else { "" },
        service.health_timeout.as_secs(),
        service.unit
    )
}
