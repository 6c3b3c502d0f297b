//! docs/operator-guide.md run as written on a real systemd (see
//! docs/testbed.md and tests/guide/mod.rs): every block of every section
//! but the package's (tests/e2e_guide_deb.rs), in order, one bed per
//! section, each checked for what the text around it promises. The guide
//! cannot drift from what credloader does.
//!
//! A section that starts from a configured host starts from
//! [`configured_host`]: the state "First setup" leaves, which
//! tests/e2e_guide_deb.rs builds with that section's own blocks. Where a
//! rotation asks Binance, it asks `https://api.binance.com` as the guide's
//! health check does, served in the bed (tests/guide/exchange.rs).

#[path = "binance/mod.rs"]
mod binance;
#[path = "guide/exchange.rs"]
mod exchange;
mod guide;
#[path = "support/scene.rs"]
mod scene;
#[path = "support/testbed.rs"]
mod testbed;

use std::path::Path;
use std::time::Duration;

use binance::{GOOD_KEY, GOOD_SECRET, NEXT_KEY, UNKNOWN_KEY};
use guide::{settle, vars, Input, Walk, ENV_FILE, UNIT};
use scene::{text, Scene};

const CREDLOADER: &str = env!("CARGO_BIN_EXE_credloader");
/// Where the package installs the Binance check.
const CHECK: &str = "/usr/lib/credloader/health/binance-key-check";

/// The host as "First setup" leaves it: user `qt` and
/// `quantum-position-monitor.service` (the guide assumes both); what the
/// package installs (credloader, its units, the Binance check) with
/// credloader.path and credloader.service enabled and started, as its
/// postinst does; BINANCE_API_KEY and BINANCE_API_SECRET sealed (as given:
/// a newline stays in the sealed file); the consumer's file as First setup
/// writes it; applied, and the consumer running.
fn configured_host(key: &[u8], secret: &[u8]) -> Scene {
    let bed = Scene::boot(
        Path::new(CREDLOADER),
        &["qt"],
        &[("quantum-position-monitor", "qt")],
    );
    bed.copy_in(&binance::check_script(), CHECK, 0o755);
    bed.systemctl_ok(&["enable", "--now", "credloader.path", "credloader.service"]);
    bed.seal("BINANCE_API_KEY", key);
    bed.seal("BINANCE_API_SECRET", secret);
    let first = guide::section("First setup: one consumer");
    let config = first
        .blocks
        .iter()
        .find(|b| b.lang == "toml")
        .expect("First setup configures the consumer");
    for (path, text) in guide::files(config) {
        guide::save_file(&bed, &path, text.as_bytes());
    }
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{}", text(&out));
    bed.systemctl_ok(&["start", UNIT]);
    settle(&bed);
    bed
}

/// `credloader rotate NAME ARGS` with `value` on stdin, which must succeed.
fn rotate(bed: &Scene, name: &str, args: &[&str], value: &str) {
    let mut argv = vec!["rotate", name];
    argv.extend_from_slice(args);
    let out = bed.credloader(&argv, Some(value.as_bytes()));
    assert!(out.status.success(), "rotate {name}: {}", text(&out));
}

fn wait_restarted(bed: &Scene, before: u32) {
    bed.wait_until("the consumer to restart", Duration::from_secs(15), || {
        bed.active(UNIT) && bed.main_pid(UNIT).is_some_and(|p| p != before)
    });
}

#[test]
fn every_section_with_commands_is_walked() {
    let sections = guide::sections();
    for s in sections.iter().filter(|s| !s.blocks.is_empty()) {
        assert!(
            guide::SECTIONS.iter().any(|(t, _)| *t == s.title),
            "`## {}` has blocks that no test runs: walk it in a test and add it to \
             guide::SECTIONS",
            s.title
        );
        for b in &s.blocks {
            if b.lang != "sh" {
                assert!(
                    !guide::files(b).is_empty(),
                    "guide line {}: an empty {} block",
                    b.line,
                    b.lang
                );
            }
        }
    }
    for (title, test) in guide::SECTIONS {
        assert!(
            sections
                .iter()
                .any(|s| s.title == *title && !s.blocks.is_empty()),
            "guide::SECTIONS names `## {title}`, which has no blocks"
        );
        let (file, function) = test.split_once("::").expect("FILE::TEST");
        let source = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/{file}.rs")),
        )
        .expect("the test file");
        let walks = source.split("Walk::new(").skip(1).any(|call| {
            call.split(')')
                .next()
                .unwrap_or_default()
                .contains(&format!("{title:?}"))
        });
        assert!(
            source.contains(&format!("fn {function}()")) && walks,
            "tests/{file}.rs has no test {function} that walks `## {title}`"
        );
    }
}

