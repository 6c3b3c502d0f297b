//! What a mistake in the configuration says, and where it is.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

use crate::escape;

/// Where a piece of configuration came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The file, as the running system names it.
    pub file: PathBuf,
    /// Its line (1-based).
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", escape::Shown(&self.file), self.line)
    }
}

/// One mistake in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where it is.
    pub origin: Origin,
    /// What is wrong, and the fix where there is one.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, escape::text(&self.message))
    }
}

/// Why the configuration as a whole cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A configuration file could not be read.
    #[error("cannot read {}: {error}", escape::Shown(path))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why. In the text, so not also its source: an error's sources
        /// are printed after it.
        error: std::io::Error,
    },
    /// Neither the main file nor any drop-in exists.
    #[error(
        "no configuration: neither {} nor any {}/*.toml exists; \
         create one (see docs/configuration.md) or pass --config",
        escape::Shown(main),
        escape::Shown(dropins)
    )]
    Missing {
        /// The main file.
        main: PathBuf,
        /// Its drop-in directory.
        dropins: PathBuf,
    },
    /// The main file, or a drop-in that may set `[loader]`, is not valid TOML.
    #[error("{}:{line}: {}", escape::Shown(path), escape::text(message))]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line of the mistake.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Mistakes that leave no configuration to work with, all of them.
    #[error("{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Each mistake, with its file and line.
        problems: Vec<Problem>,
    },
    /// A file or directory that others than root could have written, where
    /// skipping it is not safe.
    #[error(
        "{}: refusing this configuration: {}",
        escape::Shown(path),
        escape::text(problem)
    )]
    Unsafe {
        /// The file or directory.
        path: PathBuf,
        /// Why it is refused.
        problem: String,
    },
}
