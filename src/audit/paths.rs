//! Findings about the directories credloader writes to: a symlink on a
//! managed path, and env dirs that are on a disk or writable by others.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::{Audit, Findings, Severity};
use crate::config::Delivery;
use crate::escape::ShowPath;
use crate::root::Root;
use crate::safefs;

/// Symlinks anywhere on a managed path, each reported once.
pub(super) fn symlinks_on_managed_paths(a: &Audit, f: &mut Findings) {
    let (root, loader) = (a.root, a.loader);
    let mut managed: BTreeSet<PathBuf> = BTreeSet::new();
    managed.insert(loader.creds_dir.clone());
    managed.insert(loader.state_dir.clone());
    managed.insert(loader.env_dir.clone());
    for s in a.served.services.values() {
        if s.delivery == Delivery::Env {
            managed.insert(s.env_file.clone());
        }
        managed.insert(crate::dropin::path(s, loader));
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

/// Env dirs: on a tmpfs, and nobody but root may write to them.
pub(super) fn env_dirs(a: &Audit, f: &mut Findings) {
    let root = a.root;
    let mut env_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    env_dirs.insert(a.loader.env_dir.clone());
    for s in a
        .served
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
        env_dir_owner(root, d, f);
    }
}

/// An env dir someone other than root can create or swap files in.
fn env_dir_owner(root: &Root, d: &Path, f: &mut Findings) {
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

/// Whether `dir` (or, if it does not exist yet, its nearest existing
/// parent) is on a tmpfs or ramfs.
fn on_tmpfs(dir: &Path) -> bool {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    // linux/magic.h; nix does not name it.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(dir);
    statfs(existing).is_ok_and(|s| [TMPFS_MAGIC, RAMFS_MAGIC].contains(&s.filesystem_type()))
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
