//! `credloader seal NAME`, and what `rotate` and `import` share with it:
//! reading a value, checking it, sealing it, installing the sealed file.

use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};

use serde_json::json;

use super::{CommandError, Context, Output};
use crate::cli::{SealArgs, ValueInput};
use crate::config::{Config, ConfigError, Delivery, Loader, Source};
use crate::creds::{hex_digest, Store};
use crate::escape::ShowPath;
use crate::generations::{self, History, Info};
use crate::newline::{self, Entered};
use crate::root::Root;
use crate::rotation::Served;
use crate::secret::{read_secret, Secret, SecretBuf};
use crate::systemd_creds::{self, Key, MAX_PLAINTEXT};
use crate::{envfile, exit, names, state};

pub fn run(ctx: &Context, args: SealArgs) -> Result<Output, CommandError> {
    let name = args.name;
    names::credential(&name).map_err(CommandError::Usage)?;
    let config = load_config_or_default(ctx)?;
    let (dir, _held) = crate::apply::lock(&config, &ctx.root)?;
    drop(dir);
    let creds = creds_dir(&ctx.root, &config.loader)?;
    let served = Served::load(&ctx.root, &config)?;
    if creds
        .entry(&Store::file_name(&name))
        .ok()
        .flatten()
        .is_some()
    {
        return Err(CommandError::Usage(format!(
            "credential {name} already exists ({}); replace its value with `credloader rotate {name}`",
            creds.path().join(Store::file_name(&name)).shown()
        )));
    }
    let entered = enter(&config, &served, &name, read_value(&args.input, &name)?)?;
    let value = &entered.value;
    validate(&served, &name, value)?;
    let not_after = not_after(&args.input)?;
    let (sealed, info) = seal(&name, value, args.input.key, not_after)?;
    install(&creds, &name, &sealed)?;
    record_current(&ctx.root, &config.loader, &name, info.clone());

    let consumers: Vec<String> = served.consumers(&name).map(|s| s.name.clone()).collect();
    let path = creds.path().join(Store::file_name(&name));
    let key = systemd_creds::sealed_key(&sealed);
    let mut human = format!(
        "sealed credential {name} into {} ({} bytes sealed, key {}{})\n",
        path.shown(),
        sealed.len(),
        key.unwrap_or("unknown"),
        not_after
            .map(|t| format!(", not after {}", generations::format_utc(t)))
            .unwrap_or_default()
    );
    if let Some(note) = entered.note(&name) {
        let _ = writeln!(human, "{note}");
    }
    let mut doc = json!({
        "name": name,
        "path": path,
        "sealed_size": sealed.len(),
        "key": key,
        "not_after": not_after,
        "consumers": consumers,
        "value": value_doc(&entered),
    });
    let hidden = say_note(&served, &consumers, &mut human, &mut doc);
    if hidden {
        let _ = writeln!(human, "{name} is sealed, but nothing may get it until then");
    } else if consumers.is_empty() {
        // `credentials = [NAME]` makes NAME the variable too, which must be
        // a valid one; any credential can be mapped with `env`.
        let how = if crate::envfile::valid_name(&name) {
            "add it to a service's `credentials`".to_string()
        } else {
            format!(
                "map it to a variable in a service's `env` (`env = {{ SOME_VAR = \"{name}\" }}`)"
            )
        };
        let _ = writeln!(
            human,
            "no service uses {name} yet; {how} and run `credloader apply`"
        );
    } else {
        let _ = writeln!(
            human,
            "used by: {}; deliver it with `credloader apply`",
            crate::escape::text(&consumers.join(", "))
        );
    }
    let code = if hidden { exit::FAILED } else { exit::OK };
    Ok(Output::new(code, human, doc))
}

/// Says in `human` and `doc` what `served` knows of a credential's
/// `consumers` ([`Served::note`]): why some are served from their last good
/// definition, and whether a broken or refused file may hide one. True in
/// that last case: the command must then not end as if nothing were to do.
pub(super) fn say_note(
    served: &Served,
    consumers: &[String],
    human: &mut String,
    doc: &mut serde_json::Value,
) -> bool {
    if !served.problems.is_empty() {
        doc["config_errors"] = json!(served.problems);
    }
    match served.note(consumers) {
        Some((text, hidden)) => {
            human.push_str(&text);
            hidden
        }
        None => false,
    }
}

