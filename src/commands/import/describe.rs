//! The plan in words and JSON: a dry run prints exactly what it would do,
//! the real run the same lines in the past tense, then what apply and the
//! plaintext's removal did.

use std::fmt::Write as _;

use serde_json::json;

use super::super::Output;
use super::execute::Done;
use super::plan::{Plan, SecretAction, SecretPlan, Step};
use super::preflight::Prepared;
use crate::cli::{ImportArgs, Prefer};
use crate::exit;
use crate::import::{DropinChange, LegacyDropin};

const SHRED_NOTE: &str = "overwriting is best-effort: on journaling, copy-on-write (btrfs, ZFS) \
                          and flash storage old copies of the blocks may survive";

/// Whether the plan is told before anything is done (a dry run) or after.
pub enum Tense<'a> {
    Would,
    Did(&'a Done),
}

/// The output of `import`: every step of `plan`, told in `tense`.
pub fn describe(args: &ImportArgs, prep: &Prepared, plan: &Plan, tense: Tense) -> Output {
    let mut d = Description {
        args,
        prep,
        tense,
        human: String::new(),
        secrets: Vec::new(),
        dropins: Vec::new(),
    };
    if d.dry() {
        d.human
            .push_str("dry run: every check passed; nothing is changed\n");
    }
    let _ = writeln!(
        d.human,
        "importing {} for unit {} (service {}, user {})",
        args.env_file.display(),
        args.unit,
        prep.service,
        prep.user
    );
    for step in &plan.steps {
        d.step(step);
    }
    d.output()
}

/// The output, as it is told step by step.
struct Description<'a> {
    args: &'a ImportArgs,
    prep: &'a Prepared,
    tense: Tense<'a>,
    human: String,
    /// The JSON of each secret, and of each legacy drop-in.
    secrets: Vec<serde_json::Value>,
    dropins: Vec<serde_json::Value>,
}

