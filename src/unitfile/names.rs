//! Unit names (`src/basic/unit-name.c`) and the specifiers credloader can
//! resolve in a setting (`src/core/unit-printf.c`, `src/shared/specifier.c`).

/// The unit types systemd knows (`unit_type_from_string`).
const TYPES: [&str; 11] = [
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// Every specifier letter a unit setting may use in systemd 252; any other
/// one makes systemd refuse the value ("Invalid slot").
const KNOWN_SPECIFIERS: &str = "aAbBcCdEfgGhHiIjJlLmMnNoprRsStTuUvVwWyY";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `a.service`
    Plain,
    /// `a@.service`
    Template,
    /// `a@i.service`
    Instance,
}

fn valid_chars(s: &str, extra: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || ":-_.\\".contains(c) || extra.contains(c))
}

/// What kind of unit name `name` is, `None` if it is not one.
pub fn kind(name: &str) -> Option<Kind> {
    if name.len() >= 256 {
        return None;
    }
    let (stem, suffix) = name.rsplit_once('.')?;
    if !TYPES.contains(&suffix) || stem.is_empty() {
        return None;
    }
    match stem.split_once('@') {
        None => valid_chars(stem, "").then_some(Kind::Plain),
        Some((prefix, _)) if prefix.is_empty() || !valid_chars(prefix, "") => None,
        Some((_, "")) => Some(Kind::Template),
        Some((_, instance)) => valid_chars(instance, "@").then_some(Kind::Instance),
    }
}

/// The type suffix (`service`).
pub fn unit_type(name: &str) -> &str {
    name.rsplit_once('.').map(|(_, t)| t).unwrap_or_default()
}

/// The part before `@` (or before the suffix).
pub fn prefix(name: &str) -> &str {
    let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
    stem.split_once('@').map(|(p, _)| p).unwrap_or(stem)
}

/// The instance of `a@i.service` (`i`); `None` for other names.
pub fn instance(name: &str) -> Option<&str> {
    let stem = name.rsplit_once('.')?.0;
    stem.split_once('@')
        .map(|(_, i)| i)
        .filter(|i| !i.is_empty())
}

/// `prefix@instance.type`, or `prefix.type` without an instance.
pub fn build(prefix: &str, instance: Option<&str>, unit_type: &str) -> String {
    match instance {
        Some(i) => format!("{prefix}@{i}.{unit_type}"),
        None => format!("{prefix}.{unit_type}"),
    }
}

/// The template of an instance (`a@i.service` → `a@.service`).
pub fn template(name: &str) -> Option<String> {
    (kind(name) == Some(Kind::Instance)).then(|| build(prefix(name), Some(""), unit_type(name)))
}

/// `template` with `instance` put in (`a@.service`, `i` → `a@i.service`).
pub fn with_instance(template: &str, instance: &str) -> String {
    build(prefix(template), Some(instance), unit_type(template))
}

/// The next shorter dash prefix whose drop-ins also apply to `name`
/// (`a-b-c.service` → `a-b-.service`, then `a-.service`), as
/// `unit_file_find_dirs` in `src/shared/dropin.c` derives it.
pub fn dash_parent(name: &str) -> Option<String> {
    let mut p = prefix(name).to_string();
    let mut chopped = false;
    loop {
        let dash = p.rfind('-')?;
        if dash == 0 {
            return None;
        }
        if dash + 1 < p.len() || chopped {
            p.truncate(dash + 1);
            break;
        }
        // A trailing dash: drop it and look again, once.
        p.truncate(dash);
        chopped = true;
    }
    let inst = if kind(name) == Some(Kind::Instance) {
        instance(name)
    } else {
        None
    };
    Some(build(&p, inst, unit_type(name)))
}

/// `unit_name_unescape`: `-` is `/`, `\xNN` a byte.
fn unescape(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' => out.push(b'/'),
            b'\\' if b.get(i + 1) == Some(&b'x') => {
                let hex = s.get(i + 2..i + 4)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'\\' => return None,
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Why a value's specifiers could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecifierError {
    /// systemd itself refuses the value (an unknown letter).
    Invalid(char),
    /// systemd resolves it from the running system (the host name, the
    /// machine id, ...); credloader does not guess.
    Unresolved(char),
}

/// The name a unit's specifiers are resolved with.
#[derive(Debug, Clone, Copy)]
pub struct Naming<'a> {
    pub id: &'a str,
    /// The unit has aliases: PID 1 resolves `%n`, `%N`, `%p` and `%P` with
    /// whichever of its names it happened to load it under first.
    pub aliased: bool,
}

