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

/// Validates `[services.NAME]` `raw` of `file`. Every mistake goes to
/// `problems`, in the order of the keys it concerns; a service with any
/// is `None`.
pub(super) fn resolve_service(
    file: &Parsed,
    name: &Spanned<String>,
    raw: &RawService,
    places: &EnvPlaces,
    problems: &mut Vec<Problem>,
) -> Option<Service> {
    let before = problems.len();
    let origin = file.origin(name);
    let sname = name.get_ref();
    let mut check = Check {
        file,
        sname,
        origin: &origin,
        problems,
    };
    check.names(raw);
    let delivery = raw
        .delivery
        .as_ref()
        .map(|d| *d.get_ref())
        .unwrap_or_default();
    let vars = check.vars(raw);
    let (env_file, env_file_at) = check.env_file(raw, places);
    if delivery == Delivery::Credential {
        check.credential_delivery(raw);
    }
    check.health_check(raw);
    let health_timeout = check.health_timeout(raw);
    if problems.len() > before {
        return None;
    }
    Some(Service {
        name: sname.clone(),
        unit: raw.unit.get_ref().clone(),
        user: raw.user.get_ref().clone(),
        group: raw.group.as_ref().map(|g| g.get_ref().clone()),
        vars,
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

/// One service being checked: its file, its name and where it is
/// defined, and where its mistakes go.
struct Check<'a> {
    file: &'a Parsed,
    sname: &'a str,
    origin: &'a Origin,
    problems: &'a mut Vec<Problem>,
}

/// Its variables so far, by name: where each value comes from, and where
/// the variable is set.
type Vars = BTreeMap<String, (Source, Origin)>;

impl Check<'_> {
    fn bad(&mut self, at: Origin, message: String) {
        self.problems.push(Problem {
            origin: at,
            message,
        })
    }

    /// Its own name, its unit's, its user's and its group's.
    fn names(&mut self, raw: &RawService) {
        let sname = self.sname;
        if let Err(m) = names::service(sname) {
            self.bad(self.origin.clone(), m.to_string());
        }
        if let Err(m) = names::unit(raw.unit.get_ref()) {
            self.bad(
                self.file.origin(&raw.unit),
                format!("services.{sname}.unit: {m}"),
            );
        }
        if let Err(m) = names::account(raw.user.get_ref()) {
            self.bad(
                self.file.origin(&raw.user),
                format!("services.{sname}.user: {m}"),
            );
        }
        if let Some(g) = &raw.group {
            if let Err(m) = names::account(g.get_ref()) {
                self.bad(self.file.origin(g), format!("services.{sname}.group: {m}"));
            }
        }
    }

    /// Its variables, sorted by name: `credentials`, `env` and `static`,
    /// each set once; at least one.
    fn vars(&mut self, raw: &RawService) -> Vec<Var> {
        let sname = self.sname;
        let mut vars = Vars::new();
        for cred in &raw.credentials {
            if let Err(m) = names::credential(cred.get_ref()) {
                self.bad(
                    self.file.origin(cred),
                    format!("services.{sname}.credentials: {m}"),
                );
                continue;
            }
            self.add(&mut vars, cred, Source::Credential(cred.get_ref().clone()));
        }
        for (var, cred) in &raw.env {
            if let Err(m) = names::credential(cred.get_ref()) {
                self.bad(
                    self.file.origin(cred),
                    format!("services.{sname}.env.{}: {m}", var.get_ref()),
                );
                continue;
            }
            self.add(&mut vars, var, Source::Credential(cred.get_ref().clone()));
        }
        for (var, value) in &raw.statics {
            if let Err(e) = envfile::check_value(var.get_ref(), value.get_ref().as_bytes()) {
                self.bad(
                    self.file.origin(value),
                    format!("services.{sname}.static.{}: the value {e}", var.get_ref()),
                );
                continue;
            }
            self.add(&mut vars, var, Source::Static(value.get_ref().clone()));
        }
        if vars.is_empty() {
            self.bad(
                self.origin.clone(),
                format!("services.{sname}: no credentials, env or static variables; give it `credentials = [\"NAME\"]`"),
            );
        }
        vars.into_iter()
            .map(|(name, (source, _))| Var { name, source })
            .collect()
    }

    /// Variable `var` from `source`, unless its name is invalid or taken.
    fn add(&mut self, vars: &mut Vars, var: &Spanned<String>, source: Source) {
        let sname = self.sname;
        let at = self.file.origin(var);
        if !envfile::valid_name(var.get_ref()) {
            self.bad(
                at,
                format!(
                    "services.{sname}: `{}` is not a valid environment variable name (use [A-Za-z_][A-Za-z0-9_]*)",
                    var.get_ref().escape_default()
                ),
            );
            return;
        }
        if let Some((_, first)) = vars.get(var.get_ref()) {
            let message = format!(
                "services.{sname}: variable {} is already set at line {}; set each variable once",
                var.get_ref(),
                first.line
            );
            self.bad(at, message);
            return;
        }
        vars.insert(var.get_ref().clone(), (source, at));
    }

    /// Its env file, and where it is set (`None`: the default). Its place
    /// is checked only for a service that gets one.
    fn env_file(&mut self, raw: &RawService, places: &EnvPlaces) -> (PathBuf, Option<Origin>) {
        let sname = self.sname;
        let by_file = raw
            .delivery
            .as_ref()
            .is_none_or(|d| *d.get_ref() == Delivery::Env);
        let (path, at) = match &raw.env_file {
            None => (places.env_dir.join(format!("{sname}.env")), None),
            Some(p) => {
                let (path, at) = (PathBuf::from(p.get_ref()), self.file.origin(p));
                if let Err(m) = names::managed_path(p.get_ref()) {
                    self.bad(at.clone(), format!("services.{sname}.env_file: {m}"));
                    return (path, Some(at));
                }
                (path, Some(at))
            }
        };
        if let Some(p) = places
            .check(sname, &path, at.as_ref(), self.origin)
            .filter(|_| by_file)
        {
            self.bad(p.origin, p.message);
        }
        (path, at)
    }

    /// With `delivery = "credential"`, none of the keys that only an env
    /// file gives a meaning.
    fn credential_delivery(&mut self, raw: &RawService) {
        let sname = self.sname;
        let at = raw
            .delivery
            .as_ref()
            .map(|d| self.file.origin(d))
            .unwrap_or(self.origin.clone());
        if !raw.env.is_empty() || !raw.statics.is_empty() {
            self.bad(
                at.clone(),
                format!(
                    "services.{sname}: delivery = \"credential\" hands over credentials under their own names; \
                     `env` and `static` need delivery = \"env\""
                ),
            );
        }
        if raw.env_file.is_some() {
            self.bad(at, format!("services.{sname}: env_file has no meaning with delivery = \"credential\"; remove it"));
        }
    }

    /// `health_check`: an argv list that starts with an absolute path.
    fn health_check(&mut self, raw: &RawService) {
        let sname = self.sname;
        if let Some(check) = &raw.health_check {
            if check.get_ref().is_empty() || !check.get_ref()[0].starts_with('/') {
                self.bad(
                    self.file.origin(check),
                    format!("services.{sname}.health_check must be an argv list whose first item is an absolute path"),
                );
            }
        }
    }

    /// `health_timeout_sec`: 1..3600, 30 by default.
    fn health_timeout(&mut self, raw: &RawService) -> Duration {
        let sname = self.sname;
        match &raw.health_timeout_sec {
            Some(t) if *t.get_ref() == 0 || *t.get_ref() > 3600 => {
                self.bad(
                    self.file.origin(t),
                    format!("services.{sname}.health_timeout_sec must be 1..3600"),
                );
                Duration::from_secs(30)
            }
            Some(t) => Duration::from_secs(*t.get_ref()),
            None => Duration::from_secs(30),
        }
    }
}
