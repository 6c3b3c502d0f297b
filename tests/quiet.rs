//! `-q` on every command (on a `--root` image): nothing at all when all
//! went well; only what went wrong, on stderr, when it did; the JSON
//! document and the generated artifacts (completions, man page) as asked.

mod common;

use common::{service, Run, Tree, QT_UID};

const PLAIN: &str = "/etc/quantum/legacy/app.env";

/// alpha (qt) uses ALPHA_KEY, with a check that refuses `bad-…` values; a
/// legacy env file and unit for `import`; a dev file source for `sync`.
fn tree() -> Tree {
    let t = Tree::new();
    t.config(
        "a.toml",
        &format!(
            "{}health_check = [\"/bin/sh\", \"-c\", 'echo checking; case \"$ALPHA_KEY\" in bad-*) exit 3;; esac']\n",
            service("alpha", "qt", &["ALPHA_KEY"])
        ),
    );
    for (unit, user) in [("alpha", "qt"), ("app", "qt")] {
        t.write(
            &format!("/usr/lib/systemd/system/{unit}.service"),
            format!("[Service]\nUser={user}\nExecStart=/bin/sleep infinity\n").as_bytes(),
            0o644,
        );
    }
    t.mkdir("/etc/quantum/legacy", 0o700);
    t.write(PLAIN, b"APP_KEY=app-value-0123456789\n", 0o600);
    std::os::unix::fs::chown(t.path(PLAIN), Some(QT_UID), Some(QT_UID)).unwrap();
    t.write(
        "/etc/quantum/dev.json",
        br#"{"ALPHA_KEY": "synced-value-0123456789"}"#,
        0o600,
    );
    t.config(
        "00-sources.toml",
        "[sources]\nenvironment = \"dev\"\n[sources.file]\npath = \"/etc/quantum/dev.json\"\n",
    );
    t
}

fn quiet(t: &Tree, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut argv = vec!["-q"];
    argv.extend_from_slice(args);
    t.credloader_with_stdin(&argv, stdin)
}

#[track_caller]
fn silent(run: &Run) {
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.all(), "", "-q printed something: {run:?}");
}

#[test]
fn every_command_is_silent_when_all_goes_well() {
    let t = tree();
    silent(&quiet(
        &t,
        &["seal", "ALPHA_KEY", "--key", "host"],
        Some(b"first-value-0123456789"),
    ));
    silent(&quiet(&t, &["apply"], None));
    silent(&quiet(&t, &["apply", "--dry-run"], None));
    silent(&quiet(
        &t,
        &["rotate", "ALPHA_KEY"],
        Some(b"second-value-0123456789"),
    ));
    silent(&quiet(&t, &["rollback", "ALPHA_KEY"], None));
    silent(&quiet(&t, &["sync"], None));
    for args in [
        &["generations", "ALPHA_KEY"][..],
        &["list"],
        &["show", "ALPHA_KEY"],
        &["status"],
        &["check"],
    ] {
        silent(&quiet(&t, args, None));
    }
    let import = [
        "import",
        "--env-file",
        PLAIN,
        "--unit",
        "app.service",
        "--secret",
        "APP_KEY",
    ];
    silent(&quiet(&t, &import, None));
    // What was asked for itself still comes out.
    let run = quiet(&t, &["completions", "bash"], None);
    assert!(
        run.code == 0 && run.stdout.contains("credloader"),
        "{run:?}"
    );
    let run = quiet(&t, &["list", "--json"], None);
    assert!(run.json()["credentials"].is_array(), "{run:?}");
}

#[test]
fn only_what_went_wrong_is_said_on_stderr() {
    let t = tree();
    // A usage error.
    let run = quiet(&t, &["show", "bad/name"], None);
    assert!(run.code == 2 && run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains("bad/name"), "{run:?}");

    // A rotation rolled back: the failed check and what became of the
    // value, nothing of what went well.
    quiet(
        &t,
        &["seal", "ALPHA_KEY", "--key", "host"],
        Some(b"first-value-0123456789"),
    );
    quiet(&t, &["apply"], None);
    let run = quiet(&t, &["rotate", "ALPHA_KEY"], Some(b"bad-value-0123456789"));
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr.contains("verify alpha:")
            && run.stderr.contains("failed with exit status 3")
            && run.stderr.contains("| checking")
            && run.stderr.contains("rolled back; it is kept as generation"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("installed"), "{run:?}");

    // check: the errors, not the warnings nor the summary.
    std::fs::write(t.path("/run/credloader/alpha.env"), b"ALPHA_KEY=edited\n").unwrap();
    t.seal("NOBODY_KEY", b"orphan-value-0123456789");
    let run = quiet(&t, &["check"], None);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("error: ") && run.stderr.contains("modified"),
        "{run:?}"
    );
    assert!(
        !run.stderr.contains("warning") && !run.stderr.contains("NOBODY_KEY"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("error(s)"), "{run:?}");

    // apply: the service that failed.
    t.config("b.toml", &service("beta", "qt", &["MISSING_KEY"]));
    let run = quiet(&t, &["apply"], None);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr.contains("beta (beta.service): FAILED") && !run.stderr.contains("alpha"),
        "{run:?}"
    );
    assert!(!run.all().contains("0123456789"), "{run:?}");
}
