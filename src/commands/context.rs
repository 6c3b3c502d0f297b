//! What every command knows: where the system is, where its configuration
//! is, and how to load it.

use std::path::PathBuf;

use super::CommandError;
use crate::cli::Global;
use crate::config::{self, Config, ConfigError, Loader};
use crate::root::Root;

/// What every command knows: where the system is and where its config is.
pub struct Context {
    /// The options every command takes.
    pub global: Global,
    /// The system worked on: this one, or an image (`--root`).
    pub root: Root,
}

impl Context {
    /// The context of `global`'s options.
    pub fn new(global: Global) -> Context {
        let root = global.root.clone().map(Root::at).unwrap_or_else(Root::live);
        Context { global, root }
    }

    /// The main config file as a host path: `--config` as given, else the
    /// default beneath the root.
    pub fn config_path(&self) -> (PathBuf, bool) {
        match &self.global.config {
            Some(p) => (p.clone(), true),
            None => (
                self.root.host(std::path::Path::new(config::DEFAULT_CONFIG)),
                false,
            ),
        }
    }

    /// The configuration, loaded and validated.
    pub fn load_config(&self) -> Result<Config, CommandError> {
        let (path, explicit) = self.config_path();
        Ok(config::load(&path, explicit)?)
    }

    /// The configuration, or the defaults when there is none at all yet (a
    /// credential may be sealed before any service uses it).
    pub fn load_config_or_default(&self) -> Result<Config, CommandError> {
        match self.load_config() {
            Ok(c) => Ok(c),
            Err(CommandError::Config(ConfigError::Missing { main, .. })) => Ok(Config {
                main,
                broken: Default::default(),
                orphan_problems: Vec::new(),
                place_problems: Vec::new(),
                loader: Loader::default(),
                services: Default::default(),
                sources: None,
                sources_problems: Vec::new(),
                credentials: Default::default(),
                files: Vec::new(),
            }),
            Err(e) => Err(e),
        }
    }

    /// The running systemd, if there is one to ask (never under `--root`).
    pub fn manager(&self) -> crate::systemd::Manager {
        crate::systemd::Manager::detect(self.root.is_offline())
    }
}
