//! Migrating the manual layout: a plaintext env file named by an
//! `EnvironmentFile=` drop-in of the consuming unit.
//!
//! [`inspect`] reads all of it (nothing is changed); the `import` command
//! then seals the secret keys, writes the service's config drop-in, replaces
//! the legacy drop-in, applies, and finally [`shred_and_remove`]s the
//! plaintext file.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode};

use crate::audit;
use crate::envfile;
use crate::root::Root;
use crate::safefs::{self, Dir, DirPolicy, FsError};
use crate::secret::Secret;

/// What `inspect` found.
pub struct Legacy {
    /// The plaintext file, as a system path.
    pub env_file: PathBuf,
    /// Its assignments, the last one of each key (file order of first use).
    pub vars: Vec<(String, Secret)>,
    /// Lines systemd would have ignored.
    pub issues: Vec<String>,
    /// The unit's file PID 1 would load, if there is one.
    pub unit_file: Option<PathBuf>,
    /// `User=` of the unit (last assignment in the unit and its drop-ins).
    pub unit_user: Option<String>,
    /// The drop-ins that name the env file, each to rewrite or remove.
    pub dropins: Vec<LegacyDropin>,
    /// A drop-in loads the file optionally (`EnvironmentFile=-PATH`): the
    /// unit started even without it.
    pub optional: bool,
}

/// A drop-in that names the env file, and what becomes of it.
pub struct LegacyDropin {
    /// Its system path.
    pub path: PathBuf,
    /// Its text as found (what is put back if apply fails).
    pub text: String,
    /// What becomes of it.
    pub change: DropinChange,
}

/// What becomes of a legacy drop-in.
pub enum DropinChange {
    /// It loses its `EnvironmentFile=` line naming the env file: this text.
    Rewrite(String),
    /// It held nothing else (but comments and section headers): removed.
    Remove,
}

impl LegacyDropin {
    fn new(path: PathBuf, text: String, env_file: &str) -> LegacyDropin {
        let change = match without_env_file(&text, env_file) {
            Some(t) => DropinChange::Rewrite(t),
            None => DropinChange::Remove,
        };
        LegacyDropin { path, text, change }
    }
}

