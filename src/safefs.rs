//! Reading and writing managed files without ever following a symlink and
//! without a moment in which a file is wider open than its final mode.
//!
//! Every path is walked one component at a time with `openat(O_NOFOLLOW)`
//! from the root, so a symlink anywhere on a managed path is refused rather
//! than followed. A file is replaced by writing a temp file *in the same
//! directory* (created `O_EXCL`, mode 0600, owned by root), fsyncing it,
//! handing it to its owner, renaming it over the target and fsyncing the
//! directory: a crash at any instant leaves the old file or the new one.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, fsync, unlinkat, Gid, Uid, UnlinkatFlags};
use thiserror::Error;

use crate::escape::Shown;
use crate::holds::Hold;
use crate::root::Root;
use crate::secret::{read_secret, Secret};

#[derive(Debug, Error)]
pub enum FsError {
    #[error("{}: is a symbolic link; credloader never follows links on a managed path. Replace it with the real {what}", Shown(path))]
    Symlink { path: PathBuf, what: &'static str },
    #[error(
        "{}: is a {kind}, not a regular file; remove it so credloader can write the file",
        Shown(path)
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{}: has {links} hard links, so another name could reveal it; remove the other links (`find / -xdev -samefile {}`)", Shown(path), Shown(path))]
    Hardlinked { path: PathBuf, links: u64 },
    #[error(
        "{}: {problem}; fix with `chown root:root {} && chmod go-w {}`",
        Shown(path),
        Shown(path),
        Shown(path)
    )]
    UnsafeDir { path: PathBuf, problem: String },
    #[error("{}: is not a directory", Shown(path))]
    NotADirectory { path: PathBuf },
    #[error("{}: larger than {limit} bytes", Shown(path))]
    TooLarge { path: PathBuf, limit: usize },
    #[error("cannot {op} {}: {}", Shown(path), describe(*errno))]
    Os {
        op: &'static str,
        path: PathBuf,
        errno: Errno,
    },
}

fn describe(e: Errno) -> String {
    let hint = match e {
        Errno::ENOSPC => " (the filesystem is full; free space there)",
        Errno::EROFS => {
            " (the filesystem is read-only; remount it read-write or pick another directory)"
        }
        Errno::EACCES | Errno::EPERM => " (run credloader as root)",
        _ => "",
    };
    format!("{}{hint}", e.desc())
}

impl FsError {
    fn os(op: &'static str, path: &Path, errno: Errno) -> Self {
        FsError::Os {
            op,
            path: path.to_path_buf(),
            errno,
        }
    }
}

/// Who a written file belongs to and what mode it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Owner {
    pub const ROOT_0600: Owner = Owner {
        uid: 0,
        gid: 0,
        mode: 0o600,
    };
    pub const ROOT_0644: Owner = Owner {
        uid: 0,
        gid: 0,
        mode: 0o644,
    };

    /// Does `st` already have this owner and mode?
    pub fn matches(&self, st: &FileStat) -> bool {
        st.st_uid == self.uid && st.st_gid == self.gid && st.st_mode & 0o7777 == self.mode
    }
}

/// Why [`Dir::write_atomic`] refuses to replace what is at `path` (its
/// `lstat` is `st`): a symlink, anything but a regular file, or a file with
/// another name elsewhere, unless `owners_links` and it is not root's (see
/// [`Dir::replace`]). `None`: a plain file it may replace.
pub fn unreplaceable(path: &Path, st: &FileStat, owners_links: bool) -> Option<FsError> {
    let path = path.to_path_buf();
    if is(st, SFlag::S_IFLNK) {
        return Some(FsError::Symlink { path, what: "file" });
    }
    if !is(st, SFlag::S_IFREG) {
        return Some(FsError::NotRegular {
            path,
            kind: kind(st),
        });
    }
    (st.st_nlink > 1 && !(owners_links && st.st_uid != 0)).then_some(FsError::Hardlinked {
        path,
        links: st.st_nlink,
    })
}

fn kind(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symbolic link",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        _ => "special file",
    }
}

