//! Findings about the configuration itself: a broken service definition or
//! an untrusted file (apply serves such services from their last good
//! definition, if they have one, but they no longer follow the
//! configuration), places that may not be declared, `[sources]`, and the
//! main file the path unit watches.

use std::path::Path;

use super::{Audit, Findings, Severity};
use crate::escape::ShowPath;

/// Each problem of a service whose own definition is broken.
pub(super) fn broken_services(a: &Audit, f: &mut Findings) {
    for (name, problems) in &a.config.broken {
        let how = if a.served.stored.contains_key(name.as_str()) {
            "; until it is fixed the service is served from its last good definition"
        } else {
            "; it was never applied, so it is not served"
        };
        for p in problems {
            f.add(
                Severity::Error,
                format!("service {name}"),
                format!("{p}{how}"),
                format!("fix {} and run `credloader apply`", p.origin.file.shown()),
            );
        }
    }
}

/// Problems of a file whose services cannot be named.
pub(super) fn orphan_files(a: &Audit, f: &mut Findings) {
    for p in &a.config.orphan_problems {
        f.add(
            Severity::Error,
            p.origin.file.shown().to_string(),
            p.to_string(),
            format!("fix or remove {}", p.origin.file.shown()),
        );
    }
}

/// A file whose services cannot be named may define any service that left
/// the configuration: apply keeps serving those (see `State::fallbacks`).
pub(super) fn unnamed_services(a: &Audit, f: &mut Findings) {
    let (config, served) = (a.config, &a.served);
    let files: Vec<String> = config
        .orphan_problems
        .iter()
        .map(|p| p.origin.file.display().to_string())
        .collect();
    let unnamed = served
        .stored
        .keys()
        .chain(served.unservable.keys())
        .filter(|n| !config.broken.contains_key(**n));
    for name in unnamed {
        f.add(
            Severity::Error,
            format!("service {name}"),
            format!(
                "no file that loads defines it, but {} cannot be used and may; {}",
                files.join(", "),
                match served.stored.contains_key(name) {
                    true => "until it is fixed the service is served from its last good definition",
                    false => "it was never applied, so it is not served",
                }
            ),
            format!("fix {} and run `credloader apply`", files.join(", ")),
        );
    }
}

/// `env_file_dirs` entries that may not be declared (see `envplace`).
pub(super) fn undeclarable_places(a: &Audit, f: &mut Findings) {
    for p in &a.config.place_problems {
        f.add(
            Severity::Error,
            p.origin.file.display().to_string(),
            p.to_string(),
            format!(
                "remove that entry at {} and declare a directory that holds only env files \
                 (see docs/configuration.md)",
                p.origin
            ),
        );
    }
}

/// `[sources]` is read by `sync` alone: it refuses to run, nothing else stops.
pub(super) fn sources(a: &Audit, f: &mut Findings) {
    for p in a.config.sources_only_problems() {
        f.add(
            Severity::Error,
            p.origin.file.shown().to_string(),
            format!(
                "{p}; `credloader sync` refuses to run until it is fixed (apply is not affected)"
            ),
            format!(
                "fix [sources] at {} (see docs/aws.md), then check again",
                p.origin
            ),
        );
    }
}

/// credloader.path watches the main file; without it systemd 252 watches
/// its parent instead, and can miss a credential renamed into place.
pub(super) fn main_file_missing(a: &Audit, f: &mut Findings) {
    let default_main = a.root.host(Path::new(crate::config::DEFAULT_CONFIG));
    if a.config.main == default_main && !default_main.exists() {
        f.add(
            Severity::Warning,
            default_main.shown().to_string(),
            "does not exist, so credloader.path watches /etc/quantum instead and can miss a credential \
             renamed into the creds dir (systemd 252)",
            if a.root.is_offline() {
                format!("create it (empty will do): `touch {}`", default_main.shown())
            } else {
                "put it back: `apt-get install --reinstall credloader` restores the commented default \
                 (or create it empty)"
                    .to_string()
            },
        );
    }
}
