//! Stage 1: load the configuration.
//!
//! The main file (default `/etc/quantum/credloader.toml`) and then every
//! `*.toml` in the drop-in directory beside it (`credloader.d/`) in lexical
//! order, zincati-style: `[loader]` keys from later files override earlier
//! ones, and each `[services.NAME]` may be defined once across all files.
//! Every mistake found is reported together, each with its file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::names;

mod errors;
mod load;
mod loader;
mod model;
mod parse;
mod raw;
mod service;
mod sources;

use loader::{merge_loader, EnvPlaces};
use parse::{Findings, Fragments};
use raw::Parsed;
use service::resolve_service;

pub use errors::{ConfigError, Origin, Problem};
pub use load::{dropin_dir_for, Refused, DEFAULT_CONFIG};
pub use model::{
    fill_template, AwsCredential, AwsLocation, AwsSource, Config, CredentialOptions, Delivery,
    Environment, FileSource, Loader, Manage, OnChange, Service, Source, Sources, Var,
};

/// Loads `main` and its drop-in directory. A missing main file is fine when
/// drop-ins exist, unless `main_must_exist` (an explicit `--config`).
pub fn load(main: &Path, main_must_exist: bool) -> Result<Config, ConfigError> {
    let read = load::read(main, main_must_exist)?;
    build(read.files, read.refused, &read.main)
}

/// Builds a configuration from `(path, contents)` pairs in precedence order.
pub fn from_texts(files: Vec<(PathBuf, String)>) -> Result<Config, ConfigError> {
    let main = files.first().map(|f| f.0.clone()).unwrap_or_default();
    from_texts_with_main(files, &main)
}

/// [`from_texts`] naming the main file: a syntax error there, or any
/// problem in `[loader]`, is fatal (the paths every service depends on are
/// unknown). A problem in a service, or a drop-in that does not parse, only
/// breaks the services it concerns. A problem in `[sources]` only stops
/// `sync` ([`Config::sources_problems`]).
pub fn from_texts_with_main(
    files: Vec<(PathBuf, String)>,
    main: &Path,
) -> Result<Config, ConfigError> {
    build(files, Vec::new(), main)
}

/// [`from_texts_with_main`] with the drop-ins refused as unsafe: each is a
/// broken file, like one that does not parse.
pub fn build(
    files: Vec<(PathBuf, String)>,
    refused: Vec<Refused>,
    main: &Path,
) -> Result<Config, ConfigError> {
    let Fragments { parsed, found } = parse::fragments(files, refused, main)?;
    let Findings {
        mut broken,
        mut orphan_problems,
        mut sources_problems,
        unknown_options,
    } = found;
    let mut problems = Vec::new();
    let (loader, declared_at) = merge_loader(&parsed, main, &mut problems);
    let places = EnvPlaces::new(&loader, main, declared_at);
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    for file in &parsed {
        for (name, raw) in &file.raw.services {
            let origin = file.origin(name);
            if let Some(first) = services
                .get(name.get_ref())
                .map(|s| s.origin.clone())
                .or_else(|| {
                    broken
                        .get(name.get_ref())
                        .and_then(|p| p.first())
                        .map(|p| p.origin.clone())
                })
            {
                broken.entry(name.get_ref().clone()).or_default().push(Problem {
                    origin,
                    message: format!(
                        "service `{}` is already defined at {first}; each service may be defined in one file only",
                        name.get_ref(),
                    ),
                });
                services.remove(name.get_ref());
                continue;
            }
            let mut own = Vec::new();
            match resolve_service(file, name, raw, &places, &mut own) {
                Some(service) if own.is_empty() => {
                    services.insert(service.name.clone(), service);
                }
                _ => broken
                    .entry(name.get_ref().clone())
                    .or_default()
                    .extend(own),
            }
        }
    }
    // What two services may not share: an env file, a unit (each would
    // overwrite the other's drop-in).
    let mut claimed: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut clashes: Vec<(String, Problem)> = Vec::new();
    for service in services.values() {
        let mut keys = vec![("unit".to_string(), service.unit.clone())];
        if service.delivery == Delivery::Env {
            keys.push((
                "env_file".to_string(),
                service.env_file.display().to_string(),
            ));
        }
        for key in keys {
            if let Some(other) = claimed.insert(key.clone(), service.name.clone()) {
                for (who, with) in [(&service.name, &other), (&other, &service.name)] {
                    clashes.push((
                        who.clone(),
                        Problem {
                            origin: services[who].origin.clone(),
                            message: format!(
                                "{} {} is also used by service `{with}`; give each service its own",
                                key.0, key.1
                            ),
                        },
                    ));
                }
            }
        }
    }
    for (name, problem) in clashes {
        services.remove(&name);
        broken.entry(name).or_default().push(problem);
    }
    let (credentials, option_problems) = resolve_credentials(&parsed);
    for (credential, problem) in option_problems.into_iter().chain(unknown_options) {
        break_consumers(
            &mut services,
            &mut broken,
            &mut orphan_problems,
            &credential,
            problem,
        );
    }
    for service in services.values_mut() {
        service.keep_newline = service
            .credentials()
            .into_iter()
            .filter(|c| credentials.get(*c).is_some_and(|o| o.keep_newline))
            .map(str::to_string)
            .collect();
    }
    let sources = sources::resolve(&parsed, &mut sources_problems);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid { problems });
    }
    Ok(Config {
        main: main.to_path_buf(),
        broken,
        orphan_problems,
        place_problems: places.problems(),
        loader,
        services,
        sources,
        sources_problems,
        credentials,
        files: parsed.into_iter().map(|p| p.path).collect(),
    })
}

/// `[credentials.NAME]` of every file, each defined in one file only.
/// A mistake comes back with the credential it concerns.
fn resolve_credentials(
    parsed: &[Parsed],
) -> (BTreeMap<String, CredentialOptions>, Vec<(String, Problem)>) {
    let mut options: BTreeMap<String, CredentialOptions> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in parsed {
        for (name, raw) in &file.raw.credentials {
            let origin = file.origin(name);
            let cname = name.get_ref();
            let message = if let Err(m) = names::credential(cname) {
                format!("credentials.{}: {m}", cname.escape_default())
            } else if let Some(first) = options.get(cname) {
                format!(
                    "[credentials.{cname}] is already defined at {}; define it in one file only",
                    first.origin
                )
            } else {
                let keep_newline = raw.keep_newline.as_ref().is_some_and(|k| *k.get_ref());
                options.insert(
                    cname.clone(),
                    CredentialOptions {
                        keep_newline,
                        origin,
                    },
                );
                continue;
            };
            problems.push((cname.clone(), Problem { origin, message }));
        }
    }
    (options, problems)
}

/// A mistake about credential `credential`'s options breaks the services
/// that use it (served from their last good definition until it is
/// fixed); one no service uses concerns nobody in particular.
fn break_consumers(
    services: &mut BTreeMap<String, Service>,
    broken: &mut BTreeMap<String, Vec<Problem>>,
    orphan_problems: &mut Vec<Problem>,
    credential: &str,
    problem: Problem,
) {
    let users: Vec<String> = services
        .values()
        .filter(|s| s.credentials().contains(&credential))
        .map(|s| s.name.clone())
        .collect();
    if users.is_empty() {
        orphan_problems.push(problem);
        return;
    }
    for name in users {
        services.remove(&name);
        broken.entry(name).or_default().push(problem.clone());
    }
}

#[cfg(test)]
mod tests;
