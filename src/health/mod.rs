//! A service's `health_check`: its argv run as the service's account with
//! the service's environment, bounded by a timeout.
//!
//! The check may well print its secrets. Its output (stdout and stderr
//! together) is read from a pipe, never left to the journal. When the check
//! fails, its last lines are kept with every secret value of the service
//! masked ([`output`]); a passing check's output is dropped unread. The
//! child gets `env_clear()` and then exactly the service's variables plus
//! PATH, HOME, USER and LOGNAME; it runs in its own process group, which is
//! killed as a whole when the timeout passes. [`unit`] runs a check as a
//! transient unit of PID 1 instead, on a running system.

pub mod output;
pub mod secrets;
mod unit;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Gid, Pid, Uid};
use serde::Serialize;

pub use output::Secrets;
pub use unit::{run_in_unit, UnitEnv};

use crate::root::Root;
use crate::secret::Secret;
use output::{Reader, Window};

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
        /// Its last lines of output, every secret value masked.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        output: Vec<String>,
    },
    TimedOut {
        after_sec: u64,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        output: Vec<String>,
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

    /// One line: how it ended.
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
            Outcome::TimedOut { after_sec, .. } => {
                format!("timed out after {after_sec}s (its process group was killed)")
            }
            Outcome::NotRun { reason } => format!("could not be run: {reason}"),
        }
    }

    /// The last lines it printed before it failed (masked), if any.
    pub fn output(&self) -> &[String] {
        match self {
            Outcome::Failed { output, .. } | Outcome::TimedOut { output, .. } => output,
            _ => &[],
        }
    }

    /// How a check that ran to its end went; `window` is what it printed.
    fn ended(status: ExitStatus, window: &Window, mask: Mask) -> Outcome {
        if status.success() {
            return Outcome::Passed;
        }
        Outcome::Failed {
            exit_code: status.code(),
            signal: status.signal(),
            output: shown(window, mask),
        }
    }
}

/// Gives the values to mask in a failed check's output. Called only when
/// there is output to show, so a passing check costs nothing.
pub type Mask<'a> = &'a dyn Fn() -> Result<Secrets, String>;

/// The lines of `window` to show: masked, or a note saying why none are.
fn shown(window: &Window, mask: Mask) -> Vec<String> {
    if window.is_empty() {
        return Vec::new();
    }
    match mask() {
        Ok(secrets) => output::last_lines(window, &secrets),
        Err(e) => vec![format!(
            "(its output is not shown: the values to mask in it could not be read: {e})"
        )],
    }
}

/// Runs `argv` as `who` with `env` (name, value) plus the account's basics.
pub fn run(
    argv: &[String],
    who: &RunAs,
    env: &[(String, Secret)],
    mask: Mask,
    timeout: Duration,
) -> Outcome {
    let (mut child, reader) = match spawn(argv, who, env) {
        Ok(c) => c,
        Err(reason) => return Outcome::NotRun { reason },
    };
    let (status, window) = wait(&mut child, reader, timeout);
    match status {
        Err(reason) => Outcome::NotRun { reason },
        Ok(None) => Outcome::TimedOut {
            after_sec: timeout.as_secs(),
            output: shown(&window, mask),
        },
        Ok(Some(st)) => Outcome::ended(st, &window, mask),
    }
}

/// Starts the check in its own process group, its stdout and stderr on
/// one pipe.
fn spawn(
    argv: &[String],
    who: &RunAs,
    env: &[(String, Secret)],
) -> Result<(Child, Reader), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("the health_check is empty".into());
    };
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let write2 = write.try_clone().map_err(|e| format!("pipe: {e}"))?;
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
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write2))
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
    let child = cmd.spawn().map_err(|e| format!("{program}: {e}"));
    // Our copies of the pipe's write end (and of the environment) go now:
    // the reader sees end of file once the check's group is gone.
    drop(cmd);
    Ok((child?, Reader::new(read)))
}

