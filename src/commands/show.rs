//! `credloader show NAME`: the value masked (`abc...***`) and its length;
//! never the value.

use serde_json::json;
use thiserror::Error;

use super::{CommandError, Context, Output};
use crate::cli::NameArg;
use crate::creds::{CredError, Store};
use crate::systemd_creds::CredsError;
use crate::{exit, names, newline, systemd_creds};

/// Why `show` cannot show a value (exit 1).
#[derive(Debug, Error)]
pub enum ShowError {
    /// Its sealed file cannot be had. Not a `#[source]`: a [`CredError`]
    /// names the credential itself.
    #[error("{0}")]
    Sealed(CredError),
    /// It does not decrypt.
    #[error("credential {name}")]
    Decrypt {
        /// The credential.
        name: String,
        /// Why.
        #[source]
        error: CredsError,
    },
}

pub fn run(ctx: &Context, args: NameArg) -> Result<Output, CommandError> {
    let name = args.name;
    names::credential(&name)?;
    let config = ctx.load_config_or_default()?;
    let store = Store::open(&ctx.root, &config.loader.creds_dir);
    let sealed = store.sealed(&name).map_err(ShowError::Sealed)?;
    let (secret, legacy) =
        systemd_creds::decrypt(&name, &sealed.bytes).map_err(|error| ShowError::Decrypt {
            name: name.clone(),
            error,
        })?;
    let masked = secret.masked();
    let length = secret.len();
    let ends_in_newline = newline::ends_in_newline(secret.expose());
    let trimmed = newline::trim(secret.expose()).len();
    drop(secret);
    // As apply serves them (a service whose file is broken still uses it).
    let state = crate::state::State::inspect(&ctx.root, &config.loader.state_dir);
    let view = crate::state::Served::new(&config, &state);
    let served = crate::rotation::Served::of(&config, &view);
    let consumers: Vec<String> = served.consumers(&name).map(|s| s.name.clone()).collect();
    let keep = super::value::keeps_newline(&config, &served, &name);
    let mut human = format!("{name}: {masked} ({length} bytes)\n");
    if ends_in_newline && !keep {
        human.push_str(&format!(
            "note: the sealed value ends in a newline; env files get it without, {trimmed} bytes \
             (delivery = \"credential\" gets it as sealed); {}\n",
            newline::fix(&name)
        ));
    }
    if legacy {
        human.push_str(&format!(
            "note: sealed without --name (legacy); reseal with `credloader rotate {name}`\n"
        ));
    }
    let mut doc = json!({
        "name": name,
        "masked": masked,
        "length": length,
        "legacy_name": legacy,
        "ends_in_newline": ends_in_newline,
        "keep_newline": keep,
        "key": systemd_creds::sealed_key(&sealed.bytes),
        "consumers": consumers,
    });
    // Showing is not auditing: why, but no failure (`check` fails on it).
    super::common::say_note(&served, &consumers, &mut human, &mut doc);
    Ok(Output::new(exit::OK, human, doc))
}
