//! Resource faults (issue 6): a full filesystem (ENOSPC), a read-only one
//! (EROFS) and a full `/run`. The mounts are made only inside a private
//! mount namespace (`unshare --mount --propagation private`) around the
//! credloader process, on the `--root` image's own paths: nothing is ever
//! mounted on the host's real paths, and everything vanishes with the
//! namespace. The last good files must stay, the error must say what is
//! wrong, and the other services must be served.
//!
//! EIO on read has a test of its own, with a real EIO from a FUSE
//! passthrough: tests/hardening_eio.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Tree;

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    /// Files copied out of the namespace after the run (name → bytes).
    after: std::collections::BTreeMap<String, Vec<u8>>,
}

impl Outcome {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `setup` (shell, `$R` = the image) in a private mount namespace, then
/// `credloader --root $R ARGS`, then copies `collect` (a directory of the
/// image, as seen inside) out.
fn in_namespace(t: &Tree, setup: &str, args: &[&str], stdin: &[u8], collect: &str) -> Outcome {
    let out_dir = tempfile::tempdir().unwrap();
    let o = out_dir.path();
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "set -e\n{setup}\nset +e\n\"$BIN\" --root \"$R\" {} <\"$OUT/stdin\" >\"$OUT/stdout\" 2>\"$OUT/stderr\"\n\
         echo $? >\"$OUT/code\"\nmkdir \"$OUT/after\"\ncp -a \"$R{collect}/.\" \"$OUT/after/\" 2>/dev/null || true\n",
        quoted.join(" ")
    );
    std::fs::write(o.join("stdin"), stdin).unwrap();
    let status = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            &script,
        ])
        .env("R", t.root())
        .env("OUT", o)
        .env("BIN", env!("CARGO_BIN_EXE_credloader"))
        .env("SYSTEMD_CREDENTIAL_SECRET", t.secret())
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("CREDLOADER_CONFIG")
        .output()
        .expect("unshare (util-linux) is installed");
    assert!(
        status.status.success(),
        "namespace setup failed: {status:?}"
    );
    let read = |n: &str| std::fs::read_to_string(o.join(n)).unwrap_or_default();
    let mut after = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(o.join("after")).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            after.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    Outcome {
        code: read("code").trim().parse().unwrap(),
        stdout: read("stdout"),
        stderr: read("stderr"),
        after,
    }
}

/// alpha's env file on /run/credloader; beta's on /srv/env (another file
/// system in these tests), so one can be starved while the other is served.
fn setup() -> Tree {
    let t = Tree::new();
    t.config(
        "00-loader.toml",
        "[loader]\nenv_file_dirs = [\"/srv/env\"]\n",
    );
    t.config("alpha.toml", &common::service("alpha", "qt", &["ALPHA"]));
    t.config(
        "beta.toml",
        "[services.beta]\nunit = \"beta.service\"\nuser = \"bot\"\ncredentials = [\"BETA\"]\nenv_file = \"/srv/env/beta.env\"\n",
    );
    t.seal("ALPHA", b"alpha-value-1");
    t.seal("BETA", b"beta-value-1");
    t.credloader(&["apply"]).ok();
    t
}

fn big(tag: &str) -> Vec<u8> {
    let mut v = tag.as_bytes().to_vec();
    v.resize(100 * 1024, b'x');
    v
}

fn no_temps(files: &std::collections::BTreeMap<String, Vec<u8>>) {
    let temps: Vec<&String> = files
        .keys()
        .filter(|k| k.contains("credloader-tmp"))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
}

/// Copies the current contents of an image directory to a host temp dir,
/// to be restored onto a tmpfs inside the namespace.
fn save(t: &Tree, dir: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", t.path(dir).display()))
        .arg(d.path())
        .status()
        .unwrap();
    assert!(st.success());
    let p = d.path().to_path_buf();
    (d, p)
}

#[test]
fn a_full_run_keeps_the_last_good_env_file_and_serves_the_others() {
    let t = setup();
    let old_alpha = t.read("/run/credloader/alpha.env");
    let (_keep, saved) = save(&t, "/run/credloader");
    // New values: alpha's no longer fits on the full /run; beta's lives
    // elsewhere and must be delivered.
    t.seal("ALPHA", &big("alpha-value-2"));
    t.seal("BETA", b"beta-value-2");
    let fill = format!(
        "mount -t tmpfs -o size=64k,mode=0755 credloader-test \"$R/run\"\n\
         mkdir -m 0755 \"$R/run/credloader\"\n\
         cp -a {}/. \"$R/run/credloader/\"\n\
         dd if=/dev/zero of=\"$R/run/filler\" bs=1k 2>/dev/null || true\n",
        saved.display()
    );
    let o = in_namespace(&t, &fill, &["apply"], b"", "/run/credloader");
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("alpha"), "{}", o.all());
    assert!(
        o.all().contains("No space left on device") && o.all().contains("the filesystem is full"),
        "the error must say the file system is full: {}",
        o.all()
    );
    assert_eq!(o.after["alpha.env"], old_alpha, "the last good file stays");
    no_temps(&o.after);
    assert!(
        t.read_string("/srv/env/beta.env").contains("beta-value-2"),
        "the other service is served"
    );
    assert!(!o.all().contains("alpha-value"), "{}", o.all());
}

