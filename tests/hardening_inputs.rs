//! Hostile and broken inputs (issue 6).
//!
//! - A bounded, deterministic randomized run of the same properties the
//!   cargo-fuzz targets check (fuzz/props.rs): thousands of generated
//!   configurations (valid, with every kind of mistake, and mangled) through
//!   the config loader, and of generated values through the env renderer,
//!   whose output a transcription of systemd's env-file.c parser must give
//!   back byte for byte. `CREDLOADER_LONG=1` runs ten times as many;
//!   `CREDLOADER_SEED=N` replays a run. (The round trip through a real
//!   systemd stays in tests/e2e.rs.)
//! - Tampered, truncated, empty, oversized, wrong-name and expired `.cred`
//!   files: refused with a message naming the credential and the problem,
//!   and the other service is still served.
//! - Configurations with mistakes, through the command line: every mistake
//!   named with its file and line; a broken service is refused alone (exit
//!   1, the others served), a broken `[loader]` stops the run (exit 2).
//! - Values an env file cannot carry: refused at seal and at apply.

mod common;
#[path = "../fuzz/props.rs"]
mod props;

use common::{Rng, Tree};

fn seed() -> u64 {
    std::env::var("CREDLOADER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de_1234_5678)
}

fn scale() -> usize {
    if std::env::var_os("CREDLOADER_LONG").is_some_and(|v| !v.is_empty() && v != "0") {
        10
    } else {
        1
    }
}

// ---- generated configurations ---------------------------------------------

const SERVICE_NAMES: &[&str] = &[
    "alpha", "beta", "svc-1", "x_y", "Bad Name", "../up", "", "a.b", "ünï",
];
const UNITS: &[&str] = &[
    "\"a.service\"",
    "\"b.service\"",
    "\"quantum-position-monitor.service\"",
    "\"a\"",
    "\"../x.service\"",
    "\"\"",
    "\"a b.service\"",
    "42",
];
const USERS: &[&str] = &["\"qt\"", "\"bot\"", "\"\"", "\"root:x\"", "\"-x\"", "7"];
const CREDS: &[&str] = &[
    "\"K1\"",
    "\"K2\"",
    "\"BINANCE_API_KEY\"",
    "\"A/B\"",
    "\"\"",
    "\"X:Y\"",
    "\".\"",
    "\"1BAD\"",
    "\"bad-var\"",
];
const VALUES: &[&str] = &[
    "\"true\"",
    "\"\"",
    "\"a\\u0000b\"",
    "\"\\uFEFFx\"",
    "'$HOME \"q\" `x`'",
    "\"line\\nline\"",
    "\"#;\"",
    "1",
    "[]",
];
const VARS: &[&str] = &["EXTRA", "K1", "_x", "1X", "\"A-B\"", "\"export K\"", "MODE"];
const PATHS: &[&str] = &[
    "\"/run/credloader/a.env\"",
    "\"/run/credloader/shared.env\"",
    "\"relative/x.env\"",
    "\"/run/../etc/x\"",
    "\"\"",
    "\"/run/x\\u0000y\"",
    "\"/etc/shadow\"",
    "\"/etc/systemd/system/x.service.d/e.conf\"",
    "\"/srv/env/a.env\"",
];

fn gen_service(r: &mut Rng, out: &mut String) {
    out.push_str(&format!("[services.\"{}\"]\n", r.pick(SERVICE_NAMES)));
    let keys: &[&str] = &[
        "unit",
        "user",
        "group",
        "credentials",
        "env",
        "static",
        "env_file",
        "delivery",
        "required",
        "on_change",
        "health_check",
        "health_timeout_sec",
        "credentails",
    ];
    // unit and user are required: mostly present, so the loader's own
    // checks are reached rather than serde's "missing field".
    let mut used = Vec::new();
    for k in ["unit", "user"] {
        if !r.chance(5) {
            used.push(k);
            let v = if k == "unit" {
                r.pick_typed(UNITS, 7)
            } else {
                r.pick_typed(USERS, 5)
            };
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    for _ in 0..r.below(10) + 1 {
        let k = r.pick_typed(keys, keys.len() - 1);
        if used.contains(&k) && !r.chance(5) {
            continue;
        }
        used.push(k);
        let v = match k {
            "unit" => r.pick_typed(UNITS, 7).to_string(),
            "user" | "group" => r.pick_typed(USERS, 5).to_string(),
            "credentials" => {
                let n = r.below(4);
                let items: Vec<&str> = (0..n).map(|_| *r.pick(CREDS)).collect();
                format!("[{}]", items.join(", "))
            }
            "env" => format!("{{ {} = {} }}", r.pick(VARS), r.pick(CREDS)),
            "static" => format!("{{ {} = {} }}", r.pick(VARS), r.pick_typed(VALUES, 7)),
            "env_file" => r.pick(PATHS).to_string(),
            "delivery" => r
                .pick_typed(&["\"env\"", "\"credential\"", "\"bogus\""], 2)
                .to_string(),
            "required" => r.pick_typed(&["true", "false", "\"yes\""], 2).to_string(),
            "on_change" => r
                .pick_typed(
                    &["\"try-restart\"", "\"none\"", "\"restart\"", "\"reboot\""],
                    3,
                )
                .to_string(),
            "health_check" => r
                .pick_typed(
                    &["[\"/bin/true\"]", "[]", "[\"relative\"]", "\"/bin/true\""],
                    3,
                )
                .to_string(),
            "health_timeout_sec" => r.pick_typed(&["30", "0", "99999", "-1"], 3).to_string(),
            _ => "1".to_string(),
        };
        out.push_str(&format!("{k} = {v}\n"));
    }
}

fn gen_config(r: &mut Rng) -> String {
    let mut out = String::new();
    if r.chance(40) {
        out.push_str("[loader]\n");
        for _ in 0..r.below(4) {
            let lines: &[&str] = &[
                "creds_dir = \"/etc/quantum/creds\"\n",
                "env_dir = \"relative\"\n",
                "state_dir = \"/var/lib/x\"\n",
                "keep_generations = 0\n",
                "keep_generations = 3\n",
                "keep_generations = 1000\n",
                "lock_timeout_sec = 5\n",
                "unknown = 1\n",
                "dropin_dir = \"/etc/systemd/system\"\n",
                "env_file_dirs = [\"/srv/env\"]\n",
                "env_file_dirs = [\"/etc\", \"/srv/env\"]\n",
            ];
            out.push_str(lines[r.below(lines.len())]);
        }
    }
    for _ in 0..r.below(4) {
        gen_service(r, &mut out);
    }
    if r.chance(30) {
        // A second file: duplicates and shared env files across files.
        out.push('\u{c}');
        gen_service(r, &mut out);
    }
    if r.chance(25) {
        // Mangle it: truncate, or insert a random character.
        let chars: Vec<char> = out.chars().collect();
        let at = r.below(chars.len() + 1);
        let mut s: String = chars[..at].iter().collect();
        if r.chance(50) {
            s.push(*r.pick(&['"', '[', ']', '=', '\n', '{', '\'', '\\', 'x', '\u{0}']));
            s.extend(&chars[at..]);
        }
        out = s;
    }
    out
}

#[test]
fn generated_configurations_never_break_the_loader() {
    let mut r = Rng(seed());
    let (mut ok, mut invalid, mut syntax) = (0, 0, 0);
    let n = 6000 * scale();
    for _ in 0..n {
        let text = gen_config(&mut r);
        props::config_loader(text.as_bytes());
        let files = text
            .splitn(2, '\u{c}')
            .enumerate()
            .map(|(i, t)| (format!("/f{i}.toml").into(), t.to_string()))
            .collect();
        match credloader::config::from_texts(files) {
            Ok(c) if c.is_clean() => ok += 1,
            Ok(_) => invalid += 1,
            Err(credloader::config::ConfigError::Invalid { .. }) => invalid += 1,
            Err(_) => syntax += 1,
        }
    }
    eprintln!("configs: {n} generated: {ok} valid, {invalid} with mistakes, {syntax} not TOML");
    // The generator reaches all three outcomes in quantity.
    assert!(ok > n / 20 && invalid > n / 5 && syntax > n / 20);
}

#[test]
fn random_bytes_never_break_the_loader_or_the_parser() {
    let mut r = Rng(seed() ^ 1);
    for _ in 0..20_000 * scale() {
        let len = r.below(200);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if r.chance(70) {
                    *r.pick(b"[]=\"'\\\n\r\t #;$`ab{}.,:-_0\xef\xbb\xbf\xff\x00")
                } else {
                    r.next() as u8
                }
            })
            .collect();
        props::config_loader(&bytes);
        props::env_parse(&bytes);
    }
}

// ---- generated values through the renderer --------------------------------

fn gen_value(r: &mut Rng) -> Vec<u8> {
    let len = match r.below(100) {
        0 => 128 * 1024 - 10 + r.below(20), // around the E2BIG limit
        1..=5 => r.below(4096),
        _ => r.below(48),
    };
    let special: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"`",
        b"$",
        b"'",
        b"#",
        b";",
        b"=",
        b" ",
        b"\t",
        b"\n",
        b"\r",
        b"\\\n",
        b"${X}",
        b"\xc3\xbc",
        "✓".as_bytes(),
        "鍵".as_bytes(),
        b"export ",
    ];
    // What no env file can carry: NUL, broken UTF-8, a byte-order mark.
    let uncarriable: &[&[u8]] = &[b"\x00", b"\x80", b"\xc3", "\u{feff}".as_bytes()];
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        if r.chance(1) && r.chance(50) {
            v.extend_from_slice(r.pick::<&[u8]>(uncarriable));
        } else if r.chance(30) {
            v.extend_from_slice(r.pick::<&[u8]>(special));
        } else {
            v.push(b' ' + (r.below(95)) as u8);
        }
    }
    v
}