/// "Migrating a host set up by hand": the first block is the manual
/// procedure itself, which builds the host the walkthrough starts from; the
/// consumer's environment it leaves is what every later step must keep,
/// byte for byte (the rotation's new key aside).
#[test]
fn the_guides_walkthrough_from_the_manual_layout_runs_as_written() {
    let bed = Scene::boot(
        Path::new(CREDLOADER),
        &["qt"],
        &[("quantum-position-monitor", "qt")],
    );
    let mut walk = Walk::new(&bed, "Migrating a host set up by hand");
    walk.never_shows(&[b"NEW_API_"]);
    walk.sh("systemd-creds encrypt /root/.tmp_key", Input::Nothing);
    let manual = vars(&bed);
    assert_eq!(manual["BINANCE_API_KEY"], b"NEW_API_KEY_HERE");
    assert_eq!(manual["EXIT_BRAIN_V35_ENABLED"], b"true");

    // The dry run changes nothing.
    let before = bed.main_pid(UNIT).expect("the consumer runs");
    let said = walk.sh("--dry-run", Input::Nothing).out;
    assert!(said.contains("without the trailing newline"), "{said}");
    assert_eq!(bed.main_pid(UNIT), Some(before), "{said}");
    assert!(bed
        .read("/etc/quantum/position-monitor-secrets/binance.env")
        .is_some());

    let said = walk.sh("credloader import", Input::Nothing).out;
    wait_restarted(&bed, before);
    assert_eq!(vars(&bed), manual, "after the import:\n{said}");
    assert!(said.contains("without the trailing newline"), "{said}");
    assert!(bed
        .read("/etc/quantum/position-monitor-secrets/binance.env")
        .is_none());

    let said = walk
        .sh(
            "credloader status --service position-monitor",
            Input::Nothing,
        )
        .out;
    assert!(said.contains("as applied"), "{said}");
    assert!(said.contains("drop-in loaded: yes"), "{said}");
    let env_files: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("EnvironmentFiles="))
        .collect();
    assert_eq!(
        env_files,
        [format!("EnvironmentFiles={ENV_FILE} (ignore_errors=no)")],
        "{said}"
    );
    assert!(
        said.contains("0 error(s)"),
        "check exits 0 and is clean:\n{said}"
    );

    let said = walk
        .sh("credloader generations BINANCE_API_KEY", Input::Nothing)
        .out;
    assert!(generation(&said, 1).contains("kept"), "{said}");
    assert!(bed.read("/etc/quantum/position-monitor-secrets").is_none());

    let before = bed.main_pid(UNIT).expect("the consumer runs");
    let said = walk
        .sh(
            "credloader rotate BINANCE_API_KEY",
            Input::Stdin(b"NEW_API_KEY_ROTATED\n"),
        )
        .out;
    wait_restarted(&bed, before);
    assert!(
        said.contains("removed the trailing newline of the input"),
        "{said}"
    );
    let now = vars(&bed);
    assert_eq!(now["BINANCE_API_KEY"], b"NEW_API_KEY_ROTATED");
    assert_eq!(now["BINANCE_API_SECRET"], manual["BINANCE_API_SECRET"]);
    assert_eq!(
        now["EXIT_BRAIN_V35_ENABLED"],
        manual["EXIT_BRAIN_V35_ENABLED"]
    );
    walk.finish();
}

/// The row of generation `n` in `credloader generations`' table.
fn generation(table: &str, n: u32) -> String {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&n.to_string()))
        .unwrap_or_else(|| panic!("no generation {n}:\n{table}"))
        .to_string()
}

