//! `seal`, `rotate`, `rollback` and `generations` on `--root` images with
//! the real `systemd-creds`; health checks run for real as uid 1500.

mod common;

use common::{service, Tree, QT_UID};

const ENV: &str = "/run/credloader/position-monitor.env";
const CRED: &str = "/etc/quantum/creds/BINANCE_API_KEY.cred";

fn monitor(t: &Tree, check: &str, timeout: u32) {
    t.config(
        "position-monitor.toml",
        &format!(
            r#"
[services.position-monitor]
unit = "quantum-position-monitor.service"
user = "qt"
credentials = ["BINANCE_API_KEY"]
health_check = ["/bin/sh", "-c", '{check}']
health_timeout_sec = {timeout}
"#
        ),
    );
}

/// The monitor with the good-key check, applied with the old key; the
/// sealed bytes of that key.
fn monitored(t: &Tree) -> Vec<u8> {
    monitor(t, GOOD_ONLY, 10);
    t.seal("BINANCE_API_KEY", b"old-key-0123456789");
    t.credloader(&["apply"]).ok();
    t.read(CRED)
}

/// The check passes only with the good key, and only as uid 1500.
const GOOD_ONLY: &str = r#"test "$BINANCE_API_KEY" = good-key-0123456789 && test "$(id -u)" = 1500 && test "$USER" = qt"#;

fn env_has(t: &Tree, value: &str) -> bool {
    t.read_string(ENV)
        .contains(&format!("BINANCE_API_KEY=\"{value}\""))
}

#[test]
fn seal_writes_a_root_only_credential_and_never_shows_the_value() {
    let t = Tree::new();
    monitor(&t, "true", 5);
    let run = t.credloader_with_stdin(
        &["seal", "BINANCE_API_KEY", "--key", "host", "--json"],
        Some(b"zebra-secret-value-42"),
    );
    run.ok();
    assert_eq!(t.owner_mode(CRED), (0, 0, 0o600));
    assert_eq!(t.owner_mode("/etc/quantum/creds"), (0, 0, 0o700));
    let j = run.json();
    assert_eq!(j["name"], "BINANCE_API_KEY");
    assert_eq!(j["key"], "host");
    assert_eq!(j["consumers"][0], "position-monitor");
    assert_eq!(j["value"]["length"], 21);
    assert_eq!(j["value"]["masked"], "ze...***");
    assert!(!run.all().contains("zebra-secret"), "{run:?}");
    assert!(run.stdout.ends_with("}\n"));
    // The embedded name is set: apply delivers it.
    t.credloader(&["apply"]).ok();
    assert!(env_has(&t, "zebra-secret-value-42"));
    // show: masked only.
    let show = t.credloader(&["show", "BINANCE_API_KEY"]);
    show.ok();
    assert!(
        show.stdout.contains("ze...***") && show.stdout.contains("21 bytes"),
        "{show:?}"
    );
    assert!(!show.all().contains("zebra-secret"));
}

#[test]
fn seal_refuses_what_it_cannot_or_must_not_do() {
    let t = Tree::new();
    monitor(&t, "true", 5);
    t.seal("BINANCE_API_KEY", b"k-1");
    let before = t.read(CRED);
    let run = t.credloader_with_stdin(&["seal", "BINANCE_API_KEY"], Some(b"other"));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&t.cmd("rotate BINANCE_API_KEY")),
        "{run:?}"
    );
    assert_eq!(t.read(CRED), before);

    let run = t.credloader_with_stdin(&["seal", "bad/name"], Some(b"x"));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("bad/name"), "{run:?}");

    let run = t.credloader_with_stdin(&["seal", "EMPTY"], Some(b""));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("EMPTY") && run.stderr.contains("empty"),
        "{run:?}"
    );
    assert!(!t.exists("/etc/quantum/creds/EMPTY.cred"));

    // A value an env file cannot carry is refused at seal time, naming
    // the credential, the service and the variable.
    t.config(
        "other.toml",
        "[services.other]\nunit = \"other.service\"\nuser = \"bot\"\nenv = { OTHER_VAR = \"NULLY\" }\n",
    );
    let run = t.credloader_with_stdin(&["seal", "NULLY"], Some(b"abc\0def"));
    assert_eq!(run.code, 2, "{run:?}");
    for word in ["NULLY", "other", "OTHER_VAR", "NUL"] {
        assert!(run.stderr.contains(word), "{word}: {run:?}");
    }
    assert!(!t.exists("/etc/quantum/creds/NULLY.cred"));

    // Too large for systemd-creds.
    let big = vec![b'a'; 900 * 1024];
    let run = t.credloader_with_stdin(&["seal", "BIG"], Some(&big));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!t.exists("/etc/quantum/creds/BIG.cred"));

    // A not-after in the past.
    let run = t.credloader_with_stdin(&["seal", "OLD", "--not-after", "2001-01-01"], Some(b"v"));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("past"), "{run:?}");

    // --json errors are JSON too.
    let run = t.credloader_with_stdin(&["seal", "BINANCE_API_KEY", "--json"], Some(b"x"));
    assert_eq!(run.json()["exit_code"], 2);
}

