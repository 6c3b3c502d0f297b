//! EIO on read. A sealed credential whose file fails to read with a real
//! I/O error (from the kernel: a FUSE passthrough of the creds dir,
//! tests/eio/eiofs.py, mounted only inside a private mount namespace) fails
//! exactly the services that need it, with an error that names it; their
//! last good env file stays, and every other service is served.

mod common;

use common::{service, Tree};
use std::process::Command;

#[test]
fn an_io_error_reading_a_sealed_credential_fails_only_its_services() {
    let t = Tree::new();
    t.config("a.toml", &service("a", "qt", &["A_KEY"]));
    t.config("b.toml", &service("b", "bot", &["B_KEY"]));
    t.seal("A_KEY", b"a-value-1");
    t.seal("B_KEY", b"b-value-1");
    t.credloader(&["apply"]).ok();
    let good_a = t.read("/run/credloader/a.env");

    // New values land, and then the disk starts failing reads of A_KEY.cred.
    t.seal("A_KEY", b"a-value-2");
    t.seal("B_KEY", b"b-value-2");
    let creds = t.path("/etc/quantum/creds");
    let backing = t.path("/etc/quantum/creds-backing");
    std::fs::rename(&creds, &backing).unwrap();
    t.mkdir("/etc/quantum/creds", 0o700);
    let script = format!(
        "/usr/bin/python3 {eiofs} {back} {mnt} A_KEY.cred & fs=$!\n\
         for i in $(seq 100); do mountpoint -q {mnt} && break; sleep 0.05; done\n\
         mountpoint -q {mnt} || {{ echo 'eiofs did not mount' >&2; exit 99; }}\n\
         {bin} --root {root} apply --json; rc=$?\n\
         umount {mnt}; wait $fs; exit $rc",
        eiofs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/eio/eiofs.py"),
        back = backing.display(),
        mnt = creds.display(),
        bin = env!("CARGO_BIN_EXE_credloader"),
        root = t.root().display(),
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("SYSTEMD_CREDENTIAL_SECRET", t.secret())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(99),
        "FUSE is needed for this test: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let by = |n: &str| {
        report["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == n)
            .unwrap()
            .clone()
    };
    let a = by("a");
    assert_eq!(a["outcome"], "failed");
    let error = a["error"].as_str().unwrap();
    assert!(
        error.contains("A_KEY") && error.contains("I/O error"),
        "{error}"
    );
    assert_eq!(by("b")["outcome"], "updated");
    assert!(t.read_string("/run/credloader/b.env").contains("b-value-2"));
    assert_eq!(
        t.read("/run/credloader/a.env"),
        good_a,
        "the last good file stays"
    );
    assert!(!stdout.contains("value-"), "no value in the report");
}
