//! Whether something wins over credloader's env file in a consumer's unit.
//!
//! PID 1 builds a service's environment from `Environment=`, then every
//! `EnvironmentFile=` in the order the unit and its drop-ins list them (a
//! later file overriding an earlier one, and any file overriding
//! `Environment=`), then removes what `UnsetEnvironment=` names; an empty
//! `EnvironmentFile=` drops every file listed before it
//! (`src/core/execute.c`; each rule checked on a real PID 1 by
//! `tests/e2e_overrides.rs`). So a drop-in that sorts after
//! `50-credloader.conf` (a hand-made `credentials.conf`, say) and loads a
//! file setting a variable credloader manages wins: every rotation then
//! "succeeds" while the service keeps the old key. `Environment=` never
//! wins, and is not reported.
//!
//! The unit files are read as PID 1 reads them ([`crate::unitfile`]); given
//! a running manager, the files systemd has actually loaded (`systemctl show
//! -p EnvironmentFiles,UnsetEnvironment`) are checked too, for a unit changed
//! without a `daemon-reload` (`status`, `check`, `rotate`; apply reads the
//! files only, since `show` costs several D-Bus calls per unit). `apply`
//! warns, `status` shows and `check` reports what is found; `rotate` and
//! `rollback` do not count a consumer verified while something takes the
//! rotated credential's variable from it ([`Override::takes`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::config::{Delivery, Loader, Service};
use crate::envfile;
use crate::root::Root;
use crate::systemd::Manager;
use crate::unitfile::{self, LoadState, Lookup, Origin, Unit};

/// Env files larger than this are not read (reported as unreadable).
const MAX_ENV_FILE: usize = 8 << 20;

/// One thing that takes a variable from credloader's env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub kind: Kind,
    /// Where the unit files say so; `None` when only systemd's loaded
    /// state does (the files changed since the last `daemon-reload`).
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A file loaded after credloader's sets these managed variables.
    Sets { file: PathBuf, vars: Vec<String> },
    /// A file loaded after credloader's that cannot be checked now: why,
    /// and whether that blocks a verification (a file that does not exist
    /// sets nothing today; one that cannot be read may set anything).
    MaySet {
        file: PathBuf,
        why: String,
        blocks: bool,
    },
    /// `UnsetEnvironment=` removes this managed variable (`entry` is
    /// `NAME`, or `NAME=VALUE`, which removes it only with that value).
    Unsets { entry: String, var: String },
    /// An empty `EnvironmentFile=` after credloader's drop-in: the unit no
    /// longer loads credloader's file at all.
    Drops,
    /// A drop-in of the same name in a directory PID 1 reads first hides
    /// credloader's drop-in (the origin names it, at line 1).
    Hides,
}

impl Override {
    /// Does it keep the service from getting what credloader delivers?
    pub fn blocks(&self) -> bool {
        match &self.kind {
            Kind::Sets { .. } | Kind::Drops | Kind::Hides => true,
            Kind::MaySet { blocks, .. } => *blocks,
            Kind::Unsets { entry, .. } => !entry.contains('='),
        }
    }

    /// The managed variables of `s` it takes from credloader's file (none
    /// when it does not [block](Override::blocks)).
    pub fn takes(&self, s: &Service) -> Vec<String> {
        match &self.kind {
            Kind::Sets { vars, .. } => vars.clone(),
            Kind::Unsets { var, .. } if self.blocks() => vec![var.clone()],
            _ if self.blocks() => managed(s),
            _ => Vec::new(),
        }
    }

    fn at(&self, root: &Root) -> String {
        match &self.origin {
            Some(o) => format!("{}:{}", root.host(&o.file).display(), o.line),
            None => "systemd's loaded unit (its files no longer say so; `systemctl daemon-reload` \
                     makes it forget)"
                .to_string(),
        }
    }

