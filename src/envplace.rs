//! Where an env file may be placed.
//!
//! An env file becomes its service user's: whoever owns it can rewrite it.
//! So it may only go where a slip in the configuration cannot hand that user
//! a file that matters (`/etc/shadow`, a sealed credential, a config
//! drop-in, the state, a unit drop-in that systemd runs as root):
//!
//! - beneath `[loader] env_dir` (default `/run/credloader`), or beneath a
//!   directory the operator declares in `[loader] env_file_dirs`; nowhere
//!   else, whatever exists there;
//! - never in credloader's own places (the creds, state and drop-in dirs,
//!   the config files), in a systemd unit, configuration, credential or
//!   state directory (any path with a `systemd` component, the credstores),
//!   or in one of the few other directories whose files root's tools trust
//!   ([`TRUSTED_BY_ROOT`]), even when declared;
//! - never a hidden name (`.NAME`): credloader keeps its own files there
//!   (temp files, the no-op stamp);
//!
//! and `env_dir` and each `env_file_dirs` entry must be a directory of its
//! own: not a bare system directory ([`SYSTEM_DIRS`]), nor one of the
//! places above, nor an ancestor of one.
//!
//! The checks are on the path's text: that is enough, because credloader
//! never follows a symlink on the way to a file it writes (see `safefs`).

use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// Directories too broad to declare as a home for env files.
pub const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/dev/shm",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/run/lock",
    "/run/shm",
    "/run/user",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/include",
    "/usr/lib",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/local",
    "/usr/local/bin",
    "/usr/local/etc",
    "/usr/local/lib",
    "/usr/local/sbin",
    "/usr/local/share",
    "/usr/sbin",
    "/usr/share",
    "/usr/src",
    "/var",
    "/var/backups",
    "/var/cache",
    "/var/lib",
    "/var/local",
    "/var/lock",
    "/var/log",
    "/var/mail",
    "/var/opt",
    "/var/run",
    "/var/spool",
    "/var/tmp",
];

/// systemd's credential stores (`ImportCredential=`, `LoadCredential=`
/// search them). Every other systemd directory has a `systemd` component.
const CREDSTORES: &[&str] = &[
    "/etc/credstore",
    "/etc/credstore.encrypted",
    "/run/credstore",
    "/run/credstore.encrypted",
    "/usr/lib/credstore",
    "/usr/lib/credstore.encrypted",
    "/usr/local/lib/credstore",
    "/usr/local/lib/credstore.encrypted",
];

/// Directories whose files root's tools read as instructions (run a
/// command, grant a right, load a library), and the kernel's own.
pub const TRUSTED_BY_ROOT: &[&str] = &[
    "/boot",
    "/dev",
    "/etc/apt",
    "/etc/cron.d",
    "/etc/cron.daily",
    "/etc/cron.hourly",
    "/etc/cron.monthly",
    "/etc/cron.weekly",
    "/etc/dbus-1",
    "/etc/init.d",
    "/etc/ld.so.conf.d",
    "/etc/logrotate.d",
    "/etc/modprobe.d",
    "/etc/pam.d",
    "/etc/polkit-1",
    "/etc/profile.d",
    "/etc/security",
    "/etc/ssh",
    "/etc/sudoers.d",
    "/etc/sysctl.d",
    "/etc/sysusers.d",
    "/etc/tmpfiles.d",
    "/etc/udev",
    "/proc",
    "/sys",
    "/usr/lib/sysusers.d",
    "/usr/lib/tmpfiles.d",
    "/usr/lib/udev",
    "/var/spool/cron",
];

