//! A health check run as a transient unit of PID 1, with the consumer's
//! `User=` (and `Group=`) and the consumer's own environment source: the
//! check sees exactly what the service sees, and the new values never pass
//! through credloader's memory on the way.
//!
//! Its output comes back over a pipe (`systemd-run --pipe` hands the unit
//! the pipe's write end as its stdout), never through the journal: it may
//! print its secrets. A `/bin/sh` wrapper puts the check's stderr on that
//! pipe too, so systemd-run's own report (unit name and result, never a
//! value) stays alone on systemd-run's stderr.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::fcntl::OFlag;

use super::output::{Reader, Window};
use super::{shown, Mask, Outcome};

/// How a consumer gets its secrets, for a check run as a unit.
pub enum UnitEnv<'a> {
    /// `EnvironmentFile=` the service's own env file.
    EnvFile(&'a Path),
    /// `LoadCredentialEncrypted=` lines, so the check has the service's
    /// `$CREDENTIALS_DIRECTORY`.
    Credentials(Vec<(String, PathBuf)>),
}

/// Makes the check's stderr its stdout, then runs it (`$0` names it in `ps`).
const WRAPPER: [&str; 4] = [
    "/bin/sh",
    "-c",
    "exec \"$@\" 2>&1",
    "credloader-health-check",
];

/// Runs `argv` as a transient unit (see the module docs). `None` when
/// systemd cannot be asked (no bus).
pub fn run_in_unit(
    argv: &[String],
    user: &str,
    group: Option<&str>,
    env: &UnitEnv,
    mask: Mask,
    timeout: Duration,
) -> Option<Outcome> {
    let (read, write) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            return Some(Outcome::NotRun {
                reason: format!("pipe: {e}"),
            })
        }
    };
    let mut cmd = command(user, group, env, timeout);
    cmd.arg("--")
        .args(WRAPPER)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped());
    let spawned = cmd.spawn();
    // Our copy of the write end goes: end of file comes once systemd-run
    // and the unit are gone.
    drop(cmd);
    let mut child = spawned.ok()?;
    let mut stderr = child.stderr.take()?;
    // systemd-run's report is read aside, so that neither pipe can fill
    // up while the other is waited on.
    let report = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut reader = Reader::new(read);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => reader.pump(Duration::from_millis(50)),
            Err(_) => return None,
        }
    }
    let report = report.join().unwrap_or_default();
    let window = reader.finish(Duration::from_millis(500));
    outcome(&report, &window, mask, timeout)
}

/// `systemd-run` with everything but the command line.
fn command(user: &str, group: Option<&str>, env: &UnitEnv, timeout: Duration) -> Command {
    let mut cmd = Command::new("systemd-run");
    // Type=simple: the start job is done at fork, so even a check that fails
    // at once reports its exit as the unit's result. (With Type=exec such a
    // check can exit before the job completes, and systemd-run then reports
    // a failed job instead of the result.)
    cmd.args(["--wait", "--collect", "--pipe", "--service-type=simple"])
        .arg("--description=credloader: health check")
        .args(["-p", "DefaultDependencies=no"])
        .arg("-p")
        .arg(format!("RuntimeMaxSec={}", timeout.as_secs().max(1)))
        .arg("-p")
        .arg(format!("User={user}"));
    if let Some(g) = group {
        cmd.arg("-p").arg(format!("Group={g}"));
    }
    match env {
        UnitEnv::EnvFile(path) => {
            cmd.arg("-p")
                .arg(format!("EnvironmentFile={}", path.display()));
        }
        UnitEnv::Credentials(creds) => {
            for (name, path) in creds {
                cmd.arg("-p")
                    .arg(format!("LoadCredentialEncrypted={name}:{}", path.display()));
            }
        }
    }
    cmd
}

/// Reads systemd-run's report; `None` when it could not reach systemd.
fn outcome(report: &str, window: &Window, mask: Mask, timeout: Duration) -> Option<Outcome> {
    let field = |key: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let Some(result) = field("Finished with result:") else {
        if no_bus(report) {
            return None;
        }
        if report.contains("failed because the control process exited") {
            // The job failed: the check did not pass, whatever its status.
            return Some(Outcome::Failed {
                exit_code: None,
                signal: None,
                output: shown(window, mask),
            });
        }
        let reason = report
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Some(Outcome::NotRun { reason });
    };
    let terminated = field("Main processes terminated with:").unwrap_or_default();
    let status = terminated
        .split(['/', ' '])
        .find_map(|p| p.strip_prefix("status="))
        .map(str::to_string);
    Some(match result.as_str() {
        "success" => Outcome::Passed,
        "timeout" => Outcome::TimedOut {
            after_sec: timeout.as_secs(),
            output: shown(window, mask),
        },
        _ => Outcome::Failed {
            exit_code: status.as_deref().and_then(|v| v.parse().ok()),
            // Killed: status=KILL / SEGV etc.
            signal: status.as_deref().and_then(|v| {
                nix::sys::signal::Signal::iterator()
                    .find(|s| s.as_str().trim_start_matches("SIG") == v)
                    .map(|s| s as i32)
            }),
            output: shown(window, mask),
        },
    })
}

/// Whether systemd-run said it could not reach the system bus: 252 writes
/// "Failed to connect to bus: ...", 256 and later "Failed to connect to
/// system scope bus via local transport: ...".
fn no_bus(report: &str) -> bool {
    report.lines().any(|l| {
        let l = l.trim();
        l.starts_with("Failed to connect to") && l.contains(" bus")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bus_is_told_apart_in_every_systemd_run_wording() {
        // As systemd-run 252 and 257 write it (tests/e2e_rotate.rs shows the
        // fallback on both).
        assert!(no_bus(
            "Failed to connect to bus: No such file or directory\n"
        ));
        assert!(no_bus(
            "Failed to connect to system scope bus via local transport: No such file or directory\n"
        ));
        assert!(!no_bus(
            "Job for run-u7.service failed because the control process exited with error code.\n"
        ));
        assert!(!no_bus(
            "Failed to start transient service unit: Access denied\n"
        ));
    }
}
