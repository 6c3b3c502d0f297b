//! What a valid name looks like, for every kind of name credloader handles.
//! Each check returns `Err` with a sentence that says what is wrong.

/// The first character of `text` that is neither an ASCII letter or digit
/// nor one of `extra`.
fn outside(text: &str, extra: &str) -> Option<char> {
    text.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)))
}

/// Credential names credloader hands to its own unit (see [`crate::boot`]);
/// no configured credential may use it, so they can never collide.
pub const RESERVED_PREFIX: &str = "credloader.";

/// A credential name: `systemd-creds` accepts printable ASCII without `/` or
/// `:`; credloader keeps to `A-Z a-z 0-9 _ . - @ +`, which stand unquoted
/// and unescaped in a unit file (`%`, `\`, quotes and `$` would not), and
/// also refuses leading dots (hidden files), a `.cred` suffix (added for
/// you) and the prefix [`RESERVED_PREFIX`].
pub fn credential(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a credential name cannot be empty".into());
    }
    if name.len() > 255 {
        return Err(format!(
            "credential name is {} bytes; at most 255",
            name.len()
        ));
    }
    if let Some(c) = outside(name, "_.-@+") {
        return Err(format!(
            "credential name `{}` contains {c:?}; use only A-Z a-z 0-9 _ . - @ +",
            name.escape_default()
        ));
    }
    if name.starts_with('.') {
        return Err(format!("credential name `{name}` starts with `.`"));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "credential name `{name}` starts with `{RESERVED_PREFIX}`, which is reserved for \
             credloader's own credentials (the boot manifest `credloader.manifest`); choose another name"
        ));
    }
    if name.ends_with(".cred") {
        return Err(format!(
            "credential name `{name}` ends in `.cred`; name it `{}` (the file is NAME.cred)",
            name.trim_end_matches(".cred")
        ));
    }
    Ok(())
}

/// A service key in `[services.NAME]`; it names the default env file.
pub fn service(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && outside(name, "_.-").is_none();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "service name `{}` must be 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit",
            name.escape_default()
        ))
    }
}

/// A systemd service unit name (an instance like `x@1.service` is fine, a
/// template `x@.service` is not).
pub fn unit(name: &str) -> Result<(), String> {
    let Some(stem) = name.strip_suffix(".service") else {
        return Err(format!(
            "unit `{}` must end in `.service`",
            name.escape_default()
        ));
    };
    let ok = !stem.is_empty()
        && name.len() <= 255
        && !stem.ends_with('@')
        && outside(stem, ":-_.\\@").is_none();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid service unit name",
            name.escape_default()
        ))
    }
}

/// A user or group name as passwd/group hold them.
pub fn account(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && outside(name, "_.-").is_none();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid user or group name",
            name.escape_default()
        ))
    }
}

/// A path credloader writes and names in a unit file: absolute, normal, and
/// made of characters that need no quoting or specifier escaping there.
pub fn managed_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path `{}` must be absolute", path.escape_default()));
    }
    if path.split('/').any(|c| c == "." || c == "..")
        || path.contains("//")
        || path.ends_with('/') && path != "/"
    {
        return Err(format!(
            "path `{}` must be normalized (no `.`, `..`, `//` or trailing `/`)",
            path.escape_default()
        ));
    }
    if let Some(c) = outside(path, "/._-+@") {
        return Err(format!(
            "path `{}` contains {c:?}; use only A-Z a-z 0-9 / . _ - + @ so it can stand unquoted in a unit file",
            path.escape_default()
        ));
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
