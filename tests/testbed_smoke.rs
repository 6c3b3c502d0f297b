//! Tests of the systemd test bed itself (tests/testbed/testbed.sh and
//! tests/support/testbed.rs). Each test boots its own bed; they run in parallel.
//! They need root: without it they FAIL (the bed never skips).

#[path = "support/testbed.rs"]
mod testbed;

use std::collections::BTreeMap;
use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::{lossy, tempdir, TestBed, TEMP_PREFIX};

/// Cgroup dirs of beds are named like this (testbed.sh).
const CGROUP_PREFIX: &str = "credloader-testbed-";

/// What a bed must leave exactly as it found it on the host. Entries that belong
/// to OTHER beds running concurrently (their temp dirs, their cgroup dirs) are
/// left out so that tests can run in parallel.
#[derive(Debug)]
struct HostSnapshot {
    mounts: Vec<String>,
    etc: Vec<String>,
    run: Vec<String>,
    var_lib_systemd: Vec<String>,
    tmp: TmpListing,
    var_tmp: TmpListing,
    cgroups: Vec<String>,
}

/// Entries of a shared temp dir with their mtimes. Other processes on the host
/// come and go in /tmp while a test runs, so the comparison is: every entry that
/// was older than a minute must still be there (a tmpfiles wipe would remove
/// them all), and nothing new may appear except our own temp dirs and the names
/// in TESTBED_TMP_IGNORE (space-separated prefixes; default: `bash_tool_`, the
/// command runner of the sandbox this was developed in).
#[derive(Debug)]
struct TmpListing {
    dir: PathBuf,
    taken_at: i64,
    entries: BTreeMap<String, i64>,
}

impl TmpListing {
    fn take(dir: &Path) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let entries = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| {
                let mtime = e.metadata().map(|m| m.mtime()).unwrap_or(now);
                (e.file_name().to_string_lossy().into_owned(), mtime)
            })
            .filter(|(n, _)| !n.starts_with(TEMP_PREFIX))
            .collect();
        TmpListing {
            dir: dir.to_path_buf(),
            taken_at: now,
            entries,
        }
    }

    fn diff(&self, after: &TmpListing) -> String {
        let ignore = std::env::var("TESTBED_TMP_IGNORE").unwrap_or_else(|_| "bash_tool_".into());
        let ignored = |n: &str| ignore.split_whitespace().any(|p| n.starts_with(p));
        let gone: Vec<_> = self
            .entries
            .iter()
            .filter(|(n, m)| self.taken_at - **m > 60 && !after.entries.contains_key(*n))
            .map(|(n, _)| n)
            .collect();
        let new: Vec<_> = after
            .entries
            .keys()
            .filter(|n| !self.entries.contains_key(*n) && !ignored(n))
            .collect();
        if gone.is_empty() && new.is_empty() {
            String::new()
        } else {
            let d = self.dir.display();
            format!("{d}: gone {gone:#?}\n{d}: new {new:#?}\n")
        }
    }
}

/// A file in the host's temp dir, back-dated 40 days (a prime target for a
/// tmpfiles clean or wipe): it must survive the bed untouched.
struct Canary(tempfile::NamedTempFile, std::time::SystemTime);

impl Canary {
    fn plant() -> Self {
        let f = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile()
            .unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(40 * 86400);
        f.as_file().set_modified(old).unwrap();
        Canary(f, old)
    }

    fn check(&self) {
        let m = fs::metadata(self.0.path())
            .unwrap_or_else(|e| panic!("canary {} is gone: {e}", self.0.path().display()));
        assert_eq!(m.modified().unwrap(), self.1, "canary was touched");
    }
}

fn cgroup2_mount() -> PathBuf {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            (f.get(sep + 1) == Some(&"cgroup2")).then(|| PathBuf::from(f[4]))
        })
        .expect("a cgroup2 mount")
}

