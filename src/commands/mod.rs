//! One module per command. Each turns parsed arguments into an [`Output`]
//! (a human text, a JSON document and an exit code); `main` prints it.

use serde::Serialize;
use thiserror::Error;

use crate::cli::{Command, Global};
use crate::config::ConfigError;
use crate::exit;
use crate::rotation::RotationError;
use crate::systemd_creds::Key;

mod apply;
mod check;
mod common;
mod context;
mod generations;
mod import;
mod list;
mod prompt;
mod rollback;
mod rotate;
mod seal;
mod show;
mod status;
mod sync;
mod value;

pub use context::Context;

/// What a command produced.
#[derive(Debug)]
pub struct Output {
    /// The exit code (see [`crate::exit`]).
    pub code: u8,
    /// What a person reads on stdout.
    pub human: String,
    json: Json,
    /// The lines of `human` that say what went wrong, when `code` is not
    /// 0: all that `-q` shows (see [`Output::quiet_text`]).
    errors: Vec<String>,
    /// The output is the artifact asked for (a completion script, the man
    /// page), not a report: `-q` does not silence it.
    artifact: bool,
}

#[derive(Debug)]
enum Json {
    Value(serde_json::Value),
    /// Already in its final form (see [`Output::rendered`]).
    Text(String),
}

impl Output {
    pub(crate) fn new(code: u8, human: String, json: impl Serialize) -> Output {
        Output {
            code,
            human,
            json: Json::Value(serde_json::to_value(json).expect("output serializes")),
            errors: Vec::new(),
            artifact: false,
        }
    }

    /// The lines that say what went wrong (for `-q`).
    pub fn with_errors(mut self, errors: Vec<String>) -> Output {
        self.errors = errors;
        self
    }

    /// What was asked for itself, printed even with `-q`.
    fn artifact(text: String, json: impl Serialize) -> Output {
        let mut out = Output::new(exit::OK, text, json);
        out.artifact = true;
        out
    }

    /// What `-q` prints, on stderr: nothing when all went well; else only
    /// what went wrong (the whole report when the command did not single
    /// out its error lines: an error is never silenced).
    pub fn quiet_text(&self) -> Option<String> {
        if self.artifact {
            return None;
        }
        if self.code == exit::OK {
            return Some(String::new());
        }
        if self.errors.is_empty() {
            return Some(self.human.clone());
        }
        Some(self.errors.iter().map(|e| format!("{e}\n")).collect())
    }

    /// An output whose JSON form was rendered by [`Output::json_text`]
    /// before (a no-op apply repeating its report, see `crate::stamp`).
    pub fn rendered(code: u8, human: String, json_text: String) -> Output {
        Output {
            code,
            human,
            json: Json::Text(json_text),
            errors: Vec::new(),
            artifact: false,
        }
    }

    /// The JSON form: sorted keys, compact, trailing newline.
    pub fn json_text(&self) -> String {
        match &self.json {
            Json::Text(t) => t.clone(),
            Json::Value(v) => {
                // serde_json's Map is a BTreeMap (no preserve_order): keys come sorted.
                let mut s = serde_json::to_string(v).expect("value serializes");
                s.push('\n');
                s
            }
        }
    }
}

/// Whether `command` calls `systemd-creds` to seal or decrypt.
fn uses_credential_key(command: &Command) -> bool {
    matches!(
        command,
        Command::Apply(_)
            | Command::Seal(_)
            | Command::Rotate(_)
            | Command::Sync(_)
            | Command::Rollback(_)
            | Command::Show(_)
            | Command::Import(_)
    )
}

