//! A service's `health_check`: its argv run as the service's account with
//! the service's environment, bounded by a timeout.
//!
//! The check may well print its secrets, so its output goes nowhere: stdout
//! and stderr are /dev/null, and only the exit status (or that it timed out)
//! is reported. The child gets `env_clear()` and then exactly the service's
//! variables plus PATH, HOME, USER and LOGNAME; it runs in its own process
//! group, which is killed as a whole when the timeout passes.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Gid, Pid, Uid};
use serde::Serialize;

use crate::root::Root;
use crate::secret::Secret;

/// Who the check runs as.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

impl RunAs {
    /// Resolves `user` (with primary gid `gid`, as the service gets it) and
    /// its supplementary groups, from the image under `--root`, else NSS.
    pub fn resolve(root: &Root, user: &str, uid: u32, gid: u32) -> RunAs {
        let mut groups = vec![gid];
        let mut home = PathBuf::from("/");
        if root.is_offline() {
            let read =
                |p: &str| std::fs::read_to_string(root.host(Path::new(p))).unwrap_or_default();
            for line in read("/etc/passwd").lines() {
                let f: Vec<&str> = line.split(':').collect();
                if f.first() == Some(&user) {
                    if let Some(h) = f.get(5).filter(|h| !h.is_empty()) {
                        home = PathBuf::from(h);
                    }
                }
            }
            for line in read("/etc/group").lines() {
                let f: Vec<&str> = line.split(':').collect();
                if let (Some(g), Some(members)) = (f.get(2), f.get(3)) {
                    if members.split(',').any(|m| m == user) {
                        if let Ok(g) = g.parse() {
                            groups.push(g);
                        }
                    }
                }
            }
        } else if let Ok(Some(u)) = nix::unistd::User::from_name(user) {
            home = u.dir.clone();
            if let Ok(c) = std::ffi::CString::new(user) {
                if let Ok(list) = nix::unistd::getgrouplist(&c, Gid::from_raw(gid)) {
                    groups.extend(list.into_iter().map(|g| g.as_raw()));
                }
            }
        }
        groups.sort_unstable();
        groups.dedup();
        RunAs {
            user: user.to_string(),
            uid,
            gid,
            groups,
            home,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    Passed,
    Failed {
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    TimedOut {
        after_sec: u64,
    },
    /// It could not be started at all.
    NotRun {
        reason: String,
    },
}

impl Outcome {
    pub fn passed(&self) -> bool {
        *self == Outcome::Passed
    }

    pub fn describe(&self) -> String {
        match self {
            Outcome::Passed => "passed".into(),
            Outcome::Failed {
                exit_code: Some(c), ..
            } => format!("failed with exit status {c}"),
            Outcome::Failed {
                signal: Some(s), ..
            } => format!("killed by signal {s}"),
            Outcome::Failed { .. } => "failed".into(),
            Outcome::TimedOut { after_sec } => {
                format!("timed out after {after_sec}s (its process group was killed)")
            }
            Outcome::NotRun { reason } => format!("could not be run: {reason}"),
        }
    }
}

/// Runs `argv` as `who` with `env` (name, value) plus the account's basics.
pub fn run(argv: &[String], who: &RunAs, env: &[(String, Secret)], timeout: Duration) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::NotRun {
            reason: "the health_check is empty".into(),
        };
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", &who.home)
        .env("USER", &who.user)
        .env("LOGNAME", &who.user)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    for (name, value) in env {
        // std keeps its own copy of the environment until the command drops.
        cmd.env(name, OsStr::from_bytes(value.expose()));
    }
    let groups: Vec<Gid> = who.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    let (uid, gid) = (Uid::from_raw(who.uid), Gid::from_raw(who.gid));
    // SAFETY: only async-signal-safe syscalls between fork and exec; the
    // vector was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::NotRun {
                reason: format!("{program}: {e}"),
            }
        }
    };
    let pgid = Pid::from_raw(child.id() as i32);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() >= timeout => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                return Outcome::NotRun {
                    reason: e.to_string(),
                };
            }
        }
    };
    // Whatever it left running in its group goes too.
    let _ = killpg(pgid, Signal::SIGKILL);
    match status {
        None => {
            let _ = child.wait();
            Outcome::TimedOut {
                after_sec: timeout.as_secs(),
            }
        }
        Some(st) if st.success() => Outcome::Passed,
        Some(st) => Outcome::Failed {
            exit_code: st.code(),
            signal: st.signal(),
        },
    }
}