    /// What is wrong, naming the file and line.
    pub fn problem(&self, root: &Root, s: &Service) -> String {
        let (at, ours, unit) = (self.at(root), s.env_file.display(), &s.unit);
        match &self.kind {
            Kind::Sets { file, vars } => format!(
                "{at} loads EnvironmentFile={} after credloader's {ours}, and it sets {}: {unit} \
                 gets those values, not credloader's",
                file.display(),
                vars.join(", ")
            ),
            Kind::MaySet { file, why, blocks } => format!(
                "{at} loads EnvironmentFile={} after credloader's {ours}, and it {why}: {}whatever \
                 it sets wins over credloader's {}",
                file.display(),
                if *blocks { "" } else { "once it does, " },
                managed(s).join(", ")
            ),
            Kind::Unsets { entry, var } if entry.contains('=') => format!(
                "{at} has UnsetEnvironment={entry}: {unit} loses {var} whenever its value is \
                 exactly that"
            ),
            Kind::Unsets { entry, var } => {
                format!("{at} has UnsetEnvironment={entry}: {unit} does not get {var} at all")
            }
            Kind::Drops => format!(
                "{at} empties EnvironmentFile= after credloader's drop-in, so {unit} does not load \
                 {ours} at all"
            ),
            Kind::Hides => format!(
                "{} has the name of credloader's drop-in and hides it, so {unit} does not load \
                 {ours} at all",
                self.origin
                    .as_ref()
                    .map(|o| root.host(&o.file).display().to_string())
                    .unwrap_or_default()
            ),
        }
    }

    /// How to mend it.
    pub fn fix(&self, root: &Root, s: &Service) -> String {
        let file = self
            .origin
            .as_ref()
            .map(|o| root.host(&o.file).display().to_string())
            .unwrap_or_else(|| format!("the drop-ins of {}", s.unit));
        let reload = "and run `systemctl daemon-reload`";
        match &self.kind {
            Kind::Sets { file: env, vars } => format!(
                "remove that EnvironmentFile= line from {file} (or the whole drop-in, if that is all \
                 it holds) {reload}; delete {} once nothing needs it (it may hold old secrets). If it \
                 is meant to win, drop {} from service {} ({})",
                root.host(env).display(),
                vars.join(", "),
                s.name,
                s.origin
            ),
            Kind::MaySet { .. } => format!(
                "remove that EnvironmentFile= line from {file} {reload}, or make sure it never sets \
                 a variable credloader manages"
            ),
            Kind::Unsets { var, .. } => {
                format!("remove {var} from that UnsetEnvironment= line in {file} {reload}")
            }
            Kind::Drops => format!(
                "remove the empty `EnvironmentFile=` from {file} (or name that drop-in so it sorts \
                 before {}) {reload}",
                crate::dropin::FILE_NAME
            ),
            Kind::Hides => format!("remove or rename {file} {reload}"),
        }
    }
}

/// The variables credloader writes into the service's env file.
fn managed(s: &Service) -> Vec<String> {
    s.vars.iter().map(|v| v.name.clone()).collect()
}

/// What overrides credloader's env file in the unit of each of
/// `services` (nothing for `delivery = "credential"`).
pub fn find(
    manager: Manager,
    root: &Root,
    loader: &Loader,
    services: &[&Service],
) -> Vec<Vec<Override>> {
    let lookup = Lookup::new(root.base());
    let env: Vec<&str> = services
        .iter()
        .filter(|s| s.delivery == Delivery::Env)
        .map(|s| s.unit.as_str())
        .collect();
    let mut loaded = loaded_lists(manager, &env).into_iter();
    services
        .iter()
        .map(|s| {
            if s.delivery != Delivery::Env {
                return Vec::new();
            }
            let unit = lookup.unit(&s.unit);
            let mut found = from_files(root, s, &crate::dropin::path(s, loader), &unit);
            if let Some(list) = loaded.next().flatten() {
                for o in from_loaded(root, s, &list) {
                    if !found.iter().any(|f| same(f, &o)) {
                        found.push(o);
                    }
                }
            }
            found
        })
        .collect()
}

