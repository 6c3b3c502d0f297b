//! `credloader apply` on a system image (`--root`), with credentials sealed
//! and decrypted by the real `systemd-creds`.

mod common;

use common::{service, Tree, BOT_UID, QT_UID};

const ENV: &str = "/run/credloader/position-monitor.env";
const DROPIN: &str = "/etc/systemd/system/quantum-position-monitor.service.d/50-credloader.conf";

fn position_monitor(t: &Tree) {
    t.config(
        "position-monitor.toml",
        r#"
[services.position-monitor]
unit = "quantum-position-monitor.service"
user = "qt"
credentials = ["BINANCE_API_KEY", "BINANCE_API_SECRET"]
env = { EXCHANGE_KEY = "BINANCE_API_KEY" }
static = { EXIT_BRAIN_V35_ENABLED = "true" }
"#,
    );
    t.seal("BINANCE_API_KEY", b"k-1111111111111111");
    t.seal("BINANCE_API_SECRET", b"s-2222222222222222");
}

#[test]
fn writes_the_env_file_and_dropin_with_the_right_owner_and_mode() {
    let t = Tree::new();
    position_monitor(&t);
    let run = t.credloader(&["apply"]);
    run.ok();
    assert_eq!(t.owner_mode(ENV), (QT_UID, QT_UID, 0o600));
    assert_eq!(t.owner_mode("/run/credloader"), (0, 0, 0o755));
    assert_eq!(
        t.read_string(ENV),
        "# Managed by credloader; changes are overwritten. Do not edit.\n\
         BINANCE_API_KEY=\"k-1111111111111111\"\n\
         BINANCE_API_SECRET=\"s-2222222222222222\"\n\
         EXCHANGE_KEY=\"k-1111111111111111\"\n\
         EXIT_BRAIN_V35_ENABLED=\"true\"\n"
    );
    assert_eq!(t.owner_mode(DROPIN), (0, 0, 0o644));
    let dropin = t.read_string(DROPIN);
    assert!(
        dropin.contains("[Unit]\nAfter=credloader.service\nWants=credloader.service\n"),
        "{dropin}"
    );
    assert!(
        dropin.contains(&format!("[Service]\nEnvironmentFile={ENV}\n")),
        "{dropin}"
    );
    // The report names files, never values.
    assert!(run.stdout.contains("updated"), "{run:?}");
    assert!(!run.all().contains("1111111111"), "{run:?}");
    // No temp files are left beside the targets.
    let leftovers: Vec<_> = std::fs::read_dir(t.path("/run/credloader"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("position-monitor.env")]
    );
    // The state dir is root-only.
    assert_eq!(t.owner_mode("/var/lib/credloader"), (0, 0, 0o700));
    assert_eq!(
        t.owner_mode("/var/lib/credloader/state.json"),
        (0, 0, 0o600)
    );
}

#[test]
fn a_second_apply_with_nothing_changed_decrypts_and_writes_nothing() {
    let t = Tree::new();
    position_monitor(&t);
    t.credloader(&["apply"]).ok();
    let before = std::fs::metadata(t.path(ENV)).unwrap();
    let dropin_before = std::fs::metadata(t.path(DROPIN)).unwrap();
    let run = t.credloader(&["apply", "--json"]);
    run.ok();
    let j = run.json();
    assert_eq!(j["daemon_reload"], false);
    let s = &j["services"][0];
    assert_eq!(s["outcome"], "unchanged");
    assert_eq!(s["decrypted"], serde_json::json!([]));
    assert_eq!(s["env_file_written"], false);
    assert_eq!(s["dropin_written"], false);
    let after = std::fs::metadata(t.path(ENV)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (before.ino(), before.ctime_nsec()),
        (after.ino(), after.ctime_nsec())
    );
    assert_eq!(
        dropin_before.ino(),
        std::fs::metadata(t.path(DROPIN)).unwrap().ino()
    );
}

#[test]
fn json_output_is_deterministic_compact_and_sorted() {
    let t = Tree::new();
    position_monitor(&t);
    t.credloader(&["apply"]).ok();
    let a = t.credloader(&["apply", "--json"]);
    let b = t.credloader(&["apply", "--json"]);
    assert_eq!(a.stdout, b.stdout);
    assert!(
        a.stdout.ends_with("}\n") && a.stdout.lines().count() == 1,
        "{}",
        a.stdout
    );
    // Keys appear sorted in the text itself.
    let at = |k: &str| a.stdout.find(&format!("\"{k}\":")).unwrap();
    assert!(at("daemon_reload") < at("dry_run") && at("dry_run") < at("removed"));
    assert!(at("removed") < at("services") && at("services") < at("warnings"));
    assert!(at("action") < at("decrypted") && at("decrypted") < at("delivery"));
}

