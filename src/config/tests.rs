use super::load::Refused;
use super::model::OnChange;
use super::*;

fn cfg(files: &[(&str, &str)]) -> Result<Config, ConfigError> {
    from_texts(
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect(),
    )
}

const GOOD: &str = r#"
[loader]
env_dir = "/run/x"

[services.position-monitor]
unit = "quantum-position-monitor.service"
user = "qt"
credentials = ["BINANCE_API_KEY", "BINANCE_API_SECRET"]
env = { EXCHANGE_KEY = "BINANCE_API_KEY" }
static = { EXIT_BRAIN_V35_ENABLED = "true" }
"#;

#[test]
fn loads_a_full_service() {
    let c = cfg(&[("/m.toml", GOOD)]).unwrap();
    let s = &c.services["position-monitor"];
    assert_eq!(s.env_file, PathBuf::from("/run/x/position-monitor.env"));
    assert_eq!(
        s.credentials(),
        vec!["BINANCE_API_KEY", "BINANCE_API_SECRET"]
    );
    let names: Vec<_> = s.vars.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "BINANCE_API_KEY",
            "BINANCE_API_SECRET",
            "EXCHANGE_KEY",
            "EXIT_BRAIN_V35_ENABLED"
        ]
    );
    assert_eq!(s.origin.line, 5);
    assert!(s.required);
    assert_eq!(s.on_change, OnChange::TryRestart);
    assert_eq!(c.consumers("BINANCE_API_KEY").count(), 1);
}

#[test]
fn unknown_keys_name_file_and_line() {
    let e = cfg(&[(
        "/m.toml",
        "[services.a]\nunit = \"a.service\"\nuser = \"qt\"\ncredentails = [\"X\"]\n",
    )])
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("/m.toml:4: column 1: unknown field `credentails`"),
        "{e}"
    );
    assert!(!e.contains("line 4"), "the line is said once: {e}");
}

