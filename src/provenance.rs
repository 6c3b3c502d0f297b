//! Proof that an env file holds exactly the bytes credloader wrote, before
//! its identity (device, inode, size, ctime) is recorded as credloader's.
//!
//! A recorded identity is trusted later: a file that still has it is not
//! rewritten, its values are reused for rebuilds, and `status` calls it "as
//! applied". The file's owner (the service's user) may open it and write to
//! it at any moment, even while credloader writes it: it can watch the env
//! dir with inotify and open the temp file the instant it is chowned to it.
//! An identity taken after such a write would make the edit credloader's.
//!
//! So the identity of each file written (or found equal) is settled once the
//! run has written them all, through the descriptor credloader kept:
//! 1. `fstat` it (after the rename), giving ctime C;
//! 2. wait, once per run, until the coarse real-time clock that file times
//!    come from has passed every such C: any write from then on gives its
//!    file a later ctime, so it moves the identity;
//! 3. read the bytes back through the descriptor and compare them, in
//!    constant time, with what was written: this catches any write made
//!    before the wait, whose ctime may still be C;
//! 4. `fstat` again: both stats must agree.
//!
//! Only then is the identity recorded. Otherwise none is, the run warns,
//! and the next run rewrites the file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::stat::{fstat, FileStat};
use nix::time::{clock_gettime, ClockId};
use zeroize::Zeroizing;

use crate::escape::ShowPath;
use crate::secret::Secret;

/// Why an identity is not recorded.
#[derive(Debug, thiserror::Error)]
pub enum Unproven {
    #[error(
        "{}: changed while credloader wrote it (its owner wrote to it), so it is not \
         recorded as applied and the next apply writes it again",
        path.shown()
    )]
    Changed { path: PathBuf },
    #[error(
        "{}: its change time is ahead of the system clock (was the clock set back?), so \
         it is not recorded as applied and the next apply writes it again",
        path.shown()
    )]
    ClockBehind { path: PathBuf },
    #[error("{}: cannot read back what was written: {}", path.shown(), errno.desc())]
    Os {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
}

/// A file credloader wrote (or found equal to what it would write), its
/// identity not yet settled.
pub struct Pending {
    file: File,
    expected: Secret,
    first: FileStat,
    path: PathBuf,
}

impl Pending {
    /// `file` is open for reading and is (since the rename) at `path`;
    /// `expected` is what must be in it. Takes the first stat now.
    pub fn new(file: File, expected: Secret, path: &Path) -> Result<Pending, Unproven> {
        let first = fstat(&file).map_err(|errno| Unproven::Os {
            path: path.to_path_buf(),
            errno,
        })?;
        Ok(Pending {
            file,
            expected,
            first,
            path: path.to_path_buf(),
        })
    }

    fn ctime_ns(&self) -> i64 {
        ctime_ns(&self.first)
    }

    /// Steps 3 and 4 (see the module docs); call once the clock has passed
    /// [`Self::ctime_ns`].
    fn verify(self) -> Result<FileStat, Unproven> {
        let os = |errno| Unproven::Os {
            path: self.path.clone(),
            errno,
        };
        let want = self.expected.expose();
        // One byte more than expected, to see a file that grew.
        let mut back = Zeroizing::new(vec![0u8; want.len() + 1]);
        let mut filled = 0;
        while filled < back.len() {
            match self.file.read_at(&mut back[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(os(io_errno(&e))),
            }
        }
        let second = fstat(&self.file).map_err(os)?;
        let same = self.expected.ct_eq(&back[..filled]) && same_identity(&self.first, &second);
        match same {
            true => Ok(second),
            false => Err(Unproven::Changed { path: self.path }),
        }
    }
}

fn same_identity(a: &FileStat, b: &FileStat) -> bool {
    (a.st_dev, a.st_ino, a.st_size, ctime_ns(a)) == (b.st_dev, b.st_ino, b.st_size, ctime_ns(b))
}

fn ctime_ns(st: &FileStat) -> i64 {
    st.st_ctime * 1_000_000_000 + st.st_ctime_nsec
}

fn io_errno(e: &std::io::Error) -> nix::errno::Errno {
    e.raw_os_error()
        .map(nix::errno::Errno::from_raw)
        .unwrap_or(nix::errno::Errno::EIO)
}

/// The coarse real-time clock, which file times are taken from (ns since
/// the epoch); `None` if it cannot be read.
fn coarse_now() -> Option<i64> {
    let t = clock_gettime(ClockId::CLOCK_REALTIME_COARSE).ok()?;
    Some(t.tv_sec() * 1_000_000_000 + t.tv_nsec())
}

/// The clock ticks every 1 to 10 ms; a change time further ahead than this
/// means the clock was set back, and waiting would not be worth it.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// Waits until the coarse real-time clock has passed `ctime_ns`; false if
/// it does not within [`MAX_WAIT`].
fn wait_past(ctime_ns: i64) -> bool {
    let start = Instant::now();
    loop {
        match coarse_now() {
            Some(now) if now > ctime_ns => return true,
            Some(_) if start.elapsed() < MAX_WAIT => std::thread::sleep(Duration::from_micros(100)),
            _ => return false,
        }
    }
}

/// Settles every pending identity of a run with one wait (see the module
/// docs): for each, the status to record, or why there is none.
pub fn settle(pending: Vec<Pending>) -> Vec<Result<FileStat, Unproven>> {
    let latest = pending.iter().map(Pending::ctime_ns).max();
    let clock_ok = latest.is_none_or(wait_past);
    pending
        .into_iter()
        .map(|p| match clock_ok {
            true => p.verify(),
            false => Err(Unproven::ClockBehind { path: p.path }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn written(dir: &Path, bytes: &[u8]) -> (PathBuf, Pending) {
        let path = dir.join("f.env");
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        let p = Pending::new(file, Secret::copy_from(bytes), &path).unwrap();
        (path, p)
    }

    #[test]
    fn an_untouched_file_is_proven_and_its_stat_is_the_one_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (path, p) = written(dir.path(), b"A=\"1\"\n");
        let st = settle(vec![p]).pop().unwrap().unwrap();
        let now = std::fs::symlink_metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((st.st_ino, st.st_size), (now.ino(), now.size() as i64));
        // The clock has passed its change time: a write now would move it.
        assert!(coarse_now().unwrap() > ctime_ns(&st));
    }

    #[test]
    fn any_write_before_the_read_back_is_caught_even_one_of_the_same_size() {
        let dir = tempfile::tempdir().unwrap();
        for edit in [&b"A=\"2\"\n"[..], b"A=\"1\"\nLD_PRELOAD=/x\n", b""] {
            let (path, p) = written(dir.path(), b"A=\"1\"\n");
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(0).unwrap();
            f.write_all(edit).unwrap();
            let r = settle(vec![p]).pop().unwrap();
            assert!(
                matches!(r, Err(Unproven::Changed { .. })),
                "{edit:?}: {r:?}"
            );
        }
    }

    #[test]
    fn nothing_to_settle_waits_for_nothing() {
        assert!(settle(Vec::new()).is_empty());
        assert!(wait_past(0));
    }
}
