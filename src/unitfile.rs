//! Unit files read the way systemd's PID 1 (252) reads them, for a system
//! that may be an offline image: which file is a unit's fragment, which
//! drop-ins apply and in what order, and what its `[Service]` section says
//! about whom it runs as and what environment it gets.
//!
//! This module uses no other part of credloader. It follows these files of
//! systemd 252 (checked against a real PID 1 by `tests/e2e_unitfile.rs`):
//!
//! - `src/basic/path-lookup.c` (`lookup_paths_init`): the search path,
//!   [`SEARCH_PATH`]. Debian's 252 searches `/lib/systemd/system` before
//!   `/usr/lib/systemd/system`; 255 and later drop `/lib` (with a merged
//!   `/usr` both are the same directory, so only the fragment's name
//!   differs): [`search_path`] leaves it out for an image whose systemd is
//!   255 or later.
//! - `src/basic/unit-file.c` (`unit_file_build_name_map`,
//!   `unit_ids_map_get`, `unit_file_find_fragment`,
//!   `unit_validate_alias_symlink_or_warn`): the first directory that has a
//!   name wins; a symlink into the search path is an alias (same type, a
//!   template only to a template, an instance to a template or to the same
//!   instance), one to elsewhere links a unit file; a fragment that is a
//!   device (`/dev/null`) or empty masks the unit; an instance without a
//!   fragment of its own uses its template's; every name that resolves to
//!   the same fragment is one of the unit's names.
//! - `src/shared/dropin.c` (`unit_file_find_dropin_paths`,
//!   `unit_file_find_dirs`) and `src/basic/conf-files.c`
//!   (`conf_files_list_strv`): drop-ins come from `NAME.d/` for the unit's
//!   id and then each alias, in each search directory in order, each name
//!   followed by its template and its dash prefixes (`a-b-.service.d/`,
//!   `a-.service.d/`), and last the type-wide `service.d/`. Every `*.conf`
//!   (not hidden) of all of them is taken once by file name, the first
//!   directory in that order winning, and they apply sorted by file name.
//! - `src/shared/conf-parser.c`, `src/core/load-fragment.c`,
//!   `src/basic/extract-word.c`, `src/basic/user-util.c`: see [`parse`] and
//!   [`service`].
//!
//! What it cannot follow exactly (a specifier whose value depends on the
//! running system, a file it cannot read, drop-ins of the same name under
//! two aliases, whose order PID 1 leaves to a hash table) is listed in
//! [`Unit::unsure`]: a verdict that depends on it must not be trusted.

mod fs;
mod names;
mod parse;
mod service;
mod words;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use service::{Command, EnvironmentFile, ExecFlags, Origin, Service, Setting, EXEC_KEYS};

use fs::{Contents, Sys};
use names::{Kind, Naming};

/// Where a system manager looks for units, highest priority first.
pub const SEARCH_PATH: [&str; 13] = [
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/run/systemd/generator.late",
];

/// The release from which systemd no longer searches `/lib/systemd/system`
/// (split and unmerged `/usr` support removed, systemd PR #27999).
const NO_ROOTPREFIX_FROM: u32 = 255;

/// The release from which PID 1 no longer loads the drop-ins of a masked
/// unit (seen on 257, not on 252; the change landed in between).
const NO_MASKED_DROPINS_FROM: u32 = 256;

/// [`SEARCH_PATH`] as the systemd `release` has it.
fn search_path(release: Option<u32>) -> Vec<&'static str> {
    let drop_lib = release.is_some_and(|v| v >= NO_ROOTPREFIX_FROM);
    SEARCH_PATH
        .into_iter()
        .filter(|d| !(drop_lib && *d == "/lib/systemd/system"))
        .collect()
}