/// Recursive listing (no symlink following): path, type, mode, owner, size,
/// mtime, content hash of regular files, target of symlinks.
fn tree(root: &Path) -> Vec<String> {
    fn walk(p: &Path, out: &mut Vec<String>) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        let ft = m.file_type();
        let extra = if ft.is_symlink() {
            fs::read_link(p)
                .map(|t| t.display().to_string())
                .unwrap_or_default()
        } else if ft.is_file() {
            let mut h = DefaultHasher::new();
            h.write(&fs::read(p).unwrap_or_default());
            format!("{:016x}", h.finish())
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {}:{} {} {}.{} {}",
            p.display(),
            m.mode(),
            m.uid(),
            m.gid(),
            if ft.is_dir() { 0 } else { m.size() },
            m.mtime(),
            m.mtime_nsec(),
            extra
        ));
        if ft.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                let mut kids: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                kids.sort();
                for k in kids {
                    walk(&k, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

fn names_except(dir: &Path, skip_prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(skip_prefix))
        .collect();
    v.sort();
    v
}

impl HostSnapshot {
    fn take() -> Self {
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                // mount point, source device, fs type (after the " - ")
                let sep = f.iter().position(|x| *x == "-").unwrap();
                format!("{} {} {}", f[4], f[2], f[sep + 1])
            })
            .collect();
        mounts.sort();
        HostSnapshot {
            mounts,
            etc: tree(Path::new("/etc")),
            run: tree(Path::new("/run")),
            var_lib_systemd: tree(Path::new("/var/lib/systemd")),
            tmp: TmpListing::take(&std::env::temp_dir()),
            var_tmp: TmpListing::take(Path::new("/var/tmp")),
            cgroups: names_except(&cgroup2_mount(), CGROUP_PREFIX),
        }
    }

    fn assert_same(&self, after: &HostSnapshot) {
        fn diff(what: &str, a: &[String], b: &[String]) -> String {
            let gone: Vec<_> = a.iter().filter(|x| !b.contains(x)).collect();
            let new: Vec<_> = b.iter().filter(|x| !a.contains(x)).collect();
            if gone.is_empty() && new.is_empty() {
                String::new()
            } else {
                format!("{what}: gone {gone:#?}\n{what}: new {new:#?}\n")
            }
        }
        let report = [
            diff("mounts", &self.mounts, &after.mounts),
            diff("/etc", &self.etc, &after.etc),
            diff("/run", &self.run, &after.run),
            diff(
                "/var/lib/systemd",
                &self.var_lib_systemd,
                &after.var_lib_systemd,
            ),
            self.tmp.diff(&after.tmp),
            self.var_tmp.diff(&after.var_tmp),
            diff("cgroups", &self.cgroups, &after.cgroups),
        ]
        .concat();
        assert!(report.is_empty(), "the host changed:\n{report}");
    }
}

fn unit_file(body: &str) -> Vec<u8> {
    format!("[Unit]\nDescription=testbed smoke\n\n[Service]\n{body}").into_bytes()
}

/// (a) boots, reaches running, and leaves the host exactly as it was.
#[test]
fn boots_and_leaves_the_host_unchanged() {
    let canary = Canary::plant();
    let before = HostSnapshot::take();
    let issue_net_existed = Path::new("/etc/issue.net").exists();

    let t0 = Instant::now();
    let bed = TestBed::boot();
    eprintln!("boot took {:?}", t0.elapsed());
    assert_eq!(
        lossy(&bed.systemctl(&["is-system-running"]).stdout).trim(),
        "running"
    );
    assert_eq!(
        fs::read_to_string(format!("/proc/{}/comm", bed.pid()))
            .unwrap()
            .trim(),
        "systemd"
    );
    assert_eq!(
        bed.sh_ok("cat /proc/1/comm; hostname"),
        "systemd\ntestbed\n"
    );
    assert!(
        bed.console_log().contains("Reached target"),
        "{}",
        bed.console_log()
    );
    let cgroup = bed.cgroup_dir();
    let state = bed.state_dir().to_path_buf();
    assert!(cgroup.is_dir());
    assert!(
        bed.read("/etc/os-release").is_some(),
        "the bed's root is an overlay of /"
    );

    // Writes inside, by every route, stay inside.
    bed.sh_ok(
        "echo canary > /etc/testbed-canary && useradd --system canaryuser && \
         mkdir -p /var/lib/systemd/canary && echo x > /tmp/canary && \
         rm -f /etc/issue.net && systemd-tmpfiles --create --remove --boot",
    );
    bed.write("/run/testbed-canary", b"x", 0o644);
    bed.write("/var/run/testbed-canary2", b"x", 0o644); // /var/run -> /run, inside
    assert_eq!(bed.read("/run/testbed-canary2").as_deref(), Some(&b"x"[..]));
    assert!(!Path::new("/etc/testbed-canary").exists());
    assert!(!Path::new("/run/testbed-canary2").exists());
    assert_eq!(Path::new("/etc/issue.net").exists(), issue_net_existed);
    assert!(!fs::read_to_string("/etc/passwd")
        .unwrap()
        .contains("canaryuser"));

    drop(bed);
    assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
    assert!(!state.exists(), "state dir {} left behind", state.display());
    HostSnapshot::take().assert_same(&before);
    canary.check();
}

