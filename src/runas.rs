//! Who a consumer's unit runs as, and whether the owner of its env file may
//! be trusted with it.
//!
//! Whoever owns an env file can add any variable to it (`LD_PRELOAD=`,
//! `PATH=`, ...), and PID 1 hands them all to the unit at its next start.
//! So the owner must be the very user the unit runs as, or root: an env
//! file owned by `qt` for a unit that runs as root (no `User=`) lets `qt`
//! run code as root. apply refuses such a service when its definition is
//! new or changed, and `check` reports it every time.

use crate::config::Service;
use crate::escape::ShowPath;
use crate::root::Root;
use crate::systemd::Manager;
use crate::unitfile::{LoadState, Lookup, Origin, Unit, EXEC_KEYS};
use crate::users::{Account, Accounts};

/// What a unit runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunsAs {
    /// `User=` as systemd has it: a name or a uid; empty is root.
    User(String),
    /// Some of its commands run with full privileges, whatever `User=`
    /// says: a `+`, `!` or `!!` prefix, or `PermissionsStartOnly=yes`
    /// (which runs every command but the main one as root). Which ones,
    /// for the message.
    Privileged(Vec<String>),
    /// `DynamicUser=yes`: a uid allocated at each start.
    Dynamic,
    /// Nothing runs it yet: no such unit (yet), a masked one, or systemd
    /// could not be asked.
    Unknown,
    /// Its unit files do not say whom it runs as in a way credloader can
    /// tell (a specifier only the running system resolves, a file it
    /// cannot read, a unit PID 1 would not load): why.
    Undecided(String),
}

/// What each of `units` runs as. On a running system systemd is asked (one
/// `systemctl show` for all of them), and the unit files add what it does
/// not show (`PermissionsStartOnly=`) or has not loaded yet; on an image
/// the unit files are read as PID 1 would read them ([`crate::unitfile`]).
pub fn units(manager: Manager, root: &Root, units: &[&str]) -> Vec<RunsAs> {
    let lookup = Lookup::new(root.base());
    let read: Vec<Unit> = units.iter().map(|u| lookup.unit(u)).collect();
    let from_files = read.iter().map(|u| from_unit(root, u));
    match manager {
        Manager::Live => live(manager, units, &read)
            .into_iter()
            .zip(from_files)
            .map(|(live, files)| merge(live, files))
            .collect(),
        Manager::Absent => from_files.collect(),
    }
}

/// systemd's answer, completed by the unit files: `PermissionsStartOnly=`
/// (which systemd does not show) makes it privileged, and a unit systemd
/// has not loaded (yet) is judged by its files.
fn merge(live: Option<RunsAs>, files: RunsAs) -> RunsAs {
    match (live, files) {
        (None | Some(RunsAs::Unknown), files) => files,
        (Some(RunsAs::Privileged(mut a)), RunsAs::Privileged(b)) => {
            a.extend(
                b.into_iter()
                    .filter(|w| w.starts_with("PermissionsStartOnly=")),
            );
            RunsAs::Privileged(a)
        }
        (Some(RunsAs::User(_) | RunsAs::Dynamic), RunsAs::Privileged(b))
            if b.iter().any(|w| w.starts_with("PermissionsStartOnly=")) =>
        {
            RunsAs::Privileged(
                b.into_iter()
                    .filter(|w| w.starts_with("PermissionsStartOnly="))
                    .collect(),
            )
        }
        (Some(live), _) => live,
    }
}