/// The configuration, or the defaults when there is none at all yet (a
/// credential may be sealed before any service uses it).
pub(super) fn load_config_or_default(ctx: &Context) -> Result<Config, CommandError> {
    match ctx.load_config() {
        Ok(c) => Ok(c),
        Err(CommandError::Config(ConfigError::Missing { main, .. })) => Ok(Config {
            main,
            broken: Default::default(),
            orphan_problems: Vec::new(),
            place_problems: Vec::new(),
            loader: Loader::default(),
            services: Default::default(),
            sources: None,
            sources_problems: Vec::new(),
            credentials: Default::default(),
            files: Vec::new(),
        }),
        Err(e) => Err(e),
    }
}

// The creds dir, installing a sealed file and reading the current one live
// in the sealed store; `rotate`, `rollback` and `import` use them from here.
pub(super) use crate::sealed::{creds_dir, current as current_sealed, install};

/// Notes what was sealed in the credential's history (best effort: it only
/// feeds `list`/`check`'s not-after column).
pub(super) fn record_current(root: &Root, loader: &Loader, name: &str, info: Info) {
    match History::open(root, &loader.state_dir, name, true) {
        Ok(mut h) => {
            if let Err(e) = h.set_current(info) {
                tracing::warn!("credential {name}: could not record its metadata: {e}");
            }
        }
        Err(e) => tracing::warn!("credential {name}: could not record its metadata: {e}"),
    }
}

/// Seals `value`; returns the sealed bytes and what to record about them.
pub(super) fn seal(
    name: &str,
    value: &Secret,
    key: Key,
    not_after: Option<u64>,
) -> Result<(Vec<u8>, Info), CommandError> {
    let at = not_after.map(|t| format!("@{t}"));
    let sealed = systemd_creds::encrypt(name, value, key, at.as_deref()).map_err(|e| {
        CommandError::Environment(format!("credential {name}: sealing failed: {e}"))
    })?;
    let info = Info {
        digest: hex_digest(&sealed),
        not_after,
        key: Some(
            systemd_creds::sealed_key(&sealed)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{key:?}").to_lowercase()),
        ),
        sealed_at: Some(state::now()),
    };
    Ok((sealed, info))
}

pub(super) fn not_after(input: &ValueInput) -> Result<Option<u64>, CommandError> {
    input
        .not_after
        .as_deref()
        .map(|t| generations::parse_not_after(t, state::now()))
        .transpose()
        .map_err(CommandError::Usage)
}

/// Whether `name` keeps a trailing newline: `[credentials.NAME]
/// keep_newline = true`, as the configuration has it now or as a service
/// served from its last good definition had it.
pub(super) fn keeps_newline(config: &Config, served: &Served, name: &str) -> bool {
    config.keeps_newline(name)
        || served
            .consumers(name)
            .any(|s| s.keep_newline.contains(name))
}

/// `value`, about to be sealed as `name`, after the newline policy
/// ([`newline`]); refused when nothing but line breaks is left of it.
pub(super) fn enter(
    config: &Config,
    served: &Served,
    name: &str,
    value: Secret,
) -> Result<Entered, CommandError> {
    let entered = newline::enter(value, keeps_newline(config, served, name));
    if entered.value.is_empty() && entered.removed > 0 {
        return Err(CommandError::Usage(format!(
            "credential {name}: the value is nothing but a line break; nothing was sealed"
        )));
    }
    Ok(entered)
}

/// The JSON of a value that entered: masked, its length as sealed, and
/// what the newline policy did to it.
pub(super) fn value_doc(entered: &Entered) -> serde_json::Value {
    json!({
        "masked": entered.value.masked(),
        "length": entered.value.len(),
        "newline_removed": entered.removed > 0,
        "newline_kept": entered.kept,
    })
}