#[test]
fn seal_from_file_with_not_after_is_listed_with_its_expiry() {
    let t = Tree::new();
    monitor(&t, "true", 5);
    t.write("/root/value.txt", b"from-file-secret-777", 0o600);
    let file = t.path("/root/value.txt");
    let run = t.credloader(&[
        "seal",
        "BINANCE_API_KEY",
        "--from-file",
        file.to_str().unwrap(),
        "--not-after",
        "+10d",
        "--json",
    ]);
    run.ok();
    let not_after = run.json()["not_after"].as_u64().unwrap();
    // The operator's file is left alone.
    assert_eq!(t.read("/root/value.txt"), b"from-file-secret-777");
    let list = t.credloader(&["list", "--json"]);
    list.ok();
    let c = &list.json()["credentials"][0];
    assert_eq!(c["name"], "BINANCE_API_KEY");
    assert_eq!(c["not_after"].as_u64(), Some(not_after));
    assert_eq!(c["key"], "host");
    // Its not-after is within check's 14 days.
    assert_eq!(c["status"], "expiring");
    assert!(!list.all().contains("from-file-secret"));
    // check warns: it expires within 14 days.
    t.credloader(&["apply"]).ok();
    let check = t.credloader(&["check", "--json"]);
    let j = check.json();
    let f = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["problem"].as_str().unwrap().contains("expires"))
        .unwrap_or_else(|| panic!("{check:?}"));
    assert_eq!(f["severity"], "warning");
    assert_eq!(f["subject"], "credential BINANCE_API_KEY");
}

#[test]
fn rotate_with_a_passing_health_check_installs_and_keeps_the_old_generation() {
    let t = Tree::new();
    let old = monitored(&t);
    let run = t.credloader_with_stdin(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"good-key-0123456789"),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_eq!(j["verified"], true);
    assert_eq!(j["rolled_back"], false);
    assert_eq!(j["units_checked"], false);
    assert_eq!(j["verification"][0]["health"]["result"], "passed");
    assert_eq!(j["previous_generation"], 1);
    assert!(env_has(&t, "good-key-0123456789"));
    assert_eq!(t.owner_mode(ENV), (QT_UID, QT_UID, 0o600));
    assert_eq!(t.owner_mode(CRED), (0, 0, 0o600));
    // The previous sealed bytes are generation 1, root-only.
    assert_eq!(
        t.read("/var/lib/credloader/generations/BINANCE_API_KEY/1.cred"),
        old
    );
    assert_eq!(
        t.owner_mode("/var/lib/credloader/generations/BINANCE_API_KEY"),
        (0, 0, 0o700)
    );
    assert_eq!(
        t.owner_mode("/var/lib/credloader/generations/BINANCE_API_KEY/1.cred"),
        (0, 0, 0o600)
    );
    let g = t.credloader(&["generations", "BINANCE_API_KEY", "--json"]);
    g.ok();
    assert_eq!(g.json()["generations"][0]["number"], 1);
    for r in [&run, &g] {
        assert!(!r.all().contains("0123456789"), "{r:?}");
    }
}

