//! Env files in the dialect of systemd's `EnvironmentFile=`.
//!
//! [`render`] writes every variable as `KEY="value"` with `"`, `\`, `` ` ``
//! and `$` escaped by a backslash. Inside double quotes systemd's parser
//! (`src/basic/env-file.c`, `parse_env_file_internal`) undoes exactly those
//! four escapes and keeps every other byte, raw newlines and CRs included, so
//! the service gets each value byte for byte. What that parser cannot carry is
//! refused by [`check_value`]: NUL, invalid UTF-8 (it drops the whole file),
//! U+FEFF, and a `NAME=value` the kernel would refuse at exec.
//!
//! [`parse`] is a transcription of that parser, used to read legacy
//! hand-written env files (`import`) and to prove the round trip in tests.

use thiserror::Error;

use crate::secret::{Secret, SecretBuf};

/// The kernel refuses a single `NAME=value` string of this size or more at
/// exec (`MAX_ARG_STRLEN`, counting the terminating NUL).
pub const MAX_ASSIGNMENT: usize = 128 * 1024;

/// Why a value cannot be written. Never carries the value itself.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ValueError {
    /// It holds a NUL byte.
    #[error("contains a NUL byte, which an environment variable cannot hold")]
    Nul,
    /// It is not valid UTF-8.
    #[error("is not valid UTF-8 (systemd would ignore the whole env file)")]
    InvalidUtf8,
    /// It holds a byte-order mark.
    #[error("contains U+FEFF (a byte-order mark), which systemd's env-file parser mangles")]
    Bom,
    /// `NAME=value` would be too long for exec ([`MAX_ASSIGNMENT`]).
    #[error("is {len} bytes; `NAME=value` must stay under {MAX_ASSIGNMENT} bytes or exec fails with E2BIG")]
    TooLong {
        /// The length of `NAME=value`, in bytes.
        len: usize,
    },
}

/// Is `name` a valid environment variable name (`[A-Za-z_][A-Za-z0-9_]*`)?
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.bytes();
    matches!(chars.next(), Some(b'A'..=b'Z' | b'a'..=b'z' | b'_'))
        && chars.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks that `value` can be carried under `name` through an env file.
pub fn check_value(name: &str, value: &[u8]) -> Result<(), ValueError> {
    if value.contains(&0) {
        return Err(ValueError::Nul);
    }
    let text = std::str::from_utf8(value).map_err(|_| ValueError::InvalidUtf8)?;
    if text.contains('\u{feff}') {
        return Err(ValueError::Bom);
    }
    let assignment = name.len() + 1 + value.len();
    if assignment >= MAX_ASSIGNMENT {
        return Err(ValueError::TooLong { len: value.len() });
    }
    Ok(())
}

fn needs_escape(b: u8) -> bool {
    matches!(b, b'"' | b'\\' | b'`' | b'$')
}

/// The header line every rendered file starts with. It must never end in a
/// backslash: in systemd 252 that would swallow the next line.
pub const HEADER: &str = "# Managed by credloader; changes are overwritten. Do not edit.\n";

