//! Findings about each served service: its env file, its drop-in, its
//! unit, legacy `EnvironmentFile=` drop-ins, the user it runs as, and
//! whatever in its unit wins over credloader's env file.

use std::path::Path;

use nix::sys::stat::FileStat;

use super::units::{assignments, dropins, read_system, unit_file};
use super::{libc_ifmt, Audit, Findings, Severity};
use crate::config::{Delivery, Service};
use crate::escape::ShowPath;
use crate::holds;
use crate::runas;
use crate::safefs::{self, Dir, DirPolicy};
use crate::state::{FileId, ServiceState};

/// Every check of one service, each service in turn.
pub(super) fn each(a: &Audit, f: &mut Findings) {
    for s in a.served.services.values() {
        if s.delivery == Delivery::Env {
            env_file(a, f, s);
        }
        our_dropin(a, f, s);
        unit_exists(a, f, s);
        legacy_dropins(a, f, s);
        runs_as(a, f, s);
    }
}

/// The env file: written, with the owner and mode apply gives it, held by
/// nobody, and as the last apply left it.
fn env_file(a: &Audit, f: &mut Findings, s: &Service) {
    let root = a.root;
    // A record with applied_at 0 was made before a first write that has
    // not completed: the service was never applied.
    let rec = a.state.services.get(&s.name).filter(|r| r.applied_at != 0);
    let (dir, name) = safefs::split(&s.env_file);
    let policy = DirPolicy {
        create: None,
        strict: false,
    };
    let st = Dir::open(root, dir, policy)
        .ok()
        .and_then(|d| d.entry(name).ok().flatten());
    match st {
        None if rec.is_some() => f.add(
            Severity::Error,
            root.host(&s.env_file).shown().to_string(),
            format!(
                "env file of service {} is missing although it was applied",
                s.name
            ),
            "run `credloader apply`",
        ),
        None => f.add(
            Severity::Warning,
            root.host(&s.env_file).shown().to_string(),
            format!("env file of service {} has not been written yet", s.name),
            "run `credloader apply`",
        ),
        Some(st) if st.st_mode & libc_ifmt() == 0o120000 => {} // reported as a symlink
        Some(st) => {
            env_file_owner(a, f, s, &st);
            held_env_file(a, f, s, &st);
            env_file_modified(a, f, s, rec, &st);
        }
    }
}

/// The env file's owner and mode are the ones apply gives it.
fn env_file_owner(a: &Audit, f: &mut Findings, s: &Service, st: &FileStat) {
    let Some(acct) = a
        .accounts
        .as_ref()
        .and_then(|acc| acc.lookup(&s.user, s.group.as_deref()).ok())
    else {
        return;
    };
    if st.st_uid != acct.uid || st.st_gid != acct.gid || st.st_mode & 0o7777 != 0o600 {
        f.add(
            Severity::Error,
            a.root.host(&s.env_file).shown().to_string(),
            format!(
                "env file is {}:{} mode {:04o}; service {} needs {}:{} 0600",
                st.st_uid,
                st.st_gid,
                st.st_mode & 0o7777,
                s.name,
                acct.uid,
                acct.gid
            ),
            "run `credloader apply` (it rewrites the file with the right owner and mode)",
        );
    }
}

/// Another name for a service's env file, or a lease on it: its owner's
/// doing (see [`crate::holds`]). It does not stop credloader, but a service
/// has no reason to do it.
fn held_env_file(a: &Audit, f: &mut Findings, s: &Service, st: &FileStat) {
    let path = a.root.host(&s.env_file).shown().to_string();
    for hold in holds::of(st) {
        f.add(
            Severity::Error,
            path.clone(),
            format!(
                "env file of service {} {}: whoever holds it keeps its current values even \
                 after they are rotated",
                s.name,
                hold.describe()
            ),
            format!(
                "{}; if {} did not mean to, treat it as compromised and rotate its credentials \
                 (`credloader rotate NAME` for each of {})",
                hold.finder(&path),
                s.unit,
                s.credentials().join(", ")
            ),
        );
    }
}

/// The env file is not the one the last apply wrote.
fn env_file_modified(
    a: &Audit,
    f: &mut Findings,
    s: &Service,
    rec: Option<&ServiceState>,
    st: &FileStat,
) {
    if rec.is_some_and(|rec| rec.env_file_id != Some(FileId::from(st))) {
        f.add(
            Severity::Error,
            a.root.host(&s.env_file).shown().to_string(),
            format!("env file of service {} was modified since the last apply", s.name),
            "run `credloader apply` to restore it; edit credentials with `credloader rotate`, not in the file",
        );
    }
}

