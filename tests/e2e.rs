//! End to end on a real systemd (PID 1 in a throwaway namespace, see
//! docs/testbed.md): units start, drop-ins load, EnvironmentFile= is read by
//! PID 1, services restart for real. Each test boots its own bed.

#[path = "support/scene.rs"]
mod scene;
#[path = "support/testbed.rs"]
mod testbed;

use std::path::Path;
use std::time::Duration;

use scene::Scene;

const CREDLOADER: &str = env!("CARGO_BIN_EXE_credloader");

/// A bed as after install, with users `qt` and `bot` and the consumers
/// `alpha` (qt), `beta` (bot) and `gamma` (qt).
fn boot() -> Scene {
    Scene::boot(
        Path::new(CREDLOADER),
        &["qt", "bot"],
        &[("alpha", "qt"), ("beta", "bot"), ("gamma", "qt")],
    )
}

/// The standard setup: alpha (qt) gets the Binance pair and a static,
/// beta (bot) gets the Kraken key.
fn two_consumers(bed: &Scene) {
    bed.config(
        "alpha",
        "[services.alpha]\nunit = \"alpha.service\"\nuser = \"qt\"\n\
         credentials = [\"BINANCE_API_KEY\", \"BINANCE_API_SECRET\"]\n\
         static = { EXIT_BRAIN_V35_ENABLED = \"true\" }\n",
    );
    bed.config("beta", "[services.beta]\nunit = \"beta.service\"\nuser = \"bot\"\ncredentials = [\"KRAKEN_KEY\"]\n");
    bed.seal("BINANCE_API_KEY", b"binance-key-1");
    bed.seal("BINANCE_API_SECRET", b"binance-secret-1");
    bed.seal("KRAKEN_KEY", b"kraken-key-1");
    bed.sh_ok("systemctl enable alpha.service beta.service credloader.service credloader.path");
}

/// Like a reboot of the trading services: everything stopped, /run's env
/// files gone (it is a tmpfs), then the target started.
fn boot_services(bed: &Scene) {
    bed.sh_ok("systemctl stop e2e.target alpha.service beta.service gamma.service credloader.service; rm -f /run/credloader/*.env");
    let out = bed.systemctl(&["start", "e2e.target"]);
    assert!(
        out.status.success(),
        "start e2e.target: {out:?}\n{}",
        bed.journal("credloader.service")
    );
}

fn var<'a>(env: &'a std::collections::BTreeMap<String, Vec<u8>>, k: &str) -> Option<&'a [u8]> {
    env.get(k).map(Vec::as_slice)
}

#[test]
fn units_verify_cleanly_offline() {
    let bed = boot();
    let out = bed.sh(
        "systemd-analyze verify --man=no /etc/systemd/system/credloader.service \
         /etc/systemd/system/credloader-refresh.service /etc/systemd/system/credloader.path 2>&1",
    );
    let text = testbed::lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
}

#[test]
fn boot_path_delivers_each_consumer_exactly_its_own_secrets() {
    let bed = boot();
    two_consumers(&bed);
    // The operator's first apply writes the drop-ins; then the host "boots".
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{out:?}");
    boot_services(&bed);

    let alpha = bed.environ("alpha.service");
    assert_eq!(var(&alpha, "BINANCE_API_KEY"), Some(&b"binance-key-1"[..]));
    assert_eq!(
        var(&alpha, "BINANCE_API_SECRET"),
        Some(&b"binance-secret-1"[..])
    );
    assert_eq!(var(&alpha, "EXIT_BRAIN_V35_ENABLED"), Some(&b"true"[..]));
    assert_eq!(var(&alpha, "KRAKEN_KEY"), None);
    let beta = bed.environ("beta.service");
    assert_eq!(var(&beta, "KRAKEN_KEY"), Some(&b"kraken-key-1"[..]));
    assert_eq!(var(&beta, "BINANCE_API_KEY"), None);

    // credloader.service finished before either consumer started.
    let done = bed.monotonic("credloader.service", "ExecMainExitTimestampMonotonic");
    assert!(done > 0, "credloader.service ran at boot");
    for unit in ["alpha.service", "beta.service"] {
        let started = bed.monotonic(unit, "ExecMainStartTimestampMonotonic");
        assert!(
            done <= started,
            "{unit} started at {started}, before credloader finished at {done}"
        );
    }
    // The env files: the consumer's user, 0600, on /run.
    let stat = bed.sh_ok("stat -c '%U %a' /run/credloader/alpha.env /run/credloader/beta.env");
    assert_eq!(stat, "qt 600\nbot 600\n");
    assert_eq!(bed.unit_property("alpha.service", "NeedDaemonReload"), "no");
}

