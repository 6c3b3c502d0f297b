//! Each file parsed into its raw form, or, when it cannot be used (it does
//! not parse, or it was refused as unsafe), recorded as broken from what
//! its text shows: the services it names are broken, and a file that may
//! set `[loader]` stops the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;

use crate::names;

use super::errors::{ConfigError, Origin, Problem};
use super::load::{Refused, Texts};
use super::raw::{Parsed, RawFile};

/// The problems found so far, each where it belongs (see [`super::Config`]).
#[derive(Default)]
pub(super) struct Findings {
    /// Per service, why its definition cannot be used.
    pub broken: BTreeMap<String, Vec<Problem>>,
    /// Problems that no service name could be attached to.
    pub orphan_problems: Vec<Problem>,
    /// Mistakes in `[sources]`.
    pub sources_problems: Vec<Problem>,
    /// `[credentials.NAME]` of files that cannot be used: unknown options.
    pub unknown_options: Vec<(String, Problem)>,
}

/// The files that parsed, in precedence order, and what the others broke.
pub(super) struct Fragments {
    pub parsed: Vec<Parsed>,
    pub found: Findings,
}

/// Parses `files` (in precedence order) and records the drop-ins refused
/// as unsafe: each is a broken file, like one that does not parse. The
/// main file not parsing, or a broken file that may set `[loader]`, is
/// fatal.
pub(super) fn fragments(
    files: Texts,
    refused: Vec<Refused>,
    main: &Path,
) -> Result<Fragments, ConfigError> {
    let mut out = Fragments {
        parsed: Vec::with_capacity(files.len()),
        found: Findings::default(),
    };
    for r in refused {
        let glimpse = r.glimpse()?;
        glimpse.record(r.problem(), &mut out.found);
    }
    for (path, text) in files {
        out.parse(path, text, main)?;
    }
    Ok(out)
}

impl Fragments {
    /// One file: parsed whole, parsed but for a mistake in its `[sources]`,
    /// or broken.
    fn parse(&mut self, path: PathBuf, text: String, main: &Path) -> Result<(), ConfigError> {
        let e = match toml::from_str::<RawFile>(&text) {
            Ok(raw) => {
                self.parsed.push(Parsed { path, text, raw });
                return Ok(());
            }
            Err(e) => e,
        };
        let problem = Problem {
            origin: Origin {
                file: path.clone(),
                line: syntax_line(&text, &e),
            },
            message: syntax_message(&e),
        };
        // Everything but `[sources]` reads: the mistake is in `[sources]`
        // (a bad value, an unknown key), and the rest of the file counts.
        if let Ok(lenient) = toml::from_str::<RawFile<IgnoredAny>>(&text) {
            self.found.sources_problems.push(problem);
            let raw = RawFile {
                loader: lenient.loader,
                services: lenient.services,
                sources: None,
                credentials: lenient.credentials,
            };
            self.parsed.push(Parsed { path, text, raw });
            return Ok(());
        }
        let glimpse = unparsable(path, &text, &e, main)?;
        glimpse.record(problem, &mut self.found);
        Ok(())
    }
}

/// What a file that does not parse may hold, or why nothing can be done:
/// it is the main file, or a drop-in that may set `[loader]`.
fn unparsable(
    path: PathBuf,
    text: &str,
    e: &toml::de::Error,
    main: &Path,
) -> Result<Glimpse, ConfigError> {
    if path == main {
        return Err(ConfigError::Syntax {
            line: syntax_line(text, e),
            path,
            message: syntax_message(e),
        });
    }
    let glimpse = Glimpse::of(text);
    // A drop-in may set `[loader]` keys. Were it skipped, the run would
    // silently fall back to the default creds, env, drop-in and state
    // dirs: decrypt from, write secrets to and record state in places
    // nobody meant. So a drop-in that does not parse and may hold
    // `[loader]` stops the run, like the main file (the safest choice:
    // nothing is written, the last good files stay).
    if glimpse.loader {
        return Err(ConfigError::Syntax {
            line: syntax_line(text, e),
            path,
            message: format!(
                "{}; this file may set [loader] paths, so where credentials, env files \
                 and state are is unknown: nothing is done until it parses",
                syntax_message(e)
            ),
        });
    }
    Ok(glimpse)
}

impl Refused {
    /// What its text shows. A file that may set `[loader]` stops the run:
    /// were it skipped, the run would fall back to the default paths (as
    /// for a drop-in that does not parse, see [`unparsable`]).
    fn glimpse(&self) -> Result<Glimpse, ConfigError> {
        let glimpse = self.text.as_deref().map(Glimpse::of).unwrap_or_default();
        if glimpse.loader {
            return Err(ConfigError::Unsafe {
                path: self.path.clone(),
                problem: format!(
                    "{}; this file may set [loader] paths, so where credentials, env files and \
                     state are is unknown: nothing is done until it is fixed",
                    self.problem
                ),
            });
        }
        Ok(glimpse)
    }

