//! What a failed health check printed, made safe to show: captured from a
//! pipe (never the journal) into a bounded window, every secret value of
//! the service masked, then cut to its last lines.
//!
//! The raw window may hold secrets, so it lives in a zeroizing buffer that
//! never grows (it is allocated once), and it is masked before anything is
//! cut, decoded or shown.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use zeroize::{Zeroize, Zeroizing};

use crate::secret::Secret;

/// The raw bytes kept: the last 64 KiB of what the check printed.
pub const WINDOW: usize = 64 * 1024;
/// What is shown: at most this many of the last lines...
pub const LINES: usize = 20;
/// ...of at most this many characters each...
pub const LINE_CHARS: usize = 300;
/// ...and this many bytes in all.
pub const BYTES: usize = 4096;

const CHUNK: usize = 4096;

/// The last [`WINDOW`] bytes read from a pipe.
pub struct Window {
    buf: Zeroizing<Vec<u8>>,
    /// Bytes were dropped from the front.
    truncated: bool,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            buf: Zeroizing::new(Vec::with_capacity(WINDOW + CHUNK)),
            truncated: false,
        }
    }
}

impl Window {
    fn push(&mut self, bytes: &[u8]) {
        // Never past the capacity: the buffer is never reallocated, so no
        // unzeroized copy of it is left behind.
        self.buf.extend_from_slice(&bytes[..bytes.len().min(CHUNK)]);
        if self.buf.len() > WINDOW {
            let excess = self.buf.len() - WINDOW;
            self.buf.drain(..excess);
            self.truncated = true;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// A pipe's read end being drained into a [`Window`] without blocking.
pub struct Reader {
    fd: OwnedFd,
    pub window: Window,
    eof: bool,
}

impl Reader {
    pub fn new(fd: OwnedFd) -> Reader {
        if let Ok(flags) = fcntl(fd.as_fd(), FcntlArg::F_GETFL) {
            let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
            let _ = fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags));
        }
        Reader {
            fd,
            window: Window::default(),
            eof: false,
        }
    }

    /// Waits up to `wait` for output and reads what there is.
    pub fn pump(&mut self, wait: Duration) {
        if self.eof {
            std::thread::sleep(wait);
            return;
        }
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let ms =
            PollTimeout::try_from(wait.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO);
        let _ = poll(&mut fds, ms);
        let mut chunk = [0u8; CHUNK];
        loop {
            match nix::unistd::read(self.fd.as_fd(), &mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.window.push(&chunk[..n]),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.eof = true;
                    break;
                }
            }
        }
        chunk.zeroize();
    }

    /// Reads until end of file, for at most `limit` (a writer that outlives
    /// the check, say a daemon it forked, is not waited for).
    pub fn finish(mut self, limit: Duration) -> Window {
        let deadline = Instant::now() + limit;
        while !self.eof && Instant::now() < deadline {
            self.pump(Duration::from_millis(20));
        }
        self.window
    }
}

/// The values to mask in a check's output: every secret the service got,
/// each also without trailing blanks (as a check that trims it prints it).
pub struct Secrets {
    /// Longest first, so a value that contains another is masked whole.
    values: Vec<(Secret, String)>,
}

impl Secrets {
    pub fn new(values: impl IntoIterator<Item = Secret>) -> Secrets {
        let mut out: Vec<(Secret, String)> = Vec::new();
        for v in values {
            let masked = v.masked();
            let trimmed = v.expose().trim_ascii_end();
            if !trimmed.is_empty() && trimmed.len() != v.len() {
                out.push((Secret::copy_from(trimmed), masked.clone()));
            }
            if !v.is_empty() {
                out.push((v, masked));
            }
        }
        out.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        Secrets { values: out }
    }

