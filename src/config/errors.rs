//! What a mistake in the configuration says, and where it is.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

use crate::escape;

/// Where a piece of configuration came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
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
    pub origin: Origin,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, escape::text(&self.message))
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", escape::Shown(path))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no configuration: neither {} nor any {}/*.toml exists; \
         create one (see docs/configuration.md) or pass --config",
        escape::Shown(main),
        escape::Shown(dropins)
    )]
    Missing { main: PathBuf, dropins: PathBuf },
    #[error("{}:{line}: {}", escape::Shown(path), escape::text(message))]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
    #[error(
        "{}: refusing this configuration: {}",
        escape::Shown(path),
        escape::text(problem)
    )]
    Unsafe { path: PathBuf, problem: String },
}
