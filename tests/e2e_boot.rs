//! The boot path on a real systemd (see docs/architecture.md, "The boot
//! path"): credloader-generator hands PID 1 the credentials the last apply
//! verified, PID 1 decrypts them into credloader.service, apply uses a
//! handed-over value only when the manifest binds it to the sealed file it
//! reads, and a credential PID 1 cannot decrypt fails the unit (243) and
//! `OnFailure=credloader-refresh.service` still serves everyone else, while
//! a credential retired after the generator ran does not fail the unit.

#[path = "support/scene.rs"]
mod scene;
#[path = "support/testbed.rs"]
mod testbed;

use std::path::Path;
use std::time::Duration;

use scene::Scene;

const CREDLOADER: &str = env!("CARGO_BIN_EXE_credloader");
const GENERATED: &str = "/run/systemd/generator/credloader.service.d/50-credloader-boot.conf";
const GENERATOR: &str = "/etc/systemd/system-generators/credloader-generator";

/// alpha (qt): the Binance pair; beta (bot): the Kraken pair; gamma (qt):
/// a credential-delivery service, whose value credloader never needs.
fn fleet() -> Scene {
    let bed = Scene::boot(
        Path::new(CREDLOADER),
        &["qt", "bot"],
        &[("alpha", "qt"), ("beta", "bot"), ("gamma", "qt")],
    );
    bed.config(
        "alpha",
        "[services.alpha]\nunit = \"alpha.service\"\nuser = \"qt\"\n\
         credentials = [\"BINANCE_API_KEY\", \"BINANCE_API_SECRET\"]\n",
    );
    bed.config(
        "beta",
        "[services.beta]\nunit = \"beta.service\"\nuser = \"bot\"\n\
         credentials = [\"KRAKEN_KEY\", \"KRAKEN_SECRET\"]\n",
    );
    bed.config(
        "gamma",
        "[services.gamma]\nunit = \"gamma.service\"\nuser = \"qt\"\n\
         credentials = [\"GAMMA_KEY\"]\ndelivery = \"credential\"\n",
    );
    for (name, value) in [
        ("BINANCE_API_KEY", "binance-key-1"),
        ("BINANCE_API_SECRET", "binance-secret-1"),
        ("KRAKEN_KEY", "kraken-key-1"),
        ("KRAKEN_SECRET", "kraken-secret-1"),
        ("GAMMA_KEY", "gamma-key-1"),
    ] {
        bed.seal(name, value.as_bytes());
    }
    bed.sh_ok("systemctl enable alpha.service beta.service gamma.service credloader.service");
    // credloader.service as shipped, but logging at info level, so the
    // journal says which source decrypted how many.
    bed.write(
        "/etc/systemd/system/credloader.service.d/90-e2e-verbose.conf",
        b"[Service]\nExecStart=\nExecStart=/usr/bin/credloader -v apply\n",
        0o644,
    );
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{}", scene::text(&out));
    // The generator runs at boot and at every daemon-reload.
    bed.daemon_reload();
    bed
}

/// Like a reboot: everything stopped, /run's env files gone, then the
/// services' target started (which pulls credloader.service in first).
fn reboot(bed: &Scene) {
    bed.sh_ok(
        "systemctl stop e2e.target alpha.service beta.service gamma.service credloader.service \
         credloader-refresh.service; systemctl reset-failed; rm -f /run/credloader/*.env",
    );
    let _ = bed.systemctl(&["start", "e2e.target"]);
}

fn value(bed: &Scene, unit: &str, var: &str) -> Option<Vec<u8>> {
    bed.environ(unit).get(var).cloned()
}

/// `unit`'s running process has `var` = `expected` in its environment.
#[track_caller]
fn assert_value(bed: &Scene, unit: &str, var: &str, expected: &[u8]) {
    assert_eq!(
        value(bed, unit, var).as_deref(),
        Some(expected),
        "{unit}: {var}"
    );
}

fn generated(bed: &Scene) -> String {
    testbed::lossy(&bed.read(GENERATED).unwrap_or_default())
}

