//! A consumer's unit as the audit (and `import`) reads it beneath `--root`:
//! its file, its drop-ins and their assignment lines.

use std::path::{Path, PathBuf};

use crate::root::Root;
use crate::unitfile;

/// Reads a system file beneath `root`; an absolute symlink (common for
/// units) is resolved beneath the root, one level deep.
pub(super) fn read_system(root: &Root, path: &Path) -> Option<String> {
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
