//! The unit file syntax, as `config_parse` and `parse_line` read it
//! (`src/shared/conf-parser.c`, systemd 252).
//!
//! - Lines end at `\n`, `\r`, `\r\n` or NUL. A line whose first non-blank
//!   character is `#` or `;` is a comment, even in the middle of a
//!   continuation (it is skipped and the continuation goes on).
//! - A line ending in an odd number of backslashes continues on the next
//!   one; the backslash becomes a blank. At the end of the file a pending
//!   continuation is used as it is.
//! - A UTF-8 byte-order mark is dropped once, from the first line that
//!   starts with one.
//! - `[Name]` opens a section; a section a service unit does not have
//!   (`[service]`, `[ Service ]`, `[X-Foo]`) is skipped with everything in
//!   it. A `[` line without a closing `]` (or with an unsafe name) is an
//!   error that ends the file.
//! - An assignment outside any section, a line without `=`, and `=value`
//!   are ignored. Keys and values are stripped of blanks; keys are
//!   case-sensitive.

/// The sections of a service unit (`UNIT_VTABLE(u)->sections`).
pub const SECTIONS: [&str; 3] = ["Unit", "Service", "Install"];

/// Why PID 1 stops reading a file at `line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub line: usize,
    pub reason: String,
    /// A syntax error (a unit file with one fails to load with `error`),
    /// not a refused value (`bad-setting`).
    pub syntax: bool,
}

const BLANKS: &[char] = &[' ', '\t', '\n', '\r'];

/// The physical lines of `text`, as `read_line` splits them.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        if t.is_empty() {
            rest = None;
            return None;
        }
        match t.find(['\n', '\r', '\0']) {
            None => {
                rest = None;
                Some(t)
            }
            Some(i) => {
                let skip = if t[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&t[i + skip..]);
                Some(&t[..i])
            }
        }
    })
}

/// Does `s` end in an odd number of backslashes (a continuation)?
fn continues(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Reads `text`, calling `assign(section, key, value, line)` for every
/// assignment in a section of a service unit, in order; `line` is where
/// the assignment starts. An `Err` from `assign` (a value PID 1 refuses
/// outright) ends the file at that line, as does a syntax error.
pub fn parse(
    text: &str,
    mut assign: impl FnMut(&str, &str, &str, usize) -> Result<(), String>,
) -> Result<(), Stop> {
    let mut section: Option<&str> = None;
    let mut continuation: Option<(String, usize)> = None;
    let mut bom_seen = false;
    let mut number = 0;
    for raw in lines(text) {
        number += 1;
        if raw.trim_start_matches(BLANKS).starts_with(['#', ';']) {
            continue;
        }
        let mut l = raw;
        if !bom_seen {
            if let Some(rest) = l.strip_prefix('\u{feff}') {
                l = rest;
                bom_seen = true;
            }
        }
        let (mut logical, start) = match continuation.take() {
            Some((mut c, start)) => {
                c.push_str(l);
                (c, start)
            }
            None => (l.to_string(), number),
        };
        if continues(&logical) {
            logical.pop();
            logical.push(' ');
            continuation = Some((logical, start));
            continue;
        }
        line(&logical, start, &mut section, &mut assign)?;
    }
    if let Some((logical, start)) = continuation {
        line(&logical, start, &mut section, &mut assign)?;
    }
    Ok(())
}

fn line(
    logical: &str,
    number: usize,
    section: &mut Option<&'static str>,
    assign: &mut impl FnMut(&str, &str, &str, usize) -> Result<(), String>,
) -> Result<(), Stop> {
    let l = logical.trim_matches(BLANKS);
    if l.is_empty() {
        return Ok(());
    }
    let stop = |reason: String| Stop {
        line: number,
        reason,
        syntax: true,
    };
    if let Some(head) = l.strip_prefix('[') {
        let name = head
            .strip_suffix(']')
            .ok_or_else(|| stop(format!("invalid section header `{l}`")))?;
        if name
            .chars()
            .any(|c| c < ' ' || c == '\u{7f}' || "\\\"'".contains(c))
        {
            return Err(stop(format!("invalid section header `{l}`")));
        }
        *section = SECTIONS.iter().find(|s| **s == name).copied();
        return Ok(());
    }
    let Some(sec) = *section else {
        return Ok(());
    };
    let Some((key, value)) = l.split_once('=') else {
        return Ok(());
    };
    if key.is_empty() {
        return Ok(());
    }
    assign(
        sec,
        key.trim_matches(BLANKS),
        value.trim_matches(BLANKS),
        number,
    )
    .map_err(|reason| Stop {
        line: number,
        reason,
        syntax: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> (Vec<String>, Option<Stop>) {
        let mut v = Vec::new();
        let r = parse(text, |s, k, val, n| {
            v.push(format!("{n}:{s}.{k}={val}"));
            if val == "FATAL" {
                Err("refused".into())
            } else {
                Ok(())
            }
        });
        (v, r.err())
    }

    #[test]
    fn sections_comments_and_continuations() {
        let (v, stop) = all(
            "\u{feff}User=outside\n[Unit]\nUser=unit\n[Service]\n  User = a\\\n# comment\n  b  \n\
             ; another\n[ Service ]\nUser=ignored\n[service]\nUser=ignored\n[Service]\n\
             Even=\\\\\nOdd=x\\\\\\\nend\r\n=novalue\nnoequals\n# comment \\\nUser=after-comment\n\
             [Install]\nUser=install\n[Service]\nLast=a\\",
        );
        assert_eq!(
            v,
            [
                "3:Unit.User=unit",
                "5:Service.User=a   b",
                "14:Service.Even=\\\\",
                "15:Service.Odd=x\\\\ end",
                "20:Service.User=after-comment",
                "22:Install.User=install",
                "24:Service.Last=a"
            ]
        );
        assert_eq!(stop, None);
    }

    #[test]
    fn errors_end_the_file() {
        let (v, stop) = all("[Service]\nA=1\n[Service\nB=2\n");
        assert_eq!(v, ["2:Service.A=1"]);
        assert_eq!(stop.unwrap().line, 3);
        let (v, stop) = all("[Service]\nA=FATAL\nB=2\n");
        assert_eq!(v, ["2:Service.A=FATAL"]);
        assert_eq!(stop.unwrap().reason, "refused");
    }
}