/// (b) a User= service created inside the bed gets exactly its EnvironmentFile=.
#[test]
fn user_service_gets_exactly_its_environment_file() {
    let bed = TestBed::boot();
    let uid = bed.add_user("envtest");
    assert!(!fs::read_to_string("/etc/passwd")
        .unwrap()
        .contains("envtest"));

    let env_file: &[u8] = b"# comment\nPLAIN=value\nSPACED=  trimmed  \n\
        QUOTED=\"a \\\"b\\\" \\$HOME \\\\ `x` 'y'\"\nUTF8=h\xc3\xa9llo\nEMPTY=\nLAST=1\nLAST=2\n";
    bed.write("/etc/envtest/app.env", env_file, 0o600);
    let common = "User=envtest\nExecStart=/bin/sleep infinity\n";
    bed.write(
        "/etc/systemd/system/envtest.service",
        &unit_file(&format!("{common}EnvironmentFile=/etc/envtest/app.env\n")),
        0o644,
    );
    bed.write(
        "/etc/systemd/system/envref.service",
        &unit_file(common),
        0o644,
    );
    bed.daemon_reload();
    bed.systemctl_ok(&["start", "envtest.service", "envref.service"]);

    let with = bed.environ("envtest.service");
    let reference = bed.environ("envref.service");
    // What systemd adds on its own is the same in both, bar per-unit values
    // (MEMORY_PRESSURE_WATCH names the unit's cgroup: systemd 254 and later).
    let per_unit = [
        "INVOCATION_ID",
        "JOURNAL_STREAM",
        "SYSTEMD_EXEC_PID",
        "MEMORY_PRESSURE_WATCH",
    ];
    let mut from_file: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in &with {
        match reference.get(k) {
            Some(rv) if per_unit.contains(&k.as_str()) || rv == v => {}
            _ => {
                from_file.insert(k.clone(), v.clone());
            }
        }
    }
    let expected: BTreeMap<String, Vec<u8>> = [
        ("PLAIN", &b"value"[..]),
        ("SPACED", b"trimmed"),
        ("QUOTED", b"a \"b\" $HOME \\ `x` 'y'"),
        ("UTF8", b"h\xc3\xa9llo"),
        ("EMPTY", b""),
        ("LAST", b"2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_vec()))
    .collect();
    assert_eq!(from_file, expected, "environ: {with:?}");
    assert_eq!(with.get("USER").map(|v| lossy(v)), Some("envtest".into()));

    let pid = bed.main_pid("envtest.service").unwrap();
    let status = lossy(&bed.read(&format!("/proc/{pid}/status")).unwrap());
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == uid.to_string()),
        "{uid_line}"
    );
    assert_eq!(
        bed.unit_property("envtest.service", "ActiveState"),
        "active"
    );
    assert!(bed
        .journal("envtest.service")
        .contains("Started envtest.service"));
}

