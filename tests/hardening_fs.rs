//! Hostile filesystem (issue 6): symlinks, hardlinks, FIFOs and directories
//! planted at every managed path and at temp paths; env dir or creds dir
//! owned or writable by the service user; a dangling symlink as the creds
//! dir. Each case must be refused with a message that says what is wrong,
//! the other service must still be served where the fault is its
//! neighbour's, and nothing outside the intended files may be read or
//! written: a canary outside the image is watched with inotify (open,
//! read, write, attribute change, create) for the whole run.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Tree, QT_UID};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

const VICTIM_ENV: &str = "/run/credloader/victim.env";
const BYSTANDER_ENV: &str = "/run/credloader/bystander.env";
const VICTIM_DROPIN: &str = "/etc/systemd/system/victim.service.d/50-credloader.conf";
const VICTIM_CRED: &str = "/etc/quantum/creds/VICTIM_KEY.cred";
const CANARY_TEXT: &[u8] = b"canary: must never be read or written by credloader\n";

/// A directory outside the image with one file, watched for any access.
struct Canary {
    dir: tempfile::TempDir,
    inotify: Inotify,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), CANARY_TEXT).unwrap();
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
        let all = AddWatchFlags::IN_OPEN
            | AddWatchFlags::IN_ACCESS
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO;
        // The file itself (any name that reaches its inode) and both dirs.
        inotify.add_watch(&dir.path().join("file"), all).unwrap();
        inotify.add_watch(dir.path(), all).unwrap();
        inotify.add_watch(&dir.path().join("subdir"), all).unwrap();
        Canary { dir, inotify }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("file")
    }

    fn subdir(&self) -> PathBuf {
        self.dir.path().join("subdir")
    }

    fn missing(&self) -> PathBuf {
        self.dir.path().join("not-there")
    }

    /// Forgets what the test itself did to set up.
    fn reset(&self) {
        while self.inotify.read_events().is_ok() {}
    }

    #[track_caller]
    fn assert_untouched(&self, case: &str) {
        let mut events = Vec::new();
        while let Ok(evs) = self.inotify.read_events() {
            events.extend(
                evs.into_iter()
                    .map(|e| format!("{:?} {:?}", e.mask, e.name)),
            );
        }
        assert!(
            events.is_empty(),
            "{case}: something outside the image was touched: {events:?}"
        );
        assert_eq!(std::fs::read(self.file()).unwrap(), CANARY_TEXT, "{case}");
        assert!(
            !self.missing().exists(),
            "{case}: created outside the image"
        );
        assert_eq!(
            std::fs::read_dir(self.subdir()).unwrap().count(),
            0,
            "{case}: wrote into a directory outside the image"
        );
        // Our own look just now is not credloader's.
        self.reset();
    }
}

fn setup() -> Tree {
    let t = Tree::new();
    t.config(
        "victim.toml",
        &common::service("victim", "qt", &["VICTIM_KEY"]),
    );
    t.config(
        "bystander.toml",
        &common::service("bystander", "bot", &["BYSTANDER_KEY"]),
    );
    t.seal("VICTIM_KEY", b"victim-value-0001");
    t.seal("BYSTANDER_KEY", b"bystander-value-0002");
    t
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

fn rm(p: &Path) {
    if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(p).unwrap();
    } else {
        let _ = std::fs::remove_file(p);
    }
}

/// Runs credloader with a deadline: a FIFO opened for reading must not hang it.
fn run(t: &Tree, args: &[&str]) -> common::Run {
    let start = Instant::now();
    let r = t.credloader(args);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "credloader took {:?}",
        start.elapsed()
    );
    r
}

/// A planted object at one of the victim's managed files.
#[derive(Clone, Copy, Debug)]
enum Plant {
    SymlinkToCanary,
    DanglingSymlinkOutside,
    HardlinkToCanary,
    Fifo,
    Directory,
}

fn plant(t: &Tree, c: &Canary, at: &str, what: Plant) {
    let p = t.path(at);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    rm(&p);
    match what {
        Plant::SymlinkToCanary => symlink(c.file(), &p).unwrap(),
        Plant::DanglingSymlinkOutside => symlink(c.missing(), &p).unwrap(),
        Plant::HardlinkToCanary => std::fs::hard_link(c.file(), &p).unwrap(),
        Plant::Fifo => mkfifo(&p),
        Plant::Directory => std::fs::create_dir(&p).unwrap(),
    }
}

fn expected_words(what: Plant) -> &'static [&'static str] {
    match what {
        Plant::SymlinkToCanary | Plant::DanglingSymlinkOutside => {
            &["is a symbolic link", "never follows links"]
        }
        Plant::HardlinkToCanary => &["hard links"],
        Plant::Fifo => &["is a FIFO"],
        Plant::Directory => &["is a directory"],
    }
}

const PLANTS: [Plant; 5] = [
    Plant::SymlinkToCanary,
    Plant::DanglingSymlinkOutside,
    Plant::HardlinkToCanary,
    Plant::Fifo,
    Plant::Directory,
];