/// The problems of one broken service, as one text.
fn broken(c: &Config, name: &str) -> String {
    c.broken[name]
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn keep_newline_is_a_credential_option_its_consumers_carry() {
    let svc = |n: &str, c: &str| {
        format!("[services.{n}]\nunit = \"{n}.service\"\nuser = \"qt\"\ncredentials = [\"{c}\"]\n")
    };
    let c = cfg(&[
        (
            "/m.toml",
            "[credentials.PEM]\nkeep_newline = true\n[credentials.K]\n",
        ),
        (
            "/d/a.toml",
            &format!("{}{}", svc("a", "PEM"), svc("b", "K")),
        ),
    ])
    .unwrap();
    assert!(c.is_clean(), "{:?}", c.broken);
    assert!(c.keeps_newline("PEM") && !c.keeps_newline("K") && !c.keeps_newline("X"));
    assert_eq!(
        c.services["a"].keep_newline.iter().collect::<Vec<_>>(),
        ["PEM"]
    );
    assert!(c.services["b"].keep_newline.is_empty());

    // An unknown key is an error at its line, like everywhere else.
    let e = cfg(&[("/m.toml", "[credentials.K]\nkeep_newlines = true\n")]).unwrap_err();
    assert!(e.to_string().starts_with("/m.toml:2:"), "{e}");
    assert!(e.to_string().contains("keep_newlines"), "{e}");

    // Defined twice: its consumers are broken (served from their last
    // good definition), naming both places; an invalid name is reported.
    let c = cfg(&[
        (
            "/m.toml",
            "[credentials.K]\nkeep_newline = true\n[credentials.\"a/b\"]\n",
        ),
        (
            "/d/a.toml",
            &format!("{}[credentials.K]\nkeep_newline = false\n", svc("b", "K")),
        ),
    ])
    .unwrap();
    assert!(!c.services.contains_key("b"));
    let b = broken(&c, "b");
    assert!(
        b.starts_with("/d/a.toml:5:") && b.contains("already defined at /m.toml:1"),
        "{b}"
    );
    assert_eq!(c.orphan_problems.len(), 1, "{:?}", c.orphan_problems);
    assert!(c.orphan_problems[0].to_string().starts_with("/m.toml:3:"));

    // A drop-in that does not parse may have set K's option: K's
    // consumers in other files are served from their last good definition.
    let c = cfg(&[
        ("/m.toml", "# main\n"),
        ("/d/a.toml", &svc("a", "K")),
        ("/d/b.toml", &svc("b", "L")),
        ("/d/opts.toml", "[credentials.K]\nkeep_newline = tru\n"),
    ])
    .unwrap();
    assert!(c.broken.contains_key("a") && c.services.contains_key("b"));
    assert!(
        broken(&c, "a").starts_with("/d/opts.toml:2:"),
        "{}",
        broken(&c, "a")
    );
    assert!(c.orphan_problems.is_empty());
    // Likewise one that is TOML but has a mistake (an unknown key).
    let c = cfg(&[
        ("/m.toml", "# main\n"),
        ("/d/a.toml", &svc("a", "K")),
        ("/d/b.toml", &svc("b", "L")),
        ("/d/opts.toml", "[credentials.K]\nkeep_newlines = true\n"),
    ])
    .unwrap();
    assert!(c.broken.contains_key("a") && c.services.contains_key("b"));
    assert!(c.orphan_problems.is_empty());
}

#[test]
fn duplicate_services_across_files() {
    let a = "[services.a]\nunit = \"a.service\"\nuser = \"qt\"\ncredentials = [\"X\"]\n";
    let c = cfg(&[("/d/10-a.toml", a), ("/d/20-a.toml", a)]).unwrap();
    let e = broken(&c, "a");
    assert!(
        e.contains("/d/20-a.toml:1") && e.contains("already defined at /d/10-a.toml:1"),
        "{e}"
    );
    assert!(
        !c.services.contains_key("a"),
        "which definition is meant is unknown"
    );
}

#[test]
fn a_broken_dropin_breaks_only_its_own_services() {
    let good = "[services.good]\nunit = \"good.service\"\nuser = \"qt\"\ncredentials = [\"X\"]\n";
    let typo = "[services.bad]\nunit = \"bad.service\"\nuser = \"qt\"\ncredentials = [\"X\"\n";
    let c = cfg(&[
        ("/m.toml", "# main\n"),
        ("/d/good.toml", good),
        ("/d/bad.toml", typo),
    ])
    .unwrap();
    assert!(c.services.contains_key("good"));
    assert!(
        broken(&c, "bad").starts_with("/d/bad.toml:"),
        "{}",
        broken(&c, "bad")
    );
    assert!(!c.is_clean());
    // The main file not parsing is fatal: the loader's paths are unknown.
    let e = cfg(&[("/m.toml", "[loader\n"), ("/d/good.toml", good)]).unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
}

#[test]
fn a_dropin_that_does_not_parse_and_may_set_loader_keys_stops_the_run() {
    let good = "[services.good]\nunit = \"good.service\"\nuser = \"qt\"\ncredentials = [\"X\"]\n";
    for text in [
        "[loader]\ncreds_dir = \"/srv/creds\n",
        "[loader]\ncreds_dri = \"/srv/creds\"\n",
        "loader.env_dir = \"/run/x\"\n[services.bad\n",
        "[ \"loader\" ]\nstate_dir = 1 2\n",
        "[loader\n",
    ] {
        let e = cfg(&[
            ("/m.toml", "# main\n"),
            ("/d/good.toml", good),
            ("/d/l.toml", text),
        ])
        .unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{text}: {e}");
        let e = e.to_string();
        assert!(e.starts_with("/d/l.toml:") && e.contains("[loader]"), "{e}");
    }
    // Neither a comment nor a key that only begins with `loader` counts.
    for text in ["# [loader]\n[services.bad\n", "loaders = [\n"] {
        let c = cfg(&[("/m.toml", "# main\n"), ("/d/l.toml", text)]).unwrap();
        assert!(!c.is_clean(), "{text}");
    }
}

#[test]
fn a_refused_file_is_broken_like_one_that_does_not_parse() {
    let good = "[services.good]\nunit = \"good.service\"\nuser = \"qt\"\ncredentials = [\"X\"]\n";
    let refused = |name: &str, text: Option<&str>| Refused {
        path: PathBuf::from(format!("/d/{name}")),
        problem: "mode 0666 lets others change which user gets which secret".into(),
        text: text.map(str::to_string),
    };
    let files = || {
        vec![
            (PathBuf::from("/m.toml"), "# main\n".to_string()),
            ("/d/good.toml".into(), good.to_string()),
        ]
    };
    // Readable: the services it names are broken, nothing of it is used.
    let evil = good.replace("good", "evil").replace("\"qt\"", "\"root\"");
    let text = format!("{evil}[services.other]\nunit = 1\n");
    let c = build(
        files(),
        vec![refused("e.toml", Some(&text))],
        Path::new("/m.toml"),
    )
    .unwrap();
    assert_eq!(c.broken.keys().collect::<Vec<_>>(), ["evil", "other"]);
    assert!(c.broken["evil"][0]
        .to_string()
        .starts_with("/d/e.toml:1: refusing this file: mode 0666"));
    assert!(c.services.contains_key("good") && !c.services.contains_key("evil"));
    assert!(c.orphan_problems.is_empty() && !c.is_clean());
    // It names a service a trusted file defines: which one is meant is unknown.
    let c = build(
        files(),
        vec![refused("g.toml", Some(good))],
        Path::new("/m.toml"),
    )
    .unwrap();
    assert!(!c.services.contains_key("good") && c.broken.contains_key("good"));
    // Unreadable: what it defines is unknown.
    let c = build(files(), vec![refused("s.toml", None)], Path::new("/m.toml")).unwrap();
    assert!(c.broken.is_empty() && c.orphan_problems.len() == 1);
    // It may set [loader]: nothing is done.
    for text in [
        "[loader]\nenv_dir = \"/run/x\"\n",
        "loader.env_dir = \"/run/x\"\n[services.x\n",
    ] {
        let e = build(
            files(),
            vec![refused("l.toml", Some(text))],
            Path::new("/m.toml"),
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Unsafe { .. }), "{e}");
        assert!(e.to_string().contains("[loader]"), "{e}");
    }
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = "[services.a]\nunit = \"a\"\nuser = \"qt\"\ncredentials = [\"BAD-NAME\", \"X\", \"X\"]\nstatic = { Y = \"a\\u0000b\" }\n";
    let c = cfg(&[("/m.toml", text)]).unwrap();
    let problems = &c.broken["a"];
    let lines: Vec<usize> = problems.iter().map(|p| p.origin.line).collect();
    assert_eq!(lines, [2, 4, 4, 5], "{problems:#?}");
    assert!(problems[1].message.contains("BAD-NAME"));
}

