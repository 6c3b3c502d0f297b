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

use crate::config::{Config, Delivery, Service};
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
                    dir.path().display()
                )),
            )),
        }
    }

    /// The services whose config file is broken, among those `wanted`
    /// selects: each one applied before is still served from the definition
    /// it was last applied from (first list: that definition, and what is
    /// wrong with its file); one never applied cannot be served (second
    /// list: its name, and what is wrong). `apply` serves the first list;
    /// `rotate`, `seal` and `rollback` validate, apply to and verify it too.
    pub fn stored_definitions(
        &self,
        config: &Config,
        wanted: impl Fn(&str) -> bool,
    ) -> (Vec<StoredDefinition>, Vec<Unservable>) {
        let mut stored = Vec::new();
        let mut unservable = Vec::new();
        for (name, problems) in config.broken.iter().filter(|(n, _)| wanted(n)) {
            let text = problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            match self.services.get(name).and_then(|r| r.definition.clone()) {
                Some(def) => stored.push((
                    def,
                    format!("{text}; serving it from its last good definition"),
                )),
                None => unservable.push((name.clone(), text)),
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

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