#[test]
fn generated_values_round_trip_through_render_and_systemds_parser() {
    let mut r = Rng(seed() ^ 2);
    let (mut carried, mut refused) = (0usize, 0usize);
    for _ in 0..4000 * scale() {
        let mut input = Vec::new();
        for i in 0..r.below(8) + 1 {
            if i > 0 {
                input.push(0xff);
            }
            let v = gen_value(&mut r);
            match credloader::envfile::check_value("V", &v) {
                Ok(()) => carried += 1,
                Err(_) => refused += 1,
            }
            input.extend(v);
        }
        props::env_round_trip(&input);
    }
    eprintln!("values: {carried} carried and round-tripped, {refused} refused as uncarriable");
    assert!(carried > 10_000 && refused > 100);
}

// ---- hostile sealed files -------------------------------------------------

fn two_services() -> Tree {
    let t = Tree::new();
    t.config("victim.toml", &common::service("victim", "qt", &["VICTIM"]));
    t.config(
        "bystander.toml",
        &common::service("bystander", "bot", &["BYSTANDER"]),
    );
    t.seal("VICTIM", b"victim-value-123456");
    t.seal("BYSTANDER", b"bystander-value-654321");
    t
}

#[test]
fn hostile_sealed_files_are_refused_and_the_neighbour_is_served() {
    const CRED: &str = "/etc/quantum/creds/VICTIM.cred";
    type Mangle = Box<dyn Fn(&Tree) -> Vec<u8>>;
    let cases: Vec<(&str, Mangle, &[&str])> = vec![
        (
            "tampered (one byte flipped)",
            Box::new(|t: &Tree| {
                let mut b = t.read(CRED);
                let i = b.len() / 2;
                b[i] = if b[i] == b'A' { b'B' } else { b'A' };
                b
            }),
            &["VICTIM", "could not decrypt"],
        ),
        (
            "truncated",
            Box::new(|t: &Tree| {
                let b = t.read(CRED);
                b[..b.len() / 2].to_vec()
            }),
            &["VICTIM", "could not decrypt"],
        ),
        (
            "empty",
            Box::new(|_: &Tree| Vec::new()),
            &["VICTIM", "is empty"],
        ),
        (
            "oversized (beyond systemd's 1 MiB)",
            Box::new(|_: &Tree| vec![b'A'; 1024 * 1024 + 1]),
            &["VICTIM", "larger than 1048576 bytes"],
        ),
        (
            "sealed under another name",
            Box::new(|t: &Tree| t.encrypt(&["--name=OTHER", "--with-key=host"], b"v")),
            &["VICTIM", "OTHER", "credloader rotate VICTIM"],
        ),
        (
            "expired",
            Box::new(|t: &Tree| {
                t.encrypt(
                    &[
                        "--name=VICTIM",
                        "--with-key=host",
                        "--timestamp=@1000000000",
                        "--not-after=@1000000100",
                    ],
                    b"v",
                )
            }),
            &["VICTIM", "not-after time has passed"],
        ),
        (
            "not a credential at all",
            Box::new(|_: &Tree| b"BINANCE_API_KEY=plaintext-by-mistake\n".to_vec()),
            &["VICTIM", "could not decrypt"],
        ),
        (
            "a value with a NUL byte",
            Box::new(|t: &Tree| t.encrypt(&["--name=VICTIM", "--with-key=host"], b"a\0b")),
            &["VICTIM", "NUL byte", "credloader rotate VICTIM"],
        ),
        (
            "a value that is not UTF-8",
            Box::new(|t: &Tree| t.encrypt(&["--name=VICTIM", "--with-key=host"], b"\xff\xfe")),
            &["VICTIM", "not valid UTF-8"],
        ),
        (
            "a value too long for an environment variable",
            Box::new(|t: &Tree| {
                t.encrypt(
                    &["--name=VICTIM", "--with-key=host"],
                    &vec![b'x'; 200 * 1024],
                )
            }),
            &["VICTIM", "E2BIG"],
        ),
    ];
    for (case, mangle, words) in cases {
        let t = two_services();
        t.credloader(&["apply"]).ok();
        let before = t.read("/run/credloader/victim.env");
        let bytes = mangle(&t);
        t.write(CRED, &bytes, 0o600);
        t.seal("BYSTANDER", b"bystander-value-rotated");
        let r = t.credloader(&["apply"]);
        assert_eq!(r.code, 1, "{case}: {r:#?}");
        for w in words {
            // A suggested command carries --root, as for any image.
            let w = match w.strip_prefix("credloader ") {
                Some(args) => t.cmd(args),
                None => w.to_string(),
            };
            assert!(r.all().contains(&w), "{case}: message lacks {w:?}: {r:#?}");
        }
        // The last good file stays; the neighbour gets its new value.
        assert_eq!(t.read("/run/credloader/victim.env"), before, "{case}");
        assert!(
            t.read_string("/run/credloader/bystander.env")
                .contains("bystander-value-rotated"),
            "{case}"
        );
        assert!(!r.all().contains("victim-value-123456"), "{case}");
        // `check` reports it too, without a value.
        let c = t.credloader(&["check"]);
        assert_ne!(c.code, 0, "{case}: check: {c:#?}");
    }
}

