//! The `[Service]` settings that decide whom a service runs as and what
//! environment it gets, read as `src/core/load-fragment.c` (systemd 252)
//! reads them: `config_parse_user_group_compat` (`User=`, `Group=`),
//! `config_parse_bool` (`DynamicUser=` refuses a bad value outright,
//! `PermissionsStartOnly=` ignores it), `config_parse_exec` (`Exec*=`),
//! `config_parse_unit_env_file` (`EnvironmentFile=`) and
//! `config_parse_unset_environ` (`UnsetEnvironment=`).
//!
//! A value PID 1 refuses outright ends the file there (in a unit file the
//! unit does not load at all; in a drop-in the rest of that drop-in is
//! ignored), which is why [`Service::assign`] returns an error for them.
//! Besides the settings above, `WorkingDirectory=`, `RootDirectory=`,
//! `RootImage=` and `SupplementaryGroups=` are checked for such values.

use std::fmt;
use std::path::PathBuf;

use super::names::{self, Naming, SpecifierError};
use super::words;

/// Where a setting was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file, as a path on the system read.
    pub file: PathBuf,
    /// Its line (the first, for a continued line).
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A value and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The value, as systemd keeps it.
    pub value: String,
    /// Where it was set.
    pub origin: Origin,
}

/// The command settings of a service, in the order systemd runs them.
pub const EXEC_KEYS: [&str; 7] = [
    "ExecCondition",
    "ExecStartPre",
    "ExecStart",
    "ExecStartPost",
    "ExecReload",
    "ExecStop",
    "ExecStopPost",
];

/// The prefixes of one command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecFlags {
    /// `-`
    pub ignore_failure: bool,
    /// `:`
    pub no_env_expand: bool,
    /// `+`: full privileges, no sandboxing.
    pub privileged: bool,
    /// `!`: no change of user or group.
    pub no_setuid: bool,
    /// `!!`: like `!`, unless ambient capabilities are available.
    pub ambient: bool,
}

impl ExecFlags {
    /// Does the command run with root's identity whatever `User=` says?
    pub fn as_root(&self) -> bool {
        self.privileged || self.no_setuid || self.ambient
    }
}

/// One command of an `Exec*=` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Its setting, one of [`EXEC_KEYS`].
    pub key: &'static str,
    /// Its prefixes.
    pub flags: ExecFlags,
    /// Where it was set.
    pub origin: Origin,
}

/// One `EnvironmentFile=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentFile {
    /// As systemd keeps it: specifiers resolved, simplified, without `-`.
    pub path: PathBuf,
    /// `-`: a missing (or unreadable) file is skipped.
    pub optional: bool,
    /// False when it uses a specifier credloader cannot resolve (`path`
    /// then holds the value as written).
    pub resolved: bool,
    /// Where it was set.
    pub origin: Origin,
}

/// The settings read so far, file after file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    /// `User=`, specifiers resolved; `None`: root.
    pub user: Option<Setting>,
    /// Where `DynamicUser=yes` was set (`None`: it is off).
    pub dynamic_user: Option<Origin>,
    /// Where `PermissionsStartOnly=yes` was set (`None`: it is off).
    pub permissions_start_only: Option<Origin>,
    /// Every command left after all resets.
    pub commands: Vec<Command>,
    /// `EnvironmentFile=` entries left after all resets, in order.
    pub environment_files: Vec<EnvironmentFile>,
    /// The last empty `EnvironmentFile=`, which dropped every file before it.
    pub environment_files_reset: Option<Origin>,
    /// `UnsetEnvironment=` entries (`NAME` or `NAME=VALUE`).
    pub unset_environment: Vec<Setting>,
    /// What credloader could not follow as PID 1 would: each says what
    /// and where. A verdict that depends on them cannot be trusted.
    pub unsure: Vec<String>,
}

/// `parse_boolean` (`src/basic/parse-util.c`).
pub fn parse_boolean(v: &str) -> Option<bool> {
    const YES: [&str; 6] = ["1", "yes", "y", "true", "t", "on"];
    const NO: [&str; 6] = ["0", "no", "n", "false", "f", "off"];
    if YES.iter().any(|y| y.eq_ignore_ascii_case(v)) {
        Some(true)
    } else if NO.iter().any(|n| n.eq_ignore_ascii_case(v)) {
        Some(false)
    } else {
        None
    }
}