#[test]
fn a_consumer_with_a_bad_credential_does_not_start_the_other_runs_and_a_fix_brings_it_up() {
    let bed = boot();
    two_consumers(&bed);
    assert!(bed.credloader(&["apply"], None).status.success());
    // Tamper with alpha's sealed key.
    bed.sh_ok("sed -i 's/A/B/; s/a/b/' /etc/quantum/creds/BINANCE_API_KEY.cred");
    bed.sh_ok("systemctl stop e2e.target alpha.service beta.service credloader.service; rm -f /run/credloader/*.env");
    let _ = bed.systemctl(&["start", "e2e.target"]);

    bed.wait_until("beta to run", Duration::from_secs(10), || {
        bed.active("beta.service")
    });
    assert_eq!(
        var(&bed.environ("beta.service"), "KRAKEN_KEY"),
        Some(&b"kraken-key-1"[..])
    );
    assert!(
        !bed.active("alpha.service"),
        "alpha must not run without its key"
    );
    assert_eq!(bed.unit_property("alpha.service", "MainPID"), "0");
    let journal = bed.journal("credloader.service");
    assert!(
        journal.contains("credential BINANCE_API_KEY"),
        "journal must name the credential:\n{journal}"
    );
    assert!(!journal.contains("binance-key-1") && !journal.contains("binance-secret-1"));
    assert!(bed.read("/run/credloader/alpha.env").is_none());

    // Fixing the credential brings the failed consumer up with it.
    bed.seal("BINANCE_API_KEY", b"binance-key-2");
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{out:?}");
    bed.wait_until("alpha to start", Duration::from_secs(10), || {
        bed.active("alpha.service")
    });
    assert_eq!(
        var(&bed.environ("alpha.service"), "BINANCE_API_KEY"),
        Some(&b"binance-key-2"[..])
    );

    // A missing credential: the same, named as missing.
    bed.sh_ok("rm /etc/quantum/creds/BINANCE_API_KEY.cred");
    let out = bed.credloader(&["apply"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        testbed::lossy(&out.stdout).contains("credential BINANCE_API_KEY is missing"),
        "{out:?}"
    );
}

#[test]
fn rotation_restarts_only_the_consumers_of_the_changed_credential() {
    let bed = boot();
    two_consumers(&bed);
    assert!(bed.credloader(&["apply"], None).status.success());
    boot_services(&bed);
    bed.systemctl_ok(&["start", "credloader.path"]);
    let alpha_pid = bed.main_pid("alpha.service").unwrap();

    for round in 2..=11 {
        let before = bed.main_pid("beta.service").unwrap();
        let value = format!("kraken-key-{round}");
        bed.seal("KRAKEN_KEY", value.as_bytes());
        bed.wait_until(
            &format!("beta to restart with {value}"),
            Duration::from_secs(15),
            || {
                bed.active("beta.service")
                    && bed.main_pid("beta.service").is_some_and(|p| p != before)
                    && var(&bed.environ("beta.service"), "KRAKEN_KEY") == Some(value.as_bytes())
            },
        );
        assert_eq!(
            bed.main_pid("alpha.service"),
            Some(alpha_pid),
            "alpha must not restart (round {round})"
        );
    }
    // Ten rotations in a row: no start-limit failure, the watch still works.
    assert_eq!(
        bed.unit_property("credloader.path", "ActiveState"),
        "active"
    );
    assert_ne!(
        bed.unit_property("credloader-refresh.service", "ActiveState"),
        "failed"
    );
    assert_eq!(
        var(&bed.environ("alpha.service"), "BINANCE_API_KEY"),
        Some(&b"binance-key-1"[..])
    );
}

#[test]
fn restarting_credloader_with_nothing_changed_restarts_nothing() {
    let bed = boot();
    two_consumers(&bed);
    assert!(bed.credloader(&["apply"], None).status.success());
    boot_services(&bed);
    let pids = (bed.main_pid("alpha.service"), bed.main_pid("beta.service"));
    let inode = bed.sh_ok("stat -c %i /run/credloader/alpha.env /run/credloader/beta.env");
    bed.systemctl_ok(&["restart", "credloader.service"]);
    assert!(bed.active("credloader.service"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (bed.main_pid("alpha.service"), bed.main_pid("beta.service")),
        pids
    );
    assert_eq!(
        bed.sh_ok("stat -c %i /run/credloader/alpha.env /run/credloader/beta.env"),
        inode
    );
    let out = bed.credloader(&["apply", "--json"], None);
    let report = testbed::lossy(&out.stdout);
    assert!(
        report.contains("\"daemon_reload\":false") && !report.contains("\"updated\""),
        "{report}"
    );
}

#[test]
fn hard_values_reach_the_service_byte_for_byte() {
    let bed = boot();
    let mut values: Vec<(String, Vec<u8>)> = [
        "quote\"double",
        "quote'single",
        "back\\slash\\",
        "dollar $HOME and ${HOME}",
        "back`tick`",
        "# hash at start",
        "; semicolon at start",
        "mid # hash ; semi",
        "  leading and trailing spaces  ",
        "\ttabs\t",
        "line1\nline2\n",
        "cr\r\nlf\r",
        "a=b=c",
        "ünïcødé ✓ 鍵",
        "",
    ]
    .iter()
    .enumerate()
    .map(|(i, v)| (format!("HARD_{i}"), v.as_bytes().to_vec()))
    .collect();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 $\"\\`'#;\n";
    values.push((
        "HARD_BIG".into(),
        (0..64 * 1024)
            .map(|i| alphabet[i % alphabet.len()])
            .collect(),
    ));

    let names: Vec<String> = values.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    // A trailing newline is part of a value only when its credential says so.
    let keep: String = values
        .iter()
        .filter(|(_, v)| v.ends_with(b"\n"))
        .map(|(n, _)| format!("[credentials.{n}]\nkeep_newline = true\n"))
        .collect();
    assert!(!keep.is_empty());
    bed.config(
        "gamma",
        &format!(
            "[services.gamma]\nunit = \"gamma.service\"\nuser = \"qt\"\ncredentials = [{}]\n{keep}",
            names.join(", ")
        ),
    );
    for (n, v) in &values {
        bed.seal(n, v);
    }
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{out:?}");
    bed.systemctl_ok(&["start", "gamma.service"]);
    let env = bed.environ("gamma.service");
    for (n, v) in &values {
        assert_eq!(
            var(&env, n),
            Some(v.as_slice()),
            "{n} did not survive the round trip"
        );
    }
}

#[test]
fn credential_delivery_hands_the_value_over_without_a_plaintext_file() {
    let bed = boot();
    let value = "gamma-secret-5f1d2c9e";
    bed.config(
        "gamma",
        "[services.gamma]\nunit = \"gamma.service\"\nuser = \"qt\"\ncredentials = [\"GAMMA_KEY\"]\ndelivery = \"credential\"\n",
    );
    bed.seal("GAMMA_KEY", value.as_bytes());
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{out:?}");
    bed.systemctl_ok(&["start", "gamma.service"]);

    let env = bed.environ("gamma.service");
    let dir = String::from_utf8(env["CREDENTIALS_DIRECTORY"].clone()).unwrap();
    // Read it the way the service does: as its user, from its credentials dir.
    let got = bed.sh_ok(&format!(
        "setpriv --reuid=qt --regid=qt --clear-groups cat {dir}/GAMMA_KEY"
    ));
    assert_eq!(got, value);
    assert!(var(&env, "GAMMA_KEY").is_none(), "not in the environment");
    // No plaintext anywhere credloader (or anyone) could have written it.
    let found = bed.sh(&format!(
        "grep -rlF -- '{value}' /etc /run /tmp /var/tmp /var/lib/credloader /var/lib/systemd /home /dev/shm 2>/dev/null \
         | grep -v '^/run/credentials/' || true"
    ));
    assert_eq!(
        testbed::lossy(&found.stdout).trim(),
        "",
        "plaintext found on disk"
    );
    assert!(bed.read("/run/credloader/gamma.env").is_none());
}

#[test]
fn an_env_file_is_refused_to_a_user_the_running_unit_does_not_run_as() {
    let bed = boot();
    two_consumers(&bed);
    // gamma runs as qt in its unit file, but a drop-in (as systemd sees it
    // after a reload) makes it run as root.
    bed.write(
        "/etc/systemd/system/gamma.service.d/10-root.conf",
        b"[Service]\nUser=\n",
        0o644,
    );
    bed.daemon_reload();
    bed.config("gamma", "[services.gamma]\nunit = \"gamma.service\"\nuser = \"qt\"\ncredentials = [\"KRAKEN_KEY\"]\n");
    let out = bed.credloader(&["apply"], None);
    assert_eq!(out.status.code(), Some(1), "{}", scene::text(&out));
    let text = scene::text(&out);
    assert!(
        text.contains("gamma.service runs as root (it has no User=)"),
        "{text}"
    );
    assert!(bed.read("/run/credloader/gamma.env").is_none());
    assert!(
        bed.read("/run/credloader/alpha.env").is_some(),
        "the others are served"
    );

    // User=qt, but one command runs as root (`+`): refused too.
    bed.write(
        "/etc/systemd/system/gamma.service.d/10-root.conf",
        b"[Service]\nExecStartPre=+/bin/true\n",
        0o644,
    );
    bed.daemon_reload();
    let out = bed.credloader(&["apply"], None);
    assert_eq!(out.status.code(), Some(1), "{}", scene::text(&out));
    let text = scene::text(&out);
    assert!(
        text.contains("gamma.service runs commands with full privileges (ExecStartPre=)"),
        "{text}"
    );
    assert!(bed.read("/run/credloader/gamma.env").is_none());

    // Two prefixes (systemd shows `flags=ignore-failure privileged`), and
    // PermissionsStartOnly=, which systemd does not show at all: the unit
    // files say it, and its ExecStartPre= runs as root.
    for (dropin, why) in [
        ("[Service]\nExecStartPre=-+/bin/true\n", "(ExecStartPre=)"),
        (
            "[Service]\nPermissionsStartOnly=yes\nExecStartPre=/bin/true\n",
            "(PermissionsStartOnly= at /etc/systemd/system/gamma.service.d/10-root.conf:2)",
        ),
    ] {
        bed.write(
            "/etc/systemd/system/gamma.service.d/10-root.conf",
            dropin.as_bytes(),
            0o644,
        );
        bed.daemon_reload();
        let out = bed.credloader(&["apply"], None);
        assert_eq!(out.status.code(), Some(1), "{}", scene::text(&out));
        let text = scene::text(&out);
        assert!(
            text.contains(&format!(
                "gamma.service runs commands with full privileges {why}"
            )),
            "{text}"
        );
        assert!(bed.read("/run/credloader/gamma.env").is_none());
    }

    bed.sh_ok("rm /etc/systemd/system/gamma.service.d/10-root.conf");
    bed.daemon_reload();
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{}", scene::text(&out));
    assert!(bed.read("/run/credloader/gamma.env").is_some());
}

#[test]
fn pid1_decrypts_in_bulk_and_a_bad_credential_falls_back_to_one_by_one() {
    let bed = boot();
    two_consumers(&bed);
    bed.config("gamma", "[services.gamma]\nunit = \"gamma.service\"\nuser = \"qt\"\ncredentials = [\"G1\", \"G2\"]\n");
    bed.seal("G1", b"gamma-one");
    bed.seal("G2", b"gamma-two");
    // Every systemd-run credloader starts leaves its argv behind.
    bed.write(
        "/usr/local/bin/systemd-run",
        b"#!/bin/sh\nprintf '%s\\n' \"$@\" >> /tmp/systemd-run.argv\nexec /usr/bin/systemd-run \"$@\"\n",
        0o755,
    );
    let out = bed.credloader(&["apply", "--json"], None);
    let report = testbed::lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        report.contains("\"decrypt\":{\"handed\":0,\"pid1\":5,\"systemd_creds\":0}"),
        "{report}"
    );
    // PID 1 read copies from a directory only root can enter, removed
    // since; the ciphertext itself was in no argv (every local user can
    // read argv, and a TPM-only credential is one decrypt from plaintext
    // for whoever may use the TPM).
    let argv = testbed::lossy(&bed.read("/tmp/systemd-run.argv").unwrap_or_default());
    assert!(
        argv.contains("LoadCredentialEncrypted=G1:/var/lib/credloader/decrypt."),
        "{argv}"
    );
    let sealed = testbed::lossy(&bed.read("/etc/quantum/creds/G1.cred").unwrap());
    let sealed: String = sealed.split_ascii_whitespace().collect();
    for piece in sealed.as_bytes().chunks(32).filter(|c| c.len() == 32) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(!argv.contains(piece), "ciphertext in argv: {piece}");
    }
    assert_eq!(
        bed.sh_ok("ls -a /var/lib/credloader | grep -c '^decrypt' || true")
            .trim(),
        "0"
    );
    bed.sh_ok("rm /usr/local/bin/systemd-run");
    bed.systemctl_ok(&["start", "alpha.service", "gamma.service"]);
    assert_eq!(
        var(&bed.environ("gamma.service"), "G2"),
        Some(&b"gamma-two"[..])
    );
    assert_eq!(
        var(&bed.environ("alpha.service"), "BINANCE_API_SECRET"),
        Some(&b"binance-secret-1"[..])
    );
    // The transient units are gone, and nothing was left in /run/credentials.
    assert_eq!(
        bed.sh_ok("ls /run/credentials | grep -c '^run-' || true")
            .trim(),
        "0"
    );

    // One tampered credential: PID 1 refuses the whole batch, so every
    // credential is decrypted one by one and only the bad one fails.
    bed.sh_ok("rm /run/credloader/*.env");
    bed.sh_ok("sed -i 's/A/B/; s/a/b/' /etc/quantum/creds/G1.cred");
    let out = bed.credloader(&["apply", "--json"], None);
    let report = testbed::lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        report.contains("\"decrypt\":{\"handed\":0,\"pid1\":0,\"systemd_creds\":5}"),
        "{report}"
    );
    assert!(report.contains("credential G1"), "{report}");
    assert!(
        bed.read("/run/credloader/alpha.env").is_some()
            && bed.read("/run/credloader/beta.env").is_some()
    );
    assert!(bed.read("/run/credloader/gamma.env").is_none());
}

