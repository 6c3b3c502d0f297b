//! `credloader import` of a layout built like the manual procedure: a
//! plaintext env file, an `EnvironmentFile=-` drop-in, keys sealed without
//! `--name`.

mod common;

use common::{Tree, QT_UID};

const PLAIN: &str = "/etc/quantum/position-monitor-secrets/binance.env";
const UNIT: &str = "/etc/systemd/system/quantum-position-monitor.service";
const LEGACY_DROPIN: &str =
    "/etc/systemd/system/quantum-position-monitor.service.d/credentials.conf";
const CONF: &str = "/etc/quantum/credloader.d/position-monitor.toml";
const ENV: &str = "/run/credloader/position-monitor.env";

fn legacy(t: &Tree) {
    t.mkdir("/etc/quantum/position-monitor-secrets", 0o700);
    t.write(
        PLAIN,
        b"# binance keys, set by hand\nBINANCE_API_KEY=k-legacy-1111111111\n\
          BINANCE_API_SECRET='s-legacy-2222222222'\nEXIT_BRAIN_V35_ENABLED=true\n",
        0o600,
    );
    std::os::unix::fs::chown(t.path(PLAIN), Some(QT_UID), Some(QT_UID)).unwrap();
    t.write(
        UNIT,
        b"[Unit]\nDescription=position monitor\n[Service]\nUser=qt\nExecStart=/usr/bin/python3 -m monitor\n",
        0o644,
    );
    t.write(
        LEGACY_DROPIN,
        b"[Service]\nEnvironmentFile=-/etc/quantum/position-monitor-secrets/binance.env\n",
        0o644,
    );
    // The manual procedure sealed the key as well, without --name.
    t.seal_legacy("BINANCE_API_KEY", b"k-legacy-1111111111");
}

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "import",
        "--env-file",
        PLAIN,
        "--unit",
        "quantum-position-monitor.service",
        "--service",
        "position-monitor",
        "--secret",
        "BINANCE_API_KEY",
        "--secret",
        "BINANCE_API_SECRET",
        "--static",
        "EXIT_BRAIN_V35_ENABLED",
    ];
    v.extend_from_slice(extra);
    v
}

fn no_values(run: &common::Run) {
    for v in ["1111111111", "2222222222"] {
        assert!(!run.all().contains(v), "{v} leaked: {run:?}");
    }
}

#[test]
fn dry_run_shows_every_step_and_changes_nothing() {
    let t = Tree::new();
    legacy(&t);
    let sealed_before = t.read("/etc/quantum/creds/BINANCE_API_KEY.cred");
    let run = t.credloader(&args(&["--dry-run"]));
    run.ok();
    no_values(&run);
    for step in [
        "dry run",
        "secret BINANCE_API_KEY",
        "would reseal",
        "secret BINANCE_API_SECRET",
        "would seal",
        "EXIT_BRAIN_V35_ENABLED: not secret",
        CONF,
        "credentials.conf: would be removed",
        "would overwrite",
        "best-effort",
    ] {
        assert!(run.stdout.contains(step), "{step}: {run:?}");
    }
    assert!(t.exists(PLAIN) && t.exists(LEGACY_DROPIN));
    assert!(!t.exists(CONF) && !t.exists(ENV));
    assert!(!t.exists("/etc/quantum/creds/BINANCE_API_SECRET.cred"));
    assert_eq!(
        t.read("/etc/quantum/creds/BINANCE_API_KEY.cred"),
        sealed_before
    );
    let j = t.credloader(&args(&["--dry-run", "--json"])).json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["secrets"][0]["action"], "reseal");
    assert_eq!(j["secrets"][1]["action"], "seal");
    assert_eq!(j["statics"][0], "EXIT_BRAIN_V35_ENABLED");
    assert_eq!(j["legacy_dropins"][0]["action"], "remove");
}