/// Both say the same thing (one from the files, one from systemd).
fn same(a: &Override, b: &Override) -> bool {
    match (&a.kind, &b.kind) {
        (Kind::Sets { file: x, .. }, Kind::Sets { file: y, .. })
        | (Kind::MaySet { file: x, .. }, Kind::MaySet { file: y, .. }) => x == y,
        (Kind::Unsets { entry: x, .. }, Kind::Unsets { entry: y, .. }) => x == y,
        _ => a.kind == b.kind,
    }
}

/// From the unit files; `dropin` is credloader's drop-in for the unit.
fn from_files(root: &Root, s: &Service, dropin: &Path, unit: &Unit) -> Vec<Override> {
    if unit.state != LoadState::Loaded {
        return Vec::new();
    }
    let files = &unit.service.environment_files;
    let Some(ours) = files.iter().rposition(|f| f.path == s.env_file) else {
        return not_loaded(root, dropin, unit);
    };
    let mut out: Vec<Override> = files[ours + 1..]
        .iter()
        .filter_map(|f| {
            let kind = if f.resolved {
                check_file(root, s, &f.path)?
            } else {
                Kind::MaySet {
                    file: f.path.clone(),
                    why: "names a path with a specifier credloader cannot resolve".into(),
                    blocks: true,
                }
            };
            Some(Override {
                kind,
                origin: Some(f.origin.clone()),
            })
        })
        .collect();
    out.extend(unsets(
        s,
        unit.service
            .unset_environment
            .iter()
            .map(|u| (u.value.as_str(), Some(&u.origin))),
    ));
    out
}

/// Why the unit does not load credloader's env file at all: its drop-in
/// is hidden by another of the same name, or an empty `EnvironmentFile=`
/// follows it. Nothing when the drop-in is just not there (yet): apply
/// writes it, and `status` says whether systemd has loaded it.
fn not_loaded(root: &Root, dropin: &Path, unit: &Unit) -> Vec<Override> {
    let same = |p: &Path| {
        let host = |p: &Path| unitfile::host_path(root.base(), p).ok();
        host(p).is_some() && host(p) == host(dropin)
    };
    let written = std::fs::symlink_metadata(root.host(dropin)).is_ok();
    if let Some(other) = unit
        .dropins
        .iter()
        .find(|d| written && d.file_name() == dropin.file_name() && !same(d))
    {
        return vec![Override {
            kind: Kind::Hides,
            origin: Some(Origin {
                file: other.clone(),
                line: 1,
            }),
        }];
    }
    match &unit.service.environment_files_reset {
        Some(o) if unit.dropins.iter().any(|d| same(d)) => vec![Override {
            kind: Kind::Drops,
            origin: Some(o.clone()),
        }],
        _ => Vec::new(),
    }
}

/// `UnsetEnvironment=` entries that name a managed variable.
fn unsets<'a>(
    s: &Service,
    entries: impl Iterator<Item = (&'a str, Option<&'a Origin>)>,
) -> Vec<Override> {
    let managed = managed(s);
    entries
        .filter_map(|(entry, origin)| {
            let var = entry.split_once('=').map(|(n, _)| n).unwrap_or(entry);
            managed.iter().any(|m| m == var).then(|| Override {
                kind: Kind::Unsets {
                    entry: entry.to_string(),
                    var: var.to_string(),
                },
                origin: origin.cloned(),
            })
        })
        .collect()
}

