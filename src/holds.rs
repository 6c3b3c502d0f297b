//! What the owner of an env file may hold on it: another name (a hard link
//! into a directory it owns on the same filesystem) or a lease
//! (`F_SETLEASE`). Either is the owner's to take, and neither stops
//! credloader: it replaces the file by rename, which leaves the old file to
//! whoever holds it, with only the old value in it. A service has no reason
//! to do either, so apply warns and `check` reports it as a sign of a
//! compromised consumer.

use nix::sys::stat::{major, minor, FileStat};

/// One thing someone holds on a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The file has this many names.
    Links(u64),
    /// A process holds a lease on it.
    Lease,
}

impl Hold {
    /// What was found, for a message about the file.
    pub fn describe(&self) -> String {
        match self {
            Hold::Links(n) => {
                format!("has {n} hard links (another name for it outside credloader's directory)")
            }
            Hold::Lease => "is held by a lease (F_SETLEASE) another process took on it".into(),
        }
    }

    /// How to find who did it.
    pub fn finder(&self, path: &str) -> String {
        match self {
            Hold::Links(_) => format!("`find / -xdev -samefile {path}` lists its other names"),
            Hold::Lease => {
                format!("`grep LEASE /proc/locks` (and `lsof {path}`) names the process")
            }
        }
    }
}

/// Every hold on the file `st` is the status of.
pub fn of(st: &FileStat) -> Vec<Hold> {
    let mut out = Vec::new();
    if st.st_nlink > 1 {
        out.push(Hold::Links(st.st_nlink));
    }
    if leased(st) {
        out.push(Hold::Lease);
    }
    out
}

/// Whether `/proc/locks` lists a lease on the file `st` is the status of.
pub fn leased(st: &FileStat) -> bool {
    std::fs::read_to_string("/proc/locks").is_ok_and(|text| leased_in(&text, st.st_dev, st.st_ino))
}

/// A lease line reads `1: LEASE  ACTIVE    WRITE 4242 00:1a:1234 0 EOF`
/// (`BREAKING` once a break began); the device is `%02x:%02x` of major and
/// minor, the inode decimal. Lines of blocked waiters (`1: -> ...`) name
/// the same file as the line before them.
fn leased_in(text: &str, dev: u64, ino: u64) -> bool {
    let file = format!("{:02x}:{:02x}:{ino}", major(dev), minor(dev));
    text.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"LEASE") && fields.get(5) == Some(&file.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::makedev;

    #[test]
    fn a_lease_is_found_by_device_and_inode_only() {
        let locks = "1: POSIX  ADVISORY  WRITE 99 00:1a:777 0 EOF\n\
                     2: LEASE  BREAKING  READ 4242 00:1a:1234 0 EOF\n\
                     2: -> LEASE  BREAKER  READ 4243 00:1a:1234 0 EOF\n\
                     3: LEASE  ACTIVE    WRITE 4244 fe:01:5 0 EOF\n";
        assert!(leased_in(locks, makedev(0, 0x1a), 1234));
        assert!(leased_in(locks, makedev(0xfe, 1), 5));
        // A POSIX lock is no lease; the same inode on another device is another file.
        assert!(!leased_in(locks, makedev(0, 0x1a), 777));
        assert!(!leased_in(locks, makedev(0, 0x1b), 1234));
        assert!(!leased_in(locks, makedev(0, 0x1a), 12345));
    }
}
