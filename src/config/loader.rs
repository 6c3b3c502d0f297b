//! `[loader]` merged across the files, key by key, and from it where env
//! files may be placed. A mistake here is fatal: every path depends on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::envplace::{PlaceError, Places};
use crate::names;

use super::errors::{Origin, Problem};
use super::model::Loader;
use super::raw::Parsed;

/// The `[loader]` of every file, merged key by key, and the line of each
/// `env_file_dirs` entry. A mistake is fatal: every path depends on it.
pub(super) fn merge_loader(
    parsed: &[Parsed],
    main: &Path,
    problems: &mut Vec<Problem>,
) -> (Loader, BTreeMap<PathBuf, Origin>) {
    let mut loader = Loader::default();
    let mut env_dir_at = None;
    let mut declared_at = BTreeMap::new();
    for file in parsed {
        let Some(raw) = &file.raw.loader else {
            continue;
        };
        let mut path_key = |slot: &mut PathBuf, value: &Option<Spanned<String>>, key: &str| {
            if let Some(v) = value {
                match names::managed_path(v.get_ref()) {
                    Ok(()) => *slot = PathBuf::from(v.get_ref()),
                    Err(m) => problems.push(Problem {
                        origin: file.origin(v),
                        message: format!("loader.{key}: {m}"),
                    }),
                }
            }
        };
        path_key(&mut loader.creds_dir, &raw.creds_dir, "creds_dir");
        path_key(&mut loader.env_dir, &raw.env_dir, "env_dir");
        path_key(&mut loader.dropin_dir, &raw.dropin_dir, "dropin_dir");
        path_key(&mut loader.state_dir, &raw.state_dir, "state_dir");
        if let Some(v) = &raw.env_dir {
            env_dir_at = Some(file.origin(v));
        }
        if let Some(dirs) = &raw.env_file_dirs {
            loader.env_file_dirs.clear();
            declared_at.clear();
            for d in dirs {
                match names::managed_path(d.get_ref()) {
                    Ok(()) => {
                        loader.env_file_dirs.push(PathBuf::from(d.get_ref()));
                        declared_at.insert(PathBuf::from(d.get_ref()), file.origin(d));
                    }
                    Err(m) => problems.push(Problem {
                        origin: file.origin(d),
                        message: format!("loader.env_file_dirs: {m}"),
                    }),
                }
            }
        }
        if let Some(k) = &raw.keep_generations {
            if *k.get_ref() == 0 || *k.get_ref() > 100 {
                problems.push(Problem {
                    origin: file.origin(k),
                    message: "loader.keep_generations must be between 1 and 100".into(),
                });
            } else {
                loader.keep_generations = *k.get_ref();
            }
        }
        if let Some(t) = raw.lock_timeout_sec {
            loader.lock_timeout = Duration::from_secs(t);
        }
    }
    // Where every service's default env file goes, and the stamps: a
    // directory of its own, checked once all paths are known.
    if let Some(at) = env_dir_at {
        if let Err(e) = loader.places(main).check_dir(&loader.env_dir) {
            problems.push(Problem {
                origin: at,
                message: format!("loader.env_dir: {e}"),
            });
        }
    }
    (loader, declared_at)
}

/// Where env files may be placed ([`Places`]), with the line of each
/// `env_file_dirs` entry, for messages.
pub(super) struct EnvPlaces {
    pub env_dir: PathBuf,
    places: Places,
    declared_at: BTreeMap<PathBuf, Origin>,
}

impl EnvPlaces {
    pub(super) fn new(
        loader: &Loader,
        main: &Path,
        declared_at: BTreeMap<PathBuf, Origin>,
    ) -> EnvPlaces {
        EnvPlaces {
            env_dir: loader.env_dir.clone(),
            places: loader.places(main),
            declared_at,
        }
    }

    /// Each `env_file_dirs` entry that is no place for env files.
    pub(super) fn problems(&self) -> Vec<Problem> {
        self.places
            .refused
            .iter()
            .map(|(dir, e)| Problem {
                origin: self.declared_at.get(dir).cloned().unwrap_or_default(),
                message: format!("loader.env_file_dirs: {e}; no env file may be placed beneath it"),
            })
            .collect()
    }

    /// What is wrong with the place of an env file set at `at` (`None`: the
    /// default one of service `sname`, defined at `origin`), with where to
    /// fix it: the `env_file` line, or the `env_file_dirs` line that
    /// declares a directory no env file may be placed in.
    pub(super) fn check(
        &self,
        sname: &str,
        path: &Path,
        at: Option<&Origin>,
        origin: &Origin,
    ) -> Option<Problem> {
        let e = self.places.check_file(path).err()?;
        let setting = match at {
            Some(_) => format!("services.{sname}.env_file"),
            None => format!("services.{sname}: its default env file"),
        };
        let (origin, message) = match &e {
            PlaceError::Undeclarable { dir, .. } => (
                self.declared_at.get(dir).cloned().unwrap_or_default(),
                format!("{setting} ({}): {e}", at.unwrap_or(origin)),
            ),
            _ => (at.unwrap_or(origin).clone(), format!("{setting}: {e}")),
        };
        Some(Problem { origin, message })
    }
}