#[test]
fn import_seals_configures_applies_and_removes_the_plaintext() {
    let t = Tree::new();
    legacy(&t);
    let run = t.credloader(&args(&["--json"]));
    assert_eq!(run.code, 0, "{run:?}");
    no_values(&run);
    let j = run.json();
    assert_eq!(j["plaintext_removed"], true);
    assert!(j["note"].as_str().unwrap().contains("best-effort"));
    // The plaintext and the legacy drop-in are gone.
    assert!(!t.exists(PLAIN));
    assert!(!t.exists(LEGACY_DROPIN));
    // Both secrets are sealed root 0600, with their own names now.
    for k in ["BINANCE_API_KEY", "BINANCE_API_SECRET"] {
        assert_eq!(
            t.owner_mode(&format!("/etc/quantum/creds/{k}.cred")),
            (0, 0, 0o600)
        );
        let show = t.credloader(&["show", k, "--json"]);
        show.ok();
        assert_eq!(show.json()["legacy_name"], false, "{k}");
    }
    // The old legacy-sealed bytes are kept as a generation.
    assert!(t.exists("/var/lib/credloader/generations/BINANCE_API_KEY/1.cred"));
    // The config names secrets as credentials and keeps the rest static.
    let conf = t.read_string(CONF);
    assert!(
        conf.contains("credentials = [\"BINANCE_API_KEY\", \"BINANCE_API_SECRET\"]"),
        "{conf}"
    );
    assert!(conf.contains("EXIT_BRAIN_V35_ENABLED = \"true\""), "{conf}");
    assert!(conf.contains("user = \"qt\""), "{conf}");
    // Delivered: the same variables, byte for byte, as the service had.
    assert_eq!(t.owner_mode(ENV), (QT_UID, QT_UID, 0o600));
    let env = t.read_string(ENV);
    assert!(
        env.contains("BINANCE_API_KEY=\"k-legacy-1111111111\"\n"),
        "{env}"
    );
    assert!(
        env.contains("BINANCE_API_SECRET=\"s-legacy-2222222222\"\n"),
        "{env}"
    );
    assert!(env.contains("EXIT_BRAIN_V35_ENABLED=\"true\"\n"), "{env}");
    let dropin =
        t.read_string("/etc/systemd/system/quantum-position-monitor.service.d/50-credloader.conf");
    assert!(dropin.contains("EnvironmentFile=/run/credloader/position-monitor.env"));
    // And check is content.
    let check = t.credloader(&["check", "--json"]);
    assert_eq!(check.json()["ok"], true, "{check:?}");
    // The human form says plainly that overwriting is best-effort.
    let t2 = Tree::new();
    legacy(&t2);
    let run = t2.credloader(&args(&[]));
    run.ok();
    assert!(
        run.stdout.contains("overwritten with zeros and removed"),
        "{run:?}"
    );
    assert!(run.stdout.contains("copy-on-write"), "{run:?}");
}

#[test]
fn a_legacy_dropin_with_more_in_it_is_rewritten_not_removed() {
    let t = Tree::new();
    legacy(&t);
    t.write(
        LEGACY_DROPIN,
        b"[Service]\nEnvironmentFile=-/etc/quantum/position-monitor-secrets/binance.env\nNice=5\n",
        0o644,
    );
    t.credloader(&args(&[])).ok();
    assert_eq!(t.read_string(LEGACY_DROPIN), "[Service]\nNice=5\n");
}

#[test]
fn import_refuses_and_changes_nothing_on_bad_input() {
    let t = Tree::new();
    legacy(&t);
    // A key the file does not have.
    let mut a = args(&[]);
    a.extend(["--secret", "NOT_THERE"]);
    let run = t.credloader(&a);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("NOT_THERE") && run.stderr.contains("BINANCE_API_KEY"));
    no_values(&run);

    // A key nobody said is secret or not: a forgotten --secret must not put
    // a secret in plain text into the configuration.
    let run = t.credloader(&args(&[])[..11]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("EXIT_BRAIN_V35_ENABLED") && run.stderr.contains("--static KEY"),
        "{run:?}"
    );
    no_values(&run);
    assert!(!t.exists(CONF));

    // An existing credential with a different value.
    t.seal("BINANCE_API_SECRET", b"something-else");
    let run = t.credloader(&args(&[]));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("BINANCE_API_SECRET") && run.stderr.contains("different value"));
    no_values(&run);
    std::fs::remove_file(t.path("/etc/quantum/creds/BINANCE_API_SECRET.cred")).unwrap();

    // A unit without User= and no --user.
    t.write(UNIT, b"[Service]\nExecStart=/bin/true\n", 0o644);
    let run = t.credloader(&args(&[]));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--user"), "{run:?}");

    // A missing env file.
    let run = t.credloader(&[
        "import",
        "--env-file",
        "/etc/nowhere.env",
        "--unit",
        "quantum-position-monitor.service",
        "--secret",
        "K",
        "--user",
        "qt",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("/etc/nowhere.env"), "{run:?}");

    assert!(t.exists(PLAIN) && t.exists(LEGACY_DROPIN));
    assert!(!t.exists(CONF));
}