    fn problem(&self) -> Problem {
        Problem {
            origin: Origin {
                file: self.path.clone(),
                line: 1,
            },
            // The origin names the file already.
            message: format!("refusing this file: {}", self.problem),
        }
    }
}

/// The line a TOML error points at.
fn syntax_line(text: &str, e: &toml::de::Error) -> usize {
    e.span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(1)
}

/// What a file that cannot be used (it does not parse, or it is refused as
/// unsafe) may hold, as far as its text shows: the services it names, and
/// whether it may set `[loader]` or `[sources]`. Nothing in it is used.
#[derive(Debug, Default)]
struct Glimpse {
    services: Vec<String>,
    /// The credentials it has `[credentials.NAME]` options for.
    credentials: Vec<String>,
    loader: bool,
    sources: bool,
}

impl Glimpse {
    /// Read as a plain TOML table when it parses as one (a file refused
    /// for its owner, or one with an unknown key), else line by line.
    fn of(text: &str) -> Glimpse {
        match toml::from_str::<toml::Table>(text) {
            Ok(t) => Glimpse {
                services: table_names(&t, "services", names::service),
                credentials: table_names(&t, "credentials", names::credential),
                loader: t.contains_key("loader"),
                sources: t.contains_key("sources"),
            },
            Err(_) => Glimpse {
                services: headers(text, "services", names::service),
                credentials: headers(text, "credentials", names::credential),
                loader: may_hold(text, "loader"),
                sources: may_hold(text, "sources"),
            },
        }
    }

    /// Records the file's `problem`: each service it names is broken (and
    /// served from its last good definition); a file that names none goes
    /// to the problems no service could be attached to, so that every
    /// service it may define is (see [`super::Config::orphan_problems`]).
    /// `sync` is told why its `[sources]` is missing, if the file may hold
    /// it. Its `[credentials.NAME]` options are unknown: each goes to the
    /// unknown options, so that the services using NAME are served from
    /// their last good definition, which has them.
    fn record(&self, problem: Problem, found: &mut Findings) {
        if self.sources {
            found.sources_problems.push(problem.clone());
        }
        for name in &self.services {
            found
                .broken
                .entry(name.clone())
                .or_default()
                .push(problem.clone());
        }
        for name in &self.credentials {
            found.unknown_options.push((name.clone(), problem.clone()));
        }
        if self.services.is_empty() && self.credentials.is_empty() {
            found.orphan_problems.push(problem);
        }
    }
}

/// A name check of [`crate::names`].
type NameCheck = fn(&str) -> Result<(), crate::names::NameError>;

/// The keys of table `key` of `t` that are valid names.
fn table_names(t: &toml::Table, key: &str, valid: NameCheck) -> Vec<String> {
    t.get(key)
        .and_then(toml::Value::as_table)
        .map(|s| s.keys().filter(|n| valid(n).is_ok()).cloned().collect())
        .unwrap_or_default()
}

/// The `[KEY.NAME]` headers (`[services.NAME]`, `[credentials.NAME]`) of a
/// file that does not parse, found line by line, so the services it meant
/// to define can be named as broken.
fn headers(text: &str, key: &str, valid: NameCheck) -> Vec<String> {
    let prefix = format!("[{key}.");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .filter_map(|rest| rest.split(']').next())
        .map(|n| n.trim().trim_matches('"').to_string())
        .filter(|n| valid(n).is_ok())
        .collect()
}

/// Whether a file that does not parse may hold the top-level table `key`
/// (`[key]`, `[key.x]`, `key.x = ...`, `key = { ... }`, quoted or not),
/// judged line by line. It errs towards yes.
fn may_hold(text: &str, key: &str) -> bool {
    text.lines().any(|line| {
        let l = line.trim_start().trim_start_matches('[').trim_start();
        let l = l.trim_start_matches(['"', '\'']);
        l.strip_prefix(key).is_some_and(|rest| {
            let rest = rest.trim_start_matches(['"', '\'']).trim_start();
            rest.is_empty() || rest.starts_with(['.', '=', ']'])
        })
    })
}

/// toml's message, with the column it found, as one compact text (the
/// line is the problem's own, `FILE:LINE:`, so it is not said twice).
fn syntax_message(e: &toml::de::Error) -> String {
    let text = e.to_string();
    let mut lines = text.lines();
    let first = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("TOML parse error at ");
    let first = match first.strip_prefix("line ").and_then(|r| r.split_once(", ")) {
        Some((_, column)) => column,
        None => first,
    };
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('|') && !l.contains('^'));
    match last {
        Some(l) if !text.lines().next().unwrap_or_default().contains(l) => {
            format!("{first}: {}", l.trim())
        }
        _ => first.to_string(),
    }
}
