//! The no-op fast path: proof that the last apply is still current.
//!
//! An apply with nothing to do still parses every config file and the
//! state, resolves accounts and renders every drop-in to find that out
//! (~9 ms for 50 services). When an apply changed nothing and everything
//! was in order, it leaves a stamp: the identity (device, inode, size,
//! ctime) of every file its outcome depends on, taken *before* it read
//! them, and the report it gave. The next apply whose inputs all still
//! have those identities has, by construction, nothing to do either, and
//! repeats that report after a few hundred `lstat`s.
//!
//! Any change to any input (a config file, the drop-in directory, the
//! state, a sealed credential, an env file, a drop-in, the account files,
//! the credloader binary itself) moves an identity, and the apply runs in
//! full. A change made while the stamped apply ran moved an identity after
//! the snapshot, so it is never masked. The stamp holds paths and
//! identities only, never a value; it lives in `/run` (gone at reboot).

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::SFlag;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, Delivery};
use crate::root::Root;
use crate::safefs::{self, Dir, DirPolicy, Owner};
use crate::state::FileId;

const VERSION: u32 = 1;

/// A stamp is a few hundred bytes per input; anything bigger is not one.
const MAX_STAMP: usize = 16 * 1024 * 1024;

/// Where the stamps live: the default runtime dir, which credloader's units
/// keep writable (`RuntimeDirectory=credloader`).
const DIR: &str = "/run/credloader";

/// The identities of a run's inputs, taken before the run read them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    files: Vec<(PathBuf, Option<FileId>)>,
    /// When it was taken (ns since the epoch, the clock file times use).
    taken_at: i64,
}

