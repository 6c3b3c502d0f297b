//! Root's config slips on `--root` images, with the real `systemd-creds`: a
//! config file refused as unsafe (a deploy user's, group- or world-writable,
//! a symlink) is a broken file, not a missing one: its services are served
//! from their last good definition, every command that touches them says
//! why, and none ends as if there were nothing to do (issue #13, item 3).

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
