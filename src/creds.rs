//! Stage 2: read credentials.
//!
//! Sealed `NAME.cred` files are read from the creds dir (never through a
//! symlink) and hashed; their plaintext comes from `$CREDENTIALS_DIRECTORY`
//! when PID 1 already decrypted them for this unit, and otherwise from the
//! real `systemd-creds decrypt`, several at a time.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::root::Root;
use crate::safefs::{Dir, DirPolicy, FsError};
use crate::secret::Secret;
use crate::systemd_creds::{self, CredsError, MAX_PLAINTEXT, MAX_SEALED};

#[derive(Debug, Error, Clone)]
pub enum CredError {
    #[error("credential {name} is missing: no {}; seal it with `credloader seal {name}`", path.display())]
    Missing { name: String, path: PathBuf },
    #[error("credential {name}: {message}")]
    Unreadable { name: String, message: String },
    #[error("credential {name}: {source}")]
    Decrypt { name: String, source: CredsError },
}

/// A sealed credential as found on disk (ciphertext is not secret).
#[derive(Debug, Clone)]
pub struct Sealed {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of the sealed bytes.
    pub digest: String,
    pub mtime: i64,
}

/// A decrypted credential.
#[derive(Debug)]
pub struct Plain {
    pub secret: Secret,
    /// Sealed without `--name` (embedded name `NAME.cred`).
    pub legacy: bool,
}

pub fn hex_digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The creds dir, opened once.
pub struct Store {
    dir: Result<Dir, FsError>,
    path: PathBuf,
    cache: Mutex<BTreeMap<String, Result<Sealed, CredError>>>,
}

impl Store {
    /// Opens `creds_dir`; a failure is reported per credential later, so that
    /// services without credentials are still served.
    pub fn open(root: &Root, creds_dir: &Path) -> Store {
        Store {
            dir: Dir::open(root, creds_dir, DirPolicy::EXISTING),
            path: root.host(creds_dir),
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn dir(&self) -> Result<&Dir, &FsError> {
        self.dir.as_ref()
    }

    pub fn file_name(name: &str) -> OsString {
        OsString::from(format!("{name}.cred"))
    }

    /// Reads (once per run) the sealed file of `name`.
    pub fn sealed(&self, name: &str) -> Result<Sealed, CredError> {
        if let Some(hit) = self.cache.lock().unwrap().get(name) {
            return hit.clone();
        }
        let result = self.read_sealed(name);
        self.cache
            .lock()
            .unwrap()
            .insert(name.to_string(), result.clone());
        result
    }

    fn read_sealed(&self, name: &str) -> Result<Sealed, CredError> {
        let dir = self.dir.as_ref().map_err(|e| CredError::Unreadable {
            name: name.into(),
            message: format!("the creds dir is unusable: {e}"),
        })?;
        let file = Self::file_name(name);
        match dir.read(&file, MAX_SEALED) {
            Ok(Some((bytes, st))) => {
                if bytes.is_empty() {
                    return Err(CredError::Unreadable {
                        name: name.into(),
                        message: format!(
                            "{} is empty; seal it again with `credloader rotate {name}`",
                            self.path.join(&file).display()
                        ),
                    });
                }
                Ok(Sealed {
                    name: name.into(),
                    digest: hex_digest(&bytes),
                    bytes,
                    mtime: st.st_mtime,
                })
            }
            Ok(None) => Err(CredError::Missing {
                name: name.into(),
                path: self.path.join(&file),
            }),
            Err(e) => Err(CredError::Unreadable {
                name: name.into(),
                message: e.to_string(),
            }),
        }
    }
}

/// Where plaintext comes from.
#[derive(Debug, Clone)]
pub enum Decrypter {
    /// Run `systemd-creds decrypt` for each credential.
    SystemdCreds,
    /// Use `$CREDENTIALS_DIRECTORY/NAME` where present, `systemd-creds` otherwise.
    Handed(PathBuf),
}

impl Decrypter {
    /// `Handed` when running inside a unit that was given credentials (not under `--root`).
    pub fn detect(root: &Root) -> Decrypter {
        match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(d) if !root.is_offline() && !d.is_empty() => Decrypter::Handed(PathBuf::from(d)),
            _ => Decrypter::SystemdCreds,
        }
    }

    fn one(&self, sealed: &Sealed) -> Result<Plain, CredError> {
        if let Decrypter::Handed(dir) = self {
            let handed = Dir::open(
                &Root::live(),
                dir,
                crate::safefs::DirPolicy {
                    create: None,
                    strict: false,
                },
            )
            .ok()
            .and_then(|d| {
                d.read_secret(OsStr::new(&sealed.name), MAX_PLAINTEXT)
                    .ok()
                    .flatten()
            });
            if let Some((secret, _)) = handed {
                return Ok(Plain {
                    secret,
                    legacy: false,
                });
            }
        }
        systemd_creds::decrypt(&sealed.name, &sealed.bytes)
            .map(|(secret, legacy)| Plain { secret, legacy })
            .map_err(|source| CredError::Decrypt {
                name: sealed.name.clone(),
                source,
            })
    }

    /// Decrypts every credential in `sealed`, `jobs` at a time.
    pub fn decrypt_all(
        &self,
        sealed: &[&Sealed],
        jobs: usize,
    ) -> BTreeMap<String, Result<Plain, CredError>> {
        let next = AtomicUsize::new(0);
        let results = Mutex::new(BTreeMap::new());
        let workers = jobs.clamp(1, sealed.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = sealed.get(i) else { break };
                    let r = self.one(item);
                    results.lock().unwrap().insert(item.name.clone(), r);
                });
            }
        });
        results.into_inner().unwrap()
    }
}

/// A sensible number of concurrent decrypts: they are process spawns that
/// mostly wait, so a few more than the cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .clamp(2, 16)
}