#[track_caller]
fn assert_refused(case: &str, r: &common::Run, code: i32, words: &[&str]) {
    assert_eq!(r.code, code, "{case}: {r:#?}");
    for w in words {
        assert!(r.all().contains(w), "{case}: message lacks {w:?}: {r:#?}");
    }
}

#[test]
fn planted_objects_at_the_env_file_and_drop_in_are_refused_and_the_neighbour_is_served() {
    for at in [VICTIM_ENV, VICTIM_DROPIN] {
        for what in PLANTS {
            for first_run in [true, false] {
                let case = format!("{what:?} at {at} (first run: {first_run})");
                let t = setup();
                let c = Canary::new();
                if !first_run {
                    run(&t, &["apply"]).ok();
                    t.seal("VICTIM_KEY", b"victim-value-changed");
                    t.seal("BYSTANDER_KEY", b"bystander-value-changed");
                }
                plant(&t, &c, at, what);
                c.reset();
                let r = run(&t, &["apply"]);
                let mut words = vec!["victim", at.rsplit('/').next().unwrap()];
                words.extend(expected_words(what));
                assert_refused(&case, &r, 1, &words);
                c.assert_untouched(&case);
                let bystander = t.read_string(BYSTANDER_ENV);
                assert!(
                    bystander.contains(if first_run {
                        "bystander-value-0002"
                    } else {
                        "bystander-value-changed"
                    }),
                    "{case}: the bystander was not served: {bystander}"
                );
                // What was planted is still there, untouched.
                let m = t.path(at).symlink_metadata().unwrap();
                match what {
                    Plant::SymlinkToCanary | Plant::DanglingSymlinkOutside => {
                        assert!(m.file_type().is_symlink(), "{case}")
                    }
                    Plant::Directory => assert!(m.is_dir(), "{case}"),
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn planted_objects_at_the_sealed_credential_are_refused() {
    for what in PLANTS {
        let case = format!("{what:?} at {VICTIM_CRED}");
        let t = setup();
        let c = Canary::new();
        plant(&t, &c, VICTIM_CRED, what);
        c.reset();
        let r = run(&t, &["apply"]);
        let mut words = vec!["VICTIM_KEY"];
        words.extend(expected_words(what));
        assert_refused(&case, &r, 1, &words);
        assert!(
            t.read_string(BYSTANDER_ENV)
                .contains("bystander-value-0002"),
            "{case}"
        );
        assert!(!t.exists(VICTIM_ENV), "{case}");
        c.assert_untouched(&case);
        // rotate refuses to replace it too.
        let r = t.credloader_with_stdin(&["rotate", "VICTIM_KEY"], Some(b"new-value"));
        assert_ne!(r.code, 0, "{case}: rotate: {r:#?}");
        c.assert_untouched(&format!("{case} (rotate)"));
        assert_eq!(std::fs::read(c.file()).unwrap(), CANARY_TEXT, "{case}");
    }
}

#[test]
fn planted_objects_in_the_state_dir_are_refused() {
    for name in ["state.json", "lock"] {
        for what in [
            Plant::SymlinkToCanary,
            Plant::DanglingSymlinkOutside,
            Plant::Fifo,
            Plant::Directory,
        ] {
            let at = format!("/var/lib/credloader/{name}");
            let case = format!("{what:?} at {at}");
            let t = setup();
            t.mkdir("/var/lib/credloader", 0o700);
            let c = Canary::new();
            plant(&t, &c, &at, what);
            c.reset();
            let r = run(&t, &["apply"]);
            // The lock refuses the run (exit 3); a bad state record is
            // worked around with a warning (the env files are still right,
            // only the skip-if-unchanged shortcut is lost). Either way the
            // message names the file and what is wrong with it.
            assert!([0, 1, 3].contains(&r.code), "{case}: {r:#?}");
            if r.code == 0 {
                assert!(r.all().contains("warning"), "{case}: {r:#?}");
            }
            assert!(r.all().contains(name), "{case}: {r:#?}");
            let what = match what {
                Plant::SymlinkToCanary | Plant::DanglingSymlinkOutside => "symbolic link",
                Plant::Fifo => "FIFO",
                _ => "directory",
            };
            assert!(r.all().contains(what), "{case}: {r:#?}");
            c.assert_untouched(&case);
        }
    }
}

#[test]
fn temp_names_planted_in_advance_are_never_followed() {
    // Temp names carry the pid, a counter and the time, and are created
    // O_EXCL|O_NOFOLLOW: a guessed name only makes credloader pick another.
    // Plant symlinks under every name pattern a run could use.
    let t = setup();
    let c = Canary::new();
    t.mkdir("/run/credloader", 0o755);
    t.mkdir("/var/lib/credloader", 0o700);
    for dir in [
        "/run/credloader",
        "/var/lib/credloader",
        "/etc/quantum/creds",
    ] {
        for target in ["victim.env", "state.json", "VICTIM_KEY.cred"] {
            for pid in 0..50 {
                let p = t.path(&format!("{dir}/.{target}.credloader-tmp-{pid}-0-0"));
                symlink(c.file(), p).unwrap();
            }
        }
    }
    c.reset();
    run(&t, &["apply"]).ok();
    t.credloader_with_stdin(
        &["rotate", "VICTIM_KEY", "--key", "host"],
        Some(b"v2-value"),
    )
    .ok();
    c.assert_untouched("planted temp names");
    // The next run under the lock swept them (without following them).
    let left: Vec<_> = [
        "/run/credloader",
        "/var/lib/credloader",
        "/etc/quantum/creds",
    ]
    .iter()
    .flat_map(|d| std::fs::read_dir(t.path(d)).unwrap().flatten())
    .filter(|e| e.file_name().to_string_lossy().contains("credloader-tmp"))
    .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(t.read_string(VICTIM_ENV).contains("v2-value"));
}

#[test]
fn env_dir_or_creds_dir_controlled_by_the_service_user_is_refused() {
    type Case = (
        &'static str,
        &'static str,
        Box<dyn Fn(&Tree)>,
        &'static [&'static str],
    );
    let cases: [Case; 5] = [
        (
            "env dir owned by the service user",
            "/run/credloader",
            Box::new(|t: &Tree| {
                t.mkdir("/run/credloader", 0o755);
                std::os::unix::fs::chown(t.path("/run/credloader"), Some(QT_UID), None).unwrap();
            }),
            &["owned by uid 1500", "chown root:root"],
        ),
        (
            "env dir writable by the service user's group",
            "/run/credloader",
            Box::new(|t: &Tree| {
                t.mkdir("/run/credloader", 0o775);
                std::os::unix::fs::chown(t.path("/run/credloader"), None, Some(QT_UID)).unwrap();
            }),
            &["mode 0775", "chmod go-w"],
        ),
        (
            "env dir world-writable",
            "/run/credloader",
            Box::new(|t: &Tree| t.mkdir("/run/credloader", 0o1777)),
            &["mode 1777", "chmod go-w"],
        ),
        (
            "creds dir owned by the service user",
            "/etc/quantum/creds",
            Box::new(|t: &Tree| {
                std::os::unix::fs::chown(t.path("/etc/quantum/creds"), Some(QT_UID), None).unwrap()
            }),
            &["owned by uid 1500", "VICTIM_KEY", "BYSTANDER_KEY"],
        ),
        (
            "creds dir writable by others",
            "/etc/quantum/creds",
            Box::new(|t: &Tree| {
                std::fs::set_permissions(
                    t.path("/etc/quantum/creds"),
                    std::fs::Permissions::from_mode(0o733),
                )
                .unwrap()
            }),
            &["mode 0733", "VICTIM_KEY"],
        ),
    ];
    for (case, dir, setup_fn, words) in cases {
        let t = setup();
        setup_fn(&t);
        let r = run(&t, &["apply"]);
        let mut all = vec![dir];
        all.extend_from_slice(words);
        assert_refused(case, &r, 1, &all);
        assert!(!t.exists(VICTIM_ENV) && !t.exists(BYSTANDER_ENV), "{case}");
        // `check` names the problem as well.
        let chk = run(&t, &["check"]);
        assert_ne!(chk.code, 0, "{case}: check: {chk:#?}");
        assert!(chk.all().contains(dir), "{case}: check: {chk:#?}");
    }
}

#[test]
fn symlinked_directories_on_managed_paths_are_refused() {
    let cases: [(&str, &str, bool); 5] = [
        // (the directory, replaced by a symlink, dangling?)
        ("creds dir, dangling", "/etc/quantum/creds", true),
        ("creds dir, to a real dir", "/etc/quantum/creds", false),
        ("env dir", "/run/credloader", false),
        ("a parent of the env dir", "/run", false),
        (
            "the drop-in directory",
            "/etc/systemd/system/victim.service.d",
            false,
        ),
    ];
    for (case, dir, dangling) in cases {
        let t = setup();
        let c = Canary::new();
        let p = t.path(dir);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        rm(&p);
        symlink(if dangling { c.missing() } else { c.subdir() }, &p).unwrap();
        c.reset();
        let r = run(&t, &["apply"]);
        assert_refused(case, &r, 1, &[dir, "is a symbolic link"]);
        c.assert_untouched(case);
        if dir != "/etc/quantum/creds" && dir != "/run" && dir != "/run/credloader" {
            assert!(
                t.read_string(BYSTANDER_ENV).contains("bystander-value"),
                "{case}"
            );
        }
        let r = t.credloader_with_stdin(&["seal", "NEW_KEY"], Some(b"some-value"));
        if dir == "/etc/quantum/creds" {
            assert_eq!(r.code, 3, "{case}: seal: {r:#?}");
            assert!(r.all().contains("symbolic link"), "{case}: seal: {r:#?}");
        }
        c.assert_untouched(&format!("{case} (seal)"));
    }
}