#[test]
fn a_read_only_env_dir_or_drop_in_dir_fails_only_its_service() {
    let t = setup();
    let old_alpha = t.read("/run/credloader/alpha.env");
    t.seal("ALPHA", b"alpha-value-2");
    t.seal("BETA", b"beta-value-2");
    let ro = |dir: &str| {
        format!("mount --bind \"$R{dir}\" \"$R{dir}\"\nmount -o remount,bind,ro \"$R{dir}\"\n")
    };
    let o = in_namespace(
        &t,
        &ro("/run/credloader"),
        &["apply"],
        b"",
        "/run/credloader",
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.all().contains("Read-only file system") && o.all().contains("remount it read-write"),
        "{}",
        o.all()
    );
    assert_eq!(o.after["alpha.env"], old_alpha);
    assert!(t.read_string("/srv/env/beta.env").contains("beta-value-2"));

    // A new service whose drop-in cannot be written: it fails, the rest is served.
    t.config("gamma.toml", &common::service("gamma", "qt", &["ALPHA"]));
    t.seal("BETA", b"beta-value-3");
    let o = in_namespace(
        &t,
        &ro("/etc/systemd/system"),
        &["apply"],
        b"",
        "/etc/systemd/system",
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.all().contains("gamma") && o.all().contains("Read-only file system"),
        "{}",
        o.all()
    );
    assert!(!t.exists("/etc/systemd/system/gamma.service.d/50-credloader.conf"));
    assert!(t.read_string("/srv/env/beta.env").contains("beta-value-3"));
}

#[test]
fn a_read_only_state_dir_stops_the_run_with_a_clear_error_and_changes_nothing() {
    let t = setup();
    let old_alpha = t.read("/run/credloader/alpha.env");
    t.seal("ALPHA", b"alpha-value-2");
    let o = in_namespace(
        &t,
        "mount --bind \"$R/var/lib/credloader\" \"$R/var/lib/credloader\"\n\
         mount -o remount,bind,ro \"$R/var/lib/credloader\"\n",
        &["apply"],
        b"",
        "/run/credloader",
    );
    assert_eq!(o.code, 3, "{}", o.all());
    assert!(
        o.all().contains("/var/lib/credloader/lock") && o.all().contains("Read-only"),
        "{}",
        o.all()
    );
    assert_eq!(o.after["alpha.env"], old_alpha);
}

#[test]
fn a_full_creds_dir_fails_the_rotation_and_keeps_the_old_credential() {
    let t = setup();
    let old_cred = t.read("/etc/quantum/creds/ALPHA.cred");
    let old_alpha = t.read("/run/credloader/alpha.env");
    let (_keep, saved) = save(&t, "/etc/quantum/creds");
    let fill = format!(
        "mount -t tmpfs -o size=32k,mode=0700 credloader-test \"$R/etc/quantum/creds\"\n\
         cp -a {}/. \"$R/etc/quantum/creds/\"\n\
         dd if=/dev/zero of=\"$R/etc/quantum/creds/.filler\" bs=1k 2>/dev/null || true\n",
        saved.display()
    );
    let o = in_namespace(
        &t,
        &fill,
        &["rotate", "ALPHA", "--key", "host"],
        &big("alpha-rotated"),
        "/etc/quantum/creds",
    );
    assert_ne!(o.code, 0, "{}", o.all());
    assert!(
        o.all().contains("ALPHA") && o.all().contains("the filesystem is full"),
        "{}",
        o.all()
    );
    assert_eq!(o.after["ALPHA.cred"], old_cred, "the old credential stays");
    no_temps(&o.after);
    assert_eq!(t.read("/run/credloader/alpha.env"), old_alpha);
    // Outside the namespace nothing changed either, and apply still works.
    t.credloader(&["apply"]).ok();
    assert_eq!(t.read("/run/credloader/alpha.env"), old_alpha);
    let _ = Path::new("/");
}
