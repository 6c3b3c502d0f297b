//! What the last successful apply did, in `<state_dir>/state.json`.
//!
//! It lets a re-apply with nothing changed skip decryption entirely, lets
//! `status` and `check` tell whether an env file was touched since, and lets
//! apply remove the files of services that left the configuration. It holds
//! names, paths, digests of *sealed* bytes and file identities; never a
//! value, nor anything computed from one.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;

use nix::sys::stat::FileStat;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Delivery, Problem, Service};
use crate::escape::ShowPath;
use crate::safefs::{Dir, FsError, Owner};

pub const FILE: &str = "state.json";
const VERSION: u32 = 1;

/// Identity of a file as written: any later change moves its ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: i64,
    pub ctime_ns: i64,
}

impl From<&FileStat> for FileId {
    fn from(st: &FileStat) -> Self {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub unit: String,
    pub delivery: Delivery,
    /// Digest of everything the service's files are made from.
    pub inputs: String,
    /// Digest of each sealed credential it was built from.
    pub credentials: BTreeMap<String, String>,
    pub env_file: Option<PathBuf>,
    pub env_file_id: Option<FileId>,
    pub dropin: PathBuf,
    /// Seconds since the epoch.
    pub applied_at: u64,
    /// A `daemon-reload` this service's files are owed: recorded before its
    /// files change, cleared once systemd accepted it. A crash or a failed
    /// `systemctl` in between is retried by the next run.
    #[serde(default)]
    pub pending_reload: bool,
    /// Likewise its `on_change` restart.
    #[serde(default)]
    pub pending_restart: bool,
    /// Identity of the drop-in as written, so a re-apply can tell it is
    /// untouched from one stat.
    #[serde(default)]
    pub dropin_id: Option<FileId>,
    /// The definition it was last applied from: if its config file later
    /// fails to load, apply keeps serving it from this (no secrets in it).
    #[serde(default)]
    pub definition: Option<crate::config::Service>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub services: BTreeMap<String, ServiceState>,
    /// The main configuration file the services came from. Services that
    /// leave *this* configuration have their files removed; a run with
    /// another `--config` removes nothing.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Each sealed credential as last read: its digest and the identity of
    /// the file that had it. A file with the same identity (device, inode,
    /// size, ctime: any write, rename-over or chmod moves one of them) has
    /// the same bytes, so a re-apply need not read and hash it again.
    #[serde(default)]
    pub sealed: BTreeMap<String, SealedRecord>,
    /// Env files no service uses any more (one moved its env file, or
    /// switched to credential delivery) that still hold plaintext: recorded
    /// with the record that stopped naming them, removed once systemd has
    /// loaded that drop-in, and retried until they are gone. A moved env
    /// file's new path is recorded here too before it is first written, so
    /// that it is credloader's even if the run dies before its record names
    /// it ([`State::wrote_env_file`]); it is forgotten once a service uses it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub leftover_env_files: std::collections::BTreeSet<PathBuf>,
}

/// See [`State::sealed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRecord {
    pub digest: String,
    pub id: FileId,
    /// The last apply that read these bytes decrypted them under their own
    /// name (not a legacy `NAME.cred`), so PID 1's `LoadCredentialEncrypted=`
    /// will take them too. Only such credentials are handed to PID 1 at boot
    /// (see [`crate::boot`]); false in a state written before this existed.
    #[serde(default)]
    pub verified: bool,
    /// The value these bytes decrypt to ends in a newline: one bit, never
    /// the value. apply leaves that newline out of env files (unless the
    /// credential keeps it, see [`crate::newline`]) and warns when it does;
    /// `check` reports it from here every time. `None`: not yet decrypted
    /// by a version that records it (the next apply decrypts it once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_in_newline: Option<bool>,
}

impl State {
    /// Loads the state; an unreadable or foreign file counts as no state
    /// (everything is then decrypted and compared again, which is safe).
    pub fn load(dir: &Dir) -> Result<(State, Option<String>), FsError> {
        let bytes = match dir.read(OsStr::new(FILE), 16 * 1024 * 1024) {
            Ok(Some((bytes, _))) => bytes,
            Ok(None) => return Ok((State::default(), None)),
            // It is only a record: without it everything is decrypted and
            // compared again (and nothing is removed), which is safe.
            Err(e) => {
                return Ok((
                    State::default(),
                    Some(format!("{e}; working without the record of the last apply")),
                ))
            }
        };
        match serde_json::from_slice::<State>(&bytes) {
            Ok(s) if s.version == VERSION => Ok((s, None)),
            Ok(_) | Err(_) => Ok((
                State::default(),
                Some(format!(
                    "{}/{FILE} is unreadable; rebuilding it",
                    dir.path().shown()
                )),
            )),
        }
    }