/// Why the legacy layout cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// `--env-file` is a relative path.
    #[error("--env-file {} must be an absolute path", .0.display())]
    NotAbsolute(PathBuf),
    /// The env file (or its directory) cannot be read safely.
    #[error(transparent)]
    Read(#[from] FsError),
    /// The env file does not exist.
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    /// `--dropin` cannot be read.
    #[error("--dropin {}: {source}", .path.display())]
    Dropin {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `--dropin` does not load the env file.
    #[error("--dropin {} has no EnvironmentFile= line naming {}", .dropin.display(), .env_file.display())]
    DropinNamesNot { dropin: PathBuf, env_file: PathBuf },
}

/// Opens the directory of an operator-owned file: no symlinks followed,
/// but it need not be root-owned.
fn loose_dir(root: &Root, path: &Path) -> Result<Dir, FsError> {
    Dir::open(
        root,
        path,
        DirPolicy {
            create: None,
            strict: false,
        },
    )
}

/// Reads the legacy layout of `unit` around `env_file`.
pub fn inspect(
    root: &Root,
    env_file: &Path,
    unit: &str,
    dropin: Option<&Path>,
) -> Result<Legacy, LegacyError> {
    let (vars, issues) = read_env_file(root, env_file)?;
    let unit_file = audit::unit_file(root, unit);
    // `User=` of [Service], as PID 1 reads the unit and its drop-ins.
    let unit_user = crate::unitfile::load(root.base(), unit)
        .service
        .user
        .map(|u| u.value);
    let wanted = env_file.to_string_lossy().to_string();
    let dropins = match dropin {
        Some(p) => vec![named_dropin(root, p, env_file, &wanted)?],
        None => dropins_naming(root, unit, &wanted),
    };
    let optional = dropins.iter().any(|d| {
        audit::assignments(&d.text)
            .any(|(k, v)| k == "EnvironmentFile" && v.starts_with('-') && v[1..] == wanted)
    });
    Ok(Legacy {
        optional,
        env_file: env_file.to_path_buf(),
        vars,
        issues,
        unit_file: unit_file.map(|(p, _)| p),
        unit_user,
        dropins,
    })
}

/// An env file's assignments, the last one of each key.
type Vars = Vec<(String, Secret)>;

/// The env file's assignments (the last one of each key, in the file order
/// of first use) and the lines systemd would ignore.
fn read_env_file(root: &Root, env_file: &Path) -> Result<(Vars, Vec<String>), LegacyError> {
    if !env_file.is_absolute() {
        return Err(LegacyError::NotAbsolute(env_file.to_path_buf()));
    }
    let (dir, name) = safefs::split(env_file);
    let dir = loose_dir(root, dir)?;
    let (text, _) = dir
        .read_secret(name, envfile::MAX_ASSIGNMENT * 64)?
        .ok_or_else(|| LegacyError::Missing(env_file.to_path_buf()))?;
    let (assignments, issues) = envfile::parse(text.expose());
    drop(text);
    let mut vars: Vec<(String, Secret)> = Vec::new();
    for a in assignments {
        match vars.iter_mut().find(|(k, _)| *k == a.key) {
            Some(slot) => slot.1 = a.value,
            None => vars.push((a.key, a.value)),
        }
    }
    Ok((vars, issues.iter().map(|i| i.to_string()).collect()))
}

/// Whether a unit file text has an `EnvironmentFile=` line naming `env_file`.
fn names_env_file(text: &str, env_file: &str) -> bool {
    audit::assignments(text)
        .any(|(k, v)| k == "EnvironmentFile" && v.trim_start_matches('-') == env_file)
}

/// `--dropin PATH`: it must name the env file.
fn named_dropin(
    root: &Root,
    path: &Path,
    env_file: &Path,
    wanted: &str,
) -> Result<LegacyDropin, LegacyError> {
    let text = std::fs::read_to_string(root.host(path)).map_err(|e| LegacyError::Dropin {
        path: path.to_path_buf(),
        source: e,
    })?;
    if !names_env_file(&text, wanted) {
        return Err(LegacyError::DropinNamesNot {
            dropin: path.to_path_buf(),
            env_file: env_file.to_path_buf(),
        });
    }
    Ok(LegacyDropin::new(path.to_path_buf(), text, wanted))
}

/// Every drop-in of `unit` but credloader's own that names the env file.
fn dropins_naming(root: &Root, unit: &str, wanted: &str) -> Vec<LegacyDropin> {
    audit::dropins(root, unit)
        .into_iter()
        .filter(|(p, _)| p.file_name() != Some(OsStr::new(crate::dropin::FILE_NAME)))
        .filter(|(_, text)| names_env_file(text, wanted))
        .map(|(p, text)| LegacyDropin::new(p, text, wanted))
        .collect()
}

/// `text` without its `EnvironmentFile=` lines naming `env_file`; `None`
/// when nothing but comments and section headers would remain.
pub fn without_env_file(text: &str, env_file: &str) -> Option<String> {
    let mut out = String::new();
    let mut meaningful = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some((k, v)) = t.split_once('=') {
            if k.trim() == "EnvironmentFile" && v.trim().trim_start_matches('-') == env_file {
                continue;
            }
        }
        if !(t.is_empty() || t.starts_with('#') || t.starts_with(';') || t.starts_with('[')) {
            meaningful = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    meaningful.then_some(out)
}

/// The config drop-in for the imported service.
pub fn config_text(
    service: &str,
    unit: &str,
    user: &str,
    secrets: &[String],
    statics: &[(String, String)],
    source: &Path,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut out = format!(
        "# Imported by `credloader import` from {}.\n[services.{}]\nunit = {}\nuser = {}\ncredentials = [{}]\n",
        source.display(),
        q(service),
        q(unit),
        q(user),
        secrets.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    );
    if !statics.is_empty() {
        out.push_str(&format!("\n[services.{}.static]\n", q(service)));
        for (k, v) in statics {
            out.push_str(&format!("{k} = {}\n", q(v)));
        }
    }
    out
}

/// Overwrites the plaintext file with zeros (fsynced), then removes it.
/// On journaling, copy-on-write and flash storage the old blocks may
/// survive: this is best-effort, and the caller says so.
pub fn shred_and_remove(root: &Root, path: &Path) -> Result<(), FsError> {
    let (dir, name) = safefs::split(path);
    let dir = loose_dir(root, dir)?;
    let os = |op, e| FsError::Os {
        op,
        path: dir.path().join(name),
        errno: e,
    };
    let fd = openat(
        dir.as_fd(),
        name,
        OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| os("open", e))?;
    let st = fstat(&fd).map_err(|e| os("stat", e))?;
    if st.st_mode & 0o170000 != 0o100000 {
        return Err(FsError::NotRegular {
            path: dir.path().join(name),
            kind: "special file",
        });
    }
    let mut file = File::from(fd);
    let zeros = vec![0u8; 64 * 1024];
    let mut left = st.st_size.max(0) as u64;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n]).map_err(|e| {
            os(
                "overwrite",
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(5)),
            )
        })?;
        left -= n as u64;
    }
    file.sync_all().map_err(|e| {
        os(
            "fsync",
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(5)),
        )
    })?;
    drop(file);
    dir.remove(name)?;
    dir.sync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_the_env_file_line() {
        let t = "[Service]\nEnvironmentFile=-/etc/x/a.env\n";
        assert_eq!(without_env_file(t, "/etc/x/a.env"), None);
        let t = "[Service]\nEnvironmentFile=-/etc/x/a.env\nEnvironment=A=1\n";
        assert_eq!(
            without_env_file(t, "/etc/x/a.env").unwrap(),
            "[Service]\nEnvironment=A=1\n"
        );
    }

    #[test]
    fn config_text_loads() {
        let text = config_text(
            "pm.v2",
            "q.service",
            "qt",
            &["K".into()],
            &[("S".into(), "a \"b\"".into())],
            Path::new("/e/x.env"),
        );
        let c = crate::config::from_texts(vec![("/x.toml".into(), text)]).unwrap();
        assert_eq!(c.services["pm.v2"].vars.len(), 2);
    }
}
