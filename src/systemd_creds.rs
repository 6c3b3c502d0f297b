//! The real `systemd-creds`, driven over pipes.
//!
//! Ciphertext goes in on stdin and plaintext comes back on stdout (decrypt),
//! or the other way round (encrypt): a value never appears in argv and never
//! touches a file. Only names, key choices and times are arguments.

use std::io::Write;
use std::process::{Command, Stdio};

use thiserror::Error;

use crate::secret::{read_secret, Secret};

/// What `systemd-creds` accepts at most; ~870 KB of plaintext is the real
/// ceiling on 252 (larger values encrypt but do not decrypt).
pub const MAX_PLAINTEXT: usize = 860 * 1024;
/// Upper bound for a sealed file (1 MiB is systemd's limit per credential).
pub const MAX_SEALED: usize = 1024 * 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CredsError {
    #[error("it was sealed under the name `{embedded}`, not `{expected}`; reseal it with `credloader rotate {expected}`")]
    NameMismatch { expected: String, embedded: String },
    #[error("its not-after time has passed; seal a new value with `credloader rotate {0}`")]
    Expired(String),
    #[error("systemd-creds could not decrypt it ({0}); it is damaged, tampered with, or sealed for another host or TPM")]
    Failed(String),
    #[error("this host's credential key is missing or unreadable ({0}); it lives in /var/lib/systemd/credential.secret (and the TPM) and is bound to /etc/machine-id: systemd-creds deletes a key made under another machine id (a cloned VM, a reset machine id), so restore both from backup, or reseal every credential on this host")]
    HostKey(String),
    #[error("cannot run systemd-creds: {0}; install systemd (>= 250)")]
    Spawn(String),
    #[error("the decrypted value is larger than {MAX_PLAINTEXT} bytes")]
    TooLarge,
}

/// The key a credential is sealed with (`--with-key=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
pub enum Key {
    /// TPM2 and host key if a TPM2 is present, else the host key.
    #[default]
    Auto,
    Host,
    Tpm2,
    #[value(name = "host+tpm2")]
    #[serde(rename = "host+tpm2")]
    HostTpm2,
}

impl Key {
    fn arg(self) -> &'static str {
        match self {
            Key::Auto => "auto",
            Key::Host => "host",
            Key::Tpm2 => "tpm2",
            Key::HostTpm2 => "host+tpm2",
        }
    }
}

/// systemd-creds's stderr minus its chatter, as one line.
fn diagnostics(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.contains("not located on encrypted media") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn run(args: &[&str], input: &[u8]) -> Result<(Secret, String, bool), CredsError> {
    let mut child = Command::new("systemd-creds")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CredsError::Spawn(e.to_string()))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    // Feed stdin from a scoped thread while reading stdout, so neither pipe
    // can fill up and stall the other.
    let (out, err) = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let _ = stdin.write_all(input);
            // dropping stdin closes the pipe
        });
        let err_reader = s.spawn(move || {
            let mut e = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stderr, &mut e);
            e
        });
        let out = read_secret(stdout, MAX_SEALED * 2);
        let _ = writer.join();
        (out, err_reader.join().unwrap_or_default())
    });
    let status = child.wait().map_err(|e| CredsError::Spawn(e.to_string()))?;
    let out = out.map_err(|_| CredsError::TooLarge)?;
    Ok((out, diagnostics(&err), status.success()))
}

/// Decrypts `sealed`, which must carry the embedded name `name`. A credential
/// sealed by hand without `--name` carries `NAME.cred`: it is accepted too,
/// and reported through the returned flag so the caller can suggest a reseal.
pub fn decrypt(name: &str, sealed: &[u8]) -> Result<(Secret, bool), CredsError> {
    match decrypt_as(name, sealed) {
        Err(CredsError::NameMismatch { embedded, .. }) if embedded == format!("{name}.cred") => {
            decrypt_as(&embedded, sealed)
                .map(|s| (s, true))
                .map_err(|e| match e {
                    CredsError::NameMismatch { embedded, .. } => CredsError::NameMismatch {
                        expected: name.into(),
                        embedded,
                    },
                    other => other,
                })
        }
        other => other.map(|s| (s, false)),
    }
}