/// Why an env file, or a directory for env files, is refused. Each says
/// what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlaceError {
    #[error(
        "{} is not beneath {}; env files go only there: move it, or declare its directory \
         in [loader] env_file_dirs",
        path.display(), allowed.join(" or ")
    )]
    Outside { path: PathBuf, allowed: Vec<String> },
    #[error(
        "{} {} {} ({what}), which its service user would own; pick a path beneath {}",
        path.display(), if path == dir { "is" } else { "is inside" }, dir.display(), allowed.join(" or ")
    )]
    Protected {
        path: PathBuf,
        dir: PathBuf,
        what: &'static str,
        allowed: Vec<String>,
    },
    #[error(
        "{} is a hidden name, which credloader keeps for its own files (temp files, the no-op \
         stamp); give it a name that does not start with `.`",
        path.display()
    )]
    Hidden { path: PathBuf },
    #[error(
        "{} is a system directory, too broad to hold env files; declare a directory of their \
         own beneath it (e.g. {}/credloader-env)",
        dir.display(), if dir == Path::new("/") { "" } else { dir.to_str().unwrap_or_default() }
    )]
    System { dir: PathBuf },
    #[error(
        "{} is beneath {}, which [loader] env_file_dirs may not declare: {why}",
        path.display(), dir.display()
    )]
    Undeclarable {
        path: PathBuf,
        dir: PathBuf,
        why: Box<PlaceError>,
    },
    #[error(
        "{} {} {} ({what}); declare a directory of their own that holds nothing else",
        dir.display(), if dir == protected { "is" } else if dir.starts_with(protected) { "is inside" } else { "contains" },
        protected.display()
    )]
    Overlaps {
        dir: PathBuf,
        protected: PathBuf,
        what: &'static str,
    },
}

/// The places of one configuration: where env files may go, and what they
/// must stay out of.
#[derive(Debug, Clone)]
pub struct Places {
    allowed: Vec<PathBuf>,
    protected: Vec<(PathBuf, &'static str)>,
    /// The `env_file_dirs` entries [`Places::check_dir`] refuses, and why.
    pub refused: Vec<(PathBuf, PlaceError)>,
}

impl Places {
    /// Env files go beneath `env_dir` and `env_file_dirs`, and stay out of
    /// credloader's `own` places (what each is) and those the module docs
    /// name. An `env_file_dirs` entry that is no place for env files is
    /// [`Places::refused`], not allowed.
    pub fn new(
        env_dir: &Path,
        env_file_dirs: &[PathBuf],
        own: Vec<(PathBuf, &'static str)>,
    ) -> Places {
        let mut protected = own;
        protected.extend(
            CREDSTORES
                .iter()
                .map(|d| (d.into(), "a systemd credential store")),
        );
        protected.extend(
            TRUSTED_BY_ROOT
                .iter()
                .map(|d| (d.into(), "a directory root trusts")),
        );
        let mut places = Places {
            allowed: vec![env_dir.to_path_buf()],
            protected,
            refused: Vec::new(),
        };
        for dir in env_file_dirs {
            match places.check_dir(dir) {
                Ok(()) => places.allowed.push(dir.clone()),
                Err(e) => places.refused.push((dir.clone(), e)),
            }
        }
        places
    }

    fn allowed(&self) -> Vec<String> {
        self.allowed
            .iter()
            .map(|d| d.display().to_string())
            .collect()
    }

    /// The protected place `path` is in (or is), if any.
    fn protecting(&self, path: &Path) -> Option<(PathBuf, &'static str)> {
        let own = self.protected.iter().find(|(p, _)| path.starts_with(p));
        own.cloned()
            .or_else(|| systemd_component(path).map(|at| (at, "a systemd directory")))
    }

    /// Checks an env file's (absolute, normalized) path.
    pub fn check_file(&self, path: &Path) -> Result<(), PlaceError> {
        if let Some((dir, what)) = self.protecting(path) {
            return Err(PlaceError::Protected {
                path: path.to_path_buf(),
                dir,
                what,
                allowed: self.allowed(),
            });
        }
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            return Err(PlaceError::Hidden {
                path: path.to_path_buf(),
            });
        }
        let beneath = |d: &PathBuf| path.starts_with(d) && path != d.as_path();
        if self.allowed.iter().any(beneath) {
            return Ok(());
        }
        if let Some((dir, why)) = self.refused.iter().find(|(d, _)| beneath(d)) {
            return Err(PlaceError::Undeclarable {
                path: path.to_path_buf(),
                dir: dir.clone(),
                why: Box::new(why.clone()),
            });
        }
        Err(PlaceError::Outside {
            path: path.to_path_buf(),
            allowed: self.allowed(),
        })
    }