/// (c) LoadCredentialEncrypted= for a User= service, sealed on the host with a
/// throwaway secret (never the host's own).
#[test]
fn user_service_decrypts_a_credential_sealed_on_the_host() {
    let host_secret_before = tree(Path::new("/var/lib/systemd"));
    let dir = tempdir();
    let secret = dir.path().join("credential.secret");
    let cred = dir.path().join("dbpass.cred");
    let plaintext: &[u8] = b"s3cr3t \"value\"\nsecond line\x01\xff";

    let st = Command::new("systemd-creds")
        .arg("setup")
        .env("SYSTEMD_CREDENTIAL_SECRET", &secret)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("systemd-creds setup");
    assert!(
        st.success() && secret.exists(),
        "systemd-creds setup failed"
    );
    let mut child = Command::new("systemd-creds")
        .args(["encrypt", "--with-key=host", "--name=dbpass", "-"])
        .arg(&cred)
        .env("SYSTEMD_CREDENTIAL_SECRET", &secret)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-creds encrypt");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), plaintext).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "encrypt: {}", lossy(&out.stderr));

    let bed = TestBed::boot_with_secret(&secret);
    let meta = fs::metadata(bed.path("/var/lib/systemd/credential.secret")).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.nlink()), (0o400, 1));
    bed.add_user("credtest");
    bed.copy_in(&cred, "/etc/credtest/dbpass.cred", 0o600);
    bed.write(
        "/etc/systemd/system/credtest.service",
        &unit_file(
            "Type=oneshot\nUser=credtest\nStateDirectory=credtest\n\
             LoadCredentialEncrypted=dbpass:/etc/credtest/dbpass.cred\n\
             ExecStart=/bin/sh -c 'cat \"$CREDENTIALS_DIRECTORY/dbpass\" > /var/lib/credtest/value && \
             stat -c \"%%U %%a\" \"$CREDENTIALS_DIRECTORY\" \"$CREDENTIALS_DIRECTORY/dbpass\" > /var/lib/credtest/stat'\n",
        ),
        0o644,
    );
    bed.daemon_reload();
    let out = bed.systemctl(&["start", "credtest.service"]);
    assert!(
        out.status.success(),
        "start failed: {}\n{}",
        lossy(&out.stderr),
        bed.journal("credtest.service")
    );
    assert_eq!(
        bed.read("/var/lib/credtest/value").as_deref(),
        Some(plaintext)
    );
    // Only the service's user may read it. systemd 252 hands the directory
    // and file to that user; 257 keeps them root's (0550/0440) and grants the
    // user read access with an ACL (the `cat` above ran as credtest).
    let expected = if bed.systemd_version() >= 257 {
        "root 550\nroot 440\n"
    } else {
        "credtest 500\ncredtest 400\n"
    };
    assert_eq!(
        lossy(&bed.read("/var/lib/credtest/stat").unwrap()),
        expected
    );
    drop(bed);
    assert_eq!(tree(Path::new("/var/lib/systemd")), host_secret_before);
}

/// (d) two beds side by side, booted concurrently, isolated from each other.
#[test]
fn two_beds_side_by_side() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(TestBed::boot);
        let b = s.spawn(TestBed::boot);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.pid(), b.pid());
    assert_ne!(a.cgroup_dir(), b.cgroup_dir());
    a.write("/etc/which-bed", b"a", 0o644);
    b.write("/etc/which-bed", b"b", 0o644);
    assert_eq!(a.sh_ok("cat /etc/which-bed"), "a");
    assert_eq!(b.sh_ok("cat /etc/which-bed"), "b");
    for (bed, secs) in [(&a, "1001"), (&b, "1002")] {
        let out = bed.exec(&[
            "systemd-run",
            "--unit=side.service",
            // Returns once sleep runs: before its exec the process is systemd's.
            "--service-type=exec",
            "/bin/sleep",
            secs,
        ]);
        assert!(out.status.success(), "{}", lossy(&out.stderr));
    }
    // Each bed sees only its own processes.
    let cmdlines = |bed: &TestBed| bed.sh_ok("cat /proc/[0-9]*/cmdline | tr '\\0' ' '");
    let (ca, cb) = (cmdlines(&a), cmdlines(&b));
    assert!(
        ca.contains("sleep 1001") && !ca.contains("sleep 1002"),
        "{ca}"
    );
    assert!(
        cb.contains("sleep 1002") && !cb.contains("sleep 1001"),
        "{cb}"
    );

    let b_cgroup = b.cgroup_dir();
    let a_cgroup = a.cgroup_dir();
    drop(a);
    assert!(!a_cgroup.exists());
    assert_eq!(
        lossy(&b.systemctl(&["is-system-running"]).stdout).trim(),
        "running"
    );
    assert_eq!(b.unit_property("side.service", "ActiveState"), "active");
    drop(b);
    assert!(!b_cgroup.exists());
}

/// A test that panics mid-way still powers its bed off and leaves the host as it was.
#[test]
fn a_panicking_test_leaves_the_host_unchanged() {
    let canary = Canary::plant();
    let before = HostSnapshot::take();
    let mut seen: Option<(PathBuf, PathBuf)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let bed = TestBed::boot();
        seen = Some((bed.cgroup_dir(), bed.state_dir().to_path_buf()));
        bed.sh_ok("useradd --system doomed && echo x > /etc/doomed");
        let out = bed.exec(&[
            "systemd-run",
            "--unit=doomed.service",
            "-p",
            "User=doomed",
            "/bin/sleep",
            "infinity",
        ]);
        assert!(out.status.success(), "{}", lossy(&out.stderr));
        bed.wait_until("doomed.service to run", Duration::from_secs(5), || {
            bed.main_pid("doomed.service").is_some()
        });
        panic!("deliberate panic with a live bed");
    }));
    assert!(result.is_err());
    let (cgroup, state) = seen.expect("the bed booted");
    assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
    assert!(!state.exists(), "state dir {} left behind", state.display());
    HostSnapshot::take().assert_same(&before);
    canary.check();
}