/// What systemd says of each unit; `None` for all when it cannot be asked.
fn live(manager: Manager, units: &[&str], read: &[Unit]) -> Vec<Option<RunsAs>> {
    let ex: Vec<String> = EXEC_KEYS.iter().map(|k| format!("{k}Ex")).collect();
    let mut props = vec!["LoadState", "User", "DynamicUser"];
    props.extend(ex.iter().map(String::as_str));
    let blocks = manager.show(&props, units).map(|out| {
        // One block per unit, in the order asked, separated by a blank line.
        out.trim_end()
            .split("\n\n")
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    match blocks {
        Some(b) if b.len() == units.len() => b
            .iter()
            .zip(read)
            .map(|(b, unit)| Some(from_show(b, &ex, unit)))
            .collect(),
        _ => vec![None; units.len()],
    }
}

fn from_show(block: &str, ex: &[String], unit: &Unit) -> RunsAs {
    let get = |k: &str| {
        block
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or_default()
    };
    // `flags=privileged` (+), `no-setuid` (!), `ambient` (!!), space-separated.
    let privileged: Vec<String> = block
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, v)| {
            ex.iter().any(|e| e == k)
                && v.split(" ; ")
                    .filter_map(|p| p.strip_prefix("flags="))
                    .flat_map(str::split_whitespace)
                    .any(|f| ["privileged", "no-setuid", "ambient"].contains(&f))
        })
        .map(|(k, _)| format!("{}=", k.trim_end_matches("Ex")))
        .collect();
    match get("LoadState") {
        "loaded" if !privileged.is_empty() => RunsAs::Privileged(dedup(privileged)),
        "loaded" if get("DynamicUser") == "yes" => RunsAs::Dynamic,
        "loaded" => RunsAs::User(get("User").to_string()),
        "not-found" | "masked" => RunsAs::Unknown,
        other => RunsAs::Undecided(format!(
            "systemd could not load {} (LoadState={other}){}",
            unit.id,
            match &unit.state {
                LoadState::BadSetting(w) | LoadState::Error(w) => format!(": {w}"),
                _ => String::new(),
            }
        )),
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// Where a setting is, as the operator finds it (beneath `--root`).
fn at(root: &Root, o: &Origin) -> String {
    format!("{}:{}", root.host(&o.file).shown(), o.line)
}

/// What the unit files say (see [`crate::unitfile`]).
fn from_unit(root: &Root, unit: &Unit) -> RunsAs {
    match &unit.state {
        LoadState::NotFound | LoadState::Masked => return RunsAs::Unknown,
        LoadState::BadSetting(why) | LoadState::Error(why) => {
            return RunsAs::Undecided(format!("PID 1 would not load {}: {why}", unit.id))
        }
        LoadState::Loaded => {}
    }
    if !unit.unsure.is_empty() {
        return RunsAs::Undecided(unit.unsure.join("; "));
    }
    let s = &unit.service;
    let mut privileged: Vec<String> = s
        .commands
        .iter()
        .filter(|c| c.flags.as_root())
        .map(|c| format!("{}= at {}", c.key, at(root, &c.origin)))
        .collect();
    if let Some(o) = &s.permissions_start_only {
        privileged.push(format!("PermissionsStartOnly= at {}", at(root, o)));
    }
    if !privileged.is_empty() {
        RunsAs::Privileged(privileged)
    } else if s.dynamic_user.is_some() {
        RunsAs::Dynamic
    } else {
        RunsAs::User(s.user.as_ref().map(|u| u.value.clone()).unwrap_or_default())
    }
}

/// Why `owner` must not own the env file of `service`, whose unit runs as
/// `runs_as`, and the fix; `None` when it may (or when nothing runs the
/// unit yet).
pub fn mismatch(
    service: &Service,
    owner: Account,
    runs_as: &RunsAs,
    accounts: &Accounts,
) -> Option<(String, String)> {
    if owner.uid == 0 {
        return None;
    }
    match runs_as {
        RunsAs::Privileged(how) => Some(privileged(service, how)),
        RunsAs::Undecided(why) => Some(undecided(service, why)),
        RunsAs::User(user) => {
            let uid = if user.is_empty() || user == "root" {
                0
            } else if let Ok(uid) = user.parse::<u32>() {
                uid
            } else {
                match accounts.lookup(user, None) {
                    Ok(a) => a.uid,
                    Err(_) => return Some(unknown_user(service, user)),
                }
            };
            (uid != owner.uid).then(|| other_user(service, user, uid))
        }
        RunsAs::Dynamic | RunsAs::Unknown => None,
    }
}

fn privileged(service: &Service, how: &[String]) -> (String, String) {
    (
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
    )
}

fn undecided(service: &Service, why: &str) -> (String, String) {
    (
        format!(
            "cannot tell whom {unit} runs as ({why}), so its env file cannot go to {owner}, \
             who could add variables such as LD_PRELOAD to it",
            unit = service.unit,
            owner = service.user,
        ),
        format!(
            "fix {unit} so that its user is plain (`systemctl cat {unit}`), or set `user = \
             \"root\"` for service {name} ({origin}; PID 1 reads env files as root, so the \
             service still gets them), or use `delivery = \"credential\"`",
            unit = service.unit,
            name = service.name,
            origin = service.origin,
        ),
    )
}

fn unknown_user(service: &Service, user: &str) -> (String, String) {
    (
        format!(
            "{unit} runs as {user}, a user this system does not know, so credloader cannot \
             tell whether {owner} is that user; its env file is not handed to {owner}",
            unit = service.unit,
            owner = service.user,
        ),
        format!(
            "create user {user} (`useradd --system {user}`) and set `user = \"{user}\"` for \
             service {name} ({origin}), or fix `User=` in {unit}",
            name = service.name,
            origin = service.origin,
            unit = service.unit,
        ),
    )
}

/// The unit runs as `user` (uid `uid`), not as the env file's owner.
fn other_user(service: &Service, user: &str, uid: u32) -> (String, String) {
    let (who, as_whom) = match (uid, user.is_empty()) {
        (0, true) => ("root (it has no User=)", "root"),
        (0, false) => ("root", "root"),
        _ => (user, user),
    };
    (
        format!(
            "{unit} runs as {who}, but its env file belongs to {owner}, who could add variables \
             such as LD_PRELOAD to it and so run code as {as_whom}",
            unit = service.unit,
            owner = service.user,
        ),
        format!(
            "set `user = \"{fix_user}\"` for service {name} ({origin}), or `User={owner}` in {unit}",
            fix_user = if uid == 0 { "root" } else { user },
            name = service.name,
            origin = service.origin,
            owner = service.user,
            unit = service.unit,
        ),
    )
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