#[test]
fn loader_overrides_merge_in_order() {
    let c = cfg(&[
        ("/m.toml", "[loader]\ncreds_dir = \"/a\"\nstate_dir = \"/s\"\n"),
        ("/d/1.toml", "[loader]\ncreds_dir = \"/b\"\n[services.x]\nunit = \"x.service\"\nuser = \"u\"\ncredentials = [\"C\"]\n"),
    ])
    .unwrap();
    assert_eq!(c.loader.creds_dir, PathBuf::from("/b"));
    assert_eq!(c.loader.state_dir, PathBuf::from("/s"));
}

#[test]
fn credential_delivery_refuses_env_only_keys() {
    let text = "[services.x]\nunit = \"x.service\"\nuser = \"u\"\ncredentials = [\"C\"]\nstatic = { A = \"1\" }\ndelivery = \"credential\"\n";
    let e = broken(&cfg(&[("/m.toml", text)]).unwrap(), "x");
    assert!(
        e.contains("/m.toml:6") && e.contains("delivery = \"env\""),
        "{e}"
    );
}

#[test]
fn shared_env_file_is_refused() {
    let text = "[loader]\nenv_file_dirs = [\"/e\"]\n[services.x]\nunit = \"x.service\"\nuser = \"u\"\ncredentials = [\"C\"]\nenv_file = \"/e/f.env\"\n[services.y]\nunit = \"y.service\"\nuser = \"u\"\ncredentials = [\"C\"]\nenv_file = \"/e/f.env\"\n";
    let c = cfg(&[("/m.toml", text)]).unwrap();
    assert!(
        broken(&c, "y").contains("also used by service `x`"),
        "{}",
        broken(&c, "y")
    );
    assert!(broken(&c, "x").contains("also used by service `y`"));
    let units = text
        .replace("y.service", "x.service")
        .replace("/e/f.env\"\n[", "/e/g.env\"\n[");
    let c = cfg(&[("/m.toml", &units)]).unwrap();
    assert!(
        broken(&c, "y").contains("unit x.service is also used"),
        "{}",
        broken(&c, "y")
    );
}

