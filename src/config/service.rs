//! One `[services.NAME]`, validated: every mistake in it is reported with
//! its origin, and a service with any is not served from this definition.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::{envfile, names};

use super::errors::{Origin, Problem};
use super::loader::EnvPlaces;
use super::model::{Delivery, Service, Source, Var};
use super::raw::{Parsed, RawService};

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

pub(super) fn resolve_service(
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