    /// `bytes` with every occurrence of every value replaced by its masked
    /// form (`abc...***`). With `cut_at_start`, the text starts somewhere
    /// inside what was printed: a multi-line value whose head was cut off
    /// is masked from the line it resumes at.
    fn mask(&self, bytes: &[u8], cut_at_start: bool) -> Zeroizing<Vec<u8>> {
        let mut text = Zeroizing::new(bytes.to_vec());
        for (value, masked) in &self.values {
            let v = value.expose();
            if cut_at_start {
                let resumes = v
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| &v[i + 1..])
                    .find(|rest| !rest.is_empty() && text.starts_with(rest));
                if let Some(rest) = resumes {
                    let n = rest.len();
                    text.splice(..n, masked.bytes());
                }
            }
            text = replace_all(&text, v, masked.as_bytes());
        }
        text
    }
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(hay.len()));
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// The last lines of `window`, masked, printable, bounded in lines and
/// bytes. Control characters (terminal escapes) become `?`.
pub fn last_lines(window: &Window, secrets: &Secrets) -> Vec<String> {
    let mut raw: &[u8] = &window.buf;
    if window.truncated {
        // The first line is only the end of one: drop it.
        match raw.iter().position(|b| *b == b'\n') {
            Some(i) => raw = &raw[i + 1..],
            None => return vec![format!("(a line of more than {WINDOW} bytes, not shown)")],
        }
    }
    let masked = secrets.mask(raw, window.truncated);
    let text = String::from_utf8_lossy(&masked);
    let mut lines: Vec<String> = text
        .trim_end_matches(['\n', '\r'])
        .split('\n')
        .map(printable)
        .collect();
    if lines.len() == 1 && lines[0].is_empty() {
        return Vec::new();
    }
    let keep_from = lines.len().saturating_sub(LINES);
    lines.drain(..keep_from);
    // Newest last; drop the oldest ones beyond the byte budget.
    let mut total = 0;
    let first = lines
        .iter()
        .rposition(|l| {
            total += l.len() + 1;
            total > BYTES
        })
        .map(|i| i + 1)
        .unwrap_or(0);
    lines.drain(..first);
    lines
}

fn printable(line: &str) -> String {
    let mut out: String = line
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .take(LINE_CHARS)
        .collect();
    if line.chars().count() > LINE_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(bytes: &[u8]) -> Window {
        let mut w = Window::default();
        for c in bytes.chunks(CHUNK) {
            w.push(c);
        }
        w
    }

    fn secrets(v: &[&[u8]]) -> Secrets {
        Secrets::new(v.iter().map(|b| Secret::copy_from(b)))
    }

    #[test]
    fn every_occurrence_of_every_value_is_masked() {
        let key = b"KEY-0123456789abcdefghij";
        let secret = b"SECRET-zyxwvutsrqponmlkjihg\n";
        let out = b"using key KEY-0123456789abcdefghij\nsecret=SECRET-zyxwvutsrqponmlkjihg!\n\
                    again KEY-0123456789abcdefghijKEY-0123456789abcdefghij\n\x1b[31mred\x1b[0m\n";
        let lines = last_lines(&window(out), &secrets(&[key, secret]));
        let all = lines.join("\n");
        assert!(
            !all.contains("0123456789") && !all.contains("zyxwvu"),
            "{all}"
        );
        assert_eq!(lines[0], "using key KEY...***");
        // The secret was sealed with a newline; the check printed it trimmed.
        assert_eq!(lines[1], "secret=SEC...***!");
        assert_eq!(lines[2], "again KEY...***KEY...***");
        assert_eq!(lines[3], "?[31mred?[0m", "no terminal escapes");
    }

    #[test]
    fn only_the_last_lines_within_the_budget_are_kept() {
        let mut out = Vec::new();
        for i in 0..100 {
            out.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let lines = last_lines(&window(&out), &secrets(&[]));
        assert_eq!(lines.len(), LINES);
        assert_eq!(lines.last().unwrap(), "line 99");
        let long = vec![b'x'; 10_000];
        let lines = last_lines(&window(&long), &secrets(&[]));
        assert_eq!(lines[0].chars().count(), LINE_CHARS + 1);
        let many: Vec<u8> = (0..30)
            .flat_map(|_| [&long[..500], b"\n"].concat())
            .collect();
        let lines = last_lines(&window(&many), &secrets(&[]));
        assert!(lines.iter().map(|l| l.len() + 1).sum::<usize>() <= BYTES);
        assert!(last_lines(&window(b""), &secrets(&[])).is_empty());
    }

    #[test]
    fn a_value_cut_by_the_window_never_shows_its_tail() {
        // A PEM-like secret printed right where the window begins.
        let pem = b"-----BEGIN KEY-----\nAAAAsecretline1\nBBBBsecretline2\n-----END KEY-----";
        let mut out = vec![b'.'; WINDOW - 40];
        out.extend_from_slice(b"\n");
        out.extend_from_slice(pem);
        out.extend_from_slice(b"\nerror: rejected\n");
        let w = window(&out);
        assert!(w.truncated);
        let all = last_lines(&w, &secrets(&[pem])).join("\n");
        assert!(!all.contains("secretline"), "{all}");
        assert!(all.ends_with("error: rejected"), "{all}");
        // The window's first line, partial, is dropped.
        let w = window(&[vec![b'y'; WINDOW + 10], b"\nlast\n".to_vec()].concat());
        assert_eq!(last_lines(&w, &secrets(&[])), ["last"]);
    }
}
