//! The rotation core that `rotate` and `sync` share: install new sealed
//! values for one or many credentials under one held apply lock, keep each
//! replaced value as a generation, apply once to the union of their
//! consumers, verify every consumer (its unit active again, and restarted
//! when a restart was queued, on a live system; its health check), and put
//! back the previous value of EVERY credential of the batch when any
//! verification fails.
//!
//! Sealing happens before (the caller owns where values come from); nothing
//! here sees plaintext except the health check's environment, decrypted
//! again from the sealed files.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::apply::{self, Options, Outcome, Report};
use crate::config::{Config, Delivery, Loader, Service, Source};
use crate::creds::{hex_digest, Store};
use crate::escape::text;
use crate::generations::{History, Info};
use crate::health::{self, RunAs};
use crate::lock::Lock;
use crate::overrides;
use crate::root::Root;
use crate::safefs::{Dir, DirPolicy, FsError, Owner};
use crate::secret::Secret;
use crate::state::State;
use crate::systemd::Manager;
use crate::systemd_creds;
use crate::users::Accounts;

/// Why a rotation could not run at all (a failed verification is not an
/// error: it is a rollback, reported in [`Rotation`]).
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// Sealed files or generations could not be read or written.
    #[error("{0}")]
    Environment(String),
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    /// It failed after new values were installed; `undo` says how putting
    /// the previous values back went.
    #[error("{error}; {undo}")]
    Undone {
        error: Box<RotationError>,
        undo: String,
    },
}

/// The services apply serves, by name: an owned [`crate::state::Served`]
/// (the configured ones and, for a service whose config file is broken or
/// refused, the definition it was last applied from), read under the lock.
/// A new value is validated for, applied to and verified on all of them:
/// apply delivers it to each anyway.
pub struct Served {
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

/// One credential's new value, already sealed.
pub struct NewValue {
    pub name: String,
    pub sealed: Vec<u8>,
    /// What to record about `sealed` (digest, key, not-after).
    pub info: Info,
    /// The value masked, and its length: for reports only.
    pub masked: String,
    pub length: usize,
}

/// What happened to one credential of the batch.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub name: String,
    pub value: Masked,
    /// The generation the replaced value is kept as; `None` when the
    /// credential did not exist before (a first `sync`), or when the
    /// rotation was rolled back (that value is current again, and its
    /// generation was dropped rather than kept as a duplicate).
    pub previous_generation: Option<u32>,
    /// After a rollback: the generation the rejected new value is kept as,
    /// marked rejected, for a deliberate retry (`rollback --to N`).
    pub rejected_generation: Option<u32>,
    /// Its consumers, sorted.
    pub consumers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Masked {
    pub masked: String,
    pub length: usize,
}

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

/// How a batch went; serializable, never holds a value.
#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    pub credentials: Vec<Installed>,
    /// The union of the consumers, sorted.
    pub consumers: Vec<String>,
    pub applied: bool,
    /// Whether units were looked at (false under `--root` / without systemd).
    pub units_checked: bool,
    pub apply: Option<Report>,
    pub verification: Vec<Check>,
    /// `None` when nothing was applied.
    pub verified: Option<bool>,
    pub rolled_back: bool,
    pub rollback: Option<Rollback>,
    /// The human account of it, line by line.
    #[serde(skip)]
    pub human: String,
}

/// The re-apply of the previous values after a failed verification.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    pub apply: Report,
    pub verification: Vec<Check>,
    pub verified: bool,
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
        undo: Vec::new(),
        restored: None,
    };
    match job.run(batch, stage_only) {
        Err(error) if !job.undo.is_empty() => {
            let failures = match job.restored.take() {
                Some(f) => f,
                None => job.restore(),
            };
            Err(RotationError::Undone {
                error: Box::new(error),
                undo: describe_undo(&job.undo, &failures),
            })
        }
        other => other,
    }
}

/// One rotation under way.
struct Job<'a> {
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

impl Job<'_> {
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
            let (generation, previous) = match current_sealed(creds, name)? {
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
                consumers: served.consumers(name).map(|s| s.name.clone()).collect(),
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
                    let recorded =
                        History::open(self.root, &self.config.loader.state_dir, name, true)
                            .and_then(|mut h| h.set_current(info.clone()));
                    if let Err(e) = recorded {
                        tracing::warn!("credential {name}: could not record its metadata: {e}");
                    }
                }),
                None => self
                    .creds
                    .remove(&Store::file_name(name))
                    .map_err(|e| RotationError::Environment(format!("credential {name}: {e}"))),
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

