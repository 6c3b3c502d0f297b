//! A real systemd as PID 1 for end-to-end tests: a thin Rust wrapper around
//! `tests/testbed/testbed.sh` (see docs/testbed.md for how the bed works).
//!
//! ```ignore
//! #[path = "support/testbed.rs"]
//! mod testbed;            // or `mod support;` + `support::testbed::TestBed`
//! use testbed::TestBed;
//!
//! let bed = TestBed::boot();
//! bed.install_credloader(env!("CARGO_BIN_EXE_credloader").as_ref());
//! bed.write("/etc/foo.env", b"A=1\n", 0o600);
//! assert!(bed.systemctl(&["start", "foo.service"]).status.success());
//! ```
//!
//! Every bed boots its own systemd over a copy-on-write root; dropping the
//! `TestBed` powers it off and removes every trace, also when the test panicked
//! (then it first prints the console log and journal tails to stderr).
//! A bed that cannot run (not root, no overlayfs, ...) PANICS: it never skips.
//!
//! Only std + `tempfile`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Prefix of every temporary directory the bed (and its tests) create under
/// the host's temp dir; host-cleanliness checks ignore exactly these.
pub const TEMP_PREFIX: &str = "credloader-testbed.";

/// The environment commands run with inside the bed (same as `testbed.sh exec`).
const INSIDE_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
    ("SYSTEMD_PAGER", "cat"),
    ("SYSTEMD_COLORS", "0"),
];

/// Picks the Debian release every bed boots unless a test says otherwise
/// (`host`, `debian12`, `debian13`, `testing`; see `tests/testbed/image.sh`):
/// `make test` runs the e2e suites once as they are and once more with this
/// set to `debian13`, with no change in the tests themselves.
pub const RELEASE_ENV: &str = "CREDLOADER_TESTBED_RELEASE";

/// The release beds boot by default: `$CREDLOADER_TESTBED_RELEASE`, else the
/// host's own root.
pub fn default_release() -> String {
    std::env::var(RELEASE_ENV)
        .ok()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "host".to_string())
}

/// Path of `tests/testbed/testbed.sh` in this repository.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/testbed.sh")
}

/// A temporary directory on the host named with [`TEMP_PREFIX`] (use it for
/// throwaway secrets and sealed files, so host-cleanliness checks ignore it).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempdir()
        .expect("create a temporary directory")
}

/// A throwaway host secret for `systemd-creds` (never the host's own):
/// `SYSTEMD_CREDENTIAL_SECRET` for sealing here and for a bed's
/// [`Builder::credential_secret`]. Gone with the returned directory.
pub fn throwaway_secret() -> (tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    let secret = dir.path().join("credential.secret");
    let out = Command::new("systemd-creds")
        .arg("setup")
        .env("SYSTEMD_CREDENTIAL_SECRET", &secret)
        .output()
        .expect("systemd-creds is installed");
    assert!(out.status.success(), "systemd-creds setup: {out:?}");
    (dir, secret)
}

/// Options for [`TestBed`]; `TestBed::builder().credential_secret(p).boot()`.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    release: Option<String>,
    credential_secret: Option<PathBuf>,
    unmask: Vec<String>,
    boot_timeout: Option<Duration>,
}

impl Builder {
    /// Boot this Debian release instead of [`default_release`] (its root is
    /// built under `target/testbed-roots/` on first use, ~90 s).
    pub fn release(mut self, release: &str) -> Self {
        self.release = Some(release.to_string());
        self
    }

    /// Install this host file as `/var/lib/systemd/credential.secret` inside
    /// (mode 0400, one link) before boot. Make it with
    /// `SYSTEMD_CREDENTIAL_SECRET=/tmp/x/secret systemd-creds setup`, never use
    /// the host's own secret.
    pub fn credential_secret(mut self, path: &Path) -> Self {
        self.credential_secret = Some(path.to_path_buf());
        self
    }

    /// Keep a unit the bed masks by default (e.g. `dbus.socket`) unmasked.
    pub fn unmask(mut self, unit: &str) -> Self {
        self.unmask.push(unit.to_string());
        self
    }

