//! A compromised consumer (issue 13): with nothing but its own uid, after
//! privileges are dropped, it must not block a rotation of a key it shares,
//! nor make credloader take its edit for credloader's own file.
//!
//! The attacker is this very test binary, started again with
//! `CREDLOADER_HOSTILE` set (see [`hostile_consumer_entry_point`]): it drops
//! to the uid and gid of `qt` (setresgid, setgroups, setresuid) before it
//! does anything, and proves it did. Then, as the consumer may:
//! - it hardlinks its env file into a directory it owns on the same
//!   filesystem (as its own `RuntimeDirectory=` under /run would be);
//! - it takes a write lease (`F_SETLEASE`) on its env file and holds it,
//!   ignoring the lease-break signal;
//! - it watches the env dir with inotify and rewrites its env file (or the
//!   temp file credloader has just handed to it) the moment it can.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Tree, BOT_UID, QT_UID};

const A_ENV: &str = "/run/credloader/a.env";
const B_ENV: &str = "/run/credloader/b.env";
/// A directory the consumer owns on the env dir's filesystem.
const QT_DIR: &str = "/run/qt";
const TAMPERED: &[u8] = b"K1=\"tampered-by-the-consumer\"\nK2=\"tampered-by-the-consumer\"\n";

// ---- the attacker ---------------------------------------------------------

/// Not a test: the entry point of the attacker process. Without
/// `CREDLOADER_HOSTILE` it returns at once.
#[test]
fn hostile_consumer_entry_point() {
    let Ok(act) = std::env::var("CREDLOADER_HOSTILE") else {
        return;
    };
    drop_to(QT_UID);
    let args: Vec<String> = act.split('\x1f').map(String::from).collect();
    match args[0].as_str() {
        "link" => std::fs::hard_link(&args[1], &args[2]).unwrap(),
        "lease" => hold_lease(Path::new(&args[1])),
        "tamper" => tamper(Path::new(&args[1]), &args[2], args[3].parse().unwrap()),
        other => panic!("unknown act {other}"),
    }
    say("done");
}

/// What the attacker says, one line each, among libtest's own output.
fn say(what: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "HOSTILE {what}").unwrap();
    out.flush().unwrap();
}

fn drop_to(uid: u32) {
    use nix::unistd::{getgroups, getresgid, getresuid, setgroups, setresgid, setresuid};
    use nix::unistd::{Gid, Uid};
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(uid));
    setgroups(&[]).unwrap();
    setresgid(g, g, g).unwrap();
    setresuid(u, u, u).unwrap();
    let r = getresuid().unwrap();
    let rg = getresgid().unwrap();
    assert_eq!((r.real, r.effective, r.saved), (u, u, u));
    assert_eq!((rg.real, rg.effective, rg.saved), (g, g, g));
    assert!(getgroups().unwrap().is_empty());
    // No way back: a capability would show here.
    assert!(setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_err());
}

/// Opens `path`, takes a write lease on it and holds it until stdin closes;
/// then says which inode it held and what the lease is now.
fn hold_lease(path: &Path) {
    use nix::libc;
    // A real attacker ignores the lease-break signal (SIGIO by default,
    // which would otherwise end it and drop the lease).
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    let f = std::fs::File::open(path).unwrap();
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
    assert_eq!(r, 0, "F_SETLEASE: {}", std::io::Error::last_os_error());
    say(&format!("ready {}", f.metadata().unwrap().ino()));
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let lease = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLEASE) };
    let held = if lease == libc::F_UNLCK {
        "none"
    } else {
        "held"
    };
    say(&format!("holding {} {held}", f.metadata().unwrap().ino()));
}