const AWS_PROD: &str = r#"
[sources]
environment = "prod"

[sources.aws]
region = "eu-west-1"
secret_id = "mm-bot/{environment}/{name}"

[sources.aws.credentials.BINANCE_API_KEY]
secret_id = "mm-bot/prod/binance"
json_key = "api_key"
version_stage = "AWSPREVIOUS"
"#;

#[test]
fn aws_source_templates_and_overrides() {
    let c = cfg(&[("/m.toml", GOOD), ("/d/s.toml", AWS_PROD)]).unwrap();
    let s = c.sources.as_ref().unwrap();
    assert_eq!(s.environment, Environment::Prod);
    assert_eq!(s.attempts, 4);
    let aws = s.aws.as_ref().unwrap();
    let l = aws.locate(s.environment, "BINANCE_API_SECRET");
    assert_eq!(l.secret_id, "mm-bot/prod/BINANCE_API_SECRET");
    assert_eq!(l.json_key, None);
    let l = aws.locate(s.environment, "BINANCE_API_KEY");
    assert_eq!(l.secret_id, "mm-bot/prod/binance");
    assert_eq!(l.json_key.as_deref(), Some("api_key"));
    assert_eq!(l.version_stage.as_deref(), Some("AWSPREVIOUS"));
    let synced: Vec<_> = c.synced_credentials().into_iter().collect();
    assert_eq!(synced, ["BINANCE_API_KEY", "BINANCE_API_SECRET"]);
}

#[test]
fn manage_listed_syncs_only_the_listed_credentials() {
    let text = AWS_PROD.replace(
        "environment = \"prod\"",
        "environment = \"prod\"\nmanage = \"listed\"",
    );
    let c = cfg(&[("/m.toml", GOOD), ("/d/s.toml", &text)]).unwrap();
    let synced: Vec<_> = c.synced_credentials().into_iter().collect();
    assert_eq!(synced, ["BINANCE_API_KEY"]);
}

#[test]
fn prod_refuses_non_prod_ids_and_the_file_source_with_lines() {
    let text = "[sources]\nenvironment = \"prod\"\n[sources.aws]\nregion = \"r\"\nsecret_id = \"mm-bot/dev/{name}\"\n[sources.aws.credentials.X]\nsecret_id = \"mm-bot/shadow/x\"\n[sources.aws.credentials.Y]\nsecret_id = \"y\"\n";
    let c = cfg(&[("/m.toml", text)]).unwrap();
    let Some(ConfigError::Invalid { problems }) = c.sources_error() else {
        panic!()
    };
    let got: Vec<(usize, bool)> = problems
        .iter()
        .map(|p| (p.origin.line, p.message.contains("prod")))
        .collect();
    assert_eq!(got, [(5, true), (7, true), (9, true)], "{problems:#?}");
    assert!(
        problems[0].message.contains("dev environment"),
        "{problems:#?}"
    );

    let text = "[sources]\nenvironment = \"prod\"\n\n[sources.file]\npath = \"/etc/x.json\"\n";
    let e = sources_err(&[("/m.toml", text)]);
    assert!(e.contains("/m.toml:4") && e.contains("refused"), "{e}");
    // The same file source is fine in dev; dev refuses prod ids.
    let dev = text.replace("prod", "dev");
    assert!(cfg(&[("/m.toml", &dev)])
        .unwrap()
        .sources
        .unwrap()
        .file
        .is_some());
    let text = "[sources]\nenvironment = \"dev\"\n[sources.aws]\nregion = \"r\"\nsecret_id = \"mm-bot/prod/{name}\"\n";
    let e = sources_err(&[("/m.toml", text)]);
    assert!(
        e.contains("/m.toml:5") && e.contains("prod environment"),
        "{e}"
    );
}

/// The configuration loads; its `[sources]` mistakes, as `sync` says them.
fn sources_err(files: &[(&str, &str)]) -> String {
    let c = cfg(files).unwrap_or_else(|e| panic!("a [sources] mistake is not fatal: {e}"));
    assert!(c.sources.is_none());
    c.sources_error().expect("sync refuses").to_string()
}