/// The creds dir, created root 0700 if missing.
pub fn creds_dir(root: &Root, loader: &Loader) -> Result<Dir, RotationError> {
    Dir::open(root, &loader.creds_dir, DirPolicy::create(0o700))
        .map_err(|e| RotationError::Environment(format!("creds dir: {e}")))
}

/// Writes `NAME.cred` atomically, root:root 0600.
pub fn install(creds: &Dir, name: &str, sealed: &[u8]) -> Result<(), RotationError> {
    let file = Store::file_name(name);
    let _ = creds.remove_stale_temps(&file);
    creds
        .write_atomic(&file, sealed, Owner::ROOT_0600)
        .map_err(|e| RotationError::Environment(format!("credential {name}: {e}")))
}

/// The sealed bytes of `name` as they are now, if any.
pub fn current_sealed(creds: &Dir, name: &str) -> Result<Option<Vec<u8>>, RotationError> {
    creds
        .read(
            OsStr::new(&format!("{name}.cred")),
            systemd_creds::MAX_SEALED,
        )
        .map(|o| o.map(|(b, _)| b))
        .map_err(|e| RotationError::Environment(format!("credential {name}: {e}")))
}

/// What apply-then-verify found.
pub struct Verified {
    pub report: Report,
    pub checks: Vec<Check>,
}

impl Verified {
    /// Every consumer was delivered to and verified. A consumer served from
    /// its last good definition (its config file is broken) carries that
    /// as an error in the report, but counts when its delivery and checks
    /// passed: it gets the value either way, and a rollback would not mend
    /// its file.
    ///
    /// A file whose services cannot be named ([`Report::config_problems`])
    /// does not fail it either: every service it may define that was ever
    /// applied is among the consumers (served from its last good
    /// definition), and the problem is said in [`Verified::human`].
    pub fn ok(&self) -> bool {
        self.report
            .services
            .iter()
            .all(|s| s.outcome != Outcome::Failed)
            && self.checks.iter().all(|c| c.ok)
    }

    pub fn human(&self, what: &str) -> String {
        let mut out = String::new();
        for s in &self.report.services {
            let _ = writeln!(
                out,
                "{what}: {} ({}): {}{}",
                text(&s.service),
                text(&s.unit),
                match s.outcome {
                    Outcome::Unchanged => "unchanged",
                    Outcome::Updated => "updated",
                    Outcome::Failed => "FAILED",
                },
                s.action
                    .as_ref()
                    .map(|a| format!(", {a} queued"))
                    .unwrap_or_default()
            );
            if let Some(e) = &s.error {
                let _ = writeln!(out, "  error: {}", text(e));
            }
        }
        for p in &self.report.config_problems {
            let _ = writeln!(out, "config error: {p}");
        }
        for w in &self.report.warnings {
            let _ = writeln!(out, "warning: {}", text(w));
        }
        for c in &self.checks {
            out.push_str(&c.describe());
        }
        out
    }
}

impl Check {
    /// How it went, with the check's last lines when it failed.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "verify {}: unit {}; health check {}{}\n",
            text(&self.service),
            text(&self.unit_state),
            self.health
                .as_ref()
                .map(|h| h.describe())
                .unwrap_or_else(|| "none configured".into()),
            if self.ok { "" } else { "  => FAILED" }
        );
        for o in &self.overridden {
            let _ = writeln!(out, "  overridden: {o}");
        }
        let lines = self.health.as_ref().map(|h| h.output()).unwrap_or_default();
        if !lines.is_empty() {
            out.push_str("  its last lines of output (secrets masked):\n");
            for l in lines {
                let _ = writeln!(out, "  | {l}");
            }
        }
        out
    }

    /// The descriptions of the checks that failed (what `-q` shows).
    pub fn failures(checks: &[Check]) -> Vec<String> {
        checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.describe().trim_end().to_string())
            .collect()
    }
}

/// One consumer's verification.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub service: String,
    pub unit: String,
    /// What was seen of the unit ("active, restarted", "not checked: ...").
    pub unit_state: String,
    pub unit_ok: bool,
    pub health: Option<health::Outcome>,
    /// What in its unit wins over credloader's env file (it then does not
    /// get the new value, so it does not verify).
    pub overridden: Vec<String>,
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct UnitSnapshot {
    active: String,
    main_pid: String,
    started: String,
}

