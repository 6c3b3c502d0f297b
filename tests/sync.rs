//! `credloader sync` on `--root` images with the real `systemd-creds`,
//! against a real AWS Secrets Manager API on loopback (moto, see
//! tests/moto/mod.rs) and the development file source.

#![cfg_attr(not(feature = "aws"), allow(dead_code))]

mod common;
mod moto;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use common::{Run, Tree};

/// `credloader --root <tree> ARGS` with the test AWS environment.
fn credloader(t: &Tree, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_credloader"))
        .arg("--root")
        .arg(t.root())
        .args(args)
        .env("SYSTEMD_CREDENTIAL_SECRET", t.secret())
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("CREDLOADER_CONFIG")
        .envs(moto::AWS_ENV.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const ALPHA_ENV: &str = "/run/credloader/alpha.env";
const BETA_ENV: &str = "/run/credloader/beta.env";

/// alpha uses A_KEY; beta uses B_KEY and C_KEY (the `api_key` of a JSON secret).
fn services(t: &Tree, alpha_check: Option<&str>) {
    let check = alpha_check
        .map(|c| format!("health_check = [\"/bin/sh\", \"-c\", '{c}']\nhealth_timeout_sec = 10\n"))
        .unwrap_or_default();
    t.config(
        "alpha.toml",
        &format!("{}{check}", common::service("alpha", "qt", &["A_KEY"])),
    );
    t.config(
        "beta.toml",
        &common::service("beta", "bot", &["B_KEY", "C_KEY"]),
    );
}

fn aws_source(t: &Tree, environment: &str, url: &str, extra: &str) {
    t.config(
        "00-sources.toml",
        &format!(
            r#"[sources]
environment = "{environment}"
attempts = 2
timeout_sec = 5

[sources.aws]
region = "{}"
endpoint_url = "{url}"
secret_id = "mm-bot/{{environment}}/{{name}}"

[sources.aws.credentials.C_KEY]
secret_id = "mm-bot/{{environment}}/exchange"
json_key = "api_key"
{extra}"#,
            moto::REGION
        ),
    );
}

/// An error said as a sentence: none of the SDK's debug output.
#[track_caller]
fn not_a_dump(run: &Run) {
    for dump in [
        "DispatchFailure",
        "ServiceError",
        "Response {",
        "SdkBody",
        "Some(",
    ] {
        assert!(!run.stderr.contains(dump), "{dump}: {run:?}");
    }
}

fn cred(name: &str) -> String {
    format!("/etc/quantum/creds/{name}.cred")
}

fn statuses(run: &Run) -> Vec<(String, String)> {
    run.json()["credentials"]
        .as_array()
        .unwrap_or_else(|| panic!("{run:?}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn ino(t: &Tree, p: &str) -> (u64, Vec<u8>) {
    (std::fs::metadata(t.path(p)).unwrap().ino(), t.read(p))
}

#[cfg(feature = "aws")]
#[test]
fn first_sync_seals_all_an_unchanged_sync_writes_nothing_a_change_rotates_only_it() {
    let m = moto::Moto::start();
    m.put("mm-bot/dev/A_KEY", "alpha-secret-1");
    m.put("mm-bot/dev/B_KEY", "beta-secret-1");
    m.put(
        "mm-bot/dev/exchange",
        r#"{"api_key": "json-secret-1", "api_secret": "other-secret"}"#,
    );
    let t = Tree::new();
    services(&t, None);
    aws_source(&t, "dev", &m.url(), "");

    // First sync: everything is new, sealed root-only, and delivered.
    let run = credloader(&t, &["sync", "--json"]);
    run.ok();
    assert_eq!(
        statuses(&run),
        pairs(&[
            ("A_KEY", "created"),
            ("B_KEY", "created"),
            ("C_KEY", "created")
        ])
    );
    let j = run.json();
    assert_eq!(j["source"], "aws");
    assert_eq!(j["environment"], "dev");
    assert_eq!(
        j["rotation"]["consumers"],
        serde_json::json!(["alpha", "beta"])
    );
    assert_eq!(j["rotation"]["verified"], true);
    assert_eq!(
        j["credentials"][2]["from"],
        "secret mm-bot/dev/exchange, JSON key api_key"
    );
    for n in ["A_KEY", "B_KEY", "C_KEY"] {
        assert_eq!(t.owner_mode(&cred(n)), (0, 0, 0o600));
    }
    assert!(t
        .read_string(ALPHA_ENV)
        .contains("A_KEY=\"alpha-secret-1\""));
    let beta = t.read_string(BETA_ENV);
    assert!(beta.contains("B_KEY=\"beta-secret-1\"") && beta.contains("C_KEY=\"json-secret-1\""));
    assert!(!run.all().contains("secret-1"), "{run:?}");

    // Nothing changed: no seal, no write, no apply.
    let creds_before: Vec<_> = ["A_KEY", "B_KEY", "C_KEY"]
        .iter()
        .map(|n| ino(&t, &cred(n)))
        .collect();
    let (alpha_before, beta_before) = (ino(&t, ALPHA_ENV), ino(&t, BETA_ENV));
    let run = credloader(&t, &["sync", "--json"]);
    run.ok();
    assert_eq!(
        statuses(&run),
        pairs(&[
            ("A_KEY", "unchanged"),
            ("B_KEY", "unchanged"),
            ("C_KEY", "unchanged")
        ])
    );
    assert!(run.json().get("rotation").is_none(), "{run:?}");
    let creds_after: Vec<_> = ["A_KEY", "B_KEY", "C_KEY"]
        .iter()
        .map(|n| ino(&t, &cred(n)))
        .collect();
    assert_eq!(creds_before, creds_after);
    assert_eq!(ino(&t, ALPHA_ENV), alpha_before);
    assert_eq!(ino(&t, BETA_ENV), beta_before);

    // One value changes: a dry run reports it and writes nothing.
    m.put("mm-bot/dev/A_KEY", "alpha-secret-2");
    let run = credloader(&t, &["sync", "--dry-run", "--json"]);
    run.ok();
    assert_eq!(statuses(&run)[0], ("A_KEY".into(), "would-update".into()));
    assert_eq!(ino(&t, &cred("A_KEY")), creds_before[0]);

    // The real sync rotates exactly it: a generation, only alpha applied.
    let run = credloader(&t, &["sync", "--json"]);
    run.ok();
    assert_eq!(
        statuses(&run),
        pairs(&[
            ("A_KEY", "updated"),
            ("B_KEY", "unchanged"),
            ("C_KEY", "unchanged")
        ])
    );
    let j = run.json();
    assert_eq!(j["rotation"]["consumers"], serde_json::json!(["alpha"]));
    assert_eq!(j["rotation"]["credentials"][0]["previous_generation"], 1);
    assert_eq!(
        t.read("/var/lib/credloader/generations/A_KEY/1.cred"),
        creds_before[0].1
    );
    assert!(t
        .read_string(ALPHA_ENV)
        .contains("A_KEY=\"alpha-secret-2\""));
    assert_eq!(ino(&t, BETA_ENV), beta_before, "beta untouched");
    assert!(!run.all().contains("secret-2"), "{run:?}");

    // Only the named credentials, when named.
    m.put("mm-bot/dev/B_KEY", "beta-secret-2");
    let run = credloader(&t, &["sync", "--json", "A_KEY"]);
    run.ok();
    assert_eq!(statuses(&run), pairs(&[("A_KEY", "unchanged")]));
    let run = credloader(&t, &["sync", "NOT_USED"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("not managed"), "{run:?}");
}

#[cfg(feature = "aws")]
#[test]
fn server_down_and_wrong_credentials_keep_every_local_credential_and_exit_5() {
    let t = Tree::new();
    services(&t, None);
    for n in ["A_KEY", "B_KEY", "C_KEY"] {
        t.seal(n, b"local-value");
    }
    t.credloader(&["apply"]).ok();
    let before: Vec<_> = ["A_KEY", "B_KEY", "C_KEY"]
        .iter()
        .map(|n| t.read(&cred(n)))
        .collect();
    let env_before = ino(&t, ALPHA_ENV);

    // Nothing listens on the port: retried (attempts = 2), then exit 5.
    let port = moto::free_port();
    aws_source(&t, "dev", &format!("http://127.0.0.1:{port}"), "");
    let started = std::time::Instant::now();
    let run = credloader(&t, &["sync"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        run.stderr.contains("unavailable") && run.stderr.contains("after 2 tries"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("every local credential was kept"),
        "{run:?}"
    );
    // A sentence with the fix, not the SDK's dump.
    assert!(
        run.stderr.contains(&format!(
            "cannot connect to endpoint_url http://127.0.0.1:{port}: connection refused; \
             check endpoint_url in [sources.aws]"
        )),
        "{run:?}"
    );
    not_a_dump(&run);
    let run = credloader(&t, &["sync", "--json"]);
    assert_eq!(run.json()["exit_code"], 5);

    // moto with IAM checks on: our keys are unknown to it.
    let m = moto::Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    aws_source(&t, "dev", &m.url(), "");
    let run = credloader(&t, &["sync"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("refused us"), "{run:?}");
    assert!(
        !run.stderr.contains("tries"),
        "auth errors are not retried: {run:?}"
    );
    assert!(
        run.stderr
            .contains("AWS does not accept the credentials (InvalidClientTokenId)"),
        "{run:?}"
    );
    not_a_dump(&run);

    // No credentials anywhere in the chain: say where they may come from.
    let out = t
        .command(&["sync"])
        .envs(moto::AWS_ENV.iter().copied())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("found no AWS credentials") && stderr.contains("instance role"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("WARN"),
        "the SDK's own notes stay out: {stderr}"
    );

    let after: Vec<_> = ["A_KEY", "B_KEY", "C_KEY"]
        .iter()
        .map(|n| t.read(&cred(n)))
        .collect();
    assert_eq!(before, after);
    assert_eq!(ino(&t, ALPHA_ENV), env_before);
    assert!(!t.exists("/var/lib/credloader/generations/A_KEY/1.cred"));
}

#[cfg(feature = "aws")]
#[test]
fn a_deleted_secret_a_missing_json_key_or_a_bad_value_fail_only_that_credential() {
    let m = moto::Moto::start();
    m.put("mm-bot/dev/A_KEY", "alpha-1");
    m.put("mm-bot/dev/B_KEY", "beta-1");
    m.put("mm-bot/dev/exchange", r#"{"api_key": "json-1"}"#);
    let t = Tree::new();
    services(&t, None);
    aws_source(&t, "dev", &m.url(), "");
    credloader(&t, &["sync"]).ok();
    let b_before = t.read(&cred("B_KEY"));
    let c_before = t.read(&cred("C_KEY"));

    m.delete("mm-bot/dev/B_KEY");
    m.put("mm-bot/dev/exchange", r#"{"key": "json-2"}"#);
    m.put("mm-bot/dev/A_KEY", "alpha-2");
    let run = credloader(&t, &["sync", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        statuses(&run),
        pairs(&[
            ("A_KEY", "updated"),
            ("B_KEY", "failed"),
            ("C_KEY", "failed")
        ])
    );
    let j = run.json();
    let err = |i: usize| j["credentials"][i]["error"].as_str().unwrap().to_string();
    assert!(
        err(1).contains("not found") && err(1).contains("local copy was kept"),
        "{j}"
    );
    assert!(
        err(1).contains("there is no secret mm-bot/dev/B_KEY in region eu-west-1"),
        "{j}"
    );
    assert!(err(2).contains("no key `api_key`"), "{j}");
    assert_eq!(t.read(&cred("B_KEY")), b_before);
    assert_eq!(t.read(&cred("C_KEY")), c_before);
    assert!(t.read_string(ALPHA_ENV).contains("A_KEY=\"alpha-2\""));
    assert!(
        !run.all().contains("json-2") && !run.all().contains("alpha-2"),
        "{run:?}"
    );

    // Values that cannot be sealed or carried are refused.
    m.put("mm-bot/dev/B_KEY", "nul\0inside");
    m.put("mm-bot/dev/exchange", "{\"api_key\": \"\\ufeffbom-value\"}");
    let run = credloader(&t, &["sync", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let j = run.json();
    let err = |i: usize| j["credentials"][i]["error"].as_str().unwrap().to_string();
    assert!(err(1).contains("NUL") && err(1).contains("refused"), "{j}");
    assert!(
        err(2).contains("C_KEY") && err(2).contains("refused"),
        "{j}"
    );
    assert_eq!(t.read(&cred("B_KEY")), b_before);
    assert_eq!(t.read(&cred("C_KEY")), c_before);
}

#[cfg(feature = "aws")]
#[test]
fn a_failed_verification_rolls_back_the_whole_batch_and_exits_4() {
    let m = moto::Moto::start();
    m.put("mm-bot/dev/A_KEY", "alpha-good");
    m.put("mm-bot/dev/B_KEY", "beta-1");
    m.put("mm-bot/dev/exchange", r#"{"api_key": "json-1"}"#);
    let t = Tree::new();
    services(&t, Some(r#"test "$A_KEY" != alpha-bad"#));
    aws_source(&t, "dev", &m.url(), "");
    credloader(&t, &["sync"]).ok();
    let a_before = t.read(&cred("A_KEY"));
    let b_before = t.read(&cred("B_KEY"));

    m.put("mm-bot/dev/A_KEY", "alpha-bad");
    m.put("mm-bot/dev/B_KEY", "beta-2");
    let run = credloader(&t, &["sync", "--json"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(
        statuses(&run),
        pairs(&[
            ("A_KEY", "rolled-back"),
            ("B_KEY", "rolled-back"),
            ("C_KEY", "unchanged")
        ])
    );
    let j = run.json();
    assert_eq!(j["rotation"]["rolled_back"], true);
    assert_eq!(j["rotation"]["rollback"]["verified"], true, "{j}");
    // Both credentials of the batch have their previous value again.
    assert_eq!(t.read(&cred("A_KEY")), a_before);
    assert_eq!(t.read(&cred("B_KEY")), b_before);
    assert!(t.read_string(ALPHA_ENV).contains("A_KEY=\"alpha-good\""));
    assert!(t.read_string(BETA_ENV).contains("B_KEY=\"beta-1\""));
    assert!(!run.all().contains("alpha-"), "{run:?}");
}

#[test]
fn prod_refuses_dev_ids_and_the_dev_source_at_load() {
    let t = Tree::new();
    services(&t, None);
    // The template fills in prod, but an override points at a dev secret.
    aws_source(
        &t,
        "prod",
        "http://127.0.0.1:9",
        "[sources.aws.credentials.B_KEY]\nsecret_id = \"mm-bot/dev/B_KEY\"\n",
    );
    let run = credloader(&t, &["sync"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("00-sources.toml:15") && run.stderr.contains("dev environment"),
        "{run:?}"
    );
    // The file source is refused under prod, with its line.
    t.config(
        "00-sources.toml",
        "[sources]\nenvironment = \"prod\"\n\n[sources.file]\npath = \"/etc/quantum/dev.json\"\n",
    );
    let run = credloader(&t, &["sync"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("00-sources.toml:4") && run.stderr.contains("refused"),
        "{run:?}"
    );
    // [sources] concerns sync alone: apply still runs (these services fail
    // only for want of sealed credentials), and names the mistake.
    let run = t.credloader(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("00-sources.toml:4") && run.stdout.contains("refused"),
        "{run:?}"
    );
}

#[test]
fn the_dev_file_source_syncs_like_aws() {
    let t = Tree::new();
    services(&t, None);
    t.write(
        "/etc/quantum/dev-secrets.json",
        br#"{"A_KEY": "file-a-1", "B_KEY": "file-b-1", "exchange_key": "file-c-1"}"#,
        0o600,
    );
    t.config(
        "00-sources.toml",
        "[sources]\nenvironment = \"dev\"\n[sources.file]\npath = \"/etc/quantum/dev-secrets.json\"\n[sources.file.credentials.C_KEY]\nkey = \"exchange_key\"\n",
    );
    let run = credloader(&t, &["sync", "--json"]);
    run.ok();
    assert_eq!(run.json()["source"], "file");
    assert!(t.read_string(BETA_ENV).contains("C_KEY=\"file-c-1\""));
    assert!(!run.all().contains("file-"), "{run:?}");
    let run = credloader(&t, &["sync", "--json"]);
    run.ok();
    assert!(
        statuses(&run).iter().all(|(_, s)| s == "unchanged"),
        "{run:?}"
    );
    // No [sources] at all: a usage error.
    std::fs::remove_file(t.path("/etc/quantum/credloader.d/00-sources.toml")).unwrap();
    let run = credloader(&t, &["sync"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no [sources]"), "{run:?}");
}

/// A dry run over a creds dir that exists but cannot be used (here others
/// may write to it) says so, as the real run would, instead of calling every
/// credential new.
#[test]
fn a_dry_run_over_an_unusable_creds_dir_fails_like_the_real_run() {
    let t = Tree::new();
    services(&t, None);
    t.write(
        "/etc/quantum/dev-secrets.json",
        br#"{"A_KEY": "file-a-1", "B_KEY": "file-b-1", "C_KEY": "file-c-1"}"#,
        0o600,
    );
    t.config(
        "00-sources.toml",
        "[sources]\nenvironment = \"dev\"\n[sources.file]\npath = \"/etc/quantum/dev-secrets.json\"\n",
    );
    let creds = t.path("/etc/quantum/creds");
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let dry = credloader(&t, &["sync", "--dry-run"]);
    let real = credloader(&t, &["sync"]);
    assert_eq!(real.code, 3, "{real:?}");
    assert_eq!(dry.code, real.code, "{dry:?}");
    assert!(dry.stderr.contains("chmod go-w"), "{dry:?}");
    assert!(!dry.stdout.contains("would be sealed"), "{dry:?}");
}

#[test]
fn a_fetched_value_loses_the_newline_echo_put_into_the_store() {
    let t = Tree::new();
    services(&t, None);
    // A hand-sealed local copy: the key plus echo's newline.
    t.seal_legacy("A_KEY", b"file-a-1\n");
    t.write(
        "/etc/quantum/dev-secrets.json",
        br#"{"A_KEY": "file-a-1\n", "B_KEY": "file-b-1", "C_KEY": "file-c-1"}"#,
        0o600,
    );
    t.config(
        "00-sources.toml",
        "[sources]\nenvironment = \"dev\"\n[sources.file]\npath = \"/etc/quantum/dev-secrets.json\"\n",
    );
    let run = credloader(&t, &["sync"]);
    run.ok();
    assert!(
        run.stdout.contains(
            "A_KEY: removed the trailing newline of the input (echo adds one); the service receives 8 bytes."
        ),
        "{run:?}"
    );
    assert!(t.read_string(ALPHA_ENV).contains("A_KEY=\"file-a-1\"\n"));
    // The local copy is resealed cleanly: the next sync has nothing to do.
    let run = credloader(&t, &["sync", "--json"]);
    run.ok();
    assert!(
        statuses(&run).iter().all(|(_, s)| s == "unchanged"),
        "{run:?}"
    );
    let a = &run.json()["credentials"][0];
    assert_eq!(
        (&a["name"], &a["newline_removed"]),
        (&"A_KEY".into(), &true.into())
    );
    assert!(!run.all().contains("file-a"), "{run:?}");
}

#[cfg(not(feature = "aws"))]
#[test]
fn without_the_aws_feature_sync_says_so_and_exits_2() {
    let t = Tree::new();
    services(&t, None);
    aws_source(&t, "dev", "http://127.0.0.1:9", "");
    let run = credloader(&t, &["sync"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("without AWS support"), "{run:?}");
}