    /// Checks a directory declared for env files (`env_dir`, an entry of
    /// `env_file_dirs`; absolute and normalized).
    pub fn check_dir(&self, dir: &Path) -> Result<(), PlaceError> {
        if SYSTEM_DIRS.iter().any(|s| Path::new(s) == dir) {
            return Err(PlaceError::System {
                dir: dir.to_path_buf(),
            });
        }
        let (protected, what) = match self.protecting(dir) {
            Some(p) => p,
            None => match self.protected.iter().find(|(p, _)| p.starts_with(dir)) {
                Some(p) => p.clone(),
                None => return Ok(()),
            },
        };
        Err(PlaceError::Overlaps {
            dir: dir.to_path_buf(),
            protected,
            what,
        })
    }
}

/// The path up to its first `systemd` component, if it has one: systemd's
/// unit, generator, configuration, credential and state directories, for
/// the system and for users (`/etc/systemd`, `/run/systemd`,
/// `/usr/lib/systemd`, `/var/lib/systemd`, `~/.config/systemd`,
/// `/run/user/UID/systemd`...).
fn systemd_component(path: &Path) -> Option<PathBuf> {
    let mut at = PathBuf::new();
    for c in path.components() {
        at.push(c);
        if c == Component::Normal("systemd".as_ref()) {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(dirs: &[&str]) -> Places {
        let own = [
            ("/etc/quantum/creds", "the sealed credentials"),
            ("/var/lib/credloader", "credloader's state"),
            ("/etc/systemd/system", "the unit drop-ins"),
            ("/etc/quantum/credloader.toml", "credloader's configuration"),
            ("/etc/quantum/credloader.d", "credloader's configuration"),
            ("/srv/cl.d", "credloader's configuration"),
        ];
        let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
        Places::new(
            Path::new("/run/credloader"),
            &dirs,
            own.iter().map(|(p, w)| (PathBuf::from(p), *w)).collect(),
        )
    }

    #[test]
    fn env_files_go_beneath_env_dir_or_a_declared_dir_only() {
        let p = places(&["/etc/quantum/pm-secrets"]);
        for ok in [
            "/run/credloader/a.env",
            "/run/credloader/sub/a.env",
            "/etc/quantum/pm-secrets/binance.env",
        ] {
            assert_eq!(p.check_file(Path::new(ok)), Ok(()), "{ok}");
        }
        for (bad, want) in [
            (
                "/etc/shadow",
                "is not beneath /run/credloader or /etc/quantum/pm-secrets",
            ),
            ("/etc/quantum/pm-secrets", "is not beneath"),
            (
                "/etc/quantum/creds/MM_KEY.cred",
                "inside /etc/quantum/creds (the sealed credentials)",
            ),
            (
                "/etc/quantum/credloader.d/zz.toml",
                "credloader's configuration",
            ),
            (
                "/etc/quantum/credloader.toml",
                "is /etc/quantum/credloader.toml",
            ),
            ("/srv/cl.d/x.toml", "credloader's configuration"),
            ("/var/lib/credloader/state.json", "credloader's state"),
            (
                "/etc/systemd/system/other.service.d/x.conf",
                "inside /etc/systemd/system",
            ),
            (
                "/run/systemd/system/x.service",
                "inside /run/systemd (a systemd directory)",
            ),
            (
                "/home/qt/.config/systemd/user/x.service",
                "a systemd directory",
            ),
            ("/var/lib/systemd/credential.secret", "a systemd directory"),
            ("/etc/credstore/KEY", "credential store"),
            ("/etc/sudoers.d/qt", "a directory root trusts"),
            ("/run/credloader/.noop-0123456789abcdef", "hidden name"),
        ] {
            let e = p.check_file(Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn a_declared_dir_is_one_of_its_own() {
        let p = places(&[]);
        assert_eq!(p.check_dir(Path::new("/etc/quantum/pm-secrets")), Ok(()));
        assert_eq!(p.check_dir(Path::new("/run/quantum")), Ok(()));
        for (bad, want) in [
            ("/", "system directory"),
            ("/etc", "system directory, too broad"),
            ("/var/lib", "system directory"),
            ("/tmp", "system directory"),
            ("/etc/quantum", "contains /etc/quantum/creds"),
            ("/etc/quantum/creds", "is /etc/quantum/creds"),
            ("/etc/quantum/creds/x", "is inside /etc/quantum/creds"),
            ("/var/lib/credloader", "credloader's state"),
            (
                "/etc/systemd/system",
                "is /etc/systemd/system (the unit drop-ins)",
            ),
            ("/etc/systemd/user", "a systemd directory"),
            ("/usr/lib/systemd/system-generators", "a systemd directory"),
            ("/etc/sudoers.d", "root trusts"),
            ("/srv/cl.d", "credloader's configuration"),
        ] {
            let e = p.check_dir(Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
