//! What `import` will do, as a list of [`Step`]s: one per secret (seal,
//! reseal, reuse, or keep both values), the `--static` keys, the config
//! file, the legacy drop-ins, apply, and the plaintext's removal. A dry run
//! describes this list; the real run executes it, then describes it.
//!
//! Two values that truly differ are both kept, one live and one as a
//! generation, as `--prefer` chooses; nothing is ever thrown away.

use std::path::Path;

use super::super::CommandError;
use super::classify::{self, Classified, Found};
use super::preflight::Prepared;
use super::ImportError;
use crate::cli::{ImportArgs, Prefer};
use crate::import::LegacyDropin;
use crate::rotation::Served;
use crate::safefs::Dir;
use crate::secret::Secret;

/// What becomes of one secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretAction {
    /// Nothing sealed yet: seal the env file's value.
    Seal,
    /// Already sealed with this very value, under its own name.
    Reuse,
    /// The same key, sealed without `--name` and/or with a trailing
    /// newline: resealed cleanly, the old file kept as a generation.
    Reseal { legacy: bool, newline: bool },
    /// Two different values (or a sealed file that does not decrypt): both
    /// are kept, the `prefer`red one live and the other as a generation.
    /// `reseal`: the sealed value stays live, resealed cleanly (its old
    /// file kept as a generation too).
    KeepBoth { prefer: Prefer, reseal: bool },
}

impl SecretAction {
    /// Its name in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            SecretAction::Seal => "seal",
            SecretAction::Reuse => "reuse",
            SecretAction::Reseal { .. } => "reseal",
            SecretAction::KeepBoth {
                prefer: Prefer::EnvFile,
                ..
            } => "prefer-env-file",
            SecretAction::KeepBoth {
                prefer: Prefer::Sealed,
                ..
            } => "prefer-sealed",
        }
    }
}

/// One secret's plan.
pub struct SecretPlan {
    pub key: String,
    pub action: SecretAction,
    /// The value that is sealed and goes live (none when the sealed file
    /// stays as it is).
    pub live: Option<Secret>,
    /// The env file's value, sealed as a generation (`prefer` sealed).
    pub other: Option<Secret>,
    /// The live value, masked, and its length.
    pub masked: String,
    pub length: usize,
    /// Trailing line breaks removed from the env file's value.
    pub newline_removed: bool,
}

impl SecretPlan {
    /// What to do with a classified secret, or why it needs `--prefer`.
    pub fn decide(c: Classified, prefer: Option<Prefer>) -> Result<SecretPlan, String> {
        let mut plan = SecretPlan {
            key: c.key,
            action: SecretAction::Seal,
            masked: c.env.masked(),
            length: c.env.len(),
            live: None,
            other: None,
            newline_removed: c.newline_removed,
        };
        let env = c.env;
        match (c.found, prefer) {
            (Found::New, _) => plan.live = Some(env),
            (Found::Same, _) => plan.action = SecretAction::Reuse,
            (Found::NeedsReseal { legacy, newline }, _) => {
                plan.action = SecretAction::Reseal { legacy, newline };
                plan.live = Some(env);
            }
            (Found::Undecryptable(e), Some(Prefer::EnvFile)) => {
                tracing::warn!(
                    "credential {}: the sealed file does not decrypt ({e}); kept as a generation",
                    plan.key
                );
                plan.prefer_env_file(env);
            }
            (Found::Undecryptable(e), _) => {
                return Err(format!(
                    "credential {} is already sealed, but that file does not decrypt ({e}); \
                     `--prefer env-file` keeps it as a generation",
                    plan.key
                ))
            }
            (Found::Different { .. }, Some(Prefer::EnvFile)) => plan.prefer_env_file(env),
            (Found::Different { sealed, reseal }, Some(Prefer::Sealed)) => {
                plan.action = SecretAction::KeepBoth {
                    prefer: Prefer::Sealed,
                    reseal,
                };
                plan.masked = sealed.masked();
                plan.length = sealed.len();
                plan.live = reseal.then_some(sealed);
                plan.other = Some(env);
            }
            (Found::Different { sealed, .. }, None) => {
                return Err(format!(
                    "credential {} is already sealed with a different value than the env file's \
                     (sealed: {}, {} bytes; env file: {}, {} bytes)",
                    plan.key,
                    sealed.masked(),
                    sealed.len(),
                    env.masked(),
                    env.len()
                ))
            }
        }
        Ok(plan)
    }