/// How a consumer gets its secrets, for a check run as a unit.
pub enum UnitEnv<'a> {
    /// `EnvironmentFile=` the service's own env file.
    EnvFile(&'a Path),
    /// `LoadCredentialEncrypted=` lines, so the check has the service's
    /// `$CREDENTIALS_DIRECTORY`.
    Credentials(Vec<(String, PathBuf)>),
}

/// Runs `argv` as a transient unit of PID 1 with the consumer's `User=`
/// (and `Group=`) and the consumer's own environment source. The new values
/// then never pass through credloader's memory, and the check sees exactly
/// what the service sees. Its output goes to /dev/null (not the journal: it
/// may print its secrets). `None` when systemd cannot be asked (no bus).
pub fn run_in_unit(
    argv: &[String],
    user: &str,
    group: Option<&str>,
    env: &UnitEnv,
    timeout: Duration,
) -> Option<Outcome> {
    let mut cmd = Command::new("systemd-run");
    // Type=simple: the start job is done at fork, so even a check that fails
    // at once reports its exit as the unit's result. (With Type=exec such a
    // check can exit before the job completes, and systemd-run then reports
    // a failed job instead of the result.)
    cmd.args(["--wait", "--collect", "--service-type=simple"])
        .arg("--description=credloader: health check")
        .args(["-p", "DefaultDependencies=no"])
        .args(["-p", "StandardOutput=null", "-p", "StandardError=null"])
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
    let out = cmd
        .arg("--")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(_) => return None,
    };
    // systemd-run's own report (unit names and results, never a value).
    let report = String::from_utf8_lossy(&out.stderr);
    let field = |key: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let Some(result) = field("Finished with result:") else {
        if no_bus(&report) {
            return None;
        }
        if report.contains("failed because the control process exited") {
            // The job failed: the check did not pass, whatever its status.
            return Some(Outcome::Failed {
                exit_code: None,
                signal: None,
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
    let number = |key: &str| {
        terminated
            .split(['/', ' '])
            .find_map(|p| p.strip_prefix(key))
            .map(|v| v.to_string())
    };
    Some(match result.as_str() {
        "success" => Outcome::Passed,
        "timeout" => Outcome::TimedOut {
            after_sec: timeout.as_secs(),
        },
        _ => Outcome::Failed {
            exit_code: number("status=").and_then(|v| v.parse().ok()),
            signal: number("status=").and_then(|v| {
                // Killed: status=KILL / SEGV etc.
                nix::sys::signal::Signal::iterator()
                    .find(|s| s.as_str().trim_start_matches("SIG") == v)
                    .map(|s| s as i32)
            }),
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

    fn me() -> RunAs {
        RunAs {
            user: "root".into(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            groups: vec![nix::unistd::getgid().as_raw()],
            home: "/".into(),
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

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

    #[test]
    fn passes_fails_and_times_out() {
        let env = vec![("K".to_string(), Secret::copy_from(b"v a\"l"))];
        let t = Duration::from_secs(5);
        assert_eq!(
            run(&sh("test \"$K\" = 'v a\"l'"), &me(), &env, t),
            Outcome::Passed
        );
        assert_eq!(
            run(&sh("exit 3"), &me(), &env, t),
            Outcome::Failed {
                exit_code: Some(3),
                signal: None
            }
        );
        // Only the service's variables and the basics.
        assert_eq!(
            run(
                &sh("test -z \"$CARGO\" && test \"$USER\" = root"),
                &me(),
                &env,
                t
            ),
            Outcome::Passed
        );
        let start = Instant::now();
        let o = run(
            &sh("sleep 30 & sleep 30"),
            &me(),
            &env,
            Duration::from_secs(1),
        );
        assert!(matches!(o, Outcome::TimedOut { .. }), "{o:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(matches!(
            run(&["/nonexistent/x".to_string()], &me(), &env, t),
            Outcome::NotRun { .. }
        ));
    }
}
