//! One rotation under way, as a state machine: each [`State`] has one
//! handler, which does its work and names the next state.
//!
//! ```text
//! Install ─► Apply ─► Commit ──────────────────────────────► Done
//!    │          └───► Restore ─► MarkRejected ─► Reapply ──► Done
//!    └──► Done  (staged only, or no consumer)
//! ```
//!
//! Every value installed is on the [`UndoList`]; an error once there is
//! anything on it puts every previous value back before it is returned
//! ([`RotationError::Undone`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::undo::{Sealed, Undo, UndoList};
use super::{
    apply_and_verify, Installed, Masked, NewValue, Rollback, Rotation, RotationError, Served,
    Verified,
};
use crate::config::Config;
use crate::creds::hex_digest;
use crate::generations::{History, Info};
use crate::lock::Lock;
use crate::root::Root;
use crate::safefs::Dir;
use crate::sealed::{self, creds_dir, install};
use crate::systemd::Manager;

/// Where a rotation stands.
enum State {
    /// Install every new value, keeping what each replaces as a
    /// generation; then apply, unless staging only or nobody consumes them.
    Install {
        batch: Vec<NewValue>,
        stage_only: bool,
    },
    /// Apply to the union of the consumers and verify each.
    Apply,
    /// Every consumer verified: the new values stay.
    Commit,
    /// A consumer did not verify: put every previous value back.
    Restore,
    /// Keep the rejected values as marked generations, for a retry.
    MarkRejected,
    /// Deliver the previous values again, and verify them.
    Reapply,
    Done,
}

/// One rotation under way.
struct Job<'a> {
    root: &'a Root,
    config: &'a Config,
    served: &'a Served,
    manager: Manager,
    held: &'a Lock,
    creds: Dir,
    undo: UndoList,
}

/// Installs every value of `batch` (keeping what each replaces as a
/// generation), then — unless `stage_only` — applies to the union of their
/// consumers and verifies each; on a failed verification every credential
/// of the batch gets its previous value back (a credential that did not
/// exist before is removed again) and is applied again.
///
/// An error once a new value is installed (an apply that cannot run, a
/// previous value that cannot be put back...) is never left half done:
/// every previous value is put back first, as far as it can be, and the
/// error says how that went ([`RotationError::Undone`]).
///
/// The caller holds the apply lock (`held`) from before it read the current
/// values until this returns.
pub fn rotate(
    root: &Root,
    config: &Config,
    manager: Manager,
    batch: Vec<NewValue>,
    stage_only: bool,
    held: &Lock,
) -> Result<Rotation, RotationError> {
    let creds = creds_dir(root, &config.loader)?;
    let served = Served::load(root, config)?;
    let mut job = Job {
        root,
        config,
        served: &served,
        manager,
        held,
        creds,
        undo: UndoList::default(),
    };
    match job.run(State::Install { batch, stage_only }) {
        Err(error) if !job.undo.is_empty() => {
            let state_dir = &config.loader.state_dir;
            let undo = job.undo.undone(root, state_dir, &job.creds);
            Err(RotationError::Undone {
                error: Box::new(error),
                undo,
            })
        }
        other => other,
    }
}

