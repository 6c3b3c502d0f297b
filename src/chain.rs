//! An error and its sources as one line, `error: source: source...`: how
//! every error reaches the operator (`main`), and how a message that
//! combines several errors renders each of them. Error types keep their
//! source out of their own text (`#[source]`), so each part appears once.

use std::error::Error;
use std::fmt;

/// `{}` of this is the error followed by each of its sources, joined by
/// `: ` (what `anyhow`'s `{:#}` prints).
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("credential K: generation 3")]
    struct Outer {
        #[source]
        inner: std::io::Error,
    }

    #[test]
    fn renders_like_anyhows_alternate_form() {
        let e = Outer {
            inner: std::io::Error::from_raw_os_error(2),
        };
        let text = Chain(&e).to_string();
        assert_eq!(
            text,
            "credential K: generation 3: No such file or directory (os error 2)"
        );
        assert_eq!(text, format!("{:#}", anyhow::Error::new(e)));
    }
}
