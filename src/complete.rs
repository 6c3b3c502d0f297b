//! Shell completion of credential and service names, asked of credloader
//! itself at each TAB (`COMPLETE=bash credloader -- WORDS...`, see
//! [`clap_complete::CompleteEnv`]): the registration scripts that
//! `credloader completions SHELL` prints call back into the binary, so
//! names come from this host's configuration and creds dir as they are now.
//!
//! Names only: nothing is decrypted, and whoever cannot read the creds dir
//! (everyone but root) is offered the configured names alone.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::PathBuf;

use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};

use crate::config::{self, Config};
use crate::creds::Store;
use crate::root::Root;

/// The environment variable that asks for completions.
pub const VAR: &str = "COMPLETE";

/// The configuration as `credloader` without `--config` would load it.
fn config() -> Option<Config> {
    let (path, explicit) = match std::env::var_os("CREDLOADER_CONFIG") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (PathBuf::from(config::DEFAULT_CONFIG), false),
    };
    config::load(&path, explicit).ok()
}

fn candidates(names: BTreeSet<String>, current: &OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    names
        .into_iter()
        .filter(|n| n.starts_with(prefix.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

/// Every credential in the creds dir and every one the configuration names.
fn credential_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let config = config();
    let loader = config
        .as_ref()
        .map(|c| c.loader.clone())
        .unwrap_or_default();
    let mut names = Store::open(&Root::live(), &loader.creds_dir).sealed_names();
    if let Some(c) = &config {
        names.extend(c.all_credentials().into_iter().map(String::from));
    }
    candidates(names, current)
}

/// Every configured service.
fn service_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let names = config()
        .map(|c| c.services.keys().cloned().collect())
        .unwrap_or_default();
    candidates(names, current)
}

/// For a credential name argument.
pub fn credentials() -> ArgValueCompleter {
    ArgValueCompleter::new(credential_names)
}

/// For a `--service NAME` option.
pub fn services() -> ArgValueCompleter {
    ArgValueCompleter::new(service_names)
}

/// The script `credloader completions SHELL` prints: it registers a
/// completion function that asks credloader at each TAB.
pub fn registration(shell: &str) -> Option<Vec<u8>> {
    let shells = clap_complete::env::Shells::builtins();
    let completer = shells.completer(shell)?;
    let mut buf = Vec::new();
    completer
        .write_registration(VAR, "credloader", "credloader", "credloader", &mut buf)
        .ok()?;
    Some(buf)
}