/// The value of `%c` for the unit `id`, as far as it follows from the name.
fn specifier(c: char, naming: Naming) -> Result<String, SpecifierError> {
    let id = naming.id;
    if naming.aliased && "nNpP".contains(c) {
        return Err(SpecifierError::Unresolved(c));
    }
    let inst = instance(id).unwrap_or_default();
    let stem = id.rsplit_once('.').map(|(s, _)| s).unwrap_or(id);
    let unresolved = || SpecifierError::Unresolved(c);
    Ok(match c {
        '%' => "%".into(),
        'n' => id.into(),
        'N' => stem.into(),
        'p' => prefix(id).into(),
        'P' => unescape(prefix(id)).ok_or_else(unresolved)?,
        'i' => inst.into(),
        'I' => unescape(inst).ok_or_else(unresolved)?,
        c if KNOWN_SPECIFIERS.contains(c) => return Err(unresolved()),
        c => return Err(SpecifierError::Invalid(c)),
    })
}

/// `value` with its specifiers resolved for the unit named by `naming`.
pub fn expand(value: &str, naming: Naming) -> Result<String, SpecifierError> {
    if !value.contains('%') {
        return Ok(value.to_string());
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // A `%` at the very end stays as it is.
        let Some(next) = chars.next() else {
            out.push('%');
            break;
        };
        out.push_str(&specifier(next, naming)?);
    }
    Ok(out)
}

/// Does `value` use only specifiers systemd knows? (Their values do not
/// matter where this is asked.)
pub fn specifiers_valid(value: &str) -> bool {
    let naming = Naming {
        id: "x.service",
        aliased: false,
    };
    !matches!(expand(value, naming), Err(SpecifierError::Invalid(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_templates_and_instances() {
        assert_eq!(kind("a-b.service"), Some(Kind::Plain));
        assert_eq!(kind("a@.service"), Some(Kind::Template));
        assert_eq!(kind("a@x@y.service"), Some(Kind::Instance));
        assert_eq!(kind("a.conf"), None);
        assert_eq!(kind("@x.service"), None);
        assert_eq!(kind("a b.service"), None);
        assert_eq!(template("a@x.service").as_deref(), Some("a@.service"));
        assert_eq!(template("a.service"), None);
        assert_eq!(with_instance("a@.service", "q"), "a@q.service");
        assert_eq!(instance("a@.service"), None);
    }

    #[test]
    fn dash_prefixes_as_systemd_walks_them() {
        let chain = |n: &str| {
            let mut v = Vec::new();
            let mut cur = n.to_string();
            while let Some(p) = dash_parent(&cur) {
                v.push(p.clone());
                cur = p;
            }
            v
        };
        assert_eq!(chain("a-b-c.service"), ["a-b-.service", "a-.service"]);
        assert_eq!(chain("a-b@x.service"), ["a-@x.service"]);
        assert_eq!(chain("a-b@.service"), ["a-.service"]);
        assert_eq!(chain("-a.service"), Vec::<String>::new());
        assert_eq!(chain("a--.service"), ["a-.service"]);
    }

    #[test]
    fn specifiers() {
        let n = |id| Naming { id, aliased: false };
        assert_eq!(expand("%i", n("u@qt.service")).unwrap(), "qt");
        assert_eq!(expand("%I", n("u@a-b.service")).unwrap(), "a/b");
        assert_eq!(expand("%p-%%", n("u@qt.service")).unwrap(), "u-%");
        assert_eq!(expand("%N", n("u@qt.service")).unwrap(), "u@qt");
        assert_eq!(expand("50%", n("u.service")).unwrap(), "50%");
        assert_eq!(
            expand("%H", n("u.service")),
            Err(SpecifierError::Unresolved('H'))
        );
        assert_eq!(
            expand("%Z", n("u.service")),
            Err(SpecifierError::Invalid('Z'))
        );
        let aliased = Naming {
            id: "u@qt.service",
            aliased: true,
        };
        assert_eq!(expand("%i", aliased).unwrap(), "qt");
        assert_eq!(expand("%p", aliased), Err(SpecifierError::Unresolved('p')));
        assert!(specifiers_valid("/bin/%H") && !specifiers_valid("%Z"));
    }
}