/// Watches `dir` and, for each of `rounds` replacements of `name`, writes
/// [`TAMPERED`] into the new file as early as it can: into the temp file
/// credloader has just chowned to it, or else into `name` right after the
/// rename. Says how many rounds it tampered with.
fn tamper(dir: &Path, name: &str, rounds: usize) {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).unwrap();
    let mask = AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_MOVED_TO;
    inotify.add_watch(dir, mask).unwrap();
    say("ready");
    let temp = format!(".{name}.credloader-tmp-");
    let (mut done, mut tampered, mut this_round) = (0, 0, false);
    while done < rounds {
        for ev in inotify.read_events().unwrap() {
            let Some(n) = ev.name.as_ref().and_then(|n| n.to_str()) else {
                continue;
            };
            let renamed = ev.mask.contains(AddWatchFlags::IN_MOVED_TO) && n == name;
            if !this_round && (n.starts_with(&temp) || renamed) && rewrite(&dir.join(n)) {
                this_round = true;
            }
            if renamed {
                done += 1;
                tampered += this_round as usize;
                this_round = false;
            }
        }
    }
    say(&format!("tampered {tampered}"));
}

/// Overwrites `path` with [`TAMPERED`], if the consumer may open it.
fn rewrite(path: &Path) -> bool {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path);
    f.and_then(|mut f| f.write_all(TAMPERED)).is_ok()
}

/// The attacker, running as `qt`.
struct Attacker {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Attacker {
    fn start(act: &[&str]) -> Attacker {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "hostile_consumer_entry_point", "--nocapture"])
            .args(["--test-threads", "1"])
            .env("CREDLOADER_HOSTILE", act.join("\x1f"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Attacker { child, out }
    }

    /// The attacker's next line that starts with `word`.
    fn expect(&mut self, word: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(n > 0, "the attacker ended before saying {word:?}");
            // libtest's "test NAME ... " may precede it on the line.
            if let Some((_, rest)) = line.trim_end().split_once("HOSTILE ") {
                if let Some(what) = rest.strip_prefix(word) {
                    return what.trim().to_string();
                }
                assert!(!rest.starts_with("done"), "{word:?} never came");
            }
        }
    }

    /// Tells a waiting attacker to finish, and waits for it.
    fn finish(mut self, word: &str) -> String {
        drop(self.child.stdin.take());
        let what = self.expect(word);
        if word != "done" {
            self.expect("done");
        }
        assert!(self.child.wait().unwrap().success());
        what
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the scene ------------------------------------------------------------

/// `a` (qt, the compromised one) and `b` (bot) share SHARED; `a` also has
/// K1 and K2. Both units exist, so `check` has nothing else to say. The
/// image can be walked by the consumer, as `/` can.
fn scene() -> Tree {
    let t = Tree::new();
    std::fs::set_permissions(t.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t.config(
        "a.toml",
        "[services.a]\nunit = \"a.service\"\nuser = \"qt\"\n\
         credentials = [\"SHARED\", \"K1\", \"K2\"]\n",
    );
    t.config("b.toml", &common::service("b", "bot", &["SHARED"]));
    for (unit, user) in [("a", "qt"), ("b", "bot")] {
        t.write(
            &format!("/usr/lib/systemd/system/{unit}.service"),
            format!("[Service]\nUser={user}\nExecStart=/bin/sleep infinity\n").as_bytes(),
            0o644,
        );
    }
    t.seal("SHARED", b"shared-value-old");
    t.seal("K1", b"k1-value-original");
    t.seal("K2", b"k2-value-original");
    t.credloader(&["apply"]).ok();
    t.mkdir(QT_DIR, 0o700);
    std::os::unix::fs::chown(t.path(QT_DIR), Some(QT_UID), Some(QT_UID)).unwrap();
    t
}

fn rotate(t: &Tree, name: &str, value: &[u8]) -> common::Run {
    let start = Instant::now();
    let r = t.credloader_with_stdin(&["rotate", name, "--key", "host"], Some(value));
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "rotate took {:?}",
        start.elapsed()
    );
    r
}

fn ino(t: &Tree, p: &str) -> u64 {
    std::fs::symlink_metadata(t.path(p)).unwrap().ino()
}

/// The findings of `check --json` about `subject` that contain `problem`.
fn finding(t: &Tree, subject: &str, problem: &str) -> Option<serde_json::Value> {
    let run = t.credloader(&["check", "--json"]);
    run.json()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["subject"].as_str().unwrap().contains(subject)
                && f["problem"].as_str().unwrap().contains(problem)
        })
        .cloned()
}

