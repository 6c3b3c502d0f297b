//! Word splitting as systemd does it for settings that take several words
//! (`extract_first_word` with `EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE`,
//! `src/basic/extract-word.c`; `cunescape_one`, `src/basic/escape.c`), and
//! path normalisation (`path_simplify`, `src/basic/path-util.c`).

const WHITESPACE: &[u8] = b" \t\n\r";

/// Syntax systemd refuses in a list of words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syntax;

/// The next word of `*rest`, unquoted and C-unescaped; `Ok(None)` when only
/// separators are left; `Err` where systemd refuses the syntax (an unknown
/// escape, an unterminated quote, a trailing backslash).
pub fn next_word(rest: &mut &str) -> Result<Option<String>, Syntax> {
    let b = rest.as_bytes();
    let mut i = b.iter().take_while(|c| WHITESPACE.contains(c)).count();
    if i == b.len() {
        *rest = "";
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match (quote, c) {
            (_, b'\\') => {
                let (bytes, used) = unescape_one(&b[i + 1..]).ok_or(Syntax)?;
                out.extend_from_slice(&bytes);
                i += used;
            }
            (None, b'\'' | b'"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, _) if WHITESPACE.contains(&c) => break,
            _ => out.push(c),
        }
        i += 1;
    }
    if quote.is_some() {
        return Err(Syntax);
    }
    while i < b.len() && WHITESPACE.contains(&b[i]) {
        i += 1;
    }
    *rest = &rest[i..];
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

fn hex(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b).ok()?;
    (s.len() == b.len() && s.bytes().all(|c| c.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

/// One escape after a backslash: its bytes and how many input bytes it
/// took (without the backslash). `None` for what systemd refuses.
fn unescape_one(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let simple = |c: u8| Some((vec![c], 1));
    match *b.first()? {
        b'a' => simple(7),
        b'b' => simple(8),
        b'f' => simple(12),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(11),
        b's' => simple(b' '),
        c @ (b'\\' | b'"' | b'\'') => simple(c),
        b'x' => {
            let v = hex(b.get(1..3)?)?;
            (v != 0).then(|| (vec![v as u8], 3))
        }
        c @ (b'u' | b'U') => {
            let n = if c == b'u' { 4 } else { 8 };
            let ch = char::from_u32(hex(b.get(1..1 + n)?)?).filter(|&c| c != '\0')?;
            Some((ch.to_string().into_bytes(), 1 + n))
        }
        b'0'..=b'7' => {
            let d = b.get(0..3)?;
            if !d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                return None;
            }
            let v = d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
            (v != 0 && v <= 0xff).then(|| (vec![v as u8], 3))
        }
        _ => None,
    }
}

/// `path_simplify`: no empty or `.` components, no trailing slash.
pub fn simplify(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// An absolute path without `..` (`path_is_normalized`).
pub fn absolute_normalized(path: &str) -> bool {
    path.starts_with('/') && !path.split('/').any(|p| p == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Result<Vec<String>, Syntax> {
        let mut rest = s;
        let mut v = Vec::new();
        while let Some(w) = next_word(&mut rest)? {
            v.push(w);
        }
        Ok(v)
    }

    #[test]
    fn quotes_escapes_and_errors() {
        assert_eq!(
            words("  a  'b c'd \"e\\\"f\"").unwrap(),
            ["a", "b cd", "e\"f"]
        );
        assert_eq!(
            words("\\x2b/bin/x \\053 \\u002b").unwrap(),
            ["+/bin/x", "+", "+"]
        );
        assert_eq!(words("\\s").unwrap(), [" "]);
        assert!(words("\\q").is_err());
        assert!(words("'open").is_err());
        assert!(words("trailing\\").is_err());
        assert!(words("\\x00").is_err());
        assert_eq!(words(" \t ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn paths() {
        assert_eq!(
            simplify("//run/./credloader//x.env/"),
            "/run/credloader/x.env"
        );
        assert!(absolute_normalized("/a/b") && !absolute_normalized("/a/../b"));
        assert!(!absolute_normalized("a/b"));
    }
}