#[test]
fn a_restart_systemd_refused_is_owed_and_made_by_the_next_apply() {
    let bed = boot();
    two_consumers(&bed);
    assert!(bed.credloader(&["apply"], None).status.success());
    boot_services(&bed);
    let before = bed.main_pid("beta.service").unwrap();
    // For a while, systemctl refuses to restart anything.
    bed.write(
        "/usr/local/bin/systemctl",
        b"#!/bin/sh\ncase \" $* \" in *' try-restart '*|*' start '*) echo 'refused (test)' >&2; exit 1;; esac\nexec /bin/systemctl \"$@\"\n",
        0o755,
    );
    bed.seal("KRAKEN_KEY", b"kraken-key-2");
    let out = bed.credloader(&["apply"], None);
    let text = testbed::lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a restart that did not happen is a failure: {out:?}"
    );
    assert!(
        text.contains("beta") && text.contains("the next apply retries"),
        "{text}"
    );
    assert_eq!(bed.main_pid("beta.service"), Some(before));

    // systemctl works again; nothing changed on disk since, yet the restart
    // is still owed, so the next apply makes it.
    bed.sh_ok("rm /usr/local/bin/systemctl");
    let out = bed.credloader(&["apply", "--json"], None);
    let text = testbed::lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("\"action\":\"try-restart\""), "{text}");
    bed.wait_until(
        "beta to run with the new key",
        Duration::from_secs(10),
        || {
            bed.main_pid("beta.service").is_some_and(|p| p != before)
                && var(&bed.environ("beta.service"), "KRAKEN_KEY") == Some(&b"kraken-key-2"[..])
        },
    );
    // And then it is settled: a further apply restarts nothing.
    let again = testbed::lossy(&bed.credloader(&["apply", "--json"], None).stdout);
    assert!(!again.contains("\"action\":\"try-restart\""), "{again}");
}