// ---- broken configurations through the command line -----------------------

#[test]
fn every_kind_of_config_mistake_is_named_with_file_and_line_and_only_its_service_fails() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown key",
            "[services.a]\nunit = \"a.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\ncredentails = [\"K\"]\n",
            &["bad.toml:5:", "credentails"],
        ),
        (
            "not TOML",
            "[services.a\nunit = \n",
            &["bad.toml:1:"],
        ),
        (
            "missing unit",
            "[services.a]\nuser = \"qt\"\ncredentials = [\"K\"]\n",
            &["bad.toml", "unit"],
        ),
        (
            "invalid variable name",
            "[services.a]\nunit = \"a.service\"\nuser = \"qt\"\nenv = { \"A-B\" = \"K\" }\n",
            &["bad.toml:4", "A-B", "not a valid environment variable name"],
        ),
        (
            "invalid credential name",
            "[services.a]\nunit = \"a.service\"\nuser = \"qt\"\ncredentials = [\"A/B\"]\n",
            &["bad.toml:4", "A/B"],
        ),
        (
            "relative env file",
            "[services.a]\nunit = \"a.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\nenv_file = \"x.env\"\n",
            &["bad.toml:5", "env_file"],
        ),
        (
            "uncarriable static value",
            "[services.a]\nunit = \"a.service\"\nuser = \"qt\"\nstatic = { A = \"x\\u0000y\" }\n",
            &["bad.toml:4", "NUL"],
        ),
        (
            "the same service twice",
            "[services.good]\nunit = \"g2.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\n",
            &["bad.toml:1", "already defined at", "good.toml:1"],
        ),
        (
            "two services sharing an env file",
            "[services.b]\nunit = \"b.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\nenv_file = \"/run/credloader/good.env\"\n",
            &["good.toml:1", "also used by service `b`"],
        ),
        (
            "a service with nothing to deliver",
            "[services.a]\nunit = \"a.service\"\nuser = \"qt\"\n",
            &["bad.toml:1", "no credentials"],
        ),
        (
            "a bad [loader] stops the whole run",
            "[loader]\nkeep_generations = 0\n[services.a]\nunit = \"a.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\n",
            &["bad.toml:2", "keep_generations"],
        ),
        (
            "bad health timeout",
            "[services.a]\nunit = \"a.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\nhealth_timeout_sec = 0\n",
            &["bad.toml:5", "health_timeout_sec"],
        ),
    ];
    for (case, text, words) in cases {
        let t = Tree::new();
        t.config("good.toml", &common::service("good", "qt", &["K"]));
        t.seal("K", b"good-value-1");
        t.config("bad.toml", text);
        let r = t.credloader(&["apply"]);
        for w in *words {
            assert!(r.all().contains(w), "{case}: lacks {w:?}: {r:#?}");
        }
        match r.code {
            // The configuration as a whole is unusable: nothing is written.
            2 => {
                assert!(
                    !t.exists("/run/credloader"),
                    "{case}: something was written"
                );
                assert!(!t.exists("/var/lib/credloader/state.json"), "{case}");
            }
            // Only the broken service is refused; the good one is served.
            // (A duplicate or a shared env file involves `good` as well.)
            1 if words.iter().any(|w| w.contains("good.toml")) => {}
            1 => {
                assert!(
                    t.read_string("/run/credloader/good.env")
                        .contains("good-value-1"),
                    "{case}"
                );
                assert!(!t.exists("/run/credloader/a.env"), "{case}");
                assert!(!t.exists("/run/credloader/b.env"), "{case}");
            }
            _ => panic!("{case}: exit {}: {r:#?}", r.code),
        }
        // `check` flags every mistake too, also one that breaks every
        // service (a duplicate or a shared env file takes `good` down too).
        let r = t.credloader(&["check"]);
        assert!([1, 2].contains(&r.code), "{case}: check: {r:#?}");
    }
}