/// What the env file `path` (loaded after credloader's) does to the
/// service's variables; `None`: nothing.
fn check_file(root: &Root, s: &Service, path: &Path) -> Option<Kind> {
    let may = |why: String, blocks: bool| {
        Some(Kind::MaySet {
            file: path.to_path_buf(),
            why,
            blocks,
        })
    };
    if path.to_string_lossy().contains(['*', '?', '[']) {
        return may(
            "is a glob pattern, whose files credloader does not check".into(),
            true,
        );
    }
    match read_keys(root, path) {
        Ok(Some(keys)) => {
            let vars: Vec<String> = managed(s)
                .into_iter()
                .filter(|m| keys.contains(m))
                .collect();
            (!vars.is_empty()).then(|| Kind::Sets {
                file: path.to_path_buf(),
                vars,
            })
        }
        Ok(None) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            may("does not exist now".into(), false)
        }
        Err(e) => may(format!("cannot be read ({e})"), true),
    }
}

/// The variable names an env file assigns, as PID 1 would load it; `None`
/// when PID 1 would ignore the whole file (invalid UTF-8) or it is
/// `/dev/null`. The values are read into zeroized memory and dropped.
fn read_keys(root: &Root, path: &Path) -> std::io::Result<Option<BTreeSet<String>>> {
    let host = unitfile::host_path(root.base(), path)?;
    let t = std::fs::metadata(&host)?.file_type();
    if t.is_char_device() {
        return Ok(None);
    }
    if !t.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    let file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(&host)?;
    let text = crate::secret::read_secret(file, MAX_ENV_FILE)?;
    let (assignments, issues) = envfile::parse(text.expose());
    // envfile names these: systemd drops the whole file for them.
    if issues
        .iter()
        .any(|i| i.problem.contains("ignores the file"))
    {
        return Ok(None);
    }
    Ok(Some(assignments.into_iter().map(|a| a.key).collect()))
}

/// What systemd has loaded, per unit: `(EnvironmentFiles, UnsetEnvironment)`;
/// `None` when it cannot be asked.
type Loaded = (Vec<PathBuf>, Vec<String>);

fn loaded_lists(manager: Manager, units: &[&str]) -> Vec<Option<Loaded>> {
    let none = || vec![None; units.len()];
    let Some(out) = manager.show(&["EnvironmentFiles", "UnsetEnvironment"], units) else {
        return none();
    };
    let blocks: Vec<&str> = out.trim_end().split("\n\n").collect();
    if blocks.len() != units.len() {
        return none();
    }
    blocks
        .iter()
        .map(|b| {
            let mut files = Vec::new();
            let mut unset = Vec::new();
            for l in b.lines() {
                if let Some(v) = l.strip_prefix("EnvironmentFiles=") {
                    // `/path (ignore_errors=yes)`
                    if let Some((p, _)) = v.rsplit_once(" (ignore_errors=") {
                        files.push(PathBuf::from(p));
                    }
                } else if let Some(v) = l.strip_prefix("UnsetEnvironment=") {
                    unset.extend(v.split_whitespace().map(str::to_string));
                }
            }
            Some((files, unset))
        })
        .collect()
}

/// From what systemd has loaded (no file and line to name).
fn from_loaded(root: &Root, s: &Service, (files, unset): &Loaded) -> Vec<Override> {
    let Some(ours) = files.iter().rposition(|f| *f == s.env_file) else {
        return Vec::new();
    };
    let mut out: Vec<Override> = files[ours + 1..]
        .iter()
        .filter_map(|f| {
            Some(Override {
                kind: check_file(root, s, f)?,
                origin: None,
            })
        })
        .collect();
    out.extend(unsets(s, unset.iter().map(|u| (u.as_str(), None))));
    out
}

/// One warning per override of each of `services`, for apply.
pub fn warnings(
    manager: Manager,
    root: &Root,
    loader: &Loader,
    services: &[&Service],
) -> Vec<String> {
    find(manager, root, loader, services)
        .iter()
        .zip(services)
        .flat_map(|(found, s)| {
            found.iter().map(move |o| {
                format!(
                    "service {}: {}; fix: {}",
                    s.name,
                    o.problem(root, s),
                    o.fix(root, s)
                )
            })
        })
        .collect()
}
