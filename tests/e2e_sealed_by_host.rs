//! Credentials sealed by one systemd, served by another (see docs/testbed.md,
//! "Other releases"): what a host's `/etc/quantum/creds` holds after a
//! dist-upgrade from Debian 12 to 13. Each value is sealed on the host by
//! its own `systemd-creds` (Debian 12's 252) with the bed's key file; inside
//! a bed of any release (`CREDLOADER_TESTBED_RELEASE`) credloader serves it
//! through all three decryption paths: PID 1 in bulk, `systemd-creds` one
//! by one (a hand-sealed file without `--name` too), and PID 1 at boot. A
//! value the bed's systemd seals (`credloader rotate`) is read back by the
//! host's: a downgrade keeps it too.

#[path = "support/scene.rs"]
mod scene;
#[path = "support/testbed.rs"]
mod testbed;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use scene::{text, Scene};

const CREDLOADER: &str = env!("CARGO_BIN_EXE_credloader");
const NAMED: [(&str, &str); 4] = [
    ("K1", "k1-sealed-by-host"),
    ("K2", "k2-sealed-by-host"),
    ("K3", "k3-sealed-by-host"),
    ("K4", "k4-sealed-by-host"),
];

/// `systemd-creds ARGS` on the host with the bed's key file, `input` on
/// stdin; its stdout.
fn host_creds(bed: &Scene, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("systemd-creds")
        .args(args)
        .env("SYSTEMD_CREDENTIAL_SECRET", bed.secret())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-creds on the host");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "systemd-creds {args:?}: {out:?}");
    out.stdout
}

fn config(bed: &Scene, names: &[&str]) {
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    bed.config(
        "alpha",
        &format!(
            "[services.alpha]\nunit = \"alpha.service\"\nuser = \"qt\"\ncredentials = [{}]\n",
            list.join(", ")
        ),
    );
}

#[track_caller]
fn assert_env(bed: &Scene, expected: &[(&str, &str)]) {
    let env = bed.environ("alpha.service");
    for (name, value) in expected {
        assert_eq!(
            env.get(*name).map(|v| testbed::lossy(v)).as_deref(),
            Some(*value),
            "alpha: {name} (systemd {} in the bed)",
            bed.systemd_version()
        );
    }
}

#[test]
fn credentials_sealed_by_the_hosts_systemd_are_served_in_the_bed_and_back() {
    let bed = Scene::boot(Path::new(CREDLOADER), &["qt"], &[("alpha", "qt")]);
    for (name, value) in NAMED {
        let sealed = host_creds(
            &bed,
            &[
                &format!("--name={name}"),
                "--with-key=host",
                "encrypt",
                "-",
                "-",
            ],
            value.as_bytes(),
        );
        bed.write(&format!("/etc/quantum/creds/{name}.cred"), &sealed, 0o600);
    }
    let names: Vec<&str> = NAMED.iter().map(|(n, _)| *n).collect();
    config(&bed, &names);

    // PID 1 decrypts them in bulk.
    let out = bed.credloader(&["-v", "apply"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("decrypted 4 credentials: 0 handed over, 4 by PID 1"),
        "{}",
        text(&out)
    );
    bed.systemctl_ok(&["start", "alpha.service"]);
    assert_env(&bed, &NAMED);

    // Sealed by hand without --name (its embedded name is LEGACY.cred), as
    // the manual procedure did: systemd-creds one by one.
    let legacy = tempfile::Builder::new()
        .prefix(testbed::TEMP_PREFIX)
        .tempdir()
        .unwrap();
    let file = legacy.path().join("LEGACY.cred");
    host_creds(
        &bed,
        &["encrypt", "--with-key=host", "-", file.to_str().unwrap()],
        b"legacy-sealed-by-host",
    );
    bed.copy_in(&file, "/etc/quantum/creds/LEGACY.cred", 0o600);
    config(&bed, &[names.as_slice(), &["LEGACY"]].concat());
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{}", text(&out));
    bed.wait_until("alpha to get LEGACY", Duration::from_secs(10), || {
        bed.active("alpha.service")
            && bed
                .environ("alpha.service")
                .get("LEGACY")
                .is_some_and(|v| v == b"legacy-sealed-by-host")
    });

    // At boot, PID 1 decrypts the verified ones into credloader.service.
    bed.sh_ok("systemctl enable alpha.service credloader.service && systemctl daemon-reload");
    bed.sh_ok(
        "systemctl stop e2e.target alpha.service credloader.service; \
         systemctl reset-failed; rm -f /run/credloader/*.env",
    );
    let _ = bed.systemctl(&["start", "e2e.target"]);
    bed.wait_until("alpha to run again", Duration::from_secs(15), || {
        bed.active("alpha.service")
    });
    assert_eq!(bed.unit_property("credloader.service", "Result"), "success");
    assert_env(&bed, &NAMED);
    assert_env(&bed, &[("LEGACY", "legacy-sealed-by-host")]);

    // The bed's systemd seals; the host's decrypts it.
    let out = bed.credloader(
        &["rotate", "K1", "--key", "host"],
        Some(b"k1-sealed-in-bed"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_env(&bed, &[("K1", "k1-sealed-in-bed")]);
    let sealed = bed.read("/etc/quantum/creds/K1.cred").expect("K1.cred");
    assert_eq!(
        host_creds(&bed, &["decrypt", "--name=K1", "-", "-"], &sealed),
        b"k1-sealed-in-bed"
    );
}
