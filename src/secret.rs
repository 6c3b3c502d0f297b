//! The one type that holds plaintext.
//!
//! A [`Secret`] is a byte buffer that is zeroized when dropped, never printed
//! by `Debug`, and has no `Display`, `Clone` or `Serialize`. Plaintext flows
//! from the pipe of `systemd-creds decrypt` (or `$CREDENTIALS_DIRECTORY`) into
//! a `Secret`, is rendered into another `Secret`, and is written from there.
//!
//! Growing a `Vec` copies its contents and frees the old buffer without
//! clearing it, so every buffer here grows through [`grow`], which zeroizes
//! the old allocation before releasing it.

use std::fmt;
use std::io::{self, Read};

use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

/// Plaintext bytes: zeroized on drop, redacted in `Debug`.
pub struct Secret(SecretBox<Vec<u8>>);

impl Secret {
    /// Takes ownership of `bytes` (the buffer moves, it is not copied).
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(SecretBox::new(Box::new(bytes)))
    }

    /// Copies `bytes` into a fresh secret buffer of exactly that size.
    pub fn copy_from(bytes: &[u8]) -> Self {
        let mut v = Vec::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        Secret::new(v)
    }

    /// The plaintext. Every caller is a place where the value is used.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret().as_slice()
    }

    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// A masked form safe to print: a few leading characters only when the
    /// value is long enough that they give little away, then `...***`.
    pub fn masked(&self) -> String {
        let v = self.expose();
        // Reveal at most 3 characters and never more than an eighth of the value.
        let reveal = (v.len() / 8).min(3);
        let prefix: String = v[..reveal]
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
            .collect();
        format!("{prefix}...***")
    }

    /// Constant-time-ish comparison (length is not hidden).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        let a = self.expose();
        if a.len() != other.len() {
            return false;
        }
        a.iter().zip(other).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([REDACTED {} bytes])", self.len())
    }
}

/// A zeroizing buffer being filled; see the module docs for why it exists.
pub struct SecretBuf(Zeroizing<Vec<u8>>);

impl SecretBuf {
    pub fn with_capacity(cap: usize) -> Self {
        SecretBuf(Zeroizing::new(Vec::with_capacity(cap)))
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.0.extend_from_slice(bytes);
    }

    pub fn push(&mut self, b: u8) {
        self.reserve(1);
        self.0.push(b);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    fn reserve(&mut self, extra: usize) {
        let need = self.0.len() + extra;
        if need > self.0.capacity() {
            let cap = need.max(self.0.capacity() * 2).max(64);
            grow(&mut self.0, cap);
        }
    }

    pub fn into_secret(mut self) -> Secret {
        Secret::new(std::mem::take(&mut *self.0))
    }
}

/// Moves `buf` into a new allocation of `cap` bytes; the old one is zeroized.
fn grow(buf: &mut Zeroizing<Vec<u8>>, cap: usize) {
    let mut bigger = Zeroizing::new(Vec::with_capacity(cap));
    bigger.extend_from_slice(buf);
    std::mem::swap(buf, &mut bigger);
    // `bigger` now holds the old buffer and is zeroized as it drops.
}

/// Reads everything from `r` into a [`Secret`], refusing more than `limit` bytes.
pub fn read_secret<R: Read>(mut r: R, limit: usize) -> io::Result<Secret> {
    let mut buf = Zeroizing::new(Vec::with_capacity(4096));
    loop {
        if buf.len() == buf.capacity() {
            let cap = buf.capacity() * 2;
            grow(&mut buf, cap);
        }
        let filled = buf.len();
        let cap = buf.capacity();
        buf.resize(cap, 0);
        let res = r.read(&mut buf[filled..]);
        match res {
            Ok(0) => {
                buf.truncate(filled);
                break;
            }
            Ok(n) => {
                buf.truncate(filled + n);
                if buf.len() > limit {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("more than {limit} bytes"),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(filled),
            Err(e) => return Err(e),
        }
    }
    Ok(Secret::new(std::mem::take(&mut *buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::copy_from(b"hunter2-very-secret");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("REDACTED"));
    }

    #[test]
    fn masked_reveals_little() {
        assert_eq!(Secret::copy_from(b"abc").masked(), "...***");
        assert_eq!(
            Secret::copy_from(b"abcdefghijklmnopqrstuvwxyz012345").masked(),
            "abc...***"
        );
        assert_eq!(Secret::copy_from(b"abcdefghijklmnop").masked(), "ab...***");
    }

    #[test]
    fn read_secret_reads_large_input_and_enforces_the_limit() {
        let data = vec![7u8; 100_000];
        let s = read_secret(&data[..], 200_000).unwrap();
        assert_eq!(s.expose(), &data[..]);
        assert!(read_secret(&data[..], 10_000).is_err());
    }

    #[test]
    fn secret_buf_grows() {
        let mut b = SecretBuf::with_capacity(1);
        for i in 0..1000u32 {
            b.extend_from_slice(&i.to_le_bytes());
        }
        assert_eq!(b.len(), 4000);
        assert!(b.into_secret().expose().starts_with(&[0, 0, 0, 0, 1]));
    }
}