impl Job<'_> {
    /// Runs the machine from `state` to [`State::Done`].
    fn run(&mut self, mut state: State) -> Result<Rotation, RotationError> {
        let mut r = Rotation::new(self.manager != Manager::Absent);
        loop {
            state = match state {
                State::Install { batch, stage_only } => self.install(batch, stage_only, &mut r)?,
                State::Apply => self.apply(&mut r)?,
                State::Commit => self.commit(&mut r),
                State::Restore => self.restore(&mut r)?,
                State::MarkRejected => self.mark_rejected(&mut r),
                State::Reapply => self.reapply(&mut r)?,
                State::Done => return Ok(r),
            };
        }
    }

    fn install(
        &mut self,
        batch: Vec<NewValue>,
        stage_only: bool,
        r: &mut Rotation,
    ) -> Result<State, RotationError> {
        for value in batch {
            let installed = self.install_one(value, &mut r.human)?;
            r.credentials.push(installed);
        }
        r.consumers = r
            .credentials
            .iter()
            .flat_map(|i| i.consumers.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if stage_only || r.consumers.is_empty() {
            return Ok(State::Done);
        }
        Ok(State::Apply)
    }

    /// Installs one new value; what it replaces is kept as a generation and
    /// goes on the undo list.
    fn install_one(
        &mut self,
        value: NewValue,
        human: &mut String,
    ) -> Result<Installed, RotationError> {
        let name = &value.name;
        let state_dir = &self.config.loader.state_dir;
        let mut history = History::open(self.root, state_dir, name, true).map_err(|e| {
            RotationError::Environment(format!("credential {name}: generations: {e}"))
        })?;
        let (generation, previous) = self.keep_previous(&mut history, name)?;
        install(&self.creds, name, &value.sealed)?;
        let new_number = history
            .set_current(value.info.clone())
            .map_err(|e| tracing::warn!("credential {name}: could not record its metadata: {e}"))
            .ok();
        let _ = writeln!(
            human,
            "credential {name}: new value {} ({} bytes) installed; {}",
            value.masked,
            value.length,
            match generation {
                Some(g) => format!("previous value kept as generation {g}"),
                None => "it did not exist before".into(),
            }
        );
        self.undo.push(Undo {
            name: name.clone(),
            previous,
            generation,
            new: (value.sealed, value.info),
            new_number,
        });
        Ok(Installed {
            consumers: self.served.consumer_names(name),
            name: value.name,
            value: Masked {
                masked: value.masked,
                length: value.length,
            },
            previous_generation: generation,
            rejected_generation: None,
        })
    }

    /// Keeps the current value of `name`, if any, as a generation: its
    /// number, and its sealed bytes with what is known of them.
    fn keep_previous(
        &self,
        history: &mut History,
        name: &str,
    ) -> Result<(Option<u32>, Option<Sealed>), RotationError> {
        let Some(previous) = sealed::current(&self.creds, name)? else {
            return Ok((None, None));
        };
        let digest = hex_digest(&previous);
        let known = history.info_for(&digest).cloned();
        let keep = self.config.loader.keep_generations;
        let generation = history.push(&previous, known.clone(), keep).map_err(|e| {
            RotationError::Environment(format!(
                "credential {name}: keeping the previous generation: {e}"
            ))
        })?;
        let info = known.unwrap_or(Info {
            digest,
            ..Info::default()
        });
        Ok((Some(generation), Some((previous, info))))
    }

    fn apply(&mut self, r: &mut Rotation) -> Result<State, RotationError> {
        let outcome = self.apply_and_verify(&r.consumers)?;
        r.human.push_str(&outcome.human("apply"));
        let ok = outcome.ok();
        r.applied = true;
        r.verified = Some(ok);
        r.apply = Some(outcome.report);
        r.verification = outcome.checks;
        Ok(if ok { State::Commit } else { State::Restore })
    }

    fn commit(&mut self, r: &mut Rotation) -> State {
        r.human.push_str(if r.units_checked {
            "every consumer verified\n"
        } else {
            "no running systemd, so no unit was checked; every configured health check passed\n"
        });
        State::Done
    }

    fn restore(&mut self, r: &mut Rotation) -> Result<State, RotationError> {
        let what: Vec<String> = self.undo.entries().iter().map(Undo::describe).collect();
        let _ = writeln!(
            r.human,
            "verification failed: restoring the previous value of {}",
            what.join(", ")
        );
        let state_dir = &self.config.loader.state_dir;
        if !self.undo.restore(self.root, state_dir, &self.creds) {
            // `rotate` says which could not be put back.
            return Err(RotationError::Environment(
                "a consumer did not verify with the new value".into(),
            ));
        }
        Ok(State::MarkRejected)
    }

    /// The rejected values are kept (marked) for a deliberate retry; the
    /// generations of the values that are current again are dropped.
    fn mark_rejected(&mut self, r: &mut Rotation) -> State {
        let now = crate::state::now();
        let (state_dir, keep) = (
            &self.config.loader.state_dir,
            self.config.loader.keep_generations,
        );
        for (u, i) in self.undo.entries().iter().zip(r.credentials.iter_mut()) {
            let name = &u.name;
            match u.keep_rejected(self.root, state_dir, now, keep) {
                Ok(n) => {
                    i.previous_generation = None;
                    i.rejected_generation = Some(n);
                    let _ = writeln!(
                        r.human,
                        "credential {name}: the rejected value is kept as generation {n}{}; \
                         retry it once the cause is fixed with `credloader rollback {name} --to {n}`",
                        match u.generation {
                            Some(g) =>
                                format!(" (generation {g} is the current value again and was dropped)"),
                            None => String::new(),
                        }
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        r.human,
                        "warning: credential {name}: could not keep the rejected value as a generation: {e}"
                    );
                }
            }
        }
        State::Reapply
    }

    fn reapply(&mut self, r: &mut Rotation) -> Result<State, RotationError> {
        let again = self.apply_and_verify(&r.consumers)?;
        r.human
            .push_str(&again.human("re-apply of the previous value"));
        let _ = writeln!(
            r.human,
            "rotation of {} rolled back{}",
            self.undo.names().join(", "),
            if again.ok() {
                "; the consumers run the previous value again"
            } else {
                "; the previous value did not verify either: look at the consumers now"
            }
        );
        r.rolled_back = true;
        r.rollback = Some(Rollback {
            verified: again.ok(),
            apply: again.report,
            verification: again.checks,
        });
        Ok(State::Done)
    }

    /// Applies to `consumers` and verifies them, for the credentials on
    /// the undo list.
    fn apply_and_verify(&self, consumers: &[String]) -> Result<Verified, RotationError> {
        let names = self.undo.names();
        let (config, served) = (self.config, self.served);
        let what = (consumers, names.as_slice());
        apply_and_verify(self.root, config, served, self.manager, what, self.held)
    }
}
