//! Who a consumer's unit runs as, and whether the owner of its env file may
//! be trusted with it.
//!
//! Whoever owns an env file can add any variable to it (`LD_PRELOAD=`,
//! `PATH=`, ...), and PID 1 hands them all to the unit at its next start.
//! So the owner must be the very user the unit runs as, or root: an env
//! file owned by `qt` for a unit that runs as root (no `User=`) lets `qt`
//! run code as root. apply refuses such a service when its definition is
//! new or changed, and `check` reports it every time.

use std::path::Path;

use crate::audit::{assignments, dropins, privileged_exec, unit_file};
use crate::config::Service;
use crate::escape::ShowPath;
use crate::root::Root;
use crate::systemd::Manager;
use crate::users::{Account, Accounts};

/// What a unit runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunsAs {
    /// `User=` as systemd has it: a name or a uid; empty is root.
    User(String),
    /// Some of its commands run with full privileges, whatever `User=`
    /// says: a `+`, `!` or `!!` prefix, or `PermissionsStartOnly=yes`
    /// (which systemd turns into `+`). Which ones, for the message.
    Privileged(Vec<String>),
    /// `DynamicUser=yes`: a uid allocated at each start.
    Dynamic,
    /// Not known: no such unit (yet), a specifier in `User=`, no answer.
    Unknown,
}

/// The command lines a unit runs, as `systemctl show` names them with
/// their flags.
const EXEC_EX: [&str; 6] = [
    "ExecStartPreEx",
    "ExecStartEx",
    "ExecStartPostEx",
    "ExecReloadEx",
    "ExecStopEx",
    "ExecStopPostEx",
];

/// What each of `units` runs as: asked of systemd when it runs (one
/// `systemctl show` for all of them), read from the unit files of an image
/// otherwise.
pub fn units(manager: Manager, root: &Root, dropin_dir: &Path, units: &[&str]) -> Vec<RunsAs> {
    match manager {
        Manager::Live => live(manager, units),
        Manager::Absent => units
            .iter()
            .map(|u| from_files(root, dropin_dir, u))
            .collect(),
    }
}

fn live(manager: Manager, units: &[&str]) -> Vec<RunsAs> {
    let unknown = vec![RunsAs::Unknown; units.len()];
    let mut props = vec!["LoadState", "User", "DynamicUser"];
    props.extend(EXEC_EX);
    let Some(out) = manager.show(&props, units) else {
        return unknown;
    };
    // One block per unit, in the order asked, separated by a blank line.
    let blocks: Vec<&str> = out.trim_end().split("\n\n").collect();
    if blocks.len() != units.len() {
        return unknown;
    }
    blocks
        .iter()
        .map(|b| {
            let get = |k: &str| {
                b.lines()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                    .unwrap_or_default()
            };
            // `flags=privileged` (+), `no-setuid` (!), `ambient` (!!).
            let privileged: Vec<String> = b
                .lines()
                .filter_map(|l| l.split_once('='))
                .filter(|(k, v)| {
                    EXEC_EX.contains(k)
                        && ["privileged", "no-setuid", "ambient"].iter().any(|f| {
                            v.contains(&format!("flags={f}")) || v.contains(&format!("|{f}"))
                        })
                })
                .map(|(k, _)| format!("{}=", k.trim_end_matches("Ex")))
                .collect();
            if get("LoadState") != "loaded" {
                RunsAs::Unknown
            } else if !privileged.is_empty() {
                RunsAs::Privileged(privileged)
            } else if get("DynamicUser") == "yes" {
                RunsAs::Dynamic
            } else {
                RunsAs::User(get("User").to_string())
            }
        })
        .collect()
}

