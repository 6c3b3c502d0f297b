//! The real run: the plan's steps in order, under the apply lock, with an
//! undo list. An error, or a failed apply, puts back
//! what the run changed (the sealed credentials stay, each value it
//! replaced kept as a generation) and the plaintext stays.

use std::ffi::OsStr;
use std::path::Path;

use super::super::common::GenerationsError;
use super::super::value::seal;
use super::super::{CommandError, Context};
use super::plan::{Plan, SecretPlan, Step};
use super::preflight::Prepared;
use super::ImportError;
use crate::apply::{self, Options, Report};
use crate::config::dropin_dir_for;
use crate::creds::hex_digest;
use crate::generations::record_current;
use crate::generations::History;
use crate::import::{shred_and_remove, DropinChange, LegacyDropin};
use crate::lock::Lock;
use crate::root::Root;
use crate::safefs::{self, Dir, DirPolicy, FsError, Owner};
use crate::sealed::{current as current_sealed, install};
use crate::secret::Secret;
use crate::systemd::Manager;
use crate::systemd_creds::Key;

/// What the real run did, for the description.
#[derive(Default)]
pub struct Done {
    /// Per secret, in order: the generation the value it replaced (or the
    /// env file's other value) is kept as.
    pub generations: Vec<Option<u32>>,
    /// Apply's report, once it ran.
    pub apply: Option<Report>,
    /// The plaintext's removal, once tried (not after a failed apply).
    pub shred: Option<Result<(), FsError>>,
}

/// How to undo a step that was done.
enum Undo<'p> {
    /// The config file was written: remove it (best-effort).
    RemoveConfig { dir: Dir, name: &'p OsStr },
    /// A legacy drop-in was rewritten or removed: put it back.
    RestoreDropin(&'p LegacyDropin),
}

/// A real run under way.
struct Run<'p> {
    ctx: &'p Context,
    prep: &'p Prepared,
    creds: &'p Dir,
    key: Key,
    held: &'p Lock,
    undo: Vec<Undo<'p>>,
    done: Done,
}

/// Executes `plan` under the apply lock (`held`).
pub fn execute<'p>(
    ctx: &'p Context,
    key: Key,
    prep: &'p Prepared,
    plan: &Plan<'p>,
    creds: &'p Dir,
    held: &'p Lock,
) -> Result<Done, CommandError> {
    let mut run = Run {
        ctx,
        prep,
        creds,
        key,
        held,
        undo: Vec::new(),
        done: Done::default(),
    };
    for step in &plan.steps {
        match run.step(step) {
            Ok(true) => {}
            Ok(false) => break,
            // Whatever stopped the run, the unit must keep the way it got
            // its keys before: put back what was changed.
            Err(e) => return Err(run.undo_after(e)),
        }
    }
    Ok(run.done)
}

fn environment(e: FsError) -> CommandError {
    ImportError::Files(e).into()
}

/// `value` of credential `name` could not be kept as a generation.
fn keeping<'a>(name: &'a str, value: &'static str) -> impl FnOnce(FsError) -> CommandError + 'a {
    move |error| {
        GenerationsError::Keep {
            name: name.to_string(),
            value,
            error,
        }
        .into()
    }
}

impl<'p> Run<'p> {
    /// Does one step; false when apply failed (and the run was undone).
    fn step(&mut self, step: &Step<'p>) -> Result<bool, CommandError> {
        match *step {
            Step::Secret(ref p) => {
                let generation = self.seal(p)?;
                self.done.generations.push(generation);
            }
            Step::Static(_) => {} // written with the config file
            Step::WriteConfig { path, text } => self.write_config(path, text)?,
            Step::LegacyDropins(dropins) => {
                for d in dropins {
                    change_dropin(self.ctx, d, false)?;
                    self.undo.push(Undo::RestoreDropin(d));
                }
            }
            Step::Apply => return self.apply(),
            Step::Shred { path } => {
                self.done.shred = Some(shred_and_remove(&self.ctx.root, path));
            }
        }
        Ok(true)
    }

    /// Seals what goes live and keeps what it replaces (and the other
    /// value of a kept pair) as a generation. A generation that cannot be
    /// kept stops the run before the file it would keep is replaced.
    fn seal(&self, p: &SecretPlan) -> Result<Option<u32>, CommandError> {
        let (root, loader, name) = (&self.ctx.root, &self.prep.config.loader, &p.key);
        let mut history = History::open(root, &loader.state_dir, name, true)
            .map_err(GenerationsError::list(name))?;
        let mut generation = None;
        if let Some(live) = &p.live {
            generation = self.seal_live(name, live, &mut history)?;
        }
        if let Some(other) = &p.other {
            generation = Some(self.keep_other(name, other)?);
        }
        Ok(generation)
    }