fn is(st: &FileStat, t: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == t.bits()
}

/// How a directory on a managed path may be created and must be kept.
#[derive(Debug, Clone, Copy)]
pub struct DirPolicy {
    /// Create missing components with this mode (root-owned); `None` = must exist.
    pub create: Option<u32>,
    /// Refuse the directory if anyone but root (or us) can write to it.
    pub strict: bool,
}

impl DirPolicy {
    pub const EXISTING: DirPolicy = DirPolicy {
        create: None,
        strict: true,
    };
    pub fn create(mode: u32) -> Self {
        DirPolicy {
            create: Some(mode),
            strict: true,
        }
    }
}

/// What [`Dir::open_unless_held`] found.
enum Opened {
    Absent,
    File(File, FileStat),
    Held(Hold),
}

/// A file at a managed name, as [`Dir::read_existing`] found it.
pub enum Existing {
    Absent,
    /// Read in full: its bytes, its status taken after reading them, and
    /// the file, still open.
    Read {
        secret: Secret,
        stat: FileStat,
        file: File,
    },
    /// Its owner holds it (another name, a lease), so it was not read.
    Held(Hold),
}

/// An open directory on a managed path.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// The host path, for messages.
    path: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
const TEMP_MARK: &str = ".credloader-tmp-";

impl Dir {
    /// Opens the system directory `path` beneath `root`, walking each
    /// component with `O_NOFOLLOW` and creating what is missing if allowed.
    pub fn open(root: &Root, path: &Path, policy: DirPolicy) -> Result<Dir, FsError> {
        let base = root.base();
        let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        // The root itself is trusted (it is `/` or what the caller named).
        let mut fd = openat(AT_FDCWD, base, dir_flags, Mode::empty())
            .map_err(|e| FsError::os("open", base, e))?;
        let mut host = base.to_path_buf();
        for comp in path.components() {
            let name = match comp {
                Component::RootDir | Component::CurDir => continue,
                Component::Normal(n) => n,
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(FsError::NotADirectory {
                        path: host.join(comp),
                    })
                }
            };
            host.push(name);
            fd = match openat(&fd, name, dir_flags | OFlag::O_NOFOLLOW, Mode::empty()) {
                Ok(next) => next,
                Err(Errno::ENOENT) if policy.create.is_some() => {
                    let mode = policy.create.unwrap();
                    match mkdirat(&fd, name, Mode::from_bits_truncate(mode)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(FsError::os("create directory", &host, e)),
                    }
                    let next = openat(&fd, name, dir_flags | OFlag::O_NOFOLLOW, Mode::empty())
                        .map_err(|e| FsError::os("open", &host, e))?;
                    // mkdir is subject to the umask; set the mode we mean.
                    fchmod(&next, Mode::from_bits_truncate(mode))
                        .map_err(|e| FsError::os("chmod", &host, e))?;
                    next
                }
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                    return Err(
                        match fstatat(&fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                            Ok(st) if is(&st, SFlag::S_IFLNK) => FsError::Symlink {
                                path: host,
                                what: "directory",
                            },
                            _ => FsError::NotADirectory { path: host },
                        },
                    )
                }
                Err(e) => return Err(FsError::os("open", &host, e)),
            };
        }
        let dir = Dir { fd, path: host };
        if policy.strict {
            dir.check_safe()?;
        }
        Ok(dir)
    }

    /// Refuses a directory that anyone but root (or the caller) could change.
    pub fn check_safe(&self) -> Result<(), FsError> {
        let st = self.stat()?;
        let me = Uid::effective().as_raw();
        if st.st_uid != 0 && st.st_uid != me {
            return Err(FsError::UnsafeDir {
                path: self.path.clone(),
                problem: format!(
                    "directory is owned by uid {}, so that user could swap the files in it",
                    st.st_uid
                ),
            });
        }
        if st.st_mode & 0o022 != 0 {
            return Err(FsError::UnsafeDir {
                path: self.path.clone(),
                problem: format!(
                    "directory mode {:04o} lets others create and rename files in it",
                    st.st_mode & 0o7777
                ),
            });
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stat(&self) -> Result<FileStat, FsError> {
        fstat(&self.fd).map_err(|e| FsError::os("stat", &self.path, e))
    }

    /// `lstat` of an entry, `None` when it does not exist.
    pub fn entry(&self, name: &OsStr) -> Result<Option<FileStat>, FsError> {
        match fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(FsError::os("stat", &self.path.join(name), e)),
        }
    }

    /// Opens an existing regular file with a single link for reading; `None`
    /// when absent. A file with another name elsewhere is not even opened:
    /// that other name is not ours to read (checked again after the open).
    fn open_regular(&self, name: &OsStr) -> Result<Option<(File, FileStat)>, FsError> {
        match self.open_unless_held(name, false)? {
            Opened::Absent => Ok(None),
            Opened::File(file, st) => Ok(Some((file, st))),
            Opened::Held(_) => Err(FsError::os(
                "open",
                &self.path.join(name),
                Errno::EWOULDBLOCK,
            )),
        }
    }

    /// Opens a regular file for reading, unless someone holds it: another
    /// name for it (when `owners_links`, only a file an unprivileged owner
    /// could have linked counts as held; root's is refused) or a lease,
    /// which makes the open fail at once rather than wait for its holder.
    fn open_unless_held(&self, name: &OsStr, owners_links: bool) -> Result<Opened, FsError> {
        let path = self.path.join(name);
        let linked = |st: &FileStat| -> Option<Result<Opened, FsError>> {
            if !is(st, SFlag::S_IFREG) || st.st_nlink <= 1 {
                return None;
            }
            Some(match owners_links && st.st_uid != 0 {
                true => Ok(Opened::Held(Hold::Links(st.st_nlink))),
                false => Err(FsError::Hardlinked {
                    path: path.clone(),
                    links: st.st_nlink,
                }),
            })
        };
        if let Some(r) = self.entry(name)?.as_ref().and_then(linked) {
            return r;
        }
        // O_NONBLOCK: opening a planted FIFO must not hang, nor a leased
        // file wait for the lease holder (it fails with EWOULDBLOCK).
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Opened::Absent),
            Err(Errno::ELOOP) => return Err(FsError::Symlink { path, what: "file" }),
            Err(Errno::EWOULDBLOCK) => return Ok(Opened::Held(Hold::Lease)),
            Err(e) => return Err(FsError::os("open", &path, e)),
        };
        let st = fstat(&fd).map_err(|e| FsError::os("stat", &path, e))?;
        if let Some(r) = linked(&st) {
            return r;
        }
        if !is(&st, SFlag::S_IFREG) {
            return Err(FsError::NotRegular {
                path,
                kind: kind(&st),
            });
        }
        Ok(Opened::File(File::from(fd), st))
    }

    /// The status of an open file, taken after it was read: a write between
    /// an earlier stat and the read would otherwise go unseen.
    fn stat_after_read(&self, name: &OsStr, file: &File) -> Result<FileStat, FsError> {
        fstat(file).map_err(|e| FsError::os("stat", &self.path.join(name), e))
    }

    /// Reads a non-secret file (ciphertext, drop-ins, state).
    pub fn read(&self, name: &OsStr, limit: usize) -> Result<Option<(Vec<u8>, FileStat)>, FsError> {
        let Some((file, st)) = self.open_regular(name)? else {
            return Ok(None);
        };
        let path = self.path.join(name);
        if st.st_size as usize > limit {
            return Err(FsError::TooLarge { path, limit });
        }
        let mut buf = Vec::with_capacity(st.st_size as usize);
        (&file)
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| FsError::os("read", &path, io_errno(&e)))?;
        if buf.len() > limit {
            return Err(FsError::TooLarge { path, limit });
        }
        Ok(Some((buf, self.stat_after_read(name, &file)?)))
    }

    /// Reads a file that holds plaintext into a [`Secret`].
    pub fn read_secret(
        &self,
        name: &OsStr,
        limit: usize,
    ) -> Result<Option<(Secret, FileStat)>, FsError> {
        let Some((file, _)) = self.open_regular(name)? else {
            return Ok(None);
        };
        let secret = self.read_open_secret(name, &file, limit)?;
        Ok(Some((secret, self.stat_after_read(name, &file)?)))
    }

    /// What is at `name`, a file its unprivileged owner may have linked
    /// elsewhere or leased (an env file): absent, read in full, or held
    /// (and then not read: see [`crate::holds`]).
    pub fn read_existing(&self, name: &OsStr, limit: usize) -> Result<Existing, FsError> {
        let (file, _) = match self.open_unless_held(name, true)? {
            Opened::Absent => return Ok(Existing::Absent),
            Opened::Held(hold) => return Ok(Existing::Held(hold)),
            Opened::File(file, st) => (file, st),
        };
        let secret = self.read_open_secret(name, &file, limit)?;
        let stat = self.stat_after_read(name, &file)?;
        Ok(Existing::Read { secret, stat, file })
    }

    fn read_open_secret(&self, name: &OsStr, file: &File, limit: usize) -> Result<Secret, FsError> {
        let path = self.path.join(name);
        read_secret(file, limit).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => FsError::TooLarge { path, limit },
            _ => FsError::os("read", &path, io_errno(&e)),
        })
    }

    /// Replaces `name` with `contents` atomically (see the module docs).
    /// Refuses to replace anything but a regular file with a single link.
    pub fn write_atomic(&self, name: &OsStr, contents: &[u8], owner: Owner) -> Result<(), FsError> {
        self.replace(name, contents, owner, false).map(drop)
    }

    /// Replaces `name` with `contents` atomically (see the module docs) and
    /// returns the new file, still open for reading, so that the caller can
    /// prove what is in it (see [`crate::provenance`]). Refuses to replace
    /// anything but a regular file; one with other names too, unless
    /// `owners_links` and its owner is not root: an unprivileged owner may
    /// link its own file elsewhere, and the rename leaves that other name
    /// with the old file (nobody but root can link a file *into* a managed
    /// directory, so root's file with another name is a mistake to refuse).
    pub fn replace(
        &self,
        name: &OsStr,
        contents: &[u8],
        owner: Owner,
        owners_links: bool,
    ) -> Result<File, FsError> {
        let path = self.path.join(name);
        if let Some(e) = self
            .entry(name)?
            .and_then(|st| unreplaceable(&path, &st, owners_links))
        {
            return Err(e);
        }
        let (tmp_name, fd) = self.create_temp(name)?;
        let cleanup = |e: FsError| {
            let _ = unlinkat(&self.fd, tmp_name.as_os_str(), UnlinkatFlags::NoRemoveDir);
            e
        };
        let mut file = File::from(fd);
        file.write_all(contents)
            .map_err(|e| cleanup(FsError::os("write", &path, io_errno(&e))))?;
        if owner.uid != 0 || owner.gid != 0 {
            fchown(
                &file,
                Some(Uid::from_raw(owner.uid)),
                Some(Gid::from_raw(owner.gid)),
            )
            .map_err(|e| cleanup(FsError::os("chown", &path, e)))?;
        }
        if owner.mode != 0o600 {
            // Only ever narrower-to-wider for non-secret files (drop-ins).
            fchmod(&file, Mode::from_bits_truncate(owner.mode))
                .map_err(|e| cleanup(FsError::os("chmod", &path, e)))?;
        }
        // After chown/chmod, so that owner and mode are durable with the data.
        fsync(&file).map_err(|e| cleanup(FsError::os("fsync", &path, e)))?;
        renameat(&self.fd, tmp_name.as_os_str(), &self.fd, name)
            .map_err(|e| cleanup(FsError::os("rename into", &path, e)))?;
        self.sync()?;
        Ok(file)
    }

    /// Creates a fresh temp file beside `name`: `O_EXCL`, mode 0600, root's.
    fn create_temp(&self, name: &OsStr) -> Result<(PathBuf, OwnedFd), FsError> {
        // Read-write: the caller may read back what it wrote through it.
        let flags =
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let mut tmp = Vec::with_capacity(name.len() + 40);
            tmp.push(b'.');
            tmp.extend_from_slice(name.as_bytes());
            tmp.extend_from_slice(TEMP_MARK.as_bytes());
            tmp.extend_from_slice(format!("{}-{n}-{nanos:x}", std::process::id()).as_bytes());
            let tmp = PathBuf::from(OsStr::from_bytes(&tmp));
            match openat(
                &self.fd,
                tmp.as_os_str(),
                flags,
                Mode::from_bits_truncate(0o600),
            ) {
                Ok(fd) => {
                    // The umask can only narrow 0600; make sure it is exactly that.
                    fchmod(&fd, Mode::from_bits_truncate(0o600))
                        .map_err(|e| FsError::os("chmod", &self.path.join(&tmp), e))?;
                    return Ok((tmp, fd));
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(FsError::os("create a temp file in", &self.path, e)),
            }
        }
    }

    /// Removes temp files a crashed run left beside `name`. Call with the
    /// lock held. Returns how many were removed.
    pub fn remove_stale_temps(&self, name: &OsStr) -> Result<usize, FsError> {
        let mut prefix = vec![b'.'];
        prefix.extend_from_slice(name.as_bytes());
        prefix.extend_from_slice(TEMP_MARK.as_bytes());
        let mut removed = 0;
        for entry in self.list()? {
            if entry.as_bytes().starts_with(&prefix) {
                self.remove(&entry)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes every temp file a crashed run left in this directory, whatever
    /// its target. Call with the lock held. Returns how many were removed.
    pub fn remove_all_stale_temps(&self) -> Result<usize, FsError> {
        let mut removed = 0;
        for entry in self.list()? {
            let b = entry.as_bytes();
            let marked = b.starts_with(b".")
                && b.windows(TEMP_MARK.len())
                    .any(|w| w == TEMP_MARK.as_bytes());
            if marked
                && self
                    .entry(&entry)?
                    .is_some_and(|st| !is(&st, SFlag::S_IFDIR))
            {
                self.remove(&entry)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The names in this directory (not `.`/`..`).
    pub fn list(&self) -> Result<Vec<std::ffi::OsString>, FsError> {
        let dup = self
            .fd
            .try_clone()
            .map_err(|e| FsError::os("read directory", &self.path, io_errno(&e)))?;
        let mut d = nix::dir::Dir::from_fd(dup)
            .map_err(|e| FsError::os("read directory", &self.path, e))?;
        let mut out = Vec::new();
        for entry in d.iter() {
            let entry = entry.map_err(|e| FsError::os("read directory", &self.path, e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a file (not a directory); absent is fine.
    pub fn remove(&self, name: &OsStr) -> Result<(), FsError> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(FsError::os("remove", &self.path.join(name), e)),
        }
    }

    /// Opens a subdirectory (one component) under the same rules.
    pub fn subdir(&self, name: &OsStr, policy: DirPolicy) -> Result<Dir, FsError> {
        let path = self.path.join(name);
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if policy.create.is_some() => {
                let mode = Mode::from_bits_truncate(policy.create.unwrap());
                match mkdirat(&self.fd, name, mode) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(FsError::os("create directory", &path, e)),
                }
                let fd = openat(&self.fd, name, flags, Mode::empty())
                    .map_err(|e| FsError::os("open", &path, e))?;
                fchmod(&fd, mode).map_err(|e| FsError::os("chmod", &path, e))?;
                fd
            }
            Err(Errno::ELOOP) => {
                return Err(FsError::Symlink {
                    path,
                    what: "directory",
                })
            }
            // O_DIRECTORY|O_NOFOLLOW on a symlink gives ENOTDIR: say which.
            Err(Errno::ENOTDIR) => {
                return Err(match self.entry(name) {
                    Ok(Some(st)) if is(&st, SFlag::S_IFLNK) => FsError::Symlink {
                        path,
                        what: "directory",
                    },
                    _ => FsError::NotADirectory { path },
                })
            }
            Err(e) => return Err(FsError::os("open", &path, e)),
        };
        let dir = Dir { fd, path };
        if policy.strict {
            dir.check_safe()?;
        }
        Ok(dir)
    }

    /// Creates `name`, which must not exist yet, holding `contents`: mode
    /// 0600, root's, not synced. For scratch copies that never outlive the
    /// run (a crash leaves them for the next run to sweep).
    pub fn create_new(&self, name: &OsStr, contents: &[u8]) -> Result<(), FsError> {
        let path = self.path.join(name);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, name, flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| FsError::os("create", &path, e))?;
        let mut file = File::from(fd);
        file.write_all(contents)
            .map_err(|e| FsError::os("write", &path, io_errno(&e)))
    }

    /// Removes the subdirectory `name` and the files in it (one level
    /// only; a directory inside stops it). Absent is fine.
    pub fn remove_subdir(&self, name: &OsStr) -> Result<(), FsError> {
        let sub = match self.subdir(name, DirPolicy::EXISTING) {
            Ok(d) => d,
            Err(FsError::Os {
                errno: Errno::ENOENT,
                ..
            }) => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in sub.list()? {
            sub.remove(&entry)?;
        }
        match unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(FsError::os("remove", &self.path.join(name), e)),
        }
    }

    /// Removes an empty subdirectory; absent or not empty is fine.
    pub fn remove_dir_if_empty(&self, name: &OsStr) {
        let _ = unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir);
    }

    /// fsyncs the directory so renames in it are durable.
    pub fn sync(&self) -> Result<(), FsError> {
        fsync(&self.fd).map_err(|e| FsError::os("fsync", &self.path, e))
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Directories opened during one run, each by a single `openat` from its
/// (cached) parent, so that fifty services under one directory do not walk
/// the path from `/` fifty times. Every component is still opened with
/// `O_NOFOLLOW`, and the safety check is made for each request.
pub struct DirCache<'r> {
    root: &'r Root,
    dirs: std::cell::RefCell<std::collections::HashMap<PathBuf, std::rc::Rc<Dir>>>,
}

impl<'r> DirCache<'r> {
    pub fn new(root: &'r Root) -> Self {
        DirCache {
            root,
            dirs: Default::default(),
        }
    }

    /// Like [`Dir::open`], through the cache.
    pub fn open(&self, path: &Path, policy: DirPolicy) -> Result<std::rc::Rc<Dir>, FsError> {
        if let Some(d) = self.dirs.borrow().get(path) {
            if policy.strict {
                d.check_safe()?;
            }
            return Ok(d.clone());
        }
        let dir = match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => {
                let up = self.open(
                    parent,
                    DirPolicy {
                        create: policy.create,
                        strict: false,
                    },
                )?;
                up.subdir(name, policy)?
            }
            _ => Dir::open(self.root, path, policy)?,
        };
        let dir = std::rc::Rc::new(dir);
        self.dirs
            .borrow_mut()
            .insert(path.to_path_buf(), dir.clone());
        Ok(dir)
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO)
}

/// Splits a system file path into its directory and file name.
pub fn split(path: &Path) -> (&Path, &OsStr) {
    (
        path.parent().unwrap_or(Path::new("/")),
        path.file_name().unwrap_or(OsStr::new("")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn tmp_root() -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        let r = Root::at(t.path());
        (t, r)
    }

    #[test]
    fn writes_atomically_with_owner_and_mode() {
        let (t, root) = tmp_root();
        let d = Dir::open(
            &root,
            Path::new("/run/credloader"),
            DirPolicy::create(0o755),
        )
        .unwrap();
        let owner = Owner {
            uid: 4242,
            gid: 4343,
            mode: 0o600,
        };
        d.write_atomic(OsStr::new("a.env"), b"A=\"1\"\n", owner)
            .unwrap();
        let p = t.path().join("run/credloader/a.env");
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4242, 4343, 0o600));
        assert_eq!(std::fs::read(&p).unwrap(), b"A=\"1\"\n");
        let dm = std::fs::metadata(t.path().join("run/credloader")).unwrap();
        assert_eq!(dm.permissions().mode() & 0o7777, 0o755);
        assert_eq!(d.list().unwrap(), vec![std::ffi::OsString::from("a.env")]);
    }

    #[test]
    fn refuses_symlinks_hardlinks_and_fifos() {
        let (t, root) = tmp_root();
        let d = Dir::open(&root, Path::new("/e"), DirPolicy::create(0o755)).unwrap();
        let dir = t.path().join("e");
        symlink("/etc/passwd", dir.join("link.env")).unwrap();
        std::fs::write(dir.join("hard.env"), b"x").unwrap();
        std::fs::hard_link(dir.join("hard.env"), dir.join("other")).unwrap();
        nix::unistd::mkfifo(&dir.join("fifo.env"), Mode::from_bits_truncate(0o600)).unwrap();
        let w = |n: &str| {
            d.write_atomic(OsStr::new(n), b"x", Owner::ROOT_0600)
                .unwrap_err()
        };
        assert!(matches!(w("link.env"), FsError::Symlink { .. }));
        assert!(matches!(
            w("hard.env"),
            FsError::Hardlinked { links: 2, .. }
        ));
        assert!(matches!(
            w("fifo.env"),
            FsError::NotRegular { kind: "FIFO", .. }
        ));
        assert!(matches!(
            d.read(OsStr::new("link.env"), 100),
            Err(FsError::Symlink { .. })
        ));
        assert!(matches!(
            d.read(OsStr::new("fifo.env"), 100),
            Err(FsError::NotRegular { .. })
        ));
        // Plaintext is never read through a second name.
        assert!(matches!(
            d.read_secret(OsStr::new("hard.env"), 100),
            Err(FsError::Hardlinked { links: 2, .. })
        ));
        assert_eq!(
            std::fs::read_link(dir.join("link.env")).unwrap(),
            Path::new("/etc/passwd")
        );
        // A symlinked directory on the way is refused, not followed.
        symlink(&dir, t.path().join("linked")).unwrap();
        let e = Dir::open(&root, Path::new("/linked/x"), DirPolicy::create(0o755)).unwrap_err();
        assert!(
            matches!(
                e,
                FsError::Symlink {
                    what: "directory",
                    ..
                }
            ),
            "{e}"
        );
        assert!(!dir.join("x").exists());
    }

    #[test]
    fn refuses_directories_others_can_write() {
        let (t, root) = tmp_root();
        std::fs::create_dir(t.path().join("open")).unwrap();
        std::fs::set_permissions(
            t.path().join("open"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        let e = Dir::open(&root, Path::new("/open"), DirPolicy::EXISTING).unwrap_err();
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        std::os::unix::fs::chown(t.path().join("open"), Some(1234), None).unwrap();
        std::fs::set_permissions(
            t.path().join("open"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let e = Dir::open(&root, Path::new("/open"), DirPolicy::EXISTING).unwrap_err();
        assert!(e.to_string().contains("owned by uid 1234"), "{e}");
    }

    #[test]
    fn stale_temps_are_removed() {
        let (t, root) = tmp_root();
        let d = Dir::open(&root, Path::new("/e"), DirPolicy::create(0o755)).unwrap();
        std::fs::write(t.path().join("e/.a.env.credloader-tmp-1-2-3"), b"x").unwrap();
        std::fs::write(t.path().join("e/.b.env.credloader-tmp-1-2-3"), b"x").unwrap();
        assert_eq!(d.remove_stale_temps(OsStr::new("a.env")).unwrap(), 1);
        assert!(t.path().join("e/.b.env.credloader-tmp-1-2-3").exists());
        // Whatever the target: every temp goes, nothing else does.
        std::fs::write(t.path().join("e/keep.env"), b"x").unwrap();
        std::fs::write(t.path().join("e/.meta.json.credloader-tmp-9-9-9"), b"x").unwrap();
        assert_eq!(d.remove_all_stale_temps().unwrap(), 2);
        assert_eq!(
            d.list().unwrap(),
            vec![std::ffi::OsString::from("keep.env")]
        );
    }
}