#[test]
fn a_rotated_value_rewrites_only_its_consumers() {
    let t = Tree::new();
    position_monitor(&t);
    t.config("bot.toml", &service("bot", "bot", &["KRAKEN_KEY"]));
    t.seal("KRAKEN_KEY", b"kraken-one");
    t.credloader(&["apply"]).ok();
    assert_eq!(
        t.owner_mode("/run/credloader/bot.env"),
        (BOT_UID, BOT_UID, 0o600)
    );

    t.seal("KRAKEN_KEY", b"kraken-two");
    let j = t.credloader(&["apply", "--json"]).json();
    let by_name = |n: &str| {
        j["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("bot")["outcome"], "updated");
    assert_eq!(by_name("bot")["secrets_changed"], true);
    assert_eq!(
        by_name("bot")["decrypted"],
        serde_json::json!(["KRAKEN_KEY"])
    );
    assert_eq!(by_name("position-monitor")["outcome"], "unchanged");
    assert_eq!(
        by_name("position-monitor")["decrypted"],
        serde_json::json!([])
    );
    assert!(t
        .read_string("/run/credloader/bot.env")
        .contains("KRAKEN_KEY=\"kraken-two\""));
}

#[test]
fn resealing_the_same_value_changes_no_secret() {
    let t = Tree::new();
    position_monitor(&t);
    t.credloader(&["apply"]).ok();
    t.seal("BINANCE_API_KEY", b"k-1111111111111111"); // new ciphertext, same value
    let j = t.credloader(&["apply", "--json"]).json();
    let s = &j["services"][0];
    assert_eq!(
        s["decrypted"],
        serde_json::json!(["BINANCE_API_KEY"]),
        "the sealed bytes changed, so it looks; the other is unchanged"
    );
    assert_eq!(s["secrets_changed"], false);
    assert_eq!(s["env_file_written"], false);
}

#[test]
fn a_bad_credential_fails_only_its_services_and_keeps_their_last_good_file() {
    let t = Tree::new();
    position_monitor(&t);
    t.config("bot.toml", &service("bot", "bot", &["KRAKEN_KEY"]));
    t.seal("KRAKEN_KEY", b"kraken-one");
    t.credloader(&["apply"]).ok();
    let good = t.read(ENV);

    // Tamper with one byte of the sealed key, and change the other service's key.
    let path = t.path("/etc/quantum/creds/BINANCE_API_KEY.cred");
    let mut bytes = std::fs::read(&path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    std::fs::write(&path, bytes).unwrap();
    t.seal("KRAKEN_KEY", b"kraken-two");

    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("position-monitor") && run.stdout.contains("FAILED"),
        "{run:?}"
    );
    assert!(run.stdout.contains("credential BINANCE_API_KEY"), "{run:?}");
    assert_eq!(
        t.read(ENV),
        good,
        "the failed service keeps its last good env file"
    );
    assert!(
        t.read_string("/run/credloader/bot.env")
            .contains("kraken-two"),
        "the other service is served"
    );
}

#[test]
fn a_missing_credential_is_named_with_the_fix() {
    let t = Tree::new();
    t.config("x.toml", &service("x", "qt", &["NOT_SEALED"]));
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("credential NOT_SEALED is missing"),
        "{run:?}"
    );
    assert!(run.stdout.contains(&t.cmd("seal NOT_SEALED")), "{run:?}");
    assert!(!t.exists("/run/credloader/x.env"));
}

#[test]
fn credentials_sealed_by_hand_without_a_name_still_load() {
    let t = Tree::new();
    t.config("x.toml", &service("x", "qt", &["LEGACY_KEY"]));
    t.seal_legacy("LEGACY_KEY", b"legacy-value");
    let run = t.credloader(&["apply"]);
    run.ok();
    assert!(t
        .read_string("/run/credloader/x.env")
        .contains("LEGACY_KEY=\"legacy-value\""));
    assert!(run.stdout.contains("sealed without --name"), "{run:?}");
}

#[test]
fn a_credential_sealed_under_another_name_is_refused() {
    let t = Tree::new();
    t.config("x.toml", &service("x", "qt", &["A_KEY"]));
    t.seal("OTHER", b"other-value");
    std::fs::rename(
        t.path("/etc/quantum/creds/OTHER.cred"),
        t.path("/etc/quantum/creds/A_KEY.cred"),
    )
    .unwrap();
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("sealed under the name `OTHER`, not `A_KEY`"),
        "{run:?}"
    );
}

#[test]
fn values_systemd_cannot_carry_are_refused_naming_the_credential() {
    let t = Tree::new();
    t.config("x.toml", &service("x", "qt", &["NUL_KEY"]));
    t.seal("NUL_KEY", b"abc\0def");
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("credential NUL_KEY") && run.stdout.contains("NUL"),
        "{run:?}"
    );
    assert!(!t.exists("/run/credloader/x.env"));
}

#[test]
fn a_symlink_at_the_env_file_is_refused_and_not_followed() {
    let t = Tree::new();
    position_monitor(&t);
    t.mkdir("/run/credloader", 0o755);
    t.write("/victim", b"untouched", 0o644);
    std::os::unix::fs::symlink(t.path("/victim"), t.path(ENV)).unwrap();
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("symbolic link"), "{run:?}");
    assert_eq!(t.read("/victim"), b"untouched");
}

#[test]
fn a_symlinked_env_dir_and_a_service_writable_env_dir_are_refused() {
    let t = Tree::new();
    position_monitor(&t);
    t.mkdir("/elsewhere", 0o755);
    std::fs::create_dir_all(t.path("/run")).unwrap();
    std::os::unix::fs::symlink(t.path("/elsewhere"), t.path("/run/credloader")).unwrap();
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("symbolic link"), "{run:?}");
    assert_eq!(std::fs::read_dir(t.path("/elsewhere")).unwrap().count(), 0);

    std::fs::remove_file(t.path("/run/credloader")).unwrap();
    t.mkdir("/run/credloader", 0o755);
    std::os::unix::fs::chown(t.path("/run/credloader"), Some(QT_UID), None).unwrap();
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("owned by uid 1500"), "{run:?}");
}

#[test]
fn a_hardlinked_env_file_is_replaced_and_the_other_name_keeps_only_the_old_file() {
    // Its owner may link its own file (issue 13; tests/hardening_hostile.rs
    // does it as that user): that is no reason to fail the service. The
    // other name keeps the old file, and apply says so.
    let t = Tree::new();
    position_monitor(&t);
    t.credloader(&["apply"]).ok();
    std::fs::hard_link(t.path(ENV), t.path("/run/credloader/copy")).unwrap();
    t.seal("BINANCE_API_KEY", b"k-new-value-00000");
    let run = t.credloader(&["apply"]);
    run.ok();
    assert!(
        run.stdout.contains("warning") && run.stdout.contains("hard links"),
        "{run:?}"
    );
    assert!(t.read_string(ENV).contains("k-new-value-00000"));
    let copy = t.read_string("/run/credloader/copy");
    assert!(copy.contains("k-1111111111111111") && !copy.contains("k-new-value"));
    assert_eq!(t.owner_mode(ENV), (QT_UID, QT_UID, 0o600));
}

#[test]
fn a_hardlinked_file_of_roots_at_an_env_path_is_refused() {
    // Nobody but root can put a name into the env dir: root's own file with
    // another name there is a mistake, refused as before.
    let t = Tree::new();
    position_monitor(&t);
    t.mkdir("/run/credloader", 0o755);
    t.write("/run/credloader/roots", b"root's\n", 0o600);
    std::fs::hard_link(t.path("/run/credloader/roots"), t.path(ENV)).unwrap();
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("hard links"), "{run:?}");
    assert_eq!(t.read("/run/credloader/roots"), b"root's\n");
}

