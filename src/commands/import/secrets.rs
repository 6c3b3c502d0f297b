//! What `import` does with each `--secret`: the env file's value against
//! the sealed file that may already hold it.
//!
//! The manual procedure sealed `echo KEY > f` without `--name`, so its
//! sealed file holds the key plus a newline under the name `NAME.cred`,
//! while the env file (written with `$(cat ...)`) holds the key alone.
//! That is the same key: it is resealed cleanly, and the old file is kept
//! as a generation. Two values that truly differ are both kept, one live
//! and one as a generation, as `--prefer` chooses; nothing is ever thrown
//! away.

use std::fmt::Write as _;

use serde_json::json;

use super::super::value::{keeps_newline, seal};
use super::super::CommandError;
use crate::cli::{ImportArgs, Prefer};
use crate::config::Config;
use crate::creds::hex_digest;
use crate::generations::record_current;
use crate::generations::History;
use crate::newline;
use crate::rotation::Served;
use crate::safefs::Dir;
use crate::sealed::{current as current_sealed, install};
use crate::secret::Secret;
use crate::systemd_creds::{self, Key};

/// What becomes of one secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing sealed yet: seal the env file's value.
    Seal,
    /// Already sealed with this very value, under its own name.
    Reuse,
    /// The same key, sealed without `--name` and/or with a trailing
    /// newline: resealed cleanly, the old file kept as a generation.
    Reseal { legacy: bool, newline: bool },
    /// Two different values (or a sealed file that does not decrypt); the
    /// env file's goes live, the sealed one is kept as a generation.
    PreferEnvFile,
    /// Two different values; the sealed one stays live (resealed cleanly
    /// if it needs it), the env file's is kept as a generation.
    PreferSealed { reseal: bool },
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Seal => "seal",
            Action::Reuse => "reuse",
            Action::Reseal { .. } => "reseal",
            Action::PreferEnvFile => "prefer-env-file",
            Action::PreferSealed { .. } => "prefer-sealed",
        }
    }
}

/// One secret's plan.
pub struct SecretPlan {
    pub key: String,
    pub action: Action,
    /// The value that goes live (none for `Reuse`).
    pub live: Option<Secret>,
    /// The env file's value, kept as a generation (`PreferSealed`).
    pub other: Option<Secret>,
    /// The live value, masked, and its length.
    pub masked: String,
    pub length: usize,
    /// Trailing line breaks removed from the env file's value.
    pub newline_removed: bool,
    /// The generation the replaced (or the other) value is kept as, once done.
    pub generation: Option<u32>,
}

/// Decides every secret's action, decrypting what is already sealed.
/// Values that truly differ without `--prefer` stop the import, naming
/// both and how to keep both.
pub fn plan(
    args: &ImportArgs,
    legacy_vars: &[(String, Secret)],
    config: &Config,
    served: &Served,
    creds: Option<&Dir>,
) -> Result<Vec<SecretPlan>, CommandError> {
    let mut plans = Vec::new();
    let mut conflicts = Vec::new();
    for key in &args.secrets {
        let value = &legacy_vars
            .iter()
            .find(|(k, _)| k == key)
            .expect("checked")
            .1;
        let keep = keeps_newline(config, served, key);
        let entered = newline::enter(Secret::copy_from(value.expose()), keep);
        let sealed = match creds {
            Some(dir) => current_sealed(dir, key)?,
            None => None,
        };
        let old = sealed.as_deref().map(|b| systemd_creds::decrypt(key, b));
        match one(key, entered, old, keep, args.prefer) {
            Ok(p) => plans.push(p),
            Err(conflict) => conflicts.push(conflict),
        }
    }
    if !conflicts.is_empty() {
        return Err(CommandError::Usage(format!(
            "{}; keep both and choose which one is live: `--prefer env-file` seals the env file's \
             value and keeps the sealed one as a generation, `--prefer sealed` keeps the sealed \
             value and the env file's as a generation (until now the service read the env \
             file's); `credloader rollback NAME` later puts the other one back. Nothing was changed",
            conflicts.join("; ")
        )));
    }
    Ok(plans)
}

type Decrypted = Result<(Secret, bool), systemd_creds::CredsError>;

