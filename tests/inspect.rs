//! `list`, `show`, `status` and `check` on `--root` images with the real
//! `systemd-creds`.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{service, Tree};

const SECRET: &[u8] = b"quokka-secret-31415926";

fn setup(t: &Tree) {
    t.config("a.toml", &service("alpha", "qt", &["ALPHA_KEY"]));
    t.config("b.toml", &service("beta", "bot", &["BETA_KEY", "GONE_KEY"]));
    t.seal("ALPHA_KEY", SECRET);
    t.seal("BETA_KEY", b"beta-value-271828");
    t.seal("ORPHAN_KEY", b"orphan-value-161803");
    for (unit, user) in [("alpha", "qt"), ("beta", "bot")] {
        t.write(
            &format!("/usr/lib/systemd/system/{unit}.service"),
            format!("[Service]\nUser={user}\nExecStart=/bin/sleep infinity\n").as_bytes(),
            0o644,
        );
    }
}

/// One service, its unit and its credential, applied: nothing to report.
fn clean_alpha() -> Tree {
    let t = Tree::new();
    t.config("a.toml", &service("alpha", "qt", &["ALPHA_KEY"]));
    t.seal("ALPHA_KEY", SECRET);
    t.write(
        "/usr/lib/systemd/system/alpha.service",
        b"[Service]\nUser=qt\nExecStart=/bin/sleep infinity\n",
        0o644,
    );
    t.credloader(&["apply"]).ok();
    t
}

fn findings(run: &common::Run) -> Vec<serde_json::Value> {
    run.json()["findings"].as_array().unwrap().clone()
}

fn has(fs: &[serde_json::Value], severity: &str, subject: &str, problem: &str) -> bool {
    fs.iter().any(|f| {
        f["severity"] == severity
            && f["subject"].as_str().unwrap().contains(subject)
            && f["problem"].as_str().unwrap().contains(problem)
            && !f["fix"].as_str().unwrap().is_empty()
    })
}

