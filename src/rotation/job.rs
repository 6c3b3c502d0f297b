//! One rotation under way: install, apply, verify, and put back what was
//! installed when a consumer does not verify.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{
    apply_and_verify, Installed, Masked, NewValue, Rollback, Rotation, RotationError, Served,
};
use crate::config::Config;
use crate::creds::hex_digest;
use crate::generations::{self, History, Info};
use crate::lock::Lock;
use crate::root::Root;
use crate::safefs::Dir;
use crate::sealed::{self, install};
use crate::systemd::Manager;

/// What to put back on failure.
struct Undo {
    name: String,
    /// The previous sealed bytes and what was recorded about them (`None`:
    /// it did not exist, remove it).
    previous: Option<(Vec<u8>, Info)>,
    /// The generation the previous value is kept as.
    generation: Option<u32>,
    /// The new sealed bytes and what is recorded about them: kept as a
    /// rejected generation when verification fails.
    new: (Vec<u8>, Info),
    /// The number the new value got when it became current.
    new_number: Option<u32>,
}

/// One rotation under way.
pub(super) struct Job<'a> {
    root: &'a Root,
    config: &'a Config,
    served: &'a Served,
    manager: Manager,
    held: &'a Lock,
    creds: Dir,
    /// What is installed so far, in order.
    undo: Vec<Undo>,
    /// Once the previous values were put back: what failed, per entry of
    /// `undo`.
    restored: Option<Vec<Option<String>>>,
}

impl<'a> Job<'a> {
    pub(super) fn new(
        root: &'a Root,
        config: &'a Config,
        served: &'a Served,
        manager: Manager,
        held: &'a Lock,
        creds: Dir,
    ) -> Job<'a> {
        Job {
            root,
            config,
            served,
            manager,
            held,
            creds,
            undo: Vec::new(),
            restored: None,
        }
    }

    /// Runs the rotation (see [`super::rotate`]); an error once a value is
    /// installed comes back [`RotationError::Undone`], every previous value
    /// put back first as far as it can be.
    pub(super) fn rotate(
        mut self,
        batch: Vec<NewValue>,
        stage_only: bool,
    ) -> Result<Rotation, RotationError> {
        match self.run(batch, stage_only) {
            Err(error) if !self.undo.is_empty() => {
                let failures = match self.restored.take() {
                    Some(f) => f,
                    None => self.restore(),
                };
                Err(RotationError::Undone {
                    error: Box::new(error),
                    undo: describe_undo(&self.undo, &failures),
                })
            }
            other => other,
        }
    }

    fn run(&mut self, batch: Vec<NewValue>, stage_only: bool) -> Result<Rotation, RotationError> {
        let (root, config, served) = (self.root, self.config, self.served);
        let (manager, held) = (self.manager, self.held);
        let creds = &self.creds;
        let mut human = String::new();
        let mut installed = Vec::new();
        for value in batch {
            let name = &value.name;
            let mut history =
                History::open(root, &config.loader.state_dir, name, true).map_err(|e| {
                    RotationError::Environment(format!("credential {name}: generations: {e}"))
                })?;
            let (generation, previous) = match sealed::current(creds, name)? {
                Some(previous) => {
                    let prev_digest = hex_digest(&previous);
                    let prev_info = history.info_for(&prev_digest).cloned();
                    let generation = history
                        .push(&previous, prev_info.clone(), config.loader.keep_generations)
                        .map_err(|e| {
                            RotationError::Environment(format!(
                                "credential {name}: keeping the previous generation: {e}"
                            ))
                        })?;
                    let info = prev_info.unwrap_or(Info {
                        digest: prev_digest,
                        ..Info::default()
                    });
                    (Some(generation), Some((previous, info)))
                }
                None => (None, None),
            };
            install(creds, name, &value.sealed)?;
            let new_number = history
                .set_current(value.info.clone())
                .map_err(|e| {
                    tracing::warn!("credential {name}: could not record its metadata: {e}")
                })
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
            installed.push(Installed {
                name: name.clone(),
                value: Masked {
                    masked: value.masked,
                    length: value.length,
                },
                previous_generation: generation,
                rejected_generation: None,
                consumers: served.consumer_names(name),
            });
        }
        let consumers: Vec<String> = installed
            .iter()
            .flat_map(|i| i.consumers.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut rotation = Rotation {
            credentials: installed,
            consumers,
            applied: false,
            units_checked: manager != Manager::Absent,
            apply: None,
            verification: Vec::new(),
            verified: None,
            rolled_back: false,
            rollback: None,
            human,
        };
        if stage_only || rotation.consumers.is_empty() {
            return Ok(rotation);
        }

        let names: Vec<&str> = self.undo.iter().map(|u| u.name.as_str()).collect();
        let verify = (rotation.consumers.as_slice(), names.as_slice());
        let outcome = apply_and_verify(root, config, served, manager, verify, held)?;
        rotation.human.push_str(&outcome.human("apply"));
        rotation.applied = true;
        rotation.verified = Some(outcome.ok());
        let ok = outcome.ok();
        rotation.apply = Some(outcome.report);
        rotation.verification = outcome.checks;
        if ok {
            rotation.human.push_str(if rotation.units_checked {
                "every consumer verified\n"
            } else {
                "no running systemd, so no unit was checked; every configured health check passed\n"
            });
            return Ok(rotation);
        }

        // Put every previous value back and deliver them again.
        let what: Vec<String> = self
            .undo
            .iter()
            .map(|u| match u.generation {
                Some(g) => format!("{} (generation {g})", u.name),
                None => format!("{} (new: removed again)", u.name),
            })
            .collect();
        let _ = writeln!(
            rotation.human,
            "verification failed: restoring the previous value of {}",
            what.join(", ")
        );
        let failures = self.restore();
        let failed = failures.iter().any(Option::is_some);
        self.restored = Some(failures);
        if failed {
            // `rotate` says which could not be put back.
            return Err(RotationError::Environment(
                "a consumer did not verify with the new value".into(),
            ));
        }
        // The rejected values are kept (marked) for a deliberate retry; the
        // generations of the values that are current again are dropped.
        let now = crate::state::now();
        for (u, i) in self.undo.iter().zip(rotation.credentials.iter_mut()) {
            let name = &u.name;
            let kept =
                History::open(root, &config.loader.state_dir, name, true).and_then(|mut h| {
                    h.keep_rejected(
                        &u.new.0,
                        u.new.1.clone(),
                        u.new_number,
                        u.generation,
                        now,
                        config.loader.keep_generations,
                    )
                });
            match kept {
                Ok(n) => {
                    i.previous_generation = None;
                    i.rejected_generation = Some(n);
                    let _ = writeln!(
                        rotation.human,
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
                        rotation.human,
                        "warning: credential {name}: could not keep the rejected value as a generation: {e}"
                    );
                }
            }
        }
        let again = apply_and_verify(root, config, served, manager, verify, held)?;
        rotation
            .human
            .push_str(&again.human("re-apply of the previous value"));
        let names: Vec<&str> = self.undo.iter().map(|u| u.name.as_str()).collect();
        let _ = writeln!(
            rotation.human,
            "rotation of {} rolled back{}",
            names.join(", "),
            if again.ok() {
                "; the consumers run the previous value again"
            } else {
                "; the previous value did not verify either: look at the consumers now"
            }
        );
        rotation.rolled_back = true;
        rotation.rollback = Some(Rollback {
            verified: again.ok(),
            apply: again.report,
            verification: again.checks,
        });
        Ok(rotation)
    }

    /// Puts the previous value of every installed credential back (removes
    /// the ones that did not exist before), last installed first, going on
    /// past a failure. Returns what failed, per entry of `undo`.
    fn restore(&self) -> Vec<Option<String>> {
        let mut failures = vec![None; self.undo.len()];
        for (u, failure) in self.undo.iter().zip(failures.iter_mut()).rev() {
            let name = &u.name;
            let done = match &u.previous {
                Some((bytes, info)) => install(&self.creds, name, bytes).map(|()| {
                    let state_dir = &self.config.loader.state_dir;
                    generations::record_current(self.root, state_dir, name, info.clone());
                }),
                None => sealed::remove(&self.creds, name),
            };
            if let Err(e) = done {
                *failure = Some(e.to_string());
            }
        }
        failures
    }
}

