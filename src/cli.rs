//! The command line, declared once: `main` parses it, and the man page and
//! shell completions are generated from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::complete;
use crate::systemd_creds::Key;

/// The command line. Its doc comments are the help text: the text of
/// `--help` itself is in `about` and `long_about` below.
#[derive(Debug, Parser)]
#[command(
    name = "credloader",
    version,
    about = "Deliver sealed systemd credentials to the services that need them",
    long_about = "credloader decrypts sealed systemd credentials (systemd-creds) and delivers \
                  them to their consuming services: one env file per service (owned by its \
                  user, mode 0600, written atomically) or LoadCredentialEncrypted= lines, a \
                  drop-in that points the unit at it, and a restart of only the services whose \
                  secrets changed.",
    after_help = "Exit codes: 0 ok, 1 some services failed or problems found, 2 usage or \
                  configuration error, 3 cannot run (lock, state dir, tools), 4 rotate rolled \
                  back, 5 sync source unavailable."
)]
pub struct Cli {
    /// The options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Main configuration file; drop-ins are read from the `.d` directory beside it.
    #[arg(long, global = true, env = "CREDLOADER_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Work on the system image at DIR, like `systemctl --root`: every configured path
    /// is taken beneath DIR, accounts come from DIR/etc, and no systemd call is made.
    /// Commands that seal or decrypt need SYSTEMD_CREDENTIAL_SECRET to name the key
    /// file: this host's own key is never used (nor created) for an image, and they
    /// seal with that key file only (`--key host`), never with this machine's TPM.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Machine-readable output: one JSON document, sorted keys, on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only what went wrong, on stderr; nothing when all went well. `--json`
    /// documents, completion scripts and the man page are printed as asked.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decrypt credentials, write env files and drop-ins, restart what changed.
    Apply(ApplyArgs),
    /// Seal a new credential from stdin (or --from-file) into the creds dir.
    ///
    /// On a terminal it asks twice without echo; otherwise it reads stdin (or
    /// --from-file) to the end.
    ///
    /// A trailing line break is not part of a value: every trailing newline (and
    /// the CR of a trailing CRLF) is removed before sealing, as `$(cat FILE)` does,
    /// so `echo KEY | credloader seal NAME` and a file made with `echo KEY > FILE`
    /// seal KEY. When it removes one, the output says so on a line of its own
    /// (`.value.newline_removed` in JSON). A value whose newline belongs to it (a
    /// PEM block, say) keeps it with `[credentials.NAME]` `keep_newline = true` in
    /// the configuration: seal, rotate, import and sync then seal it as given, and
    /// apply delivers it as sealed.
    Seal(SealArgs),
    /// Replace a credential's value, verify its consumers, roll back on failure.
    ///
    /// The new value is read like `seal` reads it, trailing newline policy
    /// included (see `credloader help seal`).
    Rotate(RotateArgs),
    /// Fetch credentials from the configured source (AWS Secrets Manager), seal and
    /// deliver the changed ones as `rotate` does; unchanged ones cost no write.
    Sync(SyncArgs),
    /// Restore a previous sealed generation of a credential and apply it.
    Rollback(RollbackArgs),
    /// List the kept sealed generations of a credential.
    Generations(NameArg),
    /// List every credential with its consumers, size, key and state.
    List,
    /// Show a credential masked (first characters and length only).
    Show(NameArg),
    /// Per service: unit, delivery, env file, last apply, and whether all is in place.
    Status(StatusArgs),
    /// Audit modes, owners, links, references and expiry; non-zero exit on problems.
    Check,
    /// Migrate a hand-made plaintext env file and its drop-in to credloader.
    ///
    /// A credential already sealed with the same value is reused. One sealed by hand
    /// (without --name, or from `echo` with its trailing newline) is resealed cleanly,
    /// and the old file is kept as a generation. One sealed with a truly different
    /// value stops the import, unless --prefer says which one goes live; the other is
    /// kept as a generation. --dry-run runs every check the real run does.
    Import(ImportArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page (roff) generated from this command line, or write
    /// it and one page per command into a directory.
    #[command(hide = true)]
    Man(ManArgs),
    /// Internal: run by PID 1 in a transient unit that was handed the named
    /// credentials; streams them to stdout (a pipe back to `apply`).
    #[command(hide = true, name = "__dump-credentials")]
    DumpCredentials { names: Vec<String> },
}

#[derive(Debug, Args, Default)]
pub struct ApplyArgs {
    /// Print the plan (files, drop-ins, restarts) and change nothing. Never prints a value.
    #[arg(long)]
    pub dry_run: bool,
    /// Only this service (repeatable).
    #[arg(long = "service", value_name = "NAME", add = complete::services())]
    pub services: Vec<String>,
    /// Write files but restart nothing (a daemon-reload still happens when drop-ins change).
    #[arg(long)]
    pub no_restart: bool,
    /// How many credentials to decrypt at once (default: twice the CPUs).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub jobs: usize,
}

#[derive(Debug, Args)]
pub struct ValueInput {
    /// Read the value from this file instead of stdin (the file is left as it is).
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
    /// The key to seal with.
    #[arg(long, value_enum, default_value_t = Key::Auto)]
    pub key: Key,
    /// The sealed value stops decrypting after TIME (systemd time, e.g. "+90d" or a timestamp).
    #[arg(long, value_name = "TIME")]
    pub not_after: Option<String>,
}

#[derive(Debug, Args)]
pub struct SealArgs {
    /// Credential name (also the env var name by default).
    #[arg(add = complete::credentials())]
    pub name: String,
    #[command(flatten)]
    pub input: ValueInput,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The credential to give a new value (it must exist: `seal` makes new ones).
    #[arg(add = complete::credentials())]
    pub name: String,
    #[command(flatten)]
    pub input: ValueInput,
    /// Only stage the new generation: no apply, no restart, no verification.
    #[arg(long)]
    pub no_apply: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Only these credentials (default: every credential sync manages).
    #[arg(value_name = "NAME", add = complete::credentials())]
    pub names: Vec<String>,
    /// Fetch and compare, then report what would change; write and restart nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The credential to put a kept generation of back.
    #[arg(add = complete::credentials())]
    pub name: String,
    /// The generation to restore (default: the newest kept one not rejected by a rotation).
    #[arg(long, value_name = "GENERATION")]
    pub to: Option<u32>,
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// Credential name.
    #[arg(add = complete::credentials())]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this service (repeatable).
    #[arg(long = "service", value_name = "NAME", add = complete::services())]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The plaintext env file to migrate.
    #[arg(long, value_name = "PATH")]
    pub env_file: PathBuf,
    /// The consuming unit.
    #[arg(long, value_name = "UNIT")]
    pub unit: String,
    /// Service name in the configuration (default: the unit name without `.service`).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// A key that is secret and gets sealed (repeatable).
    #[arg(long = "secret", value_name = "KEY", required = true)]
    pub secrets: Vec<String>,
    /// A key that is not secret and is kept, in plain text, as a `static`
    /// variable of the service's configuration (repeatable). Every key of the
    /// env file must be named by --secret or --static.
    #[arg(long = "static", value_name = "KEY")]
    pub statics: Vec<String>,
    /// The service's user (default: the unit's User=).
    #[arg(long)]
    pub user: Option<String>,
    /// The legacy drop-in to replace (default: every drop-in of the unit naming the env file).
    #[arg(long, value_name = "PATH")]
    pub dropin: Option<PathBuf>,
    /// The key to seal with.
    #[arg(long, value_enum, default_value_t = Key::Auto)]
    pub key: Key,
    /// When a credential is already sealed with a different value than the env file's:
    /// which one goes live. The other is kept as a generation (`credloader rollback NAME`
    /// puts it back). Without it, import stops and names both.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub prefer: Option<Prefer>,
    /// Run every check the real run does, show every step, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `import --prefer`: which of two different values goes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Prefer {
    /// The env file's value (what the service has been reading).
    EnvFile,
    /// The value already sealed in the creds dir.
    Sealed,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print the script for. The script asks credloader for
    /// credential and service names as you type (`COMPLETE=SHELL credloader`).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write credloader.1 and one credloader-COMMAND.1 per command into DIR
    /// instead of printing credloader.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

impl Cli {
    /// The clap definition, which the man page and the shell completions
    /// are generated from.
    pub fn command() -> clap::Command {
        <Cli as clap::CommandFactory>::command()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_positional_argument_has_help() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            for arg in sub.get_positionals() {
                assert!(
                    arg.get_help().is_some(),
                    "credloader {} {}: no help text",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }
}