#[test]
fn list_marks_orphans_and_missing_credentials() {
    let t = Tree::new();
    setup(&t);
    let run = t.credloader(&["list", "--json"]);
    run.ok();
    let j = run.json();
    let by_name = |n: &str| {
        j["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("{n} in {j}"))
            .clone()
    };
    assert_eq!(by_name("ALPHA_KEY")["status"], "ok");
    assert_eq!(by_name("ALPHA_KEY")["consumers"][0], "alpha");
    assert_eq!(by_name("ALPHA_KEY")["key"], "host");
    assert!(by_name("ALPHA_KEY")["size"].as_u64().unwrap() > 0);
    assert!(by_name("ALPHA_KEY")["mtime"].as_i64().unwrap() > 0);
    assert_eq!(by_name("ORPHAN_KEY")["status"], "orphan");
    assert_eq!(by_name("GONE_KEY")["status"], "missing");
    assert_eq!(by_name("GONE_KEY")["consumers"][0], "beta");
    let human = t.credloader(&["list"]);
    assert!(human.stdout.contains("orphan") && human.stdout.contains("missing"));
    assert!(!human.all().contains("quokka") && !run.all().contains("quokka"));
}

#[test]
fn show_masks_and_fails_clearly() {
    let t = Tree::new();
    setup(&t);
    let run = t.credloader(&["show", "ALPHA_KEY", "--json"]);
    run.ok();
    let j = run.json();
    assert_eq!(j["masked"], "qu...***");
    assert_eq!(j["length"], SECRET.len());
    assert_eq!(j["legacy_name"], false);
    assert!(!run.all().contains("quokka"));

    let run = t.credloader(&["show", "GONE_KEY"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("GONE_KEY") && run.stderr.contains(&t.cmd("seal GONE_KEY")));

    t.seal_legacy("LEGACY", b"legacy-value-999999");
    let run = t.credloader(&["show", "LEGACY"]);
    run.ok();
    assert!(run.stdout.contains("legacy"), "{run:?}");
    assert!(!run.all().contains("value-999999"));

    // A damaged credential names itself.
    t.write("/etc/quantum/creds/BROKEN.cred", b"not a credential", 0o600);
    let run = t.credloader(&["show", "BROKEN"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("BROKEN"), "{run:?}");
}

#[test]
fn status_tells_whether_files_are_as_applied() {
    let t = Tree::new();
    setup(&t);
    t.seal("GONE_KEY", b"gone-value-11111");
    let run = t.credloader(&["status", "--json"]);
    run.ok();
    let s = &run.json()["services"][0];
    assert_eq!(s["service"], "alpha");
    assert_eq!(s["last_apply"], serde_json::Value::Null);
    assert_eq!(s["dropin_present"], false);
    t.credloader(&["apply"]).ok();
    let run = t.credloader(&["status", "--json", "--service", "alpha"]);
    run.ok();
    let j = run.json();
    assert_eq!(j["services"].as_array().unwrap().len(), 1);
    let s = &j["services"][0];
    assert_eq!(s["unit"], "alpha.service");
    assert_eq!(s["user"], "qt");
    assert_eq!(s["delivery"], "env");
    assert_eq!(s["env_file"], "/run/credloader/alpha.env");
    assert!(s["last_apply"].as_u64().unwrap() > 0);
    assert_eq!(s["env_file_matches"], true);
    assert_eq!(s["dropin_present"], true);
    assert_eq!(s["dropin_loaded"], serde_json::Value::Null);
    assert_eq!(s["active_state"], serde_json::Value::Null);
    // Someone edits the env file.
    t.write("/run/credloader/alpha.env", b"ALPHA_KEY=\"x\"\n", 0o600);
    std::os::unix::fs::chown(t.path("/run/credloader/alpha.env"), Some(1500), Some(1500)).unwrap();
    let run = t.credloader(&["status", "--json", "--service", "alpha"]);
    assert_eq!(run.json()["services"][0]["env_file_matches"], false);
    let human = t.credloader(&["status"]);
    assert!(human.stdout.contains("CHANGED"), "{human:?}");
    assert!(!human.all().contains("quokka"));

    let run = t.credloader(&["status", "--service", "nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("nope"));
}

#[test]
fn check_passes_on_a_clean_tree() {
    let t = clean_alpha();
    let run = t.credloader(&["check", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["ok"], true);
    assert_eq!(findings(&run), Vec::<serde_json::Value>::new());
}

#[test]
fn check_finds_every_kind_of_problem() {
    let t = Tree::new();
    setup(&t);
    t.config("c.toml", &service("gamma", "qt", &["ALPHA_KEY"]));
    t.config("d.toml", &service("delta", "qt", &["ALPHA_KEY"]));
    t.write(
        "/etc/systemd/system/delta.service",
        b"[Service]\nUser=qt\nExecStartPre=+/bin/true\nExecStart=/bin/sleep infinity\n",
        0o644,
    );
    t.seal("GONE_KEY", b"gone-value-11111");
    // apply refuses delta (a `+` command would read an env file qt owns);
    // the others are served.
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout
            .contains("delta.service runs commands with full privileges"),
        "{run:#?}"
    );
    std::fs::remove_file(t.path("/etc/quantum/creds/GONE_KEY.cred")).unwrap();
    // Modes and owners.
    std::fs::set_permissions(
        t.path("/etc/quantum/creds"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        t.path("/etc/quantum/creds/BETA_KEY.cred"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(
        t.path("/run/credloader/alpha.env"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // A legacy drop-in whose plaintext is still there.
    t.write("/etc/quantum/legacy/alpha.env", b"ALPHA_KEY=plain\n", 0o600);
    t.write(
        "/etc/systemd/system/alpha.service.d/credentials.conf",
        b"[Service]\nEnvironmentFile=-/etc/quantum/legacy/alpha.env\n",
        0o644,
    );
    // A symlink on a managed path.
    std::os::unix::fs::symlink("/tmp/elsewhere", t.path("/etc/quantum/creds/LINKED.cred")).unwrap();

    let run = t.credloader(&["check", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let fs = findings(&run);
    assert_eq!(run.json()["ok"], false);
    assert!(
        has(&fs, "error", "/etc/quantum/creds", "not root:root 0700"),
        "{fs:#?}"
    );
    assert!(
        has(&fs, "error", "BETA_KEY.cred", "not root:root 0600"),
        "{fs:#?}"
    );
    assert!(
        has(&fs, "error", "/run/credloader/alpha.env", "mode 0644"),
        "{fs:#?}"
    );
    assert!(
        has(
            &fs,
            "error",
            "/run/credloader/alpha.env",
            "modified since the last apply"
        ),
        "{fs:#?}"
    );
    assert!(
        has(&fs, "error", "credential GONE_KEY", "does not exist"),
        "{fs:#?}"
    );
    assert!(
        has(
            &fs,
            "warning",
            "credential ORPHAN_KEY",
            "no configured service"
        ),
        "{fs:#?}"
    );
    assert!(
        has(
            &fs,
            "error",
            "service gamma",
            "gamma.service does not exist"
        ),
        "{fs:#?}"
    );
    assert!(
        has(&fs, "error", "credentials.conf", "legacy drop-in"),
        "{fs:#?}"
    );
    assert!(
        has(&fs, "error", "service delta", "full privileges"),
        "{fs:#?}"
    );
    assert!(has(&fs, "error", "LINKED.cred", "symbolic link"), "{fs:#?}");
    let human = t.credloader(&["check"]);
    assert_eq!(human.code, 1);
    assert!(human.stdout.contains("fix: chown root:root"), "{human:?}");
    assert!(!human.all().contains("quokka") && !human.all().contains("plain\n"));

    // The env dir writable by someone else.
    std::fs::set_permissions(
        t.path("/run/credloader"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let fs = findings(&t.credloader(&["check", "--json"]));
    assert!(
        has(&fs, "error", "/run/credloader", "someone other than root"),
        "{fs:#?}"
    );
}

#[test]
fn check_reports_expired_credentials_as_errors() {
    let t = Tree::new();
    t.config("a.toml", &service("alpha", "qt", &["ALPHA_KEY"]));
    t.write(
        "/usr/lib/systemd/system/alpha.service",
        b"[Service]\nUser=qt\nExecStart=/bin/true\n",
        0o644,
    );
    t.credloader_with_stdin(&["seal", "ALPHA_KEY", "--not-after", "+1d"], Some(SECRET))
        .ok();
    // Pretend time has passed: the recorded not-after is in the past.
    let meta_path = "/var/lib/credloader/generations/ALPHA_KEY/meta.json";
    let mut meta: serde_json::Value = serde_json::from_slice(&t.read(meta_path)).unwrap();
    meta["current"]["not_after"] = serde_json::json!(1_000_000_000u64);
    t.write(meta_path, meta.to_string().as_bytes(), 0o600);
    let run = t.credloader(&["check", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        has(&findings(&run), "error", "credential ALPHA_KEY", "expired"),
        "{run:?}"
    );
}

/// `list`'s STATUS column says when a credential has expired or expires
/// within 14 days (from the not-after recorded when it was sealed).
#[test]
fn list_shows_expired_and_expiring_credentials() {
    let t = Tree::new();
    t.config(
        "a.toml",
        &service("alpha", "qt", &["SOON_KEY", "LATER_KEY", "PAST_KEY"]),
    );
    for (name, when) in [
        ("SOON_KEY", "+3d"),
        ("LATER_KEY", "+90d"),
        ("PAST_KEY", "+1d"),
    ] {
        t.credloader_with_stdin(&["seal", name, "--not-after", when], Some(SECRET))
            .ok();
    }
    // Pretend time has passed for PAST_KEY: its recorded not-after is gone by.
    let meta_path = "/var/lib/credloader/generations/PAST_KEY/meta.json";
    let mut meta: serde_json::Value = serde_json::from_slice(&t.read(meta_path)).unwrap();
    meta["current"]["not_after"] = serde_json::json!(1_000_000_000u64);
    t.write(meta_path, meta.to_string().as_bytes(), 0o600);
    let run = t.credloader(&["list", "--json"]);
    run.ok();
    let status = |n: &str| {
        run.json()["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("SOON_KEY").as_deref(), Some("expiring"));
    assert_eq!(status("LATER_KEY").as_deref(), Some("ok"));
    assert_eq!(status("PAST_KEY").as_deref(), Some("expired"));
    let human = t.credloader(&["list"]);
    let line = |n: &str| {
        human
            .stdout
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("SOON_KEY").contains(" expiring "), "{human:?}");
    assert!(line("PAST_KEY").contains(" expired "), "{human:?}");
    assert!(
        human.stdout.contains("expired at 2001-09-09T01:46:40Z")
            && human.stdout.contains(&t.cmd("rotate PAST_KEY")),
        "{human:?}"
    );
}

/// `check` reports a credential whose live value is a generation a
/// rotation rejected (here: put back on purpose with `rollback --to N`,
/// and rejected again), with both ways out.
#[test]
fn check_reports_a_live_value_that_a_rotation_rejected() {
    let t = clean_alpha();
    t.config(
        "a.toml",
        &format!(
            "{}health_check = [\"/bin/sh\", \"-c\", 'test \"$ALPHA_KEY\" != bad-value-0123456789']\n",
            service("alpha", "qt", &["ALPHA_KEY"])
        ),
    );
    t.credloader(&["apply"]).ok();
    let run = t.credloader_with_stdin(
        &["rotate", "ALPHA_KEY", "--json"],
        Some(b"bad-value-0123456789"),
    );
    assert_eq!(run.code, 4, "{run:?}");
    let n = run.json()["rejected_generation"].as_u64().unwrap();
    t.credloader(&["check"]).ok();
    let rb = t.credloader(&["rollback", "ALPHA_KEY", "--to", &n.to_string()]);
    assert_eq!(rb.code, 1, "it fails verification again: {rb:?}");
    let run = t.credloader(&["check", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let fs = findings(&run);
    let f = fs
        .iter()
        .find(|f| {
            f["problem"]
                .as_str()
                .unwrap()
                .contains("failed verification")
        })
        .unwrap_or_else(|| panic!("{run:?}"));
    assert_eq!(f["severity"], "error");
    assert_eq!(f["subject"], "credential ALPHA_KEY");
    assert!(
        f["problem"]
            .as_str()
            .unwrap()
            .contains(&format!("generation {n}")),
        "{f}"
    );
    let fix = f["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("`{}`", t.cmd("rollback ALPHA_KEY")))
            && fix.contains(&format!(
                "`{}`",
                t.cmd(&format!("rollback ALPHA_KEY --to {n}"))
            )),
        "{fix}"
    );
    // Back to a good value: nothing to report.
    t.credloader(&["rollback", "ALPHA_KEY"]).ok();
    t.credloader(&["check"]).ok();
}

#[test]
fn a_first_apply_that_could_not_decrypt_leaves_the_service_never_applied() {
    let t = Tree::new();
    t.config("a.toml", &service("alpha", "qt", &["ALPHA_KEY"]));
    t.write(
        "/etc/quantum/creds/ALPHA_KEY.cred",
        b"not a credential\n",
        0o600,
    );
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.all().contains("credential ALPHA_KEY"), "{run:#?}");

    // Nothing was written, so nothing is owed and nothing claims otherwise.
    let state = t.read_string("/var/lib/credloader/state.json");
    assert!(!state.contains("\"alpha\""), "{state}");
    let status = t.credloader(&["status", "--json"]);
    assert!(
        status.json()["services"][0]["last_apply"].is_null(),
        "{status:#?}"
    );
    let check = t.credloader(&["check", "--json"]);
    let fs = findings(&check);
    assert!(
        !has(&fs, "error", "alpha.env", "although it was applied"),
        "{fs:#?}"
    );
    assert!(
        has(&fs, "warning", "alpha.env", "has not been written yet"),
        "{fs:#?}"
    );

    // Fixed, it is applied as any new service.
    t.seal("ALPHA_KEY", SECRET);
    t.credloader(&["apply"]).ok();
    let status = t.credloader(&["status", "--json"]);
    assert!(status.json()["services"][0]["last_apply"].as_u64().unwrap() > 0);
}

#[test]
fn list_and_check_call_a_file_that_is_no_credential_damaged() {
    let t = Tree::new();
    setup(&t);
    t.write(
        "/etc/quantum/creds/BETA_KEY.cred",
        b"garbage, not sealed\n",
        0o600,
    );
    let list = t.credloader(&["list", "--json"]);
    let beta = list.json()["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "BETA_KEY")
        .unwrap()
        .clone();
    assert_eq!(beta["status"], "damaged", "{beta}");
    assert!(beta["error"]
        .as_str()
        .unwrap()
        .contains(&t.cmd("rotate BETA_KEY")));
    let check = t.credloader(&["check", "--json"]);
    assert_eq!(check.code, 1);
    assert!(
        has(
            &findings(&check),
            "error",
            "BETA_KEY.cred",
            "not a credential systemd-creds can read"
        ),
        "{check:#?}"
    );

    // A creds dir others can write to is reported once, not as every
    // credential missing.
    std::fs::set_permissions(
        t.path("/etc/quantum/creds"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let fs = findings(&t.credloader(&["check", "--json"]));
    assert!(
        has(&fs, "error", "/etc/quantum/creds", "not root:root 0700"),
        "{fs:#?}"
    );
    assert!(
        !has(&fs, "error", "credential ALPHA_KEY", "does not exist"),
        "{fs:#?}"
    );
    // The fix is for the image, not for this host.
    let tree_path = t.path("/etc/quantum/creds").display().to_string();
    assert!(
        fs.iter().any(|f| f["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("chmod 0700 {tree_path}"))),
        "{fs:#?}"
    );
}

#[test]
fn check_warns_when_the_main_file_the_path_unit_watches_is_gone() {
    let t = clean_alpha();
    std::fs::remove_file(t.path("/etc/quantum/credloader.toml")).unwrap();
    let run = t.credloader(&["check", "--json"]);
    assert_eq!(run.code, 0, "a warning: {run:#?}");
    assert!(
        has(
            &findings(&run),
            "warning",
            "/etc/quantum/credloader.toml",
            "can miss a credential"
        ),
        "{run:#?}"
    );
}

#[test]
fn a_service_whose_file_breaks_is_still_counted_as_served_from_its_last_good_definition() {
    let t = Tree::new();
    setup(&t);
    t.seal("GONE_KEY", b"gone-value-11111");
    t.credloader(&["apply"]).ok();
    // A typo in beta's file: apply keeps serving it from its last good
    // definition, so nothing may look as if it were gone.
    t.config(
        "b.toml",
        "[services.beta]\nunit = \"beta.service\"\nuser = \"bot\ncredentials = [\"BETA_KEY\", \"GONE_KEY\"]\n",
    );
    // And one never applied, with an unknown key: it is not served at all.
    t.config(
        "c.toml",
        "[services.gamma]\nunit = \"gamma.service\"\nuser = \"qt\"\ncredentails = [\"ALPHA_KEY\"]\n",
    );
    let b_toml = t
        .path("/etc/quantum/credloader.d/b.toml")
        .display()
        .to_string();

    let run = t.credloader(&["status", "--json"]);
    run.ok();
    let j = run.json();
    let beta = j["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "beta")
        .unwrap_or_else(|| panic!("beta is served: {j}"))
        .clone();
    assert_eq!(
        beta["credentials"],
        serde_json::json!(["BETA_KEY", "GONE_KEY"])
    );
    assert_eq!(beta["env_file_matches"], true);
    let e = beta["definition_error"].as_str().unwrap();
    assert!(
        e.contains(&format!("{b_toml}:3")) && e.contains(&format!("fix {b_toml}")),
        "{e}"
    );
    assert_eq!(j["not_served"][0]["service"], "gamma", "{j}");
    let run = t.credloader(&["status", "--service", "beta"]);
    run.ok();
    assert!(
        run.stdout.contains("served from its last good definition") && run.stdout.contains(&b_toml),
        "{run:?}"
    );
    assert!(!run.stdout.contains("no services configured"), "{run:?}");

    let run = t.credloader(&["list", "--json"]);
    run.ok();
    for c in run.json()["credentials"].as_array().unwrap() {
        if c["name"] == "BETA_KEY" || c["name"] == "GONE_KEY" {
            assert_eq!(c["status"], "ok", "{c}");
            assert_eq!(c["consumers"], serde_json::json!(["beta"]), "{c}");
            assert_eq!(c["last_good_consumers"], serde_json::json!(["beta"]), "{c}");
        }
    }
    let run = t.credloader(&["list"]);
    assert!(
        run.stdout.contains("beta*") && run.stdout.contains(&b_toml),
        "{run:?}"
    );
    let run = t.credloader(&["show", "BETA_KEY", "--json"]);
    run.ok();
    assert_eq!(
        run.json()["consumers"],
        serde_json::json!(["beta"]),
        "{run:?}"
    );

    let run = t.credloader(&["check", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let fs = findings(&run);
    assert!(
        has(&fs, "error", "service beta", "last good definition"),
        "{fs:#?}"
    );
    assert!(has(&fs, "error", "service gamma", "not served"), "{fs:#?}");
    for f in &fs {
        let subject = f["subject"].as_str().unwrap();
        assert!(
            !subject.contains("BETA_KEY") && !subject.contains("GONE_KEY"),
            "still used by beta's last good definition: {f}"
        );
        // While a file is broken, removing a credential is never advised.
        if subject.starts_with("credential ") {
            assert!(!f["fix"].as_str().unwrap().contains("remove"), "{f}");
        }
    }
    assert!(
        has(
            &fs,
            "warning",
            "credential ORPHAN_KEY",
            "configuration has errors"
        ),
        "{fs:#?}"
    );
    assert!(!run.all().contains("beta-value"));
}

/// An unused credential may be the only copy of a key: nothing advises
/// deleting it, and `check` says to revoke a retired key first.
#[test]
fn nothing_advises_deleting_an_unused_credential() {
    let t = Tree::new();
    setup(&t);
    let check = t.credloader(&["check", "--json"]);
    let fs = findings(&check);
    let f = fs
        .iter()
        .find(|f| f["subject"] == "credential ORPHAN_KEY")
        .unwrap_or_else(|| panic!("{check:?}"));
    let fix = f["fix"].as_str().unwrap();
    assert!(fix.contains("revoke") && fix.contains("only copy"), "{fix}");
    for run in [check, t.credloader(&["check"]), t.credloader(&["list"])] {
        let all = run.all().to_lowercase();
        for advice in ["remove /", "remove it", "rm ", "delete it if"] {
            assert!(!all.contains(advice), "`{advice}` in {run:?}");
        }
    }
}
