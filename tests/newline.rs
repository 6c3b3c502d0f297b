//! The trailing-newline policy on `--root` images, with values made the way
//! operators make them (`echo KEY > file`, sealed by hand without `--name`):
//! a trailing line break is not part of a value, unless the credential says
//! `keep_newline = true`. Every path that takes a value in (seal, rotate,
//! apply of an existing sealed file) delivers what `$(cat ...)` gave, and
//! says so.

mod common;

use common::{service, Tree};

const ENV: &str = "/run/credloader/x.env";

fn env(t: &Tree) -> String {
    t.read_string(ENV)
}

/// The value `show` reports as sealed: its length.
fn sealed_length(t: &Tree, name: &str) -> u64 {
    let show = t.credloader(&["show", name, "--json"]);
    show.ok();
    show.json()["length"].as_u64().unwrap()
}

#[test]
fn a_hand_sealed_value_with_a_newline_is_delivered_as_cat_gave_it_and_reported() {
    let t = Tree::new();
    t.config("x.toml", &service("x", "qt", &["BINANCE_API_KEY"]));
    // echo "KEY" > /root/.tmp_key; systemd-creds encrypt (no --name)
    t.seal_legacy("BINANCE_API_KEY", b"k-echoed-0123456789\n");
    let run = t.credloader(&["apply", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        env(&t).contains("BINANCE_API_KEY=\"k-echoed-0123456789\"\n"),
        "{}",
        env(&t)
    );
    assert_eq!(
        run.json()["services"][0]["newline_removed"],
        serde_json::json!(["BINANCE_API_KEY"])
    );
    let warnings = run.json()["warnings"].to_string();
    for part in [
        "credential BINANCE_API_KEY: its sealed value ends in a newline",
        "which x receives without",
        &format!("`{}`", t.cmd("rotate BINANCE_API_KEY")),
        "keep_newline = true",
    ] {
        assert!(warnings.contains(part), "{part}: {warnings}");
    }
    assert!(!run.all().contains("0123456789"), "{run:?}");
    // The state keeps the fact (one bit), never the value.
    let state = t.read_string("/var/lib/credloader/state.json");
    assert!(state.contains("\"ends_in_newline\": true"), "{state}");
    assert!(!state.contains("0123456789"));

    // A second run decrypts nothing and is a quiet no-op...
    let again = t.credloader(&["apply", "--json"]);
    again.ok();
    let j = again.json();
    assert_eq!(j["warnings"], serde_json::json!([]), "{again:?}");
    assert_eq!(j["services"][0]["decrypted"], serde_json::json!([]));
    assert!(j["services"][0].get("newline_removed").is_none());
    // ...while check says it every time, with the fix.
    for _ in 0..2 {
        let check = t.credloader(&["check", "--json"]);
        let findings = check.json()["findings"].clone();
        let f = findings
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["subject"] == "credential BINANCE_API_KEY")
            .unwrap_or_else(|| panic!("no newline finding: {check:?}"));
        assert_eq!(f["severity"], "warning");
        assert!(f["problem"].as_str().unwrap().contains("ends in a newline"));
        assert!(f["fix"]
            .as_str()
            .unwrap()
            .contains(&t.cmd("rotate BINANCE_API_KEY")));
    }

    // show tells the sealed length from what env files get.
    let show = t.credloader(&["show", "BINANCE_API_KEY"]);
    show.ok();
    assert!(
        show.stdout.contains("(20 bytes)")
            && show
                .stdout
                .contains("ends in a newline; env files get it without, 19 bytes"),
        "{show:?}"
    );
    assert_eq!(
        t.credloader(&["show", "BINANCE_API_KEY", "--json"]).json()["ends_in_newline"],
        true
    );

    // `echo KEY | credloader rotate`: the newline is removed, and said so.
    let run = t.credloader_with_stdin(
        &["rotate", "BINANCE_API_KEY", "--key", "host"],
        Some(b"k-rotated-0123456789\n"),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "BINANCE_API_KEY: removed the trailing newline of the input (echo adds one); \
             the service receives 20 bytes. If the newline belongs to the value, set \
             [credentials.BINANCE_API_KEY] keep_newline = true."
        ),
        "{run:?}"
    );
    assert!(env(&t).contains("BINANCE_API_KEY=\"k-rotated-0123456789\"\n"));
    assert_eq!(sealed_length(&t, "BINANCE_API_KEY"), 20);
    // Clean now: check has nothing to say about it.
    let check = t.credloader(&["check", "--json"]);
    assert!(!check.stdout.contains("ends in a newline"), "{check:?}");
}