/// The release of the image's systemd, from the name of the
/// `libsystemd-shared-NNN.so` every systemd binary links to; `None` when it
/// cannot be found (then the 252 search path is used: on a merged `/usr`
/// only the fragment's name can differ).
fn systemd_release(sys: &Sys) -> Option<u32> {
    // Debian 12 and later keep it in the multiarch directory; older
    // releases and other distributions beside the binaries.
    const DIRS: [&str; 9] = [
        "/usr/lib/x86_64-linux-gnu/systemd",
        "/usr/lib/aarch64-linux-gnu/systemd",
        "/usr/lib/arm-linux-gnueabihf/systemd",
        "/usr/lib/i386-linux-gnu/systemd",
        "/usr/lib/riscv64-linux-gnu/systemd",
        "/usr/lib/powerpc64le-linux-gnu/systemd",
        "/usr/lib/s390x-linux-gnu/systemd",
        "/usr/lib/systemd",
        "/lib/systemd",
    ];
    let release = |name: &std::ffi::OsStr| {
        let name = name.to_str()?;
        let v = name
            .strip_prefix("libsystemd-shared-")?
            .strip_suffix(".so")?;
        v.split(['.', '~', '-']).next()?.parse::<u32>().ok()
    };
    DIRS.iter()
        .filter_map(|d| std::fs::read_dir(sys.resolve(Path::new(d)).ok()?).ok())
        .flat_map(|entries| entries.filter_map(Result::ok))
        .filter_map(|e| release(&e.file_name()))
        .max()
}

/// How far alias symlinks are followed (`FOLLOW_MAX`).
const FOLLOW_MAX: usize = 32;

/// The load state PID 1 would give the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    /// It loads.
    Loaded,
    /// No unit file (a drop-in alone does not make a service).
    NotFound,
    /// Its fragment is `/dev/null` or empty: it never starts.
    Masked,
    /// PID 1 refuses to load it for a setting it refuses: why, and where.
    BadSetting(String),
    /// PID 1 fails to load it (a syntax error, an unreadable file).
    Error(String),
}

/// One unit as PID 1 would load it.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Its primary name (`Id`): the fragment's name, with the instance.
    pub id: String,
    /// Every name it has (`Names`), the id first.
    pub names: Vec<String>,
    /// Its load state (`LoadState`).
    pub state: LoadState,
    /// The unit file (`FragmentPath`), a path on the system.
    pub fragment: Option<PathBuf>,
    /// Its drop-ins in the order they apply (`DropInPaths`).
    pub dropins: Vec<PathBuf>,
    /// The `[Service]` settings of the fragment and every drop-in.
    pub service: Service,
    /// What the reader could not follow as PID 1 would.
    pub unsure: Vec<String>,
    /// Drop-ins PID 1 stopped reading early, and why (`file:line: why`).
    pub ignored: Vec<String>,
}

/// What a name in the search path stands for.
#[derive(Debug, Clone)]
enum Target {
    /// A unit file (or a symlink to one outside the search path, or a
    /// mask), as a path on the system.
    File(PathBuf),
    /// An alias of another name.
    Alias(String),
}

/// The search path of one system, scanned once; [`Lookup::unit`] then
/// loads any number of units from it.
pub struct Lookup {
    sys: Sys,
    ids: BTreeMap<String, Target>,
    /// Fragment name → every name resolving to it, with the file it
    /// resolves to (`unit_name_map`; masks are left out when asked).
    reverse: BTreeMap<String, Vec<(String, PathBuf)>>,
    /// The `NAME.d` entries of each search directory (`unit_path_cache`):
    /// only those are looked at for drop-ins.
    dirs: BTreeSet<PathBuf>,
    /// The search path of this system's systemd ([`search_path`]).
    search: Vec<&'static str>,
    /// The release of this system's systemd, when it can be told.
    release: Option<u32>,
}

/// Loads `unit` from the system beneath `base` (`/` for the running one).
pub fn load(base: &Path, unit: &str) -> Unit {
    Lookup::new(base).unit(unit)
}

/// Where the system path `path` of the system beneath `base` is on this
/// machine, its symlinks followed as PID 1 would follow them there.
pub(crate) fn host_path(base: &Path, path: &Path) -> std::io::Result<PathBuf> {
    Sys::new(base).resolve(path)
}