#[test]
fn rotate_with_a_failing_health_check_rolls_back_and_exits_4() {
    let t = Tree::new();
    let old = monitored(&t);
    let run = t.credloader_with_stdin(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"bad-key-0123456789"),
    );
    assert_eq!(run.code, 4, "{run:?}");
    let j = run.json();
    assert_eq!(j["rolled_back"], true);
    assert_eq!(j["verified"], false);
    assert_eq!(j["verification"][0]["health"]["result"], "failed");
    assert_eq!(j["verification"][0]["health"]["exit_code"], 1);
    // The old sealed bytes are back, and the service has the old value.
    assert_eq!(t.read(CRED), old);
    assert!(env_has(&t, "old-key-0123456789"));
    assert!(!run.all().contains("0123456789"), "{run:?}");
    // Human output says so.
    let run = t.credloader_with_stdin(&["rotate", "BINANCE_API_KEY"], Some(b"bad-key-2"));
    assert_eq!(run.code, 4);
    assert!(run.stdout.contains("rolled back"), "{run:?}");
    assert!(run.stdout.contains("failed with exit status 1"), "{run:?}");
}

/// A failed check says why: its exit status and its last lines, with every
/// secret value of the service masked (the key and the secret it printed,
/// also the secret as sealed with a trailing newline), in the human and the
/// JSON output; the static variable is not secret and is shown as it is.
#[test]
fn a_failed_health_check_shows_its_last_lines_with_every_secret_masked() {
    let t = Tree::new();
    t.config(
        "position-monitor.toml",
        r#"
[services.position-monitor]
unit = "quantum-position-monitor.service"
user = "qt"
credentials = ["BINANCE_API_KEY", "BINANCE_API_SECRET"]
static = { EXIT_BRAIN_V35_ENABLED = "true" }
health_check = ["/bin/sh", "-c", 'echo "key=$BINANCE_API_KEY secret=$BINANCE_API_SECRET brain=$EXIT_BRAIN_V35_ENABLED"; echo "{\"code\":-2015,\"msg\":\"Invalid API-key, IP, or permissions for action.\"}" >&2; test "$BINANCE_API_KEY" = old-key-0123456789 || exit 3']
health_timeout_sec = 10
"#,
    );
    t.seal("BINANCE_API_KEY", b"old-key-0123456789");
    // Sealed with a newline, as `echo` leaves it: the service gets it
    // without (the newline policy), and that is the form masked.
    t.seal("BINANCE_API_SECRET", b"secret-value-9876543210\n");
    t.credloader(&["apply"]).ok();
    let run = t.credloader_with_stdin(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"new-key-0123456789"),
    );
    assert_eq!(run.code, 4, "{run:?}");
    let j = run.json();
    let health = &j["verification"][0]["health"];
    assert_eq!(health["result"], "failed", "{j}");
    assert_eq!(health["exit_code"], 3, "{j}");
    assert_eq!(
        health["output"],
        serde_json::json!([
            "key=ne...*** secret=se...*** brain=true",
            "{\"code\":-2015,\"msg\":\"Invalid API-key, IP, or permissions for action.\"}"
        ]),
        "{j}"
    );
    let human =
        t.credloader_with_stdin(&["rotate", "BINANCE_API_KEY"], Some(b"new-key-0123456789"));
    assert_eq!(human.code, 4, "{human:?}");
    assert!(
        human
            .stdout
            .contains("health check failed with exit status 3")
            && human
                .stdout
                .contains("| key=ne...*** secret=se...*** brain=true")
            && human.stdout.contains("-2015"),
        "{human:?}"
    );
    for r in [&run, &human] {
        assert!(!r.all().contains("0123456789"), "{r:?}");
        assert!(!r.all().contains("9876543210"), "{r:?}");
    }
}