/// Renders `vars` (already checked with [`check_value`]) in the given order.
/// The result is sized exactly, so the buffer never reallocates.
pub fn render<'a, I>(vars: I) -> Secret
where
    I: IntoIterator<Item = (&'a str, &'a [u8])> + Clone,
{
    let size = HEADER.len()
        + vars
            .clone()
            .into_iter()
            .map(|(k, v)| k.len() + 4 + v.len() + v.iter().filter(|&&b| needs_escape(b)).count())
            .sum::<usize>();
    let mut out = SecretBuf::with_capacity(size);
    out.extend_from_slice(HEADER.as_bytes());
    for (k, v) in vars {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"=\"");
        for &b in v {
            if needs_escape(b) {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.extend_from_slice(b"\"\n");
    }
    debug_assert_eq!(out.len(), size);
    out.into_secret()
}

/// One assignment found by [`parse`] (`KEY=` with nothing after it gives an
/// empty value, as in systemd).
#[derive(Debug)]
pub struct Assignment {
    /// The line it starts on (1-based).
    pub line: usize,
    /// The variable name.
    pub key: String,
    /// The value, unquoted and unescaped.
    pub value: Secret,
}

/// A line the parser could not use, as systemd would log and ignore it.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: {problem}")]
pub struct ParseIssue {
    /// The line (1-based).
    pub line: usize,
    /// What systemd would log about it.
    pub problem: String,
}

/// Parses `input` exactly as systemd's `load_env_file` does and returns the
/// assignments in file order (later ones win when applied) together with the
/// assignments systemd would ignore (invalid UTF-8, invalid names).
pub fn parse(input: &[u8]) -> (Vec<Assignment>, Vec<ParseIssue>) {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        PreKey,
        Key,
        PreValue,
        Value,
        ValueEscape,
        Single,
        Double,
        DoubleEscape,
        Comment,
        CommentEscape,
    }
    const WS: &[u8] = b" \t\n\r";
    const NL: &[u8] = b"\n\r";

    let mut out = Vec::new();
    let mut issues = Vec::new();
    let mut state = S::PreKey;
    let mut key: Vec<u8> = Vec::new();
    let mut value = SecretBuf::with_capacity(64);
    let mut last_key_ws: Option<usize> = None;
    let mut last_value_ws: Option<usize> = None;
    let mut line = 1usize;
    let mut key_line = 1usize;

    let mut push = |key: &mut Vec<u8>,
                    value: &mut SecretBuf,
                    last_key_ws: Option<usize>,
                    chop_value: Option<usize>,
                    line: usize| {
        if let Some(n) = last_key_ws {
            key.truncate(n);
        }
        let taken = std::mem::replace(value, SecretBuf::with_capacity(64));
        let mut v = taken.as_slice();
        if let Some(n) = chop_value {
            v = &v[..n];
        }
        let k = String::from_utf8(std::mem::take(key));
        match k {
            Err(_) => issues.push(ParseIssue {
                line,
                problem: "invalid UTF-8 in a key; systemd ignores the file".into(),
            }),
            // A "key" that is not a valid name may be a line of a multi-line
            // secret (a PEM body, say): it is described, never quoted.
            Ok(k) if std::str::from_utf8(v).is_err() => issues.push(ParseIssue {
                line,
                problem: format!(
                    "invalid UTF-8 in the value of {}; systemd ignores the file",
                    if valid_name(&k) { k.clone() } else { format!("a {}-character key", k.chars().count()) }
                ),
            }),
            Ok(k) if !valid_name(&k) => issues.push(ParseIssue {
                line,
                problem: format!(
                    "text of {} characters before `=` is not a valid variable name (not shown: it may be \
                     part of a multi-line value); systemd ignores it",
                    k.chars().count()
                ),
            }),
            Ok(k) => out.push(Assignment {
                line,
                key: k,
                value: Secret::copy_from(v),
            }),
        }
    };

    for &c in input {
        match state {
            S::PreKey => {
                if c == b'#' || c == b';' {
                    state = S::Comment;
                } else if !WS.contains(&c) {
                    state = S::Key;
                    key_line = line;
                    last_key_ws = None;
                    key.push(c);
                } else if c == b'\n' {
                    line += 1;
                }
            }
            S::Key => {
                if NL.contains(&c) {
                    state = S::PreKey;
                    line += (c == b'\n') as usize;
                    key.clear();
                } else if c == b'=' {
                    state = S::PreValue;
                    last_value_ws = None;
                } else {
                    if !WS.contains(&c) {
                        last_key_ws = None;
                    } else if last_key_ws.is_none() {
                        last_key_ws = Some(key.len());
                    }
                    key.push(c);
                }
            }
            S::PreValue => {
                if NL.contains(&c) {
                    state = S::PreKey;
                    push(&mut key, &mut value, last_key_ws, None, key_line);
                    line += (c == b'\n') as usize;
                } else if c == b'\'' {
                    state = S::Single;
                } else if c == b'"' {
                    state = S::Double;
                } else if c == b'\\' {
                    state = S::ValueEscape;
                } else if !WS.contains(&c) {
                    state = S::Value;
                    value.push(c);
                }
            }
            S::Value => {
                if NL.contains(&c) {
                    state = S::PreKey;
                    push(&mut key, &mut value, last_key_ws, last_value_ws, key_line);
                    line += (c == b'\n') as usize;
                } else if c == b'\\' {
                    state = S::ValueEscape;
                    last_value_ws = None;
                } else {
                    if !WS.contains(&c) {
                        last_value_ws = None;
                    } else if last_value_ws.is_none() {
                        last_value_ws = Some(value.len());
                    }
                    value.push(c);
                }
            }
            S::ValueEscape => {
                state = S::Value;
                if !NL.contains(&c) {
                    value.push(c);
                } else if c == b'\n' {
                    line += 1;
                }
            }
            S::Single => {
                if c == b'\'' {
                    state = S::PreValue;
                } else {
                    line += (c == b'\n') as usize;
                    value.push(c);
                }
            }
            S::Double => {
                if c == b'"' {
                    state = S::PreValue;
                } else if c == b'\\' {
                    state = S::DoubleEscape;
                } else {
                    line += (c == b'\n') as usize;
                    value.push(c);
                }
            }
            S::DoubleEscape => {
                state = S::Double;
                if needs_escape(c) {
                    value.push(c);
                } else if c != b'\n' {
                    value.push(b'\\');
                    value.push(c);
                } else {
                    line += 1;
                }
            }
            S::Comment => {
                if c == b'\\' {
                    state = S::CommentEscape;
                } else if NL.contains(&c) {
                    state = S::PreKey;
                    line += (c == b'\n') as usize;
                }
            }
            S::CommentEscape => {
                state = S::Comment;
                line += (c == b'\n') as usize;
            }
        }
    }
    match state {
        S::PreValue | S::ValueEscape | S::Single | S::Double | S::DoubleEscape => {
            push(&mut key, &mut value, last_key_ws, None, key_line)
        }
        S::Value => push(&mut key, &mut value, last_key_ws, last_value_ws, key_line),
        _ => {}
    }
    (out, issues)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_map(input: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
        let (a, issues) = parse(input);
        assert!(issues.is_empty(), "{issues:?}");
        a.into_iter()
            .map(|a| (a.key, a.value.expose().to_vec()))
            .collect()
    }

    fn hard_values() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = [
            "plain",
            "",
            " lead and trail \t",
            "\ttab",
            "quote\"double",
            "quote'single",
            "'all single'",
            "\"all double\"",
            "back\\slash\\",
            "\\",
            "\\n literal",
            "dollar $HOME ${HOME} $",
            "back`tick`",
            "# hash start",
            "; semi start",
            "mid # hash ; semi",
            "line1\nline2\n",
            "cr\r\nlf",
            "\r",
            "a=b=c",
            "ünïcødé ✓ 鍵",
            "trailing backslash newline\\\n",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        v.push(vec![b'x'; 64 * 1024]);
        v.push((1u8..=255).filter(|b| b.is_ascii() && *b != 0).collect());
        v
    }

    #[test]
    fn render_then_parse_round_trips_hard_values() {
        let values = hard_values();
        let names: Vec<String> = (0..values.len()).map(|i| format!("V{i}")).collect();
        for (n, v) in names.iter().zip(&values) {
            check_value(n, v).unwrap();
        }
        let rendered = render(
            names
                .iter()
                .map(String::as_str)
                .zip(values.iter().map(Vec::as_slice)),
        );
        let parsed = parse_map(rendered.expose());
        assert_eq!(parsed.len(), values.len());
        for (n, v) in names.iter().zip(&values) {
            assert_eq!(&parsed[n], v, "{n}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_carried() {
        assert_eq!(check_value("K", b"a\0b"), Err(ValueError::Nul));
        assert_eq!(check_value("K", b"\xff"), Err(ValueError::InvalidUtf8));
        assert_eq!(
            check_value("K", "\u{feff}x".as_bytes()),
            Err(ValueError::Bom)
        );
        let big = vec![b'a'; MAX_ASSIGNMENT - 2];
        assert_eq!(
            check_value("K", &big),
            Err(ValueError::TooLong { len: big.len() })
        );
        assert!(check_value("K", &big[1..]).is_ok());
    }

    #[test]
    fn names() {
        assert!(valid_name("BINANCE_API_KEY"));
        assert!(valid_name("_x1"));
        assert!(!valid_name("1X"));
        assert!(!valid_name("A-B"));
        assert!(!valid_name(""));
        assert!(!valid_name("export K"));
    }

    #[test]
    fn parses_the_legacy_dialect_like_systemd() {
        let input = b"# comment\n; other\nA=1\n  B = spaced value  \nC='single $x'\nD=\"dq \\n \\$\"\nE=un\\\"quoted\nF=\nexport G=1\nA=2\nH=cont\\\ninued\n";
        let (a, issues) = parse(input);
        let m: std::collections::BTreeMap<_, _> = a
            .iter()
            .map(|a| {
                (
                    a.key.as_str(),
                    String::from_utf8(a.value.expose().to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(m["A"], "2");
        assert_eq!(m["B"], "spaced value");
        assert_eq!(m["C"], "single $x");
        assert_eq!(m["D"], "dq \\n $");
        assert_eq!(m["E"], "un\"quoted");
        assert_eq!(m["F"], "");
        assert_eq!(m["H"], "continued");
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].line, 9);
        assert_eq!(a.iter().find(|a| a.key == "B").unwrap().line, 4);
    }

    #[test]
    fn header_is_a_safe_comment() {
        assert!(!HEADER.trim_end_matches('\n').ends_with('\\'));
        assert!(parse(HEADER.as_bytes()).0.is_empty());
    }
}