impl Lookup {
    /// Scans the search path of the system beneath `base`.
    pub fn new(base: &Path) -> Lookup {
        let sys = Sys::new(base);
        let release = systemd_release(&sys);
        let search = search_path(release);
        let mut ids = BTreeMap::new();
        let mut dirs = BTreeSet::new();
        for &dir in &search {
            let dir = Path::new(dir);
            let Ok(host) = sys.resolve(dir) else { continue };
            let Ok(entries) = std::fs::read_dir(&host) else {
                continue;
            };
            let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Ok(t) = e.file_type() else { continue };
                if name.ends_with(".d") && (t.is_dir() || t.is_symlink()) {
                    dirs.insert(dir.join(&name));
                }
                if names::kind(&name).is_none() || ids.contains_key(&name) {
                    continue;
                }
                let target = if t.is_file() {
                    Some(Target::File(dir.join(&name)))
                } else if t.is_symlink() {
                    link_target(&sys, &search, dir, &name, &e.path())
                } else {
                    None
                };
                if let Some(target) = target {
                    ids.insert(name, target);
                }
            }
        }
        let mut lookup = Lookup {
            sys,
            ids,
            reverse: BTreeMap::new(),
            dirs,
            search,
            release,
        };
        lookup.reverse = lookup.reverse_map();
        lookup
    }

    /// `unit_ids_map_get`: the file `name` resolves to, following aliases
    /// (an alias to an instance falls back to its template).
    fn resolve(&self, name: &str) -> Option<&PathBuf> {
        let mut id = name.to_string();
        for hop in 0..FOLLOW_MAX {
            let t = match self.ids.get(&id) {
                Some(t) => t,
                None if hop > 0 => self.ids.get(&names::template(&id)?)?,
                None => return None,
            };
            match t {
                Target::File(p) => return Some(p),
                Target::Alias(n) => id = n.clone(),
            }
        }
        None
    }

    fn reverse_map(&self) -> BTreeMap<String, Vec<(String, PathBuf)>> {
        let mut reverse: BTreeMap<String, Vec<(String, PathBuf)>> = BTreeMap::new();
        for src in self.ids.keys() {
            let Some(path) = self.resolve(src) else {
                continue;
            };
            let mut dst = file_name(path);
            if names::kind(&dst) == Some(Kind::Template) {
                if let Some(i) = names::instance(src) {
                    dst = names::with_instance(&dst, i);
                }
            }
            reverse
                .entry(dst)
                .or_default()
                .push((src.clone(), path.clone()));
        }
        reverse
    }

    /// The names that resolve to the fragment named `key`, leaving out
    /// those whose file is a mask or cannot be looked at.
    fn aliases(&self, key: &str) -> Vec<&str> {
        let mut masks: BTreeMap<&Path, bool> = BTreeMap::new();
        self.reverse
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(_, path)| {
                *masks
                    .entry(path)
                    .or_insert_with(|| self.sys.is_mask(path) == Some(false))
            })
            .map(|(src, _)| src.as_str())
            .collect()
    }

    /// `add_names`: `name` itself (with the instance when it is a
    /// template) and every alias the reverse map has for `key`.
    fn add_names(&self, out: &mut Vec<String>, name: &str, key: &str, fragment: Option<&str>) {
        let inst = names::instance(name);
        if names::kind(name) != Some(Kind::Template) {
            let own = match (names::kind(key), inst) {
                (Some(Kind::Template), Some(i)) => names::with_instance(key, i),
                _ => key.to_string(),
            };
            push_new(out, own);
        }
        for alias in self.aliases(key) {
            match (inst, names::kind(alias)) {
                (Some(i), Some(Kind::Template)) => {
                    let n = names::with_instance(alias, i);
                    let other = self
                        .resolve(&n)
                        .is_some_and(|p| fragment.is_some_and(|f| file_name(p) != f));
                    if !other {
                        push_new(out, n);
                    }
                }
                _ => push_new(out, alias.to_string()),
            }
        }
    }

    /// Loads `name` as PID 1 would.
    pub fn unit(&self, name: &str) -> Unit {
        let mut unit = Unit {
            id: name.to_string(),
            names: vec![name.to_string()],
            state: LoadState::NotFound,
            fragment: None,
            dropins: Vec::new(),
            service: Service::default(),
            unsure: Vec::new(),
            ignored: Vec::new(),
        };
        match names::kind(name) {
            None => {
                unit.state = LoadState::BadSetting(format!("{name} is not a valid unit name"));
                return unit;
            }
            Some(Kind::Template) => {
                unit.state = LoadState::BadSetting(format!(
                    "{name} is a template; only its instances (NAME@INSTANCE) run"
                ));
                return unit;
            }
            _ => {}
        }
        let fragment = self
            .resolve(name)
            .or_else(|| self.resolve(&names::template(name)?))
            .cloned();
        let mut all = Vec::new();
        self.add_names(&mut all, name, name, None);
        let Some(fragment) = fragment else {
            return unit;
        };
        let base = file_name(&fragment);
        if base != name {
            self.add_names(&mut all, name, &base, Some(&base));
        }
        unit.id = match (names::kind(&base), names::instance(name)) {
            (Some(Kind::Template), Some(i)) => names::with_instance(&base, i),
            _ => base,
        };
        all.retain(|n| *n != unit.id);
        all.sort();
        unit.names = std::iter::once(unit.id.clone()).chain(all).collect();
        self.read_unit(&mut unit, fragment);
        unit
    }

    fn read_unit(&self, unit: &mut Unit, fragment: PathBuf) {
        let masked = self.sys.is_mask(&fragment) == Some(true);
        unit.fragment = Some(fragment.clone());
        if masked {
            unit.state = LoadState::Masked;
            // Drop-ins of a masked unit are listed up to 255 only (systemd
            // commit 19a44dfe stopped loading them: they cannot matter).
            if self.release.is_none_or(|r| r < NO_MASKED_DROPINS_FROM) {
                unit.dropins = self.dropins(unit);
            }
            return;
        }
        unit.dropins = self.dropins(unit);
        // A unit whose file does not load gets no drop-ins.
        let failed = match self.sys.read(&fragment) {
            Contents::Text(text) => match self.apply(unit, &fragment, &text) {
                Ok(()) => None,
                Err(stop) if stop.syntax => Some(LoadState::Error(stop.to_string())),
                Err(stop) => Some(LoadState::BadSetting(stop.to_string())),
            },
            Contents::Missing => Some(LoadState::NotFound),
            Contents::Unreadable(e) => {
                let why = format!("cannot read {}: {e}", fragment.display());
                unit.unsure.push(why.clone());
                Some(LoadState::Error(why))
            }
        };
        if let Some(state) = failed {
            unit.state = state;
            unit.dropins.clear();
            return;
        }
        unit.state = LoadState::Loaded;
        for dropin in unit.dropins.clone() {
            match self.sys.read(&dropin) {
                Contents::Text(text) => {
                    if let Err(stop) = self.apply(unit, &dropin, &text) {
                        unit.ignored.push(stop.to_string());
                    }
                }
                Contents::Missing => {}
                Contents::Unreadable(e) => unit
                    .unsure
                    .push(format!("cannot read the drop-in {}: {e}", dropin.display())),
            }
        }
        let settings = std::mem::take(&mut unit.service.unsure);
        unit.unsure.extend(settings);
    }

    /// Applies one file's assignments; `Err`: where and why PID 1 stopped.
    fn apply(&self, unit: &mut Unit, file: &Path, text: &str) -> Result<(), FileStop> {
        let naming = Naming {
            id: &unit.id,
            aliased: unit.names.len() > 1,
        };
        let service = &mut unit.service;
        parse::parse(text, |section, key, value, line| {
            let origin = Origin {
                file: file.to_path_buf(),
                line,
            };
            service.assign(naming, section, key, value, origin)
        })
        .map_err(|stop| FileStop {
            file: file.to_path_buf(),
            stop,
        })
    }

    /// The `.d` directories of `name` in one search directory: its own,
    /// its template's and its dash prefixes' (`unit_file_find_dirs`).
    fn name_dirs(&self, search: &Path, name: &str, out: &mut Vec<PathBuf>) {
        let d = search.join(format!("{name}.d"));
        if self.dirs.contains(&d) {
            if let Ok(real) = self.sys.chase(&d) {
                if self.sys.host(&real).is_dir() {
                    out.push(real);
                }
            }
        }
        if let Some(t) = names::template(name) {
            self.name_dirs(search, &t, out);
        }
        if let Some(p) = names::dash_parent(name) {
            self.name_dirs(search, &p, out);
        }
    }

    /// Every drop-in of `unit`, in the order they apply.
    fn dropins(&self, unit: &mut Unit) -> Vec<PathBuf> {
        // (group, directory): group 0 is the id, then one per alias, then
        // the type-wide directory.
        let mut dirs: Vec<(usize, PathBuf)> = Vec::new();
        for (group, name) in unit.names.iter().enumerate() {
            for search in &self.search {
                let mut found = Vec::new();
                self.name_dirs(Path::new(search), name, &mut found);
                dirs.extend(found.into_iter().map(|d| (group, d)));
            }
        }
        let type_group = unit.names.len();
        for search in &self.search {
            let d = Path::new(search).join(format!("{}.d", names::unit_type(&unit.id)));
            if !self.dirs.contains(&d) {
                continue;
            }
            if let Ok(real) = self.sys.chase(&d) {
                if self.sys.host(&real).is_dir() {
                    dirs.push((type_group, real));
                }
            }
        }
        let mut files: BTreeMap<String, (usize, PathBuf)> = BTreeMap::new();
        let mut ambiguous = BTreeSet::new();
        for (group, dir) in dirs {
            let Ok(entries) = std::fs::read_dir(self.sys.host(&dir)) else {
                continue;
            };
            for e in entries.filter_map(Result::ok) {
                let Some(n) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if n.starts_with('.') || !n.ends_with(".conf") {
                    continue;
                }
                match files.get(&n) {
                    None => {
                        files.insert(n, (group, dir.join(e.file_name())));
                    }
                    Some((g, _)) if *g != group && *g > 0 && group < type_group => {
                        ambiguous.insert(n);
                    }
                    Some(_) => {}
                }
            }
        }
        for n in ambiguous {
            unit.unsure.push(format!(
                "two aliases of {} have a drop-in named {n}; which one applies is up to PID 1",
                unit.id
            ));
        }
        files.into_values().map(|(_, p)| p).collect()
    }
}