/// Issue #12: the seed's own `credentials.conf` sorts after
/// `50-credloader.conf` and loads a file that sets the rotated variable, so
/// the consumer would keep the old key. rotate does not count it verified:
/// it rolls back (exit 4) and names the file and line. Once the line is
/// gone, the same rotation verifies.
#[test]
fn a_consumer_whose_unit_loads_an_overriding_file_does_not_verify() {
    let t = Tree::new();
    let old = monitored(&t);
    let unit = "/etc/systemd/system/quantum-position-monitor.service";
    t.write(
        unit,
        b"[Service]\nUser=qt\nExecStart=/bin/sleep infinity\n",
        0o644,
    );
    let legacy = "/etc/quantum/position-monitor-secrets/binance.env";
    t.write(
        legacy,
        b"BINANCE_API_KEY=legacy-key\nEXIT_BRAIN_V35_ENABLED=true\n",
        0o600,
    );
    let dropin = format!("{unit}.d/credentials.conf");
    t.write(
        &dropin,
        format!("[Service]\nEnvironmentFile=-{legacy}\n").as_bytes(),
        0o644,
    );

    let run = t.credloader_with_stdin(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"good-key-0123456789"),
    );
    assert_eq!(run.code, 4, "{run:?}");
    let j = run.json();
    assert_eq!(j["rolled_back"], true);
    assert_eq!(j["verified"], false);
    // The health check passed: only the override fails the verification.
    assert_eq!(j["verification"][0]["health"]["result"], "passed");
    let why = j["verification"][0]["overridden"][0].as_str().unwrap();
    assert!(
        why.contains(&format!("{dropin}:2 loads EnvironmentFile={legacy}"))
            && why.contains("it sets BINANCE_API_KEY"),
        "{why}"
    );
    assert_eq!(t.read(CRED), old);
    let human =
        t.credloader_with_stdin(&["rotate", "BINANCE_API_KEY"], Some(b"good-key-0123456789"));
    assert_eq!(human.code, 4);
    assert!(
        human.stdout.contains("=> FAILED") && human.stdout.contains("credentials.conf:2"),
        "{human:?}"
    );
    assert!(!human.all().contains("legacy-key") && !run.all().contains("legacy-key"));

    std::fs::remove_file(t.path(&dropin)).unwrap();
    let run = t.credloader_with_stdin(&["rotate", "BINANCE_API_KEY"], Some(b"good-key-0123456789"));
    assert_eq!(run.code, 0, "{run:?}");
    assert!(env_has(&t, "good-key-0123456789"));
}

/// A rejected value is kept as a generation, marked rejected, and is no
/// duplicate of the current value: a plain `rollback` does not pick it, but
/// `rollback --to N` retries it once the cause is fixed (here: the exchange
/// whitelists the host, a marker file the check looks for).
#[test]
fn a_rejected_value_is_kept_as_a_marked_generation_for_a_deliberate_retry() {
    let t = Tree::new();
    let exchange = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        exchange.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let whitelisted = exchange.path().join("whitelisted");
    monitor(
        &t,
        &format!(
            r#"test "$BINANCE_API_KEY" != new-key-0123456789 || test -e {}"#,
            whitelisted.display()
        ),
        10,
    );
    t.seal("BINANCE_API_KEY", b"old-key-0123456789");
    t.credloader(&["apply"]).ok();
    let old = t.read(CRED);
    let gens = "/var/lib/credloader/generations/BINANCE_API_KEY";

    let run = t.credloader_with_stdin(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"new-key-0123456789"),
    );
    assert_eq!(run.code, 4, "{run:?}");
    let j = run.json();
    assert_eq!(j["rolled_back"], true, "{j}");
    assert_eq!(j["previous_generation"], serde_json::Value::Null, "{j}");
    assert_eq!(j["rejected_generation"], 2, "{j}");
    assert_eq!(t.read(CRED), old);
    assert!(env_has(&t, "old-key-0123456789"));
    // Generation 1 (the old value, current again) is gone; 2 is the new one.
    assert!(!t.exists(&format!("{gens}/1.cred")));
    assert_ne!(t.read(&format!("{gens}/2.cred")), old);
    assert_eq!(t.owner_mode(&format!("{gens}/2.cred")), (0, 0, 0o600));
    let g = t.credloader(&["generations", "BINANCE_API_KEY", "--json"]);
    g.ok();
    let gj = g.json();
    let kept = gj["generations"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "{gj}");
    assert_eq!(kept[0]["number"], 2);
    assert!(kept[0]["rejected_at"].is_u64(), "{gj}");
    assert_ne!(kept[0]["digest"], gj["current"]["digest"], "{gj}");
    let g = t.credloader(&["generations", "BINANCE_API_KEY"]);
    assert!(g.stdout.contains("REJECTED"), "{g:?}");
    assert!(!g.stdout.contains("same as current"), "{g:?}");

    // A plain rollback does not bring a rejected value back.
    let rb = t.credloader(&["rollback", "BINANCE_API_KEY"]);
    assert_eq!(rb.code, 2, "{rb:?}");
    assert!(rb.stderr.contains("--to N"), "{rb:?}");
    assert_eq!(t.read(CRED), old);

    // The exchange whitelists the host: retry the rejected value on purpose.
    std::fs::write(&whitelisted, b"").unwrap();
    let rb = t.credloader(&["rollback", "BINANCE_API_KEY", "--to", "2", "--json"]);
    assert_eq!(rb.code, 0, "{rb:?}");
    let rj = rb.json();
    assert_eq!(rj["restored_was_rejected"], true, "{rj}");
    assert_eq!(rj["verified"], true, "{rj}");
    // The old value keeps its number 1 (it was generation 1 before the
    // rejected rotation, and current as 1 after it): numbers are stable.
    assert_eq!(rj["replaced_kept_as"], 1, "{rj}");
    assert!(env_has(&t, "new-key-0123456789"));
    assert_eq!(t.read(&format!("{gens}/1.cred")), old);
    // Verified now: no longer marked rejected.
    let g2 = t.credloader(&["generations", "BINANCE_API_KEY", "--json"]);
    let marked: Vec<u64> = g2.json()["generations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| !x["rejected_at"].is_null())
        .map(|x| x["number"].as_u64().unwrap())
        .collect();
    assert!(marked.is_empty(), "{g2:?}");
    let g2j = g2.json();
    assert_eq!(g2j["current"]["number"], 2, "{g2j}");
    assert_eq!(g2j["current"]["masked"], "ne...***", "{g2j}");
    let g3 = t.credloader(&["generations", "BINANCE_API_KEY"]);
    let lines: Vec<&str> = g3.stdout.lines().collect();
    assert!(lines[1].starts_with("1     kept      ol...***"), "{g3:?}");
    assert!(lines[2].starts_with("2     current   ne...***"), "{g3:?}");
    for r in [&run, &g, &rb, &g2, &g3] {
        assert!(!r.all().contains("0123456789"), "{r:?}");
    }
}