/// How putting the previous values back went, for an error message.
fn describe_undo(undo: &[Undo], failures: &[Option<String>]) -> String {
    let mut back = Vec::new();
    let mut parts = Vec::new();
    for (u, failure) in undo.iter().zip(failures) {
        let name = &u.name;
        match (failure, u.generation) {
            (None, _) => back.push(name.as_str()),
            (Some(e), Some(g)) => parts.push(format!(
                "putting the previous value of {name} back FAILED ({e}): it holds the new, \
                 unverified value; its previous value is generation {g} \
                 (`credloader rollback {name} --to {g}`)"
            )),
            (Some(e), None) => parts.push(format!(
                "removing the new credential {name} again FAILED ({e}): it holds the new, \
                 unverified value"
            )),
        }
    }
    if !back.is_empty() {
        parts.insert(
            0,
            format!(
                "the rotation was undone for {}: the previous value is back in place, \
                 not yet delivered (the next `credloader apply` delivers it)",
                back.join(", ")
            ),
        );
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn undo(name: &str, generation: Option<u32>) -> Undo {
        Undo {
            name: name.into(),
            previous: generation.map(|_| (b"old".to_vec(), Info::default())),
            generation,
            new: (b"new".to_vec(), Info::default()),
            new_number: None,
        }
    }

    #[test]
    fn an_undo_says_what_is_back_and_what_is_not() {
        let batch = [undo("A", Some(4)), undo("B", None), undo("C", Some(2))];
        let all = describe_undo(&batch, &[None, None, None]);
        assert!(all.contains("undone for A, B, C"), "{all}");
        assert!(!all.contains("FAILED"), "{all}");
        let some = describe_undo(&batch, &[Some("EIO".into()), Some("EROFS".into()), None]);
        assert!(some.starts_with("the rotation was undone for C:"), "{some}");
        assert!(
            some.contains("previous value of A back FAILED (EIO)")
                && some.contains("`credloader rollback A --to 4`"),
            "{some}"
        );
        assert!(
            some.contains("removing the new credential B again FAILED (EROFS)"),
            "{some}"
        );
    }
}
