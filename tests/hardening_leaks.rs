//! No leaks (issue 6): distinctive values are sealed; every command runs at
//! `-vvv`, plain and `--json`, on its success and its failure paths; none
//! of the values, nor any 8-byte fragment of one, may appear in stdout,
//! stderr, the argv of any process on the machine while they run (a thread
//! samples every `/proc/*/cmdline` throughout), any file of the image except
//! the intended env files, or a core dump. The journal is checked in the
//! test bed, where `credloader.service` runs for real with a failing and a
//! succeeding consumer.

mod common;
#[path = "support/testbed.rs"]
mod testbed;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{Run, Tree, QT_UID};

const FRAGMENT: usize = 8;

/// A value nobody else would ever print: seeded, alphanumeric, 32 bytes.
fn distinctive(tag: &str, seed: &mut u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut s = String::from(tag);
    while s.len() < 32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        s.push(ALPHABET[(*seed % ALPHABET.len() as u64) as usize] as char);
    }
    s
}

/// Every `FRAGMENT`-byte window of every value.
struct Needles(Vec<String>);

impl Needles {
    fn new(values: &[&str]) -> Needles {
        let mut v = Vec::new();
        for value in values {
            let b = value.as_bytes();
            for w in b.windows(FRAGMENT) {
                v.push(String::from_utf8(w.to_vec()).unwrap());
            }
        }
        v.sort();
        v.dedup();
        Needles(v)
    }

    fn find(&self, hay: &[u8]) -> Option<&str> {
        self.0
            .iter()
            .find(|n| hay.windows(FRAGMENT).any(|w| w == n.as_bytes()))
            .map(String::as_str)
    }
}