impl Description<'_> {
    fn dry(&self) -> bool {
        matches!(self.tense, Tense::Would)
    }

    /// `now` in the real run, `later` in a dry run.
    fn verb(&self, now: &'static str, later: &'static str) -> &'static str {
        if self.dry() {
            later
        } else {
            now
        }
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Secret(p) => self.secret(p),
            Step::Static(k) => {
                let kept = self.verb("kept", "would be kept");
                let _ = writeln!(self.human, "  {k}: not secret, {kept} as `static`");
            }
            Step::WriteConfig { path, .. } => {
                let wrote = self.verb("wrote", "would write");
                let _ = writeln!(self.human, "  config: {wrote} {}", path.display());
            }
            Step::LegacyDropins(dropins) => self.legacy_dropins(dropins),
            Step::Apply => self.apply(),
            Step::Shred { .. } => self.shred(),
        }
    }

    /// The human line and the JSON of one secret's plan.
    fn secret(&mut self, p: &SecretPlan) {
        let generation = match self.tense {
            Tense::Would => None,
            Tense::Did(done) => done.generations[self.secrets.len()],
        };
        let what = self.secret_action(p.action, generation);
        let _ = writeln!(
            self.human,
            "  secret {}: {} ({} bytes) {what}",
            p.key, p.masked, p.length
        );
        if p.newline_removed {
            let _ = writeln!(
                self.human,
                "  {}: removed the trailing newline of the env file's value; the service receives {} bytes",
                p.key, p.length
            );
        }
        self.secrets.push(json!({
            "key": p.key,
            "action": p.action.name(),
            "masked": p.masked,
            "length": p.length,
            "newline_removed": p.newline_removed,
            "sealed_newline": matches!(p.action, SecretAction::Reseal { newline: true, .. }),
            "generation": generation,
        }));
    }

    /// What becomes of a secret, in words (`generation`: the one the
    /// replaced or other value was kept as).
    fn secret_action(&self, action: SecretAction, generation: Option<u32>) -> String {
        let kept = |what: &str| match (self.dry(), generation) {
            (true, _) => format!("{what} would be kept as a generation"),
            (false, Some(g)) => format!("{what} is kept as generation {g}"),
            (false, None) => format!("{what} is kept as a generation"),
        };
        match action {
            SecretAction::Seal => self.verb("sealed", "would seal").to_string(),
            SecretAction::Reuse => self
                .verb(
                    "already sealed with this value",
                    "is already sealed with this value",
                )
                .to_string(),
            SecretAction::Reseal { legacy, newline } => format!(
                "{} {} ({}); {}",
                self.verb("resealed", "would reseal"),
                match (legacy, newline) {
                    (true, true) => "with its own name and without the trailing newline",
                    (true, false) => "with its own name",
                    _ => "without the trailing newline",
                },
                match (legacy, newline) {
                    (_, true) =>
                        "the sealed file holds the same key plus the newline `echo` adds; \
                              the service got it without, through `$(cat ...)`",
                    _ => "it was sealed without --name",
                },
                kept("the old file")
            ),
            SecretAction::KeepBoth {
                prefer: Prefer::EnvFile,
                ..
            } => format!(
                "{} the env file's value (--prefer env-file); {}",
                self.verb("sealed", "would seal"),
                kept("the sealed one")
            ),
            SecretAction::KeepBoth {
                prefer: Prefer::Sealed,
                reseal,
            } => format!(
                "the sealed value {} (--prefer sealed){}; {}",
                self.verb("stays live", "would stay live"),
                if reseal {
                    ", resealed cleanly (the old file is a generation too)"
                } else {
                    ""
                },
                kept("the env file's")
            ),
        }
    }

    /// Each legacy drop-in and what becomes of it; then, if the env file
    /// was optional, that credloader's drop-in makes it required.
    fn legacy_dropins(&mut self, dropins: &[LegacyDropin]) {
        for d in dropins {
            let _ = writeln!(
                self.human,
                "  legacy drop-in {}: {}",
                d.path.display(),
                match (&d.change, self.dry()) {
                    (DropinChange::Rewrite(_), false) => "its EnvironmentFile= line removed",
                    (DropinChange::Rewrite(_), true) => "would lose its EnvironmentFile= line",
                    (DropinChange::Remove, false) => "removed",
                    (DropinChange::Remove, true) => "would be removed",
                }
            );
            let action = match d.change {
                DropinChange::Rewrite(_) => "rewrite",
                DropinChange::Remove => "remove",
            };
            self.dropins
                .push(json!({ "path": d.path, "action": action }));
        }
        if dropins.is_empty() {
            let _ = writeln!(
                self.human,
                "  no legacy drop-in names {}",
                self.args.env_file.display()
            );
        }
        if self.prep.legacy.optional && self.prep.definition().required {
            let _ = writeln!(
                self.human,
                "  note: the legacy drop-in loads {env} as optional (EnvironmentFile=-), so {unit} \
                 started even without it. credloader's drop-in makes the env file required: {unit} \
                 will not start without its secrets. To keep it optional, add `required = false` \
                 to {conf}.",
                env = self.args.env_file.display(),
                unit = self.args.unit,
                conf = self.prep.conf_path.display()
            );
        }
    }

    /// What apply would do, or did.
    fn apply(&mut self) {
        let (args, prep) = (self.args, self.prep);
        let env_file = prep.definition().env_file.display();
        let report = match self.tense {
            Tense::Would => {
                let _ = writeln!(
                    self.human,
                    "  apply: would write {env_file} and the drop-in, and restart {}",
                    args.unit
                );
                return;
            }
            Tense::Did(Done {
                apply: Some(report),
                ..
            }) => report,
            Tense::Did(_) => return,
        };
        if !report.all_ok() {
            let errors: Vec<String> = report.failed().filter_map(|s| s.error.clone()).collect();
            let _ = writeln!(
                self.human,
                "apply failed for {}: {}\nthe legacy drop-in and {} are left in place, {} was removed; \
                 the sealed credentials stay in the creds dir",
                prep.service,
                errors.join("; "),
                args.env_file.display(),
                prep.conf_path.display()
            );
            return;
        }
        let _ = writeln!(
            self.human,
            "  applied: {env_file} written{}",
            report
                .services
                .first()
                .and_then(|s| s.action.as_ref())
                .map(|a| format!(", {a} of {} queued", args.unit))
                .unwrap_or_default()
        );
        for w in &report.warnings {
            let _ = writeln!(self.human, "  warning: {w}");
        }
    }

    /// What becomes of the plaintext, or what became of it.
    fn shred(&mut self) {
        let env = self.args.env_file.display();
        let _ = match self.tense {
            Tense::Would => writeln!(
                self.human,
                "  plaintext: would overwrite {env} with zeros and remove it ({SHRED_NOTE})"
            ),
            Tense::Did(Done {
                shred: Some(Ok(())),
                ..
            }) => writeln!(
                self.human,
                "  plaintext: {env} overwritten with zeros and removed ({SHRED_NOTE})"
            ),
            Tense::Did(Done {
                shred: Some(Err(e)),
                ..
            }) => writeln!(
                self.human,
                "  plaintext: could NOT remove {env}: {e}; its secrets are sealed now: remove it \
                 yourself (`shred -u {env}`)"
            ),
            Tense::Did(_) => Ok(()),
        };
    }

    /// The human text and the JSON, with the exit code.
    fn output(self) -> Output {
        let (args, prep) = (self.args, self.prep);
        let mut doc = json!({
            "dry_run": self.dry(),
            "service": prep.service,
            "unit": args.unit,
            "user": prep.user,
            "env_file": args.env_file,
            "secrets": self.secrets,
            "statics": prep.statics.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            "config_file": prep.conf_path,
            "legacy_dropins": self.dropins,
            "legacy_optional": prep.legacy.optional,
            "required": prep.definition().required,
            "plaintext_removed": false,
            "note": SHRED_NOTE,
        });
        let Tense::Did(done) = self.tense else {
            return Output::new(exit::OK, self.human, doc);
        };
        if let Some(report) = &done.apply {
            doc["apply"] = serde_json::to_value(report).expect("serializes");
        }
        doc["plaintext_removed"] = json!(matches!(done.shred, Some(Ok(()))));
        let code = match done.shred {
            Some(Ok(())) => exit::OK,
            _ => exit::FAILED,
        };
        Output::new(code, self.human, doc)
    }
}
