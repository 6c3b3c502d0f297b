//! A consumer's health check during a rotation: as a transient unit with
//! the service's own user and environment source on a running systemd,
//! else in-process with the values decrypted again from the sealed files.

use std::collections::BTreeMap;

use crate::config::{Config, Delivery, Service, Source};
use crate::creds::Store;
use crate::health::{self, RunAs};
use crate::root::Root;
use crate::secret::Secret;
use crate::systemd::Manager;
use crate::users::Accounts;

/// Runs the service's health check with its new environment. On a running
/// systemd, as a transient unit with the service's own user and environment
/// source (the values never pass through credloader); otherwise (an image,
/// or no bus) in-process, with the values decrypted again from the sealed
/// files the service is built from.
pub(super) fn run_health(
    root: &Root,
    config: &Config,
    manager: Manager,
    service: &Service,
    argv: &[String],
) -> health::Outcome {
    if manager == Manager::Live {
        if let Some(outcome) = run_in_unit(root, config, service, argv) {
            return outcome;
        }
        tracing::info!(
            "no D-Bus for systemd-run: running the health check of {} in-process",
            service.name
        );
    }
    run_in_process(root, config, service, argv)
}

/// As a transient unit; `None` without a bus.
fn run_in_unit(
    root: &Root,
    config: &Config,
    service: &Service,
    argv: &[String],
) -> Option<health::Outcome> {
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
    health::run_in_unit(argv, &service.user, group, &env, &mask, timeout)
}

/// In-process, as the service's user, with its variables.
fn run_in_process(
    root: &Root,
    config: &Config,
    service: &Service,
    argv: &[String],
) -> health::Outcome {
    let not_run = |reason: String| health::Outcome::NotRun { reason };
    let account = match Accounts::new(root)
        .and_then(|accounts| accounts.lookup(&service.user, service.group.as_deref()))
    {
        Ok(a) => a,
        Err(e) => return not_run(e.to_string()),
    };
    let env = match service_env(root, config, service) {
        Ok(e) => e,
        Err(reason) => return not_run(reason),
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