    /// How long boot may take before the test fails (default 30 s).
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = Some(timeout);
        self
    }

    /// Boot the bed; panics with the reason and the console log on failure.
    pub fn boot(self) -> TestBed {
        preflight();
        let state = tempdir();
        let mut cmd = Command::new(script_path());
        cmd.arg("start").arg(state.path());
        cmd.env_remove("TESTBED_CREDENTIAL_SECRET")
            .env_remove("TESTBED_UNMASK");
        let release = self.release.clone().unwrap_or_else(default_release);
        cmd.env("TESTBED_RELEASE", &release);
        // If this test binary dies without running destructors, the bed stops itself.
        cmd.env("TESTBED_OWNER_PID", std::process::id().to_string());
        if let Some(secret) = &self.credential_secret {
            cmd.env("TESTBED_CREDENTIAL_SECRET", secret);
        }
        if !self.unmask.is_empty() {
            cmd.env("TESTBED_UNMASK", self.unmask.join(" "));
        }
        if let Some(t) = self.boot_timeout {
            cmd.env("TESTBED_BOOT_TIMEOUT", t.as_secs().max(1).to_string());
        }
        let started = Instant::now();
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("testbed: cannot run {}: {e}", script_path().display()));
        if !out.status.success() {
            // testbed.sh has already stopped the bed and printed the console log.
            panic!(
                "testbed: boot failed ({}) after {:.1?}\n{}{}",
                out.status,
                started.elapsed(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pid: u32 = stdout
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("testbed: start printed no pid: {stdout:?}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            // e.g. "booted DEGRADED; failed units: ..."
            eprintln!("{stderr}");
        }
        let cgroup_name = fs::read_to_string(state.path().join("cgroup"))
            .ok()
            .and_then(|p| {
                Some(
                    Path::new(p.trim())
                        .file_name()?
                        .to_string_lossy()
                        .into_owned(),
                )
            })
            .unwrap_or_else(|| panic!("testbed: start wrote no STATE_DIR/cgroup"));
        TestBed {
            state: Some(state),
            pid,
            cgroup_name,
            boot_time: started.elapsed(),
            release,
            systemd_version: std::sync::OnceLock::new(),
        }
    }
}

fn preflight() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("?");
    if euid != "0" {
        panic!(
            "testbed: the systemd test bed needs root (euid is {euid}): it creates \
             namespaces, mounts and cgroups. Run the e2e tests as root."
        );
    }
    let fss = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fss
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        panic!("testbed: overlayfs is not available (not in /proc/filesystems; modprobe overlay?)");
    }
    if !Path::new("/lib/systemd/systemd").exists() {
        panic!("testbed: /lib/systemd/systemd is missing: install systemd");
    }
    if !script_path().exists() {
        panic!("testbed: {} is missing", script_path().display());
    }
}

/// A running bed. Dropping it powers it off and cleans up.
pub struct TestBed {
    state: Option<tempfile::TempDir>,
    pid: u32,
    /// Unique name of the bed's cgroup dir: proves `pid` is still the bed's.
    cgroup_name: String,
    boot_time: Duration,
    release: String,
    systemd_version: std::sync::OnceLock<u32>,
}

impl TestBed {
    /// Boot a bed with default options.
    pub fn boot() -> TestBed {
        Builder::default().boot()
    }

    /// Boot a bed whose `/var/lib/systemd/credential.secret` is a copy of `secret`.
    pub fn boot_with_secret(secret: &Path) -> TestBed {
        Builder::default().credential_secret(secret).boot()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The release this bed booted (`host`, `debian13`, ...).
    pub fn release(&self) -> &str {
        &self.release
    }

    /// The major version of the systemd running as the bed's PID 1 (252 on
    /// Debian 12, 257 on Debian 13), for the few assertions that differ.
    pub fn systemd_version(&self) -> u32 {
        *self.systemd_version.get_or_init(|| {
            let out = self.sh_ok("systemctl --version");
            out.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("testbed: no version in {out:?}"))
        })
    }