#[test]
fn flags_that_cannot_go_together_are_refused_before_anything_is_read() {
    // No env file and no unit: a bad flag is still what is said.
    let t = Tree::new();
    let base = [
        "import",
        "--env-file",
        "/etc/nowhere.env",
        "--unit",
        "nowhere.service",
    ];
    let run = t.credloader(&[&base[..], &["--secret", "K", "--static", "K"]].concat());
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("K is named by both --secret and --static"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("nowhere.env"), "{run:?}");
    let run = t.credloader(&[&base[..], &["--secret", "not a name"]].concat());
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("not a name"), "{run:?}");
    assert!(!run.stderr.contains("nowhere.env"), "{run:?}");
}

/// The layout the manual procedure really leaves: each key sealed from
/// `echo KEY > f` without `--name` (so the sealed file holds the key plus a
/// newline), the env file written with `$(cat ...)` of the decrypted file
/// (so it holds the key alone), and the `-` drop-in.
fn seed(t: &Tree) {
    legacy(t);
    t.seal_legacy("BINANCE_API_KEY", b"k-legacy-1111111111\n");
    t.seal_legacy("BINANCE_API_SECRET", b"s-legacy-2222222222\n");
    t.write(
        PLAIN,
        b"BINANCE_API_KEY=k-legacy-1111111111\nBINANCE_API_SECRET=s-legacy-2222222222\n\
          EXIT_BRAIN_V35_ENABLED=true\n",
        0o600,
    );
}

/// The command, as a new user types it (no --service).
const SEED_IMPORT: &[&str] = &[
    "import",
    "--env-file",
    PLAIN,
    "--unit",
    "quantum-position-monitor.service",
    "--secret",
    "BINANCE_API_KEY",
    "--secret",
    "BINANCE_API_SECRET",
    "--static",
    "EXIT_BRAIN_V35_ENABLED",
];

#[test]
fn import_takes_the_seed_layout_as_it_is_in_one_command() {
    let t = Tree::new();
    seed(&t);
    let old_key = t.read("/etc/quantum/creds/BINANCE_API_KEY.cred");
    let mut dry = SEED_IMPORT.to_vec();
    dry.push("--dry-run");
    let run = t.credloader(&dry);
    run.ok();
    assert!(
        run.stdout
            .contains("would reseal with its own name and without the trailing newline"),
        "{run:?}"
    );
    assert_eq!(t.read("/etc/quantum/creds/BINANCE_API_KEY.cred"), old_key);

    let run = t.credloader(SEED_IMPORT);
    assert_eq!(run.code, 0, "{run:?}");
    no_values(&run);
    for part in [
        "secret BINANCE_API_KEY: k-...*** (19 bytes) resealed with its own name and without the trailing newline",
        "the sealed file holds the same key plus the newline `echo` adds",
        "the old file is kept as generation 1",
        // The `-` of the legacy drop-in does not carry over silently.
        "loads /etc/quantum/position-monitor-secrets/binance.env as optional (EnvironmentFile=-)",
        "will not start without its secrets",
        "`required = false`",
    ] {
        assert!(run.stdout.contains(part), "{part}: {run:?}");
    }
    assert!(!run.all().contains("remove one"), "{run:?}");
    // Named after the unit, as the guide says.
    let env = t.read_string("/run/credloader/quantum-position-monitor.env");
    assert!(
        env.ends_with(
            "\nBINANCE_API_KEY=\"k-legacy-1111111111\"\nBINANCE_API_SECRET=\"s-legacy-2222222222\"\n\
             EXIT_BRAIN_V35_ENABLED=\"true\"\n"
        ),
        "{env}"
    );
    // Sealed cleanly now; the hand-sealed files are kept as generation 1.
    for k in ["BINANCE_API_KEY", "BINANCE_API_SECRET"] {
        let show = t.credloader(&["show", k, "--json"]).json();
        assert_eq!(
            (show["length"].clone(), show["legacy_name"].clone()),
            (19.into(), false.into()),
            "{k}"
        );
        assert!(t.exists(&format!("/var/lib/credloader/generations/{k}/1.cred")));
    }
    assert_eq!(
        t.read("/var/lib/credloader/generations/BINANCE_API_KEY/1.cred"),
        old_key
    );
    let check = t.credloader(&["check", "--json"]);
    assert_eq!(check.json()["ok"], true, "{check:?}");
}

