//! What a run leaves behind or finds left behind: the files of services
//! that left the configuration, old env files no service uses any more,
//! and the temp files of an interrupted run.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::report::Report;
use super::Run;
use crate::config::{Config, Delivery};
use crate::escape::ShowPath;
use crate::root::Root;
use crate::safefs::{self, Dir, DirCache, DirPolicy, FsError};
use crate::state::{ServiceState, State};

impl Run<'_> {
    /// Services that left the configuration: remove their files. Not while
    /// the configuration has errors (the service may be in the broken file),
    /// not for another configuration than the one the state belongs to, and
    /// never a path a configured service still uses.
    pub(super) fn remove_gone_services(&mut self) {
        let same_config = self
            .state
            .config
            .as_ref()
            .is_none_or(|c| *c == self.config.main);
        if !self.config.is_clean() || !same_config {
            self.warn_nothing_removed(same_config);
        }
        self.claimed = self.claimed_paths();
        if self.opts.only.is_empty() && self.config.is_clean() && same_config {
            self.remove_gone();
        }
    }

    /// Says why no service's files are removed, if one left.
    fn warn_nothing_removed(&mut self, same_config: bool) {
        let (config, state) = (self.config, &self.state);
        let gone = state.services.keys().any(|n| {
            !config.services.contains_key(n) && !state.fallbacks(config).any(|(f, ..)| f == n)
        });
        if !gone || !self.opts.only.is_empty() {
            return;
        }
        self.report.warnings.push(if same_config {
            "the configuration has errors, so no service's files are removed in this run"
                .to_string()
        } else {
            format!(
                "the state belongs to {}, not {}: no service's files are removed",
                state
                    .config
                    .as_ref()
                    .map(|c| c.shown().to_string())
                    .unwrap_or_default(),
                config.main.shown()
            )
        });
    }

    /// The paths configured services still use: every drop-in, and the env
    /// file of each service delivered by env file.
    fn claimed_paths(&self) -> BTreeSet<PathBuf> {
        let loader = &self.config.loader;
        self.config
            .services
            .values()
            .chain(self.stored.iter().map(|(s, _)| s))
            .flat_map(|s| {
                std::iter::once(crate::dropin::path(s, loader))
                    .chain((s.delivery == Delivery::Env).then(|| s.env_file.clone()))
            })
            .collect()
    }

    /// Removes the files of each recorded service the configuration no
    /// longer has (a dry run only says so), and forgets it.
    fn remove_gone(&mut self) {
        let gone: Vec<String> = self
            .state
            .services
            .keys()
            .filter(|n| !self.config.services.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let old = &self.state.services[&name];
            if !self.opts.dry_run {
                if let Err(e) = remove_files(&self.dirs, old, &self.claimed) {
                    self.report.warnings.push(format!(
                        "service {name} left the configuration, but its files stay: {e}"
                    ));
                    continue;
                }
                self.state.services.remove(&name);
            }
            self.report.daemon_reload = true;
            self.report.removed.push(name);
        }
    }

    /// Removes the env files no service uses any more, once systemd no
    /// longer reads them (see [`remove_left_env_files`]).
    pub(super) fn remove_left_env_files(&mut self) {
        remove_left_env_files(&self.dirs, &self.claimed, &mut self.state, &mut self.report);
    }
}

/// A run killed mid-write leaves its temp file (`.NAME.credloader-tmp-*`)
/// beside the target. Whoever takes the lock next removes them from the
/// directories credloader writes only under the lock: state, generations,
/// sealed credentials and the env dir (an env file's temp holds plaintext
/// and its service may since have left the configuration). Drop-in and
/// custom env-file directories are swept before each write there.
pub(super) fn sweep_stale_temps(config: &Config, root: &Root, state: &Dir) {
    let mut dirs = Vec::new();
    for path in [&config.loader.creds_dir, &config.loader.env_dir] {
        if let Ok(d) = Dir::open(root, path, DirPolicy::EXISTING) {
            dirs.push(d);
        }
    }
    if let Ok(gens) = state.subdir(std::ffi::OsStr::new("generations"), DirPolicy::EXISTING) {
        for name in gens.list().unwrap_or_default() {
            if let Ok(d) = gens.subdir(&name, DirPolicy::EXISTING) {
                dirs.push(d);
            }
        }
    }
    for d in std::iter::once(state).chain(&dirs) {
        match d.remove_all_stale_temps() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                "{}: removed {n} temp file(s) of an interrupted run",
                d.path().shown()
            ),
            Err(e) => tracing::warn!("could not remove temp files of an interrupted run: {e}"),
        }
    }
}

/// A service that moved its env file, or now gets its credentials from
/// PID 1 (`delivery = "credential"`), leaves plaintext behind in its old env
/// file ([`State::leftover_env_files`]). It is removed once systemd has
/// loaded every drop-in (settle's daemon-reload), since until then a restart
/// would still read it; what cannot be removed yet stays recorded for the
/// next run. A path a configured service uses again is forgotten, not
/// removed.
fn remove_left_env_files(
    dirs: &DirCache,
    claimed: &BTreeSet<PathBuf>,
    state: &mut State,
    report: &mut Report,
) {
    let reloaded = !state.services.values().any(|r| r.pending_reload);
    let mut left = std::mem::take(&mut state.leftover_env_files);
    left.retain(|old| {
        if claimed.contains(old) {
            return false;
        }
        let (dir, file) = safefs::split(old);
        let removed = match dirs.open(dir, DirPolicy::EXISTING) {
            Ok(d) if reloaded => d.remove(file).map_err(|e| e.to_string()),
            Ok(_) => Err("systemd has not loaded the new drop-ins yet".to_string()),
            // Gone with its directory: nothing left to remove.
            Err(FsError::Os {
                errno: nix::errno::Errno::ENOENT,
                ..
            }) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        match removed {
            Ok(()) => {
                tracing::info!("removed {}, which no service uses any more", old.shown());
                false
            }
            Err(e) => {
                report.warnings.push(format!(
                    "{} holds secrets no service uses any more and stays until a later run \
                     can remove it ({e})",
                    old.shown()
                ));
                true
            }
        }
    });
    state.leftover_env_files = left;
}

fn remove_files(
    dirs: &DirCache,
    old: &ServiceState,
    claimed: &BTreeSet<PathBuf>,
) -> Result<(), FsError> {
    let (dir, name) = safefs::split(&old.dropin);
    if claimed.contains(&old.dropin) {
        // Another service (say, this one renamed) now owns that drop-in.
    } else if let Ok(d) = dirs.open(dir, DirPolicy::EXISTING) {
        d.remove(name)?;
        if let (Some(parent), Some(unit_d)) = (dir.parent(), dir.file_name()) {
            if let Ok(p) = dirs.open(parent, DirPolicy::EXISTING) {
                p.remove_dir_if_empty(unit_d);
            }
        }
    }
    if let Some(env) = old.env_file.as_ref().filter(|e| !claimed.contains(*e)) {
        let (dir, name) = safefs::split(env);
        if let Ok(d) = dirs.open(dir, DirPolicy::EXISTING) {
            d.remove(name)?;
        }
    }
    Ok(())
}
