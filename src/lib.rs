//! credloader: sealed systemd credentials into the services that need them.
//!
//! The `apply` pipeline is a few plain stages, each a module:
//! [`config`] (load) → [`creds`] (read and decrypt) → [`envfile`] and
//! [`dropin`] (render) → [`safefs`] (write) → [`systemd`] (reload/restart),
//! tied together by [`apply`]. Plaintext only ever lives in [`secret::Secret`].

pub mod apply;
pub mod audit;
pub mod boot;
pub mod chain;
pub mod cli;
pub mod commands;
pub mod complete;
pub mod config;
pub mod creds;
pub mod dropin;
pub mod envfile;
pub mod envplace;
pub mod escape;
pub mod exit;
pub mod generations;
pub mod harden;
pub mod health;
pub mod hint;
pub mod holds;
pub mod import;
pub mod lock;
pub mod logging;
pub mod manifest;
pub mod manpage;
pub mod names;
pub mod newline;
pub mod overrides;
pub mod provenance;
pub mod root;
pub mod rotation;
pub mod runas;
pub mod safefs;
pub mod sealed;
pub mod secret;
pub mod sources;
pub mod stamp;
pub mod state;
pub mod systemd;
pub mod systemd_creds;
pub mod unitfile;
pub mod users;
