//! `credloader rotate` on a real systemd (see docs/testbed.md): a passing
//! health check restarts only the credential's consumer; a failing one rolls
//! back, the consumer runs the old value again, and rotate exits 4.

#[path = "binance/mod.rs"]
mod binance;
#[path = "support/scene.rs"]
mod scene;
#[path = "support/testbed.rs"]
mod testbed;

use std::path::Path;
use std::time::Duration;

use scene::{text, Scene};

const CREDLOADER: &str = env!("CARGO_BIN_EXE_credloader");

/// A bed as after install, with consumers `alpha` (qt) and `beta` (bot).
fn boot() -> Scene {
    Scene::boot(
        Path::new(CREDLOADER),
        &["qt", "bot"],
        &[("alpha", "qt"), ("beta", "bot")],
    )
}

/// alpha (qt) consumes BINANCE_API_KEY and checks it is not `bad-key-xyz`
/// (as qt); beta (bot) consumes KRAKEN_KEY. Both sealed, applied, running.
fn alpha_and_beta_running(bed: &Scene) {
    bed.write(
        "/etc/quantum/credloader.d/alpha.toml",
        br#"[services.alpha]
unit = "alpha.service"
user = "qt"
credentials = ["BINANCE_API_KEY"]
health_check = ["/bin/sh", "-c", "test \"$BINANCE_API_KEY\" != bad-key-xyz && test \"$(id -un)\" = qt"]
health_timeout_sec = 15
"#,
        0o644,
    );
    bed.write(
        "/etc/quantum/credloader.d/beta.toml",
        b"[services.beta]\nunit = \"beta.service\"\nuser = \"bot\"\ncredentials = [\"KRAKEN_KEY\"]\n",
        0o644,
    );
    for (name, value) in [
        ("BINANCE_API_KEY", &b"old-key-xyz"[..]),
        ("KRAKEN_KEY", b"kraken-xyz"),
    ] {
        let out = bed.credloader(&["seal", name, "--key", "host"], Some(value));
        assert!(out.status.success(), "seal {name}: {}", text(&out));
    }
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{}", text(&out));
    bed.systemctl_ok(&["start", "alpha.service", "beta.service"]);
}

