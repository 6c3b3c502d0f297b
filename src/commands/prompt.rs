//! Asking for a value on the terminal: without echo, twice to confirm
//! (see [`super::value::read_value`]), Ctrl-C cancelling the prompt rather
//! than killing the process with echo still off. Nothing read is ever
//! buffered outside a [`Secret`].

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg, Termios};

use crate::secret::{Secret, SecretBuf};
use crate::systemd_creds::MAX_PLAINTEXT;

/// fd 0 without std's stdin buffer: `Stdin` keeps what it read in a global
/// 8 KiB buffer that is never zeroized, which would keep a copy of the value.
/// (`ManuallyDrop`: fd 0 stays open.)
pub(super) fn raw_stdin() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 0 is open for the life of the process and never closed here.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) })
}

/// Set by SIGINT while [`prompt`] waits for a line.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The terminal could not be asked (exit 3), or the operator cancelled
/// (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// Ctrl-C at the prompt.
    #[error("cancelled at the prompt; nothing was sealed")]
    Cancelled,
    /// The terminal's settings could not be read or changed.
    #[error("cannot read from the terminal")]
    Settings(#[source] nix::Error),
    /// Reading from it failed.
    #[error("cannot read from the terminal")]
    Read(#[source] std::io::Error),
    /// The line is longer than any value systemd-creds can carry.
    #[error("cannot read from the terminal: the value is too long")]
    TooLong,
}

impl PromptError {
    /// Its exit code: the operator's cancel is a usage matter, the rest
    /// an environment one.
    pub fn exit_code(&self) -> u8 {
        match self {
            PromptError::Cancelled => crate::exit::USAGE,
            _ => crate::exit::ENVIRONMENT,
        }
    }
}

/// One line from the terminal with echo off; the terminal is restored on
/// every path out, Ctrl-C included (it cancels the prompt instead of
/// killing the process with echo still off).
pub(super) fn prompt(text: &str) -> Result<Secret, PromptError> {
    let stdin = std::io::stdin();
    let _quiet = Quiet::start(&stdin)?;
    let mut stderr = std::io::stderr();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
    read_line()
}

/// The terminal with echo off and SIGINT cancelling a read, until dropped:
/// then the terminal's settings and SIGINT's handler are put back.
struct Quiet<'a> {
    stdin: &'a std::io::Stdin,
    saved: Termios,
    old: Option<SigAction>,
}

impl<'a> Quiet<'a> {
    fn start(stdin: &'a std::io::Stdin) -> Result<Quiet<'a>, PromptError> {
        let saved = tcgetattr(stdin).map_err(PromptError::Settings)?;
        INTERRUPTED.store(false, Ordering::SeqCst);
        // No SA_RESTART: the read below returns EINTR on Ctrl-C.
        let cancel = SigAction::new(
            SigHandler::Handler(on_interrupt),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic.
        let old = unsafe { sigaction(Signal::SIGINT, &cancel) }.ok();
        let quiet = Quiet {
            stdin,
            saved: saved.clone(),
            old,
        };
        let mut silent = saved;
        silent.local_flags.remove(LocalFlags::ECHO);
        silent.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(stdin, SetArg::TCSAFLUSH, &silent).map_err(PromptError::Settings)?;
        Ok(quiet)
    }
}

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.stdin, SetArg::TCSAFLUSH, &self.saved);
        if let Some(old) = &self.old {
            // SAFETY: puts back the handler that was there before.
            let _ = unsafe { sigaction(Signal::SIGINT, old) };
        }
    }
}

/// Reads up to a line break (or end of input) from fd 0, a byte at a
/// time; a trailing `\r` goes.
fn read_line() -> Result<Secret, PromptError> {
    let mut buf = SecretBuf::with_capacity(256);
    let raw = raw_stdin();
    let mut lock = &*raw;
    let mut byte = [0u8; 1];
    loop {
        // A Ctrl-C that came before this read started.
        if INTERRUPTED.load(Ordering::SeqCst) {
            let _ = writeln!(std::io::stderr());
            return Err(PromptError::Cancelled);
        }
        match lock.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                if buf.len() >= MAX_PLAINTEXT {
                    return Err(PromptError::TooLong);
                }
                buf.push(byte[0]);
            }
            // Ctrl-C (checked at the top of the loop), or another signal.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PromptError::Read(e)),
        }
    }
    let mut secret = buf.into_secret();
    if secret.expose().ends_with(b"\r") {
        let trimmed = Secret::copy_from(&secret.expose()[..secret.len() - 1]);
        secret = trimmed;
    }
    Ok(secret)
}