/// The host path of a file inside never escapes the bed through a symlink.
#[test]
fn paths_resolve_inside_the_bed() {
    let bed = TestBed::boot();
    bed.sh_ok(
        "mkdir -p /srv/t && ln -s /etc/hostname /srv/t/abs && ln -s ../../etc/hostname /srv/t/rel \
               && ln -s /../../../run /srv/t/up",
    );
    let root = bed.root();
    assert_eq!(bed.path("/srv/t/abs"), root.join("etc/hostname"));
    assert_eq!(bed.path("/srv/t/rel"), root.join("etc/hostname"));
    assert_eq!(bed.path("/srv/t/up/x"), root.join("run/x"));
    assert_eq!(bed.read("/srv/t/abs").as_deref(), Some(&b"testbed\n"[..]));
}

/// install_credloader puts the freshly built binary (and units/, if any) in place.
#[test]
fn installs_the_built_credloader() {
    let bed = TestBed::boot();
    bed.install_credloader(env!("CARGO_BIN_EXE_credloader").as_ref());
    let meta = fs::metadata(bed.path("/usr/bin/credloader")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o755);
    assert_eq!(
        bed.read("/usr/bin/credloader").unwrap(),
        fs::read(env!("CARGO_BIN_EXE_credloader")).unwrap()
    );
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    if let Ok(rd) = fs::read_dir(&units) {
        for e in rd.flatten().filter(|e| e.path().is_file()) {
            let inside = format!("/etc/systemd/system/{}", e.file_name().to_string_lossy());
            assert_eq!(bed.read(&inside), fs::read(e.path()).ok(), "{inside}");
        }
    }
    // It runs inside (whatever it prints for --help as the CLI grows).
    let out = bed.exec(&["/usr/bin/credloader", "--help"]);
    assert!(
        !matches!(out.status.code(), Some(126 | 127) | None),
        "{out:?}"
    );
}

/// A bed whose PID 1 died is never entered by PID: that would be the host.
#[test]
fn a_dead_bed_is_not_entered() {
    let mut bed = TestBed::boot();
    assert!(bed.is_alive());
    let out = Command::new("kill")
        .args(["-KILL", &bed.pid().to_string()])
        .status()
        .unwrap();
    assert!(out.success());
    bed.wait_until("PID 1 to die", Duration::from_secs(5), || !bed.is_alive());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bed.sh("true")));
    assert!(r.is_err(), "exec into a dead bed must panic");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bed.path("/etc")));
    assert!(r.is_err(), "a path into a dead bed must panic");
    let cgroup = bed.cgroup_dir();
    bed.stop();
    assert!(!cgroup.exists());
}

/// The bed boots the release it was asked for ($CREDLOADER_TESTBED_RELEASE,
/// see tests/testbed/image.sh), with the host's machine id: a credential
/// secret made on the host is bound to it.
#[test]
fn boots_the_release_it_was_asked_for_with_the_hosts_machine_id() {
    let bed = TestBed::boot();
    let os = bed.sh_ok(". /etc/os-release && echo \"$VERSION_CODENAME\"");
    let host_os = lossy(
        &Command::new("sh")
            .args(["-c", ". /etc/os-release && echo \"$VERSION_CODENAME\""])
            .output()
            .unwrap()
            .stdout,
    );
    let version = bed.systemd_version();
    match bed.release() {
        "host" => assert_eq!(os, host_os),
        "debian12" => assert_eq!((os.trim(), version), ("bookworm", 252)),
        "debian13" => assert_eq!((os.trim(), version), ("trixie", 257)),
        "testing" => assert!(
            !["bookworm", "trixie"].contains(&os.trim()) && version >= 257,
            "testing booted {os} with systemd {version}"
        ),
        other => panic!("unknown release {other}"),
    }
    assert_eq!(
        bed.sh_ok("cat /etc/machine-id"),
        fs::read_to_string("/etc/machine-id").unwrap()
    );
    eprintln!(
        "booted {} ({}) with systemd {version} in {:?}",
        bed.release(),
        os.trim(),
        bed.boot_time()
    );
}