    /// The state for a command that only looks: none when it cannot be read.
    pub fn inspect(root: &crate::root::Root, state_dir: &std::path::Path) -> State {
        Dir::open(root, state_dir, crate::safefs::DirPolicy::EXISTING)
            .ok()
            .and_then(|d| State::load(&d).ok())
            .map(|(s, _)| s)
            .unwrap_or_default()
    }

    /// Whether the file at `path` is one credloader wrote (or set out to
    /// write, see `apply`): some service's recorded env file, or one no
    /// service uses any more. apply never writes over any other file.
    pub fn wrote_env_file(&self, path: &std::path::Path) -> bool {
        self.leftover_env_files.contains(path)
            || self
                .services
                .values()
                .any(|r| r.env_file.as_deref() == Some(path))
    }

    /// The definition service `name` was last applied from.
    pub fn last_good(&self, name: &str) -> Option<&Service> {
        self.services.get(name).and_then(|r| r.definition.as_ref())
    }

    /// Each service of `config` whose own definition is broken, with what
    /// is wrong and the last good definition apply serves it from (`None`:
    /// never applied, so it cannot be served). While some file's services
    /// cannot be named ([`Config::orphan_problems`]: it cannot be read, or
    /// does not parse and shows no header), each service recorded here that
    /// the configuration does not have may be defined in that file, and
    /// counts as broken by it. The one rule `apply`, `status`, `list`,
    /// `check`, `seal`, `rotate`, `rollback` and `sync` share; see [`Served`].
    pub fn fallbacks<'a>(
        &'a self,
        config: &'a Config,
    ) -> impl Iterator<Item = (&'a str, &'a [Problem], Option<&'a Service>)> + 'a {
        let named = config
            .broken
            .iter()
            .map(|(name, problems)| (name.as_str(), problems.as_slice(), self.last_good(name)));
        let unnamed = self
            .services
            .iter()
            .filter(|_| !config.orphan_problems.is_empty())
            .filter(|(name, _)| {
                !config.services.contains_key(*name) && !config.broken.contains_key(*name)
            })
            .map(|(name, record)| {
                let problems = config.orphan_problems.as_slice();
                (name.as_str(), problems, record.definition.as_ref())
            });
        named.chain(unnamed)
    }

    /// The services whose config file is broken, among those `wanted`
    /// selects, as [`State::fallbacks`] has them: each one applied before
    /// is still served from the definition it was last applied from (first
    /// list: that definition, and what is wrong with its file); one never
    /// applied cannot be served (second list: its name, and what is wrong).
    /// `apply` serves the first list; `rotate`, `seal` and `rollback`
    /// validate, apply to and verify it too.
    pub fn stored_definitions(
        &self,
        config: &Config,
        wanted: impl Fn(&str) -> bool,
    ) -> (Vec<StoredDefinition>, Vec<Unservable>) {
        let mut stored = Vec::new();
        let mut unservable = Vec::new();
        for (name, problems, last_good) in self.fallbacks(config).filter(|(n, ..)| wanted(n)) {
            let text = problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            match last_good {
                Some(def) => stored.push((
                    def.clone(),
                    format!("{text}; serving it from its last good definition"),
                )),
                None => unservable.push((name.to_string(), text)),
            }
        }
        (stored, unservable)
    }

    pub fn save(&mut self, dir: &Dir) -> Result<(), FsError> {
        self.version = VERSION;
        let bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        dir.write_atomic(OsStr::new(FILE), &bytes, Owner::ROOT_0600)
    }
}

/// A service whose config file is broken, served from its record: the
/// definition it was last applied from, and what is wrong with its file.
pub type StoredDefinition = (Service, String);

/// A service whose config file is broken and that was never applied: its
/// name, and what is wrong with its file.
pub type Unservable = (String, String);

/// The services as `apply` serves them: each configured one, and each one
/// whose own definition is broken from the definition it was last applied
/// from ([`State::fallbacks`]). The inspecting commands count services this
/// way, so a typo in a service's file does not make it look gone while its
/// keys are still delivered.
#[derive(Debug, Default)]
pub struct Served<'a> {
    /// Every service that is served, by name.
    pub services: BTreeMap<&'a str, &'a Service>,
    /// Of those, the ones served from their last good definition, with
    /// what is wrong with their own.
    pub stored: BTreeMap<&'a str, &'a [Problem]>,
    /// Services whose definition is broken and that were never applied:
    /// not served at all.
    pub unservable: BTreeMap<&'a str, &'a [Problem]>,
}