/// "Rotating a key": at a terminal, rotate asks twice; the consumer is
/// restarted with the new key, which the Binance check accepted, and the
/// old value is kept as a generation.
#[test]
fn rotating_a_key_runs_as_written() {
    let bed = configured_host(GOOD_KEY.as_bytes(), GOOD_SECRET.as_bytes());
    exchange::serve_api_binance_com(&bed);
    let mut walk = Walk::new(&bed, "Rotating a key");
    walk.never_shows(&[
        GOOD_KEY.as_bytes(),
        NEXT_KEY.as_bytes(),
        GOOD_SECRET.as_bytes(),
    ]);
    let before = bed.main_pid(UNIT).expect("the consumer runs");
    let said = walk
        .sh(
            "credloader rotate BINANCE_API_KEY",
            Input::Terminal(&guide::twice(NEXT_KEY)),
        )
        .out;
    assert!(said.contains("health check passed"), "{said}");
    assert!(said.contains("every consumer verified"), "{said}");
    assert!(
        said.contains("previous value kept as generation 1"),
        "{said}"
    );
    assert_ne!(bed.main_pid(UNIT), Some(before), "{said}");
    let now = vars(&bed);
    assert_eq!(now["BINANCE_API_KEY"], NEXT_KEY.as_bytes());
    assert_eq!(now["BINANCE_API_SECRET"], GOOD_SECRET.as_bytes());
    walk.finish();
}

/// "Rolling back", one command at a time after one rotation (GOOD_KEY to
/// NEXT_KEY): the table shows both; `rollback` gives the consumer the old
/// key; `--to 2` the rotated one again. Each verified with the Binance check.
#[test]
fn rolling_back_runs_as_written() {
    let bed = configured_host(GOOD_KEY.as_bytes(), GOOD_SECRET.as_bytes());
    exchange::serve_api_binance_com(&bed);
    rotate(&bed, "BINANCE_API_KEY", &[], NEXT_KEY);
    let mut walk = Walk::new(&bed, "Rolling back");
    walk.never_shows(&[
        GOOD_KEY.as_bytes(),
        NEXT_KEY.as_bytes(),
        GOOD_SECRET.as_bytes(),
    ]);
    let mut steps = Vec::new();
    walk.sh_each("credloader rollback", |command, ran| {
        let said = &ran.out;
        let key = || vars(&bed)["BINANCE_API_KEY"].clone();
        if command.starts_with("credloader generations") {
            assert!(generation(said, 1).contains("kept"), "{said}");
            assert!(generation(said, 2).contains("current"), "{said}");
        } else if command.contains("--to 2") {
            assert!(said.contains("generation 2 restored"), "{said}");
            assert!(said.contains("health check passed"), "{said}");
            assert_eq!(key(), NEXT_KEY.as_bytes(), "{said}");
        } else {
            assert!(said.contains("generation 1 restored"), "{said}");
            assert!(said.contains("health check passed"), "{said}");
            assert_eq!(key(), GOOD_KEY.as_bytes(), "{said}");
        }
        steps.push(command.to_string());
    });
    assert_eq!(steps.len(), 3, "{steps:?}");
    walk.finish();
}

