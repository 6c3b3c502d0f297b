//! `credloader import`: the manual layout (plaintext env file + its
//! `EnvironmentFile=` drop-in, keys sealed by hand) to credloader, in one
//! command, in four stages:
//!
//! 1. [`preflight`] runs every check, the same for `--dry-run` and the real
//!    run, and [`classify`] sets each `--secret` against what is already
//!    sealed: new, the same value, the same value in need of a clean
//!    reseal, a truly different value, or a file that does not decrypt;
//! 2. [`plan`] turns that into a list of steps: seal, reseal, reuse or keep
//!    both values of each secret, write the config file, rewrite or remove
//!    the legacy drop-ins, apply, remove the plaintext;
//! 3. [`mod@describe`] tells that plan: a dry run stops there;
//! 4. [`execute`] does it under the apply lock, with an undo list for a
//!    failed apply, and the plan is told again in the past tense.

mod classify;
mod describe;
mod execute;
mod plan;
pub(super) mod preflight;

use thiserror::Error;

use super::{CommandError, Context, Output};
use crate::apply;
use crate::chain::Chain;
use crate::cli::ImportArgs;
use crate::config::Loader;
use crate::rotation::Served;
use crate::safefs::{Dir, DirPolicy, FsError};
use crate::sealed::{creds_dir, StoreError};
use describe::{describe, Tense};
use plan::Plan;

pub fn run(ctx: &Context, args: ImportArgs) -> Result<Output, CommandError> {
    let prep = preflight::prepare(ctx, &args)?;
    // The real run plans under the lock, so nothing changes in between.
    let held = if args.dry_run {
        None
    } else {
        Some(apply::lock(&prep.config, &ctx.root)?.1)
    };
    let served = Served::load(&ctx.root, &prep.config)?;
    let creds = open_creds(ctx, &prep.config.loader, args.dry_run)?;
    let secrets = plan::secrets(&args, &prep, &served, creds.as_ref())?;
    let plan = Plan::new(&prep, secrets);
    let Some(held) = held else {
        return Ok(describe(&args, &prep, &plan, Tense::Would));
    };
    let creds = creds.expect("opened for a real run");
    let done = execute::execute(ctx, args.key, &prep, &plan, &creds, &held)?;
    Ok(describe(&args, &prep, &plan, Tense::Did(&done)))
}

/// Why `import` stopped.
#[derive(Debug, Error)]
pub enum ImportError {
    /// It refused before changing anything (exit 2).
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    /// A file or directory it reads or writes (exit 3).
    #[error(transparent)]
    Files(FsError),
    /// The env file's value and the sealed one differ, and no `--prefer`
    /// says which goes live (exit 2): each conflict, said.
    #[error(
        "{}; keep both and choose which one is live: `--prefer env-file` seals the env file's \
         value and keeps the sealed one as a generation, `--prefer sealed` keeps the sealed \
         value and the env file's as a generation (until now the service read the env \
         file's); `credloader rollback NAME` later puts the other one back. Nothing was changed",
        conflicts.join("; ")
    )]
    Conflicts {
        /// One line per secret whose two values differ.
        conflicts: Vec<String>,
    },
    /// The run failed, and putting back what it changed failed too (exit
    /// 3). Both with their sources: this message combines them.
    #[error(
        "{}; putting back what the import changed failed too: {}",
        Chain(error.as_ref()),
        Chain(undo.as_ref())
    )]
    UndoFailed {
        /// What stopped the run.
        error: Box<CommandError>,
        /// What stopped the undo.
        undo: Box<CommandError>,
    },
}

impl From<preflight::PreflightError> for CommandError {
    fn from(e: preflight::PreflightError) -> Self {
        ImportError::Preflight(e).into()
    }
}

impl ImportError {
    /// 2 for conflicting values, else 3.
    pub(super) fn exit_code(&self) -> u8 {
        match self {
            ImportError::Conflicts { .. } | ImportError::Preflight(_) => crate::exit::USAGE,
            _ => crate::exit::ENVIRONMENT,
        }
    }
}

/// The creds dir: the real run creates it if need be, a dry run only
/// opens it if it exists.
fn open_creds(ctx: &Context, loader: &Loader, dry_run: bool) -> Result<Option<Dir>, CommandError> {
    if !dry_run {
        return Ok(Some(creds_dir(&ctx.root, loader)?));
    }
    match Dir::open(&ctx.root, &loader.creds_dir, DirPolicy::EXISTING) {
        Ok(d) => Ok(Some(d)),
        Err(FsError::Os {
            errno: nix::errno::Errno::ENOENT,
            ..
        }) => Ok(None),
        Err(error) => Err(StoreError::Dir { error }.into()),
    }
}
