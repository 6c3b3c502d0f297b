//! `[sources.file]`: a JSON (`{"NAME": "value"}`) or TOML (`NAME = "value"`)
//! file of credential values, for development hosts only (like the older
//! `MM_FAKE_SECRETS_JSON`). The configuration refuses it under
//! `environment = "prod"`.
//!
//! The file is read into a zeroizing buffer and parsed from there; each
//! value's `String` buffer is moved (not copied) into a [`Secret`], and any
//! value not used is zeroized. The parsers' own scratch buffers cannot be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;
use zeroize::Zeroize;

use super::{Source, SourceError};
use crate::secret::{read_secret, Secret};

/// The most a dev secrets file may hold.
const MAX_FILE: usize = 16 * 1024 * 1024;

pub struct FileSource {
    path: PathBuf,
    /// Name → the key read from the file (the name itself when not given).
    keys: BTreeMap<String, Option<String>>,
    values: BTreeMap<String, Secret>,
}

impl FileSource {
    pub fn open(
        path: &Path,
        keys: BTreeMap<String, Option<String>>,
    ) -> Result<FileSource, SourceError> {
        let file = std::fs::File::open(path).map_err(|e| {
            SourceError::Auth(format!("dev source {}: cannot open: {e}", path.display()))
        })?;
        let raw = read_secret(file, MAX_FILE).map_err(|e| {
            SourceError::Auth(format!("dev source {}: cannot read: {e}", path.display()))
        })?;
        let toml = path.extension().is_some_and(|x| x == "toml");
        let values = if toml {
            parse_toml(&raw)
        } else {
            parse_json(&raw)
        }
        .map_err(|m| SourceError::Auth(format!("dev source {}: {m}", path.display())))?;
        Ok(FileSource {
            path: path.to_path_buf(),
            keys,
            values,
        })
    }

    fn key<'a>(&'a self, name: &'a str) -> &'a str {
        self.keys
            .get(name)
            .and_then(|k| k.as_deref())
            .unwrap_or(name)
    }
}

impl Source for FileSource {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn locate(&self, name: &str) -> String {
        format!("key `{}` in {}", self.key(name), self.path.display())
    }

    fn fetch(&self, name: &str) -> Result<Secret, SourceError> {
        let key = self.key(name);
        match self.values.get(key) {
            Some(v) => Ok(Secret::copy_from(v.expose())),
            None => Err(SourceError::Permanent(format!(
                "no key `{key}` in {}",
                self.path.display()
            ))),
        }
    }
}

/// Why a dev secrets file cannot be used. Never quotes the file: its
/// parsers' messages may show a value.
#[derive(Debug, Error)]
enum FormatError {
    #[error("not a JSON object of name -> string (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("not UTF-8")]
    NotUtf8,
    #[error("not a TOML table of name = \"value\" (line {line})")]
    NotToml { line: usize },
    #[error("the value of `{key}` is not a string")]
    NotString { key: String },
}

/// The values read, unless `bad` names one that is not a string.
fn all_strings(
    out: BTreeMap<String, Secret>,
    bad: Option<String>,
) -> Result<BTreeMap<String, Secret>, FormatError> {
    match bad {
        Some(key) => Err(FormatError::NotString { key }),
        None => Ok(out),
    }
}

fn parse_json(raw: &Secret) -> Result<BTreeMap<String, Secret>, FormatError> {
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(raw.expose()).map_err(|e| FormatError::NotJson {
            line: e.line(),
            column: e.column(),
        })?;
    let mut out = BTreeMap::new();
    let mut bad = None;
    for (k, v) in map {
        match v {
            serde_json::Value::String(s) => {
                out.insert(k, Secret::new(s.into_bytes()));
            }
            mut other => {
                scrub_json(&mut other);
                bad.get_or_insert(k);
            }
        }
    }
    all_strings(out, bad)
}

fn parse_toml(raw: &Secret) -> Result<BTreeMap<String, Secret>, FormatError> {
    let text = std::str::from_utf8(raw.expose()).map_err(|_| FormatError::NotUtf8)?;
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        // toml's Display quotes the offending line: report only where.
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        FormatError::NotToml { line }
    })?;
    let mut out = BTreeMap::new();
    let mut bad = None;
    for (k, v) in table {
        match v {
            toml::Value::String(s) => {
                out.insert(k, Secret::new(s.into_bytes()));
            }
            mut other => {
                scrub_toml(&mut other);
                bad.get_or_insert(k);
            }
        }
    }
    all_strings(out, bad)
}

/// Zeroes every string inside a value refused as not a string (a value
/// nested in an array or an object may still be a secret).
fn scrub_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(scrub_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(scrub_json),
        _ => {}
    }
}

/// [`scrub_json`] for TOML.
fn scrub_toml(v: &mut toml::Value) {
    match v {
        toml::Value::String(s) => s.zeroize(),
        toml::Value::Array(a) => a.iter_mut().for_each(scrub_toml),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| scrub_toml(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_value_has_every_string_in_it_zeroed() {
        let mut j: serde_json::Value =
            serde_json::from_str(r#"[{"a": ["s1", {"b": "s2"}]}, "s3", 1]"#).unwrap();
        scrub_json(&mut j);
        assert_eq!(j.to_string(), r#"[{"a":["",{"b":""}]},"",1]"#);
        let mut t: toml::Value = toml::from_str::<toml::Table>("k = [\"s1\", { b = \"s2\" }]")
            .unwrap()
            .into();
        scrub_toml(&mut t);
        assert_eq!(t["k"][0].as_str(), Some(""));
        assert_eq!(t["k"][1]["b"].as_str(), Some(""));
    }

    #[test]
    fn why_a_file_is_refused_reads_as_it_did_when_it_was_a_string() {
        let cases = [
            (
                FormatError::NotJson { line: 2, column: 5 },
                "not a JSON object of name -> string (line 2, column 5)",
            ),
            (FormatError::NotUtf8, "not UTF-8"),
            (
                FormatError::NotToml { line: 3 },
                "not a TOML table of name = \"value\" (line 3)",
            ),
            (
                FormatError::NotString { key: "B".into() },
                "the value of `B` is not a string",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
        let json = Secret::copy_from(br#"{"A": "a", "B": 1, "C": [2]}"#);
        assert_eq!(
            parse_json(&json).unwrap_err().to_string(),
            "the value of `B` is not a string"
        );
    }

    #[test]
    fn reads_json_and_toml_with_key_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("s.json");
        std::fs::write(&j, br#"{"A": "a-1", "B_KEY": "b-2"}"#).unwrap();
        let keys = BTreeMap::from([("B".to_string(), Some("B_KEY".to_string()))]);
        let s = FileSource::open(&j, keys).unwrap();
        assert_eq!(s.fetch("A").unwrap().expose(), b"a-1");
        assert_eq!(s.fetch("B").unwrap().expose(), b"b-2");
        assert!(matches!(s.fetch("C"), Err(SourceError::Permanent(_))));

        let t = dir.path().join("s.toml");
        std::fs::write(&t, "A = \"t-1\"\n").unwrap();
        let s = FileSource::open(&t, BTreeMap::new()).unwrap();
        assert_eq!(s.fetch("A").unwrap().expose(), b"t-1");

        std::fs::write(&t, "A = \"t-1\"\nB = hunter2\n").unwrap();
        let e = FileSource::open(&t, BTreeMap::new())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 2") && !e.contains("hunter2"), "{e}");
    }
}
