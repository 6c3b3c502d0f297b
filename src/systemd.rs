//! The service manager: `systemctl`, and nothing at all under `--root`.
//!
//! Restarts are queued with `--no-block`: credloader.service runs at boot
//! before the consumers (they are ordered `After=` it), so waiting for a
//! consumer's restart job from inside it would wait for itself.

use std::process::Command;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SystemdError {
    #[error("`systemctl {args}` failed: {message}")]
    Failed { args: String, message: String },
}

/// How credloader reaches PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// The running system, through `systemctl`.
    Live,
    /// An offline image (`--root`) or a host without systemd: no calls.
    Absent,
}

impl Manager {
    /// `Live` when systemd is PID 1 and we are not working on an image.
    pub fn detect(offline: bool) -> Manager {
        if !offline && libsystemd::daemon::booted() {
            Manager::Live
        } else {
            Manager::Absent
        }
    }

    fn systemctl(self, args: &[&str]) -> Result<String, SystemdError> {
        let out =
            Command::new("systemctl")
                .args(args)
                .output()
                .map_err(|e| SystemdError::Failed {
                    args: args.join(" "),
                    message: e.to_string(),
                })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(SystemdError::Failed {
                args: args.join(" "),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    pub fn daemon_reload(self) -> Result<(), SystemdError> {
        match self {
            Manager::Live => self.systemctl(&["daemon-reload"]).map(drop),
            Manager::Absent => Ok(()),
        }
    }

    /// Queues `verb` (try-restart, restart, ...) for `units` without waiting.
    pub fn queue(self, verb: &str, units: &[&str]) -> Result<(), SystemdError> {
        if units.is_empty() || self == Manager::Absent {
            return Ok(());
        }
        let mut args = vec!["--no-block", verb];
        args.extend_from_slice(units);
        self.systemctl(&args).map(drop)
    }

    /// The `(LoadState, ActiveState)` of each unit, in one call
    /// (`list-units`: a single D-Bus request, where `show` makes several per
    /// unit). A unit systemd has not loaded (never started, stopped and
    /// collected, masked, or not existing) is `("", "inactive")`: nothing of
    /// it runs. Empty strings when systemd cannot be asked.
    pub fn unit_states(self, units: &[&str]) -> Vec<(String, String)> {
        if units.is_empty() || self == Manager::Absent {
            return vec![(String::new(), String::new()); units.len()];
        }
        let mut args = vec!["list-units", "--all", "--plain", "--no-legend", "--full"];
        args.extend_from_slice(units);
        let Ok(out) = self.systemctl(&args) else {
            return vec![(String::new(), String::new()); units.len()];
        };
        let listed: std::collections::HashMap<&str, (&str, &str)> = out
            .lines()
            .filter_map(|l| {
                let mut cols = l.split_whitespace();
                Some((cols.next()?, (cols.next()?, cols.next()?)))
            })
            .collect();
        units
            .iter()
            .map(|u| match listed.get(u) {
                Some((load, active)) => (load.to_string(), active.to_string()),
                None => (String::new(), "inactive".to_string()),
            })
            .collect()
    }

    /// Clears the failed state and the start-rate counter of `units`, so a
    /// deliberate restart for new credentials never trips `StartLimitBurst=`.
    pub fn reset_failed(self, units: &[&str]) -> Result<(), SystemdError> {
        if units.is_empty() || self == Manager::Absent {
            return Ok(());
        }
        let mut args = vec!["reset-failed"];
        args.extend_from_slice(units);
        self.systemctl(&args).map(drop)
    }

    /// `systemctl show -p PROPS UNITS...`: one block of `PROP=value` lines
    /// per unit, in the order given, separated by blank lines; `None` when
    /// there is no manager or it cannot be asked.
    pub fn show(self, props: &[&str], units: &[&str]) -> Option<String> {
        if units.is_empty() || self == Manager::Absent {
            return None;
        }
        let props = props.join(",");
        let mut args = vec!["show", "-p", props.as_str()];
        args.extend_from_slice(units);
        self.systemctl(&args).ok()
    }

    /// `systemctl show -p PROP --value UNIT`; `None` when there is no manager.
    pub fn property(self, unit: &str, prop: &str) -> Option<String> {
        match self {
            Manager::Live => self
                .systemctl(&["show", "-p", prop, "--value", unit])
                .ok()
                .map(|s| s.trim().to_string()),
            Manager::Absent => None,
        }
    }
}