/// A command that could not do its job at all.
#[derive(Debug, Error)]
pub enum CommandError {
    // transparent: `{:#}` would otherwise print the message twice.
    /// The configuration could not be loaded (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A name given on the command line is not valid (exit 2).
    #[error(transparent)]
    Name(#[from] crate::names::NameError),
    /// A new value could not be read, was refused, or not sealed.
    #[error(transparent)]
    Value(#[from] value::ValueError),
    /// The apply that a command runs could not run at all (exit 3, or 2
    /// for a service that is not configured).
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    /// A credential's generations could not be read or written (exit 3),
    /// or it has none (exit 2).
    #[error(transparent)]
    Generations(#[from] common::GenerationsError),
    /// The generation asked for cannot be put back (exit 2).
    #[error(transparent)]
    Rollback(#[from] rollback::RollbackError),
    /// The command line asks for what cannot be done, refused before any
    /// I/O (exit 2).
    #[error(transparent)]
    Refused(#[from] UsageError),
    /// `man`: the man pages could not be written (exit 3).
    #[error("man page")]
    ManPage(#[source] std::io::Error),
    /// `dump-credentials`: what PID 1 handed over could not be written
    /// (exit 3).
    #[error(transparent)]
    Handed(std::io::Error),
    /// `seal`: the credential exists, or that cannot be told.
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    /// `rotate`: there is no such credential (exit 2).
    #[error(transparent)]
    Rotate(#[from] rotate::RotateError),
    /// `sync`: nothing to sync from, or the source stopped it (exit 2 or 5).
    #[error(transparent)]
    Sync(#[from] sync::SyncError),
    /// `import` stopped (exit 2 or 3).
    #[error(transparent)]
    Import(#[from] import::ImportError),
    /// `status`: a service asked for is not configured (exit 2).
    #[error(transparent)]
    Status(#[from] status::StatusError),
    /// `show`: the value cannot be had (exit 1).
    #[error(transparent)]
    Show(#[from] show::ShowError),
    /// The sealed store could not be read or written (exit 3).
    #[error(transparent)]
    Store(#[from] crate::sealed::StoreError),
    /// A rotation could not read or write what it keeps, or failed once
    /// new values were installed ([`RotationError::Undone`]: what failed,
    /// and how putting the previous values back went) (exit 3).
    #[error(transparent)]
    Rotation(RotationError),
}

/// What the command line asks for that cannot be done, refused before any
/// I/O (exit 2).
#[derive(Debug, Error)]
pub enum UsageError {
    /// `--root` with `--key tpm2` or `host+tpm2`.
    #[error(
        "--root: an image's credentials are sealed with --key host (the key \
         file SYSTEMD_CREDENTIAL_SECRET names), never with this machine's TPM"
    )]
    ImageTpm,
    /// `--root` with a command that seals or decrypts, and no key file.
    #[error(
        "--root: this host's credential key is never used for an image, and this command \
         seals or decrypts; set SYSTEMD_CREDENTIAL_SECRET to the key file to use (made on \
         this machine with `SYSTEMD_CREDENTIAL_SECRET=FILE systemd-creds setup`)"
    )]
    ImageKeyFile,
    /// `completions SHELL` for a shell there is no script for.
    #[error("no completion script for {0}")]
    NoCompletion(String),
}

impl From<RotationError> for CommandError {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::Apply(a) => CommandError::Apply(a),
            RotationError::Store(s) => CommandError::Store(s),
            e @ (RotationError::Environment(_) | RotationError::Undone { .. }) => {
                CommandError::Rotation(e)
            }
        }
    }
}

impl CommandError {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> u8 {
        use crate::apply::ApplyError as A;
        match self {
            CommandError::Config(_) | CommandError::Name(_) => exit::USAGE,
            CommandError::Apply(A::UnknownService(_)) => exit::USAGE,
            CommandError::Apply(_) | CommandError::Store(_) | CommandError::Rotation(_) => {
                exit::ENVIRONMENT
            }
            CommandError::Value(e) => e.exit_code(),
            CommandError::Generations(e) => e.exit_code(),
            CommandError::Rollback(_)
            | CommandError::Refused(_)
            | CommandError::Rotate(_)
            | CommandError::Status(_) => exit::USAGE,
            CommandError::Seal(e) => e.exit_code(),
            CommandError::Sync(e) => e.exit_code(),
            CommandError::Import(e) => e.exit_code(),
            CommandError::Show(_) => exit::FAILED,
            CommandError::ManPage(_) | CommandError::Handed(_) => exit::ENVIRONMENT,
        }
    }
}

/// Runs `command`.
pub fn run(global: Global, command: Command) -> Result<Output, CommandError> {
    let ctx = Context::new(global);
    let mut command = command;
    if ctx.root.is_offline() {
        image_key(&mut command)?;
        require_key_file(&command)?;
    }
    match command {
        Command::Apply(args) => apply::run(&ctx, args),
        Command::Seal(args) => seal::run(&ctx, args),
        Command::Rotate(args) => rotate::run(&ctx, args),
        Command::Sync(args) => sync::run(&ctx, args),
        Command::Rollback(args) => rollback::run(&ctx, args),
        Command::Generations(args) => generations::run(&ctx, args),
        Command::List => list::run(&ctx),
        Command::Show(args) => show::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::Check => check::run(&ctx),
        Command::Import(args) => import::run(&ctx, args),
        Command::Completions(args) => completions(&args.shell.to_string()),
        Command::DumpCredentials { names } => dump_credentials(&names),
        Command::Man(args) => man(args.out_dir.as_deref()),
    }
}

/// `--root`: this machine's TPM is not the image's either: an image's
/// credentials are sealed with the key file `SYSTEMD_CREDENTIAL_SECRET`
/// names only (`--key auto` becomes `host`; a TPM is refused).
fn image_key(command: &mut Command) -> Result<(), UsageError> {
    let key = match command {
        Command::Seal(a) => &mut a.input.key,
        Command::Rotate(a) => &mut a.input.key,
        Command::Import(a) => &mut a.key,
        _ => return Ok(()),
    };
    match key {
        Key::Auto | Key::Host => *key = Key::Host,
        Key::Tpm2 | Key::HostTpm2 => return Err(UsageError::ImageTpm),
    }
    Ok(())
}

/// `--root`: a command that seals or decrypts needs the image's key file.
/// systemd-creds has no --root: it would use this host's key, and create
/// one if there is none.
fn require_key_file(command: &Command) -> Result<(), UsageError> {
    if !uses_credential_key(command)
        || std::env::var_os("SYSTEMD_CREDENTIAL_SECRET").is_some_and(|v| !v.is_empty())
    {
        return Ok(());
    }
    Err(UsageError::ImageKeyFile)
}

/// `credloader completions SHELL`: the script that registers completion.
fn completions(shell: &str) -> Result<Output, CommandError> {
    let script = crate::complete::registration(shell)
        .ok_or_else(|| UsageError::NoCompletion(shell.to_string()))?;
    let text = String::from_utf8_lossy(&script).into_owned();
    Ok(Output::artifact(
        text.clone(),
        serde_json::json!({ "script": text }),
    ))
}

/// The boot path's helper: writes the credentials PID 1 handed over.
fn dump_credentials(names: &[String]) -> Result<Output, CommandError> {
    let mut out = std::io::stdout().lock();
    crate::creds::dump_handed(names, &mut out).map_err(CommandError::Handed)?;
    Ok(Output::new(
        exit::OK,
        String::new(),
        serde_json::Value::Null,
    ))
}

/// `credloader man`: the man page on stdout, or every page into a directory.
fn man(out_dir: Option<&std::path::Path>) -> Result<Output, CommandError> {
    let env = CommandError::ManPage;
    if let Some(dir) = out_dir {
        let written = crate::manpage::write_all(dir).map_err(env)?;
        let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        return Ok(Output::new(
            exit::OK,
            names.iter().map(|n| format!("{n}\n")).collect(),
            serde_json::json!({ "written": names }),
        ));
    }
    let text = String::from_utf8_lossy(&crate::manpage::main_page().map_err(env)?).into_owned();
    Ok(Output::artifact(
        text.clone(),
        serde_json::json!({ "man": text }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undone_rotation_stays_typed_with_its_text_and_exit_code() {
        let undone = RotationError::Undone {
            error: Box::new(RotationError::Environment("apply failed".into())),
            undo: "the rotation was undone for K".into(),
        };
        let text = undone.to_string();
        let e = CommandError::from(undone);
        assert_eq!(e.to_string(), text);
        assert_eq!(format!("{:#}", anyhow::Error::new(e)), text);
        let e = CommandError::from(RotationError::Undone {
            error: Box::new(RotationError::Environment("x".into())),
            undo: "y".into(),
        });
        assert_eq!(e.exit_code(), exit::ENVIRONMENT);
        let CommandError::Rotation(RotationError::Undone { error, undo }) = e else {
            panic!("flattened: {e:?}");
        };
        assert_eq!((error.to_string(), undo.as_str()), ("x".into(), "y"));
    }

    /// What main prints for `e`, and its exit code.
    fn shown(e: impl Into<CommandError>) -> (String, u8) {
        let e = e.into();
        let code = e.exit_code();
        (format!("{:#}", anyhow::Error::new(e)), code)
    }

    #[test]
    fn generations_and_rollback_errors_read_as_they_did_when_they_were_strings() {
        use crate::systemd_creds::CredsError;
        use common::GenerationsError as G;
        use rollback::RollbackError as R;
        let fs = || crate::safefs::FsError::NotADirectory {
            path: "/x/K".into(),
        };
        let name = || "K".to_string();
        let cases: Vec<(CommandError, &str, u8)> = vec![
            (
                G::List { name: name(), error: fs() }.into(),
                "credential K: generations: /x/K: is not a directory",
                exit::ENVIRONMENT,
            ),
            (
                G::Read { name: name(), number: 3, error: fs() }.into(),
                "credential K: generation 3: /x/K: is not a directory",
                exit::ENVIRONMENT,
            ),
            (
                G::Vanished { name: name(), number: 3 }.into(),
                "credential K: generation 3 vanished",
                exit::ENVIRONMENT,
            ),
            (
                G::Keep {
                    name: name(),
                    value: "the current value",
                    error: fs(),
                }
                .into(),
                "credential K: keeping the current value: /x/K: is not a directory",
                exit::ENVIRONMENT,
            ),
            (
                G::Unknown { name: name() }.into(),
                "credential K does not exist and has no kept generations; seal it with `credloader seal K`",
                exit::USAGE,
            ),
            (
                R::NoSuchGeneration { name: name(), number: 9, kept: vec![] }.into(),
                "credential K has no generation 9; kept: none (see `credloader generations K`)",
                exit::USAGE,
            ),
            (
                R::NoSuchGeneration { name: name(), number: 9, kept: vec![1, 2] }.into(),
                "credential K has no generation 9; kept: 1, 2 (see `credloader generations K`)",
                exit::USAGE,
            ),
            (
                R::NoneKept { name: name() }.into(),
                "credential K has no kept generations to roll back to; `credloader rotate K` keeps one each time",
                exit::USAGE,
            ),
            (
                R::OnlyRejected { name: name(), kept: vec![4, 5] }.into(),
                "credential K has only rejected generations (4, 5): a rotation installed them and they \
                 failed verification; restore one on purpose with `credloader rollback K --to N`",
                exit::USAGE,
            ),
            (
                R::NotRestorable { name: name(), number: 2, error: CredsError::TooLarge }.into(),
                "credential K: generation 2 cannot be restored: the decrypted value is larger than \
                 880640 bytes",
                exit::USAGE,
            ),
        ];
        for (e, text, code) in cases {
            assert_eq!(shown(e), (text.to_string(), code));
        }
    }

    #[test]
    fn import_errors_read_as_they_did_when_they_were_strings() {
        use common::GenerationsError as G;
        use import::ImportError as I;
        let fs = || crate::safefs::FsError::NotADirectory {
            path: "/x/K".into(),
        };
        let undone = |error: CommandError| I::UndoFailed {
            error: Box::new(error),
            undo: Box::new(I::Files(fs()).into()),
        };
        let cases: Vec<(CommandError, &str, u8)> = vec![
            (I::Files(fs()).into(), "/x/K: is not a directory", exit::ENVIRONMENT),
            (
                G::Keep {
                    name: "K".into(),
                    value: "the env file's value",
                    error: fs(),
                }
                .into(),
                "credential K: keeping the env file's value: /x/K: is not a directory",
                exit::ENVIRONMENT,
            ),
            (
                I::Conflicts {
                    conflicts: vec!["a".into(), "b".into()],
                }
                .into(),
                "a; b; keep both and choose which one is live: `--prefer env-file` seals the env \
                 file's value and keeps the sealed one as a generation, `--prefer sealed` keeps \
                 the sealed value and the env file's as a generation (until now the service read \
                 the env file's); `credloader rollback NAME` later puts the other one back. \
                 Nothing was changed",
                exit::USAGE,
            ),
            (
                undone(
                    G::List {
                        name: "K".into(),
                        error: fs(),
                    }
                    .into(),
                )
                .into(),
                "credential K: generations: /x/K: is not a directory; putting back what the import \
                 changed failed too: /x/K: is not a directory",
                exit::ENVIRONMENT,
            ),
            (
                undone(I::Conflicts { conflicts: vec!["a".into()] }.into()).into(),
                "a; keep both and choose which one is live: `--prefer env-file` seals the env \
                 file's value and keeps the sealed one as a generation, `--prefer sealed` keeps \
                 the sealed value and the env file's as a generation (until now the service read \
                 the env file's); `credloader rollback NAME` later puts the other one back. \
                 Nothing was changed; putting back what the import changed failed too: /x/K: is \
                 not a directory",
                exit::ENVIRONMENT,
            ),
        ];
        for (e, text, code) in cases {
            assert_eq!(shown(e), (text.to_string(), code));
        }
    }

    #[test]
    fn import_refusals_read_as_they_did_when_they_were_strings() {
        use import::preflight::PreflightError as P;
        let origin = || crate::config::Origin {
            file: "/e/c.toml".into(),
            line: 3,
        };
        let env = || std::path::PathBuf::from("/e/app.env");
        let cases: Vec<(P, &str)> = vec![
            (
                P::Configured { service: "app".into(), origin: origin() },
                "service app is already configured (/e/c.toml:3); pick another name with --service",
            ),
            (
                P::Ignored { env_file: env(), issues: vec!["line 1: x".into(), "line 2: y".into()] },
                "/e/app.env: systemd would ignore parts of it (line 1: x; line 2: y); fix the file first",
            ),
            (
                P::ConfigExists { path: "/e/d/app.toml".into() },
                "/e/d/app.toml already exists; pick another name with --service",
            ),
            (
                P::NoUnit { unit: "app.service".into() },
                "unit app.service does not exist; install it first or fix --unit",
            ),
            (
                P::NoUser { unit: "app.service".into() },
                "unit app.service has no User=, so it runs as root and its env file must be root's: \
                 pass --user root, or give app.service a User= first (then import takes it from there)",
            ),
            (
                P::NoSecret { key: "K".into(), env_file: env(), has: vec!["A".into(), "B".into()] },
                "--secret K: /e/app.env has no variable K (it has: A, B)",
            ),
            (P::Both { key: "K".into() }, "K is named by both --secret and --static; pick one"),
            (
                P::NoStatic { key: "K".into(), env_file: env() },
                "--static K: /e/app.env has no variable K",
            ),
            (
                P::Unclassified { env_file: env(), keys: vec!["A".into(), "B".into()] },
                "/e/app.env also has A, B: say for each whether it is secret (--secret KEY, sealed) \
                 or not (--static KEY, kept in plain text in the configuration)",
            ),
            (
                P::NotCarriable {
                    env_file: env(),
                    key: "K".into(),
                    error: crate::envfile::ValueError::Nul,
                },
                "/e/app.env: the value of K contains a NUL byte, which an environment variable \
                 cannot hold; fix it before importing",
            ),
            (
                P::Broken {
                    problems: vec![
                        crate::config::Problem { origin: origin(), message: "a".into() },
                        crate::config::Problem { origin: origin(), message: "b".into() },
                    ],
                },
                "the imported service would not be a valid configuration: /e/c.toml:3: a; \
                 /e/c.toml:3: b",
            ),
            (
                P::RunsAs { unit: "app.service".into(), user: "app".into(), why: "it runs as root".into() },
                "import of app.service: refusing to hand its env file to app: it runs as root; pass \
                 --user with the user app.service runs as, or set User=app in app.service",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(shown(e), (text.to_string(), exit::USAGE));
        }
    }

    #[test]
    fn a_rotation_that_cannot_read_what_it_keeps_reads_as_it_did() {
        let e = RotationError::Environment("credential K: generations: x".into());
        assert_eq!(
            shown(e),
            (
                "credential K: generations: x".to_string(),
                exit::ENVIRONMENT
            )
        );
    }

    #[test]
    fn an_error_in_its_own_text_is_not_printed_again_as_its_source() {
        let read = ConfigError::Read {
            path: "/etc/c.toml".into(),
            error: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(
            shown(read),
            (
                "cannot read /etc/c.toml: entity not found".to_string(),
                exit::USAGE
            )
        );
        let fs = crate::safefs::FsError::NotADirectory {
            path: "/var/lib/credloader".into(),
        };
        assert_eq!(
            shown(crate::apply::ApplyError::from(fs)),
            (
                "state directory: /var/lib/credloader: is not a directory".to_string(),
                exit::ENVIRONMENT
            )
        );
    }

    #[test]
    fn command_errors_read_as_they_did_when_they_were_strings() {
        use crate::sources::{OpenError, SourceError, Unavailable};
        let cases: Vec<(CommandError, &str, u8)> = vec![
            (
                UsageError::ImageTpm.into(),
                "--root: an image's credentials are sealed with --key host (the key file \
                 SYSTEMD_CREDENTIAL_SECRET names), never with this machine's TPM",
                exit::USAGE,
            ),
            (
                UsageError::ImageKeyFile.into(),
                "--root: this host's credential key is never used for an image, and this command \
                 seals or decrypts; set SYSTEMD_CREDENTIAL_SECRET to the key file to use (made on \
                 this machine with `SYSTEMD_CREDENTIAL_SECRET=FILE systemd-creds setup`)",
                exit::USAGE,
            ),
            (
                UsageError::NoCompletion("tcsh".into()).into(),
                "no completion script for tcsh",
                exit::USAGE,
            ),
            (
                CommandError::ManPage(std::io::Error::from_raw_os_error(28)),
                "man page: No space left on device (os error 28)",
                exit::ENVIRONMENT,
            ),
            (
                CommandError::Handed(std::io::Error::other("no $CREDENTIALS_DIRECTORY")),
                "no $CREDENTIALS_DIRECTORY",
                exit::ENVIRONMENT,
            ),
            (
                seal::SealError::Exists {
                    name: "K".into(),
                    path: "/c/K.cred".into(),
                }
                .into(),
                "credential K already exists (/c/K.cred); replace its value with `credloader rotate K`",
                exit::USAGE,
            ),
            (
                seal::SealError::Unknowable(crate::safefs::FsError::NotADirectory {
                    path: "/c".into(),
                })
                .into(),
                "/c: is not a directory",
                exit::ENVIRONMENT,
            ),
            (
                rotate::RotateError::Missing {
                    name: "K".into(),
                    dir: "/c".into(),
                }
                .into(),
                "credential K does not exist in /c; seal it first with `credloader seal K`",
                exit::USAGE,
            ),
            (
                show::ShowError::Sealed(crate::creds::CredError::Missing {
                    name: "K".into(),
                    path: "/c/K.cred".into(),
                })
                .into(),
                "credential K is missing: no /c/K.cred; seal it with `credloader seal K`",
                exit::FAILED,
            ),
            (
                sync::SyncError::NoSources { unknown: vec![] }.into(),
                "no [sources] in the configuration: sync needs [sources.aws] (see docs/aws.md)",
                exit::USAGE,
            ),
            (
                sync::SyncError::NoSources {
                    unknown: vec![
                        crate::config::Problem {
                            origin: crate::config::Origin {
                                file: "/d/a.toml".into(),
                                line: 1,
                            },
                            message: "a".into(),
                        };
                        2
                    ],
                }
                .into(),
                "no [sources] in the configuration: sync needs [sources.aws] (see docs/aws.md); a \
                 file that cannot be used may hold it: /d/a.toml:1: a; /d/a.toml:1: a",
                exit::USAGE,
            ),
            (
                sync::SyncError::NotManaged { name: "K".into() }.into(),
                "credential K is not managed by sync: no service uses it and [sources] does not list it",
                exit::USAGE,
            ),
            (
                sync::SyncError::Open(OpenError::Usage("no aws".into())).into(),
                "no aws",
                exit::USAGE,
            ),
            (
                sync::SyncError::Open(OpenError::Source(SourceError::Permanent("bad".into())))
                    .into(),
                "bad; every local credential was kept",
                exit::SOURCE,
            ),
            (
                sync::SyncError::Unavailable {
                    kind: "aws",
                    error: Unavailable {
                        name: "K".into(),
                        locator: "k".into(),
                        error: SourceError::Auth("denied".into()),
                        tries: 1,
                    },
                }
                .into(),
                "the aws source refused us: K (k): denied; nothing was changed, every local \
                 credential was kept",
                exit::SOURCE,
            ),
            (
                sync::SyncError::Unavailable {
                    kind: "aws",
                    error: Unavailable {
                        name: "K".into(),
                        locator: "k".into(),
                        error: SourceError::Transient("timeout".into()),
                        tries: 3,
                    },
                }
                .into(),
                "the aws source is unavailable: K (k): timeout (after 3 tries); nothing was \
                 changed, every local credential was kept",
                exit::SOURCE,
            ),
            (
                status::StatusError::UnknownService {
                    name: "x`y".into(),
                    known: vec!["a".into(), "b".into()],
                }
                .into(),
                "no service named `x`y` in the configuration (known: a, b)",
                exit::USAGE,
            ),
            (
                show::ShowError::Decrypt {
                    name: "K".into(),
                    error: crate::systemd_creds::CredsError::TooLarge,
                }
                .into(),
                "credential K: the decrypted value is larger than 880640 bytes",
                exit::FAILED,
            ),
        ];
        for (e, text, code) in cases {
            assert_eq!(shown(e), (text.to_string(), code));
        }
    }
}
