//! `[sources]`, validated: where `sync` gets values from. A mistake here
//! concerns `sync` alone, so it is kept apart from the services' problems.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::names;

use super::errors::{Origin, Problem};
use super::model::{fill_template, AwsCredential, AwsSource, Environment, FileSource, Sources};
use super::raw::{Parsed, RawSources};

/// The `[sources]` of `parsed`, defined in one file only; `None` when it
/// is missing or when any mistake was found in it (`problems` holds them,
/// and those of files that may have held it).
pub(super) fn resolve(parsed: &[Parsed], problems: &mut Vec<Problem>) -> Option<Sources> {
    let mut sources: Option<Sources> = None;
    for file in parsed {
        let Some(raw) = &file.raw.sources else {
            continue;
        };
        if let Some(first) = &sources {
            problems.push(Problem {
                origin: file.origin(raw),
                message: format!(
                    "[sources] is already defined at {}; define it in one file only",
                    first.origin
                ),
            });
            continue;
        }
        sources = resolve_sources(file, raw, problems);
    }
    if !problems.is_empty() {
        return None;
    }
    sources
}

/// Validates `[sources]`: one source, an environment, and environment
/// separation (a prod host refuses non-prod secret ids and the file source).
fn resolve_sources(
    file: &Parsed,
    raw: &Spanned<RawSources>,
    problems: &mut Vec<Problem>,
) -> Option<Sources> {
    let before = problems.len();
    let origin = file.origin(raw);
    let mut bad = |at: Origin, message: String| {
        problems.push(Problem {
            origin: at,
            message,
        })
    };
    let r = raw.get_ref();
    let environment = match &r.environment {
        Some(e) => *e.get_ref(),
        None => {
            bad(
                origin.clone(),
                "sources.environment is required: one of \"dev\", \"shadow\", \"soak\", \"prod\""
                    .into(),
            );
            Environment::Prod
        }
    };
    let attempts = match &r.attempts {
        Some(a) if !(1..=10).contains(a.get_ref()) => {
            bad(file.origin(a), "sources.attempts must be 1..10".into());
            1
        }
        Some(a) => *a.get_ref(),
        None => 4,
    };
    let timeout = match &r.timeout_sec {
        Some(t) if !(1..=300).contains(t.get_ref()) => {
            bad(file.origin(t), "sources.timeout_sec must be 1..300".into());
            Duration::from_secs(10)
        }
        Some(t) => Duration::from_secs(*t.get_ref()),
        None => Duration::from_secs(10),
    };
    if r.aws.is_some() && r.file.is_some() {
        bad(
            origin.clone(),
            "[sources] has both [sources.aws] and [sources.file]; configure one source".into(),
        );
    }
    if r.aws.is_none() && r.file.is_none() {
        bad(
            origin.clone(),
            "[sources] configures no source: add [sources.aws] (or [sources.file] for development)"
                .into(),
        );
    }
    let check_name = |n: &Spanned<String>, what: &str, bad: &mut dyn FnMut(Origin, String)| {
        if let Err(m) = names::credential(n.get_ref()) {
            bad(file.origin(n), format!("{what}: {m}"));
        }
    };
    let check_id =
        |t: &Spanned<String>, what: &str, name: &str, bad: &mut dyn FnMut(Origin, String)| {
            let text = t.get_ref();
            let rest = text.replace("{environment}", "").replace("{name}", "");
            if rest.contains('{') || rest.contains('}') {
                bad(
                    file.origin(t),
                    format!("{what}: `{text}`: only {{environment}} and {{name}} can be filled in"),
                );
            } else if text.trim().is_empty() {
                bad(file.origin(t), format!("{what} is empty"));
            } else if let Err(m) = environment.allows(&fill_template(text, environment, name)) {
                bad(file.origin(t), format!("{what}: {m}"));
            }
        };
    let non_empty =
        |v: &Option<Spanned<String>>, what: &str, bad: &mut dyn FnMut(Origin, String)| match v {
            Some(s) if s.get_ref().trim().is_empty() => {
                bad(file.origin(s), format!("{what} is empty"));
                None
            }
            Some(s) => Some(s.get_ref().clone()),
            None => None,
        };

    let aws = r.aws.as_ref().map(|a| {
        let a = a.get_ref();
        if a.region.get_ref().trim().is_empty() {
            bad(file.origin(&a.region), "sources.aws.region is empty".into());
        }
        if let Some(u) = &a.endpoint_url {
            if !(u.get_ref().starts_with("https://") || u.get_ref().starts_with("http://")) {
                bad(
                    file.origin(u),
                    "sources.aws.endpoint_url must be an http:// or https:// URL".into(),
                );
            }
        }
        if !a.secret_id.get_ref().contains("{name}") {
            bad(
                file.origin(&a.secret_id),
                "sources.aws.secret_id must contain {name} (e.g. \"mm-bot/{environment}/{name}\"); \
                 point single credentials elsewhere under [sources.aws.credentials.NAME]"
                    .into(),
            );
        } else {
            check_id(&a.secret_id, "sources.aws.secret_id", "NAME", &mut bad);
        }
        let mut credentials = BTreeMap::new();
        for (name, o) in &a.credentials {
            let what = format!("sources.aws.credentials.{}", name.get_ref());
            check_name(name, &what, &mut bad);
            if let Some(id) = &o.secret_id {
                check_id(id, &format!("{what}.secret_id"), name.get_ref(), &mut bad);
            }
            credentials.insert(
                name.get_ref().clone(),
                AwsCredential {
                    secret_id: o.secret_id.as_ref().map(|s| s.get_ref().clone()),
                    json_key: non_empty(&o.json_key, &format!("{what}.json_key"), &mut bad),
                    version_stage: non_empty(
                        &o.version_stage,
                        &format!("{what}.version_stage"),
                        &mut bad,
                    ),
                },
            );
        }
        AwsSource {
            region: a.region.get_ref().clone(),
            endpoint_url: a.endpoint_url.as_ref().map(|u| u.get_ref().clone()),
            secret_id: a.secret_id.get_ref().clone(),
            credentials,
        }
    });

    let file_source = r.file.as_ref().map(|f| {
        if environment == Environment::Prod {
            bad(
                file.origin(f),
                "[sources.file] is a development source and is refused with environment = \"prod\"; \
                 use [sources.aws]"
                    .into(),
            );
        }
        let f = f.get_ref();
        if !f.path.get_ref().starts_with('/') {
            bad(
                file.origin(&f.path),
                "sources.file.path must be an absolute path".into(),
            );
        }
        let mut credentials = BTreeMap::new();
        for (name, o) in &f.credentials {
            let what = format!("sources.file.credentials.{}", name.get_ref());
            check_name(name, &what, &mut bad);
            credentials.insert(
                name.get_ref().clone(),
                non_empty(&o.key, &format!("{what}.key"), &mut bad),
            );
        }
        FileSource {
            path: PathBuf::from(f.path.get_ref()),
            credentials,
        }
    });

    if problems.len() > before {
        return None;
    }
    Some(Sources {
        environment,
        manage: r.manage,
        attempts,
        timeout,
        aws,
        file: file_source,
        origin,
    })
}