/// Each value gets a number once and keeps it: rotations and rollbacks
/// move values between current and kept, never renumber them, and
/// `generations` marks the current one and shows each one masked.
#[test]
fn generations_number_each_value_once_and_mark_the_current_one() {
    let t = Tree::new();
    monitor(&t, "true", 5);
    let seal = t.credloader_with_stdin(
        &["seal", "BINANCE_API_KEY", "--key", "host"],
        Some(b"alpha-value-0123456789"),
    );
    seal.ok();
    for v in ["bravo-value-0123456789", "charlie-value-0123456789"] {
        t.credloader_with_stdin(&["rotate", "BINANCE_API_KEY"], Some(v.as_bytes()))
            .ok();
    }
    let table = |t: &Tree| -> Vec<(u64, bool, String)> {
        let g = t.credloader(&["generations", "BINANCE_API_KEY", "--json"]);
        g.ok();
        assert!(!g.all().contains("0123456789"), "{g:?}");
        let j = g.json();
        let mut rows: Vec<(u64, bool, String)> = j["generations"]
            .as_array()
            .unwrap()
            .iter()
            .chain(std::iter::once(&j["current"]))
            .map(|r| {
                (
                    r["number"].as_u64().unwrap(),
                    r["current"].as_bool().unwrap(),
                    r["masked"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        rows.sort();
        rows.dedup();
        rows
    };
    let row = |n: u64, current: bool, m: &str| (n, current, m.to_string());
    assert_eq!(
        table(&t),
        [
            row(1, false, "al...***"),
            row(2, false, "br...***"),
            row(3, true, "cha...***")
        ]
    );
    // Back to bravo: it is current again as 2, charlie is kept as 3.
    let rb = t.credloader(&["rollback", "BINANCE_API_KEY", "--json"]);
    rb.ok();
    assert_eq!(rb.json()["restored_generation"], 2);
    assert_eq!(rb.json()["replaced_kept_as"], 3);
    assert_eq!(
        table(&t),
        [
            row(1, false, "al...***"),
            row(2, true, "br...***"),
            row(3, false, "cha...***")
        ]
    );
    // And forth: still three values, three numbers.
    let rb = t.credloader(&["rollback", "BINANCE_API_KEY", "--to", "3", "--json"]);
    rb.ok();
    assert_eq!(rb.json()["replaced_kept_as"], 2);
    assert_eq!(
        table(&t),
        [
            row(1, false, "al...***"),
            row(2, false, "br...***"),
            row(3, true, "cha...***")
        ]
    );
    // A fourth value gets 4, never a number that was shown before.
    let run = t.credloader_with_stdin(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"delta-value-0123456789"),
    );
    run.ok();
    assert_eq!(run.json()["previous_generation"], 3);
    let human = t.credloader(&["generations", "BINANCE_API_KEY"]);
    assert!(
        human.stdout.contains("4     current   de...***")
            && human.stdout.contains("3     kept      cha...***"),
        "{human:?}"
    );
    // Without the image's key file, the values are listed, not decrypted.
    let out = t
        .command(&["generations", "BINANCE_API_KEY"])
        .env_remove("SYSTEMD_CREDENTIAL_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not decrypted"),
        "{out:?}"
    );
}

/// An error after the new value is installed (here: the image's account
/// database became unreadable, so the apply cannot run) puts the previous
/// value back before it is reported: no half-done rotation for the next
/// (path-triggered) apply to deliver unverified.
#[test]
fn an_error_after_install_puts_the_previous_value_back() {
    let t = Tree::new();
    let old = monitored(&t);
    std::fs::remove_file(t.path("/etc/passwd")).unwrap();
    t.mkdir("/etc/passwd", 0o755);
    let run = t.credloader_with_stdin(&["rotate", "BINANCE_API_KEY"], Some(b"good-key-0123456789"));
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("/etc/passwd"), "{run:?}");
    assert!(
        run.stderr.contains("undone for BINANCE_API_KEY")
            && run.stderr.contains("previous value is back in place"),
        "{run:?}"
    );
    assert_eq!(t.read(CRED), old, "the previous sealed value is back");
    assert!(env_has(&t, "old-key-0123456789"));
    assert!(!run.all().contains("0123456789"), "{run:?}");
    // Once the cause is fixed, the rotation works.
    std::fs::remove_dir(t.path("/etc/passwd")).unwrap();
    t.write(
        "/etc/passwd",
        b"root:x:0:0::/root:/bin/sh\nqt:x:1500:1500::/home/qt:/bin/sh\n",
        0o644,
    );
    t.credloader_with_stdin(&["rotate", "BINANCE_API_KEY"], Some(b"good-key-0123456789"))
        .ok();
    assert!(env_has(&t, "good-key-0123456789"));
}

/// A consumer whose config file broke after its last apply is still served
/// by apply, from its last good definition: `rotate` validates a new value
/// for it, applies to it and verifies it (rolling a bad value back), and
/// `rollback` applies to it too; nothing reaches it unverified.
#[test]
fn a_consumer_whose_config_file_broke_is_still_validated_and_verified() {
    let t = Tree::new();
    let old = monitored(&t);
    let file = t.read_string("/etc/quantum/credloader.d/position-monitor.toml");
    t.config("position-monitor.toml", &format!("{file}no_such_key = 1\n"));
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1, "served from its last good definition: {run:?}");

    // A value its env file cannot carry is refused.
    let run = t.credloader_with_stdin(&["rotate", "BINANCE_API_KEY"], Some(b"nul\0key-0123456789"));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("position-monitor"), "{run:?}");
    assert_eq!(t.read(CRED), old);

    // A value its health check rejects is rolled back.
    let run = t.credloader_with_stdin(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"bad-key-0123456789"),
    );
    assert_eq!(run.code, 4, "{run:?}");
    let j = run.json();
    assert_eq!(
        j["consumers"],
        serde_json::json!(["position-monitor"]),
        "{j}"
    );
    assert_eq!(j["verification"][0]["health"]["result"], "failed", "{j}");
    assert_eq!(t.read(CRED), old);
    assert!(env_has(&t, "old-key-0123456789"));

    // A good one is delivered and verified.
    let run = t.credloader_with_stdin(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"good-key-0123456789"),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_eq!(j["verified"], true, "{j}");
    assert_eq!(j["verification"][0]["service"], "position-monitor", "{j}");
    assert_eq!(j["verification"][0]["health"]["result"], "passed", "{j}");
    assert!(env_has(&t, "good-key-0123456789"));

    // rollback delivers to it and verifies it as well (the old key fails
    // this check, so it reports exit 1; rollback undoes nothing).
    let run = t.credloader(&["rollback", "BINANCE_API_KEY", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let j = run.json();
    assert_eq!(
        j["consumers"],
        serde_json::json!(["position-monitor"]),
        "{j}"
    );
    assert_eq!(j["verification"][0]["health"]["result"], "failed", "{j}");
    assert!(env_has(&t, "old-key-0123456789"));
    assert!(!run.all().contains("0123456789"), "{run:?}");
}

#[test]
fn a_health_check_that_hangs_is_killed_at_its_timeout_and_rolled_back() {
    let t = Tree::new();
    monitor(&t, "sleep 60", 1);
    t.seal("BINANCE_API_KEY", b"old-key-0123456789");
    t.credloader(&["apply"]).ok();
    let start = std::time::Instant::now();
    let run = t.credloader_with_stdin(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"new-value-1"),
    );
    assert_eq!(run.code, 4, "{run:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(
        run.json()["verification"][0]["health"]["result"],
        "timed_out"
    );
    assert!(env_has(&t, "old-key-0123456789"));
}