/// The plan of one secret, or why it needs `--prefer`.
fn one(
    key: &str,
    entered: newline::Entered,
    old: Option<Decrypted>,
    keep: bool,
    prefer: Option<Prefer>,
) -> Result<SecretPlan, String> {
    let env = entered.value;
    let mut plan = SecretPlan {
        key: key.to_string(),
        action: Action::Seal,
        masked: env.masked(),
        length: env.len(),
        live: None,
        other: None,
        newline_removed: entered.removed > 0,
        generation: None,
    };
    let (old, legacy) = match old {
        None => {
            plan.live = Some(env);
            return Ok(plan);
        }
        Some(Ok(o)) => o,
        Some(Err(e)) if prefer == Some(Prefer::EnvFile) => {
            tracing::warn!(
                "credential {key}: the sealed file does not decrypt ({e}); kept as a generation"
            );
            plan.action = Action::PreferEnvFile;
            plan.live = Some(env);
            return Ok(plan);
        }
        Some(Err(e)) => {
            return Err(format!(
                "credential {key} is already sealed, but that file does not decrypt ({e}); \
                 `--prefer env-file` keeps it as a generation"
            ))
        }
    };
    against(plan, env, &old, legacy, keep, prefer)
}

/// The plan of a secret whose sealed file decrypts to `old` (`legacy`:
/// under the name `NAME.cred`).
fn against(
    mut plan: SecretPlan,
    env: Secret,
    old: &Secret,
    legacy: bool,
    keep: bool,
    prefer: Option<Prefer>,
) -> Result<SecretPlan, String> {
    let key = plan.key.clone();
    let meant = newline::delivered(old.expose(), keep);
    if old.ct_eq(env.expose()) {
        plan.action = if legacy {
            Action::Reseal {
                legacy,
                newline: false,
            }
        } else {
            Action::Reuse
        };
        plan.live = legacy.then_some(env);
        return Ok(plan);
    }
    if env.ct_eq(meant) {
        plan.action = Action::Reseal {
            legacy,
            newline: true,
        };
        plan.live = Some(env);
        return Ok(plan);
    }
    match prefer {
        Some(Prefer::EnvFile) => {
            plan.action = Action::PreferEnvFile;
            plan.live = Some(env);
        }
        Some(Prefer::Sealed) => {
            let clean = Secret::copy_from(meant);
            let reseal = legacy || clean.len() != old.len();
            plan.action = Action::PreferSealed { reseal };
            plan.masked = clean.masked();
            plan.length = clean.len();
            plan.live = reseal.then_some(clean);
            plan.other = Some(env);
        }
        None => {
            return Err(format!(
                "credential {key} is already sealed with a different value than the env file's \
                 (sealed: {}, {} bytes; env file: {}, {} bytes)",
                Secret::copy_from(meant).masked(),
                meant.len(),
                env.masked(),
                env.len()
            ))
        }
    }
    Ok(plan)
}

/// Carries out the plans: seals, keeps what each replaces (and the other
/// value of a `PreferSealed`) as a generation, installs. The caller holds
/// the apply lock. A generation that cannot be kept stops it before the
/// file it would keep is replaced.
pub fn seal_all(
    plans: &mut [SecretPlan],
    ctx_root: &crate::root::Root,
    config: &Config,
    creds: &Dir,
    key: Key,
) -> Result<(), CommandError> {
    let loader = &config.loader;
    for p in plans.iter_mut() {
        let name = p.key.clone();
        let mut history = History::open(ctx_root, &loader.state_dir, &name, true)
            .map_err(|e| env_error(&name, "generations", e))?;
        if let Some(live) = &p.live {
            let (sealed, info) = seal(&name, live, key, None)?;
            if let Some(old) = current_sealed(creds, &name)? {
                let known = history.info_for(&hex_digest(&old)).cloned();
                p.generation = Some(
                    history
                        .push(&old, known, loader.keep_generations)
                        .map_err(|e| env_error(&name, "keeping the sealed value", e))?,
                );
            }
            install(creds, &name, &sealed)?;
            record_current(ctx_root, &loader.state_dir, &name, info);
        }
        if let Some(other) = &p.other {
            let (sealed, info) = seal(&name, other, key, None)?;
            history = History::open(ctx_root, &loader.state_dir, &name, true)
                .map_err(|e| env_error(&name, "generations", e))?;
            p.generation = Some(
                history
                    .push(&sealed, Some(info), loader.keep_generations)
                    .map_err(|e| env_error(&name, "keeping the env file's value", e))?,
            );
        }
    }
    Ok(())
}