/// "When an exchange rejects a key": the consumer's file with the Binance
/// check; the check run by hand as the service sees it says `ok:`; and, as
/// the section promises, a rotation to a key Binance rejects is rolled back
/// by rotate itself (exit 4), which says why.
#[test]
fn the_binance_check_runs_as_written() {
    let bed = configured_host(GOOD_KEY.as_bytes(), GOOD_SECRET.as_bytes());
    exchange::serve_api_binance_com(&bed);
    let mut walk = Walk::new(&bed, "When an exchange rejects a key");
    walk.never_shows(&[GOOD_KEY.as_bytes(), GOOD_SECRET.as_bytes()]);
    let saved = walk.file("[services.position-monitor]");
    assert_eq!(saved, ["/etc/quantum/credloader.d/position-monitor.toml"]);
    settle(&bed);
    let said = walk
        .sh("binance-key-check --require spot", Input::Nothing)
        .out;
    assert!(
        said.contains(
            "binance-key-check: ok: Binance accepts the key (permissions: reading, spot; \
             IP allow-list: off"
        ),
        "{said}"
    );
    walk.finish();

    let out = bed.credloader(&["rotate", "BINANCE_API_KEY"], Some(UNKNOWN_KEY.as_bytes()));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(4), "{said}");
    assert!(
        said.contains("REJECTED (-2015") && said.contains("Unk...***"),
        "{said}"
    );
    assert!(!said.contains(UNKNOWN_KEY), "{said}");
    assert_eq!(vars(&bed)["BINANCE_API_KEY"], GOOD_KEY.as_bytes());
    // "The new value is kept as a generation marked REJECTED (the output
    // names its number)"; the previous value is current again.
    let out = bed.credloader(&["generations", "BINANCE_API_KEY"], None);
    let table = text(&out);
    assert!(out.status.success(), "{table}");
    assert!(generation(&table, 1).contains("current"), "{table}");
    assert!(generation(&table, 2).contains("REJECTED"), "{table}");
    assert!(said.contains("generation 2"), "{said}");
}

/// Seconds since the epoch, now.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
}

/// BINANCE_API_KEY's not-after, as `credloader --json list` says.
fn not_after(bed: &Scene) -> u64 {
    let out = bed.credloader(&["--json", "list"], None);
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json");
    let all = list["credentials"].as_array().cloned().unwrap_or_default();
    let entry = all
        .iter()
        .find(|c| c["name"] == "BINANCE_API_KEY")
        .unwrap_or_else(|| panic!("no BINANCE_API_KEY in {list}"));
    entry["not_after"]
        .as_u64()
        .unwrap_or_else(|| panic!("no not_after in {entry}"))
}

/// "A 90-day rotation policy": a rotation with `--not-after +90d` seals the
/// deadline; the daily audit's units, saved as written and enabled, pass
/// on a clean host, pass with a warning 14 days before a deadline, and fail
/// on an error, where `systemctl --failed` sees it.
#[test]
fn the_90_day_policy_runs_as_written() {
    let bed = configured_host(GOOD_KEY.as_bytes(), GOOD_SECRET.as_bytes());
    exchange::serve_api_binance_com(&bed);
    let mut walk = Walk::new(&bed, "A 90-day rotation policy");
    walk.never_shows(&[
        GOOD_KEY.as_bytes(),
        NEXT_KEY.as_bytes(),
        GOOD_SECRET.as_bytes(),
    ]);
    let said = walk
        .sh(
            "--not-after +90d",
            Input::Stdin(format!("{NEXT_KEY}\n").as_bytes()),
        )
        .out;
    assert!(said.contains("every consumer verified"), "{said}");
    assert_eq!(vars(&bed)["BINANCE_API_KEY"], NEXT_KEY.as_bytes());
    let deadline = now() + 90 * 86400;
    let sealed = not_after(&bed);
    assert!(
        sealed.abs_diff(deadline) < 3600,
        "not-after {sealed}, wanted ~{deadline}"
    );

    let saved = walk.file("credloader-check.service");
    assert_eq!(
        saved,
        [
            "/etc/systemd/system/credloader-check.service",
            "/etc/systemd/system/credloader-check.timer"
        ]
    );
    walk.sh("enable --now credloader-check.timer", Input::Nothing);
    assert_eq!(
        bed.unit_property("credloader-check.timer", "ActiveState"),
        "active"
    );
    assert_eq!(
        bed.unit_property("credloader-check.timer", "UnitFileState"),
        "enabled"
    );
    walk.finish();

    let audit = |wanted: &str| {
        let _ = bed.systemctl(&["start", "credloader-check.service"]);
        let result = bed.unit_property("credloader-check.service", "Result");
        assert_eq!(
            result,
            wanted,
            "{}",
            bed.journal("credloader-check.service")
        );
    };
    audit("success");
    // At the 14-day warning: still exit 0, the warning in the journal and JSON.
    rotate(&bed, "BINANCE_API_KEY", &["--not-after", "+10d"], GOOD_KEY);
    audit("success");
    assert!(bed
        .journal("credloader-check.service")
        .contains("within 14 days"));
    let out = bed.credloader(&["--json", "check"], None);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check --json");
    assert!(report["warnings"].as_u64() >= Some(1), "{report}");
    assert!(
        report["findings"].to_string().contains("within 14 days"),
        "{report}"
    );
    // An error: the service fails, and `systemctl --failed` lists it.
    bed.sh_ok("chmod 0644 /etc/quantum/creds/BINANCE_API_SECRET.cred");
    audit("exit-code");
    let failed = bed.sh_ok("systemctl --failed --no-legend");
    assert!(failed.contains("credloader-check.service"), "{failed}");
}

