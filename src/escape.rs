//! Names credloader did not choose, shown safely.
//!
//! A name that did not pass credloader's own validation (a file name in
//! `credloader.d/` or the creds dir, a `[services."…"]` key, a name in the
//! state file) can hold a newline, an escape sequence or a bidi override.
//! Printed raw, it would forge a line of the apply report, of `check` or of
//! the log, or drive the terminal. Every human-readable text that can hold
//! one goes through [`text`] (or [`path`]): a control character, a Unicode
//! line or paragraph separator, a bidi control or an invisible format
//! character is shown as Rust's `escape_debug` shows it (`\n`, `\u{1b}`),
//! and so is a backslash, but only in a text that needed escaping: names
//! as systemd writes them (`dev-disk-by\x2duuid.service`) stay as they are.
//! Machine output (`--json`) carries the true name, escaped by JSON itself.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

/// Whether `c` must not reach a terminal or a log line as it is.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061c}'                  // Arabic letter mark
            | '\u{200b}'..='\u{200f}'   // zero-width space/joiners, LRM, RLM
            | '\u{2028}'..='\u{202e}'   // line/paragraph separators, bidi embeddings
            | '\u{2060}'..='\u{2069}'   // word joiner, invisible operators, bidi isolates
            | '\u{feff}'                // zero-width no-break space (BOM)
        )
}

/// `s`, escaped if it holds anything [`unsafe_char`] (see the module docs).
/// Escaping a text twice changes nothing: an escaped text is clean.
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if unsafe_char(c) => out.extend(c.escape_debug()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A path for a message: as [`text`] (bytes that are not UTF-8 become
/// U+FFFD, as `Path::display` shows them).
pub fn path(p: &Path) -> Cow<'_, str> {
    match p.to_string_lossy() {
        Cow::Borrowed(s) => text(s),
        Cow::Owned(s) => Cow::Owned(text(&s).into_owned()),
    }
}

/// `{}` of [`path`], for format strings.
pub struct Shown<'a>(pub &'a Path);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&path(self.0))
    }
}

/// `path.shown()`: [`Shown`] in place of `path.display()` in a message.
pub trait ShowPath {
    fn shown(&self) -> Shown<'_>;
}

impl ShowPath for Path {
    fn shown(&self) -> Shown<'_> {
        Shown(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_names_kept() {
        assert_eq!(text("alpha.service"), "alpha.service");
        assert!(matches!(
            text("dev-disk-by\\x2duuid.service"),
            Cow::Borrowed(_)
        ));
        assert_eq!(text("a\nFORGED"), "a\\nFORGED");
        assert_eq!(text("a\r\tb\u{1b}[31m"), "a\\r\\tb\\u{1b}[31m");
        assert_eq!(text("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(text("\u{85}\u{2028}\u{7f}"), "\\u{85}\\u{2028}\\u{7f}");
        // Once escaping is needed, a backslash is escaped too, so the
        // escaped form is not ambiguous.
        assert_eq!(text("a\\nb\nc"), "a\\\\nb\\nc");
        // Letters of any script, quotes and emoji are no threat.
        assert_eq!(text("ünï \"q\" 'x' ✓"), "ünï \"q\" 'x' ✓");
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        for s in ["a\nb", "\u{1b}]0;title\u{7}", "x\\y\r", "plain"] {
            let once = text(s).into_owned();
            assert_eq!(text(&once), once);
            assert!(!once.chars().any(unsafe_char), "{once:?}");
        }
    }

    #[test]
    fn paths_are_escaped_even_when_not_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/etc/q/e\nF\xff.toml"));
        assert_eq!(path(p), "/etc/q/e\\nF\u{fffd}.toml");
        assert_eq!(Shown(p).to_string(), "/etc/q/e\\nF\u{fffd}.toml");
    }
}