    /// Host PID of the bed's PID 1.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How long `start` took (until `is-system-running` said running).
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// STATE_DIR on the host (holds `pid`, `cgroup`, `console.log`).
    pub fn state_dir(&self) -> &Path {
        self.state.as_ref().expect("bed is stopped").path()
    }

    /// Host path of the bed's cgroup2 directory.
    pub fn cgroup_dir(&self) -> PathBuf {
        PathBuf::from(
            fs::read_to_string(self.state_dir().join("cgroup"))
                .expect("read STATE_DIR/cgroup")
                .trim(),
        )
    }

    /// Everything PID 1 printed on its console so far.
    pub fn console_log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.state_dir().join("console.log")).unwrap_or_default())
            .into_owned()
    }

    /// Host path of the bed's root (`/proc/PID/root`); writes land in the bed's tmpfs.
    pub fn root(&self) -> PathBuf {
        self.assert_alive();
        PathBuf::from(format!("/proc/{}/root", self.pid))
    }

    /// True while the bed's PID 1 runs (checked by its cgroup, not just its PID).
    pub fn is_alive(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/cgroup", self.pid))
            .map(|c| {
                c.lines()
                    .filter_map(|l| l.strip_prefix("0::"))
                    .any(|p| p.split('/').any(|c| c == self.cgroup_name))
            })
            .unwrap_or(false)
    }

    /// Every way into the bed goes through its PID: if PID 1 died (and the PID
    /// was recycled), `/proc/PID/root` or `nsenter -t PID` would be the HOST.
    fn assert_alive(&self) {
        if self.state.is_some() && !self.is_alive() {
            panic!(
                "testbed: the bed's PID 1 ({}) is gone (crashed or powered off)\n{}",
                self.pid,
                tail(&self.console_log(), 80)
            );
        }
        assert!(self.state.is_some(), "testbed: the bed was stopped");
    }

    /// Host path of `inside` (an absolute path inside the bed). Symlinks on the
    /// way are resolved WITHIN the bed's root, so the result never points back
    /// into the host (a plain `/proc/PID/root/var/run/x` would follow
    /// `/var/run -> /run` to the HOST's /run). A missing tail is kept as is.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.resolve(inside, true)
    }

    fn resolve(&self, inside: &str, follow_last: bool) -> PathBuf {
        assert!(
            inside.starts_with('/'),
            "testbed: path inside must be absolute: {inside:?}"
        );
        let root = self.root();
        // `pending` holds components still to walk, last one on top.
        let mut pending: Vec<std::ffi::OsString> = Path::new(inside)
            .components()
            .rev()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let mut cur: Vec<std::ffi::OsString> = Vec::new();
        let mut links = 0;
        while let Some(comp) = pending.pop() {
            if comp == ".." {
                cur.pop();
                continue;
            }
            let is_last = pending.is_empty();
            let mut candidate = root.clone();
            candidate.extend(cur.iter());
            candidate.push(&comp);
            if is_last && !follow_last {
                cur.push(comp);
                break;
            }
            match fs::symlink_metadata(&candidate) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    assert!(
                        links < 40,
                        "testbed: too many symlinks resolving {inside:?}"
                    );
                    let target = fs::read_link(&candidate).expect("read_link");
                    if target.is_absolute() {
                        cur.clear();
                    }
                    for c in target.components().rev() {
                        match c {
                            Component::Normal(n) => pending.push(n.to_os_string()),
                            Component::ParentDir => pending.push("..".into()),
                            _ => {}
                        }
                    }
                }
                _ => cur.push(comp),
            }
        }
        let mut p = root;
        p.extend(cur.iter());
        p
    }

    /// Write `contents` to `inside` with `mode` (parents created, owner root).
    /// An existing file is replaced (unlinked, then created anew).
    pub fn write(&self, inside: &str, contents: &[u8], mode: u32) {
        let path = self.path(inside);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| {
                panic!("testbed: mkdir -p {} (for {inside}): {e}", parent.display())
            });
        }
        // Write to a fresh file so the mode applies before any content is visible.
        let _ = fs::remove_file(&path);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("testbed: create {inside}: {e}"));
        f.set_permissions(fs::Permissions::from_mode(mode))
            .expect("chmod");
        f.write_all(contents)
            .unwrap_or_else(|e| panic!("testbed: write {inside}: {e}"));
    }

    /// Copy a host file to `inside` with `mode`.
    pub fn copy_in(&self, host: &Path, inside: &str, mode: u32) {
        let data =
            fs::read(host).unwrap_or_else(|e| panic!("testbed: read {}: {e}", host.display()));
        self.write(inside, &data, mode);
    }

    /// Contents of `inside`, or None if it cannot be read.
    pub fn read(&self, inside: &str) -> Option<Vec<u8>> {
        fs::read(self.path(inside)).ok()
    }

    /// Run `argv` inside the bed (all its namespaces, its root, a clean env).
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Output {
        self.exec_with_stdin(argv, &[])
    }

    /// The command that runs `argv` inside the bed, as [`exec`](Self::exec)
    /// does, for a caller that drives the child itself (types at a prompt
    /// once it shows, say).
    pub fn command<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        assert!(!argv.is_empty(), "testbed: exec needs a command");
        self.assert_alive();
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.pid.to_string())
            .arg("-a")
            .arg("--")
            .arg("env")
            .arg("-i");
        for (k, v) in INSIDE_ENV {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(argv);
        cmd
    }

    /// Like [`exec`](Self::exec), feeding `stdin` to the command.
    pub fn exec_with_stdin<S: AsRef<OsStr>>(&self, argv: &[S], stdin: &[u8]) -> Output {
        let mut cmd = self.command(argv);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("testbed: spawn nsenter");
        {
            let mut sin = child.stdin.take().unwrap();
            if !stdin.is_empty() {
                // A command that does not read its stdin is not an error.
                let _ = sin.write_all(stdin);
            }
        }
        child.wait_with_output().expect("testbed: wait for nsenter")
    }

    /// `/bin/sh -c script` inside the bed.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// `sh`, panicking (with stdout/stderr) unless it exits 0; returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        if !out.status.success() {
            panic!(
                "testbed: `{script}` failed ({})\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl ARGS...` inside the bed.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut argv = vec!["systemctl"];
        argv.extend_from_slice(args);
        self.exec(&argv)
    }

    /// `systemctl ARGS...`, panicking (with the unit journal hint) unless it exits 0.
    pub fn systemctl_ok(&self, args: &[&str]) {
        let out = self.systemctl(args);
        if !out.status.success() {
            panic!(
                "testbed: `systemctl {}` failed ({})\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// `systemctl daemon-reload`.
    pub fn daemon_reload(&self) {
        self.systemctl_ok(&["daemon-reload"]);
    }

    /// The unit's journal of this boot (`journalctl -b -u UNIT`), after a sync.
    pub fn journal(&self, unit: &str) -> String {
        let _ = self.exec(&["journalctl", "--sync"]);
        let out = self.exec(&[
            "journalctl",
            "-b",
            "--no-pager",
            "-o",
            "short-precise",
            "-u",
            unit,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show -P PROP UNIT` (empty string if unknown).
    pub fn unit_property(&self, unit: &str, prop: &str) -> String {
        let out = self.systemctl(&["show", "-P", prop, "--", unit]);
        String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string()
    }

    /// The unit's main PID as seen inside the bed, None if it has none.
    pub fn main_pid(&self, unit: &str) -> Option<u32> {
        match self.unit_property(unit, "MainPID").trim().parse() {
            Ok(0) | Err(_) => None,
            Ok(pid) => Some(pid),
        }
    }

    /// The environment of the unit's main process (`/proc/<MainPID>/environ`
    /// inside), values as raw bytes. Panics if the unit has no main process.
    ///
    /// A `Type=simple` start returns once PID 1 has forked; until the child
    /// has exec'd the service's binary, its environ is PID 1's own (on 257
    /// and later the child is `systemd-executor` for a noticeable while). So
    /// this waits (up to 10 s) for the service's environment, which always
    /// holds the `INVOCATION_ID` systemd sets and PID 1's never does.
    pub fn environ(&self, unit: &str) -> BTreeMap<String, Vec<u8>> {
        let pid = self.main_pid(unit).unwrap_or_else(|| {
            panic!(
                "testbed: {unit} has no main process\n{}",
                self.journal(unit)
            )
        });
        let path = self.root().join(format!("proc/{pid}/environ"));
        let mut raw = Vec::new();
        self.wait_until(
            &format!("{unit} (pid {pid}) to exec with its environment"),
            Duration::from_secs(10),
            || {
                raw = fs::read(&path).unwrap_or_default();
                raw.split(|b| *b == 0)
                    .any(|kv| kv.starts_with(b"INVOCATION_ID="))
            },
        );
        raw.split(|b| *b == 0)
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.iter().position(|b| *b == b'=') {
                Some(i) => (
                    String::from_utf8_lossy(&kv[..i]).into_owned(),
                    kv[i + 1..].to_vec(),
                ),
                None => (String::from_utf8_lossy(kv).into_owned(), Vec::new()),
            })
            .collect()
    }

    /// Poll `cond` every 20 ms until it returns true; panic after `timeout`
    /// naming `what`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond() {
                return;
            }
            if Instant::now() >= deadline {
                panic!("testbed: timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Create a system user (and its group) inside the bed; returns its uid.
    pub fn add_user(&self, name: &str) -> u32 {
        self.sh_ok(&format!(
            "useradd --system --no-create-home --shell /usr/sbin/nologin {name}"
        ));
        self.sh_ok(&format!("id -u {name}"))
            .trim()
            .parse()
            .expect("uid")
    }

    /// Install the credloader binary (pass `env!("CARGO_BIN_EXE_credloader")`)
    /// as /usr/bin/credloader, its generator symlink
    /// /etc/systemd/system-generators/credloader-generator, and everything
    /// under the repo's `units/` (if it exists) into /etc/systemd/system;
    /// then daemon-reload.
    pub fn install_credloader(&self, binary: &Path) {
        self.copy_in(binary, "/usr/bin/credloader", 0o755);
        self.sh_ok(
            "mkdir -p /etc/systemd/system-generators && \
             ln -sfn /usr/bin/credloader /etc/systemd/system-generators/credloader-generator",
        );
        let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
        if units.is_dir() {
            self.install_tree(&units, "/etc/systemd/system");
        }
        self.daemon_reload();
    }

    fn install_tree(&self, host_dir: &Path, inside_dir: &str) {
        let mut entries: Vec<_> = fs::read_dir(host_dir)
            .unwrap_or_else(|e| panic!("testbed: read {}: {e}", host_dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let inside = format!("{inside_dir}/{name}");
            if p.is_dir() {
                self.install_tree(&p, &inside);
            } else if p.is_file() {
                self.copy_in(&p, &inside, 0o644);
            }
        }
    }

    /// Power the bed off and clean up now (Drop does this too).
    pub fn stop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let out = Command::new(script_path())
            .arg("stop")
            .arg(state.path())
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "testbed: stop failed ({}): {}{}\n(state kept at {})",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                state.keep().display()
            ),
            Err(e) => eprintln!("testbed: cannot run testbed.sh stop: {e}"),
        }
        // `state` (the TempDir) is removed here unless kept above.
    }

    fn dump_for_failure(&self) {
        const LINES: usize = 80;
        eprintln!(
            "==== testbed {} console log (last {LINES} lines) ====\n{}",
            self.pid,
            tail(&self.console_log(), LINES)
        );
        if !self.is_alive() {
            eprintln!("==== testbed {}: PID 1 is gone, no journal ====", self.pid);
            return;
        }
        let _ = self.exec(&["journalctl", "--sync"]);
        let j = self.exec(&["journalctl", "-b", "--no-pager", "-o", "short-precise"]);
        eprintln!(
            "==== testbed {} journalctl -b (last {} lines) ====\n{}\n==== end of testbed {} ====",
            self.pid,
            LINES * 2,
            tail(&String::from_utf8_lossy(&j.stdout), LINES * 2),
            self.pid
        );
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        if self.state.is_some() && std::thread::panicking() {
            self.dump_for_failure();
        }
        self.stop();
    }
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Bytes as text for assertion messages.
pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
