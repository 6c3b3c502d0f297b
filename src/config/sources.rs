//! `[sources]`, validated: where `sync` gets values from. A mistake here
//! concerns `sync` alone, so it is kept apart from the services' problems.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::names;

use super::errors::{Origin, Problem};
use super::model::{fill_template, AwsCredential, AwsSource, Environment, FileSource, Sources};
use super::raw::{Parsed, RawAws, RawAwsCredential, RawFileSource, RawSources};

/// The `[sources]` of `parsed`, defined in one file only; `None` when it
/// is missing or when any mistake was found in it (`problems` holds them,
/// and those of files that may have held it).
pub(super) fn resolve(parsed: &[Parsed], problems: &mut Vec<Problem>) -> Option<Sources> {
    let mut sources: Option<Sources> = None;
    // The first definition, whether or not it resolved: a second one is a
    // mistake even while the first has mistakes of its own.
    let mut first: Option<Origin> = None;
    for file in parsed {
        let Some(raw) = &file.raw.sources else {
            continue;
        };
        if let Some(first) = &first {
            problems.push(Problem {
                origin: file.origin(raw),
                message: format!(
                    "[sources] is already defined at {first}; define it in one file only"
                ),
            });
            continue;
        }
        first = Some(file.origin(raw));
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
    let r = raw.get_ref();
    let mut check = Check::new(file, r, &origin, problems);
    let environment = check.environment;
    let attempts = check.attempts(r);
    let timeout = check.timeout(r);
    check.one_source(r, &origin);
    let aws = r.aws.as_ref().map(|a| check.aws(a.get_ref()));
    let file_source = r.file.as_ref().map(|f| check.file_source(f));
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

/// One `[sources]` being checked: its file, the environment secret ids
/// are checked against, and where its mistakes go.
struct Check<'a> {
    file: &'a Parsed,
    environment: Environment,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Check<'a> {
    /// Starts on `r`, defined at `origin`. Its environment is required; a
    /// missing one is reported, and ids are then checked as for prod.
    fn new(
        file: &'a Parsed,
        r: &RawSources,
        origin: &Origin,
        problems: &'a mut Vec<Problem>,
    ) -> Check<'a> {
        let mut check = Check {
            file,
            environment: Environment::Prod,
            problems,
        };
        match &r.environment {
            Some(e) => check.environment = *e.get_ref(),
            None => check.bad(
                origin.clone(),
                "sources.environment is required: one of \"dev\", \"shadow\", \"soak\", \"prod\""
                    .into(),
            ),
        }
        check
    }

    fn bad(&mut self, at: Origin, message: String) {
        self.problems.push(Problem {
            origin: at,
            message,
        })
    }

    /// `attempts`: 1..10, 4 by default.
    fn attempts(&mut self, r: &RawSources) -> u32 {
        match &r.attempts {
            Some(a) if !(1..=10).contains(a.get_ref()) => {
                self.bad(self.file.origin(a), "sources.attempts must be 1..10".into());
                1
            }
            Some(a) => *a.get_ref(),
            None => 4,
        }
    }

    /// `timeout_sec`: 1..300, 10 by default.
    fn timeout(&mut self, r: &RawSources) -> Duration {
        match &r.timeout_sec {
            Some(t) if !(1..=300).contains(t.get_ref()) => {
                self.bad(
                    self.file.origin(t),
                    "sources.timeout_sec must be 1..300".into(),
                );
                Duration::from_secs(10)
            }
            Some(t) => Duration::from_secs(*t.get_ref()),
            None => Duration::from_secs(10),
        }
    }

    /// Exactly one of `[sources.aws]` and `[sources.file]`.
    fn one_source(&mut self, r: &RawSources, origin: &Origin) {
        if r.aws.is_some() && r.file.is_some() {
            self.bad(
                origin.clone(),
                "[sources] has both [sources.aws] and [sources.file]; configure one source".into(),
            );
        }
        if r.aws.is_none() && r.file.is_none() {
            self.bad(
                origin.clone(),
                "[sources] configures no source: add [sources.aws] (or [sources.file] for development)"
                    .into(),
            );
        }
    }

    /// A credential name, under `what`.
    fn name(&mut self, n: &Spanned<String>, what: &str) {
        if let Err(m) = names::credential(n.get_ref()) {
            self.bad(self.file.origin(n), format!("{what}: {m}"));
        }
    }

    /// A secret id template, `what`: only `{environment}` and `{name}` to
    /// fill in, and filled in for credential `name`, an id this host's
    /// environment may read.
    fn id(&mut self, t: &Spanned<String>, what: &str, name: &str) {
        let text = t.get_ref();
        let rest = text.replace("{environment}", "").replace("{name}", "");
        if rest.contains('{') || rest.contains('}') {
            self.bad(
                self.file.origin(t),
                format!("{what}: `{text}`: only {{environment}} and {{name}} can be filled in"),
            );
        } else if text.trim().is_empty() {
            self.bad(self.file.origin(t), format!("{what} is empty"));
        } else if let Err(m) = self
            .environment
            .allows(&fill_template(text, self.environment, name))
        {
            self.bad(self.file.origin(t), format!("{what}: {m}"));
        }
    }

    /// An optional text, `what`, that is not empty when set.
    fn non_empty(&mut self, v: &Option<Spanned<String>>, what: &str) -> Option<String> {
        match v {
            Some(s) if s.get_ref().trim().is_empty() => {
                self.bad(self.file.origin(s), format!("{what} is empty"));
                None
            }
            Some(s) => Some(s.get_ref().clone()),
            None => None,
        }
    }

    /// `[sources.aws]`.
    fn aws(&mut self, a: &RawAws) -> AwsSource {
        if a.region.get_ref().trim().is_empty() {
            self.bad(
                self.file.origin(&a.region),
                "sources.aws.region is empty".into(),
            );
        }
        if let Some(u) = &a.endpoint_url {
            if !(u.get_ref().starts_with("https://") || u.get_ref().starts_with("http://")) {
                self.bad(
                    self.file.origin(u),
                    "sources.aws.endpoint_url must be an http:// or https:// URL".into(),
                );
            }
        }
        if !a.secret_id.get_ref().contains("{name}") {
            self.bad(
                self.file.origin(&a.secret_id),
                "sources.aws.secret_id must contain {name} (e.g. \"mm-bot/{environment}/{name}\"); \
                 point single credentials elsewhere under [sources.aws.credentials.NAME]"
                    .into(),
            );
        } else {
            self.id(&a.secret_id, "sources.aws.secret_id", "NAME");
        }
        let mut credentials = BTreeMap::new();
        for (name, o) in &a.credentials {
            credentials.insert(name.get_ref().clone(), self.aws_credential(name, o));
        }
        AwsSource {
            region: a.region.get_ref().clone(),
            endpoint_url: a.endpoint_url.as_ref().map(|u| u.get_ref().clone()),
            secret_id: a.secret_id.get_ref().clone(),
            credentials,
        }
    }

    /// `[sources.aws.credentials.NAME]`.
    fn aws_credential(&mut self, name: &Spanned<String>, o: &RawAwsCredential) -> AwsCredential {
        let what = format!("sources.aws.credentials.{}", name.get_ref());
        self.name(name, &what);
        if let Some(id) = &o.secret_id {
            self.id(id, &format!("{what}.secret_id"), name.get_ref());
        }
        AwsCredential {
            secret_id: o.secret_id.as_ref().map(|s| s.get_ref().clone()),
            json_key: self.non_empty(&o.json_key, &format!("{what}.json_key")),
            version_stage: self.non_empty(&o.version_stage, &format!("{what}.version_stage")),
        }
    }

    /// `[sources.file]`: for development, so refused on a prod host.
    fn file_source(&mut self, f: &Spanned<RawFileSource>) -> FileSource {
        if self.environment == Environment::Prod {
            self.bad(
                self.file.origin(f),
                "[sources.file] is a development source and is refused with environment = \"prod\"; \
                 use [sources.aws]"
                    .into(),
            );
        }
        let f = f.get_ref();
        if !f.path.get_ref().starts_with('/') {
            self.bad(
                self.file.origin(&f.path),
                "sources.file.path must be an absolute path".into(),
            );
        }
        let mut credentials = BTreeMap::new();
        for (name, o) in &f.credentials {
            let what = format!("sources.file.credentials.{}", name.get_ref());
            self.name(name, &what);
            credentials.insert(
                name.get_ref().clone(),
                self.non_empty(&o.key, &format!("{what}.key")),
            );
        }
        FileSource {
            path: PathBuf::from(f.path.get_ref()),
            credentials,
        }
    }
}
