//! The secret values a service got, to mask in its health check's output:
//! the credential variables of its env file as credloader wrote it (read as
//! root), or its credentials decrypted again for `delivery = "credential"`.
//! `static` variables are not secret and are left as they are.

use std::collections::BTreeSet;

use super::output::Secrets;
use crate::config::{Config, Delivery, Service, Source};
use crate::creds::Store;
use crate::envfile;
use crate::root::Root;
use crate::safefs::{self, Dir, DirPolicy};
use crate::secret::Secret;

/// The service's credential variables, by name.
fn secret_vars(service: &Service) -> BTreeSet<&str> {
    service
        .vars
        .iter()
        .filter(|v| matches!(v.source, Source::Credential(_)))
        .map(|v| v.name.as_str())
        .collect()
}

/// From the environment a check was given in-process.
pub fn from_env(service: &Service, env: &[(String, Secret)]) -> Secrets {
    let names = secret_vars(service);
    Secrets::new(
        env.iter()
            .filter(|(name, _)| names.contains(name.as_str()))
            .map(|(_, v)| Secret::copy_from(v.expose())),
    )
}

/// What the service got, read back as root.
pub fn of_service(root: &Root, config: &Config, service: &Service) -> Result<Secrets, String> {
    let mut values = match service.delivery {
        Delivery::Env => from_env_file(root, service)?,
        Delivery::Credential => Vec::new(),
    };
    if values.is_empty() {
        values = decrypted(root, config, service)?;
    }
    Ok(Secrets::new(values))
}

/// The credential variables of the service's env file (empty if it has none).
fn from_env_file(root: &Root, service: &Service) -> Result<Vec<Secret>, String> {
    let (dir, name) = safefs::split(&service.env_file);
    let dir = Dir::open(root, dir, DirPolicy::EXISTING).map_err(|e| e.to_string())?;
    let Some((text, _)) = dir
        .read_secret(name, envfile::MAX_ASSIGNMENT * 64)
        .map_err(|e| e.to_string())?
    else {
        return Ok(Vec::new());
    };
    let names = secret_vars(service);
    let (assignments, _) = envfile::parse(text.expose());
    Ok(assignments
        .into_iter()
        .filter(|a| names.contains(a.key.as_str()))
        .map(|a| a.value)
        .collect())
}

/// The service's credentials, decrypted from the creds dir.
fn decrypted(root: &Root, config: &Config, service: &Service) -> Result<Vec<Secret>, String> {
    let store = Store::open(root, &config.loader.creds_dir);
    service
        .credentials()
        .into_iter()
        .map(|name| {
            let sealed = store.sealed(name).map_err(|e| e.to_string())?;
            crate::systemd_creds::decrypt(name, &sealed.bytes)
                .map(|(secret, _)| secret)
                .map_err(|e| format!("credential {name}: {e}"))
        })
        .collect()
}
