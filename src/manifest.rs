//! The manifest that binds what PID 1 hands over to the sealed files it
//! came from: `credloader-generator` writes it into `credloader.service`'s
//! drop-in as `SetCredential=credloader.manifest:NAME=dev:ino:size:ctime_ns …`
//! (see [`crate::boot`]), and the [`crate::creds::Decrypter`] reads it back
//! from `$CREDENTIALS_DIRECTORY`. It holds file identities only.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use crate::escape::ShowPath;
use crate::safefs::Dir;
use crate::state::FileId;

/// The first manifest credential; further ones are `credloader.manifest.1`, …
pub const MANIFEST: &str = "credloader.manifest";
/// At most this many bytes of entries per manifest credential. Each is one
/// line of the drop-in; systemd 252 reads unit-file lines up to 1 MiB.
/// ~60 bytes per entry: 1,000 credentials make 2 manifest credentials.
const MANIFEST_CHUNK: usize = 32 * 1024;

/// What PID 1 hands over for a listed credential whose file is gone when
/// the unit starts: the generator writes `SetCredential=NAME:\x00` beside
/// each `LoadCredentialEncrypted=NAME:…`, a default systemd uses instead of
/// failing the unit. One NUL byte: no env value can hold one, and the
/// [`crate::creds::Decrypter`] never takes it for a value.
pub const MISSING: &[u8] = b"\0";
/// [`MISSING`] as a unit file spells it.
pub const MISSING_ESCAPED: &str = "\\x00";

/// The `i`-th manifest credential's name.
pub fn manifest_name(i: usize) -> String {
    if i == 0 {
        MANIFEST.to_string()
    } else {
        format!("{MANIFEST}.{i}")
    }
}

pub fn entry(name: &str, id: &FileId) -> String {
    format!("{name}={}:{}:{}:{}", id.dev, id.ino, id.size, id.ctime_ns)
}

/// The manifest values for `entries`: `NAME=dev:ino:size:ctime_ns`
/// separated by spaces, split so that none exceeds [`MANIFEST_CHUNK`].
/// Only characters that stand unquoted and unescaped in a unit file.
pub fn format_manifest(entries: &[(String, FileId)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (name, id) in entries {
        let e = entry(name, id);
        if !cur.is_empty() && cur.len() + 1 + e.len() > MANIFEST_CHUNK {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&e);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses manifest values into `into`. Anything malformed, or a name listed
/// twice, makes the whole manifest void (`false`): nothing is then trusted.
pub fn parse_manifest(text: &str, into: &mut BTreeMap<String, FileId>) -> bool {
    for item in text.split_ascii_whitespace() {
        let Some((name, id)) = item.split_once('=') else {
            return false;
        };
        if crate::names::credential(name).is_err() {
            return false;
        }
        let mut parts = id.split(':');
        let (Some(dev), Some(ino), Some(size), Some(ctime), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return false;
        };
        let (Ok(dev), Ok(ino), Ok(size), Ok(ctime_ns)) =
            (dev.parse(), ino.parse(), size.parse(), ctime.parse())
        else {
            return false;
        };
        let id = FileId {
            dev,
            ino,
            size,
            ctime_ns,
        };
        if into.insert(name.to_string(), id).is_some() {
            return false;
        }
    }
    true
}

/// The manifest handed to this unit in `dir` (`$CREDENTIALS_DIRECTORY`):
/// `credloader.manifest`, then `.1`, `.2`, … up to the first one missing.
/// `None` without one, or when any part is unreadable or malformed.
pub fn read_manifest(dir: &Dir) -> Option<BTreeMap<String, FileId>> {
    let mut out = BTreeMap::new();
    for i in 0.. {
        let name = manifest_name(i);
        match dir.read(OsStr::new(&name), crate::systemd_creds::MAX_SEALED) {
            Ok(Some((bytes, _))) => {
                let text = std::str::from_utf8(&bytes).ok()?;
                if !parse_manifest(text, &mut out) {
                    tracing::warn!(
                        "{}/{name} is malformed; ignoring every handed-over credential",
                        dir.path().shown()
                    );
                    return None;
                }
            }
            Ok(None) if i == 0 => return None,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("{e}; ignoring every handed-over credential");
                return None;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> FileId {
        FileId {
            dev: 2049,
            ino: n,
            size: 300 + n as i64,
            ctime_ns: 1_700_000_000_123_456_789 + n as i64,
        }
    }

    #[test]
    fn manifest_round_trips() {
        let entries: Vec<(String, FileId)> = ["A", "b.c-d@e+f", "Z_9"]
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), id(i as u64)))
            .collect();
        let values = format_manifest(&entries);
        assert_eq!(values.len(), 1);
        assert!(values[0].starts_with("A=2049:0:300:1700000000123456789 b.c-d@e+f=2049:1:"));
        let mut m = BTreeMap::new();
        assert!(parse_manifest(&values[0], &mut m));
        assert_eq!(m.len(), 3);
        assert_eq!(m["b.c-d@e+f"], id(1));
        // Only what stands unquoted and unescaped in a unit file.
        assert!(values[0]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "=: _.-@+".contains(c)));
        // A negative ctime (before 1970) survives too.
        let old = FileId {
            ctime_ns: -5,
            ..id(0)
        };
        let mut m = BTreeMap::new();
        assert!(parse_manifest(
            &format_manifest(&[("X".into(), old)])[0],
            &mut m
        ));
        assert_eq!(m["X"], old);
    }

    #[test]
    fn a_big_fleet_is_split_into_short_lines() {
        let entries: Vec<(String, FileId)> = (0..1000)
            .map(|i| (format!("{}_{i}", "K".repeat(200)), id(u64::MAX - i)))
            .collect();
        let values = format_manifest(&entries);
        assert!(values.len() > 1);
        let mut m = BTreeMap::new();
        for v in &values {
            assert!(v.len() <= MANIFEST_CHUNK, "{}", v.len());
            assert!(parse_manifest(v, &mut m));
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m[&entries[999].0], entries[999].1);
    }

    #[test]
    fn a_malformed_manifest_voids_all_of_it() {
        for bad in [
            "A",
            "A=1:2:3",
            "A=1:2:3:4:5",
            "A=1:2:x:4",
            "A=-1:2:3:4",
            "a/b=1:2:3:4",
            "A=1:2:3:4 A=1:2:3:4",
            "credloader.manifest=1:2:3:4",
        ] {
            let mut m = BTreeMap::new();
            assert!(
                !parse_manifest(&format!("OK=1:2:3:4 {bad}"), &mut m),
                "{bad}"
            );
        }
        let mut m = BTreeMap::new();
        assert!(parse_manifest("", &mut m) && m.is_empty());
    }
}