/// `valid_user_group_name(.., VALID_USER_ALLOW_NUMERIC|VALID_USER_RELAX)`
/// (`src/basic/user-util.c`).
pub fn valid_user(v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(v) {
        // A uid: no leading zero, and not one of the two invalid ones.
        return (v == "0" || !v.starts_with('0'))
            && v.parse::<u32>().is_ok_and(|u| u != 65535 && u != u32::MAX);
    }
    let refused = v.is_empty()
        || v.chars()
            .any(|c| c < ' ' || c == '\u{7f}' || c == ':' || c == '/')
        || v.starts_with(char::is_whitespace)
        || v.ends_with(char::is_whitespace)
        || (v.starts_with('-') && digits(&v[1..]))
        || v == "."
        || v == "..";
    !refused
}

impl Service {
    /// Applies one assignment of `section` for the unit `id`. `Err`: PID 1
    /// refuses the value and stops reading the file here.
    pub fn assign(
        &mut self,
        id: Naming,
        section: &str,
        key: &str,
        value: &str,
        origin: Origin,
    ) -> Result<(), String> {
        if section != "Service" {
            return Ok(());
        }
        match key {
            "User" => self.user_setting(id, value, origin),
            "Group" => self.check_users(id, key, [value], &origin),
            "SupplementaryGroups" => self.check_users(id, key, value.split_whitespace(), &origin),
            "DynamicUser" => {
                let on = parse_boolean(value)
                    .ok_or_else(|| format!("DynamicUser={value} is not a boolean"))?;
                self.dynamic_user = on.then_some(origin);
                Ok(())
            }
            "PermissionsStartOnly" => {
                if let Some(on) = parse_boolean(value) {
                    self.permissions_start_only = on.then_some(origin);
                }
                Ok(())
            }
            "EnvironmentFile" => {
                self.environment_file(id, value, origin);
                Ok(())
            }
            "UnsetEnvironment" => {
                self.unset(id, value, origin);
                Ok(())
            }
            "WorkingDirectory" | "RootDirectory" | "RootImage" => {
                self.check_path(id, key, value, &origin)
            }
            _ => match EXEC_KEYS.iter().find(|k| **k == key) {
                Some(k) => self.exec(k, value, origin),
                None => Ok(()),
            },
        }
    }

    fn unresolved(&mut self, key: &str, value: &str, origin: &Origin, c: char) {
        self.unsure.push(format!(
            "{key}={value} at {origin} uses the specifier %{c}, whose value credloader cannot \
             tell without the running system"
        ));
    }

    fn user_setting(&mut self, id: Naming, value: &str, origin: Origin) -> Result<(), String> {
        if value.is_empty() {
            self.user = None;
            return Ok(());
        }
        match names::expand(value, id) {
            Ok(v) if valid_user(&v) => {
                self.user = Some(Setting { value: v, origin });
                Ok(())
            }
            Ok(v) => Err(format!("User={v} is not a valid user name or uid")),
            Err(SpecifierError::Invalid(c)) => Err(format!("User={value}: unknown specifier %{c}")),
            Err(SpecifierError::Unresolved(c)) => {
                self.unresolved("User", value, &origin, c);
                self.user = Some(Setting {
                    value: value.to_string(),
                    origin,
                });
                Ok(())
            }
        }
    }