#[test]
fn a_rotation_decrypts_only_the_credential_that_changed() {
    let t = Tree::new();
    position_monitor(&t);
    t.credloader(&["apply"]).ok();

    t.seal("BINANCE_API_SECRET", b"s-3333333333333333");
    let j = t.credloader(&["apply", "--json"]).json();
    assert_eq!(
        j["services"][0]["decrypted"],
        serde_json::json!(["BINANCE_API_SECRET"])
    );
    assert_eq!(j["decrypt"]["systemd_creds"], 1);
    assert_eq!(
        t.read_string(ENV),
        "# Managed by credloader; changes are overwritten. Do not edit.\n\
         BINANCE_API_KEY=\"k-1111111111111111\"\n\
         BINANCE_API_SECRET=\"s-3333333333333333\"\n\
         EXCHANGE_KEY=\"k-1111111111111111\"\n\
         EXIT_BRAIN_V35_ENABLED=\"true\"\n"
    );

    // The other one, which also feeds an alias.
    t.seal("BINANCE_API_KEY", b"k-4444444444444444");
    let j = t.credloader(&["apply", "--json"]).json();
    assert_eq!(
        j["services"][0]["decrypted"],
        serde_json::json!(["BINANCE_API_KEY"])
    );
    let env = t.read_string(ENV);
    assert!(
        env.contains("BINANCE_API_KEY=\"k-4444444444444444\"\n"),
        "{env}"
    );
    assert!(
        env.contains("EXCHANGE_KEY=\"k-4444444444444444\"\n"),
        "{env}"
    );
    assert!(
        env.contains("BINANCE_API_SECRET=\"s-3333333333333333\"\n"),
        "{env}"
    );
}

#[test]
fn a_config_change_alone_decrypts_nothing() {
    let t = Tree::new();
    position_monitor(&t);
    t.credloader(&["apply"]).ok();
    // The alias now points at the other credential, and a static is added.
    t.config(
        "position-monitor.toml",
        r#"
[services.position-monitor]
unit = "quantum-position-monitor.service"
user = "qt"
credentials = ["BINANCE_API_KEY", "BINANCE_API_SECRET"]
env = { EXCHANGE_KEY = "BINANCE_API_SECRET" }
static = { EXIT_BRAIN_V35_ENABLED = "true", VENUE = "binance" }
"#,
    );
    let j = t.credloader(&["apply", "--json"]).json();
    assert_eq!(j["services"][0]["outcome"], "updated");
    assert_eq!(j["services"][0]["decrypted"], serde_json::json!([]));
    assert_eq!(j["decrypt"]["systemd_creds"], 0);
    let env = t.read_string(ENV);
    assert!(
        env.contains("EXCHANGE_KEY=\"s-2222222222222222\"\n"),
        "{env}"
    );
    assert!(env.contains("VENUE=\"binance\"\n"), "{env}");
}

#[test]
fn values_are_never_taken_back_from_an_env_file_someone_changed() {
    let t = Tree::new();
    position_monitor(&t);
    t.credloader(&["apply"]).ok();
    // Someone (the service user owns it) plants a value, then a rotation
    // of the other credential follows.
    let planted = t
        .read_string(ENV)
        .replace("s-2222222222222222", "planted-by-someone");
    std::fs::write(t.path(ENV), planted).unwrap();
    t.seal("BINANCE_API_KEY", b"k-5555555555555555");
    let j = t.credloader(&["apply", "--json"]).json();
    assert_eq!(
        j["services"][0]["decrypted"],
        serde_json::json!(["BINANCE_API_KEY", "BINANCE_API_SECRET"]),
        "the file is not the one credloader wrote, so nothing comes from it"
    );
    let env = t.read_string(ENV);
    assert!(
        env.contains("BINANCE_API_SECRET=\"s-2222222222222222\"\n"),
        "{env}"
    );
    assert!(!env.contains("planted"), "{env}");
}

#[test]
fn a_modified_env_file_is_put_back() {
    let t = Tree::new();
    position_monitor(&t);
    t.credloader(&["apply"]).ok();
    let good = t.read(ENV);
    std::fs::write(t.path(ENV), b"BINANCE_API_KEY=evil\n").unwrap();
    let j = t.credloader(&["apply", "--json"]).json();
    assert_eq!(j["services"][0]["env_file_written"], true);
    assert_eq!(t.read(ENV), good);
    // A chmod alone is also repaired.
    std::fs::set_permissions(
        t.path(ENV),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    t.credloader(&["apply"]).ok();
    assert_eq!(t.owner_mode(ENV), (QT_UID, QT_UID, 0o600));
}

#[test]
fn dry_run_changes_nothing_and_shows_no_value() {
    let t = Tree::new();
    position_monitor(&t);
    let run = t.credloader(&["apply", "--dry-run"]);
    run.ok();
    assert!(run.stdout.contains("would update"), "{run:?}");
    assert!(!run.all().contains("1111111111"));
    assert!(!t.exists(ENV) && !t.exists(DROPIN) && !t.exists("/var/lib/credloader"));
}

#[test]
fn service_filter_and_unknown_service() {
    let t = Tree::new();
    position_monitor(&t);
    t.config("bot.toml", &service("bot", "bot", &["KRAKEN_KEY"]));
    t.seal("KRAKEN_KEY", b"kraken-one");
    let j = t
        .credloader(&["apply", "--service", "bot", "--json"])
        .json();
    assert_eq!(j["services"].as_array().unwrap().len(), 1);
    assert!(t.exists("/run/credloader/bot.env") && !t.exists(ENV));
    let run = t.credloader(&["apply", "--service", "nope"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no service named `nope`"), "{run:?}");
}

#[test]
fn a_broken_dropin_fails_loudly_but_every_other_service_is_served() {
    let t = Tree::new();
    position_monitor(&t);
    t.config(
        "bad.toml",
        "[services.x]\nunit = \"x.service\"\nuser = \"qt\"\ncredentials = [\"OK\", \"BAD-NAME\"]\n",
    );
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    let path = t.path("/etc/quantum/credloader.d/bad.toml");
    assert!(
        run.stdout.contains(&format!("{}:4", path.display())),
        "{run:?}"
    );
    assert!(run.stdout.contains("BAD-NAME"), "{run:?}");
    assert!(t.exists(ENV), "the other service is served");

    // A syntax error in the main file is fatal: the paths are unknown.
    t.write("/etc/quantum/credloader.toml", b"[loader\n", 0o644);
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("credloader.toml"), "{run:?}");

    let t = Tree::new();
    std::fs::remove_file(t.path("/etc/quantum/credloader.toml")).unwrap();
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no configuration"), "{run:?}");
}

#[test]
fn a_dropin_that_does_not_parse_and_may_move_the_loader_paths_stops_the_run() {
    let t = Tree::new();
    position_monitor(&t);
    // The paths move to places of its own; the value's closing quote is lost.
    t.config(
        "00-paths.toml",
        "[loader]\nenv_dir = \"/run/quantum\"\nstate_dir = \"/var/lib/quantum\n",
    );
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("00-paths.toml") && run.stderr.contains("[loader]"),
        "{run:?}"
    );
    assert!(
        !t.exists("/run/credloader") && !t.exists("/var/lib/credloader"),
        "nothing is written to the default paths"
    );
}

#[test]
fn a_service_whose_file_breaks_is_served_from_its_last_good_definition() {
    let t = Tree::new();
    position_monitor(&t);
    t.credloader(&["apply"]).ok();
    let good = t.read(ENV);
    // A typo lands in its file, then the host reboots (/run is a tmpfs).
    t.config(
        "position-monitor.toml",
        "[services.position-monitor\nunit = \"quantum-position-monitor.service\"\n",
    );
    std::fs::remove_file(t.path(ENV)).unwrap();
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1, "loud: {run:?}");
    assert!(
        run.stdout
            .contains("serving it from its last good definition"),
        "{run:?}"
    );
    assert!(run.stdout.contains("position-monitor.toml:1"), "{run:?}");
    assert_eq!(t.read(ENV), good, "and still served");
    assert!(
        t.exists(DROPIN),
        "nothing is removed while the configuration has errors"
    );
}