#[test]
fn rotate_no_apply_only_stages_and_rollback_restores() {
    let t = Tree::new();
    monitor(&t, "true", 5);
    t.seal("BINANCE_API_KEY", b"first-value-000");
    t.credloader(&["apply"]).ok();
    let first = t.read(CRED);
    let run = t.credloader_with_stdin(
        &["rotate", "BINANCE_API_KEY", "--no-apply"],
        Some(b"second-value-000"),
    );
    run.ok();
    assert!(run.stdout.contains("--no-apply"), "{run:?}");
    assert!(env_has(&t, "first-value-000"), "the env file is untouched");
    assert_ne!(t.read(CRED), first);
    t.credloader(&["apply"]).ok();
    assert!(env_has(&t, "second-value-000"));

    // Roll back to generation 1: the first value, applied.
    let run = t.credloader(&["rollback", "BINANCE_API_KEY", "--json"]);
    run.ok();
    assert_eq!(run.json()["restored_generation"], 1);
    assert_eq!(run.json()["replaced_kept_as"], 2);
    assert_eq!(t.read(CRED), first);
    assert!(env_has(&t, "first-value-000"));
    assert!(!run.all().contains("value-000"));

    let run = t.credloader(&["rollback", "BINANCE_API_KEY", "--to", "99"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no generation 99"), "{run:?}");
    assert!(run.stderr.contains("1, 2"), "{run:?}");
}

#[test]
fn rotate_and_rollback_of_unknown_credentials_say_what_to_do() {
    let t = Tree::new();
    monitor(&t, "true", 5);
    let run = t.credloader_with_stdin(&["rotate", "BINANCE_API_KEY"], Some(b"x"));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&t.cmd("seal BINANCE_API_KEY")),
        "{run:?}"
    );
    let run = t.credloader(&["rollback", "BINANCE_API_KEY"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no kept generations"), "{run:?}");
    let run = t.credloader(&["generations", "NOPE"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("NOPE"), "{run:?}");
}

#[test]
fn generations_are_pruned_to_keep_generations() {
    let t = Tree::new();
    monitor(&t, "true", 5);
    t.config("00-loader.toml", "[loader]\nkeep_generations = 2\n");
    t.seal("BINANCE_API_KEY", b"v0-aaaaaaaa");
    for i in 1..=4 {
        t.credloader_with_stdin(
            &["rotate", "BINANCE_API_KEY"],
            Some(format!("v{i}-aaaaaaaa").as_bytes()),
        )
        .ok();
    }
    let g = t.credloader(&["generations", "BINANCE_API_KEY", "--json"]);
    let nums: Vec<u64> = g.json()["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["number"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, vec![3, 4]);
    assert!(!t.exists("/var/lib/credloader/generations/BINANCE_API_KEY/1.cred"));
}

/// `seal` on a real terminal (a pty from `script`): it asks twice without
/// echo, seals what was typed, and refuses two entries that differ.
#[test]
fn seal_at_a_terminal_asks_twice_without_echo() {
    let t = Tree::new();
    let typed = |name: &str, input: &str| {
        let command = format!(
            "{} --root {} seal {name} --key host",
            env!("CARGO_BIN_EXE_credloader"),
            t.root().display()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("SYSTEMD_CREDENTIAL_SECRET", t.secret())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script(1) from util-linux");
        use std::io::Write;
        // Line by line, as a person types, each after the prompt is shown.
        let mut stdin = child.stdin.take().unwrap();
        for line in input.split_inclusive('\n') {
            std::thread::sleep(std::time::Duration::from_millis(300));
            stdin.write_all(line.as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let (code, screen) = typed("TYPED_KEY", "typed-secret-4711\ntyped-secret-4711\n");
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("Value for TYPED_KEY") && screen.contains("Again"),
        "{screen}"
    );
    assert!(
        !screen.contains("typed-secret-4711"),
        "the value was echoed: {screen}"
    );
    assert_eq!(
        t.owner_mode("/etc/quantum/creds/TYPED_KEY.cred"),
        (0, 0, 0o600)
    );
    let shown = t.credloader(&["show", "TYPED_KEY", "--json"]);
    assert!(shown.stdout.contains("\"length\":17"), "{shown:?}");

    let (code, screen) = typed("OTHER_KEY", "first-value-1234\nsecond-value-567\n");
    assert_eq!(code, Some(2), "{screen}");
    assert!(screen.contains("differ"), "{screen}");
    assert!(!t.exists("/etc/quantum/creds/OTHER_KEY.cred"));
}

#[test]
fn an_image_is_never_sealed_or_decrypted_with_this_hosts_key() {
    let t = Tree::new();
    t.config("a.toml", &service("alpha", "qt", &["K"]));
    // A systemd-creds that only says it was called (the real one would use,
    // or even create, /var/lib/systemd/credential.secret of this host).
    let bin = tempfile::tempdir().unwrap();
    let called = bin.path().join("called");
    let fake = bin.path().join("systemd-creds");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch {}\nexit 1\n", called.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    for args in [
        &["seal", "K"][..],
        &["apply"],
        &["apply", "--dry-run"],
        &["rotate", "K"],
        &["show", "K"],
    ] {
        let out = t
            .command(args)
            .env_remove("SYSTEMD_CREDENTIAL_SECRET")
            .env("PATH", &path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("set SYSTEMD_CREDENTIAL_SECRET"),
            "{args:?}: {err}"
        );
    }
    assert!(!called.exists(), "systemd-creds was run");
    // Commands that neither seal nor decrypt work as before.
    let out = t
        .command(&["list"])
        .env_remove("SYSTEMD_CREDENTIAL_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // With the image's key file: never this machine's TPM, and the default
    // (auto) seals with the key file only.
    for key in ["tpm2", "host+tpm2"] {
        let run = t.credloader_with_stdin(&["seal", "K", "--key", key], Some(b"v"));
        assert_eq!(run.code, 2, "{key}: {run:#?}");
        assert!(
            run.stderr.contains("never with this machine's TPM"),
            "{run:#?}"
        );
    }
    t.credloader_with_stdin(&["seal", "K"], Some(b"v")).ok();
    let list = t.credloader(&["list", "--json"]);
    assert_eq!(list.json()["credentials"][0]["key"], "host", "{list:#?}");
}

#[test]
fn ctrl_c_at_the_prompt_cancels_and_leaves_the_terminal_echoing() {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    use std::io::Read;
    use std::process::Stdio;
    let t = Tree::new();
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut child = t
        .command(&["seal", "K"])
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()))
        .spawn()
        .unwrap();
    // Wait for the prompt (echo is off from then on), then do what Ctrl-C does.
    let mut master = std::fs::File::from(pty.master);
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("Value for K: ") {
        let n = master.read(&mut buf).unwrap();
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(!tcgetattr(&pty.slave)
        .unwrap()
        .local_flags
        .contains(LocalFlags::ECHO));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "cancelled, not killed: {status:?}");
    assert!(
        tcgetattr(&pty.slave)
            .unwrap()
            .local_flags
            .contains(LocalFlags::ECHO),
        "the terminal was left without echo"
    );
    assert!(!t.exists("/etc/quantum/creds/K.cred"));
}