/// Samples the argv of every process until stopped.
struct ArgvSampler {
    stop: Arc<AtomicBool>,
    found: Arc<Mutex<Vec<String>>>,
    samples: Arc<Mutex<usize>>,
    passes: Arc<Mutex<usize>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ArgvSampler {
    fn start(needles: Arc<Needles>) -> ArgvSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let found = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(0));
        let passes = Arc::new(Mutex::new(0));
        let p = passes.clone();
        let seen: Arc<Mutex<std::collections::BTreeSet<String>>> = Arc::default();
        let (s, f, n, seen2) = (stop.clone(), found.clone(), samples.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for e in std::fs::read_dir("/proc").unwrap().flatten() {
                    let name = e.file_name();
                    if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                        continue;
                    }
                    if let Ok(argv) = std::fs::read(e.path().join("cmdline")) {
                        if argv.windows(5).any(|w| w == b"-vvv\0") {
                            seen.lock()
                                .unwrap()
                                .insert(name.to_string_lossy().into_owned());
                        }
                        if let Some(hit) = needles.find(&argv) {
                            f.lock().unwrap().push(format!(
                                "pid {}: {:?} (fragment {hit})",
                                name.to_string_lossy(),
                                String::from_utf8_lossy(&argv)
                            ));
                        }
                    }
                }
                *n.lock().unwrap() = seen2.lock().unwrap().len();
                *p.lock().unwrap() += 1;
            }
        });
        ArgvSampler {
            stop,
            found,
            samples,
            passes,
            thread: Some(thread),
        }
    }

    /// (credloader processes caught, passes over /proc, values found in argv)
    fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let n = *self.samples.lock().unwrap();
        let p = *self.passes.lock().unwrap();
        (n, p, self.found.lock().unwrap().clone())
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(files_under(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

// The health check lingers so that every rotation and rollback keeps its
// credloader process alive long enough for the argv sampler to catch it,
// however fast the other commands are (a stamped no-op apply takes ~4 ms).
const HEALTH: &str =
    r#"sleep 0.3; case "$LEAK_A" in FAILME*) exit 1;; esac; test "$(id -u)" = 1500"#;

#[test]
fn no_value_leaks_from_any_command_at_any_verbosity() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let a1 = distinctive("LKa", &mut seed);
    let a2 = format!("FAILME{}", distinctive("", &mut seed));
    let a3 = distinctive("LKc", &mut seed);
    let b1 = distinctive("LKd", &mut seed);
    let n1 = distinctive("LKe", &mut seed);
    let legacy_key = distinctive("LKf", &mut seed);
    let legacy_secret = distinctive("LKg", &mut seed);
    let all = [
        a1.as_str(),
        a2.as_str(),
        a3.as_str(),
        b1.as_str(),
        n1.as_str(),
        legacy_key.as_str(),
        legacy_secret.as_str(),
    ];
    let needles = Arc::new(Needles::new(&all));

    let t = Tree::new();
    t.config(
        "alpha.toml",
        &format!(
            "[services.alpha]\nunit = \"alpha.service\"\nuser = \"qt\"\ncredentials = [\"LEAK_A\"]\n\
             env = {{ ALIAS = \"LEAK_A\" }}\nhealth_check = [\"/bin/sh\", \"-c\", '{HEALTH}']\nhealth_timeout_sec = 5\n"
        ),
    );
    t.config("beta.toml", &common::service("beta", "bot", &["LEAK_B"]));
    t.seal("LEAK_A", a1.as_bytes());
    t.seal("LEAK_B", b1.as_bytes());
    // The manual layout `import` migrates.
    let plain = "/etc/quantum/legacy/app.env";
    t.mkdir("/etc/quantum/legacy", 0o700);
    t.write(
        plain,
        format!("APP_KEY={legacy_key}\nAPP_SECRET='{legacy_secret}'\nMODE=x\n").as_bytes(),
        0o600,
    );
    t.write(
        "/etc/systemd/system/app.service",
        b"[Service]\nUser=qt\nExecStart=/bin/true\n",
        0o644,
    );

    let sampler = ArgvSampler::start(needles.clone());
    let mut runs: Vec<(String, Run)> = Vec::new();
    let mut go = |args: &[&str], stdin: Option<&[u8]>, expect: &[i32]| {
        for json in [false, true] {
            let mut argv = vec!["-vvv"];
            argv.extend_from_slice(args);
            if json {
                argv.push("--json");
            }
            let r = t.credloader_with_stdin(&argv, stdin);
            assert!(
                expect.contains(&r.code),
                "{argv:?}: exit {} not in {expect:?}: {r:#?}",
                r.code
            );
            runs.push((argv.join(" "), r));
        }
    };
    // Success paths.
    go(&["apply", "--dry-run"], None, &[0]);
    go(&["apply"], None, &[0]);
    go(&["apply", "--service", "alpha", "--no-restart"], None, &[0]);
    go(
        &["seal", "LEAK_N", "--key", "host"],
        Some(n1.as_bytes()),
        &[0, 2],
    );
    go(
        &["rotate", "LEAK_A", "--key", "host"],
        Some(a3.as_bytes()),
        &[0],
    );
    go(&["generations", "LEAK_A"], None, &[0]);
    go(&["rollback", "LEAK_A"], None, &[0]);
    go(&["list"], None, &[0]);
    go(&["show", "LEAK_A"], None, &[0]);
    go(&["status"], None, &[0]);
    go(&["check"], None, &[0, 1]);
    go(
        &[
            "import",
            "--env-file",
            plain,
            "--unit",
            "app.service",
            "--secret",
            "APP_KEY",
            "--secret",
            "APP_SECRET",
            "--static",
            "MODE",
            "--dry-run",
        ],
        None,
        &[0],
    );
    // Failure paths: a rotation whose health check fails and rolls back,
    // refusals, a tampered credential, a bad configuration, a bad import.
    go(
        &["rotate", "LEAK_A", "--key", "host"],
        Some(a2.as_bytes()),
        &[4],
    );
    go(&["seal", "LEAK_A"], Some(a2.as_bytes()), &[2]);
    go(
        &["rotate", "LEAK_A"],
        Some(format!("{a2}\0").as_bytes()),
        &[2],
    );
    go(&["rollback", "LEAK_A", "--to", "99"], None, &[2]);
    go(&["show", "NOPE"], None, &[1, 2]);
    let cred = "/etc/quantum/creds/LEAK_B.cred";
    let good = t.read(cred);
    let mut bad = good.clone();
    let i = bad.len() / 2;
    bad[i] ^= 0x01;
    t.write(cred, &bad, 0o600);
    go(&["apply"], None, &[1]);
    go(&["status"], None, &[0, 1]);
    go(&["check"], None, &[1]);
    t.write(cred, &good, 0o600);
    t.write(
        "/etc/quantum/credloader.d/zz-broken.toml",
        format!(
            "[services.broken]\nunit = \"b\"\nuser = \"qt\"\nstatic = {{ X = \"{a2}\\u0000\" }}\n"
        )
        .as_bytes(),
        0o644,
    );
    go(&["apply"], None, &[1, 2]);
    go(&["check"], None, &[1, 2]);
    std::fs::remove_file(t.path("/etc/quantum/credloader.d/zz-broken.toml")).unwrap();
    go(
        &[
            "import",
            "--env-file",
            plain,
            "--unit",
            "app.service",
            "--secret",
            "NOT_THERE",
        ],
        None,
        &[2],
    );
    // The real import last (it removes the plaintext file), then a final apply.
    go(
        &[
            "import",
            "--env-file",
            plain,
            "--unit",
            "app.service",
            "--secret",
            "APP_KEY",
            "--secret",
            "APP_SECRET",
            "--static",
            "MODE",
        ],
        None,
        &[0, 2],
    );
    // (Each command runs twice, plain then --json: the second seal and
    // import refuse because the first did the job. The first must have.)
    assert!(t.exists("/etc/quantum/creds/LEAK_N.cred"));
    assert!(
        t.exists("/etc/quantum/credloader.d/app.toml"),
        "import did not run"
    );
    assert!(!t.exists(plain), "import left the plaintext file");
    go(&["apply"], None, &[0]);
    let (samples, passes, in_argv) = sampler.finish();

    for (argv, r) in &runs {
        if let Some(hit) = needles.find(r.all().as_bytes()) {
            panic!("`credloader {argv}` printed a value (fragment {hit}):\n{r:#?}");
        }
    }
    assert!(in_argv.is_empty(), "values in argv: {in_argv:#?}");
    // `samples` counts the credloader processes caught running: the
    // sampler really watched them (not just the time between them).
    eprintln!("argv sampler caught {samples} credloader processes running in {passes} passes");
    assert!(
        samples >= 3,
        "only {samples} credloader runs were sampled in {passes} passes over /proc"
    );

    // The values are where they belong...
    let alpha = t.read_string("/run/credloader/alpha.env");
    assert!(
        alpha.contains(&a1) || alpha.contains(&a3),
        "alpha.env holds neither value it was given ({} bytes)",
        alpha.len()
    );
    // ...and nowhere else in the image.
    let intended: Vec<PathBuf> = std::fs::read_dir(t.path("/run/credloader"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "env"))
        .collect();
    for f in files_under(t.root()) {
        if intended.contains(&f) {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        if let Some(hit) = needles.find(&bytes) {
            panic!("{} holds a value (fragment {hit})", f.display());
        }
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(!name.starts_with("core"), "core dump {}", f.display());
    }
    for (i, f) in intended.iter().enumerate() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(f).unwrap();
        assert_eq!(m.mode() & 0o077, 0, "{}", f.display());
        assert_ne!(m.uid(), 0, "{i}: {} is its service user's", f.display());
        let _ = QT_UID;
    }
    // No core dump from any run: not in the working directory either.
    for f in files_under(Path::new(env!("CARGO_MANIFEST_DIR")))
        .into_iter()
        .filter(|p| !p.starts_with(Path::new(env!("CARGO_MANIFEST_DIR")).join("target")))
    {
        let n = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !(n == "core" || n.starts_with("core.")),
            "core dump {}",
            f.display()
        );
    }
}

