//! The trailing-newline policy: a trailing line break is not part of a value.
//!
//! `echo KEY > file` adds a `\n`, and so does a secret store that was fed
//! from `echo`. The manual procedure this tool replaces sealed such files
//! as they were, and then gave the service `$(cat ...)` of them, which
//! strips every trailing newline again. So a hand-sealed credential holds
//! `KEY\n` while the service always received `KEY`.
//!
//! credloader does what `$(cat ...)` did, wherever a value enters: it
//! removes every trailing `\n`, and the `\r` of a trailing `\r\n`, before
//! it seals (`seal`, `rotate`, `import`, `sync`) and before it renders an
//! existing sealed value into an env file (`apply`). A credential whose
//! value truly ends in a newline says so in the configuration
//! (`[credentials.NAME] keep_newline = true`): then every path keeps its
//! bytes as given. `delivery = "credential"` hands PID 1 the sealed bytes
//! as they are, so there a sealed newline reaches the service; `check`
//! reports it.

use crate::secret::Secret;

/// `value` without its trailing line breaks: every trailing `\n`, and the
/// `\r` of each trailing `\r\n`. A lone trailing `\r` stays.
pub fn trim(value: &[u8]) -> &[u8] {
    let mut end = value.len();
    while end > 0 && value[end - 1] == b'\n' {
        end -= 1;
        if end > 0 && value[end - 1] == b'\r' {
            end -= 1;
        }
    }
    &value[..end]
}

/// Whether [`trim`] would remove anything.
pub fn ends_in_newline(value: &[u8]) -> bool {
    value.ends_with(b"\n")
}

/// What a service receives of a value: trimmed unless `keep`.
pub fn delivered(value: &[u8], keep: bool) -> &[u8] {
    if keep {
        value
    } else {
        trim(value)
    }
}

/// A value as it enters credloader, after the policy.
pub struct Entered {
    pub value: Secret,
    /// How many bytes of trailing line breaks were removed.
    pub removed: usize,
    /// It ends in a newline that was kept (`keep_newline = true`).
    pub kept: bool,
}

/// Applies the policy to `value`, a value about to be sealed under a
/// credential whose `keep_newline` is `keep`.
pub fn enter(value: Secret, keep: bool) -> Entered {
    let ends = ends_in_newline(value.expose());
    if keep || !ends {
        return Entered {
            value,
            removed: 0,
            kept: ends,
        };
    }
    let trimmed = Secret::copy_from(trim(value.expose()));
    Entered {
        removed: value.len() - trimmed.len(),
        value: trimmed,
        kept: false,
    }
}

impl Entered {
    /// The line a command prints about what it did to the value of `name`
    /// (nothing when the value had no trailing newline).
    pub fn note(&self, name: &str) -> Option<String> {
        if self.removed > 0 {
            Some(format!(
                "{name}: removed the trailing newline of the input (echo adds one); the service \
                 receives {} bytes. If the newline belongs to the value, set \
                 [credentials.{name}] keep_newline = true.",
                self.value.len()
            ))
        } else if self.kept {
            Some(format!(
                "{name}: the value ends in a newline, kept as part of it \
                 ([credentials.{name}] keep_newline = true); the service receives {} bytes.",
                self.value.len()
            ))
        } else {
            None
        }
    }
}

/// How to fix a sealed value that ends in a newline nobody asked to keep.
pub fn fix(name: &str) -> String {
    format!(
        "reseal it cleanly with `credloader rotate {name}` (type or pipe the key; the newline is \
         left out), or set [credentials.{name}] keep_newline = true if the newline belongs to the value"
    )
}

/// `apply`'s warning for a sealed value delivered to env-file `services`
/// without its trailing newline.
pub fn stripped_warning(name: &str, services: &[&str]) -> String {
    format!(
        "credential {name}: its sealed value ends in a newline (as `echo` adds), which {} \
         receive{} without, as the manual procedure's `$(cat ...)` did; {}",
        services.join(", "),
        if services.len() == 1 { "s" } else { "" },
        fix(name)
    )
}

/// `apply`'s warning for a sealed value that ends in a newline and goes to
/// `services` with `delivery = "credential"`, as sealed.
pub fn handed_warning(name: &str, services: &[&str]) -> String {
    format!(
        "credential {name}: its sealed value ends in a newline, and {} (delivery = \"credential\") \
         get{} it as sealed, newline included; {}",
        services.join(", "),
        if services.len() == 1 { "s" } else { "" },
        fix(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_what_cat_would_and_the_cr_of_crlf() {
        assert_eq!(trim(b"KEY\n"), b"KEY");
        assert_eq!(trim(b"KEY\n\n\n"), b"KEY");
        assert_eq!(trim(b"KEY\r\n"), b"KEY");
        assert_eq!(trim(b"KEY\r\n\r\n"), b"KEY");
        assert_eq!(trim(b"KEY\r"), b"KEY\r");
        assert_eq!(trim(b"a\nb"), b"a\nb");
        assert_eq!(trim(b"\n"), b"");
        assert_eq!(trim(b""), b"");
    }

    #[test]
    fn entering_says_what_was_removed_or_kept() {
        let e = enter(Secret::copy_from(b"KEY\n"), false);
        assert_eq!(
            (e.value.expose(), e.removed, e.kept),
            (&b"KEY"[..], 1, false)
        );
        let note = e.note("K").unwrap();
        assert!(note.contains("removed the trailing newline") && note.contains("receives 3 bytes"));
        assert!(
            note.contains("[credentials.K] keep_newline = true"),
            "{note}"
        );
        let e = enter(Secret::copy_from(b"KEY\n"), true);
        assert_eq!(
            (e.value.expose(), e.removed, e.kept),
            (&b"KEY\n"[..], 0, true)
        );
        assert!(e.note("K").unwrap().contains("kept as part of it"));
        let e = enter(Secret::copy_from(b"KEY"), false);
        assert!(e.note("K").is_none() && e.removed == 0 && !e.kept);
    }
}