#[test]
fn pid1_decrypts_the_verified_credentials_into_credloader_service() {
    let bed = fleet();
    let dropin = generated(&bed);
    for name in [
        "BINANCE_API_KEY",
        "BINANCE_API_SECRET",
        "KRAKEN_KEY",
        "KRAKEN_SECRET",
    ] {
        assert!(
            dropin.contains(&format!(
                "\nLoadCredentialEncrypted={name}:/etc/quantum/creds/{name}.cred\n"
            )),
            "{name} is handed to PID 1:\n{dropin}"
        );
    }
    assert!(
        !dropin.contains("GAMMA_KEY"),
        "a credential-delivery service's value is never needed:\n{dropin}"
    );
    let manifest = dropin
        .lines()
        .find_map(|l| l.strip_prefix("SetCredential=credloader.manifest:"))
        .unwrap_or_else(|| panic!("no manifest:\n{dropin}"));
    assert_eq!(manifest.split(' ').count(), 4, "{manifest}");
    assert_eq!(
        bed.unit_property("credloader.service", "NeedDaemonReload"),
        "no"
    );

    reboot(&bed);
    bed.wait_until("alpha and beta to run", Duration::from_secs(15), || {
        bed.active("alpha.service") && bed.active("beta.service")
    });
    assert_eq!(bed.unit_property("credloader.service", "Result"), "success");
    let journal = bed.journal("credloader.service");
    assert!(
        journal.contains("decrypted 4 credentials: 4 handed over, 0 by PID 1, 0 by systemd-creds"),
        "every value came from PID 1's decryption into the unit:\n{journal}"
    );
    assert!(!journal.contains("binance-key-1") && !journal.contains("kraken-key-1"));
    assert_value(&bed, "alpha.service", "BINANCE_API_KEY", b"binance-key-1");
    assert_value(
        &bed,
        "alpha.service",
        "BINANCE_API_SECRET",
        b"binance-secret-1",
    );
    assert_value(&bed, "beta.service", "KRAKEN_KEY", b"kraken-key-1");
    assert_value(&bed, "beta.service", "KRAKEN_SECRET", b"kraken-secret-1");
    let stat = bed.sh_ok("stat -c '%U %a' /run/credloader/alpha.env /run/credloader/beta.env");
    assert_eq!(stat, "qt 600\nbot 600\n");
    // The manifest holds identities only: no value, no ciphertext.
    let shown = bed.sh_ok("systemctl show credloader.service");
    assert!(!shown.contains("binance-key-1") && !shown.contains("kraken"));
}

#[test]
fn a_credential_rotated_after_pid1_decrypted_it_is_not_taken_from_the_handed_value() {
    let bed = fleet();
    // The new Kraken key lands after the generator ran and after PID 1
    // decrypted the old one into the unit, right before apply reads it:
    // the unit's own first command renames it into place (this test's
    // drop-in; the rename needs the creds dir writable).
    let out = bed.exec_with_stdin(
        &[
            "systemd-creds",
            "encrypt",
            "--name=KRAKEN_KEY",
            "--with-key=host",
            "-",
            "-",
        ],
        b"kraken-key-2",
    );
    assert!(out.status.success(), "{out:?}");
    bed.write("/etc/quantum/creds/.KRAKEN_KEY.next", &out.stdout, 0o600);
    bed.write(
        "/etc/systemd/system/credloader.service.d/91-e2e-rotate.conf",
        b"[Service]\nReadWritePaths=/etc/quantum/creds\nExecStart=\nExecStart=/bin/sh -c \
          'mv /etc/quantum/creds/.KRAKEN_KEY.next /etc/quantum/creds/KRAKEN_KEY.cred && \
          exec /usr/bin/credloader -v apply'\n",
        0o644,
    );
    bed.daemon_reload();
    assert!(generated(&bed).contains("LoadCredentialEncrypted=KRAKEN_KEY:"));

    reboot(&bed);
    bed.wait_until("alpha and beta to run", Duration::from_secs(15), || {
        bed.active("alpha.service") && bed.active("beta.service")
    });
    let journal = bed.journal("credloader.service");
    assert!(
        journal.contains("credential KRAKEN_KEY changed since PID 1 decrypted it")
            && journal.contains("decrypted 4 credentials: 3 handed over"),
        "{journal}"
    );
    assert_eq!(
        value(&bed, "beta.service", "KRAKEN_KEY").as_deref(),
        Some(&b"kraken-key-2"[..]),
        "the consumer must get the new value, not what PID 1 decrypted before the rename"
    );
    assert_value(&bed, "beta.service", "KRAKEN_SECRET", b"kraken-secret-1");
    assert_value(&bed, "alpha.service", "BINANCE_API_KEY", b"binance-key-1");
}

#[test]
fn a_credential_pid1_cannot_decrypt_fails_the_unit_and_the_fallback_serves_every_other_service() {
    let bed = fleet();
    assert!(generated(&bed).contains("LoadCredentialEncrypted=BINANCE_API_KEY:"));
    // Damaged after the generator ran: PID 1 is still told to decrypt it.
    bed.sh_ok("sed -i 's/A/B/; s/a/b/' /etc/quantum/creds/BINANCE_API_KEY.cred");

    reboot(&bed);
    bed.wait_until(
        "beta to run after the fallback",
        Duration::from_secs(20),
        || bed.active("beta.service"),
    );
    // PID 1 failed the unit before apply ran. (Starting beta later pulls
    // the failed credloader.service in again; by then the fallback's apply
    // has reloaded systemd, the generator has dropped the bad credential,
    // and that run fails only alpha.)
    let journal = bed.journal("credloader.service");
    assert!(
        journal.contains("status=243/CREDENTIALS")
            && journal.contains("credloader.service: Triggering OnFailure= dependencies."),
        "PID 1 failed credloader.service on the bad credential:\n{journal}"
    );
    assert_value(&bed, "beta.service", "KRAKEN_KEY", b"kraken-key-1");
    assert_value(&bed, "beta.service", "KRAKEN_SECRET", b"kraken-secret-1");
    let refresh = bed.journal("credloader-refresh.service");
    assert!(
        refresh.contains("credential BINANCE_API_KEY"),
        "the fallback names the bad credential:\n{refresh}"
    );
    assert!(!refresh.contains("binance-key-1") && !refresh.contains("binance-secret-1"));
    assert!(
        !bed.active("alpha.service"),
        "alpha must not run without its key"
    );
    assert!(bed.read("/run/credloader/alpha.env").is_none());

    // The fix brings alpha up, as without the boot path.
    bed.seal("BINANCE_API_KEY", b"binance-key-2");
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{}", scene::text(&out));
    bed.wait_until("alpha to start", Duration::from_secs(10), || {
        bed.active("alpha.service")
    });
    assert_value(&bed, "alpha.service", "BINANCE_API_KEY", b"binance-key-2");
}