/// Waits for the check up to `timeout` while reading its output, then
/// kills whatever is left of its process group. `Ok(None)`: timed out.
fn wait(
    child: &mut Child,
    mut reader: Reader,
    timeout: Duration,
) -> (Result<Option<ExitStatus>, String>, Window) {
    let pgid = Pid::from_raw(child.id() as i32);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(Some(st)),
            Ok(None) if start.elapsed() >= timeout => break Ok(None),
            Ok(None) => reader.pump(Duration::from_millis(20)),
            Err(e) => break Err(e.to_string()),
        }
    };
    // Whatever it left running in its group goes too.
    let _ = killpg(pgid, Signal::SIGKILL);
    if !matches!(status, Ok(Some(_))) {
        let _ = child.wait();
    }
    (status, reader.finish(Duration::from_millis(500)))
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

    fn none() -> Result<Secrets, String> {
        Ok(Secrets::new([]))
    }

    #[test]
    fn passes_fails_and_times_out() {
        let env = vec![("K".to_string(), Secret::copy_from(b"v a\"l"))];
        let t = Duration::from_secs(5);
        assert_eq!(
            run(&sh("test \"$K\" = 'v a\"l'"), &me(), &env, &none, t),
            Outcome::Passed
        );
        assert_eq!(
            run(&sh("exit 3"), &me(), &env, &none, t),
            Outcome::Failed {
                exit_code: Some(3),
                signal: None,
                output: vec![],
            }
        );
        // Only the service's variables and the basics.
        assert_eq!(
            run(
                &sh("test -z \"$CARGO\" && test \"$USER\" = root"),
                &me(),
                &env,
                &none,
                t
            ),
            Outcome::Passed
        );
        let start = Instant::now();
        let o = run(
            &sh("echo waiting; sleep 30 & sleep 30"),
            &me(),
            &env,
            &none,
            Duration::from_secs(1),
        );
        assert!(matches!(o, Outcome::TimedOut { .. }), "{o:?}");
        assert_eq!(o.output(), ["waiting"]);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(matches!(
            run(&["/nonexistent/x".to_string()], &me(), &env, &none, t),
            Outcome::NotRun { .. }
        ));
    }

    #[test]
    fn a_failed_check_shows_its_last_lines_with_its_secrets_masked() {
        let env = vec![
            (
                "KEY".to_string(),
                Secret::copy_from(b"key-0123456789abcdef"),
            ),
            (
                "SECRET".to_string(),
                Secret::copy_from(b"sec-fedcba9876543210"),
            ),
        ];
        let mask = || {
            Ok(Secrets::new(
                env.iter().map(|(_, v)| Secret::copy_from(v.expose())),
            ))
        };
        let o = run(
            &sh("echo \"using $KEY\"; echo \"signed with $SECRET\" >&2; \
                 echo '{\"code\":-2015}'; exit 4"),
            &me(),
            &env,
            &mask,
            Duration::from_secs(5),
        );
        let Outcome::Failed {
            exit_code: Some(4),
            output,
            ..
        } = &o
        else {
            panic!("{o:?}");
        };
        assert_eq!(
            output,
            &["using ke...***", "signed with se...***", "{\"code\":-2015}"]
        );
        let json = serde_json::to_string(&o).unwrap();
        assert!(!json.contains("0123456789") && !json.contains("9876543210"));
        // Values that cannot be read: nothing is shown.
        let o = run(
            &sh("echo \"$KEY\"; exit 1"),
            &me(),
            &env,
            &|| Err("EACCES".into()),
            Duration::from_secs(5),
        );
        assert!(o.output()[0].contains("not shown"), "{o:?}");
        // A passing check's output is never kept.
        assert!(run(
            &sh("echo \"$KEY\""),
            &me(),
            &env,
            &mask,
            Duration::from_secs(5)
        )
        .passed());
    }
}
