//! The Debian package end to end on a real systemd (see docs/testbed.md):
//! `dpkg -i` enables and starts the units, a consumer gets its keys across a
//! "reboot", a newer version installed over it restarts no consumer, and
//! `dpkg -r` / `dpkg -P` clean up what credloader wrote while
//! every sealed credential stays exactly as it was. Also: lintian is clean.
//!
//! The package is built as `make deb` builds it (tests/support/deb.rs).

#[path = "support/deb.rs"]
mod deb;
#[path = "support/testbed.rs"]
mod testbed;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use deb::{deb, sealed_fingerprint};
use testbed::TestBed;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn lintian_reports_no_errors_or_warnings() {
    let out = Command::new("bash")
        .arg(Path::new(ROOT).join("packaging/lintian.sh"))
        .arg(deb())
        .output()
        .expect("run packaging/lintian.sh");
    assert!(
        out.status.success(),
        "lintian:\n{}{}",
        testbed::lossy(&out.stdout),
        testbed::lossy(&out.stderr)
    );
}

/// The package states what it needs (README, "Supported systems"): the
/// oldest systemd it was tested on, the helpers its maintainer scripts call,
/// and, recommended, what the faster paths and `sync` use.
#[test]
fn the_package_states_what_it_needs() {
    let field = |name: &str| {
        let out = Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb())
            .arg(name)
            .output()
            .expect("dpkg-deb -f");
        assert!(out.status.success(), "{out:?}");
        testbed::lossy(&out.stdout).trim().to_string()
    };
    let depends = field("Depends");
    for needed in [
        "libc6 (>= ",
        "systemd (>= 252)",
        "init-system-helpers (>= 1.54~)",
    ] {
        assert!(depends.contains(needed), "Depends: {depends}");
    }
    assert_eq!(
        field("Recommends"),
        "default-dbus-system-bus | dbus-system-bus, ca-certificates, python3"
    );
}

/// The built package repacked as a newer version (`VERSION+upgrade1`), in `dir`.
fn newer_deb(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("dpkg-deb")
            .args(args)
            .output()
            .expect("dpkg-deb");
        assert!(out.status.success(), "dpkg-deb {args:?}: {out:?}");
    };
    run(&["-R".as_ref(), deb().as_os_str(), tree.as_os_str()]);
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix("Version: ") {
            Some(v) => format!("Version: {v}+upgrade1\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&control, text).unwrap();
    let out = dir.join("credloader-newer.deb");
    run(&[
        "--root-owner-group".as_ref(),
        "-Zgzip".as_ref(),
        "-b".as_ref(),
        tree.as_os_str(),
        out.as_os_str(),
    ]);
    out
}

/// `dpkg -i` of a newer version over a working install: the units stay
/// enabled, credloader.service re-applies with the new binary (postinst
/// restarts it), and since nothing changed no consumer restarts and no
/// sealed file is touched.
fn upgrade_keeps_every_delivery(bed: &TestBed, sealed: &str) {
    let dir = testbed::tempdir();
    bed.copy_in(&newer_deb(dir.path()), "/root/credloader-newer.deb", 0o644);
    let app = bed.main_pid("app.service");
    let applied = bed.unit_property("credloader.service", "InvocationID");
    ok(
        "dpkg -i (upgrade)",
        bed.sh("dpkg -i /root/credloader-newer.deb 2>&1"),
    );
    assert!(bed
        .sh_ok("dpkg-query -W -f='${Version}' credloader")
        .ends_with("+upgrade1"));
    assert_eq!(
        testbed::lossy(
            &bed.systemctl(&["is-enabled", "credloader.service", "credloader.path"])
                .stdout
        ),
        "enabled\nenabled\n"
    );
    bed.wait_until(
        "credloader.service to re-apply",
        Duration::from_secs(10),
        || {
            bed.unit_property("credloader.service", "ActiveState") == "active"
                && bed.unit_property("credloader.service", "InvocationID") != applied
        },
    );
    assert_eq!(bed.main_pid("app.service"), app, "app was restarted");
    assert_eq!(
        bed.environ("app.service")
            .get("APP_API_KEY")
            .map(Vec::as_slice),
        Some(&b"app-key-2"[..])
    );
    assert_eq!(
        sealed_fingerprint(bed),
        sealed,
        "the upgrade touched sealed files"
    );
}

fn ok(what: &str, out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        testbed::lossy(&out.stdout),
        testbed::lossy(&out.stderr)
    );
    testbed::lossy(&out.stdout)
}