#[test]
fn values_that_cannot_be_carried_are_refused_at_seal_time() {
    let t = Tree::new();
    t.config("a.toml", &common::service("a", "qt", &["K"]));
    for (value, word) in [
        (&b"a\0b"[..], "NUL"),
        (&b"\xc3\x28"[..], "UTF-8"),
        ("\u{feff}x".as_bytes(), "U+FEFF"),
        (&[b'x'; 200 * 1024][..], "E2BIG"),
        (&b""[..], "empty"),
    ] {
        let r = t.credloader_with_stdin(&["seal", "K"], Some(value));
        assert_eq!(r.code, 2, "{word}: {r:#?}");
        assert!(r.stderr.contains(word), "{word}: {r:#?}");
        assert!(!t.exists("/etc/quantum/creds/K.cred"), "{word}");
    }
}

// ---- names that did not pass validation, in reports and logs --------------

/// No line of `r`'s output (stdout and stderr) is forged by a name: none
/// starts with `FORGED`, none carries an escape sequence or a bidi control
/// raw; and the name was shown, escaped (`\nFORGED`).
#[track_caller]
fn assert_escaped(what: &str, r: &common::Run) {
    let all = r.all();
    for line in all.lines() {
        assert!(!line.starts_with("FORGED"), "{what}: a forged line: {all}");
    }
    assert!(
        !all.contains('\u{1b}') && !all.contains('\u{202e}') && !all.contains('\r'),
        "{what}: raw control characters: {all:?}"
    );
    assert!(
        all.contains("\\nFORGED"),
        "{what}: the name was not shown: {all}"
    );
}