    /// Seals `live` and installs it; the sealed file it replaces becomes a
    /// generation.
    fn seal_live(
        &self,
        name: &str,
        live: &Secret,
        history: &mut History,
    ) -> Result<Option<u32>, CommandError> {
        let loader = &self.prep.config.loader;
        let (sealed, info) = seal(name, live, self.key, None)?;
        let mut generation = None;
        if let Some(old) = current_sealed(self.creds, name)? {
            let known = history.info_for(&hex_digest(&old)).cloned();
            generation = Some(
                history
                    .push(&old, known, loader.keep_generations)
                    .map_err(keeping(name, "the sealed value"))?,
            );
        }
        install(self.creds, name, &sealed)?;
        record_current(&self.ctx.root, &loader.state_dir, name, info);
        Ok(generation)
    }

    /// Seals the env file's value, which does not go live, as a generation.
    fn keep_other(&self, name: &str, other: &Secret) -> Result<u32, CommandError> {
        let loader = &self.prep.config.loader;
        let (sealed, info) = seal(name, other, self.key, None)?;
        let mut history = History::open(&self.ctx.root, &loader.state_dir, name, true)
            .map_err(GenerationsError::list(name))?;
        history
            .push(&sealed, Some(info), loader.keep_generations)
            .map_err(keeping(name, "the env file's value"))
    }

    /// Writes the service's config file (creating its directory).
    fn write_config(&mut self, path: &'p Path, text: &str) -> Result<(), CommandError> {
        let conf_dir = dropin_dir_for(&self.ctx.config_path().0);
        let dir =
            Dir::open(&Root::live(), &conf_dir, DirPolicy::create(0o755)).map_err(environment)?;
        let name = OsStr::new(path.file_name().expect("has a name"));
        dir.write_atomic(name, text.as_bytes(), Owner::ROOT_0644)
            .map_err(environment)?;
        self.undo.push(Undo::RemoveConfig { dir, name });
        Ok(())
    }

    /// Applies the imported service; if that fails, undoes the run.
    fn apply(&mut self) -> Result<bool, CommandError> {
        let opts = Options {
            dry_run: false,
            only: vec![self.prep.service.clone()],
            restart: true,
            jobs: 0,
        };
        let (config, root) = (&self.prep.config, &self.ctx.root);
        let report = apply::apply_locked(config, root, self.ctx.manager(), &opts, self.held)?;
        let ok = report.all_ok();
        self.done.apply = Some(report);
        if !ok {
            self.undo()?;
        }
        Ok(ok)
    }

    /// Undoes what was done after `e` stopped the run; `e` is what the
    /// operator is told, with a failed undo added to it.
    fn undo_after(&mut self, e: CommandError) -> CommandError {
        match self.undo() {
            Ok(()) => e,
            Err(u) => ImportError::UndoFailed {
                error: Box::new(e),
                undo: Box::new(u),
            }
            .into(),
        }
    }

    /// Undoes what was done, newest first, and has PID 1 reload.
    /// Every step is undone even when one cannot be: the first failure is
    /// returned once all were tried.
    fn undo(&mut self) -> Result<(), CommandError> {
        let mut failed = Ok(());
        while let Some(undo) = self.undo.pop() {
            let r = match undo {
                Undo::RestoreDropin(d) => change_dropin(self.ctx, d, true),
                Undo::RemoveConfig { dir, name } => {
                    let _ = dir.remove(name);
                    Ok(())
                }
            };
            if failed.is_ok() {
                failed = r;
            }
        }
        if self.ctx.manager() == Manager::Live {
            let _ = self.ctx.manager().daemon_reload();
        }
        failed
    }
}

/// Rewrites or removes a legacy drop-in (`restore`: puts it back).
fn change_dropin(ctx: &Context, d: &LegacyDropin, restore: bool) -> Result<(), CommandError> {
    let (dir, name) = safefs::split(&d.path);
    let dir = Dir::open(&ctx.root, dir, DirPolicy::EXISTING).map_err(environment)?;
    let r = match (restore, &d.change) {
        (true, _) => dir.write_atomic(name, d.text.as_bytes(), Owner::ROOT_0644),
        (false, DropinChange::Rewrite(t)) => dir.write_atomic(name, t.as_bytes(), Owner::ROOT_0644),
        (false, DropinChange::Remove) => dir.remove(name),
    };
    r.map_err(environment)
}