/// "Day to day": list, status, check and the journal, on a configured host:
/// the credential and its consumer, the env file as applied, no error, and
/// what apply did, never a value.
#[test]
fn day_to_day_runs_as_written() {
    let bed = configured_host(GOOD_KEY.as_bytes(), GOOD_SECRET.as_bytes());
    let mut walk = Walk::new(&bed, "Day to day");
    walk.never_shows(&[GOOD_KEY.as_bytes(), GOOD_SECRET.as_bytes()]);
    let said = walk.sh("credloader list", Input::Nothing).out;
    assert!(
        said.lines()
            .any(|l| l.starts_with("BINANCE_API_KEY") && l.contains("position-monitor")),
        "{said}"
    );
    assert!(said.contains("as applied"), "{said}");
    assert!(said.contains("0 error(s)"), "{said}");
    assert!(said.contains("credloader-refresh.service"), "{said}");
    walk.finish();
}

/// "Break-glass": the env file written by hand from the sealed credential
/// gives the consumer the very bytes credloader gave it, for a value with
/// every character the block escapes and the newline `echo` adds; the next
/// apply replaces it. Then one service taken off credloader: its drop-in
/// and env file go, its sealed credentials stay.
#[test]
fn break_glass_runs_as_written() {
    let key = b"k\"e$HOME`y\\'x";
    let bed = configured_host(&[&key[..], b"\n"].concat(), GOOD_SECRET.as_bytes());
    assert_eq!(
        vars(&bed)["BINANCE_API_KEY"],
        key,
        "as credloader serves it"
    );
    let mut walk = Walk::new(&bed, "Break-glass");
    walk.never_shows(&[key, GOOD_SECRET.as_bytes()]);
    let before = bed.main_pid(UNIT).expect("the consumer runs");
    walk.sh("install -o qt -g qt -m 0600 /dev/null", Input::Nothing);
    wait_restarted(&bed, before);
    assert_eq!(
        bed.unit_property("credloader.path", "ActiveState"),
        "inactive"
    );
    assert_eq!(
        bed.sh_ok(&format!("stat -c '%U %G %a' {ENV_FILE}")),
        "qt qt 600\n"
    );
    assert_eq!(vars(&bed)["BINANCE_API_KEY"], key, "the hand-made env file");

    // Undone, as the section says: the next apply replaces the file.
    let before = bed.main_pid(UNIT).expect("the consumer runs");
    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{}", text(&out));
    bed.systemctl_ok(&["start", "credloader.path"]);
    wait_restarted(&bed, before);
    let served = vars(&bed);
    assert_eq!(served["BINANCE_API_KEY"], key);
    assert_eq!(served["BINANCE_API_SECRET"], GOOD_SECRET.as_bytes());
    assert_eq!(served["EXIT_BRAIN_V35_ENABLED"], b"true");

    let sealed = bed.sh_ok("sha256sum /etc/quantum/creds/*.cred");
    walk.sh(
        "rm /etc/quantum/credloader.d/position-monitor.toml",
        Input::Nothing,
    );
    assert!(bed.read(ENV_FILE).is_none());
    assert!(bed
        .read("/etc/systemd/system/quantum-position-monitor.service.d/50-credloader.conf")
        .is_none());
    assert!(!bed
        .unit_property(UNIT, "DropInPaths")
        .contains("50-credloader"));
    assert_eq!(bed.sh_ok("sha256sum /etc/quantum/creds/*.cred"), sealed);
    walk.finish();
}