#[test]
fn a_dry_run_fails_where_the_real_run_would() {
    let t = Tree::new();
    seed(&t);
    // A unit without User= runs as root: an env file for qt would let qt
    // run code as root. Apply refuses it, so the dry run must too.
    t.write(UNIT, b"[Service]\nExecStart=/bin/true\n", 0o644);
    let mut a = SEED_IMPORT.to_vec();
    a.extend(["--user", "qt"]);
    for dry in [true, false] {
        let mut a = a.clone();
        if dry {
            a.push("--dry-run");
        }
        let run = t.credloader(&a);
        assert_eq!(run.code, 2, "dry={dry}: {run:?}");
        assert!(
            run.stderr.contains("runs as root (it has no User=)") && run.stderr.contains("--user"),
            "{run:?}"
        );
    }
    // A config dir others may write to: both refuse before anything changes.
    t.write(UNIT, b"[Service]\nUser=qt\nExecStart=/bin/true\n", 0o644);
    t.mkdir("/etc/quantum/credloader.d", 0o777);
    let sealed = t.read("/etc/quantum/creds/BINANCE_API_KEY.cred");
    for dry in [true, false] {
        let extra: &[&str] = if dry { &["--dry-run"] } else { &[] };
        let run = t.credloader(&[SEED_IMPORT, extra].concat());
        assert_eq!(run.code, 2, "dry={dry}: {run:?}");
        assert!(run.stderr.contains("credloader.d"), "{run:?}");
    }
    assert_eq!(t.read("/etc/quantum/creds/BINANCE_API_KEY.cred"), sealed);
    t.mkdir("/etc/quantum/credloader.d", 0o755);
    // A legacy drop-in dir others may write to: the real run would find it
    // only after sealing and writing the config.
    let dropin_dir = "/etc/systemd/system/quantum-position-monitor.service.d";
    t.mkdir(dropin_dir, 0o777);
    for dry in [true, false] {
        let extra: &[&str] = if dry { &["--dry-run"] } else { &[] };
        let run = t.credloader(&[SEED_IMPORT, extra].concat());
        assert_eq!(run.code, 3, "dry={dry}: {run:?}");
        assert!(run.stderr.contains(dropin_dir), "{run:?}");
    }
    assert_eq!(t.read("/etc/quantum/creds/BINANCE_API_KEY.cred"), sealed);
    t.mkdir(dropin_dir, 0o755);
    t.write(UNIT, b"[Service]\nExecStart=/bin/true\n", 0o644);
    // Without --user, it says how a root unit is imported.
    let run = t.credloader(&[SEED_IMPORT, &["--dry-run"]].concat());
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("pass --user root"), "{run:?}");
    // A user that does not exist, and a unit that does not exist.
    t.write(
        UNIT,
        b"[Service]\nUser=nobody-here\nExecStart=/bin/true\n",
        0o644,
    );
    let run = t.credloader(&[SEED_IMPORT, &["--dry-run"]].concat());
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("nobody-here"), "{run:?}");
    std::fs::remove_file(t.path(UNIT)).unwrap();
    let run = t.credloader(&[SEED_IMPORT, &["--dry-run"]].concat());
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("does not exist"), "{run:?}");
    assert!(t.exists(PLAIN) && t.exists(LEGACY_DROPIN));
    assert!(!t.exists("/etc/quantum/credloader.d/quantum-position-monitor.toml"));
}

