//! `health-checks/binance-key-check`, the health check shipped for Binance
//! consumers, against a Binance API on loopback that verifies each
//! request's HMAC-SHA256 signature (tests/binance): every outcome has its
//! own line and exit status, and the secret is never printed.

mod binance;

use std::process::Command;

use binance::*;

struct Ran {
    code: i32,
    out: String,
}

/// The check with `key` and `secret` in its environment (None: unset).
fn check(server: &str, key: Option<&str>, secret: Option<&str>, args: &[&str]) -> Ran {
    let mut cmd = Command::new(check_script());
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["--base-url", server])
        .args(args);
    if let Some(k) = key {
        cmd.env("BINANCE_API_KEY", k);
    }
    if let Some(s) = secret {
        cmd.env("BINANCE_API_SECRET", s);
    }
    let out = cmd.output().expect("the check runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains(GOOD_SECRET),
        "the secret was printed: {text}"
    );
    Ran {
        code: out.status.code().unwrap_or(-1),
        out: text,
    }
}

#[track_caller]
fn expect(r: &Ran, code: i32, words: &[&str]) {
    assert_eq!(r.code, code, "{}", r.out);
    for w in words {
        assert!(r.out.contains(w), "{w:?} not in: {}", r.out);
    }
    assert_eq!(r.out.lines().count(), 1, "one line: {}", r.out);
}

#[test]
fn each_answer_of_binance_has_its_own_line_and_exit_status() {
    let b = FakeBinance::start();
    let url = b.url();
    let good = Some(GOOD_SECRET);
    // Accepted: the server checked the signature, so the HMAC is right.
    let r = check(&url, Some(GOOD_KEY), good, &["--require", "reading,spot"]);
    expect(&r, 0, &["ok", "reading, spot", "IP allow-list: off"]);
    let r = check(&url, Some(GOOD_KEY), good, &["--endpoint", "account"]);
    expect(&r, 0, &["ok", "spot"]);
    // -2015, unknown key: what to check to tell it from an IP allow-list.
    let r = check(&url, Some(UNKNOWN_KEY), good, &[]);
    expect(
        &r,
        4,
        &[
            "-2015",
            "unknown",
            "allow-list",
            "BINANCE_API_KEY",
            "Unk...***",
        ],
    );
    // -2015, an IP not on the key's allow-list: the IP Binance saw.
    let r = check(&url, Some(FENCED_KEY), good, &[]);
    expect(
        &r,
        4,
        &["-2015", "Binance saw IP 127.0.0.1", "add 127.0.0.1"],
    );
    // -2014: malformed, as the exchange says; a stray newline, before asking.
    let r = check(&url, Some("not-a-key"), good, &[]);
    expect(&r, 5, &["-2014", "9 characters", "64"]);
    let with_newline = format!("{GOOD_KEY}\n");
    let r = check(&url, Some(&with_newline), good, &[]);
    expect(&r, 5, &["newline", "65 characters", "printf %s"]);
    assert!(!r.out.contains(GOOD_KEY), "{}", r.out);
    // -1022: the secret is another key's.
    let r = check(&url, Some(GOOD_KEY), Some("some-other-secret-0000"), &[]);
    expect(&r, 6, &["-1022", "WRONG SECRET", "BINANCE_API_SECRET"]);
    assert!(!r.out.contains("some-other-secret"), "{}", r.out);
    // Accepted, but without a permission the consumer needs.
    let r = check(&url, Some(READER_KEY), good, &["--require", "spot"]);
    expect(&r, 7, &["MISSING PERMISSION", "spot", "has: reading"]);
    let r = check(&url, Some(GOOD_KEY), good, &["--require", "futures"]);
    expect(&r, 7, &["futures"]);
}

#[test]
fn what_is_not_a_verdict_on_the_key_says_so() {
    // Nothing listens: unavailable, not rejected.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let r = check(&url, Some(GOOD_KEY), Some(GOOD_SECRET), &[]);
    expect(&r, 3, &["UNAVAILABLE", "not a verdict on the key"]);
    // A variable that is not there, and bad options: usage.
    let r = check(&url, None, Some(GOOD_SECRET), &[]);
    expect(&r, 2, &["BINANCE_API_KEY is not set"]);
    let r = check(
        &url,
        Some(GOOD_KEY),
        Some(GOOD_SECRET),
        &["--require", "yachts"],
    );
    assert_eq!(r.code, 2, "{}", r.out);
    // Other variable names, and the credential directory.
    let b = FakeBinance::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("KEY_FILE"), GOOD_KEY).unwrap();
    let out = Command::new(check_script())
        .env_clear()
        .env("CREDENTIALS_DIRECTORY", dir.path())
        .env("MY_SECRET", GOOD_SECRET)
        .args(["--base-url", &b.url(), "--key-var", "KEY_FILE"])
        .args(["--secret-var", "MY_SECRET"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