fn env_error(name: &str, what: &str, e: impl std::fmt::Display) -> CommandError {
    CommandError::Environment(format!("credential {name}: {what}: {e}"))
}

/// The human line and the JSON of one secret's plan (`dry`: not done yet).
pub fn describe(p: &SecretPlan, dry: bool, human: &mut String) -> serde_json::Value {
    let kept = |what: &str| match (dry, p.generation) {
        (true, _) => format!("{what} would be kept as a generation"),
        (false, Some(g)) => format!("{what} is kept as generation {g}"),
        (false, None) => format!("{what} is kept as a generation"),
    };
    let what = match p.action {
        Action::Seal => verb(dry, "sealed", "would seal").to_string(),
        Action::Reuse => verb(
            dry,
            "already sealed with this value",
            "is already sealed with this value",
        )
        .to_string(),
        Action::Reseal { legacy, newline } => format!(
            "{} {} ({}); {}",
            verb(dry, "resealed", "would reseal"),
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
        Action::PreferEnvFile => format!(
            "{} the env file's value (--prefer env-file); {}",
            verb(dry, "sealed", "would seal"),
            kept("the sealed one")
        ),
        Action::PreferSealed { reseal } => format!(
            "the sealed value {} (--prefer sealed){}; {}",
            verb(dry, "stays live", "would stay live"),
            if reseal {
                ", resealed cleanly (the old file is a generation too)"
            } else {
                ""
            },
            kept("the env file's")
        ),
    };
    let _ = writeln!(
        human,
        "  secret {}: {} ({} bytes) {what}",
        p.key, p.masked, p.length
    );
    if p.newline_removed {
        let _ = writeln!(
            human,
            "  {}: removed the trailing newline of the env file's value; the service receives {} bytes",
            p.key, p.length
        );
    }
    json!({
        "key": p.key,
        "action": p.action.name(),
        "masked": p.masked,
        "length": p.length,
        "newline_removed": p.newline_removed,
        "sealed_newline": matches!(p.action, Action::Reseal { newline: true, .. }),
        "generation": p.generation,
    })
}

fn verb(dry: bool, now: &'static str, later: &'static str) -> &'static str {
    if dry {
        later
    } else {
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Action::Reseal {
                legacy: true,
                newline: true
            }
        );
        assert_eq!(live(&p), Some(&b"KEY"[..]));
        let p = plan(b"KEY", Some((b"KEY\r\n", false)), false, None).unwrap();
        assert_eq!(
            p.action,
            Action::Reseal {
                legacy: false,
                newline: true
            }
        );
        let p = plan(b"KEY", Some((b"KEY", true)), false, None).unwrap();
        assert_eq!(
            p.action,
            Action::Reseal {
                legacy: true,
                newline: false
            }
        );
        let p = plan(b"KEY", Some((b"KEY", false)), false, None).unwrap();
        assert_eq!((p.action, live(&p)), (Action::Reuse, None));
        let p = plan(b"KEY", None, false, None).unwrap();
        assert_eq!((p.action, live(&p)), (Action::Seal, Some(&b"KEY"[..])));
        // An env file value with a newline of its own (quoted) loses it too.
        let p = plan(b"KEY\n", Some((b"KEY", false)), false, None).unwrap();
        assert_eq!(p.action, Action::Reuse);
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
        assert_eq!(p.action, Action::Reuse);
    }

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
        assert_eq!(
            (p.action, live(&p)),
            (Action::PreferEnvFile, Some(&b"NEW"[..]))
        );
        assert!(p.other.is_none());
        let p = plan(b"NEW", Some((b"OLD\n", true)), false, Some(Prefer::Sealed)).unwrap();
        assert_eq!(p.action, Action::PreferSealed { reseal: true });
        assert_eq!(live(&p), Some(&b"OLD"[..]));
        assert_eq!(p.other.as_ref().map(|s| s.expose()), Some(&b"NEW"[..]));
        let p = plan(b"NEW", Some((b"OLD", false)), false, Some(Prefer::Sealed)).unwrap();
        assert_eq!(
            (p.action, live(&p)),
            (Action::PreferSealed { reseal: false }, None)
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
        assert_eq!(p.action, Action::PreferEnvFile);
    }
}