    /// The env file's value goes live; the sealed file is kept as a generation.
    fn prefer_env_file(&mut self, env: Secret) {
        self.action = SecretAction::KeepBoth {
            prefer: Prefer::EnvFile,
            reseal: false,
        };
        self.live = Some(env);
    }
}

/// Classifies and plans every `--secret`, decrypting what is already
/// sealed. Values that truly differ without `--prefer` stop the import,
/// naming both and how to keep both.
pub fn secrets(
    args: &ImportArgs,
    prep: &Prepared,
    served: &Served,
    creds: Option<&Dir>,
) -> Result<Vec<SecretPlan>, CommandError> {
    let mut plans = Vec::new();
    let mut conflicts = Vec::new();
    for key in &args.secrets {
        let value = &prep
            .legacy
            .vars
            .iter()
            .find(|(k, _)| k == key)
            .expect("checked")
            .1;
        let classified = classify::secret(key, value, &prep.config, served, creds)?;
        match SecretPlan::decide(classified, args.prefer) {
            Ok(p) => plans.push(p),
            Err(conflict) => conflicts.push(conflict),
        }
    }
    if !conflicts.is_empty() {
        return Err(ImportError::Conflicts { conflicts }.into());
    }
    Ok(plans)
}

/// One step of the import, in the order they are done.
pub enum Step<'p> {
    /// Seal, reseal, reuse or keep both values of one `--secret`.
    Secret(SecretPlan),
    /// A `--static` key: kept, in plain text, in the config file.
    Static(&'p str),
    /// Write the service's config file.
    WriteConfig { path: &'p Path, text: &'p str },
    /// Rewrite or remove each drop-in that names the env file (none may).
    LegacyDropins(&'p [LegacyDropin]),
    /// Apply the imported service: its env file, its drop-in, a restart.
    Apply,
    /// Overwrite the plaintext env file with zeros and remove it.
    Shred { path: &'p Path },
}

/// Everything `import` does, step by step.
pub struct Plan<'p> {
    pub steps: Vec<Step<'p>>,
}

impl<'p> Plan<'p> {
    pub fn new(prep: &'p Prepared, secrets: Vec<SecretPlan>) -> Plan<'p> {
        let mut steps: Vec<Step> = secrets.into_iter().map(Step::Secret).collect();
        steps.extend(prep.statics.iter().map(|(k, _)| Step::Static(k)));
        steps.extend([
            Step::WriteConfig {
                path: &prep.conf_path,
                text: &prep.conf_text,
            },
            Step::LegacyDropins(&prep.legacy.dropins),
            Step::Apply,
            Step::Shred {
                path: &prep.legacy.env_file,
            },
        ]);
        Plan { steps }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::newline;
    use crate::systemd_creds;

    fn one(
        key: &str,
        entered: newline::Entered,
        old: Option<classify::Decrypted>,
        keep: bool,
        prefer: Option<Prefer>,
    ) -> Result<SecretPlan, String> {
        SecretPlan::decide(classify::against(key, entered, old, keep), prefer)
    }

    fn plan(
        env: &[u8],
        sealed: Option<(&[u8], bool)>,
        keep: bool,
        prefer: Option<Prefer>,
    ) -> Result<SecretPlan, String> {
        let entered = newline::enter(Secret::copy_from(env), keep);
        let old = sealed.map(|(v, legacy)| Ok((Secret::copy_from(v), legacy)));
        one("K", entered, old, keep, prefer)
    }

    fn live(p: &SecretPlan) -> Option<&[u8]> {
        p.live.as_ref().map(|s| s.expose())
    }

    #[test]
    fn the_manual_procedures_newline_is_the_same_key() {
        let p = plan(b"KEY", Some((b"KEY\n", true)), false, None).unwrap();
        assert_eq!(
            p.action,
            SecretAction::Reseal {
                legacy: true,
                newline: true
            }
        );
        assert_eq!(live(&p), Some(&b"KEY"[..]));
        let p = plan(b"KEY", Some((b"KEY\r\n", false)), false, None).unwrap();
        assert_eq!(
            p.action,
            SecretAction::Reseal {
                legacy: false,
                newline: true
            }
        );
        let p = plan(b"KEY", Some((b"KEY", true)), false, None).unwrap();
        assert_eq!(
            p.action,
            SecretAction::Reseal {
                legacy: true,
                newline: false
            }
        );
        let p = plan(b"KEY", Some((b"KEY", false)), false, None).unwrap();
        assert_eq!((p.action, live(&p)), (SecretAction::Reuse, None));
        let p = plan(b"KEY", None, false, None).unwrap();
        assert_eq!(
            (p.action, live(&p)),
            (SecretAction::Seal, Some(&b"KEY"[..]))
        );
        // An env file value with a newline of its own (quoted) loses it too.
        let p = plan(b"KEY\n", Some((b"KEY", false)), false, None).unwrap();
        assert_eq!(p.action, SecretAction::Reuse);
        assert!(p.newline_removed);
    }

    #[test]
    fn with_keep_newline_a_newline_makes_a_different_value() {
        let e = plan(b"KEY", Some((b"KEY\n", false)), true, None)
            .err()
            .unwrap();
        assert!(
            e.contains("different value") && e.contains("4 bytes; env file"),
            "{e}"
        );
        let p = plan(b"KEY\n", Some((b"KEY\n", false)), true, None).unwrap();
        assert_eq!(p.action, SecretAction::Reuse);
    }

    const PREFER_ENV_FILE: SecretAction = SecretAction::KeepBoth {
        prefer: Prefer::EnvFile,
        reseal: false,
    };

    #[test]
    fn two_values_are_both_kept_as_prefer_chooses() {
        let e = plan(b"NEW", Some((b"OLD\n", true)), false, None)
            .err()
            .unwrap();
        assert!(
            e.contains("sealed: ...***, 3 bytes; env file: ...***, 3 bytes"),
            "{e}"
        );
        assert!(!e.contains("OLD") && !e.contains("NEW"), "{e}");
        let p = plan(b"NEW", Some((b"OLD\n", true)), false, Some(Prefer::EnvFile)).unwrap();
        assert_eq!((p.action, live(&p)), (PREFER_ENV_FILE, Some(&b"NEW"[..])));
        assert!(p.other.is_none());
        let p = plan(b"NEW", Some((b"OLD\n", true)), false, Some(Prefer::Sealed)).unwrap();
        assert_eq!(
            p.action,
            SecretAction::KeepBoth {
                prefer: Prefer::Sealed,
                reseal: true
            }
        );
        assert_eq!(live(&p), Some(&b"OLD"[..]));
        assert_eq!(p.other.as_ref().map(|s| s.expose()), Some(&b"NEW"[..]));
        let p = plan(b"NEW", Some((b"OLD", false)), false, Some(Prefer::Sealed)).unwrap();
        assert_eq!(
            (p.action, live(&p)),
            (
                SecretAction::KeepBoth {
                    prefer: Prefer::Sealed,
                    reseal: false
                },
                None
            )
        );
    }

    #[test]
    fn a_sealed_file_that_does_not_decrypt_is_kept_only_on_request() {
        let broken = || Some(Err(systemd_creds::CredsError::Failed("bad".into())));
        let entered = || newline::enter(Secret::copy_from(b"KEY"), false);
        let e = one("K", entered(), broken(), false, None).err().unwrap();
        assert!(e.contains("--prefer env-file"), "{e}");
        let e = one("K", entered(), broken(), false, Some(Prefer::Sealed)).err();
        assert!(e.is_some());
        let p = one("K", entered(), broken(), false, Some(Prefer::EnvFile)).unwrap();
        assert_eq!(p.action, PREFER_ENV_FILE);
    }
}
