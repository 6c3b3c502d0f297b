//! `--root DIR`: the system credloader works on, like `systemctl --root`.
//!
//! Every configured path names a place on the running system
//! (`/run/credloader/x.env`); [`Root::host`] maps it beneath DIR when an
//! offline image is the target. With a root, no systemd call is made and
//! accounts come from DIR/etc/passwd and DIR/etc/group.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Root {
    prefix: Option<PathBuf>,
}

impl Root {
    /// The running system.
    pub fn live() -> Self {
        Root { prefix: None }
    }

    /// An image at `dir` (`/` counts as the running system).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        if dir == Path::new("/") {
            Root::live()
        } else {
            Root { prefix: Some(dir) }
        }
    }

    /// True when working on an image: no systemd calls.
    pub fn is_offline(&self) -> bool {
        self.prefix.is_some()
    }

    /// The directory every path is taken beneath (`/` when live).
    pub fn base(&self) -> &Path {
        self.prefix.as_deref().unwrap_or(Path::new("/"))
    }

    /// Where the system path `p` is on this machine.
    pub fn host(&self, p: &Path) -> PathBuf {
        match &self.prefix {
            None => p.to_path_buf(),
            Some(prefix) => prefix.join(p.strip_prefix("/").unwrap_or(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_beneath_the_prefix() {
        let r = Root::at("/img");
        assert_eq!(r.host(Path::new("/etc/x")), PathBuf::from("/img/etc/x"));
        assert!(r.is_offline());
        assert_eq!(
            Root::at("/").host(Path::new("/etc/x")),
            PathBuf::from("/etc/x")
        );
        assert!(!Root::live().is_offline());
    }
}