#[test]
fn the_journal_of_a_real_credloader_service_holds_no_value() {
    let mut seed = 0x1234_5678_9abc_def1u64;
    let good = distinctive("JRa", &mut seed);
    let bad = distinctive("JRb", &mut seed);
    let needles = Needles::new(&[&good, &bad]);

    let (_secret_dir, secret) = testbed::throwaway_secret();
    let bed = testbed::TestBed::builder()
        .credential_secret(&secret)
        .boot();
    bed.install_credloader(Path::new(env!("CARGO_BIN_EXE_credloader")));
    bed.add_user("qt");
    bed.sh_ok(
        "install -d -m 0700 /etc/quantum/creds && install -d -m 0755 /etc/quantum/credloader.d",
    );
    for unit in ["good", "bad"] {
        bed.write(
            &format!("/etc/systemd/system/{unit}.service"),
            b"[Service]\nUser=qt\nExecStart=/bin/sleep infinity\n",
            0o644,
        );
        bed.write(
            &format!("/etc/quantum/credloader.d/{unit}.toml"),
            format!(
                "[services.{unit}]\nunit = \"{unit}.service\"\nuser = \"qt\"\ncredentials = [\"{}\"]\n",
                unit.to_uppercase()
            )
            .as_bytes(),
            0o644,
        );
    }
    for (name, value) in [("GOOD", &good), ("BAD", &bad)] {
        let out = bed.exec_with_stdin(
            &[
                "systemd-creds",
                "encrypt",
                &format!("--name={name}"),
                "--with-key=host",
                "-",
                &format!("/etc/quantum/creds/{name}.cred"),
            ],
            value.as_bytes(),
        );
        assert!(out.status.success(), "{out:?}");
    }
    bed.sh_ok("chmod 0600 /etc/quantum/creds/*.cred");
    // Make BAD undecryptable, verbose logging, then run the real unit.
    bed.sh_ok("sed -i 's/A/B/; s/a/b/' /etc/quantum/creds/BAD.cred");
    bed.sh_ok(
        "mkdir -p /etc/systemd/system/credloader.service.d && \
         printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/credloader -vvv apply\\n' \
         > /etc/systemd/system/credloader.service.d/verbose.conf && systemctl daemon-reload",
    );
    let _ = bed.systemctl(&["start", "credloader.service"]);
    assert_eq!(
        bed.unit_property("credloader.service", "Result"),
        "exit-code"
    );
    bed.systemctl_ok(&["start", "good.service"]);
    let env = bed.environ("good.service");
    assert_eq!(env.get("GOOD").map(Vec::as_slice), Some(good.as_bytes()));
    // A rotation and the refresh unit, for more log lines.
    bed.sh_ok("cp /etc/quantum/creds/GOOD.cred /tmp/g && rm /etc/quantum/creds/BAD.cred");
    let _ = bed.systemctl(&["restart", "credloader.service"]);
    let _ = bed.exec(&["journalctl", "--sync"]);
    let journal = bed.exec(&["journalctl", "-b", "-o", "export", "--no-pager"]);
    assert!(journal.status.success());
    let text = &journal.stdout;
    assert!(
        String::from_utf8_lossy(text).contains("credential BAD"),
        "the journal names the failing credential"
    );
    if let Some(hit) = needles.find(text) {
        panic!(
            "the journal holds a value (fragment {hit}):\n{}",
            bed.journal("credloader.service")
        );
    }
}