fn decrypt_as(name: &str, sealed: &[u8]) -> Result<Secret, CredsError> {
    let name_arg = format!("--name={name}");
    let (out, diag, ok) = run(&["decrypt", &name_arg, "-", "-"], sealed)?;
    if ok {
        if out.len() > MAX_PLAINTEXT {
            return Err(CredsError::TooLarge);
        }
        return Ok(out);
    }
    drop(out);
    if let Some(rest) = diag.split("Embedded credential name '").nth(1) {
        let embedded = rest.split('\'').next().unwrap_or_default().to_string();
        return Err(CredsError::NameMismatch {
            expected: name.into(),
            embedded,
        });
    }
    if diag.contains("local credential key") || diag.contains("credential.secret") {
        return Err(CredsError::HostKey(diag));
    }
    if diag.contains("time passed") {
        return Err(CredsError::Expired(name.into()));
    }
    Err(CredsError::Failed(if diag.is_empty() {
        "no message".into()
    } else {
        diag
    }))
}

/// Seals `value` under `name`; returns the sealed bytes.
pub fn encrypt(
    name: &str,
    value: &Secret,
    key: Key,
    not_after: Option<&str>,
) -> Result<Vec<u8>, CredsError> {
    if value.len() > MAX_PLAINTEXT {
        return Err(CredsError::TooLarge);
    }
    let name_arg = format!("--name={name}");
    let key_arg = format!("--with-key={}", key.arg());
    let mut args = vec!["encrypt", name_arg.as_str(), key_arg.as_str()];
    let not_after_arg;
    if let Some(t) = not_after {
        not_after_arg = format!("--not-after={t}");
        args.push(&not_after_arg);
    }
    args.extend(["-", "-"]);
    let (out, diag, ok) = run(&args, value.expose())?;
    if !ok {
        return Err(CredsError::Failed(diag));
    }
    // Sealed bytes are not secret.
    Ok(out.expose().to_vec())
}

/// Which key a sealed credential was made with, told from the 16-byte key
/// id that opens its (base64) header; ids from systemd's creds-util.h.
pub fn sealed_key(sealed: &[u8]) -> Option<&'static str> {
    const IDS: [([u8; 16], &str); 5] = [
        (
            [
                0x5a, 0x1c, 0x6a, 0x86, 0xdf, 0x9d, 0x40, 0x96, 0xb1, 0xd5, 0xa6, 0x5e, 0x08, 0x62,
                0xf1, 0x9a,
            ],
            "host",
        ),
        (
            [
                0x0c, 0x7c, 0xc0, 0x7b, 0x11, 0x76, 0x45, 0x91, 0x9c, 0x4b, 0x0b, 0xea, 0x08, 0xbc,
                0x20, 0xfe,
            ],
            "tpm2",
        ),
        (
            [
                0xfa, 0xf7, 0xeb, 0x93, 0x41, 0xe3, 0x41, 0x2c, 0xa1, 0xa4, 0x36, 0xf9, 0x5a, 0x29,
                0x36, 0x2f,
            ],
            "tpm2",
        ),
        (
            [
                0x93, 0xa8, 0x94, 0x09, 0x48, 0x74, 0x44, 0x90, 0x90, 0xca, 0xf2, 0xfc, 0x93, 0xca,
                0xb5, 0x53,
            ],
            "host+tpm2",
        ),
        (
            [
                0x05, 0x84, 0x69, 0xda, 0xf6, 0xf5, 0x43, 0x24, 0x80, 0x05, 0x49, 0xda, 0x0f, 0x8e,
                0xa2, 0xfb,
            ],
            "null",
        ),
    ];
    let header = base64_prefix(sealed.get(..24)?)?;
    IDS.iter()
        .find(|(id, _)| header[..16] == id[..])
        .map(|(_, k)| *k)
}

/// Decodes 24 base64 characters into 18 bytes.
fn base64_prefix(text: &[u8]) -> Option<[u8; 18]> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = [0u8; 18];
    for (i, chunk) in text.chunks(4).enumerate() {
        let mut n = 0u32;
        for &c in chunk {
            n = n << 6 | val(c)?;
        }
        out[i * 3..i * 3 + 3].copy_from_slice(&n.to_be_bytes()[1..]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_sealing_key_from_the_header() {
        // Headers of real files sealed with --with-key=host and tpm2-absent.
        assert_eq!(
            sealed_key(b"Whxqht+dQJax1aZeCGLxmiAAAAABAAAA"),
            Some("host")
        );
        assert_eq!(sealed_key(b"BYRp2vb1QySABUnaD46i+yAAAAAB"), Some("null"));
        assert_eq!(sealed_key(b"garbage"), None);
    }
}
