//! docs/operator-guide.md's package sections run as written on a real
//! systemd (see docs/testbed.md and tests/guide/mod.rs): a new host gets
//! the package ("Install"), its first consumer ("First setup: one
//! consumer"), and loses the package again ("Removing the package"), every
//! block in order in one bed, each checked for what the text around it
//! promises. The package is the one `make deb` builds (tests/support/deb.rs).

#[path = "support/deb.rs"]
mod deb;
mod guide;
#[path = "support/testbed.rs"]
mod testbed;

use guide::{settle, vars, Input, Walk, ENV_FILE, UNIT};
use testbed::TestBed;

/// What the operator seals: the key typed at the prompt, the secret from a
/// file made with `echo` (which adds a newline).
const KEY: &str = "FirstSetupKey6789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU";
const SECRET: &str = "FirstSetupSecretTSRQPONMLKJIHGFEDCBA9876543210zyxwvutsrqponmlkj";
/// A rotation's new key, so that purge has a kept generation to keep.
const ROTATED: &str = "RotatedKey3456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU";
/// What the operator answers when apt asks before it removes a package
/// (apt 2.6 asks "Do you want to continue? [Y/n]", apt 3 "Continue? [Y/n]").
const YES: &[(&str, &str)] = &[("[Y/n]", "y")];
const DROPIN: &str = "/etc/systemd/system/quantum-position-monitor.service.d/50-credloader.conf";

fn exists(bed: &TestBed, path: &str) -> bool {
    bed.sh(&format!("test -e '{path}' || test -L '{path}'"))
        .status
        .success()
}

#[test]
fn a_new_host_installs_sets_up_and_removes_as_written() {
    let deb = deb::deb();
    let (bed, _secret) = deb::boot(&[]);
    let file = deb.file_name().expect("a file").to_string_lossy();
    bed.copy_in(deb, &format!("/root/{file}"), 0o644);
    install(&bed);
    first_setup(&bed);

    // The host some time later: one rotation (staged; the path unit applies
    // it), whose old value purge must keep as a generation.
    let out = bed.exec_with_stdin(
        &["credloader", "rotate", "BINANCE_API_KEY", "--no-apply"],
        format!("{ROTATED}\n").as_bytes(),
    );
    assert!(out.status.success(), "{out:?}");
    settle(&bed);
    bed.wait_until(
        "the rotated key to reach the consumer",
        std::time::Duration::from_secs(30),
        || vars(&bed)["BINANCE_API_KEY"] == ROTATED.as_bytes(),
    );
    remove(&bed);
}

/// "Install": `make deb` is run on the build machine, as this test's
/// [`deb::deb`] does; the rest in the bed. Both units enabled and running,
/// and `check` clean.
fn install(bed: &TestBed) {
    let mut walk = Walk::new(bed, "Install");
    walk.skip(
        "make deb",
        "run on the build machine, not the host: deb::deb() builds the package with \
         packaging/build-deb.sh, the script `make deb` runs, and the test copies it to /root",
    );
    walk.sh("apt install ./credloader_", Input::Nothing);
    assert_eq!(
        bed.sh_ok("dpkg-query -W -f='${Status}' credloader"),
        "install ok installed"
    );
    let said = walk.sh("credloader check", Input::Nothing).out;
    assert!(said.contains("0 error(s)"), "{said}");
    for unit in ["credloader.path", "credloader.service"] {
        assert_eq!(bed.unit_property(unit, "ActiveState"), "active", "{said}");
        assert_eq!(bed.unit_property(unit, "UnitFileState"), "enabled");
    }
    walk.finish();
}