fn exists(bed: &TestBed, path: &str) -> bool {
    bed.sh(&format!("test -e '{path}' || test -L '{path}'"))
        .status
        .success()
}

#[test]
fn dpkg_install_reboot_upgrade_remove_and_purge_keep_every_sealed_credential() {
    let deb = deb();
    let (bed, _secret) = deb::boot(&[]);
    bed.copy_in(deb, "/root/credloader.deb", 0o644);

    // --- install ---
    ok("dpkg -i", bed.sh("dpkg -i /root/credloader.deb 2>&1"));
    for path in [
        "/usr/bin/credloader",
        "/lib/systemd/system/credloader.service",
        "/lib/systemd/system/credloader.path",
        "/lib/systemd/system/credloader-refresh.service",
        "/usr/lib/tmpfiles.d/credloader.conf",
        "/usr/share/man/man1/credloader.1.gz",
        "/usr/share/man/man1/credloader-rotate.1.gz",
        "/usr/share/bash-completion/completions/credloader",
        "/usr/share/zsh/vendor-completions/_credloader",
        "/usr/share/fish/vendor_completions.d/credloader.fish",
        "/usr/share/doc/credloader/operator-guide.md",
        "/etc/quantum/credloader.toml",
        "/usr/lib/systemd/system-generators/credloader-generator",
        "/usr/lib/credloader/health/binance-key-check",
    ] {
        assert!(exists(&bed, path), "{path} not installed");
    }
    assert_eq!(
        bed.sh_ok("readlink /usr/lib/systemd/system-generators/credloader-generator"),
        "../../../bin/credloader\n",
        "the generator is a link to the binary, owned by the package"
    );
    assert!(
        bed.sh_ok("dpkg-query -W -f='${Conffiles}' credloader")
            .contains("/etc/quantum/credloader.toml"),
        "the example config must be a conffile"
    );
    assert_eq!(
        bed.sh_ok("stat -c '%n %U %a' /etc/quantum/creds /etc/quantum/credloader.d /run/credloader /var/lib/credloader"),
        "/etc/quantum/creds root 700\n/etc/quantum/credloader.d root 755\n\
         /run/credloader root 755\n/var/lib/credloader root 700\n"
    );
    assert_eq!(
        testbed::lossy(
            &bed.systemctl(&["is-enabled", "credloader.service", "credloader.path"])
                .stdout
        ),
        "enabled\nenabled\n"
    );
    assert_eq!(
        bed.unit_property("credloader.path", "ActiveState"),
        "active"
    );
    assert_eq!(
        bed.unit_property("credloader.service", "ActiveState"),
        "active",
        "postinst starts it; with only the example config it has nothing to do\n{}",
        bed.journal("credloader.service")
    );

    // --- a consumer, set up the way the operator guide says ---
    bed.add_user("app");
    bed.write(
        "/etc/systemd/system/deb-e2e.target",
        b"[Unit]\nDescription=the services of this test\n",
        0o644,
    );
    bed.write(
        "/etc/systemd/system/app.service",
        b"[Unit]\nDescription=a consumer\n[Service]\nUser=app\nExecStart=/bin/sleep infinity\n\
          [Install]\nWantedBy=deb-e2e.target\n",
        0o644,
    );
    // Looks like ours but is not in credloader's state: purge must keep it.
    let decoy = "/etc/systemd/system/other.service.d/50-credloader.conf";
    bed.write(
        decoy,
        b"# Managed by credloader for service `other`; changes are overwritten.\n[Service]\n",
        0o644,
    );
    bed.daemon_reload();
    bed.systemctl_ok(&["enable", "app.service"]);
    ok(
        "credloader seal",
        bed.exec_with_stdin(
            &["credloader", "seal", "APP_API_KEY", "--key", "host"],
            b"app-key-1",
        ),
    );
    bed.write(
        "/etc/quantum/credloader.d/app.toml",
        b"[services.app]\nunit = \"app.service\"\nuser = \"app\"\n\
          credentials = [\"APP_API_KEY\"]\nstatic = { APP_MODE = \"live\" }\n",
        0o644,
    );
    ok("credloader apply", bed.exec(&["credloader", "apply"]));
    let dropin = "/etc/systemd/system/app.service.d/50-credloader.conf";
    assert!(exists(&bed, dropin));
    // The packaged generator hands the verified credential to PID 1.
    bed.daemon_reload();
    assert!(
        testbed::lossy(
            &bed.read("/run/systemd/generator/credloader.service.d/50-credloader-boot.conf")
                .unwrap_or_default()
        )
        .contains("LoadCredentialEncrypted=APP_API_KEY:/etc/quantum/creds/APP_API_KEY.cred"),
        "the packaged generator did not run"
    );

    // --- "reboot": everything stopped, /run's env files gone, target started ---
    bed.sh_ok(
        "systemctl stop deb-e2e.target app.service credloader.service; rm -f /run/credloader/*.env",
    );
    ok(
        "start deb-e2e.target",
        bed.systemctl(&["start", "deb-e2e.target"]),
    );
    bed.wait_until("app to run", Duration::from_secs(10), || {
        bed.unit_property("app.service", "ActiveState") == "active"
    });
    let env = bed.environ("app.service");
    assert_eq!(
        env.get("APP_API_KEY").map(Vec::as_slice),
        Some(&b"app-key-1"[..])
    );
    assert_eq!(env.get("APP_MODE").map(Vec::as_slice), Some(&b"live"[..]));
    assert_eq!(
        bed.unit_property("credloader.service", "ActiveState"),
        "active"
    );

    // A rotation keeps the old value as a sealed generation.
    ok(
        "credloader rotate",
        bed.exec_with_stdin(
            &["credloader", "rotate", "APP_API_KEY", "--key", "host"],
            b"app-key-2",
        ),
    );
    assert_eq!(
        bed.environ("app.service")
            .get("APP_API_KEY")
            .map(Vec::as_slice),
        Some(&b"app-key-2"[..])
    );
    let sealed = sealed_fingerprint(&bed);
    assert!(
        sealed.contains("etc/quantum/creds/APP_API_KEY.cred")
            && sealed.contains("var/lib/credloader/generations/APP_API_KEY/"),
        "{sealed}"
    );

    upgrade_keeps_every_delivery(&bed, &sealed);

    // --- remove: units stopped and gone, everything delivered stays ---
    ok("dpkg -r", bed.sh("dpkg -r credloader 2>&1"));
    assert!(!exists(&bed, "/usr/bin/credloader"));
    assert!(bed
        .sh("test -L /usr/lib/systemd/system-generators/credloader-generator")
        .status
        .code()
        .is_some_and(|c| c != 0));
    assert!(!exists(&bed, "/lib/systemd/system/credloader.service"));
    assert!(
        exists(&bed, "/etc/quantum/credloader.toml"),
        "remove keeps conffiles"
    );
    assert!(exists(&bed, dropin) && exists(&bed, "/run/credloader/app.env"));
    assert!(exists(&bed, "/var/lib/credloader/state.json"));
    assert_eq!(bed.unit_property("app.service", "ActiveState"), "active");
    assert_eq!(
        sealed_fingerprint(&bed),
        sealed,
        "remove touched sealed files"
    );

    // --- purge: what credloader wrote is gone; sealed credentials are not ---
    let out = ok("dpkg -P", bed.sh("dpkg -P credloader 2>&1"));
    assert!(
        out.contains("kept /var/lib/credloader/generations"),
        "purge must say it kept the generations: {out}"
    );
    assert_eq!(
        sealed_fingerprint(&bed),
        sealed,
        "purge touched sealed files"
    );
    for gone in [
        "/etc/quantum/credloader.toml",
        dropin,
        "/etc/systemd/system/app.service.d",
        "/run/credloader",
        "/var/lib/credloader/state.json",
        "/var/lib/credloader/lock",
        "/etc/systemd/system/multi-user.target.wants/credloader.service",
        "/etc/systemd/system/paths.target.wants/credloader.path",
        "/etc/systemd/system/credloader.service",
        "/etc/systemd/system/credloader.path",
    ] {
        assert!(!exists(&bed, gone), "{gone} survived the purge");
    }
    assert!(
        exists(&bed, decoy),
        "purge removed a drop-in credloader did not record"
    );
    assert!(
        exists(&bed, "/etc/quantum/credloader.d/app.toml"),
        "the operator's service config stays"
    );
    assert!(!bed
        .unit_property("app.service", "DropInPaths")
        .contains("50-credloader"));
    assert!(!bed
        .sh("dpkg -s credloader >/dev/null 2>&1")
        .status
        .success());
}