fn from_files(root: &Root, dropin_dir: &Path, unit: &str) -> RunsAs {
    let Some(main) = unit_file(root, dropin_dir, unit) else {
        return RunsAs::Unknown;
    };
    let (mut user, mut dynamic, mut privileged) = (String::new(), false, Vec::new());
    for (path, text) in std::iter::once(main).chain(dropins(root, dropin_dir, unit)) {
        for (k, v) in assignments(&text) {
            match k {
                "User" => user = v.to_string(),
                "DynamicUser" => dynamic = matches!(v, "yes" | "true" | "on" | "1"),
                "PermissionsStartOnly" if matches!(v, "yes" | "true" | "on" | "1") => {
                    privileged.push(format!("{k}= in {}", root.host(&path).shown()))
                }
                _ if k.starts_with("Exec") && privileged_exec(v) => {
                    privileged.push(format!("{k}= in {}", root.host(&path).shown()))
                }
                _ => {}
            }
        }
    }
    if !privileged.is_empty() {
        RunsAs::Privileged(privileged)
    } else if dynamic {
        RunsAs::Dynamic
    } else if user.contains('%') {
        RunsAs::Unknown
    } else {
        RunsAs::User(user)
    }
}

/// Why `owner` must not own the env file of `service`, whose unit runs as
/// `runs_as`, and the fix; `None` when it may (or when that cannot be told).
pub fn mismatch(
    service: &Service,
    owner: Account,
    runs_as: &RunsAs,
    accounts: &Accounts,
) -> Option<(String, String)> {
    if owner.uid == 0 {
        return None;
    }
    if let RunsAs::Privileged(how) = runs_as {
        return Some((
            format!(
                "{unit} runs commands with full privileges ({how}), and its env file belongs to \
                 {owner}, who could add variables such as LD_PRELOAD to it and so run code as root",
                unit = service.unit,
                how = how.join(", "),
                owner = service.user,
            ),
            format!(
                "drop the `+`/`!` prefixes (and PermissionsStartOnly=) from {unit}, set \
                 `user = \"root\"` for service {name} ({origin}), or use `delivery = \"credential\"`",
                unit = service.unit,
                name = service.name,
                origin = service.origin,
            ),
        ));
    }
    let RunsAs::User(user) = runs_as else {
        return None;
    };
    let uid = if user.is_empty() {
        0
    } else if let Ok(uid) = user.parse::<u32>() {
        uid
    } else {
        accounts.lookup(user, None).ok()?.uid
    };
    if uid == owner.uid {
        return None;
    }
    let (who, as_whom) = if uid == 0 {
        (
            if user.is_empty() {
                "root (it has no User=)".to_string()
            } else {
                "root".to_string()
            },
            "root".to_string(),
        )
    } else {
        (user.clone(), user.clone())
    };
    Some((
        format!(
            "{unit} runs as {who}, but its env file belongs to {owner}, who could add variables \
             such as LD_PRELOAD to it and so run code as {as_whom}",
            unit = service.unit,
            owner = service.user,
        ),
        format!(
            "set `user = \"{fix_user}\"` for service {name} ({origin}), or `User={owner}` in {unit}",
            fix_user = if uid == 0 { "root" } else { user.as_str() },
            name = service.name,
            origin = service.origin,
            owner = service.user,
            unit = service.unit,
        ),
    ))
}

/// What to tell the operator when `runs_as` leaves the owner check unable
/// to say (apply lets such a service pass, and checks it only when its
/// definition changes again).
pub fn unsure(service: &Service, runs_as: &RunsAs) -> Option<String> {
    match runs_as {
        RunsAs::Unknown => Some(format!(
            "service {}: could not tell whom {} runs as (not installed yet?), so its env file \
             went to {} unchecked; run `credloader check` once the unit is in place",
            service.name, service.unit, service.user
        )),
        RunsAs::Dynamic => Some(format!(
            "service {}: {} has DynamicUser=yes, so its env file's owner {} is not the user it \
             runs as and could change what it gets; prefer `delivery = \"credential\"`",
            service.name, service.unit, service.user
        )),
        _ => None,
    }
}