/// "First setup: one consumer", on the host the section assumes: user `qt`
/// and its `quantum-position-monitor.service` (not running yet), and
/// `/root/secret.txt` made with `echo`.
fn first_setup(bed: &TestBed) {
    bed.add_user("qt");
    bed.write(
        &format!("/etc/systemd/system/{UNIT}"),
        b"[Unit]\nDescription=the guide's consumer\n[Service]\nUser=qt\n\
          ExecStart=/bin/sleep infinity\n",
        0o644,
    );
    bed.daemon_reload();
    bed.sh_ok(&format!("echo {SECRET} > /root/secret.txt"));
    let mut walk = Walk::new(bed, "First setup: one consumer");
    walk.never_shows(&[KEY.as_bytes(), SECRET.as_bytes()]);

    let said = walk
        .sh(
            "credloader seal BINANCE_API_KEY",
            Input::Terminal(&guide::twice(KEY)),
        )
        .out;
    assert!(said.contains("removed the trailing newline"), "{said}");
    assert_eq!(
        bed.sh_ok("stat -c '%n %U %a' /etc/quantum/creds/*.cred"),
        "/etc/quantum/creds/BINANCE_API_KEY.cred root 600\n\
         /etc/quantum/creds/BINANCE_API_SECRET.cred root 600\n"
    );
    assert_eq!(
        bed.read("/root/secret.txt"),
        Some(format!("{SECRET}\n").into_bytes()),
        "the file is left as it is"
    );

    let saved = walk.file("[services.position-monitor]");
    assert_eq!(saved, ["/etc/quantum/credloader.d/position-monitor.toml"]);
    settle(bed);
    let said = walk.sh("credloader apply --dry-run", Input::Nothing).out;
    assert!(said.contains("as applied"), "{said}");
    assert!(said.contains("drop-in loaded: yes"), "{said}");
    assert!(exists(bed, DROPIN), "{said}");
    assert!(bed.unit_property(UNIT, "ActiveState") == "active", "{said}");
    let served = vars(bed);
    assert_eq!(served["BINANCE_API_KEY"], KEY.as_bytes());
    assert_eq!(served["BINANCE_API_SECRET"], SECRET.as_bytes());
    assert_eq!(served["EXIT_BRAIN_V35_ENABLED"], b"true");

    let said = walk.sh("systemctl show -p DropInPaths", Input::Nothing).out;
    assert!(said.contains("50-credloader.conf"), "{said}");
    assert!(
        said.contains(&format!("EnvironmentFiles={ENV_FILE} (ignore_errors=no)")),
        "{said}"
    );
    for name in guide::VARS {
        assert!(said.lines().any(|l| l == name), "{name} not in:\n{said}");
    }
    walk.finish();
}

/// "Removing the package": remove keeps everything delivered; purge removes
/// what credloader wrote, and keeps the sealed credentials, the kept
/// generations and the operator's service file, and says so.
fn remove(bed: &TestBed) {
    let sealed = deb::sealed_fingerprint(bed);
    assert!(
        sealed.contains("var/lib/credloader/generations/BINANCE_API_KEY/"),
        "{sealed}"
    );
    let mut walk = Walk::new(bed, "Removing the package");
    walk.never_shows(&[KEY.as_bytes(), ROTATED.as_bytes(), SECRET.as_bytes()]);
    let said = walk.sh("apt remove credloader", Input::Terminal(YES)).out;
    assert!(!exists(bed, "/usr/bin/credloader"), "{said}");
    assert!(!exists(bed, "/lib/systemd/system/credloader.service"));
    assert_eq!(bed.unit_property("credloader.path", "LoadState"), "masked");
    for stays in [DROPIN, ENV_FILE, "/var/lib/credloader/state.json"] {
        assert!(exists(bed, stays), "remove took {stays}:\n{said}");
    }
    assert_eq!(vars(bed)["BINANCE_API_KEY"], ROTATED.as_bytes());
    assert_eq!(deb::sealed_fingerprint(bed), sealed, "{said}");

    let said = walk.sh("apt purge credloader", Input::Terminal(YES)).out;
    assert!(
        said.contains("kept /var/lib/credloader/generations"),
        "{said}"
    );
    assert_eq!(deb::sealed_fingerprint(bed), sealed, "{said}");
    for gone in [
        "/etc/quantum/credloader.toml",
        DROPIN,
        "/run/credloader",
        "/var/lib/credloader/state.json",
        "/etc/systemd/system/paths.target.wants/credloader.path",
    ] {
        assert!(!exists(bed, gone), "{gone} survived the purge:\n{said}");
    }
    assert!(exists(
        bed,
        "/etc/quantum/credloader.d/position-monitor.toml"
    ));
    assert!(!bed
        .unit_property(UNIT, "DropInPaths")
        .contains("50-credloader"));
    walk.finish();
}