#[track_caller]
fn assert_rotated_for_everyone(t: &Tree, r: &common::Run) {
    assert_eq!(r.code, 0, "the rotation did not go through: {r:#?}");
    assert!(!r.all().contains("rolled back"), "{r:#?}");
    for p in [A_ENV, B_ENV] {
        let text = t.read_string(p);
        assert!(text.contains("shared-value-new"), "{p}: {text}");
    }
    assert_eq!(t.owner_mode(A_ENV), (QT_UID, QT_UID, 0o600));
    assert_eq!(t.owner_mode(B_ENV), (BOT_UID, BOT_UID, 0o600));
}

// ---- item 1: a link or a lease does not block a rotation ------------------

#[test]
fn a_hardlink_the_consumer_made_to_its_env_file_does_not_block_a_rotation() {
    let t = scene();
    let old = ino(&t, A_ENV);
    let keep = format!("{QT_DIR}/keep");
    Attacker::start(&[
        "link",
        &t.path(A_ENV).to_string_lossy(),
        &t.path(&keep).to_string_lossy(),
    ])
    .finish("done");
    assert_eq!(ino(&t, &keep), old);

    // check sees the second name before anything else happens.
    let f = finding(&t, A_ENV, "hard link").expect("check reports the second link");
    assert_eq!(f["severity"], "error", "{f}");
    assert!(f["fix"].as_str().unwrap().contains("rotate"), "{f}");

    let r = rotate(&t, "SHARED", b"shared-value-new");
    assert_rotated_for_everyone(&t, &r);
    assert!(
        r.all().contains("warning") && r.all().contains("a.env") && r.all().contains("hard link"),
        "the rotation says what the consumer did: {r:#?}"
    );
    // The consumer's link still holds the old file (and only the old value).
    assert_eq!(ino(&t, &keep), old);
    assert_ne!(ino(&t, A_ENV), old);
    let kept = t.read_string(&keep);
    assert!(kept.contains("shared-value-old") && !kept.contains("shared-value-new"));
    // The env file at its path has one link again: nothing left to report.
    assert!(finding(&t, A_ENV, "hard link").is_none());
    // And the next apply has nothing to do.
    let again = t.credloader(&["apply", "--json"]);
    again.ok();
    assert!(
        again.json()["warnings"].as_array().unwrap().is_empty(),
        "{again:#?}"
    );
}

#[test]
fn a_lease_the_consumer_holds_on_its_env_file_does_not_block_a_rotation() {
    let t = scene();
    let old = ino(&t, A_ENV);
    let mut lease = Attacker::start(&["lease", &t.path(A_ENV).to_string_lossy()]);
    assert_eq!(lease.expect("ready").parse::<u64>().unwrap(), old);

    let f = finding(&t, A_ENV, "lease").expect("check reports the lease");
    assert_eq!(f["severity"], "error", "{f}");
    assert!(f["fix"].as_str().unwrap().contains("rotate"), "{f}");

    let r = rotate(&t, "SHARED", b"shared-value-new");
    assert_rotated_for_everyone(&t, &r);
    assert!(
        r.all().contains("warning") && r.all().contains("a.env") && r.all().contains("lease"),
        "the rotation says what the consumer did: {r:#?}"
    );
    assert!(!r.all().contains("Try again"), "{r:#?}");
    assert_ne!(ino(&t, A_ENV), old);
    // The consumer still holds its lease, on the old file.
    let held = lease.finish("holding");
    assert_eq!(held, format!("{old} held"));
}