#[test]
fn a_credential_retired_after_the_generator_ran_does_not_fail_the_unit() {
    let bed = fleet();
    reboot(&bed);
    bed.wait_until("beta to run", Duration::from_secs(15), || {
        bed.active("beta.service")
    });
    // beta no longer needs KRAKEN_SECRET, and its file is gone; no
    // daemon-reload since, so PID 1 is still told to load it.
    bed.config(
        "beta",
        "[services.beta]\nunit = \"beta.service\"\nuser = \"bot\"\n\
         credentials = [\"KRAKEN_KEY\"]\n",
    );
    bed.sh_ok("rm /etc/quantum/creds/KRAKEN_SECRET.cred");
    let dropin = generated(&bed);
    assert!(
        dropin.contains("LoadCredentialEncrypted=KRAKEN_SECRET:")
            && dropin.contains("\nSetCredential=KRAKEN_SECRET:\\x00\n"),
        "{dropin}"
    );
    let before = bed.monotonic("beta.service", "ExecMainStartTimestampMonotonic");
    let refresh_before = bed.unit_property("credloader-refresh.service", "InvocationID");

    let out = bed.systemctl(&["restart", "credloader.service"]);
    assert!(out.status.success(), "{}", scene::text(&out));
    assert_eq!(bed.unit_property("credloader.service", "Result"), "success");
    let journal = bed.journal("credloader.service");
    assert!(!journal.contains("243/CREDENTIALS"), "{journal}");
    assert_eq!(
        bed.unit_property("credloader-refresh.service", "InvocationID"),
        refresh_before,
        "no fallback was needed: the refresh unit did not run"
    );
    bed.wait_until("beta to restart", Duration::from_secs(10), || {
        bed.active("beta.service")
            && bed.monotonic("beta.service", "ExecMainStartTimestampMonotonic") > before
    });
    assert_value(&bed, "beta.service", "KRAKEN_KEY", b"kraken-key-1");
    assert_eq!(value(&bed, "beta.service", "KRAKEN_SECRET"), None);
    assert_value(&bed, "alpha.service", "BINANCE_API_KEY", b"binance-key-1");
}

#[test]
fn the_generator_writes_nothing_and_exits_0_without_config_or_state() {
    let bed = Scene::boot(Path::new(CREDLOADER), &["qt"], &[("alpha", "qt")]);
    let run = |label: &str| -> String {
        bed.sh_ok("rm -rf /tmp/gen && mkdir -p /tmp/gen/normal /tmp/gen/early /tmp/gen/late");
        let out = bed.exec(&[
            GENERATOR,
            "/tmp/gen/normal",
            "/tmp/gen/early",
            "/tmp/gen/late",
        ]);
        assert!(out.status.success(), "{label}: {out:?}");
        assert!(out.stdout.is_empty(), "{label}: {out:?}");
        let stderr = testbed::lossy(&out.stderr);
        assert!(
            stderr.lines().count() <= 1,
            "{label}: one line at most: {stderr}"
        );
        let written = bed.sh_ok("find /tmp/gen -mindepth 2");
        assert_eq!(written, "", "{label}: nothing written");
        stderr
    };
    // No configuration at all.
    bed.sh_ok("rm -f /etc/quantum/credloader.toml");
    assert!(run("no configuration").contains("cannot load the configuration (no configuration"));
    // A configuration that does not parse.
    bed.write("/etc/quantum/credloader.toml", b"[loader\n", 0o644);
    assert!(run("broken configuration").contains("cannot load the configuration"));
    // A service, never applied: no state.
    bed.write(
        "/etc/quantum/credloader.toml",
        b"[services.alpha]\nunit = \"alpha.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\n",
        0o644,
    );
    bed.seal("K", b"k-1");
    assert!(run("no state").contains("no state"));
    // Wrong arguments.
    let out = bed.exec(&[GENERATOR]);
    assert!(out.status.success(), "{out:?}");
    // Boot with all of that still works; after an apply it hands K over.
    assert!(bed.credloader(&["apply"], None).status.success());
    bed.daemon_reload();
    assert!(
        testbed::lossy(&bed.read(GENERATED).unwrap_or_default())
            .contains("LoadCredentialEncrypted=K:/etc/quantum/creds/K.cred"),
        "{:?}",
        bed.read(GENERATED)
    );
}
