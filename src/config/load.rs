//! Reading the configuration's files safely: the main file and the
//! `*.toml` drop-ins beside it, each only if nobody but root could have
//! written it. Nothing here knows what the files mean.

use std::path::{Path, PathBuf};

use crate::escape::ShowPath;
use crate::root::Root;
use crate::safefs::{Dir, DirPolicy, FsError};

use super::errors::ConfigError;

pub const DEFAULT_CONFIG: &str = "/etc/quantum/credloader.toml";

/// The drop-in directory that belongs to a main config file:
/// `/etc/quantum/credloader.toml` → `/etc/quantum/credloader.d`.
pub fn dropin_dir_for(main: &Path) -> PathBuf {
    main.with_extension("d")
}

/// The configuration's files as found on disk.
pub(super) struct Read {
    /// The main file, absolute.
    pub main: PathBuf,
    /// The files that can be trusted, with their text, in precedence order.
    pub files: Texts,
    /// The drop-ins refused as unsafe.
    pub refused: Vec<Refused>,
}

/// Reads `main` and its drop-in directory. A missing main file is fine when
/// drop-ins exist, unless `main_must_exist` (an explicit `--config`).
pub(super) fn read(main: &Path, main_must_exist: bool) -> Result<Read, ConfigError> {
    let main = std::path::absolute(main).map_err(|error| ConfigError::Read {
        path: main.into(),
        error,
    })?;
    let dropins = dropin_dir_for(&main);
    let mut files = Vec::new();
    match read_trusted(&main) {
        Ok(Some(text)) => files.push((main.clone(), text)),
        Ok(None) if !main_must_exist => {}
        Ok(None) => {
            return Err(ConfigError::Read {
                path: main.clone(),
                error: std::io::ErrorKind::NotFound.into(),
            })
        }
        Err(e) => return Err(e),
    }
    let (dropin_files, refused) = read_dropins(&dropins)?;
    files.extend(dropin_files);
    if files.is_empty() && refused.is_empty() {
        return Err(ConfigError::Missing { main, dropins });
    }
    Ok(Read {
        main,
        files,
        refused,
    })
}

/// A config file refused as unsafe (see [`read_trusted`]): why, and its
/// text when it could be read at all. It is a broken file, never a source
/// of definitions: its text only names the services it meant to define.
#[derive(Debug, Clone)]
pub struct Refused {
    pub path: PathBuf,
    pub problem: String,
    pub text: Option<String>,
}

/// Config files and their text, in precedence order.
pub(super) type Texts = Vec<(PathBuf, String)>;

/// The `*.toml` drop-ins of `dropins` in lexical order: those that can be
/// trusted, with their text, and those refused as unsafe.
fn read_dropins(dropins: &Path) -> Result<(Texts, Vec<Refused>), ConfigError> {
    let mut files = Vec::new();
    let mut refused = Vec::new();
    let dir = match Dir::open(&Root::live(), dropins, DirPolicy::EXISTING) {
        Ok(dir) => dir,
        Err(FsError::Os {
            errno: nix::errno::Errno::ENOENT,
            ..
        }) => return Ok((files, refused)),
        Err(e) => {
            return Err(ConfigError::Unsafe {
                path: dropins.to_path_buf(),
                problem: e.to_string(),
            })
        }
    };
    let names = dir.list().map_err(|e| ConfigError::Unsafe {
        path: dropins.to_path_buf(),
        problem: e.to_string(),
    })?;
    for name in names {
        let text = name.to_string_lossy();
        if !text.ends_with(".toml") || text.starts_with('.') {
            continue;
        }
        let path = dropins.join(&name);
        match read_checked(&dir, &name, &path) {
            Ok(Some(text)) => files.push((path, text)),
            Ok(None) => {}
            // One unsafe drop-in is refused like a broken one: loudly,
            // without stopping the others.
            Err((problem, text)) => refused.push(Refused {
                path,
                problem,
                text,
            }),
        }
    }
    Ok((files, refused))
}

/// Reads a config file that decides who gets which secret, so only one that
/// nobody but root (or the caller) could have written: no symlink anywhere
/// on its path, its directory and the file itself not writable by others.
/// `None` when it does not exist.
fn read_trusted(path: &Path) -> Result<Option<String>, ConfigError> {
    let unsafe_ = |problem: String| ConfigError::Unsafe {
        path: path.to_path_buf(),
        problem,
    };
    let (dir, name) = crate::safefs::split(path);
    let dir = match Dir::open(&Root::live(), dir, DirPolicy::EXISTING) {
        Ok(d) => d,
        Err(FsError::Os {
            errno: nix::errno::Errno::ENOENT,
            ..
        }) => return Ok(None),
        Err(e) => return Err(unsafe_(e.to_string())),
    };
    read_checked(&dir, name, path).map_err(|(problem, _)| unsafe_(problem))
}

/// [`read_trusted`] of `name` in an already opened (and checked) directory.
/// A refusal says why, with the text when the file could be read (an
/// unsafe owner or mode), so that its services can still be named.
fn read_checked(
    dir: &Dir,
    name: &std::ffi::OsStr,
    path: &Path,
) -> Result<Option<String>, (String, Option<String>)> {
    let Some((bytes, st)) = dir
        .read(name, 1024 * 1024)
        .map_err(|e| (e.to_string(), None))?
    else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).ok();
    let me = nix::unistd::Uid::effective().as_raw();
    if st.st_uid != 0 && st.st_uid != me {
        let problem = format!(
            "owned by uid {}, who could hand any secret to any user; fix with `chown root:root {}`",
            st.st_uid,
            path.shown()
        );
        return Err((problem, text));
    }
    if st.st_mode & 0o022 != 0 {
        let problem = format!(
            "mode {:04o} lets others change which user gets which secret; fix with `chmod go-w {}`",
            st.st_mode & 0o7777,
            path.shown()
        );
        return Err((problem, text));
    }
    text.map(Some)
        .ok_or_else(|| ("is not UTF-8 text".to_string(), None))
}
