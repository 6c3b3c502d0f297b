//! Service accounts: user and group names to ids.
//!
//! On the running system through NSS (`getpwnam`/`getgrnam`, so LDAP and
//! friends work); under `--root` from DIR/etc/passwd and DIR/etc/group.

use std::collections::HashMap;

use thiserror::Error;

use crate::escape::ShowPath;
use crate::root::Root;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UserError {
    #[error("user `{0}` does not exist; create it (`useradd --system {0}`) or fix `user`")]
    NoUser(String),
    #[error("group `{0}` does not exist; create it or fix `group`")]
    NoGroup(String),
    #[error("cannot read {0}: {1}")]
    Read(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// user name -> (uid, primary gid), and group name -> gid.
type Databases = (HashMap<String, (u32, u32)>, HashMap<String, u32>);

/// A user name and an optional group name.
type Lookup = (String, Option<String>);

/// Resolves accounts; offline databases are read once.
pub struct Accounts {
    offline: Option<Databases>,
    /// Live lookups go through NSS (files, systemd, LDAP...): each once.
    seen: std::sync::Mutex<HashMap<Lookup, Result<Account, UserError>>>,
}

impl Accounts {
    pub fn new(root: &Root) -> Result<Accounts, UserError> {
        if !root.is_offline() {
            return Ok(Accounts {
                offline: None,
                seen: Default::default(),
            });
        }
        let read = |p: &str| {
            let path = root.host(std::path::Path::new(p));
            match std::fs::read_to_string(&path) {
                Ok(t) => Ok(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(UserError::Read(path.shown().to_string(), e.to_string())),
            }
        };
        let mut users = HashMap::new();
        for line in read("/etc/passwd")?.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if let (Some(name), Some(uid), Some(gid)) = (f.first(), f.get(2), f.get(3)) {
                if let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse()) {
                    users.insert(name.to_string(), (uid, gid));
                }
            }
        }
        let mut groups = HashMap::new();
        for line in read("/etc/group")?.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if let (Some(name), Some(gid)) = (f.first(), f.get(2)) {
                if let Ok(gid) = gid.parse() {
                    groups.insert(name.to_string(), gid);
                }
            }
        }
        Ok(Accounts {
            offline: Some((users, groups)),
            seen: Default::default(),
        })
    }

    /// The uid of `user` and the gid of `group` (default: the user's primary group).
    pub fn lookup(&self, user: &str, group: Option<&str>) -> Result<Account, UserError> {
        let key = (user.to_string(), group.map(str::to_string));
        if let Some(hit) = self.seen.lock().unwrap().get(&key) {
            return hit.clone();
        }
        let found = self.resolve(user, group);
        self.seen.lock().unwrap().insert(key, found.clone());
        found
    }

    fn resolve(&self, user: &str, group: Option<&str>) -> Result<Account, UserError> {
        let (uid, primary) = match &self.offline {
            Some((users, _)) => *users
                .get(user)
                .ok_or_else(|| UserError::NoUser(user.into()))?,
            None => {
                let u = nix::unistd::User::from_name(user)
                    .ok()
                    .flatten()
                    .ok_or_else(|| UserError::NoUser(user.into()))?;
                (u.uid.as_raw(), u.gid.as_raw())
            }
        };
        let gid = match group {
            None => primary,
            Some(g) => match &self.offline {
                Some((_, groups)) => *groups.get(g).ok_or_else(|| UserError::NoGroup(g.into()))?,
                None => nix::unistd::Group::from_name(g)
                    .ok()
                    .flatten()
                    .ok_or_else(|| UserError::NoGroup(g.into()))?
                    .gid
                    .as_raw(),
            },
        };
        Ok(Account { uid, gid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_lookup_reads_the_image() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nqt:x:1500:1501::/home/qt:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nqt:x:1501:\ntrading:x:1600:qt\n",
        )
        .unwrap();
        let a = Accounts::new(&Root::at(t.path())).unwrap();
        assert_eq!(
            a.lookup("qt", None).unwrap(),
            Account {
                uid: 1500,
                gid: 1501
            }
        );
        assert_eq!(
            a.lookup("qt", Some("trading")).unwrap(),
            Account {
                uid: 1500,
                gid: 1600
            }
        );
        assert_eq!(
            a.lookup("nobody2", None).unwrap_err(),
            UserError::NoUser("nobody2".into())
        );
        assert!(a.lookup("qt", Some("nogroup2")).is_err());
    }

    #[test]
    fn live_lookup_finds_root() {
        let a = Accounts::new(&Root::live()).unwrap();
        assert_eq!(a.lookup("root", None).unwrap(), Account { uid: 0, gid: 0 });
    }
}
