//! Crash consistency (issue 6): `credloader apply` and `credloader rotate`
//! are SIGKILLed at random instants, over and over, on a `--root` image.
//!
//! While they run, an inotify watcher on every managed directory stats each
//! entry the instant it is created, written, chmodded, chowned or renamed
//! into place, and reads every env file and drop-in it sees: no file (temp
//! files included) is ever wider than its owner may see, and every env file
//! and drop-in is always one of the complete texts credloader can produce,
//! never a partial one. After each kill the files are checked to be wholly
//! the old or wholly the new version; then an uninterrupted `apply` must
//! finish the job, deliver what the `.cred` files hold, and leave no temp
//! file anywhere.
//!
//! 200 kills under `make test` (≈ 30 s); `CREDLOADER_LONG=1` (`make
//! test-long`) runs 1,000. `CREDLOADER_SEED=N` replays a run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Rng, Tree, BOT_UID, QT_UID};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// Three services; A1 is shared by two of them, so a rotation of A1 rewrites
/// two env files.
const CONFIG: &[(&str, &str, &[&str])] = &[
    ("alpha", "qt", &["A1", "A2"]),
    ("beta", "bot", &["B1"]),
    ("gamma", "qt", &["A1", "G1"]),
];
const CREDS: &[&str] = &["A1", "A2", "B1", "G1"];
const TEMP_MARK: &str = ".credloader-tmp-";