impl<'a> Served<'a> {
    pub fn new(config: &'a Config, state: &'a State) -> Served<'a> {
        let mut served = Served {
            services: config
                .services
                .iter()
                .map(|(n, s)| (n.as_str(), s))
                .collect(),
            ..Served::default()
        };
        for (name, problems, last_good) in state.fallbacks(config) {
            match last_good {
                Some(def) => {
                    served.services.insert(name, def);
                    served.stored.insert(name, problems);
                }
                None => {
                    served.unservable.insert(name, problems);
                }
            }
        }
        served
    }

    /// The services that consume `credential`.
    pub fn consumers<'b>(&'b self, credential: &'b str) -> impl Iterator<Item = &'a Service> + 'b {
        self.services
            .values()
            .copied()
            .filter(move |s| s.credentials().contains(&credential))
    }

    /// Every credential a served service needs.
    pub fn all_credentials(&self) -> std::collections::BTreeSet<&'a str> {
        self.services
            .values()
            .flat_map(|s| s.credentials())
            .collect()
    }
}

/// What is wrong with a broken definition, and the files to fix, as one
/// line: `PROBLEM; PROBLEM (fix FILE)`.
pub fn describe(problems: &[Problem]) -> String {
    let mut files: Vec<String> = problems
        .iter()
        .map(|p| p.origin.file.shown().to_string())
        .collect();
    files.sort();
    files.dedup();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    format!("{} (fix {})", text.join("; "), files.join(", "))
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_texts;

    #[test]
    fn served_counts_broken_services_as_apply_does() {
        let svc = |n: &str, c: &str| {
            format!(
                "[services.{n}]\nunit = \"{n}.service\"\nuser = \"qt\"\ncredentials = [\"{c}\"]\n"
            )
        };
        let good = from_texts(vec![
            ("/m.toml".into(), "# main\n".into()),
            ("/d/a.toml".into(), svc("a", "A")),
            ("/d/b.toml".into(), svc("b", "B")),
        ])
        .unwrap();
        let mut state = State::default();
        for s in good.services.values() {
            state.services.insert(
                s.name.clone(),
                ServiceState {
                    unit: s.unit.clone(),
                    delivery: s.delivery,
                    inputs: String::new(),
                    credentials: BTreeMap::new(),
                    env_file: None,
                    env_file_id: None,
                    dropin: PathBuf::new(),
                    applied_at: 0,
                    pending_reload: false,
                    pending_restart: false,
                    dropin_id: None,
                    definition: Some(s.clone()),
                },
            );
        }
        // b's file breaks; c is broken and was never applied.
        let broken = from_texts(vec![
            ("/m.toml".into(), "# main\n".into()),
            ("/d/a.toml".into(), svc("a", "A")),
            (
                "/d/b.toml".into(),
                svc("b", "B").replace("user = \"qt\"", "user = \"qt"),
            ),
            (
                "/d/c.toml".into(),
                svc("c", "C").replace("credentials", "credentails"),
            ),
        ])
        .unwrap();
        let served = Served::new(&broken, &state);
        assert_eq!(
            served.services.keys().copied().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(served.stored.keys().copied().collect::<Vec<_>>(), ["b"]);
        assert_eq!(served.unservable.keys().copied().collect::<Vec<_>>(), ["c"]);
        assert_eq!(
            served.all_credentials().into_iter().collect::<Vec<_>>(),
            ["A", "B"]
        );
        assert_eq!(
            served
                .consumers("B")
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        // A file whose services cannot be named may define any recorded
        // service the configuration lacks: b is served from its record.
        let unnamed = from_texts(vec![
            ("/m.toml".into(), "# main\n".into()),
            ("/d/a.toml".into(), svc("a", "A")),
            (
                "/d/b.toml".into(),
                "services.b.unit = \"b.service\nuser = 1\n".into(),
            ),
        ])
        .unwrap();
        assert!(unnamed.broken.is_empty() && unnamed.orphan_problems.len() == 1);
        let served_unnamed = Served::new(&unnamed, &state);
        assert_eq!(
            served_unnamed.stored.keys().copied().collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(served_unnamed.services["b"], state.last_good("b").unwrap());
        let d = describe(served.stored["b"]);
        assert!(
            d.starts_with("/d/b.toml:3: ") && d.ends_with("(fix /d/b.toml)"),
            "{d}"
        );
    }
}
