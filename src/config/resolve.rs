//! From the parsed files to the validated configuration, layer by layer:
//! `[loader]`, the services, the credential options, `[sources]`. Each
//! problem keeps its origin and is filed where it belongs: with the
//! service it breaks, with `sync`, or (in `[loader]`) as fatal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::errors::{ConfigError, Problem};
use super::load::Refused;
use super::loader::{merge_loader, EnvPlaces};
use super::model::{Config, Delivery, Service};
use super::parse::{self, Fragments};
use super::raw::Parsed;
use super::service::resolve_service;
use super::{credentials, sources};

/// [`super::from_texts_with_main`] with the drop-ins refused as unsafe:
/// each is a broken file, like one that does not parse.
pub fn build(
    files: Vec<(PathBuf, String)>,
    refused: Vec<Refused>,
    main: &Path,
) -> Result<Config, ConfigError> {
    let Fragments { parsed, mut found } = parse::fragments(files, refused, main)?;
    let mut problems = Vec::new();
    let (loader, declared_at) = merge_loader(&parsed, main, &mut problems);
    let places = EnvPlaces::new(&loader, main, declared_at);
    let mut services = resolve_services(&parsed, &places, &mut found.broken);
    break_clashes(&mut services, &mut found.broken);
    let credentials = credentials::resolve(&parsed, &mut services, &mut found);
    let sources = sources::resolve(&parsed, &mut found.sources_problems);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid { problems });
    }
    Ok(Config {
        main: main.to_path_buf(),
        broken: found.broken,
        orphan_problems: found.orphan_problems,
        place_problems: places.problems(),
        loader,
        services,
        sources,
        sources_problems: found.sources_problems,
        credentials,
        files: parsed.into_iter().map(|p| p.path).collect(),
    })
}

/// Every `[services.NAME]`, each defined in one file only. A service with
/// a mistake goes to `broken` instead, and so does one defined twice (or
/// named by a broken file): which definition is meant is unknown.
fn resolve_services(
    parsed: &[Parsed],
    places: &EnvPlaces,
    broken: &mut BTreeMap<String, Vec<Problem>>,
) -> BTreeMap<String, Service> {
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    for file in parsed {
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
            match resolve_service(file, name, raw, places, &mut own) {
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
    services
}

/// What two services may not share: an env file, a unit (each would
/// overwrite the other's drop-in). Both services of a clash are broken.
fn break_clashes(
    services: &mut BTreeMap<String, Service>,
    broken: &mut BTreeMap<String, Vec<Problem>>,
) {
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
}
