//! The properties both the cargo-fuzz targets (fuzz/fuzz_targets/*.rs) and
//! the bounded stable run in `make test` (tests/hardening_inputs.rs) check.
//! Each takes arbitrary bytes, so libFuzzer and a seeded generator can feed
//! the same function.
#![allow(dead_code)]

use credloader::config::{self, ConfigError};
use credloader::envfile;

/// The config loader never panics; what it accepts is valid, what it
/// refuses names a file and a line that exist.
pub fn config_loader(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Split into a main file and a drop-in at the first form feed, so that
    // cross-file mistakes (duplicates, shared env files) are reachable.
    let files: Vec<(std::path::PathBuf, String)> = text
        .splitn(2, '\u{c}')
        .enumerate()
        .map(|(i, t)| (format!("/f{i}.toml").into(), t.to_string()))
        .collect();
    let lines: Vec<usize> = files
        .iter()
        .map(|(_, t)| t.lines().count().max(1))
        .collect();
    let check_problem = |p: &config::Problem| {
        let i = files
            .iter()
            .position(|(f, _)| *f == p.origin.file)
            .expect("problem names one of the files");
        assert!(
            p.origin.line >= 1 && p.origin.line <= lines[i] + 1,
            "line {} out of range: {p}",
            p.origin.line
        );
        assert!(!p.message.is_empty());
    };
    match config::from_texts(files.clone()) {
        Ok(c) => {
            // A broken service is refused as a whole and named with where.
            for p in c.problems() {
                check_problem(p);
            }
            for name in c.broken.keys() {
                assert!(
                    !c.services.contains_key(name),
                    "{name} both broken and served"
                );
            }
            let mut env_files = std::collections::BTreeSet::new();
            for s in c.services.values() {
                assert!(!s.vars.is_empty(), "service {} without variables", s.name);
                for v in &s.vars {
                    assert!(envfile::valid_name(&v.name), "bad variable {:?}", v.name);
                    if let config::Source::Static(value) = &v.source {
                        envfile::check_value(&v.name, value.as_bytes())
                            .expect("an accepted static value is carriable");
                    }
                }
                if s.delivery == config::Delivery::Env {
                    assert!(env_files.insert(s.env_file.clone()), "shared env file");
                    let places = c.loader.places(std::path::Path::new("/f0.toml"));
                    assert_eq!(places.check_file(&s.env_file), Ok(()), "env file place");
                }
                let _ = credloader::dropin::render(s, &c.loader);
            }
        }
        Err(ConfigError::Invalid { problems }) => {
            assert!(!problems.is_empty());
            for p in &problems {
                check_problem(p);
            }
        }
        Err(ConfigError::Syntax {
            path,
            line,
            message,
        }) => {
            let (_, text) = files
                .iter()
                .find(|(f, _)| *f == path)
                .expect("a given file");
            assert!(
                line >= 1 && line <= text.matches('\n').count() + 1,
                "line {line}"
            );
            assert!(!message.is_empty());
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

/// Splits fuzz input into variables: a name byte-run, then a value, NUL-
/// separated pairs; names are forced valid, values are taken as they come.
pub fn vars_from(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    for value in data.split(|&b| b == 0xff) {
        let name = format!("V{i}_{}", value.len() % 7);
        out.push((name, value.to_vec()));
        i += 1;
        if i > 64 {
            break;
        }
    }
    out
}

/// Whatever the renderer accepts (after `check_value`), a parser that
/// follows systemd's env-file.c gives back byte for byte; what it refuses
/// really cannot be carried.
pub fn env_round_trip(data: &[u8]) {
    let vars = vars_from(data);
    let mut kept = Vec::new();
    for (name, value) in &vars {
        match envfile::check_value(name, value) {
            Ok(()) => kept.push((name.as_str(), value.as_slice())),
            Err(e) => {
                let uncarriable = value.contains(&0)
                    || std::str::from_utf8(value).is_err()
                    || std::str::from_utf8(value).is_ok_and(|s| s.contains('\u{feff}'))
                    || name.len() + 1 + value.len() >= envfile::MAX_ASSIGNMENT;
                assert!(uncarriable, "refused a carriable value: {e}");
            }
        }
    }
    let rendered = envfile::render(kept.iter().copied());
    let (parsed, issues) = envfile::parse(rendered.expose());
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(parsed.len(), kept.len());
    for ((name, value), a) in kept.iter().zip(&parsed) {
        assert_eq!(&a.key, name);
        assert!(a.value.expose() == *value, "{name} did not round-trip");
    }
}

/// The env-file parser never panics on any input and only returns valid names.
pub fn env_parse(data: &[u8]) {
    let (assignments, _) = envfile::parse(data);
    for a in assignments {
        assert!(envfile::valid_name(&a.key));
        assert!(std::str::from_utf8(a.value.expose()).is_ok());
    }
}
