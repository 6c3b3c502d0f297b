//! `check`: an audit of everything credloader manages. Each problem is a
//! [`Finding`] with a severity, the thing it is about, what is wrong and how
//! to fix it. Nothing is decrypted and nothing is changed.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::apply::sealed_names;
use crate::config::{Config, Delivery, Service};
use crate::creds::Store;
use crate::escape::ShowPath;
use crate::generations::{format_utc, History};
use crate::holds;
use crate::root::Root;
use crate::runas;
use crate::safefs::{self, Dir, DirPolicy};
use crate::state::{FileId, Served, State};
use crate::systemd::Manager;
use crate::systemd_creds;
use crate::unitfile;
use crate::users::Accounts;

/// Expiry closer than this is a warning.
pub const EXPIRY_WARNING_SECS: u64 = 14 * 86400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// What it is about: a path, `credential NAME`, `service NAME`.
    pub subject: String,
    pub problem: String,
    pub fix: String,
}

struct Findings(Vec<Finding>);

impl Findings {
    fn add(
        &mut self,
        severity: Severity,
        subject: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.0.push(Finding {
            severity,
            subject: subject.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }
}

/// Reads a system file beneath `root`; an absolute symlink (common for
/// units) is resolved beneath the root, one level deep.
fn read_system(root: &Root, path: &Path) -> Option<String> {
    let host = root.host(path);
    match std::fs::symlink_metadata(&host) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(&host).ok()?;
            let target = if target.is_absolute() {
                root.host(&target)
            } else {
                host.parent()?.join(target)
            };
            std::fs::read_to_string(target).ok()
        }
        Ok(_) => std::fs::read_to_string(host).ok(),
        Err(_) => None,
    }
}

/// The unit's file (system path) and text: the fragment PID 1 would load
/// (see [`crate::unitfile`]), if there is one.
pub fn unit_file(root: &Root, unit: &str) -> Option<(PathBuf, String)> {
    let path = unitfile::load(root.base(), unit).fragment?;
    let text = read_system(root, &path)?;
    Some((path, text))
}

/// Every drop-in of `unit` (system paths and texts), in the order PID 1
/// applies them.
pub fn dropins(root: &Root, unit: &str) -> Vec<(PathBuf, String)> {
    unitfile::load(root.base(), unit)
        .dropins
        .into_iter()
        .filter_map(|p| {
            let text = read_system(root, &p)?;
            Some((p, text))
        })
        .collect()
}

/// `(key, value)` of each assignment line in a unit file text.
pub fn assignments(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| {
        let l = l.trim();
        if l.starts_with('#') || l.starts_with(';') || l.starts_with('[') {
            return None;
        }
        let (k, v) = l.split_once('=')?;
        Some((k.trim(), v.trim()))
    })
}