#[test]
fn names_with_control_characters_are_escaped_in_reports_and_logs() {
    // A name in the state file (a service that left the configuration).
    let t = Tree::new();
    t.config("gone.toml", &common::service("gone", "qt", &["K"]));
    t.seal("K", b"k-value-123456789");
    t.credloader(&["apply"]).ok();
    let state = t.read_string("/var/lib/credloader/state.json");
    let state = state.replace("\"gone\":", "\"gone\\nFORGED \\u001b[2J\\r\":");
    t.write("/var/lib/credloader/state.json", state.as_bytes(), 0o600);
    std::fs::remove_file(t.path("/etc/quantum/credloader.d/gone.toml")).unwrap();
    t.config("a.toml", &common::service("a", "qt", &["K"]));
    let r = t.credloader(&["apply", "-vv"]);
    assert_escaped("apply removing a state name", &r);

    // A config file name, a service key, a unit, a credential file name.
    let t = Tree::new();
    t.config("a.toml", &common::service("a", "qt", &["K"]));
    t.seal("K", b"k-value-123456789");
    t.config(
        "e\nFORGED \u{1b}[31m.toml",
        "[services.e]\nunit = \"e.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\nBAD = 1\n",
    );
    t.config(
        "b.toml",
        "[services.\"b\\nFORGED \\u202e\"]\nunit = \"b.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\n",
    );
    t.config(
        "d.toml",
        "[services.d]\nunit = \"d\\nFORGED\\r.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\n",
    );
    let sealed = t.read("/etc/quantum/creds/K.cred");
    t.write("/etc/quantum/creds/X\nFORGED\u{1b}[0m.cred", &sealed, 0o600);
    for args in [
        &["apply", "-vv"][..],
        &["check"],
        &["list"],
        &["status"],
        &["status", "--service", "nope\nFORGED"],
    ] {
        assert_escaped(&args.join(" "), &t.credloader(args));
    }
    // Machine output carries the true names.
    let list = t.credloader(&["list", "--json"]).json();
    assert!(list["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "X\nFORGED\u{1b}[0m"));
}