fn snapshot(manager: Manager, unit: &str) -> Option<UnitSnapshot> {
    Some(UnitSnapshot {
        active: manager.property(unit, "ActiveState")?,
        main_pid: manager.property(unit, "MainPID")?,
        started: manager.property(unit, "ExecMainStartTimestampMonotonic")?,
    })
}

/// Applies to `only` (restarting what changed), then verifies each of them:
/// its unit is active again (and restarted, when a restart was queued), its
/// health check passes, and nothing in its unit takes from it a variable
/// that carries one of `credentials` (the ones that changed).
pub fn apply_and_verify(
    root: &Root,
    config: &Config,
    served: &Served,
    manager: Manager,
    (only, credentials): (&[String], &[&str]),
    held: &Lock,
) -> Result<Verified, RotationError> {
    let before: BTreeMap<String, Option<UnitSnapshot>> = only
        .iter()
        .map(|s| {
            let unit = &served.services[s].unit;
            (s.clone(), snapshot(manager, unit))
        })
        .collect();
    let opts = Options {
        dry_run: false,
        only: only.to_vec(),
        restart: true,
        jobs: 0,
    };
    let report = apply::apply_locked(config, root, manager, &opts, held)?;
    // Something loaded after its env file that wins over it: the consumer
    // keeps the value it had, whatever its unit and health check say.
    let consumers: Vec<&Service> = report
        .services
        .iter()
        .map(|s| &served.services[&s.service])
        .collect();
    let mut overridden = overrides::find(manager, root, &config.loader, &consumers).into_iter();
    let mut checks = Vec::new();
    for s in &report.services {
        let service = &served.services[&s.service];
        let (unit_state, unit_ok) = if s.outcome == Outcome::Failed {
            ("not checked: the apply failed for it".to_string(), false)
        } else {
            wait_unit(
                manager,
                service,
                before.get(&s.service).cloned().flatten(),
                s.action.is_some(),
            )
        };
        let health = if s.outcome == Outcome::Failed {
            None
        } else {
            service
                .health_check
                .as_ref()
                .map(|argv| run_health(root, config, manager, service, argv))
        };
        let carried = carriers(service, credentials);
        let overridden: Vec<String> = overridden
            .next()
            .unwrap_or_default()
            .iter()
            .filter(|o| o.takes(service).iter().any(|v| carried.contains(v)))
            .map(|o| o.problem(root, service))
            .collect();
        let ok = unit_ok && health.as_ref().is_none_or(|h| h.passed()) && overridden.is_empty();
        if let (Some(h), false) = (&health, root.is_offline()) {
            journal_failed_check(service, h);
        }
        checks.push(Check {
            service: s.service.clone(),
            unit: s.unit.clone(),
            unit_state,
            unit_ok,
            health,
            overridden,
            ok,
        });
    }
    Ok(Verified { report, checks })
}

/// Keeps a failed health check, with its masked output, in the journal.
fn journal_failed_check(service: &Service, health: &health::Outcome) {
    if health.passed() {
        return;
    }
    let mut message = format!(
        "service {} ({}): health check {}",
        text(&service.name),
        text(&service.unit),
        health.describe()
    );
    for line in health.output() {
        let _ = write!(message, "\n| {line}");
    }
    crate::logging::journal(libsystemd::logging::Priority::Warning, &message);
}

/// The variables of `service` that carry one of `credentials`.
fn carriers(service: &Service, credentials: &[&str]) -> Vec<String> {
    service
        .vars
        .iter()
        .filter(|v| matches!(&v.source, Source::Credential(c) if credentials.contains(&c.as_str())))
        .map(|v| v.name.clone())
        .collect()
}