    /// `Group=` and `SupplementaryGroups=`: only whether PID 1 accepts them.
    fn check_users<'v>(
        &mut self,
        id: Naming,
        key: &str,
        values: impl IntoIterator<Item = &'v str>,
        origin: &Origin,
    ) -> Result<(), String> {
        for v in values.into_iter().filter(|v| !v.is_empty()) {
            match names::expand(v, id) {
                Ok(x) if valid_user(&x) => {}
                Ok(x) => return Err(format!("{key}={x} is not a valid group name or gid")),
                Err(SpecifierError::Invalid(c)) => {
                    return Err(format!("{key}={v}: unknown specifier %{c}"))
                }
                Err(SpecifierError::Unresolved(c)) => self.unresolved(key, v, origin, c),
            }
        }
        Ok(())
    }

    /// `WorkingDirectory=` (which may be `-`-prefixed or `~`),
    /// `RootDirectory=`, `RootImage=`: an absolute path without `..`.
    fn check_path(
        &mut self,
        id: Naming,
        key: &str,
        value: &str,
        origin: &Origin,
    ) -> Result<(), String> {
        let (optional, v) = match value.strip_prefix('-') {
            Some(v) if key == "WorkingDirectory" => (true, v),
            _ => (false, value),
        };
        if v.is_empty() || (key == "WorkingDirectory" && v == "~") {
            return Ok(());
        }
        let path = match names::expand(v, id) {
            Err(SpecifierError::Unresolved(c)) => {
                if !optional {
                    self.unresolved(key, value, origin, c);
                }
                return Ok(());
            }
            Err(SpecifierError::Invalid(c)) => {
                Err(format!("{key}={value}: unknown specifier %{c}"))
            }
            Ok(p) if words::absolute_normalized(&words::simplify(&p)) => Ok(()),
            Ok(_) => Err(format!("{key}={value} is not an absolute, normalized path")),
        };
        path.or_else(|e| if optional { Ok(()) } else { Err(e) })
    }

    fn environment_file(&mut self, id: Naming, value: &str, origin: Origin) {
        if value.is_empty() {
            self.environment_files.clear();
            self.environment_files_reset = Some(origin);
            return;
        }
        let (resolved, text) = match names::expand(value, id) {
            Ok(t) => (true, t),
            Err(SpecifierError::Invalid(_)) => return,
            Err(SpecifierError::Unresolved(_)) => (false, value.to_string()),
        };
        let (optional, path) = match text.strip_prefix('-') {
            Some(p) => (true, p),
            None => (false, text.as_str()),
        };
        let path = words::simplify(path);
        if resolved && !words::absolute_normalized(&path) {
            return;
        }
        self.environment_files.push(EnvironmentFile {
            path: PathBuf::from(path),
            optional,
            resolved,
            origin,
        });
    }

    fn unset(&mut self, id: Naming, value: &str, origin: Origin) {
        if value.is_empty() {
            self.unset_environment.clear();
            return;
        }
        let mut rest = value;
        let mut found = Vec::new();
        loop {
            match words::next_word(&mut rest) {
                Err(words::Syntax) => return,
                Ok(None) => break,
                Ok(Some(w)) => match names::expand(&w, id) {
                    Ok(v) if valid_unset(&v) => found.push(v),
                    Ok(_) | Err(SpecifierError::Invalid(_)) => {}
                    Err(SpecifierError::Unresolved(c)) => {
                        self.unresolved("UnsetEnvironment", &w, &origin, c);
                        found.push(w);
                    }
                },
            }
        }
        for v in found {
            if !self.unset_environment.iter().any(|s| s.value == v) {
                self.unset_environment.push(Setting {
                    value: v,
                    origin: origin.clone(),
                });
            }
        }
    }

    fn exec(&mut self, key: &'static str, value: &str, origin: Origin) -> Result<(), String> {
        if value.is_empty() {
            self.commands.retain(|c| c.key != key);
            return Ok(());
        }
        let (flags, refused) = exec_line(value);
        for flags in flags {
            self.commands.push(Command {
                key,
                flags,
                origin: origin.clone(),
            });
        }
        match refused {
            Some(why) => Err(format!("{key}={value}: {why}")),
            None => Ok(()),
        }
    }
}

