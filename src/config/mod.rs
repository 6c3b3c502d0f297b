//! Stage 1: load the configuration.
//!
//! The main file (default `/etc/quantum/credloader.toml`) and then every
//! `*.toml` in the drop-in directory beside it (`credloader.d/`) in lexical
//! order, zincati-style: `[loader]` keys from later files override earlier
//! ones, and each `[services.NAME]` may be defined once across all files.
//! Every mistake found is reported together, each with its file and line.

use std::path::{Path, PathBuf};

mod credentials;
mod errors;
mod load;
mod loader;
mod model;
mod parse;
mod raw;
mod resolve;
mod service;
mod sources;

// Public (see lib.rs): what the tests and fuzz targets build and inspect.
pub use errors::{ConfigError, Origin, Problem};
pub use model::{Config, Delivery, Loader, Service, Source, Var};

pub(crate) use load::{dropin_dir_for, DEFAULT_CONFIG};
#[cfg(feature = "aws")]
pub(crate) use model::{AwsSource, Environment};
pub(crate) use model::{Manage, Sources};
pub(crate) use resolve::build;

/// Loads `main` and its drop-in directory. A missing main file is fine when
/// drop-ins exist, unless `main_must_exist` (an explicit `--config`).
pub(crate) fn load(main: &Path, main_must_exist: bool) -> Result<Config, ConfigError> {
    let read = load::read(main, main_must_exist)?;
    build(read.files, read.refused, &read.main)
}

/// Builds a configuration from `(path, contents)` pairs in precedence order.
pub fn from_texts(files: Vec<(PathBuf, String)>) -> Result<Config, ConfigError> {
    let main = files.first().map(|f| f.0.clone()).unwrap_or_default();
    from_texts_with_main(files, &main)
}

/// [`from_texts`] naming the main file: a syntax error there, or any
/// problem in `[loader]`, is fatal (the paths every service depends on are
/// unknown). A problem in a service, or a drop-in that does not parse, only
/// breaks the services it concerns. A problem in `[sources]` only stops
/// `sync` ([`Config::sources_problems`]).
pub(crate) fn from_texts_with_main(
    files: Vec<(PathBuf, String)>,
    main: &Path,
) -> Result<Config, ConfigError> {
    build(files, Vec::new(), main)
}

#[cfg(test)]
mod tests;
