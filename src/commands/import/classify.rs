//! Each `--secret`: the env file's value against the sealed file that may
//! already hold it.
//!
//! The manual procedure sealed `echo KEY > f` without `--name`, so its
//! sealed file holds the key plus a newline under the name `NAME.cred`,
//! while the env file (written with `$(cat ...)`) holds the key alone.
//! That is the same key, which only needs a clean reseal.

use super::super::value::keeps_newline;
use super::super::CommandError;
use crate::config::Config;
use crate::newline;
use crate::rotation::Served;
use crate::safefs::Dir;
use crate::sealed::current as current_sealed;
use crate::secret::Secret;
use crate::systemd_creds::{self, CredsError};

/// What is already sealed under a secret's name, next to the env file's value.
pub enum Found {
    /// Nothing is sealed under its name yet.
    New,
    /// Sealed with this very value, under its own name.
    Same,
    /// The same key, in a sealed file that needs a clean reseal: sealed
    /// without `--name` (`legacy`) and/or with a trailing newline.
    NeedsReseal { legacy: bool, newline: bool },
    /// Two truly different values. `sealed` is the sealed one as its
    /// services would get it; `reseal`: kept live, it needs a clean reseal.
    Different { sealed: Secret, reseal: bool },
    /// A sealed file that does not decrypt.
    Undecryptable(CredsError),
}

/// One secret, classified.
pub struct Classified {
    pub key: String,
    /// The env file's value, as its services get it.
    pub env: Secret,
    /// Trailing line breaks were removed from the env file's value.
    pub newline_removed: bool,
    pub found: Found,
}

/// A sealed file decrypted: its value, and whether it was sealed under the
/// legacy name `NAME.cred`.
pub type Decrypted = Result<(Secret, bool), CredsError>;

/// Classifies `key`, whose env file value is `value`, decrypting what is
/// already sealed in `creds` (none in a dry run without a creds dir).
pub fn secret(
    key: &str,
    value: &Secret,
    config: &Config,
    served: &Served,
    creds: Option<&Dir>,
) -> Result<Classified, CommandError> {
    let keep = keeps_newline(config, served, key);
    let entered = newline::enter(Secret::copy_from(value.expose()), keep);
    let sealed = match creds {
        Some(dir) => current_sealed(dir, key)?,
        None => None,
    };
    let old = sealed.as_deref().map(|b| systemd_creds::decrypt(key, b));
    Ok(against(key, entered, old, keep))
}

/// Classifies the env file's value (`entered`) against the decrypted
/// sealed one (`old`), under the secret's newline policy (`keep`).
pub fn against(
    key: &str,
    entered: newline::Entered,
    old: Option<Decrypted>,
    keep: bool,
) -> Classified {
    let env = entered.value;
    let found = match old {
        None => Found::New,
        Some(Err(e)) => Found::Undecryptable(e),
        Some(Ok((old, legacy))) => compare(&env, &old, legacy, keep),
    };
    Classified {
        key: key.to_string(),
        env,
        newline_removed: entered.removed > 0,
        found,
    }
}

/// The env file's value against a sealed one that decrypts to `old`
/// (`legacy`: under the name `NAME.cred`).
fn compare(env: &Secret, old: &Secret, legacy: bool, keep: bool) -> Found {
    let meant = newline::delivered(old.expose(), keep);
    if old.ct_eq(env.expose()) {
        return match legacy {
            true => Found::NeedsReseal {
                legacy,
                newline: false,
            },
            false => Found::Same,
        };
    }
    if env.ct_eq(meant) {
        return Found::NeedsReseal {
            legacy,
            newline: true,
        };
    }
    let sealed = Secret::copy_from(meant);
    let reseal = legacy || sealed.len() != old.len();
    Found::Different { sealed, reseal }
}