/// Where and why PID 1 stopped reading a file.
struct FileStop {
    file: PathBuf,
    stop: parse::Stop,
}

impl std::ops::Deref for FileStop {
    type Target = parse::Stop;
    fn deref(&self) -> &parse::Stop {
        &self.stop
    }
}

impl std::fmt::Display for FileStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.file.display(),
            self.stop.line,
            self.stop.reason
        )
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn push_new(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// What the symlink `dir/name` stands for (`unit_file_resolve_symlink`).
fn link_target(sys: &Sys, search: &[&str], dir: &Path, name: &str, host: &Path) -> Option<Target> {
    let target = std::fs::read_link(host).ok()?;
    let target = if target.is_absolute() {
        target
    } else {
        dir.join(target)
    };
    // `..` and every symlink but the last resolved, as `chase_symlinks`
    // with CHASE_NOFOLLOW does.
    let parent = sys.chase(target.parent()?).ok()?;
    let simplified = parent.join(target.file_name()?);
    let inside = search.iter().any(|d| simplified.starts_with(d));
    if !inside {
        return Some(Target::File(dir.join(name)));
    }
    let dst = file_name(&simplified);
    valid_alias(name, &dst).then_some(Target::Alias(dst))
}

/// May `src` be an alias of `dst` (`unit_validate_alias_symlink_or_warn`)?
fn valid_alias(src: &str, dst: &str) -> bool {
    let (Some(s), Some(d)) = (names::kind(src), names::kind(dst)) else {
        return false;
    };
    if names::unit_type(src) != names::unit_type(dst) {
        return false;
    }
    match (s, d) {
        (Kind::Plain, Kind::Plain) | (Kind::Template, Kind::Template) => true,
        (Kind::Instance, Kind::Template) => true,
        (Kind::Instance, Kind::Instance) => names::instance(src) == names::instance(dst),
        _ => false,
    }
}