#[test]
fn a_sources_mistake_stops_sync_only_and_every_service_loads() {
    let svc = "[services.a]\nunit = \"a.service\"\nuser = \"qt\"\ncredentials = [\"X\"]\n";
    for (sources, line, want) in [
        // A value out of range, in a drop-in of its own.
        ("[sources]\nenvironment = \"dev\"\ntimeout_sec = 0\n[sources.file]\npath = \"/x.json\"\n", 3, "timeout_sec"),
        // An unknown key and a bad enum value: the file does not even
        // deserialize, but only its [sources] is wrong.
        ("[sources]\nenvironment = \"dev\"\ntimeout = 5\n[sources.file]\npath = \"/x.json\"\n", 3, "timeout"),
        ("[sources]\nenvironment = \"production\"\n[sources.file]\npath = \"/x.json\"\n", 2, "production"),
    ] {
        for files in [
            vec![("/m.toml", svc.to_string()), ("/d/sync.toml", sources.to_string())],
            // In the main file, beside a service.
            vec![("/m.toml", format!("{svc}{sources}"))],
        ] {
            let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
            let c = cfg(&files).unwrap_or_else(|e| panic!("{sources}: {e}"));
            assert!(c.services.contains_key("a"), "{sources}");
            assert!(c.is_clean() && c.sources.is_none(), "{sources}");
            let p = &c.sources_problems[0];
            let file = files.last().unwrap().0;
            assert_eq!(p.origin.file, PathBuf::from(file), "{p}");
            assert!(p.message.contains(want), "{p}");
            let svc_lines = if file == "/m.toml" { 4 } else { 0 };
            assert_eq!(p.origin.line, line + svc_lines, "{p}");
            let w = c.sources_warnings().join("\n");
            assert!(w.contains("credloader sync") && w.contains(&p.to_string()), "{w}");
        }
    }
    // A drop-in that does not parse at all names its [sources] for sync,
    // and is still a broken file for everyone else.
    let c = cfg(&[
        ("/m.toml", svc),
        ("/d/s.toml", "[sources\nenvironment = \"dev\"\n"),
    ])
    .unwrap();
    assert!(c.services.contains_key("a") && !c.is_clean());
    assert!(c
        .sources_error()
        .unwrap()
        .to_string()
        .contains("/d/s.toml:1"));
    assert!(
        c.sources_warnings().is_empty(),
        "reported once, as a broken file"
    );
}

#[test]
fn sources_mistakes_are_reported() {
    for (text, want) in [
        ("[sources]\n[sources.aws]\nregion = \"r\"\nsecret_id = \"a/{name}\"\n", "environment is required"),
        ("[sources]\nenvironment = \"production\"\n", "production"),
        ("[sources]\nenvironment = \"dev\"\n", "no source"),
        ("[sources]\nenvironment = \"dev\"\n[sources.aws]\nregion = \"r\"\nsecret_id = \"a/b\"\n", "must contain {name}"),
        ("[sources]\nenvironment = \"dev\"\n[sources.aws]\nregion = \"r\"\nsecret_id = \"a/{env}/{name}\"\n", "only {environment} and {name}"),
        ("[sources]\nenvironment = \"dev\"\n[sources.aws]\nregion = \"r\"\nsecret_id = \"a/{name}\"\nendpoint_url = \"localhost:1\"\n", "endpoint_url"),
        ("[sources]\nenvironment = \"dev\"\n[sources.aws]\nregion = \"r\"\nsecret_id = \"a/{name}\"\nkey_id = \"AKIA\"\n", "key_id"),
    ] {
        let e = sources_err(&[("/m.toml", text)]);
        assert!(e.contains(want) && e.contains("/m.toml"), "{want}: {e}");
    }
    let a = "[sources]\nenvironment = \"dev\"\n[sources.file]\npath = \"/x.json\"\n";
    let e = sources_err(&[("/m.toml", a), ("/d/1.toml", a)]);
    assert!(
        e.contains("/d/1.toml:1") && e.contains("already defined at /m.toml:1"),
        "{e}"
    ); // A second [sources] is a mistake even while the first has mistakes
       // of its own: both are said at once, not one after the other's fix.
    let bad = "[sources]\nenvironment = \"dev\"\n";
    let e = sources_err(&[("/m.toml", bad), ("/d/1.toml", a)]);
    assert!(e.contains("no source"), "{e}");
    assert!(
        e.contains("/d/1.toml:1") && e.contains("already defined at /m.toml:1"),
        "{e}"
    );
}
