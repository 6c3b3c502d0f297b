//! Root's config slips on `--root` images, with the real `systemd-creds`
//! (issue #13, items 2 and 3):
//!
//! - a config file refused as unsafe (a deploy user's, group- or
//!   world-writable, a symlink) is a broken file, not a missing one: its
//!   services are served from their last good definition, every command
//!   that touches them says why, and none ends as if there were nothing to
//!   do;
//! - an `env_file` goes only beneath `env_dir` or a directory declared in
//!   `env_file_dirs`, never into credloader's or systemd's own places, and
//!   never over a file credloader did not write.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{service, Run, Tree};

const ALPHA_ENV: &str = "/run/credloader/alpha.env";
const BETA_ENV: &str = "/run/credloader/beta.env";
const ALPHA_TOML: &str = "/etc/quantum/credloader.d/alpha.toml";
/// A deploy user's uid: not root, not a service user.
const DEPLOY_UID: u32 = 2000;

/// How root's slip left `alpha.toml`, and a word of the fix that is printed.
type Slip = (&'static str, fn(&Tree), &'static str);

fn chmod(t: &Tree, p: &str, mode: u32) {
    std::fs::set_permissions(t.path(p), std::fs::Permissions::from_mode(mode)).unwrap();
}

const SLIPS: [Slip; 4] = [
    (
        "group-writable",
        |t| chmod(t, ALPHA_TOML, 0o664),
        "chmod go-w",
    ),
    (
        "world-writable",
        |t| chmod(t, ALPHA_TOML, 0o666),
        "chmod go-w",
    ),
    (
        "copied by a deploy user",
        |t| {
            std::os::unix::fs::chown(t.path(ALPHA_TOML), Some(DEPLOY_UID), Some(DEPLOY_UID))
                .unwrap()
        },
        "chown root:root",
    ),
    (
        // Not followed, so not even read: which services it defines is
        // unknown, and every service that left the configuration may be one.
        "a symlink",
        |t| {
            let text = t.read(ALPHA_TOML);
            t.write("/etc/quantum/elsewhere.toml", &text, 0o644);
            std::fs::remove_file(t.path(ALPHA_TOML)).unwrap();
            std::os::unix::fs::symlink(t.path("/etc/quantum/elsewhere.toml"), t.path(ALPHA_TOML))
                .unwrap();
        },
        "symbolic link",
    ),
];

/// alpha (qt) uses ALPHA_KEY and SHARED_KEY, beta (bot) SHARED_KEY; applied.
fn applied() -> Tree {
    let t = Tree::new();
    t.config(
        "alpha.toml",
        &service("alpha", "qt", &["ALPHA_KEY", "SHARED_KEY"]),
    );
    t.config("beta.toml", &service("beta", "bot", &["SHARED_KEY"]));
    t.seal("ALPHA_KEY", b"alpha-old-1");
    t.seal("SHARED_KEY", b"shared-old-1");
    t.credloader(&["apply"]).ok();
    t
}

fn has(t: &Tree, env: &str, var: &str, value: &str) -> bool {
    t.read_string(env).contains(&format!("{var}=\"{value}\""))
}

#[track_caller]
fn says(case: &str, run: &Run, words: &[&str]) {
    for w in words {
        assert!(run.all().contains(w), "{case}: no `{w}` in {run:#?}");
    }
}

