//! The services a rotation validates, applies to and verifies: as apply
//! serves them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::RotationError;
use crate::config::{Config, Service};
use crate::root::Root;
use crate::safefs::{Dir, DirPolicy, FsError};
use crate::state::State;

/// The services apply serves, by name: an owned [`crate::state::Served`]
/// (the configured ones and, for a service whose config file is broken or
/// refused, the definition it was last applied from), read under the lock.
/// A new value is validated for, applied to and verified on all of them:
/// apply delivers it to each anyway.
pub struct Served {
    /// The services served, by name.
    pub services: BTreeMap<String, Service>,
    /// Of those, the ones served from their last good definition: what is
    /// wrong with their file, and the file to fix.
    pub stored: BTreeMap<String, String>,
    /// What is wrong with the configuration's files, as far as services
    /// are concerned (not `[sources]`). While there is any, a credential
    /// may have a consumer that the served ones do not show (a service
    /// never applied whose file is broken, a file whose services cannot be
    /// named): no command may say that nobody uses it.
    pub problems: Vec<String>,
}

impl Served {
    /// Reads the record of the last apply only when some config file is
    /// broken. The caller holds the apply lock (or reads only).
    pub fn load(root: &Root, config: &Config) -> Result<Served, RotationError> {
        if config.is_clean() {
            return Ok(Served::of(config, &crate::state::Served::default()));
        }
        let state = match Dir::open(root, &config.loader.state_dir, DirPolicy::EXISTING) {
            Ok(dir) => {
                let (state, warning) = State::load(&dir)
                    .map_err(|e| RotationError::Environment(format!("state: {e}")))?;
                if let Some(w) = warning {
                    tracing::warn!("{w}");
                }
                state
            }
            Err(FsError::Os {
                errno: nix::errno::Errno::ENOENT,
                ..
            }) => State::default(),
            Err(e) => return Err(RotationError::Environment(format!("state dir: {e}"))),
        };
        Ok(Served::of(
            config,
            &crate::state::Served::new(config, &state),
        ))
    }

    /// The configured services of `config`, with those `view` serves from
    /// their last good definition.
    pub fn of(config: &Config, view: &crate::state::Served) -> Served {
        let mut services = config.services.clone();
        for (name, s) in &view.services {
            services.insert(name.to_string(), (*s).clone());
        }
        let stored = view
            .stored
            .iter()
            .map(|(name, problems)| (name.to_string(), crate::state::describe(problems)))
            .collect();
        let problems = config
            .broken
            .values()
            .flatten()
            .chain(&config.orphan_problems)
            .map(|p| p.to_string())
            .collect();
        Served {
            services,
            stored,
            problems,
        }
    }

    /// The services that consume `credential`.
    pub fn consumers<'a>(&'a self, credential: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .values()
            .filter(move |s| s.credentials().contains(&credential))
    }

    /// The names of the services that consume `credential`.
    pub fn consumer_names(&self, credential: &str) -> Vec<String> {
        self.consumers(credential).map(|s| s.name.clone()).collect()
    }

    /// What a command says of a credential that `consumers` (its consumers
    /// as served) use: why those served from their last good definition
    /// are, and when none is served, whether the configuration's errors may
    /// hide one. `None`: nothing to say. The `bool` is true when no service
    /// is known to use it but a broken file may: the command must not end
    /// as if there were nothing to do.
    pub fn note(&self, consumers: &[String]) -> Option<(String, bool)> {
        let mut out = String::new();
        for c in consumers {
            if let Some(why) = self.stored.get(c) {
                let _ = writeln!(out, "{c} is served from its last good definition: {why}");
            }
        }
        let hidden = consumers.is_empty() && !self.problems.is_empty();
        if hidden {
            let _ = writeln!(
                out,
                "no service that loads uses it, but the configuration has errors and a broken or \
                 refused file may: {}; fix it and run `credloader apply`",
                self.problems.join("; ")
            );
        }
        (!out.is_empty()).then_some((out, hidden))
    }
}