#[test]
fn seal_and_rotate_remove_the_newline_echo_adds_and_say_so_in_json() {
    let t = Tree::new();
    t.config("x.toml", &service("x", "qt", &["K"]));
    let run = t.credloader_with_stdin(&["seal", "K", "--key", "host", "--json"], Some(b"v-1\r\n"));
    run.ok();
    let j = run.json();
    assert_eq!(j["value"]["length"], 3);
    assert_eq!(j["value"]["newline_removed"], true);
    assert_eq!(j["value"]["newline_kept"], false);
    assert_eq!(sealed_length(&t, "K"), 3);

    // --from-file of a file made with echo.
    t.write("/tmp/new-key", b"v-2\n", 0o600);
    let file = t.path("/tmp/new-key");
    let run = t.credloader(&[
        "rotate",
        "K",
        "--key",
        "host",
        "--from-file",
        file.to_str().unwrap(),
        "--json",
    ]);
    run.ok();
    assert_eq!(run.json()["value"]["newline_removed"], true);
    assert!(env(&t).contains("K=\"v-2\"\n"));

    // printf %s: nothing to remove, nothing said.
    let run = t.credloader_with_stdin(&["rotate", "K", "--key", "host"], Some(b"v-3"));
    run.ok();
    assert!(!run.stdout.contains("newline"), "{run:?}");

    // Nothing but a line break is refused.
    let run = t.credloader_with_stdin(&["rotate", "K", "--key", "host"], Some(b"\n"));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("nothing but a line break"), "{run:?}");
    assert!(env(&t).contains("K=\"v-3\"\n"));
}

#[test]
fn keep_newline_keeps_it_on_every_path() {
    let t = Tree::new();
    t.config(
        "x.toml",
        &format!(
            "{}\n[credentials.PEM]\nkeep_newline = true\n",
            service("x", "qt", &["PEM"])
        ),
    );
    let run = t.credloader_with_stdin(&["seal", "PEM", "--key", "host"], Some(b"-----KEY-----\n"));
    run.ok();
    assert!(
        run.stdout
            .contains("PEM: the value ends in a newline, kept as part of it"),
        "{run:?}"
    );
    assert_eq!(sealed_length(&t, "PEM"), 14);
    let run = t.credloader(&["apply", "--json"]);
    run.ok();
    assert!(
        !run.json()["warnings"].to_string().contains("newline"),
        "{run:?}"
    );
    assert!(env(&t).contains("PEM=\"-----KEY-----\n\"\n"), "{}", env(&t));
    let check = t.credloader(&["check"]);
    assert!(!check.stdout.contains("ends in a newline"), "{check:?}");

    // Taking the option away re-renders the env file without the newline.
    t.config("x.toml", &service("x", "qt", &["PEM"]));
    let run = t.credloader(&["apply", "--json"]);
    run.ok();
    assert!(env(&t).contains("PEM=\"-----KEY-----\"\n"), "{}", env(&t));
    assert!(run.json()["warnings"]
        .to_string()
        .contains("ends in a newline"));
    // And back: the newline is delivered again (nothing reused from the file).
    t.config(
        "x.toml",
        &format!(
            "{}\n[credentials.PEM]\nkeep_newline = true\n",
            service("x", "qt", &["PEM"])
        ),
    );
    t.credloader(&["apply"]).ok();
    assert!(env(&t).contains("PEM=\"-----KEY-----\n\"\n"), "{}", env(&t));
}

#[test]
fn credential_delivery_hands_the_sealed_newline_over_and_check_says_so() {
    let t = Tree::new();
    t.config(
        "x.toml",
        &format!("{}delivery = \"credential\"\n", service("x", "qt", &["K"])),
    );
    // Sealed by hand with its name, from a file made with echo.
    t.seal("K", b"v-1\n");
    let run = t.credloader(&["apply", "--json"]);
    run.ok();
    let warnings = run.json()["warnings"].to_string();
    assert!(
        warnings.contains("delivery = \\\"credential\\\") gets it as sealed, newline included"),
        "{warnings}"
    );
    let check = t.credloader(&["check", "--json"]);
    assert_eq!(check.code, 1, "{check:?}");
    let j = check.json();
    let f = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == "credential K")
        .unwrap_or_else(|| panic!("{check:?}"));
    assert_eq!(f["severity"], "error");
    assert!(f["problem"].as_str().unwrap().contains("newline included"));
}

#[test]
fn a_state_from_before_the_policy_is_caught_up_once() {
    let t = Tree::new();
    t.config("x.toml", &service("x", "qt", &["K"]));
    t.seal_legacy("K", b"v-1\n");
    t.credloader(&["apply"]).ok();
    // What an older credloader left: no newline bit, and the value as sealed.
    let state = t.read_string("/var/lib/credloader/state.json");
    let old = state.replace(",\n      \"ends_in_newline\": true", "");
    assert_ne!(old, state, "{state}");
    t.write("/var/lib/credloader/state.json", old.as_bytes(), 0o600);
    let run = t.credloader(&["apply", "--json"]);
    run.ok();
    let j = run.json();
    assert_eq!(
        j["services"][0]["decrypted"],
        serde_json::json!(["K"]),
        "{run:?}"
    );
    assert!(j["warnings"].to_string().contains("ends in a newline"));
    assert!(env(&t).contains("K=\"v-1\"\n"));
    let again = t.credloader(&["apply", "--json"]);
    assert_eq!(
        again.json()["services"][0]["decrypted"],
        serde_json::json!([])
    );
}
