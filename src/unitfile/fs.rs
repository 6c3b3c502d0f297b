//! Files of the system being read, which may be an image beneath a
//! directory: symlinks are followed the way PID 1 would follow them on that
//! system (an absolute target is taken beneath the image, `..` stops at its
//! root), as `chase_symlinks` with a root directory does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Unit files and drop-ins larger than this are not read (systemd's own
/// limit is 1 MiB per line, not per file; none is anywhere near this).
pub const MAX_FILE: u64 = 16 << 20;

/// The system beneath `base` (`/` for the running one).
#[derive(Debug, Clone)]
pub struct Sys {
    base: PathBuf,
    /// Directories already resolved (the same search and `.d` directories
    /// are walked for every file in them).
    dirs: RefCell<HashMap<PathBuf, PathBuf>>,
}

/// A file's contents, as PID 1 would read them.
pub enum Contents {
    Missing,
    Text(String),
    /// It exists but cannot be read as a unit file would be: the reason.
    Unreadable(String),
}

impl Sys {
    pub fn new(base: &Path) -> Sys {
        Sys {
            base: base.to_path_buf(),
            dirs: RefCell::default(),
        }
    }

    /// Where the system path `p` is on this machine (no symlink resolved).
    pub fn host(&self, p: &Path) -> PathBuf {
        self.base.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// `p` with every symlink on it resolved on the system (the result is
    /// a system path); missing components are kept as they are.
    pub fn chase(&self, p: &Path) -> io::Result<PathBuf> {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return self.walk(p);
        };
        if parent.as_os_str().is_empty() || parent == Path::new("/") {
            return self.walk(p);
        }
        let cached = self.dirs.borrow().get(parent).cloned();
        let real = match cached {
            Some(r) => r,
            None => {
                let r = self.walk(parent)?;
                self.dirs
                    .borrow_mut()
                    .insert(parent.to_path_buf(), r.clone());
                r
            }
        };
        let next = real.join(name);
        match std::fs::symlink_metadata(self.host(&next)) {
            Ok(m) if m.file_type().is_symlink() => self.walk(&next),
            _ => Ok(next),
        }
    }

    /// [`Sys::chase`], component by component.
    fn walk(&self, p: &Path) -> io::Result<PathBuf> {
        let mut done = PathBuf::from("/");
        let mut todo: Vec<PathBuf> = components(p);
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c.as_os_str() == ".." {
                done.pop();
                continue;
            }
            let next = done.join(&c);
            match std::fs::symlink_metadata(self.host(&next)) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 40 {
                        return Err(io::Error::from_raw_os_error(nix::libc::ELOOP));
                    }
                    let target = std::fs::read_link(self.host(&next))?;
                    if target.is_absolute() {
                        done = PathBuf::from("/");
                    }
                    todo.extend(components(&target));
                }
                Ok(_) => done = next,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    done = next;
                    todo.reverse();
                    for rest in todo.drain(..) {
                        done.push(rest);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// The host path of `p` with its symlinks resolved on the system.
    pub fn resolve(&self, p: &Path) -> io::Result<PathBuf> {
        Ok(self.host(&self.chase(p)?))
    }

    /// Reads a unit file or drop-in. A character device (`/dev/null`)
    /// reads as empty; anything else that is not a regular file is
    /// unreadable (never opened for reading: a FIFO would block).
    pub fn read(&self, p: &Path) -> Contents {
        let host = match self.resolve(p) {
            Ok(h) => h,
            Err(e) => return Contents::Unreadable(e.to_string()),
        };
        match read_regular(&host, MAX_FILE) {
            Ok(Some(bytes)) => match String::from_utf8(bytes) {
                Ok(t) => Contents::Text(t),
                Err(_) => Contents::Unreadable("it is not valid UTF-8".into()),
            },
            Ok(None) => Contents::Text(String::new()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Contents::Missing,
            Err(e) => Contents::Unreadable(e.to_string()),
        }
    }

    /// Is `p` a mask: a character or block device (`/dev/null`) or an
    /// empty regular file (`null_or_empty_path`)? `None` if it cannot be
    /// looked at (a dangling symlink, say).
    pub fn is_mask(&self, p: &Path) -> Option<bool> {
        let m = std::fs::metadata(self.resolve(p).ok()?).ok()?;
        let t = m.file_type();
        Some(t.is_char_device() || t.is_block_device() || (t.is_file() && m.len() == 0))
    }
}

fn components(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

/// Reads `host` if it is a regular file of at most `limit` bytes; `None`
/// for a character device. Opened without blocking, so a FIFO planted at
/// the path cannot hang the reader.
fn read_regular(host: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let t = std::fs::metadata(host)?.file_type();
    if t.is_char_device() {
        return Ok(None);
    }
    if !t.is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    let file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(host)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    if meta.len() > limit {
        return Err(io::Error::other(format!("it is larger than {limit} bytes")));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut buf)?;
    Ok(Some(buf))
}
