//! The sealed store as the commands change it: the creds dir opened (and
//! created root 0700 when missing), a `NAME.cred` read as it is now,
//! installed atomically root:root 0600, or removed. [`crate::creds::Store`]
//! is the read-only side that `apply` uses.
//!
//! Every caller holds the apply lock while it writes here.

use std::ffi::OsStr;

use thiserror::Error;

use crate::config::Loader;
use crate::creds::Store;
use crate::root::Root;
use crate::safefs::{Dir, DirPolicy, FsError, Owner};
use crate::systemd_creds;

/// The creds dir or a sealed file in it could not be read or written.
/// (The [`FsError`] is part of the message, not a `source`: `{:#}` would
/// print it twice.)
#[derive(Debug, Error)]
pub enum StoreError {
    /// The creds dir could not be opened or created.
    #[error("creds dir: {error}")]
    Dir {
        /// Why.
        error: FsError,
    },
    /// A credential's sealed file could not be read, written or removed.
    #[error("credential {name}: {error}")]
    File {
        /// The credential.
        name: String,
        /// Why.
        error: FsError,
    },
}

impl StoreError {
    fn file(name: &str) -> impl FnOnce(FsError) -> StoreError + '_ {
        move |error| StoreError::File {
            name: name.to_string(),
            error,
        }
    }
}

/// The creds dir, created root 0700 if missing.
pub fn creds_dir(root: &Root, loader: &Loader) -> Result<Dir, StoreError> {
    Dir::open(root, &loader.creds_dir, DirPolicy::create(0o700))
        .map_err(|error| StoreError::Dir { error })
}

/// The creds dir as it is, for a look that changes nothing: `None` when it
/// does not exist yet, an error when it exists but cannot be used (a dry run
/// must not report "would create" over a directory it cannot read).
pub fn existing_creds_dir(root: &Root, loader: &Loader) -> Result<Option<Dir>, StoreError> {
    match Dir::open(root, &loader.creds_dir, DirPolicy::EXISTING) {
        Ok(d) => Ok(Some(d)),
        Err(FsError::Os {
            errno: nix::errno::Errno::ENOENT,
            ..
        }) => Ok(None),
        Err(error) => Err(StoreError::Dir { error }),
    }
}

/// Writes `NAME.cred` atomically, root:root 0600.
pub fn install(creds: &Dir, name: &str, sealed: &[u8]) -> Result<(), StoreError> {
    let file = Store::file_name(name);
    let _ = creds.remove_stale_temps(&file);
    creds
        .write_atomic(&file, sealed, Owner::ROOT_0600)
        .map_err(StoreError::file(name))
}

/// The sealed bytes of `name` as they are now, if any.
pub fn current(creds: &Dir, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    creds
        .read(
            OsStr::new(&format!("{name}.cred")),
            systemd_creds::MAX_SEALED,
        )
        .map(|o| o.map(|(b, _)| b))
        .map_err(StoreError::file(name))
}

/// Removes `NAME.cred` (nothing to do when it is not there).
pub fn remove(creds: &Dir, name: &str) -> Result<(), StoreError> {
    creds
        .remove(&Store::file_name(name))
        .map_err(StoreError::file(name))
}
