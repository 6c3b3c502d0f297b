//! What a valid name looks like, for every kind of name credloader handles.
//! Each check returns a [`NameError`], whose text says what is wrong.

/// The first character of `text` that is neither an ASCII letter or digit
/// nor one of `extra`.
fn outside(text: &str, extra: &str) -> Option<char> {
    text.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)))
}

/// Credential names credloader hands to its own unit (see [`crate::boot`]);
/// no configured credential may use it, so they can never collide.
pub const RESERVED_PREFIX: &str = "credloader.";

/// A name credloader does not accept, and why (each says what is wrong and
/// what a valid one looks like).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// An empty credential name.
    #[error("a credential name cannot be empty")]
    EmptyCredential,
    /// A credential name over 255 bytes.
    #[error("credential name is {len} bytes; at most 255")]
    CredentialTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A credential name with a character outside `A-Z a-z 0-9 _ . - @ +`.
    #[error("credential name `{}` contains {found:?}; use only A-Z a-z 0-9 _ . - @ +", name.escape_default())]
    CredentialCharacter {
        /// The name.
        name: String,
        /// The first character refused.
        found: char,
    },
    /// A credential name that starts with a dot (a hidden file).
    #[error("credential name `{0}` starts with `.`")]
    CredentialHidden(String),
    /// A credential name with the prefix [`RESERVED_PREFIX`].
    #[error(
        "credential name `{0}` starts with `{RESERVED_PREFIX}`, which is reserved for \
         credloader's own credentials (the boot manifest `credloader.manifest`); choose another name"
    )]
    CredentialReserved(String),
    /// A credential name ending in `.cred` (the file's suffix).
    #[error("credential name `{name}` ends in `.cred`; name it `{}` (the file is NAME.cred)", name.trim_end_matches(".cred"))]
    CredentialSuffix {
        /// The name.
        name: String,
    },
    /// A service name that is not 1-64 characters of `A-Z a-z 0-9 _ . -`.
    #[error("service name `{}` must be 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit", .0.escape_default())]
    Service(String),
    /// A unit name without `.service`.
    #[error("unit `{}` must end in `.service`", .0.escape_default())]
    UnitSuffix(String),
    /// A unit name systemd would not take (or a template).
    #[error("`{}` is not a valid service unit name", .0.escape_default())]
    Unit(String),
    /// A user or group name passwd and group would not hold.
    #[error("`{}` is not a valid user or group name", .0.escape_default())]
    Account(String),
    /// A relative path.
    #[error("path `{}` must be absolute", .0.escape_default())]
    PathRelative(String),
    /// A path with `.`, `..`, `//` or a trailing `/`.
    #[error("path `{}` must be normalized (no `.`, `..`, `//` or trailing `/`)", .0.escape_default())]
    PathNotNormal(String),
    /// A path with a character that would need quoting in a unit file.
    #[error("path `{}` contains {found:?}; use only A-Z a-z 0-9 / . _ - + @ so it can stand unquoted in a unit file", path.escape_default())]
    PathCharacter {
        /// The path.
        path: String,
        /// The first character refused.
        found: char,
    },
}

/// A credential name: `systemd-creds` accepts printable ASCII without `/` or
/// `:`; credloader keeps to `A-Z a-z 0-9 _ . - @ +`, which stand unquoted
/// and unescaped in a unit file (`%`, `\`, quotes and `$` would not), and
/// also refuses leading dots (hidden files), a `.cred` suffix (added for
/// you) and the prefix [`RESERVED_PREFIX`].
pub fn credential(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::EmptyCredential);
    }
    if name.len() > 255 {
        return Err(NameError::CredentialTooLong { len: name.len() });
    }
    if let Some(found) = outside(name, "_.-@+") {
        return Err(NameError::CredentialCharacter {
            name: name.to_string(),
            found,
        });
    }
    if name.starts_with('.') {
        return Err(NameError::CredentialHidden(name.to_string()));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(NameError::CredentialReserved(name.to_string()));
    }
    if name.ends_with(".cred") {
        return Err(NameError::CredentialSuffix {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// A service key in `[services.NAME]`; it names the default env file.
pub fn service(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && outside(name, "_.-").is_none();
    if ok {
        Ok(())
    } else {
        Err(NameError::Service(name.to_string()))
    }
}

/// A systemd service unit name (an instance like `x@1.service` is fine, a
/// template `x@.service` is not).
pub fn unit(name: &str) -> Result<(), NameError> {
    let Some(stem) = name.strip_suffix(".service") else {
        return Err(NameError::UnitSuffix(name.to_string()));
    };
    let ok = !stem.is_empty()
        && name.len() <= 255
        && !stem.ends_with('@')
        && outside(stem, ":-_.\\@").is_none();
    if ok {
        Ok(())
    } else {
        Err(NameError::Unit(name.to_string()))
    }
}

/// A user or group name as passwd/group hold them.
pub fn account(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && outside(name, "_.-").is_none();
    if ok {
        Ok(())
    } else {
        Err(NameError::Account(name.to_string()))
    }
}

/// A path credloader writes and names in a unit file: absolute, normal, and
/// made of characters that need no quoting or specifier escaping there.
pub fn managed_path(path: &str) -> Result<(), NameError> {
    if !path.starts_with('/') {
        return Err(NameError::PathRelative(path.to_string()));
    }
    if path.split('/').any(|c| c == "." || c == "..")
        || path.contains("//")
        || path.ends_with('/') && path != "/"
    {
        return Err(NameError::PathNotNormal(path.to_string()));
    }
    if let Some(found) = outside(path, "/._-+@") {
        return Err(NameError::PathCharacter {
            path: path.to_string(),
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names() {
        assert!(credential("BINANCE_API_KEY").is_ok());
        assert!(credential("a.b-c").is_ok());
        assert!(credential("credloader").is_ok());
        assert!(credential("credloader_manifest").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            ".hidden",
            "x.cred",
            "ü",
            "a%b",
            "a\\b",
            "a$b",
            "a\"b",
            "credloader.manifest",
            "credloader.x",
        ] {
            assert!(credential(bad).is_err(), "{bad}");
        }
        assert!(credential(&"a".repeat(256)).is_err());
    }

    #[test]
    fn units() {
        assert!(unit("quantum-position-monitor.service").is_ok());
        assert!(unit("x@1.service").is_ok());
        for bad in ["x", "x.timer", "x@.service", ".service", "a b.service"] {
            assert!(unit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert!(managed_path("/run/credloader/x.env").is_ok());
        for bad in ["rel", "/a/../b", "/a//b", "/a b", "/a%b", "/a/"] {
            assert!(managed_path(bad).is_err(), "{bad}");
        }
    }
}