#[test]
fn two_different_values_are_both_kept_one_live_as_prefer_chooses() {
    let t = Tree::new();
    seed(&t);
    // The sealed key was rotated by hand at some point; the env file was not.
    t.seal_legacy("BINANCE_API_KEY", b"k-sealed-3333333333\n");
    let sealed = t.read("/etc/quantum/creds/BINANCE_API_KEY.cred");
    let run = t.credloader(SEED_IMPORT);
    assert_eq!(run.code, 2, "{run:?}");
    for part in [
        "credential BINANCE_API_KEY is already sealed with a different value",
        "--prefer env-file",
        "--prefer sealed",
        "generation",
        "Nothing was changed",
    ] {
        assert!(run.stderr.contains(part), "{part}: {run:?}");
    }
    assert!(!run.all().to_lowercase().contains("remove"), "{run:?}");
    no_values(&run);
    assert!(!run.all().contains("3333333333"));
    assert_eq!(t.read("/etc/quantum/creds/BINANCE_API_KEY.cred"), sealed);

    // --prefer sealed: the sealed key goes live (cleanly), the env file's
    // is kept as the newest generation.
    let t2 = Tree::new();
    seed(&t2);
    t2.seal_legacy("BINANCE_API_KEY", b"k-sealed-3333333333\n");
    let run = t2.credloader(&[SEED_IMPORT, &["--prefer", "sealed", "--json"]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_eq!(j["secrets"][0]["action"], "prefer-sealed");
    // Numbers are stable (src/generations.rs): the old sealed file is 1,
    // the resealed live value 2, the env file's value kept as 3.
    assert_eq!(j["secrets"][0]["generation"], 3);
    assert_eq!(j["secrets"][1]["action"], "reseal");
    let env = t2.read_string("/run/credloader/quantum-position-monitor.env");
    assert!(
        env.contains("BINANCE_API_KEY=\"k-sealed-3333333333\"\n"),
        "{env}"
    );
    let gens = t2.credloader(&["generations", "BINANCE_API_KEY", "--json"]);
    gens.ok();
    // The plain rollback brings the env file's value back.
    t2.credloader(&["rollback", "BINANCE_API_KEY"]).ok();
    let env = t2.read_string("/run/credloader/quantum-position-monitor.env");
    assert!(
        env.contains("BINANCE_API_KEY=\"k-legacy-1111111111\"\n"),
        "{env}"
    );

    // --prefer env-file: the env file's goes live, the sealed one is kept.
    let run = t.credloader(&[SEED_IMPORT, &["--prefer", "env-file"]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("sealed the env file's value (--prefer env-file); the sealed one is kept as generation 1"),
        "{run:?}"
    );
    assert_eq!(
        t.read("/var/lib/credloader/generations/BINANCE_API_KEY/1.cred"),
        sealed
    );
    let env = t.read_string("/run/credloader/quantum-position-monitor.env");
    assert!(
        env.contains("BINANCE_API_KEY=\"k-legacy-1111111111\"\n"),
        "{env}"
    );
    t.credloader(&["rollback", "BINANCE_API_KEY"]).ok();
    let env = t.read_string("/run/credloader/quantum-position-monitor.env");
    assert!(
        env.contains("BINANCE_API_KEY=\"k-sealed-3333333333\"\n"),
        "{env}"
    );
}

/// A step that fails part-way (here the second legacy drop-in cannot be
/// rewritten: a second hard link makes credloader refuse to replace root's
/// file) puts back what the import already changed: the first drop-in and
/// the config file. The plaintext stays, and so does the unit's old way of
/// getting its keys.
#[test]
fn an_import_that_fails_part_way_puts_back_what_it_changed() {
    let t = Tree::new();
    legacy(&t);
    let second = "/etc/systemd/system/quantum-position-monitor.service.d/zz-more.conf";
    let second_text =
        b"[Service]\nEnvironmentFile=/etc/quantum/position-monitor-secrets/binance.env\nNice=5\n";
    t.write(second, second_text, 0o644);
    std::fs::hard_link(t.path(second), t.path("/etc/quantum/zz-more.conf.link")).unwrap();
    let first_before = t.read(LEGACY_DROPIN);

    let run = t.credloader(&args(&[]));
    assert_ne!(run.code, 0, "{run:#?}");
    no_values(&run);
    assert!(run.all().contains("zz-more.conf"), "{run:#?}");
    assert!(!run.all().contains("failed too"), "{run:#?}");
    assert_eq!(
        t.read(LEGACY_DROPIN),
        first_before,
        "the first drop-in is back"
    );
    assert_eq!(t.read(second), second_text.to_vec());
    assert!(!t.path(CONF).exists(), "the config file is removed again");
    assert!(t.path(PLAIN).exists(), "the plaintext stays");
}