/// credloader's drop-in is there.
fn our_dropin(a: &Audit, f: &mut Findings, s: &Service) {
    let ours = crate::dropin::path(s, a.loader);
    if read_system(a.root, &ours).is_none() {
        f.add(
            Severity::Warning,
            a.root.host(&ours).shown().to_string(),
            format!(
                "the drop-in of service {} is missing, so {} does not get its secrets",
                s.name, s.unit
            ),
            "run `credloader apply`",
        );
    }
}

/// The unit must exist.
fn unit_exists(a: &Audit, f: &mut Findings, s: &Service) {
    let unit = unit_file(a.root, &s.unit);
    let loaded = a
        .manager
        .property(&s.unit, "LoadState")
        .is_some_and(|l| l == "loaded");
    if unit.is_none() && !loaded {
        f.add(
            Severity::Error,
            format!("service {}", s.name),
            format!("its unit {} does not exist", s.unit),
            match served_from_last_good(a, s) {
                true => format!(
                    "install {} (or fix its `unit` when you fix its file)",
                    s.unit
                ),
                false => format!("install {} or fix `unit` at {}", s.unit, s.origin),
            },
        );
    }
}

/// `s` is a last good definition from the state, not one from the files
/// (it has no file and line to point at).
fn served_from_last_good(a: &Audit, s: &Service) -> bool {
    !a.config.services.contains_key(&s.name)
}

/// Legacy `EnvironmentFile=` drop-ins (privileged Exec lines: `runas`).
fn legacy_dropins(a: &Audit, f: &mut Findings, s: &Service) {
    let ours = crate::dropin::path(s, a.loader);
    for (path, text) in dropins(a.root, &s.unit) {
        if path == ours {
            continue;
        }
        for (k, v) in assignments(&text) {
            let file = v.trim_start_matches('-');
            if k == "EnvironmentFile" && !file.is_empty() {
                legacy_env_file(a, f, s, &path, v);
            }
        }
    }
}

/// One `EnvironmentFile=v` line of the legacy drop-in at `path`.
fn legacy_env_file(a: &Audit, f: &mut Findings, s: &Service, path: &Path, v: &str) {
    let root = a.root;
    let file = v.trim_start_matches('-');
    let exists = std::fs::symlink_metadata(root.host(Path::new(file))).is_ok();
    f.add(
        if exists { Severity::Error } else { Severity::Warning },
        root.host(path).shown().to_string(),
        format!(
            "legacy drop-in for {} loads EnvironmentFile={v}{}",
            s.unit,
            if exists { ", and that file still exists (plaintext secrets?)" } else { "" }
        ),
        format!(
            "migrate it with `credloader import --env-file {file} --unit {} --secret KEY...`, or remove {}{}",
            s.unit,
            root.host(path).shown(),
            // An image's systemd reads its units when it boots.
            if root.is_offline() { "" } else { " and run `systemctl daemon-reload`" }
        ),
    );
}

/// The env file's owner is the user the unit runs as (or root).
fn runs_as(a: &Audit, f: &mut Findings, s: &Service) {
    let (Delivery::Env, Some(accounts)) = (s.delivery, a.accounts.as_ref()) else {
        return;
    };
    if let Ok(owner) = accounts.lookup(&s.user, s.group.as_deref()) {
        let runs_as = runas::units(a.manager, a.root, &[&s.unit]);
        if let Some((problem, fix)) = runas::mismatch(s, owner, &runs_as[0], accounts) {
            f.add(Severity::Error, format!("service {}", s.name), problem, fix);
        }
    }
}

/// Whatever in a consumer's unit wins over credloader's env file: an error
/// when it keeps the service from getting credloader's values.
pub(super) fn overrides(a: &Audit, f: &mut Findings) {
    let services: Vec<&Service> = a.served.services.values().copied().collect();
    let found = crate::overrides::find(a.manager, a.root, a.loader, &services);
    for (s, found) in services.iter().zip(found) {
        for o in found {
            let severity = if o.blocks() {
                Severity::Error
            } else {
                Severity::Warning
            };
            f.add(
                severity,
                format!("service {}", s.name),
                o.problem(a.root, s),
                o.fix(a.root, s),
            );
        }
    }
}