/// `NAME` or `NAME=VALUE` (`env_name_is_valid`, `env_assignment_is_valid`).
fn valid_unset(v: &str) -> bool {
    let name = v.split_once('=').map(|(n, _)| n).unwrap_or(v);
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The leading prefixes of a command's first word, and the rest.
fn prefixes(word: &str) -> (ExecFlags, bool, &str) {
    let mut f = ExecFlags::default();
    let mut argv0 = false;
    let mut rest = word;
    while let Some(c) = rest.chars().next() {
        let elevated = f.privileged || f.no_setuid || f.ambient;
        match c {
            '-' if !f.ignore_failure => f.ignore_failure = true,
            '@' if !argv0 => argv0 = true,
            ':' if !f.no_env_expand => f.no_env_expand = true,
            '+' if !elevated => f.privileged = true,
            '!' if !elevated => f.no_setuid = true,
            '!' if f.no_setuid && !f.privileged && !f.ambient => {
                f.no_setuid = false;
                f.ambient = true;
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    (f, argv0, rest)
}

/// The commands of one `Exec*=` line (several when separated by a lone
/// `;`), and why PID 1 refuses the rest of the line and of the file, if it
/// does. Commands before a refused one are kept, as PID 1 keeps them.
fn exec_line(value: &str) -> (Vec<ExecFlags>, Option<String>) {
    let mut out = Vec::new();
    let mut rest = value;
    loop {
        let first = match words::next_word(&mut rest) {
            Ok(Some(w)) => w,
            // No more commands; a broken first word ends the line quietly.
            Ok(None) | Err(words::Syntax) => return (out, None),
        };
        if first == ";" {
            continue;
        }
        let (flags, argv0, path) = prefixes(&first);
        let refuse = |why: &str| (!flags.ignore_failure).then(|| why.to_string());
        if !names::specifiers_valid(path) {
            return (out, refuse("unknown specifier"));
        }
        if path.is_empty() || path.ends_with('/') || (!path.starts_with('/') && path.contains('/'))
        {
            return (
                out,
                refuse("neither a valid executable name nor an absolute path"),
            );
        }
        let mut args = 0;
        let mut more = false;
        while !rest.is_empty() {
            let lone = |s: &str| s.is_empty() || s.starts_with([' ', '\t', '\n', '\r']);
            if let Some(after) = rest.strip_prefix(';').filter(|a| lone(a)) {
                rest = after.trim_start_matches([' ', '\t', '\n', '\r']);
                more = true;
                break;
            }
            if let Some(after) = rest.strip_prefix("\\;").filter(|a| lone(a)) {
                rest = after.trim_start_matches([' ', '\t', '\n', '\r']);
                args += 1;
                continue;
            }
            match words::next_word(&mut rest) {
                Ok(None) => break,
                Ok(Some(w)) if names::specifiers_valid(&w) => args += 1,
                Ok(Some(_)) => return (out, refuse("unknown specifier")),
                Err(words::Syntax) => return (out, refuse("invalid quoting or escape")),
            }
        }
        if argv0 && args == 0 {
            return (out, refuse("empty executable name or zeroeth argument"));
        }
        out.push(flags);
        if !more {
            return (out, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            file: "/u".into(),
            line: 1,
        }
    }

    fn flags(v: &str) -> Vec<&'static str> {
        exec_line(v)
            .0
            .iter()
            .map(|f| match (f.privileged, f.no_setuid, f.ambient) {
                (true, _, _) => "+",
                (_, true, _) => "!",
                (_, _, true) => "!!",
                _ => "",
            })
            .collect()
    }

    #[test]
    fn exec_prefixes_and_separators() {
        assert_eq!(flags("-+/bin/x a"), ["+"]);
        assert_eq!(flags("\"+/bin/x\""), ["+"]);
        assert_eq!(flags("\\x2b/bin/x"), ["+"]);
        assert_eq!(flags("/bin/true ; !!/bin/true"), ["", "!!"]);
        assert_eq!(flags("/bin/echo \\; +/bin/true"), [""]);
        assert_eq!(flags("/bin/echo a;+/bin/true"), [""]);
        assert_eq!(flags("!/bin/x ; @/bin/y y"), ["!", ""]);
        assert_eq!(
            exec_line("++/bin/x").1.as_deref(),
            Some("neither a valid executable name nor an absolute path")
        );
        assert_eq!(exec_line("-++/bin/x"), (vec![], None));
        assert_eq!(
            exec_line("/bin/x %Z").1.as_deref(),
            Some("unknown specifier")
        );
        assert!(exec_line("@/bin/x").1.is_some());
    }

    #[test]
    fn users_and_booleans() {
        for ok in ["qt", "0", "1500", "q t", "a.b", "-x"] {
            assert!(valid_user(ok), "{ok}");
        }
        for bad in [
            "",
            "a:b",
            "a/b",
            "65535",
            "4294967295",
            "007",
            "-12",
            ".",
            "..",
            "a\tb",
            "99999999999",
        ] {
            assert!(!valid_user(bad), "{bad}");
        }
        assert_eq!(parse_boolean("Y"), Some(true));
        assert_eq!(parse_boolean("off"), Some(false));
        assert_eq!(parse_boolean(""), None);
    }

    #[test]
    fn settings_reset_and_refuse() {
        let mut s = Service::default();
        let id = Naming {
            id: "u@qt.service",
            aliased: false,
        };
        let mut set = |k: &str, v: &str| s.assign(id, "Service", k, v, origin());
        set("User", "%i").unwrap();
        set("ExecStartPre", "+/bin/x").unwrap();
        set("ExecStartPre", "").unwrap();
        set("EnvironmentFile", "-/run//a.env").unwrap();
        set("EnvironmentFile", "relative").unwrap();
        set("UnsetEnvironment", "K 1BAD K=v K").unwrap();
        assert!(set("DynamicUser", "maybe").is_err());
        assert!(set("WorkingDirectory", "relative").is_err());
        set("WorkingDirectory", "-relative").unwrap();
        set("PermissionsStartOnly", "maybe").unwrap();
        assert_eq!(s.user.as_ref().unwrap().value, "qt");
        assert!(s.commands.is_empty());
        assert_eq!(s.environment_files.len(), 1);
        assert_eq!(s.environment_files[0].path, PathBuf::from("/run/a.env"));
        assert!(s.environment_files[0].optional);
        let unset: Vec<&str> = s
            .unset_environment
            .iter()
            .map(|u| u.value.as_str())
            .collect();
        assert_eq!(unset, ["K", "K=v"]);
        assert!(s.unsure.is_empty());
    }
}