/// Waits (up to the service's health timeout) for its unit to be active
/// and, if a restart was queued, to have restarted.
fn wait_unit(
    manager: Manager,
    service: &Service,
    before: Option<UnitSnapshot>,
    restarted: bool,
) -> (String, bool) {
    if manager == Manager::Absent {
        return (
            "not checked: no running systemd (--root or not booted)".into(),
            true,
        );
    }
    let unit = &service.unit;
    let was_active = before.as_ref().is_some_and(|b| b.active == "active");
    let try_verb = matches!(
        service.on_change.verb(),
        Some("try-restart" | "try-reload-or-restart")
    );
    if !was_active && try_verb {
        return (
            format!(
                "not running before the rotation ({}), so it was left stopped",
                before.map(|b| b.active).unwrap_or_else(|| "unknown".into())
            ),
            true,
        );
    }
    let deadline = Instant::now() + service.health_timeout;
    let mut last = None;
    loop {
        if let Some(now) = snapshot(manager, unit) {
            let changed = before
                .as_ref()
                .is_none_or(|b| b.main_pid != now.main_pid || b.started != now.started);
            if now.active == "active" && (changed || !restarted) {
                return (
                    if restarted {
                        format!("active, restarted (MainPID {})", now.main_pid)
                    } else {
                        "active".into()
                    },
                    true,
                );
            }
            last = Some(now);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = last
        .map(|l| format!("ActiveState={}, MainPID {}", l.active, l.main_pid))
        .unwrap_or_else(|| "no answer from systemctl".into());
    (
        format!(
            "did not come back active{} within {}s ({seen}); see `journalctl -u {unit}`",
            if restarted { " after its restart" } else { "" },
            service.health_timeout.as_secs()
        ),
        false,
    )
}

/// Runs the service's health check with its new environment. On a running
/// systemd, as a transient unit with the service's own user and environment
/// source (the values never pass through credloader); otherwise (an image,
/// or no bus) in-process, with the values decrypted again from the sealed
/// files the service is built from.
fn run_health(
    root: &Root,
    config: &Config,
    manager: Manager,
    service: &Service,
    argv: &[String],
) -> health::Outcome {
    if manager == Manager::Live {
        let env = match service.delivery {
            Delivery::Env => health::UnitEnv::EnvFile(&service.env_file),
            Delivery::Credential => health::UnitEnv::Credentials(
                service
                    .credentials()
                    .into_iter()
                    .map(|c| {
                        (
                            c.to_string(),
                            config.loader.creds_dir.join(format!("{c}.cred")),
                        )
                    })
                    .collect(),
            ),
        };
        let group = service.group.as_deref();
        let mask = || health::secrets::of_service(root, config, service);
        let timeout = service.health_timeout;
        if let Some(outcome) = health::run_in_unit(argv, &service.user, group, &env, &mask, timeout)
        {
            return outcome;
        }
        tracing::info!(
            "no D-Bus for systemd-run: running the health check of {} in-process",
            service.name
        );
    }
    let accounts = match Accounts::new(root) {
        Ok(a) => a,
        Err(e) => {
            return health::Outcome::NotRun {
                reason: e.to_string(),
            }
        }
    };
    let account = match accounts.lookup(&service.user, service.group.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            return health::Outcome::NotRun {
                reason: e.to_string(),
            }
        }
    };
    let env = match service_env(root, config, service) {
        Ok(e) => e,
        Err(reason) => return health::Outcome::NotRun { reason },
    };
    let who = RunAs::resolve(root, &service.user, account.uid, account.gid);
    let mask = || Ok(health::secrets::from_env(service, &env));
    health::run(argv, &who, &env, &mask, service.health_timeout)
}

/// The variables an env-delivery service receives (none for credential
/// delivery), decrypted with `systemd-creds` from the creds dir.
pub fn service_env(
    root: &Root,
    config: &Config,
    service: &Service,
) -> Result<Vec<(String, Secret)>, String> {
    if service.delivery != Delivery::Env {
        return Ok(Vec::new());
    }
    let store = Store::open(root, &config.loader.creds_dir);
    let mut plain: BTreeMap<&str, Secret> = BTreeMap::new();
    for name in service.credentials() {
        let sealed = store.sealed(name).map_err(|e| e.to_string())?;
        let (secret, _) = crate::systemd_creds::decrypt(name, &sealed.bytes)
            .map_err(|e| format!("credential {name}: {e}"))?;
        plain.insert(name, secret);
    }
    Ok(service
        .vars
        .iter()
        .map(|v| {
            let value = match &v.source {
                // What apply delivers (see `crate::newline`).
                Source::Credential(c) => Secret::copy_from(crate::newline::delivered(
                    plain[c.as_str()].expose(),
                    service.keep_newline.contains(c),
                )),
                Source::Static(s) => Secret::copy_from(s.as_bytes()),
            };
            (v.name.clone(), value)
        })
        .collect())
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
