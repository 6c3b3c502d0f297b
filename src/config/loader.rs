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
use super::raw::{Parsed, RawLoader};

/// The `[loader]` of every file, merged key by key, and the line of each
/// `env_file_dirs` entry. A mistake is fatal: every path depends on it.
pub(super) fn merge_loader(
    parsed: &[Parsed],
    main: &Path,
    problems: &mut Vec<Problem>,
) -> (Loader, BTreeMap<PathBuf, Origin>) {
    let mut merge = Merge {
        loader: Loader::default(),
        env_dir_at: None,
        declared_at: BTreeMap::new(),
        problems,
    };
    for file in parsed {
        if let Some(raw) = &file.raw.loader {
            merge.file(file, raw);
        }
    }
    merge.check_env_dir(main);
    (merge.loader, merge.declared_at)
}

/// `[loader]` merged so far: later files override earlier ones key by key.
struct Merge<'a> {
    loader: Loader,
    /// Where the `env_dir` in effect is set.
    env_dir_at: Option<Origin>,
    /// Where each `env_file_dirs` entry in effect is set.
    declared_at: BTreeMap<PathBuf, Origin>,
    problems: &'a mut Vec<Problem>,
}

impl Merge<'_> {
    /// The `[loader]` keys `raw` of `file`, over those before it.
    fn file(&mut self, file: &Parsed, raw: &RawLoader) {
        let l = &mut self.loader;
        for (slot, value, key) in [
            (&mut l.creds_dir, &raw.creds_dir, "creds_dir"),
            (&mut l.env_dir, &raw.env_dir, "env_dir"),
            (&mut l.dropin_dir, &raw.dropin_dir, "dropin_dir"),
            (&mut l.state_dir, &raw.state_dir, "state_dir"),
        ] {
            if let Some(v) = value {
                match names::managed_path(v.get_ref()) {
                    Ok(()) => *slot = PathBuf::from(v.get_ref()),
                    Err(m) => self.problems.push(Problem {
                        origin: file.origin(v),
                        message: format!("loader.{key}: {m}"),
                    }),
                }
            }
        }
        if let Some(v) = &raw.env_dir {
            self.env_dir_at = Some(file.origin(v));
        }
        if let Some(dirs) = &raw.env_file_dirs {
            self.env_file_dirs(file, dirs);
        }
        if let Some(k) = &raw.keep_generations {
            self.keep_generations(file, k);
        }
        if let Some(t) = raw.lock_timeout_sec {
            self.loader.lock_timeout = Duration::from_secs(t);
        }
    }

    /// `env_file_dirs`: the whole list replaces the one before.
    fn env_file_dirs(&mut self, file: &Parsed, dirs: &[Spanned<String>]) {
        self.loader.env_file_dirs.clear();
        self.declared_at.clear();
        for d in dirs {
            match names::managed_path(d.get_ref()) {
                Ok(()) => {
                    self.loader.env_file_dirs.push(PathBuf::from(d.get_ref()));
                    self.declared_at
                        .insert(PathBuf::from(d.get_ref()), file.origin(d));
                }
                Err(m) => self.problems.push(Problem {
                    origin: file.origin(d),
                    message: format!("loader.env_file_dirs: {m}"),
                }),
            }
        }
    }

    /// `keep_generations`: 1..100.
    fn keep_generations(&mut self, file: &Parsed, k: &Spanned<u32>) {
        if *k.get_ref() == 0 || *k.get_ref() > 100 {
            self.problems.push(Problem {
                origin: file.origin(k),
                message: "loader.keep_generations must be between 1 and 100".into(),
            });
        } else {
            self.loader.keep_generations = *k.get_ref();
        }
    }

    /// Where every service's default env file goes, and the stamps: a
    /// directory of its own, checked once all paths are known.
    fn check_env_dir(&mut self, main: &Path) {
        if let Some(at) = self.env_dir_at.take() {
            if let Err(e) = self.loader.places(main).check_dir(&self.loader.env_dir) {
                self.problems.push(Problem {
                    origin: at,
                    message: format!("loader.env_dir: {e}"),
                });
            }
        }
    }
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