fn seed() -> u64 {
    std::env::var("CREDLOADER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

fn long_mode() -> bool {
    std::env::var_os("CREDLOADER_LONG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The whole model of what the image should hold.
struct Model {
    values: BTreeMap<&'static str, Vec<u8>>,
    /// beta's `required` flag: toggling it changes beta's drop-in.
    beta_required: bool,
}

impl Model {
    fn env_text(&self, service: &str) -> Vec<u8> {
        let (_, _, creds) = CONFIG.iter().find(|(n, _, _)| *n == service).unwrap();
        let mut vars: Vec<(&str, &[u8])> = creds
            .iter()
            .map(|c| (*c, self.values[c].as_slice()))
            .collect();
        vars.push(("MODE", b"static \"quoted\" $x"));
        vars.sort();
        credloader::envfile::render(vars.iter().copied())
            .expose()
            .to_vec()
    }

    /// beta's drop-in as credloader renders it for this model.
    fn beta_dropin(&self) -> Vec<u8> {
        let c = credloader::config::from_texts(vec![("/m.toml".into(), self.config_text("beta"))])
            .unwrap();
        credloader::dropin::render(&c.services["beta"], &c.loader).into_bytes()
    }

    fn config_text(&self, service: &str) -> String {
        let (_, user, creds) = CONFIG.iter().find(|(n, _, _)| *n == service).unwrap();
        let list: Vec<String> = creds.iter().map(|c| format!("\"{c}\"")).collect();
        let required = if service == "beta" {
            format!("required = {}\n", self.beta_required)
        } else {
            String::new()
        };
        format!(
            "[services.{service}]\nunit = \"{service}.service\"\nuser = \"{user}\"\ncredentials = [{}]\n\
             static = {{ MODE = 'static \"quoted\" $x' }}\n{required}",
            list.join(", ")
        )
    }
}

fn env_path(service: &str) -> String {
    format!("/run/credloader/{service}.env")
}

fn dropin_path(service: &str) -> String {
    format!("/etc/systemd/system/{service}.service.d/50-credloader.conf")
}

/// Seals `value` with the real systemd-creds and installs it the way an
/// operator's tooling would: a 0600 temp file renamed over the old one.
fn reseal(t: &Tree, name: &str, value: &[u8]) {
    let mut child = Command::new("systemd-creds")
        .args([
            "encrypt",
            &format!("--name={name}"),
            "--with-key=host",
            "-",
            "-",
        ])
        .env("SYSTEMD_CREDENTIAL_SECRET", t.secret())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(value).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "seal {name}: {out:?}");
    install_private(
        &t.path(&format!("/etc/quantum/creds/{name}.cred")),
        &out.stdout,
    );
}

/// Writes `path` atomically with mode 0600 from its first instant.
fn install_private(path: &Path, bytes: &[u8]) {
    let tmp = path.with_file_name(format!(
        ".{}.test-staging",
        path.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn write_config(t: &Tree, m: &Model, service: &str) {
    // Config files are not secret: 0644, but installed atomically so that a
    // concurrently starting credloader never reads half of one.
    let path = t.path(&format!("/etc/quantum/credloader.d/{service}.toml"));
    let tmp = path.with_extension("toml-staging");
    std::fs::write(&tmp, m.config_text(service)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Env,
    Creds,
    State,
    Dropin,
}

/// What the watcher accepts as complete file contents, by host path.
type Accepted = Arc<Mutex<BTreeMap<PathBuf, BTreeSet<Vec<u8>>>>>;

struct Watcher {
    stop_dir: tempfile::TempDir,
    thread: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Watcher {
    fn start(dirs: Vec<(PathBuf, Kind)>, accepted: Accepted) -> Watcher {
        let stop_dir = tempfile::tempdir().unwrap();
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).unwrap();
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CLOSE_WRITE;
        let mut by_wd = BTreeMap::new();
        for (dir, kind) in dirs {
            let wd = inotify
                .add_watch(&dir, mask)
                .unwrap_or_else(|e| panic!("watch {}: {e}", dir.display()));
            by_wd.insert(wd, (dir, kind));
        }
        let stop_wd = inotify
            .add_watch(stop_dir.path(), AddWatchFlags::IN_CREATE)
            .unwrap();
        let thread = std::thread::spawn(move || {
            let mut seen = 0usize;
            let mut problems = Vec::new();
            loop {
                let events = match inotify.read_events() {
                    Ok(e) => e,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => panic!("inotify: {e}"),
                };
                for ev in events {
                    if ev.wd == stop_wd {
                        return (seen, problems);
                    }
                    if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                        problems.push("inotify queue overflowed: events were lost".into());
                        continue;
                    }
                    let (Some((dir, kind)), Some(name)) = (by_wd.get(&ev.wd), ev.name) else {
                        continue;
                    };
                    seen += 1;
                    check_entry(dir, *kind, &name, &accepted, &mut problems);
                }
            }
        });
        Watcher {
            stop_dir,
            thread: Some(thread),
        }
    }

    /// Stops the watcher; returns how many events it checked and what was wrong.
    fn finish(mut self) -> (usize, Vec<String>) {
        std::fs::write(self.stop_dir.path().join("stop"), b"").unwrap();
        self.thread.take().unwrap().join().unwrap()
    }
}

fn check_entry(
    dir: &Path,
    kind: Kind,
    name: &OsString,
    accepted: &Accepted,
    problems: &mut Vec<String>,
) {
    let path = dir.join(name);
    let Ok(m) = std::fs::symlink_metadata(&path) else {
        return; // already renamed or removed: nothing to see any more
    };
    let text = name.to_string_lossy();
    let temp = text.contains(TEMP_MARK);
    let (uid, mode) = (m.uid(), m.mode() & 0o7777);
    let mut bad = |what: String| problems.push(format!("{}: {what}", path.display()));
    if m.file_type().is_symlink() {
        bad("a symlink appeared".into());
        return;
    }
    match kind {
        Kind::Env => {
            if mode & 0o077 != 0 {
                bad(format!("mode {mode:04o} is readable beyond its owner"));
            }
            if ![0, QT_UID, BOT_UID].contains(&uid) {
                bad(format!("owned by uid {uid}"));
            }
            if temp && ![0, QT_UID, BOT_UID].contains(&uid) {
                bad(format!("temp file owned by uid {uid}"));
            }
        }
        Kind::Creds | Kind::State => {
            if mode & 0o077 != 0 {
                bad(format!("mode {mode:04o} is readable beyond root"));
            }
            if uid != 0 {
                bad(format!("owned by uid {uid}, not root"));
            }
        }
        Kind::Dropin => {
            if uid != 0 || mode & 0o022 != 0 {
                bad(format!("uid {uid} mode {mode:04o}: others could change it"));
            }
            if temp && mode & 0o077 != 0 && m.len() == 0 {
                // created wider than 0600 before anything was written
                bad(format!("temp created with mode {mode:04o}"));
            }
        }
    }
    if temp && kind != Kind::Dropin && mode & 0o077 != 0 {
        bad(format!("temp file mode {mode:04o} (must be 0600)"));
    }
    if !temp && m.is_file() {
        if let Some(ok) = accepted.lock().unwrap().get(&path) {
            match std::fs::read(&path) {
                Ok(bytes) if !ok.contains(&bytes) => bad(format!(
                    "holds {} bytes that are neither the old nor the new contents",
                    bytes.len()
                )),
                _ => {}
            }
        }
    }
}

/// Every path under `dir` whose name marks a credloader temp file.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().contains(TEMP_MARK) {
            out.push(p.clone());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(temp_files(&p));
        }
    }
    out
}

#[test]
fn sigkill_at_random_instants_never_leaves_a_partial_or_exposed_file() {
    let iterations = if long_mode() { 1000 } else { 200 };
    let seed = seed();
    eprintln!("crash test: {iterations} iterations, CREDLOADER_SEED={seed}");
    let mut rng = Rng(seed);

    let t = Tree::new();
    let mut m = Model {
        values: CREDS
            .iter()
            .map(|c| (*c, format!("{c}-initial-value").into_bytes()))
            .collect(),
        beta_required: true,
    };
    for (service, _, _) in CONFIG {
        write_config(&t, &m, service);
    }
    for c in CREDS {
        reseal(&t, c, &m.values[c]);
    }
    t.credloader(&["apply"]).ok();
    // One rotation each, so every generations directory exists to be watched.
    for c in CREDS {
        let v = format!("{c}-first-rotation").into_bytes();
        t.credloader_with_stdin(&["rotate", c, "--key", "host"], Some(&v))
            .ok();
        m.values.insert(c, v);
    }
    for (service, _, _) in CONFIG {
        assert_eq!(t.read(&env_path(service)), m.env_text(service), "{service}");
    }

    let mut dirs = vec![
        (t.path("/run/credloader"), Kind::Env),
        (t.path("/etc/quantum/creds"), Kind::Creds),
        (t.path("/var/lib/credloader"), Kind::State),
    ];
    for c in CREDS {
        dirs.push((
            t.path(&format!("/var/lib/credloader/generations/{c}")),
            Kind::State,
        ));
    }
    for (service, _, _) in CONFIG {
        dirs.push((
            t.path(&dropin_path(service))
                .parent()
                .unwrap()
                .to_path_buf(),
            Kind::Dropin,
        ));
    }
    let accepted: Accepted = Arc::default();
    let accept = |m: &Model| {
        let mut a = accepted.lock().unwrap();
        for (service, _, _) in CONFIG {
            a.entry(t.path(&env_path(service)))
                .or_default()
                .insert(m.env_text(service));
        }
        a.entry(t.path(&dropin_path("beta")))
            .or_default()
            .insert(m.beta_dropin());
    };
    accept(&m);
    assert_eq!(t.read(&dropin_path("beta")), m.beta_dropin());
    let watcher = Watcher::start(dirs, accepted.clone());

    // How long an uninterrupted run takes, so kills land inside runs.
    let mut budget_ms: BTreeMap<&str, u64> = [("apply", 60), ("rotate", 90)].into();
    let started = Instant::now();
    let (mut killed, mut completed) = (0usize, 0usize);
    let mut dropin_changes = 0usize;

    for i in 0..iterations {
        let before = Model {
            values: m.values.clone(),
            beta_required: m.beta_required,
        };
        let cred = *rng.pick(CREDS);
        let value = format!("{cred}-iteration-{i}-{:x}", rng.next()).into_bytes();
        let rotate = rng.below(2) == 0;
        let toggle = !rotate && rng.below(3) == 0;
        let op = if rotate { "rotate" } else { "apply" };

        if !rotate {
            reseal(&t, cred, &value);
            if toggle {
                m.beta_required = !m.beta_required;
                write_config(&t, &m, "beta");
            }
        }
        let mut after = Model {
            values: m.values.clone(),
            beta_required: m.beta_required,
        };
        after.values.insert(cred, value.clone());
        accept(&after);

        let delay = Duration::from_micros(rng.below((budget_ms[op] * 1000) as usize) as u64);
        let t0 = Instant::now();
        let mut child = if rotate {
            t.spawn(&["rotate", cred, "--key", "host"], Some(&value))
        } else {
            t.spawn(&["apply"], None)
        };
        let exit = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if t0.elapsed() >= delay {
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        match exit {
            Some(status) => {
                completed += 1;
                let took = t0.elapsed().as_millis() as u64;
                // Follow the run time (the machine is shared and its load
                // varies), aiming kills at the whole of a run.
                let b = budget_ms.get_mut(op).unwrap();
                *b = (*b * 4 + (took + took / 4)) / 5;
                assert!(status.success(), "iteration {i}: {op} failed: {status}");
            }
            None => {
                let _ = child.kill(); // SIGKILL
                let _ = child.wait();
                killed += 1;
            }
        }

        // Right after the kill: every file wholly old or wholly new.
        for (service, _, _) in CONFIG {
            let got = t.read(&env_path(service));
            assert!(
                got == before.env_text(service) || got == after.env_text(service),
                "iteration {i} ({op} {cred}, seed {seed}): {service}.env is neither old nor new:\n{}",
                String::from_utf8_lossy(&got)
            );
            assert_eq!(
                t.owner_mode(&env_path(service)).2,
                0o600,
                "iteration {i}: {service}.env mode"
            );
        }
        let dropin_now = t.read(&dropin_path("beta"));
        assert!(
            dropin_now == before.beta_dropin() || dropin_now == after.beta_dropin(),
            "iteration {i}: beta's drop-in is neither old nor new:\n{}",
            String::from_utf8_lossy(&dropin_now)
        );
        if dropin_now != before.beta_dropin() {
            dropin_changes += 1;
        }
        assert_eq!(
            t.owner_mode(&format!("/etc/quantum/creds/{cred}.cred")),
            (0, 0, 0o600),
            "iteration {i}: {cred}.cred"
        );

        // The next run finishes the job.
        let run = t.credloader(&["apply"]);
        assert_eq!(
            run.code, 0,
            "iteration {i} ({op} {cred}, seed {seed}): the recovery apply failed: {run:?}"
        );
        let alpha_or_beta = CONFIG
            .iter()
            .find(|(_, _, creds)| creds.contains(&cred))
            .unwrap()
            .0;
        let delivered_new = t.read(&env_path(alpha_or_beta)) == after.env_text(alpha_or_beta);
        if rotate {
            // Whether the new value got sealed before the kill decides which
            // one the next apply delivers; either way everything agrees.
            m.values.insert(
                cred,
                if delivered_new {
                    value
                } else {
                    before.values[cred].clone()
                },
            );
        } else {
            assert!(delivered_new, "iteration {i}: apply did not deliver {cred}");
            m.values.insert(cred, value);
        }
        assert_eq!(
            t.read(&dropin_path("beta")),
            m.beta_dropin(),
            "iteration {i}"
        );
        for (service, _, _) in CONFIG {
            assert_eq!(
                t.read(&env_path(service)),
                m.env_text(service),
                "iteration {i} ({op} {cred}, seed {seed}): {service}.env after the recovery apply"
            );
        }
        let leftovers = temp_files(t.root());
        assert!(
            leftovers.is_empty(),
            "iteration {i} ({op} {cred}, seed {seed}): temp files left after the recovery apply: {leftovers:?}"
        );
    }
    let (events, problems) = watcher.finish();
    eprintln!(
        "crash test: {killed} killed mid-run, {completed} completed, {events} inotify events checked, {:.1?}",
        started.elapsed()
    );
    assert!(
        problems.is_empty(),
        "seed {seed}: the watcher saw:\n{}",
        problems.join("\n")
    );
    assert!(events > iterations, "the watcher saw only {events} events");
    assert!(
        killed >= iterations / 3,
        "only {killed} of {iterations} runs were killed mid-run"
    );
    assert!(dropin_changes > 0, "no drop-in was ever replaced");
}