/// One input, compact: `[path, [dev, ino, size, ctime_ns]]`, or
/// `[path, null]` for a file that did not exist. The stamp is read by every no-op, so it
/// is kept small and quick to parse.
#[derive(Serialize, Deserialize)]
struct Entry(PathBuf, #[serde(default)] Option<(u64, u64, i64, i64)>);

#[derive(Serialize, Deserialize)]
struct Stamp {
    version: u32,
    key: String,
    inputs: Vec<Entry>,
    said: Said,
}

/// What the stamped run printed, in both forms.
#[derive(Serialize, Deserialize)]
pub struct Said {
    pub human: String,
    pub json: String,
}

/// What an apply must be the same run as: the binary, the system, the
/// configuration and the options that change an apply's outcome.
pub struct Key {
    text: String,
    file: PathBuf,
    /// The root's base: directories above it are not credloader's to check.
    base: PathBuf,
}

impl Key {
    /// `config` as given and whether it was given explicitly (`--config`):
    /// a missing main file is an error only then. `None` when there is no
    /// usable identity for the running binary.
    pub fn new(root: &Root, config: &Path, explicit: bool, restart: bool) -> Option<Key> {
        // The same relative --config from two directories is two configs.
        let config = std::path::absolute(config).ok()?;
        let exe = nix::sys::stat::stat("/proc/self/exe").ok()?;
        let mut h = Sha256::new();
        h.update(env!("CARGO_PKG_VERSION"));
        h.update(serde_json::to_vec(&FileId::from(&exe)).ok()?);
        h.update([0]);
        h.update(root.base().as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(config.as_os_str().as_encoded_bytes());
        h.update([restart as u8, explicit as u8]);
        let text = crate::creds::hex_digest(&h.finalize());
        // One stamp per configuration and root, so runs for different ones
        // do not keep invalidating each other.
        let mut name = Sha256::new();
        name.update(root.base().as_os_str().as_encoded_bytes());
        name.update([0]);
        name.update(config.as_os_str().as_encoded_bytes());
        let name = crate::creds::hex_digest(&name.finalize());
        let file = root
            .host(Path::new(DIR))
            .join(format!(".noop-{}", &name[..16]));
        Some(Key {
            text,
            file,
            base: root.base().to_path_buf(),
        })
    }
}

fn identity(path: &Path) -> Option<FileId> {
    id_of(nix::sys::stat::lstat(path))
}

/// What `lstat` could not tell (an error other than "not there"). A
/// snapshot holding it is never stamped, and a check meeting it fails.
const UNKNOWN: FileId = FileId {
    dev: u64::MAX,
    ino: u64::MAX,
    size: -1,
    ctime_ns: -1,
};

fn id_of(stat: nix::Result<nix::sys::stat::FileStat>) -> Option<FileId> {
    match stat {
        Ok(st) => Some(FileId::from(&st)),
        Err(Errno::ENOENT | Errno::ENOTDIR) => None,
        Err(_) => Some(UNKNOWN),
    }
}

/// How recent a change must be for its file not to be stamped. A file's
/// ctime only moves once per kernel tick (1 to 10 ms): a same-size rewrite
/// in the tick the snapshot was taken in would leave its identity as it
/// was. An input changed this recently is re-read by the next run instead.
const RACY_NS: i64 = 50_000_000;

/// Below this many files in one directory, a full-path `lstat` each is
/// cheaper than opening the directory first.
const SAME_DIR: usize = 4;

impl Snapshot {
    fn add(&mut self, path: PathBuf) {
        let id = identity(&path);
        self.files.push((path, id));
    }

    /// The configuration: the main file, its directory, the drop-in
    /// directory and everything in it. Taken before the files are read.
    pub fn of_config(main: &Path) -> Snapshot {
        let mut s = Snapshot {
            taken_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(i64::MAX),
            ..Snapshot::default()
        };
        let main = std::path::absolute(main).unwrap_or_else(|_| main.to_path_buf());
        if let Some(parent) = main.parent() {
            s.add(parent.to_path_buf());
        }
        s.add(main.clone());
        let dropins = crate::config::dropin_dir_for(&main);
        s.add(dropins.clone());
        if let Ok(entries) = std::fs::read_dir(&dropins) {
            let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            names.sort();
            for p in names {
                s.add(p);
            }
        }
        s
    }

    /// Everything else `config` makes an apply read: the state, the sealed
    /// credentials and their directory, each service's env file, drop-in
    /// and drop-in directory, and the account files.
    pub fn add_inputs(&mut self, root: &Root, config: &Config) {
        let loader = &config.loader;
        let host = |p: &Path| root.host(p);
        self.add(host(&loader.state_dir).join(crate::state::FILE));
        let creds = host(&loader.creds_dir);
        self.add(creds.clone());
        for name in config.all_credentials() {
            self.add(creds.join(crate::creds::Store::file_name(name)));
        }
        for s in config.services.values() {
            if s.delivery == Delivery::Env {
                self.add(host(&s.env_file));
            }
            let dropin = host(&crate::dropin::path(s, loader));
            // Its directory too: a drop-in added beside credloader's (one
            // that may override its env file) must make the next run a full
            // one, which warns about it.
            if let Some(dir) = dropin.parent() {
                self.add(dir.to_path_buf());
            }
            self.add(dropin);
        }
        for f in ["/etc/passwd", "/etc/group"] {
            self.add(host(Path::new(f)));
        }
    }

    /// Every file still has the identity recorded. Files that share a
    /// directory (the sealed credentials, the env files) are looked up from
    /// one descriptor of it: the same resolution as a full-path `lstat`,
    /// without walking the path again for each.
    fn holds(&self, base: &Path) -> bool {
        !self.files.iter().any(|(_, id)| *id == Some(UNKNOWN))
            && self.files_hold()
            && self.dirs_sound(base)
    }

    /// The directories the inputs are in still pass what a full run checks
    /// when it opens them: none on the way is a symlink, and each that
    /// holds an input is owned by root (or us) and writable by nobody else.
    /// (A chmod of a directory moves no identity of the files in it.)
    fn dirs_sound(&self, base: &Path) -> bool {
        let me = nix::unistd::Uid::effective().as_raw();
        let is_dir = |st: &nix::sys::stat::FileStat| {
            st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
        };
        let mut seen = std::collections::BTreeSet::new();
        for (p, _) in &self.files {
            let Some(parent) = p.parent() else { continue };
            if !seen.insert(parent) {
                continue;
            }
            match nix::sys::stat::lstat(parent) {
                Ok(st)
                    if is_dir(&st)
                        && (st.st_uid == 0 || st.st_uid == me)
                        && st.st_mode & 0o022 == 0 => {}
                _ => return false,
            }
            for up in parent.ancestors().skip(1) {
                if up == base || !up.starts_with(base) || !seen.insert(up) {
                    break;
                }
                match nix::sys::stat::lstat(up) {
                    Ok(st) if is_dir(&st) => {}
                    _ => return false,
                }
            }
        }
        true
    }

    fn files_hold(&self) -> bool {
        use std::collections::BTreeMap;
        use std::os::fd::AsFd;
        let mut dirs: BTreeMap<&Path, Vec<(&std::ffi::OsStr, &Option<FileId>)>> = BTreeMap::new();
        for (p, id) in &self.files {
            match (p.parent(), p.file_name()) {
                (Some(d), Some(n)) => dirs.entry(d).or_default().push((n, id)),
                _ => {
                    if identity(p) != *id {
                        return false;
                    }
                }
            }
        }
        dirs.into_iter().all(|(dir, entries)| {
            if entries.len() < SAME_DIR {
                return entries.iter().all(|(n, id)| identity(&dir.join(n)) == **id);
            }
            let flags = nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC;
            match nix::fcntl::open(dir, flags, nix::sys::stat::Mode::empty()) {
                Ok(fd) => entries.iter().all(|(n, id)| {
                    id_of(nix::sys::stat::fstatat(
                        fd.as_fd(),
                        *n,
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                    )) == **id
                }),
                Err(e) => entries.iter().all(|(_, id)| id_of(Err(e)) == **id),
            }
        })
    }
}

/// Removes every stamp: whoever takes the apply lock calls this first, so
/// a command that is killed while it holds the lock (a rotate, say, with a
/// temp file half written) is always followed by a full apply, which
/// cleans up after it.
pub fn void(root: &Root) {
    let Ok(dir) = Dir::open(
        &Root::live(),
        &root.host(Path::new(DIR)),
        DirPolicy::EXISTING,
    ) else {
        return;
    };
    for name in dir.list().unwrap_or_default() {
        if name.to_string_lossy().starts_with(".noop-") {
            let _ = dir.remove(&name);
        }
    }
}

/// What the last no-op apply printed, if nothing it depended on changed.
pub fn check(key: &Key) -> Option<Said> {
    // Read as every file credloader trusts: no symlink on the way, a
    // regular file with one link, in a directory only root can write to;
    // and only root's own 0600 stamp counts.
    let (dir, name) = safefs::split(&key.file);
    let dir = Dir::open(&Root::live(), dir, DirPolicy::EXISTING).ok()?;
    dir.check_safe().ok()?;
    let (bytes, st) = dir.read(name, MAX_STAMP).ok()??;
    if st.st_uid != 0 || st.st_mode & 0o7777 != 0o600 {
        return None;
    }
    let stamp: Stamp = serde_json::from_slice(&bytes).ok()?;
    if stamp.version != VERSION || stamp.key != key.text || stamp.inputs.is_empty() {
        return None;
    }
    let inputs = Snapshot {
        files: stamp
            .inputs
            .into_iter()
            .map(|Entry(p, id)| {
                let id = id.map(|(dev, ino, size, ctime_ns)| FileId {
                    dev,
                    ino,
                    size,
                    ctime_ns,
                });
                (p, id)
            })
            .collect(),
        taken_at: 0,
    };
    inputs.holds(&key.base).then_some(stamp.said)
}

/// Records what this run said (its human and JSON texts) for the next
/// run, if this run was a `no_op`: it wrote, reloaded, removed, decrypted
/// and restarted nothing, and found nothing wrong. Called with the apply
/// lock still held (see [`void`]).
pub fn record(key: &Key, inputs: Snapshot, no_op: bool, said: impl FnOnce() -> Said) {
    // Nothing unknown, nothing changed so recently that a same-size rewrite
    // could hide in the same tick (the next run re-reads it and stamps).
    let settled = inputs.files.iter().all(|(_, id)| match id {
        Some(id) => *id != UNKNOWN && id.ctime_ns < inputs.taken_at - RACY_NS,
        None => true,
    });
    if !no_op || !settled || !inputs.dirs_sound(&key.base) {
        return;
    }
    let (dir, name) = safefs::split(&key.file);
    let Ok(dir) = Dir::open(&Root::live(), dir, DirPolicy::EXISTING) else {
        return;
    };
    let stamp = Stamp {
        version: VERSION,
        key: key.text.clone(),
        inputs: inputs
            .files
            .into_iter()
            .map(|(p, id)| Entry(p, id.map(|i| (i.dev, i.ino, i.size, i.ctime_ns))))
            .collect(),
        said: said(),
    };
    let Ok(bytes) = serde_json::to_vec(&stamp) else {
        return;
    };
    if let Err(e) = dir.write_atomic(name, &bytes, Owner::ROOT_0600) {
        tracing::debug!("could not record the no-op stamp: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(paths: &[PathBuf]) -> Snapshot {
        let mut s = Snapshot::default();
        for p in paths {
            s.add(p.clone());
        }
        s
    }

    #[test]
    fn any_change_to_any_file_is_seen_alone_or_among_many_in_one_dir() {
        let dir = tempfile::tempdir().unwrap();
        // Five in one directory (looked up from its descriptor), one alone,
        // one that does not exist.
        let many: Vec<PathBuf> = (0..5).map(|i| dir.path().join(format!("c{i}"))).collect();
        for p in &many {
            std::fs::write(p, b"sealed").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let alone = dir.path().join("sub/one");
        std::fs::write(&alone, b"x").unwrap();
        let absent = dir.path().join("sub/absent");
        let mut all = many.clone();
        all.extend([alone.clone(), absent.clone()]);
        assert!(snapshot(&all).holds(Path::new("/")));

        let changes: Vec<Box<dyn Fn()>> = vec![
            Box::new(|| std::fs::write(&many[3], b"resealed").unwrap()),
            Box::new(|| std::fs::remove_file(&many[0]).unwrap()),
            Box::new(|| std::fs::write(&alone, b"yy").unwrap()),
            Box::new(|| std::fs::write(&absent, b"new").unwrap()),
        ];
        for change in changes {
            let before = snapshot(&all);
            assert!(before.holds(Path::new("/")));
            change();
            assert!(!before.holds(Path::new("/")));
        }
    }

    #[test]
    fn the_stamp_round_trips_and_keeps_absent_files_absent() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("p");
        std::fs::write(&present, b"1").unwrap();
        let s = snapshot(&[present.clone(), dir.path().join("gone")]);
        let entries: Vec<Entry> = s
            .files
            .iter()
            .map(|(p, id)| Entry(p.clone(), id.map(|i| (i.dev, i.ino, i.size, i.ctime_ns))))
            .collect();
        let text = serde_json::to_string(&entries).unwrap();
        let back: Vec<Entry> = serde_json::from_str(&text).unwrap();
        assert!(back[0].1.is_some() && back[1].1.is_none());
        assert_eq!(back[0].1.unwrap().1, s.files[0].1.unwrap().ino);
    }
}
