//! Under `--root`, what a message tells the operator to do is about the
//! image: every suggested `credloader` command carries `--root DIR` (in
//! human output, JSON, errors, `-q` and log lines alike), and every path a
//! fix names is the image's file on this machine, never the host's own.

mod common;

use common::{service, Run, Tree};

/// alpha needs a credential that is missing; the creds dir is too open; a
/// legacy drop-in still loads a plaintext file; ORPHAN is used by nobody.
fn broken_image() -> Tree {
    let t = Tree::new();
    t.config(
        "a.toml",
        &service("alpha", "qt", &["ALPHA_KEY", "GONE_KEY"]),
    );
    t.write(
        "/usr/lib/systemd/system/alpha.service",
        b"[Service]\nUser=qt\nExecStart=/bin/sleep infinity\n",
        0o644,
    );
    t.seal("ALPHA_KEY", b"alpha-value-0123456789");
    t.seal("ORPHAN", b"orphan-value-0123456789");
    t.write("/etc/legacy/a.env", b"K=v\n", 0o600);
    t.write(
        "/etc/systemd/system/alpha.service.d/credentials.conf",
        b"[Service]\nEnvironmentFile=-/etc/legacy/a.env\n",
        0o644,
    );
    t.mkdir("/etc/quantum/creds", 0o755);
    t
}

/// Every suggested command in `text` carries `--root <root>`.
#[track_caller]
fn commands_carry_root(text: &str, root: &str) {
    let mut found = 0;
    for form in ["`credloader ", "| credloader "] {
        for (i, _) in text.match_indices(form) {
            found += 1;
            let rest = &text[i + form.len()..];
            assert!(
                rest.starts_with(&format!("--root {root} ")),
                "a suggested command without --root: {:?}\n{text}",
                &text[i..(i + 80).min(text.len())]
            );
        }
    }
    assert!(found > 0, "no suggested command in: {text}");
}

/// Every image path in the `fix` of each finding is beneath the root.
#[track_caller]
fn fixes_name_the_images_files(run: &Run, root: &str) {
    for f in run.json()["findings"].as_array().unwrap() {
        let fix = f["fix"].as_str().unwrap();
        for top in ["/etc/", "/run/", "/var/", "/usr/", "/lib/"] {
            for (i, _) in fix.match_indices(top) {
                let before = &fix[..i];
                // import takes the image's own path as its argument.
                if before.ends_with("--env-file ") || before.ends_with(root) {
                    continue;
                }
                panic!("a host path in the fix {fix:?}");
            }
        }
    }
}

#[test]
fn every_hint_under_root_is_for_the_image() {
    let t = broken_image();
    let root = t.root().display().to_string();
    let apply = t.credloader(&["apply"]);
    assert_eq!(apply.code, 1, "{apply:?}");
    // The report and the log line of the failure.
    commands_carry_root(&apply.stdout, &root);
    commands_carry_root(&apply.stderr, &root);

    let check = t.credloader(&["check", "--json"]);
    assert_eq!(check.code, 1, "{check:?}");
    commands_carry_root(&check.stdout, &root);
    fixes_name_the_images_files(&check, &root);
    // Nothing to reload on an image: its systemd reads its units at boot.
    assert!(!check.stdout.contains("daemon-reload"), "{check:?}");
    let human = t.credloader(&["check"]);
    commands_carry_root(&human.stdout, &root);
    let quiet = t.credloader(&["-q", "check"]);
    commands_carry_root(&quiet.stderr, &root);

    for args in [
        &["show", "GONE_KEY"][..],
        &["rotate", "GONE_KEY"],
        &["rollback", "ALPHA_KEY"],
        &["generations", "NOPE"],
    ] {
        let run = t.credloader(args);
        assert_ne!(run.code, 0, "{run:?}");
        commands_carry_root(&run.stderr, &root);
        let json = t.credloader(&[&["--json"], args].concat());
        commands_carry_root(&json.stdout, &root);
        assert!(json.json()["error"].is_string(), "{json:?}");
    }
    let seal = t.credloader_with_stdin(&["seal", "ALPHA_KEY"], Some(b"x"));
    assert_eq!(seal.code, 2, "{seal:?}");
    commands_carry_root(&seal.stderr, &root);
    let seal = t.credloader_with_stdin(&["seal", "GONE_KEY"], Some(b"gone-value-0123456789"));
    commands_carry_root(&seal.stdout, &root);

    // The main file missing: the fix is the image's file, not apt.
    std::fs::remove_file(t.path("/etc/quantum/credloader.toml")).unwrap();
    let check = t.credloader(&["check", "--json"]);
    fixes_name_the_images_files(&check, &root);
    assert!(
        check
            .stdout
            .contains(&format!("touch {root}/etc/quantum/credloader.toml")),
        "{check:?}"
    );
    assert!(!check.stdout.contains("apt-get"), "{check:?}");
}