// ---- item 5: the recorded identity is never the consumer's edit -----------

/// The identity credloader recorded for `a`'s env file, if any.
fn recorded_id(t: &Tree) -> Option<(u64, u64, i64, i64)> {
    let state: serde_json::Value =
        serde_json::from_slice(&t.read("/var/lib/credloader/state.json")).unwrap();
    let id = &state["services"]["a"]["env_file_id"];
    (!id.is_null()).then(|| {
        let n = |k: &str| id[k].as_i64().unwrap();
        (n("dev") as u64, n("ino") as u64, n("size"), n("ctime_ns"))
    })
}

fn current_id(t: &Tree) -> (u64, u64, i64, i64) {
    let m = std::fs::symlink_metadata(t.path(A_ENV)).unwrap();
    (
        m.dev(),
        m.ino(),
        m.size() as i64,
        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    )
}

#[test]
fn an_edit_racing_the_write_is_never_recorded_as_credloaders_own_file() {
    let t = scene();
    const ROUNDS: usize = 3;
    let env_dir = t.path("/run/credloader").to_string_lossy().into_owned();
    let mut attacker = Attacker::start(&["tamper", &env_dir, "a.env", &ROUNDS.to_string()]);
    attacker.expect("ready");
    let mut tampered_rounds = 0;
    for round in 0..ROUNDS {
        let r = rotate(&t, "K2", format!("k2-value-{round}").as_bytes());
        r.ok();
        let tampered = t.read(A_ENV) == TAMPERED;
        tampered_rounds += tampered as usize;
        if tampered {
            assert_ne!(
                recorded_id(&t),
                Some(current_id(&t)),
                "round {round}: credloader recorded the consumer's edit as its own file"
            );
            assert!(r.all().contains("a.env"), "round {round}: not said: {r:#?}");
        }
    }
    let said: usize = attacker.finish("tampered").parse().unwrap();
    assert!(
        said > 0,
        "the attacker never got its edit in: the test proves nothing"
    );
    assert!(
        tampered_rounds > 0,
        "no edit survived a round: the test proves nothing"
    );

    // status and check do not call the edited file applied...
    if t.read(A_ENV) == TAMPERED {
        let status = t.credloader(&["status", "--service", "a"]);
        status.ok();
        assert!(status.stdout.contains("CHANGED"), "{status:#?}");
        assert!(finding(&t, A_ENV, "").is_some(), "check says nothing");
    }
    // ... the next apply is no no-op: it puts credloader's file back...
    let r = t.credloader(&["apply"]);
    r.ok();
    let text = t.read_string(A_ENV);
    assert!(text.contains("k1-value-original"), "{text}");
    assert!(!text.contains("tampered"), "{text}");
    // ... and no value of the edit was reused in any rebuild since.
    rotate(&t, "K2", b"k2-value-last").ok();
    let text = t.read_string(A_ENV);
    assert!(
        text.contains("k1-value-original") && text.contains("k2-value-last"),
        "{text}"
    );
    assert_eq!(recorded_id(&t), Some(current_id(&t)));
    let status = t.credloader(&["status", "--service", "a"]);
    status.ok();
    assert!(status.stdout.contains("as applied"), "{status:#?}");
}

#[test]
fn a_value_read_back_for_reuse_is_the_one_credloader_wrote() {
    // The consumer rewrites its env file after credloader recorded it: the
    // identity moves, so the next rebuild decrypts instead of reusing.
    let t = scene();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(t.path(A_ENV))
        .unwrap();
    f.write_all(TAMPERED).unwrap();
    drop(f);
    rotate(&t, "K2", b"k2-value-next").ok();
    let text = t.read_string(A_ENV);
    assert!(text.contains("k1-value-original"), "{text}");
    assert!(!text.contains("tampered"), "{text}");
}