/// Checks a value before sealing: not empty, within systemd-creds' limits,
/// and carriable by every env file that will hold it (those of the services
/// served from their last good definition too).
pub(super) fn validate(served: &Served, name: &str, value: &Secret) -> Result<(), CommandError> {
    if value.is_empty() {
        return Err(CommandError::Usage(format!(
            "credential {name}: the value is empty; nothing was sealed"
        )));
    }
    if value.len() > MAX_PLAINTEXT {
        return Err(CommandError::Usage(format!(
            "credential {name}: the value is {} bytes; systemd-creds can carry at most {MAX_PLAINTEXT}",
            value.len()
        )));
    }
    for service in served.services.values() {
        if service.delivery != Delivery::Env {
            continue;
        }
        for var in &service.vars {
            if var.source == Source::Credential(name.to_string()) {
                if let Err(e) = envfile::check_value(&var.name, value.expose()) {
                    return Err(CommandError::Usage(format!(
                        "credential {name}: service {} gets it as variable {} through an env file, \
                         and the value {e}; nothing was sealed",
                        service.name, var.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Reads the value: `--from-file`, else stdin; on a terminal, asks twice
/// without echo.
pub(super) fn read_value(input: &ValueInput, name: &str) -> Result<Secret, CommandError> {
    let limit = MAX_PLAINTEXT + 1;
    let too_large = || {
        CommandError::Usage(format!(
            "credential {name}: the value is larger than {MAX_PLAINTEXT} bytes, the most systemd-creds can carry"
        ))
    };
    if let Some(path) = &input.from_file {
        let file = std::fs::File::open(path).map_err(|e| {
            CommandError::Usage(format!(
                "credential {name}: cannot read {}: {e}",
                path.shown()
            ))
        })?;
        return read_secret(file, limit).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => too_large(),
            _ => CommandError::Usage(format!(
                "credential {name}: cannot read {}: {e}",
                path.shown()
            )),
        });
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = prompt(&format!("Value for {name}: "))?;
        let second = prompt(&format!("Again, to confirm {name}: "))?;
        if !first.ct_eq(second.expose()) {
            return Err(CommandError::Usage(format!(
                "credential {name}: the two entries differ; nothing was sealed"
            )));
        }
        return Ok(first);
    }
    read_secret(&*raw_stdin(), limit).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => too_large(),
        _ => CommandError::Usage(format!("credential {name}: cannot read stdin: {e}")),
    })
}

/// fd 0 without std's stdin buffer: `Stdin` keeps what it read in a global
/// 8 KiB buffer that is never zeroized, which would keep a copy of the value.
/// (`ManuallyDrop`: fd 0 stays open.)
fn raw_stdin() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 0 is open for the life of the process and never closed here.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) })
}

/// Set by SIGINT while [`prompt`] waits for a line.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: nix::libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// One line from the terminal with echo off; the terminal is restored on
/// every path out, Ctrl-C included (it cancels the prompt instead of
/// killing the process with echo still off).
fn prompt(text: &str) -> Result<Secret, CommandError> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let err = |e: String| CommandError::Environment(format!("cannot read from the terminal: {e}"));
    let saved = tcgetattr(&stdin).map_err(|e| err(e.to_string()))?;
    struct Restore<'a>(
        &'a std::io::Stdin,
        nix::sys::termios::Termios,
        Option<SigAction>,
    );
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = tcsetattr(self.0, SetArg::TCSAFLUSH, &self.1);
            if let Some(old) = &self.2 {
                // SAFETY: puts back the handler that was there before.
                let _ = unsafe { sigaction(Signal::SIGINT, old) };
            }
        }
    }
    INTERRUPTED.store(false, std::sync::atomic::Ordering::SeqCst);
    // No SA_RESTART: the read below returns EINTR on Ctrl-C.
    let cancel = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    let old = unsafe { sigaction(Signal::SIGINT, &cancel) }.ok();
    let _restore = Restore(&stdin, saved.clone(), old);
    let mut quiet = saved;
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&stdin, SetArg::TCSAFLUSH, &quiet).map_err(|e| err(e.to_string()))?;
    let mut stderr = std::io::stderr();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
    let mut buf = SecretBuf::with_capacity(256);
    let raw = raw_stdin();
    let mut lock = &*raw;
    let mut byte = [0u8; 1];
    loop {
        // A Ctrl-C that came before this read started.
        if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = writeln!(std::io::stderr());
            return Err(CommandError::Usage(
                "cancelled at the prompt; nothing was sealed".into(),
            ));
        }
        match lock.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                if buf.len() >= MAX_PLAINTEXT {
                    return Err(err("the value is too long".into()));
                }
                buf.push(byte[0]);
            }
            // Ctrl-C (checked at the top of the loop), or another signal.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e.to_string())),
        }
    }
    let mut secret = buf.into_secret();
    if secret.expose().ends_with(b"\r") {
        let trimmed = Secret::copy_from(&secret.expose()[..secret.len() - 1]);
        secret = trimmed;
    }
    Ok(secret)
}