#[test]
fn an_unsafe_config_file_is_served_from_its_last_good_definition_by_every_command() {
    for (case, slip, fix) in SLIPS {
        let t = applied();
        let dropin = t.read("/etc/systemd/system/alpha.service.d/50-credloader.conf");
        slip(&t);

        // apply: alpha keeps its files, the run fails, the file and fix are named.
        let run = t.credloader(&["apply"]);
        assert_eq!(run.code, 1, "{case}: {run:#?}");
        says(case, &run, &["alpha.toml", fix]);
        assert!(!run.all().contains("removed"), "{case}: {run:#?}");
        assert!(has(&t, ALPHA_ENV, "ALPHA_KEY", "alpha-old-1"), "{case}");
        assert_eq!(
            t.read("/etc/systemd/system/alpha.service.d/50-credloader.conf"),
            dropin,
            "{case}"
        );

        // status, list, show and check count alpha and say why.
        let run = t.credloader(&["status", "--json"]);
        let j = run.ok().json();
        let alpha = j["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == "alpha")
            .unwrap_or_else(|| panic!("{case}: alpha is not in status: {j}"));
        let why = alpha["definition_error"].as_str().unwrap_or_default();
        assert!(
            why.contains("alpha.toml") && why.contains(fix),
            "{case}: {j}"
        );
        let run = t.credloader(&["list", "--json"]);
        let j = run.ok().json();
        let key = j["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "ALPHA_KEY")
            .unwrap()
            .clone();
        assert_eq!(
            key["consumers"],
            serde_json::json!(["alpha"]),
            "{case}: {j}"
        );
        assert_eq!(key["status"], "ok", "{case}: {j}");
        says(
            case,
            t.credloader(&["list"]).ok(),
            &["alpha*", "alpha.toml"],
        );
        says(
            case,
            t.credloader(&["show", "ALPHA_KEY"]).ok(),
            &[
                "alpha is served from its last good definition",
                "alpha.toml",
            ],
        );
        let run = t.credloader(&["check"]);
        assert_ne!(run.code, 0, "{case}: {run:#?}");
        says(case, &run, &["alpha.toml", "service alpha"]);

        // rotate of a key only alpha uses: delivered to alpha, and why it
        // is served that way is printed.
        let run = t.credloader_with_stdin(&["rotate", "ALPHA_KEY"], Some(b"alpha-new-2"));
        assert_eq!(run.code, 0, "{case}: {run:#?}");
        says(case, &run, &["alpha", "alpha.toml", "last good definition"]);
        assert!(!run.all().contains("nothing to apply"), "{case}: {run:#?}");
        assert!(has(&t, ALPHA_ENV, "ALPHA_KEY", "alpha-new-2"), "{case}");

        // rotate of a key it shares: both get it, nothing is rolled back.
        let run =
            t.credloader_with_stdin(&["rotate", "SHARED_KEY", "--json"], Some(b"shared-new-2"));
        assert_eq!(run.code, 0, "{case}: {run:#?}");
        let j = run.json();
        assert_eq!(
            j["consumers"],
            serde_json::json!(["alpha", "beta"]),
            "{case}: {j}"
        );
        assert_eq!(j["rolled_back"], false, "{case}: {j}");
        assert!(
            j["config_errors"].to_string().contains("alpha.toml"),
            "{case}: {j}"
        );
        assert!(has(&t, ALPHA_ENV, "SHARED_KEY", "shared-new-2"), "{case}");
        assert!(has(&t, BETA_ENV, "SHARED_KEY", "shared-new-2"), "{case}");

        // rollback: alpha gets the previous value back.
        let run = t.credloader(&["rollback", "ALPHA_KEY"]);
        assert_eq!(run.code, 0, "{case}: {run:#?}");
        says(case, &run, &["alpha", "alpha.toml"]);
        assert!(has(&t, ALPHA_ENV, "ALPHA_KEY", "alpha-old-1"), "{case}");
    }
}

/// A service in an unsafe file that was never applied has no definition to
/// serve: a credential only it may use is not "used by nobody".
#[test]
fn a_key_only_an_unsafe_files_new_service_uses_is_never_nothing_to_do() {
    for (case, slip, fix) in SLIPS {
        let t = applied();
        t.config(
            "alpha.toml",
            &format!(
                "{}{}",
                service("alpha", "qt", &["ALPHA_KEY", "SHARED_KEY"]),
                service("gamma", "qt", &["GAMMA_KEY"])
            ),
        );
        t.seal("GAMMA_KEY", b"gamma-old-1");
        slip(&t);
        let run = t.credloader(&["apply"]);
        assert_eq!(run.code, 1, "{case}: {run:#?}");
        assert!(!t.exists("/run/credloader/gamma.env"), "{case}");

        for args in [&["rotate", "GAMMA_KEY"][..], &["rollback", "GAMMA_KEY"]] {
            let run = t.credloader_with_stdin(args, Some(b"gamma-new-2"));
            assert_eq!(run.code, 1, "{case}: {args:?}: {run:#?}");
            says(case, &run, &["alpha.toml", fix, "no service got it"]);
            assert!(!run.all().contains("nothing to apply"), "{case}: {run:#?}");
        }
        let run = t.credloader_with_stdin(&["seal", "DELTA_KEY"], Some(b"delta-1"));
        assert_eq!(run.code, 1, "{case}: {run:#?}");
        says(case, &run, &["alpha.toml", "broken or refused file may"]);
        // import does not define it a second time beside the refused file.
        if case != "a symlink" {
            let run = t.credloader(&[
                "import",
                "--env-file",
                "/etc/gamma.env",
                "--unit",
                "gamma.service",
                "--secret",
                "GAMMA_KEY",
            ]);
            assert_eq!(run.code, 2, "{case}: {run:#?}");
            says(case, &run, &["service gamma", "alpha.toml", fix]);
        }
    }
}

/// A refused file that may set `[loader]` stops every run, as one that does
/// not parse does: skipped, it would send secrets to the default paths.
#[test]
fn an_unsafe_file_that_may_set_loader_paths_stops_the_run() {
    let t = applied();
    t.config(
        "00-paths.toml",
        "[loader]\nenv_dir = \"/run/quantum-secrets\"\n",
    );
    std::os::unix::fs::chown(
        t.path("/etc/quantum/credloader.d/00-paths.toml"),
        Some(DEPLOY_UID),
        None,
    )
    .unwrap();
    let sealed = t.read("/etc/quantum/creds/ALPHA_KEY.cred");
    for args in [&["apply"][..], &["rotate", "ALPHA_KEY"], &["status"]] {
        let run = t.credloader_with_stdin(args, Some(b"alpha-new-2"));
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        says(
            "loader",
            &run,
            &["00-paths.toml", "[loader]", "chown root:root"],
        );
    }
    assert_eq!(t.read("/etc/quantum/creds/ALPHA_KEY.cred"), sealed);
    assert!(has(&t, ALPHA_ENV, "ALPHA_KEY", "alpha-old-1"));
}

/// `sync` manages a credential only a refused file's service uses, and
/// delivers it to that service's last good definition.
#[test]
fn sync_delivers_to_a_service_whose_file_was_refused() {
    let t = applied();
    t.write(
        "/etc/quantum/dev-secrets.json",
        br#"{"ALPHA_KEY": "alpha-synced-2"}"#,
        0o600,
    );
    t.config(
        "00-sources.toml",
        "[sources]\nenvironment = \"dev\"\n[sources.file]\npath = \"/etc/quantum/dev-secrets.json\"\n",
    );
    std::os::unix::fs::chown(t.path(ALPHA_TOML), Some(DEPLOY_UID), None).unwrap();
    let run = t.credloader(&["sync", "--json", "ALPHA_KEY"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let j = run.json();
    assert_eq!(
        j["rotation"]["consumers"],
        serde_json::json!(["alpha"]),
        "{j}"
    );
    assert!(j["config_errors"].to_string().contains("alpha.toml"), "{j}");
    assert!(has(&t, ALPHA_ENV, "ALPHA_KEY", "alpha-synced-2"));
    assert!(!run.all().contains("alpha-synced-2"));
}

// ---- issue #13, item 2: where an env file may be placed -------------------

/// `pm` (qt) with `env_file` set at line 5 of pm.toml, beside a bystander.
fn pm_at(t: &Tree, env_file: &str) {
    t.config(
        "pm.toml",
        &format!(
            "{}env_file = \"{env_file}\"\n",
            service("pm", "qt", &["PM_KEY"])
        ),
    );
}

/// Root's slips: `env_file` pointed at something that matters. Each is
/// refused with the line of the setting, the file stays root's and as it
/// was, and the other services are served.
#[test]
fn an_env_file_outside_a_declared_place_is_refused_with_its_line() {
    let targets: &[(&str, &str)] = &[
        ("/etc/shadow", "is not beneath /run/credloader"),
        ("/etc/quantum/creds/MM_KEY.cred", "the sealed credentials"),
        (
            "/etc/quantum/credloader.d/zz.toml",
            "credloader's configuration",
        ),
        ("/var/lib/credloader/state.json", "credloader's state"),
        (
            "/etc/systemd/system/beta.service.d/50-credloader.conf",
            "the unit drop-ins",
        ),
        // Another unit's drop-in dir: the service user would write a
        // drop-in that runs that unit as root.
        (
            "/etc/systemd/system/other.service.d/10-evil.conf",
            "the unit drop-ins",
        ),
        ("/run/systemd/system/evil.service", "a systemd directory"),
        ("/var/lib/systemd/credential.secret", "a systemd directory"),
        ("/run/credloader/.noop-0000000000000000", "hidden name"),
    ];
    for (target, why) in targets {
        let t = Tree::new();
        t.config("beta.toml", &service("beta", "bot", &["BETA_KEY"]));
        t.seal("BETA_KEY", b"beta-1");
        t.seal("PM_KEY", b"pm-1");
        t.seal("MM_KEY", b"mm-1");
        t.credloader(&["apply"]).ok();
        t.write("/etc/shadow", b"root:*:19000::::::\n", 0o640);
        t.write("/etc/quantum/credloader.d/zz.toml", b"# zz\n", 0o644);
        let before = t
            .exists(target)
            .then(|| (t.read(target), t.owner_mode(target)));
        pm_at(&t, target);
        let run = t.credloader(&["apply"]);
        assert_eq!(run.code, 1, "{target}: {run:#?}");
        says(target, &run, &["pm.toml:5", "services.pm.env_file", why]);
        assert!(t.read_string(BETA_ENV).contains("beta-1"), "{target}");
        let after = t
            .exists(target)
            .then(|| (t.read(target), t.owner_mode(target)));
        assert_eq!(after, before, "{target} was touched");
        assert!(!t.exists("/etc/systemd/system/other.service.d"), "{target}");
        // `check` names it too.
        let run = t.credloader(&["check"]);
        assert_ne!(run.code, 0, "{target}: {run:#?}");
        says(target, &run, &["pm.toml:5"]);
    }
}

/// A directory the operator declares in `env_file_dirs` takes env files;
/// a system directory, or one that holds credloader's own files, does not:
/// the `env_file_dirs` line is named, and only its services break.
#[test]
fn env_file_dirs_declares_a_place_of_its_own_and_nothing_broader() {
    let t = Tree::new();
    t.config("beta.toml", &service("beta", "bot", &["BETA_KEY"]));
    t.seal("BETA_KEY", b"beta-1");
    t.seal("PM_KEY", b"pm-1");
    t.mkdir("/etc/quantum/pm-secrets", 0o755);
    t.config(
        "00-loader.toml",
        "[loader]\nenv_file_dirs = [\"/etc/quantum/pm-secrets\"]\n",
    );
    pm_at(&t, "/etc/quantum/pm-secrets/binance.env");
    t.credloader(&["apply"]).ok();
    assert_eq!(
        t.owner_mode("/etc/quantum/pm-secrets/binance.env"),
        (common::QT_UID, common::QT_UID, 0o600)
    );

    for (dirs, env_file, why) in [
        ("\"/etc\"", "/etc/shadow", "system directory"),
        (
            "\"/etc/quantum\"",
            "/etc/quantum/pm.env",
            "contains /etc/quantum/creds",
        ),
        (
            "\"/srv/x\", \"/etc/systemd/system/other.service.d\"",
            "/etc/systemd/system/other.service.d/10-evil.conf",
            "the unit drop-ins",
        ),
    ] {
        t.config(
            "00-loader.toml",
            &format!("[loader]\nenv_file_dirs = [\n  {dirs}\n]\n"),
        );
        pm_at(&t, env_file);
        let run = t.credloader(&["apply"]);
        assert_eq!(run.code, 1, "{dirs}: {run:#?}");
        says(
            dirs,
            &run,
            &["00-loader.toml:3", "env_file_dirs", why, "pm.toml:5"],
        );
        assert!(t.read_string(BETA_ENV).contains("beta-1"), "{dirs}");
        // pm is served from its last good definition, where it was.
        assert!(t.exists("/etc/quantum/pm-secrets/binance.env"), "{dirs}");
        assert!(!t.exists(env_file) || env_file == "/etc/shadow", "{dirs}");
    }
    // An entry no env file uses yet is still root's slip: refused loudly,
    // while everything else is served.
    t.config(
        "00-loader.toml",
        "[loader]\nenv_file_dirs = [\"/var/lib\", \"/etc/quantum/pm-secrets\"]\n",
    );
    pm_at(&t, "/etc/quantum/pm-secrets/binance.env");
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1, "{run:#?}");
    says(
        "unused",
        &run,
        &["00-loader.toml:2", "/var/lib is a system directory"],
    );
    assert!(has(
        &t,
        "/etc/quantum/pm-secrets/binance.env",
        "PM_KEY",
        "pm-1"
    ));
    let run = t.credloader(&["check"]);
    assert_ne!(run.code, 0, "{run:#?}");
    says("unused", &run, &["00-loader.toml:2", "/var/lib"]);
}

/// A file credloader did not write is never taken over, even in a place
/// env files may go: it could be anyone's, and its service user would own it.
#[test]
fn an_existing_file_credloader_did_not_write_is_not_taken_over() {
    let t = Tree::new();
    t.config("beta.toml", &service("beta", "bot", &["BETA_KEY"]));
    t.seal("BETA_KEY", b"beta-1");
    t.seal("PM_KEY", b"pm-1");
    t.mkdir("/etc/quantum/pm-secrets", 0o755);
    t.config(
        "00-loader.toml",
        "[loader]\nenv_file_dirs = [\"/etc/quantum/pm-secrets\"]\n",
    );
    // The manual layout's file, root's; and one left in the env dir.
    let legacy = "/etc/quantum/pm-secrets/binance.env";
    t.write(legacy, b"BINANCE_API_KEY=manual\n", 0o600);
    t.write("/run/credloader/pm.env", b"X=left\n", 0o640);
    for (env_file, setting) in [
        (Some(legacy), "env_file at "),
        (None, "the default env file of service pm"),
    ] {
        match env_file {
            Some(p) => pm_at(&t, p),
            None => t.config("pm.toml", &service("pm", "qt", &["PM_KEY"])),
        }
        let path = env_file.unwrap_or("/run/credloader/pm.env");
        let before = (t.read(path), t.owner_mode(path));
        for args in [&["apply", "--dry-run"][..], &["apply"]] {
            let run = t.credloader(args);
            assert_eq!(run.code, 1, "{path}: {run:#?}");
            says(
                path,
                &run,
                &[path, setting, "pm.toml:", "did not write", "move it away"],
            );
            assert_eq!((t.read(path), t.owner_mode(path)), before, "{path}");
        }
        assert!(t.read_string(BETA_ENV).contains("beta-1"), "{path}");
        // Moved away, the place is credloader's.
        std::fs::rename(t.path(path), t.path(&format!("{path}.orig"))).unwrap();
        t.credloader(&["apply"]).ok();
        assert_eq!(t.owner_mode(path).0, common::QT_UID);
        assert!(has(&t, path, "PM_KEY", "pm-1"));
    }
}

/// A lost state (`/var/lib/credloader` wiped while `/run/credloader` lives
/// on) does not lock a service out of its own env file: a file beneath the
/// env dir, where only root can put one, that is exactly what credloader
/// writes for the service (its user's, 0600, one link) is taken back. The
/// same file anywhere else, or one that differs, is still refused.
#[test]
fn a_lost_state_does_not_lock_a_service_out_of_its_env_file() {
    let t = Tree::new();
    t.config("pm.toml", &service("pm", "qt", &["PM_KEY"]));
    t.seal("PM_KEY", b"pm-1");
    t.credloader(&["apply"]).ok();
    let env = "/run/credloader/pm.env";
    assert_eq!(t.owner_mode(env), (common::QT_UID, common::QT_UID, 0o600));

    std::fs::remove_file(t.path("/var/lib/credloader/state.json")).unwrap();
    t.seal("PM_KEY", b"pm-2");
    t.credloader(&["apply"]).ok();
    assert!(has(&t, env, "PM_KEY", "pm-2"));

    // The same loss, but the file is no longer what credloader writes.
    std::fs::remove_file(t.path("/var/lib/credloader/state.json")).unwrap();
    std::fs::set_permissions(t.path(env), std::fs::Permissions::from_mode(0o640)).unwrap();
    t.seal("PM_KEY", b"pm-3");
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1, "{run:#?}");
    says(
        "changed mode",
        &run,
        &[env, "did not write", "move it away"],
    );
    assert!(has(&t, env, "PM_KEY", "pm-2"));
}

/// An env file credloader wrote is its own even when a run died before the
/// state recorded it: apply moving `pm`'s env file is killed at random
/// instants, and the next run always finishes the job.
#[test]
fn a_moved_env_file_written_by_a_killed_run_is_still_credloaders() {
    let t = Tree::new();
    t.seal("PM_KEY", b"pm-1");
    t.mkdir("/etc/quantum/pm-secrets", 0o755);
    t.config(
        "00-loader.toml",
        "[loader]\nenv_file_dirs = [\"/etc/quantum/pm-secrets\"]\n",
    );
    let places = [
        "/etc/quantum/pm-secrets/a.env",
        "/etc/quantum/pm-secrets/b.env",
    ];
    pm_at(&t, places[0]);
    t.credloader(&["apply"]).ok();
    let mut rng = common::Rng(0x5eed_0001 | std::process::id() as u64);
    for i in 1..40 {
        let to = places[i % 2];
        pm_at(&t, to);
        let mut child = t.spawn(&["apply"], None);
        std::thread::sleep(std::time::Duration::from_micros(rng.below(40_000) as u64));
        let _ = child.kill();
        let _ = child.wait();
        let run = t.credloader(&["apply"]);
        assert_eq!(run.code, 0, "after a kill, moving to {to}: {run:#?}");
        assert!(has(&t, to, "PM_KEY", "pm-1"), "{to}");
        assert!(!t.exists(places[(i + 1) % 2]), "the old env file stayed");
    }
}
