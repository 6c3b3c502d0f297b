//! One credloader at a time: an exclusive `flock` on `<state_dir>/lock`,
//! waited for up to a bound so a stuck run cannot hang boot forever.

use std::ffi::OsStr;
use std::fs::File;
use std::time::{Duration, Instant};

use nix::fcntl::{openat, Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;
use thiserror::Error;

use crate::escape::ShowPath;
use crate::safefs::Dir;

#[derive(Debug, Error)]
pub enum LockError {
    #[error("another credloader has held {path} for {} s; wait for it to finish, or find it with `fuser {path}`", waited.as_secs_f32().round())]
    Timeout { path: String, waited: Duration },
    #[error(
        "{path} is a {kind}, not a regular file; remove it so credloader can create its lock file"
    )]
    NotRegular { path: String, kind: &'static str },
    #[error("cannot lock {path}: {errno}")]
    Os {
        path: String,
        errno: nix::errno::Errno,
    },
}

/// Held while alive.
pub struct Lock(#[allow(dead_code)] Flock<File>);

pub fn acquire(state_dir: &Dir, timeout: Duration) -> Result<Lock, LockError> {
    let path = state_dir.path().join("lock").shown().to_string();
    // O_NONBLOCK|O_NOCTTY: a planted FIFO or device must not hang or adopt us.
    let flags = OFlag::O_RDWR
        | OFlag::O_CREAT
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY;
    let fd = openat(
        state_dir.as_fd(),
        OsStr::new("lock"),
        flags,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|errno| LockError::Os {
        path: path.clone(),
        errno,
    })?;
    let st = nix::sys::stat::fstat(&fd).map_err(|errno| LockError::Os {
        path: path.clone(),
        errno,
    })?;
    let ifmt = nix::sys::stat::SFlag::S_IFMT.bits();
    if st.st_mode & ifmt != nix::sys::stat::SFlag::S_IFREG.bits() {
        return Err(LockError::NotRegular {
            path,
            kind: "FIFO, socket or device",
        });
    }
    let mut file = File::from(fd);
    let start = Instant::now();
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(Lock(l)),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                if start.elapsed() >= timeout {
                    return Err(LockError::Timeout {
                        path,
                        waited: start.elapsed(),
                    });
                }
                file = f;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, errno)) => return Err(LockError::Os { path, errno }),
        }
    }
}
