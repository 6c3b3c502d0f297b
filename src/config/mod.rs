//! Stage 1: load the configuration.
//!
//! The main file (default `/etc/quantum/credloader.toml`) and then every
//! `*.toml` in the drop-in directory beside it (`credloader.d/`) in lexical
//! order, zincati-style: `[loader]` keys from later files override earlier
//! ones, and each `[services.NAME]` may be defined once across all files.
//! Every mistake found is reported together, each with its file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::{envfile, names};

mod errors;
mod load;
mod loader;
mod model;
mod parse;
mod raw;
mod sources;

use loader::{merge_loader, EnvPlaces};
use parse::{Findings, Fragments};
use raw::{Parsed, RawService};

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

/// The env file of service `sname` (defined at `origin`), and where it is
/// set (`None`: the default); what is wrong with it goes to `bad`. Its
/// place is checked only for a service that gets one.
fn resolve_env_file(
    file: &Parsed,
    sname: &str,
    raw: &RawService,
    places: &EnvPlaces,
    origin: &Origin,
    bad: &mut dyn FnMut(Origin, String),
) -> (PathBuf, Option<Origin>) {
    let by_file = raw
        .delivery
        .as_ref()
        .is_none_or(|d| *d.get_ref() == Delivery::Env);
    let (path, at) = match &raw.env_file {
        None => (places.env_dir.join(format!("{sname}.env")), None),
        Some(p) => {
            let (path, at) = (PathBuf::from(p.get_ref()), file.origin(p));
            if let Err(m) = names::managed_path(p.get_ref()) {
                bad(at.clone(), format!("services.{sname}.env_file: {m}"));
                return (path, Some(at));
            }
            (path, Some(at))
        }
    };
    if let Some(p) = places
        .check(sname, &path, at.as_ref(), origin)
        .filter(|_| by_file)
    {
        bad(p.origin, p.message);
    }
    (path, at)
}

fn resolve_service(
    file: &Parsed,
    name: &Spanned<String>,
    raw: &RawService,
    places: &EnvPlaces,
    problems: &mut Vec<Problem>,
) -> Option<Service> {
    let before = problems.len();
    let mut bad = |at: Origin, message: String| {
        problems.push(Problem {
            origin: at,
            message,
        })
    };
    let origin = file.origin(name);
    let sname = name.get_ref();

    if let Err(m) = names::service(sname) {
        bad(origin.clone(), m);
    }
    if let Err(m) = names::unit(raw.unit.get_ref()) {
        bad(
            file.origin(&raw.unit),
            format!("services.{sname}.unit: {m}"),
        );
    }
    if let Err(m) = names::account(raw.user.get_ref()) {
        bad(
            file.origin(&raw.user),
            format!("services.{sname}.user: {m}"),
        );
    }
    if let Some(g) = &raw.group {
        if let Err(m) = names::account(g.get_ref()) {
            bad(file.origin(g), format!("services.{sname}.group: {m}"));
        }
    }

    let delivery = raw
        .delivery
        .as_ref()
        .map(|d| *d.get_ref())
        .unwrap_or_default();
    let mut vars: BTreeMap<String, (Source, Origin)> = BTreeMap::new();
    let mut add = |var: &Spanned<String>, source: Source, bad: &mut dyn FnMut(Origin, String)| {
        let at = file.origin(var);
        if !envfile::valid_name(var.get_ref()) {
            bad(
                at,
                format!(
                    "services.{sname}: `{}` is not a valid environment variable name (use [A-Za-z_][A-Za-z0-9_]*)",
                    var.get_ref().escape_default()
                ),
            );
            return;
        }
        if let Some((_, first)) = vars.get(var.get_ref()) {
            bad(
                at,
                format!(
                    "services.{sname}: variable {} is already set at line {}; set each variable once",
                    var.get_ref(),
                    first.line
                ),
            );
            return;
        }
        vars.insert(var.get_ref().clone(), (source, at));
    };

    for cred in &raw.credentials {
        if let Err(m) = names::credential(cred.get_ref()) {
            bad(
                file.origin(cred),
                format!("services.{sname}.credentials: {m}"),
            );
            continue;
        }
        add(cred, Source::Credential(cred.get_ref().clone()), &mut bad);
    }
    for (var, cred) in &raw.env {
        if let Err(m) = names::credential(cred.get_ref()) {
            bad(
                file.origin(cred),
                format!("services.{sname}.env.{}: {m}", var.get_ref()),
            );
            continue;
        }
        add(var, Source::Credential(cred.get_ref().clone()), &mut bad);
    }
    for (var, value) in &raw.statics {
        if let Err(e) = envfile::check_value(var.get_ref(), value.get_ref().as_bytes()) {
            bad(
                file.origin(value),
                format!("services.{sname}.static.{}: the value {e}", var.get_ref()),
            );
            continue;
        }
        add(var, Source::Static(value.get_ref().clone()), &mut bad);
    }
    if vars.is_empty() {
        bad(
            origin.clone(),
            format!("services.{sname}: no credentials, env or static variables; give it `credentials = [\"NAME\"]`"),
        );
    }

    let (env_file, env_file_at) = resolve_env_file(file, sname, raw, places, &origin, &mut bad);

    if delivery == Delivery::Credential {
        let at = raw
            .delivery
            .as_ref()
            .map(|d| file.origin(d))
            .unwrap_or(origin.clone());
        if !raw.env.is_empty() || !raw.statics.is_empty() {
            bad(
                at.clone(),
                format!(
                    "services.{sname}: delivery = \"credential\" hands over credentials under their own names; \
                     `env` and `static` need delivery = \"env\""
                ),
            );
        }
        if raw.env_file.is_some() {
            bad(at, format!("services.{sname}: env_file has no meaning with delivery = \"credential\"; remove it"));
        }
    }

    if let Some(check) = &raw.health_check {
        if check.get_ref().is_empty() || !check.get_ref()[0].starts_with('/') {
            bad(
                file.origin(check),
                format!("services.{sname}.health_check must be an argv list whose first item is an absolute path"),
            );
        }
    }
    let health_timeout = match &raw.health_timeout_sec {
        Some(t) if *t.get_ref() == 0 || *t.get_ref() > 3600 => {
            bad(
                file.origin(t),
                format!("services.{sname}.health_timeout_sec must be 1..3600"),
            );
            Duration::from_secs(30)
        }
        Some(t) => Duration::from_secs(*t.get_ref()),
        None => Duration::from_secs(30),
    };

    if problems.len() > before {
        return None;
    }
    Some(Service {
        name: sname.clone(),
        unit: raw.unit.get_ref().clone(),
        user: raw.user.get_ref().clone(),
        group: raw.group.as_ref().map(|g| g.get_ref().clone()),
        vars: vars
            .into_iter()
            .map(|(name, (source, _))| Var { name, source })
            .collect(),
        env_file,
        env_file_at,
        delivery,
        required: raw.required,
        on_change: raw.on_change,
        health_check: raw.health_check.as_ref().map(|c| c.get_ref().clone()),
        health_timeout,
        keep_newline: BTreeSet::new(),
        origin,
    })
}

#[cfg(test)]
mod tests;