#[test]
fn a_mistake_in_sources_stops_only_sync_and_every_service_is_served() {
    let t = Tree::new();
    position_monitor(&t);
    // `[sources]` is read by `sync` alone; /run is empty, as after a reboot.
    t.config(
        "sync.toml",
        "[sources]\nenvironment = \"dev\"\ntimeout_sec = 0\n[sources.file]\npath = \"/x.json\"\n",
    );
    let at = format!(
        "{}:3",
        t.path("/etc/quantum/credloader.d/sync.toml").display()
    );
    let run = t.credloader(&["apply"]);
    run.ok();
    assert!(t.exists(ENV) && t.exists(DROPIN), "served: {run:?}");
    assert!(
        run.stdout.contains("warning:")
            && run.stdout.contains(&at)
            && run.stdout.contains("timeout_sec must be 1..300")
            && run.stdout.contains(&t.cmd("sync")),
        "said, with file, line and what to fix: {run:?}"
    );
    // `check` reports it; `sync` refuses to run on it.
    let run = t.credloader(&["check", "--json"]);
    assert!(
        run.json()["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["severity"] == "error"
                && f["problem"].as_str().unwrap().contains(&at)
                && f["fix"].as_str().unwrap().contains("[sources]")),
        "{run:?}"
    );
    let run = t.credloader(&["sync"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains(&at), "{run:?}");

    // An unknown key in `[sources]` of the file that defines the service.
    let text =
        String::from_utf8(t.read("/etc/quantum/credloader.d/position-monitor.toml")).unwrap();
    t.config(
        "position-monitor.toml",
        &format!("{text}\n[sources]\nenvironment = \"dev\"\ntimeout = 5\n[sources.file]\npath = \"/x.json\"\n"),
    );
    std::fs::remove_file(t.path("/etc/quantum/credloader.d/sync.toml")).unwrap();
    std::fs::remove_file(t.path(ENV)).unwrap();
    let run = t.credloader(&["apply"]);
    run.ok();
    assert!(t.exists(ENV), "served: {run:?}");
    assert!(run.stdout.contains("unknown field `timeout`"), "{run:?}");
}

#[test]
fn optional_services_get_a_dash_and_credential_delivery_writes_no_plaintext() {
    let t = Tree::new();
    t.config(
        "x.toml",
        "[services.opt]\nunit = \"opt.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\nrequired = false\n\
         [services.cred]\nunit = \"cred.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\ndelivery = \"credential\"\n",
    );
    t.seal("K", b"value-k");
    t.credloader(&["apply"]).ok();
    let opt = t.read_string("/etc/systemd/system/opt.service.d/50-credloader.conf");
    assert!(
        opt.contains("EnvironmentFile=-/run/credloader/opt.env"),
        "{opt}"
    );
    let cred = t.read_string("/etc/systemd/system/cred.service.d/50-credloader.conf");
    assert!(
        cred.contains("LoadCredentialEncrypted=K:/etc/quantum/creds/K.cred"),
        "{cred}"
    );
    assert!(!cred.contains("EnvironmentFile"));
    assert!(!t.exists("/run/credloader/cred.env"));
}

#[test]
fn a_service_that_stops_using_its_env_file_leaves_no_plaintext_behind() {
    let t = Tree::new();
    t.config("a.toml", &service("a", "qt", &["K"]));
    t.seal("K", b"value-one");
    t.credloader(&["apply"]).ok();
    assert!(t.exists("/run/credloader/a.env"));

    // Moved elsewhere: the new file holds the values, the old one is gone.
    t.mkdir("/run/secrets", 0o755);
    t.config(
        "00-loader.toml",
        "[loader]\nenv_file_dirs = [\"/run/secrets\"]\n",
    );
    t.config(
        "a.toml",
        &format!(
            "{}env_file = \"/run/secrets/a.env\"\n",
            service("a", "qt", &["K"])
        ),
    );
    t.credloader(&["apply"]).ok();
    assert!(
        !t.exists("/run/credloader/a.env"),
        "the old env file stayed"
    );
    assert!(t.read_string("/run/secrets/a.env").contains("value-one"));

    // Now PID 1 delivers it: no plaintext file at all.
    t.config(
        "a.toml",
        &format!("{}delivery = \"credential\"\n", service("a", "qt", &["K"])),
    );
    let run = t.credloader(&["apply", "--json"]);
    run.ok();
    assert!(!t.exists("/run/secrets/a.env"), "the old env file stayed");
    assert!(
        run.json()["warnings"].as_array().unwrap().is_empty(),
        "{run:#?}"
    );
    let dropin = t.read_string("/etc/systemd/system/a.service.d/50-credloader.conf");
    assert!(dropin.contains("LoadCredentialEncrypted=K:"), "{dropin}");

    // A run that died before removing one (or whose daemon-reload failed)
    // left it recorded: the next run removes it.
    t.write("/run/credloader/died.env", b"K=\"old\"\n", 0o600);
    let state_path = "/var/lib/credloader/state.json";
    let mut state: serde_json::Value = serde_json::from_slice(&t.read(state_path)).unwrap();
    state["leftover_env_files"] = serde_json::json!(["/run/credloader/died.env"]);
    t.write(state_path, &serde_json::to_vec(&state).unwrap(), 0o600);
    t.credloader(&["apply"]).ok();
    assert!(!t.exists("/run/credloader/died.env"));
    assert!(!t.read_string(state_path).contains("died.env"));

    // A path another service takes over is never removed.
    t.config("a.toml", &service("a", "qt", &["K"]));
    t.config(
        "b.toml",
        &format!(
            "{}env_file = \"/run/secrets/b.env\"\n",
            service("b", "qt", &["K"])
        ),
    );
    t.credloader(&["apply"]).ok();
    t.config(
        "a.toml",
        &format!(
            "{}env_file = \"/run/secrets/a2.env\"\n",
            service("a", "qt", &["K"])
        ),
    );
    t.config(
        "b.toml",
        &format!(
            "{}env_file = \"/run/credloader/a.env\"\n",
            service("b", "qt", &["K"])
        ),
    );
    t.credloader(&["apply"]).ok();
    assert!(t.exists("/run/credloader/a.env"), "b's file now");
    assert!(t.exists("/run/secrets/a2.env"));
    assert!(!t.exists("/run/secrets/b.env"));
}

#[test]
fn an_env_file_is_never_handed_to_a_user_the_unit_does_not_run_as() {
    let t = Tree::new();
    let unit = |name: &str, body: &str| {
        t.write(
            &format!("/usr/lib/systemd/system/{name}.service"),
            format!("[Service]\n{body}ExecStart=/bin/sleep infinity\n").as_bytes(),
            0o644,
        )
    };
    unit("rootish", "");
    unit("other", "User=bot\n");
    unit("fine", "User=qt\n");
    unit("byid", "User=1500\n");
    unit("overridden", "User=bot\n");
    t.write(
        "/etc/systemd/system/overridden.service.d/10-user.conf",
        b"[Service]\nUser=qt\n",
        0o644,
    );
    for name in ["rootish", "other", "fine", "byid", "overridden", "notyet"] {
        t.config(&format!("{name}.toml"), &service(name, "qt", &["K"]));
    }
    t.seal("K", b"value-k");

    let run = t.credloader(&["apply", "--json"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let j = run.json();
    let outcome = |name: &str| {
        j["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .unwrap()
            .clone()
    };
    let root = outcome("rootish");
    assert_eq!(root["outcome"], "failed");
    let why = root["error"].as_str().unwrap();
    assert!(
        why.contains("rootish.service runs as root (it has no User=)")
            && why.contains("LD_PRELOAD")
            && why.contains("set `user = \"root\"` for service rootish (")
            && why.contains("rootish.toml:1"),
        "{why}"
    );
    let other = outcome("other")["error"].as_str().unwrap().to_string();
    assert!(other.contains("other.service runs as bot"), "{other}");
    for ok in ["fine", "byid", "overridden"] {
        assert_eq!(outcome(ok)["outcome"], "updated", "{ok}");
    }
    // A unit not installed yet cannot be asked: served, and said.
    assert_eq!(outcome("notyet")["outcome"], "updated");
    assert!(
        j["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("could not tell whom notyet.service runs as")),
        "{j}"
    );
    assert!(!t.exists("/run/credloader/rootish.env") && !t.exists("/run/credloader/other.env"));

    // `check` says the same; the fix the message names brings it up.
    let check = t.credloader(&["check", "--json"]);
    assert!(
        check.json()["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["severity"] == "error"
                && f["problem"]
                    .as_str()
                    .unwrap()
                    .contains("rootish.service runs as root")),
        "{check:#?}"
    );
    unit("rootish", "User=qt\n");
    t.config("other.toml", &service("other", "bot", &["K"]));
    t.credloader(&["apply"]).ok();
    assert_eq!(t.owner_mode("/run/credloader/rootish.env").0, 1500);

    // A unit changed afterwards is caught by `check`: apply looks only
    // when a definition is new or changed (so boot, which rewrites every
    // env file, asks systemd nothing).
    unit("fine", "");
    std::fs::remove_file(t.path("/run/credloader/fine.env")).unwrap();
    t.credloader(&["apply"]).ok();
    let check = t.credloader(&["check", "--json"]);
    assert_eq!(check.code, 1, "{check:#?}");
    assert!(
        check.all().contains("fine.service runs as root"),
        "{check:#?}"
    );
}

/// Issue #13: the owner check reads an image's unit files the way PID 1
/// does (`src/unitfile.rs`, proved against a real PID 1 by
/// `tests/e2e_unitfile.rs`), and refuses what it cannot decide.
#[test]
fn the_owner_check_reads_unit_files_as_pid1_does_and_refuses_what_it_cannot_tell() {
    let t = Tree::new();
    let unit = |path: &str, body: &str| t.write(path, body.as_bytes(), 0o644);
    let run = "ExecStart=/bin/sleep infinity\n";
    // Drop-ins apply by file name across directories: the admin's 60- in
    // /etc comes after the vendor's 10- in /usr/lib, so this runs as root.
    unit(
        "/usr/lib/systemd/system/reordered.service",
        &format!("[Service]\nUser=qt\n{run}"),
    );
    unit(
        "/usr/lib/systemd/system/reordered.service.d/10-vendor.conf",
        "[Service]\nUser=qt\n",
    );
    unit(
        "/etc/systemd/system/reordered.service.d/60-override.conf",
        "[Service]\nUser=root\n",
    );
    // Only [Service] counts: User= under [Install] runs nothing as qt.
    unit(
        "/etc/systemd/system/installed.service",
        &format!("[Service]\n{run}[Install]\nUser=qt\nWantedBy=multi-user.target\n"),
    );
    // A dash-prefix drop-in (`dashed-.service.d`) applies to dashed-x.
    unit(
        "/etc/systemd/system/dashed-x.service",
        &format!("[Service]\nUser=qt\n{run}"),
    );
    unit(
        "/etc/systemd/system/dashed-.service.d/10.conf",
        "[Service]\nUser=\n",
    );
    // A continuation line: `User=q` + `t` is the user "q t", not qt.
    unit(
        "/etc/systemd/system/continued.service",
        &format!("[Service]\n{run}User=q\\\nt\n"),
    );
    // A user the image does not know, and one only the running system knows.
    unit(
        "/etc/systemd/system/ghost.service",
        &format!("[Service]\nUser=ghost\n{run}"),
    );
    unit(
        "/etc/systemd/system/hostname.service",
        &format!("[Service]\nUser=%H\n{run}"),
    );
    // Fine: a template's instance named after its user, and an override
    // that sorts last and makes the unit qt's.
    unit(
        "/usr/lib/systemd/system/worker@.service",
        &format!("[Service]\nUser=%i\n{run}"),
    );
    unit(
        "/usr/lib/systemd/system/back.service",
        &format!("[Service]\n{run}"),
    );
    unit(
        "/etc/systemd/system/back.service.d/override.conf",
        "[Service]\nUser=qt\n",
    );
    for name in [
        "reordered",
        "installed",
        "dashed-x",
        "continued",
        "ghost",
        "hostname",
        "back",
    ] {
        t.config(&format!("{name}.toml"), &service(name, "qt", &["K"]));
    }
    t.config(
        "worker.toml",
        "[services.worker]\nunit = \"worker@qt.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\n",
    );
    t.seal("K", b"value-k");

    let run = t.credloader(&["apply", "--json"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let j = run.json();
    let error = |name: &str| {
        j["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .unwrap()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    for (name, why) in [
        (
            "reordered",
            "reordered.service runs as root, but its env file belongs to qt",
        ),
        (
            "installed",
            "installed.service runs as root (it has no User=)",
        ),
        (
            "dashed-x",
            "dashed-x.service runs as root (it has no User=)",
        ),
        (
            "continued",
            "continued.service runs as q t, a user this system does not know",
        ),
        (
            "ghost",
            "ghost.service runs as ghost, a user this system does not know",
        ),
        ("hostname", "cannot tell whom hostname.service runs as"),
    ] {
        assert!(error(name).contains(why), "{name}: {}", error(name));
        assert!(!t.exists(&format!("/run/credloader/{name}.env")), "{name}");
    }
    assert!(error("hostname").contains("%H"), "{}", error("hostname"));
    assert!(
        error("hostname").contains("set `user = \"root\"`"),
        "{}",
        error("hostname")
    );
    for fine in ["worker", "back"] {
        assert_eq!(error(fine), "", "{fine}");
        assert_eq!(
            t.owner_mode(&format!("/run/credloader/{fine}.env")).0,
            QT_UID
        );
    }
    let warnings = j["warnings"].to_string();
    assert!(
        !warnings.contains("could not tell whom worker@qt"),
        "{warnings}"
    );

    // `check` reads the units the same way.
    let check = t.credloader(&["check"]);
    assert_eq!(check.code, 1, "{check:#?}");
    assert!(
        check.all().contains("reordered.service runs as root"),
        "{check:#?}"
    );
}

/// Issue #12: a drop-in that sorts after `50-credloader.conf` (the seed's
/// own `credentials.conf`) and loads a file that sets a managed variable
/// wins over credloader's env file. apply, status and check name the file,
/// the line and the fix; only what truly wins is reported.
#[test]
fn whatever_wins_over_the_env_file_is_named_with_its_line_and_the_fix() {
    let t = Tree::new();
    position_monitor(&t);
    let unit = "/etc/systemd/system/quantum-position-monitor.service";
    t.write(unit, b"[Service]\nUser=qt\nExecStart=/bin/sleep infinity\nEnvironmentFile=/etc/quantum/fragment.env\n", 0o644);
    // The seed host's layout, as an operator left it.
    let legacy = "/etc/quantum/position-monitor-secrets/binance.env";
    t.write(
        legacy,
        b"BINANCE_API_KEY=old-key\nBINANCE_API_SECRET=old-secret\nEXIT_BRAIN_V35_ENABLED=true\n",
        0o600,
    );
    let d = format!("{unit}.d");
    t.write(
        &format!("{d}/credentials.conf"),
        format!("[Service]\nEnvironmentFile=-{legacy}\n").as_bytes(),
        0o644,
    );
    // None of these wins: a file loaded before credloader's (the unit's
    // own, and an earlier drop-in's), Environment= (files win over it), a
    // file that sets no managed variable, a setting outside [Service].
    for f in ["/etc/quantum/fragment.env", "/etc/quantum/early.env"] {
        t.write(f, b"BINANCE_API_SECRET=early\n", 0o600);
    }
    t.write("/etc/quantum/other.env", b"LOG_LEVEL=debug\n", 0o644);
    t.write(
        &format!("{d}/10-early.conf"),
        b"[Service]\nEnvironmentFile=/etc/quantum/early.env\n",
        0o644,
    );
    t.write(
        &format!("{d}/60-env.conf"),
        b"[Service]\nEnvironment=BINANCE_API_SECRET=env\nEnvironmentFile=/etc/quantum/other.env\n\
          [Install]\nEnvironmentFile=/etc/quantum/early.env\n",
        0o644,
    );
    // These do: UnsetEnvironment= of a managed variable, and (a warning
    // only) a file that does not exist yet.
    t.write(
        &format!("{d}/70-unset.conf"),
        b"[Service]\nUnsetEnvironment=LOG_LEVEL EXCHANGE_KEY\n",
        0o644,
    );
    t.write(
        &format!("{d}/80-later.conf"),
        b"[Service]\nEnvironmentFile=-/etc/quantum/later.env\n",
        0o644,
    );

    let run = t.credloader(&["apply", "--json"]);
    assert_eq!(run.code, 0, "warnings, not errors: {run:#?}");
    let warnings: Vec<String> = run.json()["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    let root = t.root().display().to_string();
    let sets = warnings
        .iter()
        .find(|w| w.contains("credentials.conf"))
        .unwrap_or_else(|| panic!("{warnings:#?}"));
    for part in [
        &format!(
            "service position-monitor: {root}{d}/credentials.conf:2 loads EnvironmentFile={legacy}"
        ),
        "after credloader's /run/credloader/position-monitor.env",
        "it sets BINANCE_API_KEY, BINANCE_API_SECRET, EXIT_BRAIN_V35_ENABLED: quantum-position-monitor.service gets those values",
        "fix: remove that EnvironmentFile= line from",
        "systemctl daemon-reload",
    ] {
        assert!(sets.contains(part), "{part}\n{sets}");
    }
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("70-unset.conf:2 has UnsetEnvironment=EXCHANGE_KEY")),
        "{warnings:#?}"
    );
    assert!(
        warnings.iter().any(|w| w
            .contains("80-later.conf:2 loads EnvironmentFile=/etc/quantum/later.env")
            && w.contains("does not exist now")),
        "{warnings:#?}"
    );
    assert_eq!(warnings.len(), 3, "only what wins: {warnings:#?}");
    assert!(!run.all().contains("old-secret") && !run.all().contains("old-key"));

    // status: per service; check: errors for what wins, a warning for the
    // file that does not exist yet.
    let status = t.credloader(&["status", "--json"]);
    let over = status.json()["services"][0]["overridden"].clone();
    let blocks: Vec<bool> = over
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["blocks"].as_bool().unwrap())
        .collect();
    assert_eq!(blocks, [false, true, true], "{over:#}");
    assert!(t
        .credloader(&["status"])
        .stdout
        .contains("overridden:    YES: "));
    let check = t.credloader(&["check", "--json"]);
    assert_eq!(check.code, 1);
    let findings = check.json()["findings"].clone();
    let about = |sev: &str, what: &str| {
        findings.as_array().unwrap().iter().any(|f| {
            f["severity"] == sev
                && f["subject"] == "service position-monitor"
                && f["problem"].as_str().unwrap().contains(what)
        })
    };
    assert!(about("error", "credentials.conf:2"), "{findings:#}");
    assert!(
        about("error", "UnsetEnvironment=EXCHANGE_KEY"),
        "{findings:#}"
    );
    assert!(about("warning", "later.env"), "{findings:#}");

    // An empty EnvironmentFile= after credloader's drop-in drops its file;
    // a same-named drop-in in a directory read first hides credloader's.
    t.write(
        &format!("{d}/90-reset.conf"),
        b"[Service]\nEnvironmentFile=\n",
        0o644,
    );
    let status = t.credloader(&["status", "--json"]);
    let over = status.json()["services"][0]["overridden"].to_string();
    assert!(
        over.contains("90-reset.conf:2 empties EnvironmentFile="),
        "{over}"
    );
    std::fs::remove_file(t.path(&format!("{d}/90-reset.conf"))).unwrap();
    t.write(
        "/run/systemd/system.control/quantum-position-monitor.service.d/50-credloader.conf",
        b"[Service]\n",
        0o644,
    );
    let over = t.credloader(&["status", "--json"]).json()["services"][0]["overridden"].to_string();
    assert!(
        over.contains("has the name of credloader's drop-in and hides it"),
        "{over}"
    );
    std::fs::remove_file(
        t.path("/run/systemd/system.control/quantum-position-monitor.service.d/50-credloader.conf"),
    )
    .unwrap();

    // The fix the message names clears it.
    for f in ["credentials.conf", "70-unset.conf", "80-later.conf"] {
        std::fs::remove_file(t.path(&format!("{d}/{f}"))).unwrap();
    }
    let run = t.credloader(&["apply", "--json"]);
    assert_eq!(run.json()["warnings"], serde_json::json!([]), "{run:#?}");
    assert_eq!(
        t.credloader(&["status", "--json"]).json()["services"][0]["overridden"],
        serde_json::json!([])
    );
}

#[test]
fn a_service_removed_from_the_config_loses_its_files() {
    let t = Tree::new();
    position_monitor(&t);
    t.config("bot.toml", &service("bot", "bot", &["KRAKEN_KEY"]));
    t.seal("KRAKEN_KEY", b"kraken-one");
    t.credloader(&["apply"]).ok();
    std::fs::remove_file(t.path("/etc/quantum/credloader.d/bot.toml")).unwrap();
    let j = t.credloader(&["apply", "--json"]).json();
    assert_eq!(j["removed"], serde_json::json!(["bot"]));
    assert_eq!(j["daemon_reload"], true);
    assert!(!t.exists("/run/credloader/bot.env"));
    assert!(!t.exists("/etc/systemd/system/bot.service.d"));
    assert!(t.exists(ENV));
}

#[test]
fn a_missing_user_fails_that_service_only() {
    let t = Tree::new();
    position_monitor(&t);
    t.config(
        "ghost.toml",
        &service("ghost", "ghost", &["BINANCE_API_KEY"]),
    );
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("user `ghost` does not exist"),
        "{run:?}"
    );
    assert!(t.exists(ENV));
}

#[test]
fn stale_temp_files_from_a_crash_are_cleaned_up() {
    let t = Tree::new();
    position_monitor(&t);
    t.mkdir("/run/credloader", 0o755);
    t.write(
        "/run/credloader/.position-monitor.env.credloader-tmp-99-1-ff",
        b"half",
        0o600,
    );
    t.credloader(&["apply"]).ok();
    let names: Vec<_> = std::fs::read_dir(t.path("/run/credloader"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("position-monitor.env")]
    );
}

#[test]
fn config_files_others_could_write_are_refused() {
    let t = Tree::new();
    position_monitor(&t);
    t.config("evil.toml", &service("evil", "bot", &["BINANCE_API_KEY"]));
    // A drop-in anyone may write could hand any secret to any user.
    std::fs::set_permissions(
        t.path("/etc/quantum/credloader.d/evil.toml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("evil.toml") && run.stdout.contains("chmod go-w"),
        "{run:?}"
    );
    assert!(!t.exists("/run/credloader/evil.env"));
    assert!(t.exists(ENV), "the trusted services are served");

    // A symlinked drop-in is not followed.
    std::fs::remove_file(t.path("/etc/quantum/credloader.d/evil.toml")).unwrap();
    t.write(
        "/tmp/elsewhere.toml",
        service("evil", "bot", &["BINANCE_API_KEY"]).as_bytes(),
        0o644,
    );
    std::os::unix::fs::symlink(
        t.path("/tmp/elsewhere.toml"),
        t.path("/etc/quantum/credloader.d/evil.toml"),
    )
    .unwrap();
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("symbolic link"), "{run:?}");
    assert!(!t.exists("/run/credloader/evil.env"));

    // The main file owned by a service user: nothing is trusted.
    t.write("/etc/quantum/credloader.toml", b"# main\n", 0o644);
    std::os::unix::fs::chown(t.path("/etc/quantum/credloader.toml"), Some(QT_UID), None).unwrap();
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("owned by uid 1500"), "{run:?}");
}

/// A stamp is not left for inputs changed in the last 50 ms (a same-size
/// rewrite in the same kernel tick would keep its identity): let them age.
fn let_changes_age() {
    std::thread::sleep(std::time::Duration::from_millis(60));
}

/// Runs `apply -vv --json` and tells whether it took the no-op fast path.
fn fast_apply(t: &Tree) -> (bool, serde_json::Value) {
    let run = t.credloader(&["-vv", "apply", "--json"]);
    run.ok();
    (
        run.stderr.contains("nothing changed since the last apply"),
        run.json(),
    )
}

#[test]
fn a_no_op_apply_is_remembered_and_repeated_until_an_input_changes() {
    let t = Tree::new();
    position_monitor(&t);
    t.config("bot.toml", &service("bot", "bot", &["KRAKEN_KEY"]));
    t.seal("KRAKEN_KEY", b"kraken-one");
    t.credloader(&["apply"]).ok();
    let_changes_age();
    let (fast, slow_report) = fast_apply(&t);
    assert!(!fast, "the first no-op runs in full and leaves the stamp");
    let (fast, report) = fast_apply(&t);
    assert!(fast, "nothing changed: the stamp answers");
    assert_eq!(report, slow_report, "and says exactly what a full run said");

    // Each change below must be seen: the run after it is a full one (and
    // does the right thing), the one after that is fast again.
    type Change = Box<dyn Fn(&Tree)>;
    let changes: Vec<(&str, Change)> = vec![
        (
            "a sealed credential",
            Box::new(|t| t.seal("KRAKEN_KEY", b"kraken-two")),
        ),
        (
            "an env file",
            Box::new(|t| std::fs::write(t.path(ENV), b"X=1\n").unwrap()),
        ),
        (
            "a drop-in",
            Box::new(|t| std::fs::write(t.path(DROPIN), b"[Service]\n").unwrap()),
        ),
        (
            "a config file",
            Box::new(|t| {
                t.config(
                    "bot.toml",
                    &service("bot", "bot", &["KRAKEN_KEY", "BINANCE_API_KEY"]),
                )
            }),
        ),
        (
            "a new config file",
            Box::new(|t| t.config("zz.toml", "# nothing yet\n")),
        ),
        (
            "the state",
            Box::new(|t| {
                let p = t.path("/var/lib/credloader/state.json");
                let text = std::fs::read(&p).unwrap();
                std::fs::write(&p, text).unwrap();
            }),
        ),
        (
            "the account files",
            Box::new(|t| {
                let p = t.path("/etc/passwd");
                let text = std::fs::read(&p).unwrap();
                std::fs::write(&p, text).unwrap();
            }),
        ),
    ];
    for (what, change) in changes {
        change(&t);
        let (fast, _) = fast_apply(&t);
        assert!(!fast, "a change to {what} went unnoticed");
        // A full run that changed something leaves no stamp; the next
        // (a full no-op) leaves one.
        fast_apply(&t);
        let_changes_age();
        fast_apply(&t);
        let (fast, _) = fast_apply(&t);
        assert!(fast, "after {what} settled, the fast path is back");
    }
    // Everything a full run repairs was repaired on the way.
    assert!(t
        .read_string("/run/credloader/bot.env")
        .contains("KRAKEN_KEY=\"kraken-two\""));
    assert!(t
        .read_string(ENV)
        .contains("BINANCE_API_KEY=\"k-1111111111111111\""));
    assert!(t.read_string(DROPIN).contains("EnvironmentFile="));
}

#[test]
fn a_change_in_the_last_tick_is_never_stamped_and_a_directory_opened_up_is_seen() {
    let t = Tree::new();
    position_monitor(&t);
    t.credloader(&["apply"]).ok();
    // Right after a write, the no-op runs in full and leaves no stamp. That
    // needs the run's snapshot within 50 ms of the write: on a loaded
    // machine the spawn alone can take longer (and the stamp is then
    // rightly written), so the write is repeated until a whole run fits in
    // 40 ms of it, and the verdict is asserted for that run.
    let main = t.path("/etc/quantum/credloader.toml");
    let text = std::fs::read(&main).unwrap();
    let mut checked = false;
    for _ in 0..50 {
        std::fs::write(&main, &text).unwrap(); // same bytes, a new ctime
        let started = std::time::Instant::now();
        let (fast, _) = fast_apply(&t);
        assert!(!fast, "a changed input always gets a full run");
        if started.elapsed() < std::time::Duration::from_millis(40) {
            let (fast, _) = fast_apply(&t);
            assert!(
                !fast,
                "a file changed within 50 ms of the snapshot is not stamped"
            );
            checked = true;
            break;
        }
    }
    assert!(
        checked,
        "no run finished within 40 ms of a write in 50 tries"
    );
    let_changes_age();
    fast_apply(&t);
    assert!(fast_apply(&t).0);
    // A chmod of the env dir moves no identity of the files in it, but a
    // full run would refuse the dir: so the stamp must not answer.
    let dir = t.path("/run/credloader");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let run = t.credloader(&["-vv", "apply", "--json"]);
    assert!(
        !run.stderr.contains("nothing changed since the last apply"),
        "{run:?}"
    );
    assert_eq!(run.code, 1, "{run:?}");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn a_relative_config_path_names_a_different_config_from_each_directory() {
    let t = Tree::new();
    position_monitor(&t);
    // `--config credloader.toml`, run from the tree's /etc/quantum, then
    // from another directory holding another (empty) configuration.
    let run_in = |dir: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_credloader"))
            .current_dir(dir)
            .arg("--root")
            .arg(t.root())
            .args(["--config", "credloader.toml", "-vv", "apply", "--json"])
            .env("SYSTEMD_CREDENTIAL_SECRET", t.secret())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let here = t.path("/etc/quantum");
    std::fs::write(
        here.join("credloader.toml"),
        "# services in credloader.d/\n",
    )
    .unwrap();
    run_in(&here);
    let_changes_age();
    run_in(&here);
    let third = run_in(&here);
    assert!(
        third.contains("nothing changed since the last apply"),
        "{third}"
    );
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("credloader.toml"), "# nothing\n").unwrap();
    let stderr = run_in(other.path());
    assert!(
        !stderr.contains("nothing changed since the last apply"),
        "{stderr}"
    );
}

#[test]
fn a_run_with_a_problem_leaves_no_stamp() {
    let t = Tree::new();
    position_monitor(&t);
    t.config("bot.toml", &service("bot", "bot", &["MISSING_KEY"]));
    t.credloader(&["apply"]);
    for _ in 0..3 {
        let run = t.credloader(&["-vv", "apply", "--json"]);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(!run.stderr.contains("nothing changed since the last apply"));
        assert!(run.stdout.contains("MISSING_KEY"), "{run:?}");
    }
}

#[test]
fn an_image_is_not_told_systemd_was_reloaded() {
    let t = Tree::new();
    position_monitor(&t);
    let run = t.credloader(&["apply"]);
    run.ok();
    assert!(
        run.stdout
            .contains("drop-ins changed: the image's systemd loads them at its boot")
            && !run.stdout.contains("daemon-reload done"),
        "{run:#?}"
    );
}

#[test]
fn a_fleet_larger_than_the_open_file_limit_is_served_and_every_file_proven() {
    // Each written env file stays open until what it holds is proven
    // (src/provenance.rs): in batches of a quarter of the limit, so a limit
    // that holds the run's directories (one drop-in directory per service,
    // kept open) but not also every env file still serves them all.
    let t = Tree::new();
    const N: usize = 100;
    for i in 0..N {
        t.config(
            &format!("s{i}.toml"),
            &service(&format!("s{i}"), "qt", &["SHARED_KEY"]),
        );
    }
    t.seal("SHARED_KEY", b"shared-value-1234567");
    let mut cmd = t.command(&["apply", "--json"]);
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            use nix::sys::resource::{setrlimit, Resource};
            setrlimit(Resource::RLIMIT_NOFILE, 192, 192).map_err(std::io::Error::from)
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let state: serde_json::Value =
        serde_json::from_slice(&t.read("/var/lib/credloader/state.json")).unwrap();
    for i in 0..N {
        assert!(t
            .read_string(&format!("/run/credloader/s{i}.env"))
            .contains("shared-value-1234567"));
        assert!(
            !state["services"][format!("s{i}")]["env_file_id"].is_null(),
            "s{i}: no identity recorded"
        );
    }
    let again = t.credloader(&["apply", "--json"]).json();
    assert!(again["services"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["outcome"] == "unchanged" && s["decrypted"] == serde_json::json!([])));
}
