//! `[credentials.NAME]`: options of single credentials, whichever service
//! uses them. A mistake in them breaks the services that use the
//! credential, not the whole configuration.

use std::collections::BTreeMap;

use crate::names;

use super::errors::Problem;
use super::model::{CredentialOptions, Service};
use super::parse::Findings;
use super::raw::Parsed;

/// The credential options of every file. A mistake in them, or options
/// a file that cannot be used may have set (the unknown options of
/// `found`, used up here), breaks the services that use that credential;
/// every other service carries its credentials that keep a newline.
pub(super) fn resolve(
    parsed: &[Parsed],
    services: &mut BTreeMap<String, Service>,
    found: &mut Findings,
) -> BTreeMap<String, CredentialOptions> {
    let (credentials, option_problems) = resolve_credentials(parsed);
    let unknown_options = std::mem::take(&mut found.unknown_options);
    for (credential, problem) in option_problems.into_iter().chain(unknown_options) {
        break_consumers(services, found, &credential, problem);
    }
    for service in services.values_mut() {
        service.keep_newline = service
            .credentials()
            .into_iter()
            .filter(|c| credentials.get(*c).is_some_and(|o| o.keep_newline))
            .map(str::to_string)
            .collect();
    }
    credentials
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
    found: &mut Findings,
    credential: &str,
    problem: Problem,
) {
    let users: Vec<String> = services
        .values()
        .filter(|s| s.credentials().contains(&credential))
        .map(|s| s.name.clone())
        .collect();
    if users.is_empty() {
        found.orphan_problems.push(problem);
        return;
    }
    for name in users {
        services.remove(&name);
        found.broken.entry(name).or_default().push(problem.clone());
    }
}