/// The first symlink on the way to `path` beneath `root`, if any.
fn symlink_on(root: &Root, path: &Path) -> Option<PathBuf> {
    let mut sys = PathBuf::from("/");
    for c in path.components() {
        if let Component::Normal(n) = c {
            sys.push(n);
            match std::fs::symlink_metadata(root.host(&sys)) {
                Ok(m) if m.file_type().is_symlink() => return Some(sys),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
    None
}

/// Runs every check.
pub fn audit(config: &Config, root: &Root, manager: Manager) -> Vec<Finding> {
    let mut f = Findings(Vec::new());
    let loader = &config.loader;
    let now = crate::state::now();

    // Services as apply serves them: one whose own definition is broken is
    // served from its last good definition, so it is checked (and its
    // credentials count as used) like any other.
    let state = State::inspect(root, &loader.state_dir);
    let served = Served::new(config, &state);

    // The configuration itself: a broken service definition or an untrusted
    // file (apply serves such services from their last good definition, if
    // they have one, but they no longer follow the configuration).
    for (name, problems) in &config.broken {
        let how = if served.stored.contains_key(name.as_str()) {
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
    for p in &config.orphan_problems {
        f.add(
            Severity::Error,
            p.origin.file.shown().to_string(),
            p.to_string(),
            format!("fix or remove {}", p.origin.file.shown()),
        );
    }
    unnamed_findings(&mut f, config, &served);
    place_findings(&mut f, config);
    // `[sources]` is read by `sync` alone: it refuses to run, nothing else stops.
    for p in config.sources_only_problems() {
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

    // credloader.path watches the main file; without it systemd 252 watches
    // its parent instead, and can miss a credential renamed into place.
    let default_main = root.host(Path::new(crate::config::DEFAULT_CONFIG));
    if config.main == default_main && !default_main.exists() {
        f.add(
            Severity::Warning,
            default_main.shown().to_string(),
            "does not exist, so credloader.path watches /etc/quantum instead and can miss a credential \
             renamed into the creds dir (systemd 252)",
            if root.is_offline() {
                format!("create it (empty will do): `touch {}`", default_main.shown())
            } else {
                "put it back: `apt-get install --reinstall credloader` restores the commented default \
                 (or create it empty)"
                    .to_string()
            },
        );
    }

    // Symlinks anywhere on a managed path.
    let mut managed: BTreeSet<PathBuf> = BTreeSet::new();
    managed.insert(loader.creds_dir.clone());
    managed.insert(loader.state_dir.clone());
    managed.insert(loader.env_dir.clone());
    for s in served.services.values() {
        if s.delivery == Delivery::Env {
            managed.insert(s.env_file.clone());
        }
        managed.insert(s.dropin_path(loader));
    }
    let mut reported = BTreeSet::new();
    for p in &managed {
        if let Some(link) = symlink_on(root, p) {
            if reported.insert(link.clone()) {
                f.add(
                    Severity::Error,
                    root.host(&link).shown().to_string(),
                    format!("is a symbolic link on the managed path {}; credloader refuses to follow it", root.host(p).shown()),
                    format!("replace {} with a real directory or file (`rm {}`, then `credloader apply`)", root.host(&link).shown(), root.host(&link).shown()),
                );
            }
        }
    }

    // The creds dir and every sealed file in it.
    let creds_host = root.host(&loader.creds_dir);
    match std::fs::symlink_metadata(&creds_host) {
        Ok(m) if m.file_type().is_dir() => {
            if m.uid() != 0 || m.gid() != 0 || m.mode() & 0o7777 != 0o700 {
                f.add(
                    Severity::Error,
                    root.host(&loader.creds_dir).shown().to_string(),
                    format!(
                        "creds dir is {}:{} mode {:04o}, not root:root 0700",
                        m.uid(),
                        m.gid(),
                        m.mode() & 0o7777
                    ),
                    format!(
                        "chown root:root {0} && chmod 0700 {0}",
                        root.host(&loader.creds_dir).shown()
                    ),
                );
            }
        }
        Ok(_) => {}
        Err(_) => f.add(
            Severity::Warning,
            root.host(&loader.creds_dir).shown().to_string(),
            "creds dir does not exist",
            "seal a credential with `credloader seal NAME` (it creates the directory root 0700)",
        ),
    }
    let store = Store::open(root, &loader.creds_dir);
    if let Ok(dir) = store.dir() {
        for entry in dir.list().unwrap_or_default() {
            let Some(name) = entry.to_str().and_then(|s| s.strip_suffix(".cred")) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let sys = loader.creds_dir.join(&entry);
            let Ok(Some(st)) = dir.entry(&entry) else {
                continue;
            };
            let fmt = st.st_mode & libc_ifmt();
            if fmt == 0o120000 {
                continue; // reported as a symlink below
            }
            if fmt != 0o100000 {
                f.add(
                    Severity::Error,
                    root.host(&sys).shown().to_string(),
                    "is not a regular file",
                    format!("remove it and seal {name} again"),
                );
                continue;
            }
            if st.st_uid != 0 || st.st_gid != 0 || st.st_mode & 0o7777 != 0o600 {
                f.add(
                    Severity::Error,
                    root.host(&sys).shown().to_string(),
                    format!(
                        "credential {name} is {}:{} mode {:04o}, not root:root 0600",
                        st.st_uid,
                        st.st_gid,
                        st.st_mode & 0o7777
                    ),
                    format!(
                        "chown root:root {0} && chmod 0600 {0}",
                        root.host(&sys).shown()
                    ),
                );
            }
            if let Ok(sealed) = store.sealed(name) {
                if systemd_creds::sealed_key(&sealed.bytes).is_none() {
                    f.add(
                        Severity::Error,
                        root.host(&sys).shown().to_string(),
                        format!(
                            "credential {name} is not a credential systemd-creds can read \
                             (damaged, or not made by `systemd-creds encrypt`)"
                        ),
                        format!(
                            "seal a new value with `credloader rotate {name}`, or restore the file from a backup"
                        ),
                    );
                }
            }
        }
        for entry in dir.list().unwrap_or_default() {
            if let Ok(Some(st)) = dir.entry(&entry) {
                if st.st_mode & libc_ifmt() == 0o120000 {
                    let sys = loader.creds_dir.join(&entry);
                    f.add(
                        Severity::Error,
                        root.host(&sys).shown().to_string(),
                        "is a symbolic link in the creds dir; credloader will not read it",
                        format!("replace it with the sealed file itself (`cp --remove-destination \"$(readlink -f {0})\" {0}`)", root.host(&sys).shown()),
                    );
                }
            }
        }
    }

    // References: missing credentials and ones nobody uses (not when the
    // creds dir cannot be read: that is reported above, and every
    // credential would look missing).
    let on_disk = sealed_names(&store);
    let readable = store.dir().is_ok();
    let referenced: BTreeSet<&str> = served.all_credentials();
    for name in referenced.iter().filter(|_| readable) {
        if !on_disk.contains(*name) {
            let users: Vec<String> = served.consumers(name).map(|s| s.name.clone()).collect();
            f.add(
                Severity::Error,
                format!("credential {name}"),
                format!(
                    "is used by {} but {} does not exist",
                    users.join(", "),
                    root.host(&loader.creds_dir.join(format!("{name}.cred")))
                        .shown()
                ),
                format!("seal it with `credloader seal {name}`"),
            );
        }
    }
    for name in &on_disk {
        if referenced.contains(name.as_str()) {
            continue;
        }
        // While a file is broken, what it uses is unknown: never advise
        // removing a credential it may still need.
        if config.is_clean() {
            f.add(
                Severity::Warning,
                format!("credential {name}"),
                "no configured service uses it",
                format!(
                    "add it to a service's `credentials`, or remove {} if it is no longer needed",
                    root.host(&loader.creds_dir.join(format!("{name}.cred")))
                        .shown()
                ),
            );
        } else {
            f.add(
                Severity::Warning,
                format!("credential {name}"),
                "no service that loads uses it, but the configuration has errors and a broken file may",
                "keep it: fix the configuration errors first, then check again",
            );
        }
    }

    // Expiry, as recorded when credloader sealed it.
    for name in &on_disk {
        let Ok(sealed) = store.sealed(name) else {
            continue;
        };
        let Ok(history) = History::open(root, &loader.state_dir, name, false) else {
            continue;
        };
        if let Ok(Some((n, when))) = history.rejected_as(&sealed.digest) {
            f.add(
                Severity::Error,
                format!("credential {name}"),
                format!(
                    "its live value is generation {n}, which failed verification when a rotation \
                     installed it at {}",
                    format_utc(when)
                ),
                format!(
                    "go back to the newest good value with `credloader rollback {name}`, or, once \
                     the cause is fixed, verify this one again with `credloader rollback {name} --to {n}`"
                ),
            );
        }
        let Some(at) = history.info_for(&sealed.digest).and_then(|i| i.not_after) else {
            continue;
        };
        if at <= now {
            f.add(
                Severity::Error,
                format!("credential {name}"),
                format!(
                    "expired at {} (its not-after time); it no longer decrypts",
                    format_utc(at)
                ),
                format!("seal a new value with `credloader rotate {name}`"),
            );
        } else if at - now <= EXPIRY_WARNING_SECS {
            f.add(
                Severity::Warning,
                format!("credential {name}"),
                format!(
                    "expires at {}, within {} days",
                    format_utc(at),
                    EXPIRY_WARNING_SECS / 86400
                ),
                format!("seal a new value with `credloader rotate {name}` before then"),
            );
        }
    }

    newline_findings(&mut f, &served, &state, &store);

    // Env dirs: nobody but root may write to them.
    let mut env_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    env_dirs.insert(loader.env_dir.clone());
    for s in served
        .services
        .values()
        .filter(|s| s.delivery == Delivery::Env)
    {
        env_dirs.insert(safefs::split(&s.env_file).0.to_path_buf());
    }
    for d in &env_dirs {
        // An image's /run is a tmpfs once it boots; only a live one is told.
        if !root.is_offline() && !on_tmpfs(d) {
            f.add(
                Severity::Warning,
                root.host(d).shown().to_string(),
                "env dir is not on a tmpfs: plaintext env files are written to a disk and outlive a power-off",
                "keep env files under /run (the default `env_dir`), or mount a tmpfs there",
            );
        }
        if let Ok(m) = std::fs::symlink_metadata(root.host(d)) {
            if m.file_type().is_dir() && (m.uid() != 0 || m.mode() & 0o022 != 0) {
                f.add(
                    Severity::Error,
                    root.host(d).shown().to_string(),
                    format!(
                        "env dir is owned by uid {} with mode {:04o}: someone other than root can create or swap files in it",
                        m.uid(),
                        m.mode() & 0o7777
                    ),
                    format!("chown root:root {0} && chmod 0755 {0}", root.host(d).shown()),
                );
            }
        }
    }

    // Per service: env file, drop-ins, unit.
    let accounts = Accounts::new(root).ok();
    for s in served.services.values() {
        service_checks(&mut f, config, root, manager, s, &state, accounts.as_ref());
    }
    let services: Vec<&Service> = served.services.values().copied().collect();
    override_findings(&mut f, root, manager, loader, &services);

    f.0.sort_by(|a, b| (a.severity, &a.subject).cmp(&(b.severity, &b.subject)));
    f.0
}

/// Sealed values that end in a newline their consumers do not keep, as the
/// last apply that decrypted them recorded (see [`crate::newline`]): an
/// env file gets the value without it (a warning: the service gets what
/// `$(cat ...)` gave it, but the sealed file is not what is meant), while
/// `delivery = "credential"` gets it as sealed (an error: the service
/// receives bytes the policy says are not part of the value).
fn newline_findings(f: &mut Findings, served: &Served, state: &State, store: &Store) {
    for name in served.all_credentials() {
        let (Some(rec), Ok(sealed)) = (state.sealed.get(name), store.sealed(name)) else {
            continue;
        };
        if rec.ends_in_newline != Some(true) || rec.digest != sealed.digest {
            continue;
        }
        let (mut stripped, mut handed) = (Vec::new(), Vec::new());
        for s in served
            .consumers(name)
            .filter(|s| !s.keep_newline.contains(name))
        {
            match s.delivery {
                Delivery::Env => stripped.push(s.name.as_str()),
                Delivery::Credential => handed.push(s.name.as_str()),
            }
        }
        let subject = format!("credential {name}");
        if !stripped.is_empty() {
            f.add(
                Severity::Warning,
                subject.clone(),
                format!(
                    "its sealed value ends in a newline (as `echo` adds); {} get{} it without \
                     (as `$(cat ...)` gave it)",
                    stripped.join(", "),
                    if stripped.len() == 1 { "s" } else { "" }
                ),
                crate::newline::fix(name),
            );
        }
        if !handed.is_empty() {
            f.add(
                Severity::Error,
                subject,
                format!(
                    "its sealed value ends in a newline, and {} (delivery = \"credential\") \
                     get{} it as sealed, newline included",
                    handed.join(", "),
                    if handed.len() == 1 { "s" } else { "" }
                ),
                crate::newline::fix(name),
            );
        }
    }
}

/// Whatever in a consumer's unit wins over credloader's env file: an error
/// when it keeps the service from getting credloader's values.
fn override_findings(
    f: &mut Findings,
    root: &Root,
    manager: Manager,
    loader: &crate::config::Loader,
    services: &[&Service],
) {
    let found = crate::overrides::find(manager, root, loader, services);
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
                o.problem(root, s),
                o.fix(root, s),
            );
        }
    }
}

/// Whether `dir` (or, if it does not exist yet, its nearest existing
/// parent) is on a tmpfs or ramfs.
fn on_tmpfs(dir: &Path) -> bool {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    // linux/magic.h; nix does not name it.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(dir);
    statfs(existing).is_ok_and(|s| [TMPFS_MAGIC, RAMFS_MAGIC].contains(&s.filesystem_type()))
}

/// `env_file_dirs` entries that may not be declared (see `envplace`).
fn place_findings(f: &mut Findings, config: &Config) {
    for p in &config.place_problems {
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

/// A file whose services cannot be named may define any service that left
/// the configuration: apply keeps serving those (see `State::fallbacks`).
fn unnamed_findings(f: &mut Findings, config: &Config, served: &Served) {
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

/// `s` is a last good definition from the state, not one from the files
/// (it has no file and line to point at).
fn served_from_last_good(config: &Config, s: &Service) -> bool {
    !config.services.contains_key(&s.name)
}

fn libc_ifmt() -> u32 {
    0o170000
}

fn service_checks(
    f: &mut Findings,
    config: &Config,
    root: &Root,
    manager: Manager,
    s: &Service,
    state: &State,
    accounts: Option<&Accounts>,
) {
    let loader = &config.loader;
    let subject = format!("service {}", s.name);
    // A record with applied_at 0 was made before a first write that has
    // not completed: the service was never applied.
    let rec = state.services.get(&s.name).filter(|r| r.applied_at != 0);

    if s.delivery == Delivery::Env {
        let (dir, name) = safefs::split(&s.env_file);
        let st = Dir::open(
            root,
            dir,
            DirPolicy {
                create: None,
                strict: false,
            },
        )
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
                if let Some(acct) =
                    accounts.and_then(|a| a.lookup(&s.user, s.group.as_deref()).ok())
                {
                    if st.st_uid != acct.uid
                        || st.st_gid != acct.gid
                        || st.st_mode & 0o7777 != 0o600
                    {
                        f.add(
                            Severity::Error,
                            root.host(&s.env_file).shown().to_string(),
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
                held_env_file(f, root, s, &st);
                if let Some(rec) = rec {
                    if rec.env_file_id != Some(FileId::from(&st)) {
                        f.add(
                            Severity::Error,
                            root.host(&s.env_file).shown().to_string(),
                            format!("env file of service {} was modified since the last apply", s.name),
                            "run `credloader apply` to restore it; edit credentials with `credloader rotate`, not in the file",
                        );
                    }
                }
            }
        }
    }

    let ours = s.dropin_path(loader);
    if read_system(root, &ours).is_none() {
        f.add(
            Severity::Warning,
            root.host(&ours).shown().to_string(),
            format!(
                "the drop-in of service {} is missing, so {} does not get its secrets",
                s.name, s.unit
            ),
            "run `credloader apply`",
        );
    }

    // The unit must exist.
    let unit = unit_file(root, &s.unit);
    let loaded = manager
        .property(&s.unit, "LoadState")
        .is_some_and(|l| l == "loaded");
    if unit.is_none() && !loaded {
        f.add(
            Severity::Error,
            subject.clone(),
            format!("its unit {} does not exist", s.unit),
            match served_from_last_good(config, s) {
                true => format!(
                    "install {} (or fix its `unit` when you fix its file)",
                    s.unit
                ),
                false => format!("install {} or fix `unit` at {}", s.unit, s.origin),
            },
        );
    }

    // Legacy EnvironmentFile= drop-ins (privileged Exec lines: `runas`).
    let drops = dropins(root, &s.unit);
    for (path, text) in &drops {
        if *path == ours {
            continue;
        }
        for (k, v) in assignments(text) {
            if k != "EnvironmentFile" {
                continue;
            }
            let file = v.trim_start_matches('-');
            if file.is_empty() {
                continue;
            }
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
    }
    if let (Delivery::Env, Some(accounts)) = (s.delivery, accounts) {
        if let Ok(owner) = accounts.lookup(&s.user, s.group.as_deref()) {
            let runs_as = runas::units(manager, root, &[&s.unit]);
            if let Some((problem, fix)) = runas::mismatch(s, owner, &runs_as[0], accounts) {
                f.add(Severity::Error, subject.clone(), problem, fix);
            }
        }
    }
}

/// Another name for a service's env file, or a lease on it: its owner's
/// doing (see [`crate::holds`]). It does not stop credloader, but a service
/// has no reason to do it.
fn held_env_file(f: &mut Findings, root: &Root, s: &Service, st: &nix::sys::stat::FileStat) {
    let path = root.host(&s.env_file).shown().to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_is_told_from_a_disk_even_for_a_dir_not_made_yet() {
        assert!(on_tmpfs(Path::new("/dev/shm/credloader-not-there/env")));
        assert!(!on_tmpfs(Path::new("/proc/credloader-not-there")));
    }
}