#[test]
fn rotate_verifies_restarts_only_its_consumer_and_rolls_back_a_bad_value() {
    let bed = boot();
    alpha_and_beta_running(&bed);
    let alpha0 = bed.main_pid("alpha.service").expect("alpha runs");
    let beta0 = bed.main_pid("beta.service").expect("beta runs");
    assert_eq!(
        bed.environ("alpha.service")
            .get("BINANCE_API_KEY")
            .map(Vec::as_slice),
        Some(&b"old-key-xyz"[..])
    );

    // A good value: installed, alpha restarted and verified, beta untouched.
    let out = bed.credloader(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"good-key-xyz"),
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        bed.journal("alpha.service")
    );
    assert!(!text(&out).contains("good-key-xyz"));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["verified"], true);
    assert!(j.get("units_checked").is_none(), "units were checked: {j}");
    let check = &j["verification"][0];
    assert_eq!(check["service"], "alpha");
    assert_eq!(check["unit_ok"], true);
    assert!(
        check["unit_state"].as_str().unwrap().contains("restarted"),
        "{j}"
    );
    assert_eq!(check["health"]["result"], "passed");
    let alpha1 = bed.main_pid("alpha.service").expect("alpha runs");
    assert_ne!(alpha1, alpha0, "alpha was restarted");
    assert_eq!(
        bed.environ("alpha.service")
            .get("BINANCE_API_KEY")
            .map(Vec::as_slice),
        Some(&b"good-key-xyz"[..])
    );
    assert_eq!(
        bed.main_pid("beta.service"),
        Some(beta0),
        "beta was not restarted"
    );

    // A bad value: the health check fails, the good value comes back.
    let out = bed.credloader(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"bad-key-xyz"),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(!text(&out).contains("bad-key-xyz") && !text(&out).contains("good-key-xyz"));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["rolled_back"], true);
    assert_eq!(j["verification"][0]["health"]["result"], "failed", "{j}");
    assert_eq!(j["rollback"]["verified"], true, "{j}");
    assert_eq!(j["rejected_generation"], 3, "{j}");
    bed.wait_until("alpha active again", Duration::from_secs(10), || {
        bed.unit_property("alpha.service", "ActiveState") == "active"
    });
    assert_ne!(
        bed.main_pid("alpha.service"),
        Some(alpha1),
        "restarted twice"
    );
    assert_eq!(
        bed.environ("alpha.service")
            .get("BINANCE_API_KEY")
            .map(Vec::as_slice),
        Some(&b"good-key-xyz"[..]),
        "alpha runs the previous value again"
    );
    assert_eq!(
        bed.main_pid("beta.service"),
        Some(beta0),
        "beta never restarted"
    );

    // The history has the value the good rotation replaced (1) and the
    // rejected one (3, marked); not the good value again, which is current
    // (its generation 2 was dropped). Status sees everything in place.
    let out = bed.credloader(&["generations", "BINANCE_API_KEY", "--json"], None);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept = j["generations"].as_array().unwrap();
    let numbers: Vec<u64> = kept.iter().map(|g| g["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 3], "{j}");
    assert!(kept[0]["rejected_at"].is_null(), "{j}");
    assert!(kept[1]["rejected_at"].is_u64(), "{j}");
    assert!(
        kept.iter().all(|g| g["digest"] != j["current"]["digest"]),
        "{j}"
    );
    let out = bed.credloader(&["status", "--json", "--service", "alpha"], None);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &j["services"][0];
    assert_eq!(s["active_state"], "active", "{j}");
    assert_eq!(s["dropin_loaded"], true, "{j}");
    assert_eq!(s["env_file_matches"], true, "{j}");
}

/// A failed check run as a transient unit says why: its exit status and
/// its last lines come back over a pipe, every secret value of the service
/// masked, in rotate's human and JSON output and in the journal, and the
/// journal never holds the values (the check's output never reaches it).
#[test]
fn a_failed_check_says_why_masked_in_the_output_and_the_journal() {
    let bed = boot();
    bed.config(
        "alpha",
        r#"[services.alpha]
unit = "alpha.service"
user = "qt"
credentials = ["BINANCE_API_KEY", "BINANCE_API_SECRET"]
static = { EXIT_BRAIN_V35_ENABLED = "true" }
health_check = ["/bin/sh", "-c", 'echo "key=$BINANCE_API_KEY"; echo "secret=$BINANCE_API_SECRET brain=$EXIT_BRAIN_V35_ENABLED as $(id -un)" >&2; test "$BINANCE_API_KEY" = old-key-0123456789 || exit 3']
health_timeout_sec = 15
"#,
    );
    bed.seal("BINANCE_API_KEY", b"old-key-0123456789");
    bed.seal("BINANCE_API_SECRET", b"the-secret-9876543210");
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{}", text(&out));
    bed.systemctl_ok(&["start", "alpha.service"]);

    let out = bed.credloader(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"new-key-0123456789"),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let health = &j["verification"][0]["health"];
    assert_eq!(health["exit_code"], 3, "{j}");
    assert_eq!(
        health["output"],
        serde_json::json!(["key=ne...***", "secret=th...*** brain=true as qt"]),
        "{j}"
    );
    let human = bed.credloader(&["rotate", "BINANCE_API_KEY"], Some(b"new-key-0123456789"));
    assert_eq!(human.status.code(), Some(4), "{}", text(&human));
    let shown = text(&human);
    assert!(
        shown.contains("failed with exit status 3")
            && shown.contains("| key=ne...***")
            && shown.contains("| secret=th...*** brain=true as qt"),
        "{shown}"
    );
    let journal = testbed::lossy(&bed.exec(&["journalctl", "--no-pager", "-o", "cat"]).stdout);
    assert!(
        journal.contains("service alpha (alpha.service): health check failed with exit status 3")
            && journal.contains("| key=ne...***"),
        "{journal}"
    );
    for t in [text(&out), shown, journal] {
        assert!(
            !t.contains("0123456789") && !t.contains("9876543210"),
            "{t}"
        );
    }
}

/// The shipped Binance check as the consumer's health_check, against a
/// Binance on the bed's loopback that verifies each request's signature: a
/// key Binance knows rotates in; one it does not know is rolled back (exit
/// 4) and rotate says why (-2015, what to check), the key masked.
#[test]
fn the_binance_check_lets_a_known_key_in_and_rolls_back_a_rejected_one() {
    use binance::*;
    let bed = boot();
    let check = "/usr/lib/credloader/health/binance-key-check";
    bed.copy_in(&check_script(), check, 0o755);
    bed.copy_in(&server_script(), "/usr/local/lib/fake_binance.py", 0o755);
    bed.write("/etc/fake-binance-keys.json", keys_json().as_bytes(), 0o644);
    bed.sh_ok(
        "systemd-run --unit=fake-binance -p Type=exec /usr/bin/python3 \
         /usr/local/lib/fake_binance.py /etc/fake-binance-keys.json 18080",
    );
    bed.wait_until("the fake Binance listens", Duration::from_secs(10), || {
        bed.exec(&["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18080"])
            .status
            .success()
    });
    bed.config(
        "alpha",
        &format!(
            r#"[services.alpha]
unit = "alpha.service"
user = "qt"
credentials = ["BINANCE_API_KEY", "BINANCE_API_SECRET"]
static = {{ EXIT_BRAIN_V35_ENABLED = "true" }}
health_check = ["{check}", "--base-url", "http://127.0.0.1:18080", "--require", "spot"]
health_timeout_sec = 20
"#
        ),
    );
    bed.seal("BINANCE_API_KEY", GOOD_KEY.as_bytes());
    bed.seal("BINANCE_API_SECRET", GOOD_SECRET.as_bytes());
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{}", text(&out));
    bed.systemctl_ok(&["start", "alpha.service"]);

    let out = bed.credloader(&["rotate", "BINANCE_API_KEY"], Some(NEXT_KEY.as_bytes()));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("health check passed"), "{}", text(&out));

    let out = bed.credloader(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(UNKNOWN_KEY.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let health = &j["verification"][0]["health"];
    assert_eq!(health["exit_code"], 4, "{j}");
    let said = health["output"][0].as_str().unwrap_or_default();
    assert!(
        said.contains("REJECTED (-2015")
            && said.contains("allow-list")
            && said.contains("Unk...***"),
        "{j}"
    );
    assert_eq!(j["rollback"]["verified"], true, "{j}");
    assert_eq!(
        bed.environ("alpha.service")
            .get("BINANCE_API_KEY")
            .map(Vec::as_slice),
        Some(NEXT_KEY.as_bytes()),
        "alpha runs the key Binance accepts again"
    );
    let journal = testbed::lossy(&bed.exec(&["journalctl", "--no-pager", "-o", "cat"]).stdout);
    assert!(journal.contains("REJECTED (-2015"), "{journal}");
    for t in [text(&out), journal] {
        for v in [GOOD_KEY, NEXT_KEY, UNKNOWN_KEY, GOOD_SECRET] {
            assert!(!t.contains(v), "{t}");
        }
    }
}

/// A consumer's config file copied by a deploy user (still theirs) is
/// refused, not skipped: a rotation still reaches the consumer from its last
/// good definition, restarts it with the new key, and says why the file is
/// not used.
#[test]
fn a_rotation_reaches_a_consumer_whose_file_a_deploy_user_owns() {
    let bed = boot();
    bed.add_user("deploy");
    bed.config(
        "alpha",
        "[services.alpha]\nunit = \"alpha.service\"\nuser = \"qt\"\ncredentials = [\"BINANCE_API_KEY\"]\n",
    );
    bed.seal("BINANCE_API_KEY", b"old-key-xyz");
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{}", text(&out));
    bed.systemctl_ok(&["start", "alpha.service"]);
    let alpha0 = bed.main_pid("alpha.service").expect("alpha runs");

    // The deploy user's copy of the same file.
    bed.sh_ok("chown deploy:deploy /etc/quantum/credloader.d/alpha.toml");
    let out = bed.credloader(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"new-key-xyz"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["consumers"], serde_json::json!(["alpha"]), "{j}");
    assert_eq!(j["verified"], true, "{j}");
    let why = j["apply"]["services"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("alpha.toml") && why.contains("chown root:root"),
        "{j}"
    );
    bed.wait_until("alpha restarted", Duration::from_secs(10), || {
        bed.main_pid("alpha.service")
            .is_some_and(|pid| pid != alpha0)
    });
    assert_eq!(
        bed.environ("alpha.service")
            .get("BINANCE_API_KEY")
            .map(Vec::as_slice),
        Some(&b"new-key-xyz"[..]),
        "alpha runs the new key"
    );
    // The path-triggered apply of the same change fails loudly, and still
    // serves alpha from its last good definition.
    let out = bed.credloader(&["apply"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("alpha.toml"), "{}", text(&out));
    assert!(bed.active("alpha.service"));
}

/// Without D-Bus, systemd-run cannot start the check as a unit; it then runs
/// in-process as the service's user, and still decides. systemd-run words
/// the missing bus differently on 252 and 257 (src/health.rs `no_bus`): on
/// 257 this check was once "not run", and a good value was rolled back.
#[test]
fn without_dbus_the_health_check_runs_in_process_and_still_decides() {
    let bed = boot();
    alpha_and_beta_running(&bed);
    bed.systemctl_ok(&["stop", "dbus.socket", "dbus.service"]);
    let out = bed.exec(&["systemd-run", "--wait", "--quiet", "true"]);
    assert!(!out.status.success(), "the bus is still there: {out:?}");

    let out = bed.credloader(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"good-key-xyz"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["verified"], true, "{j}");
    assert_eq!(j["verification"][0]["health"]["result"], "passed", "{j}");
    assert_eq!(
        bed.environ("alpha.service")
            .get("BINANCE_API_KEY")
            .map(Vec::as_slice),
        Some(&b"good-key-xyz"[..])
    );

    let out = bed.credloader(
        &["rotate", "BINANCE_API_KEY", "--json"],
        Some(b"bad-key-xyz"),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["verification"][0]["health"]["result"], "failed", "{j}");
    assert_eq!(j["rolled_back"], true, "{j}");
}
