//! Findings about the creds dir and each sealed credential: owner and mode,
//! files that are no credential, missing and unused ones, a live value a
//! rotation rejected, expiry, and a sealed trailing newline.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;

use nix::sys::stat::FileStat;

use super::{libc_ifmt, Audit, Findings, Severity, EXPIRY_WARNING_SECS};
use crate::config::Delivery;
use crate::creds::Sealed;
use crate::escape::ShowPath;
use crate::generations::{format_utc, History};
use crate::safefs::Dir;
use crate::systemd_creds;

/// The creds dir itself: root:root 0700, and there.
pub(super) fn creds_dir(a: &Audit, f: &mut Findings) {
    let shown = a.root.host(&a.loader.creds_dir).shown().to_string();
    match std::fs::symlink_metadata(a.root.host(&a.loader.creds_dir)) {
        Ok(m) if m.file_type().is_dir() => {
            if m.uid() != 0 || m.gid() != 0 || m.mode() & 0o7777 != 0o700 {
                f.add(
                    Severity::Error,
                    shown.clone(),
                    format!(
                        "creds dir is {}:{} mode {:04o}, not root:root 0700",
                        m.uid(),
                        m.gid(),
                        m.mode() & 0o7777
                    ),
                    format!("chown root:root {0} && chmod 0700 {0}", shown),
                );
            }
        }
        Ok(_) => {}
        Err(_) => f.add(
            Severity::Warning,
            shown,
            "creds dir does not exist",
            "seal a credential with `credloader seal NAME` (it creates the directory root 0700)",
        ),
    }
}

/// Every `NAME.cred` in the creds dir (symlinks are [`symlinks`]' to report).
pub(super) fn sealed_files(a: &Audit, f: &mut Findings) {
    let Ok(dir) = a.store.dir() else {
        return;
    };
    for entry in dir.list().unwrap_or_default() {
        let Some(name) = entry.to_str().and_then(|s| s.strip_suffix(".cred")) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let Ok(Some(st)) = dir.entry(&entry) else {
            continue;
        };
        sealed_file(a, f, &entry, name, &st);
    }
}

/// One sealed file: a regular file, root:root 0600, that systemd-creds can read.
fn sealed_file(a: &Audit, f: &mut Findings, entry: &OsStr, name: &str, st: &FileStat) {
    let shown = a
        .root
        .host(&a.loader.creds_dir.join(entry))
        .shown()
        .to_string();
    let fmt = st.st_mode & libc_ifmt();
    if fmt == 0o120000 {
        return; // reported as a symlink
    }
    if fmt != 0o100000 {
        f.add(
            Severity::Error,
            shown,
            "is not a regular file",
            format!("remove it and seal {name} again"),
        );
        return;
    }
    if st.st_uid != 0 || st.st_gid != 0 || st.st_mode & 0o7777 != 0o600 {
        f.add(
            Severity::Error,
            shown.clone(),
            format!(
                "credential {name} is {}:{} mode {:04o}, not root:root 0600",
                st.st_uid,
                st.st_gid,
                st.st_mode & 0o7777
            ),
            format!("chown root:root {0} && chmod 0600 {0}", shown),
        );
    }
    if let Ok(sealed) = a.store.sealed(name) {
        if systemd_creds::sealed_key(&sealed.bytes).is_none() {
            f.add(
                Severity::Error,
                shown,
                format!(
                    "credential {name} is not a credential systemd-creds can read \
                     (damaged, or not made by `systemd-creds encrypt`)"
                ),
                format!(
                    "seal a new value with `credloader rotate {name}`, or restore the file from a backup"
                ),
            );
        }
    }
}

/// Symlinks in the creds dir, whatever their name.
pub(super) fn symlinks(a: &Audit, f: &mut Findings) {
    let Ok(dir) = a.store.dir() else {
        return;
    };
    for entry in dir.list().unwrap_or_default() {
        if is_symlink(dir, &entry) {
            let shown = a
                .root
                .host(&a.loader.creds_dir.join(&entry))
                .shown()
                .to_string();
            f.add(
                Severity::Error,
                shown.clone(),
                "is a symbolic link in the creds dir; credloader will not read it",
                format!("replace it with the sealed file itself (`cp --remove-destination \"$(readlink -f {0})\" {0}`)", shown),
            );
        }
    }
}

fn is_symlink(dir: &Dir, entry: &OsStr) -> bool {
    matches!(dir.entry(entry), Ok(Some(st)) if st.st_mode & libc_ifmt() == 0o120000)
}

/// Credentials a served service uses that are not sealed (not when the
/// creds dir cannot be read: that is reported above, and every credential
/// would look missing).
pub(super) fn missing(a: &Audit, f: &mut Findings) {
    if a.store.dir().is_err() {
        return;
    }
    for name in a.served.all_credentials() {
        if !a.on_disk.contains(name) {
            let users: Vec<String> = a.served.consumers(name).map(|s| s.name.clone()).collect();
            f.add(
                Severity::Error,
                format!("credential {name}"),
                format!(
                    "is used by {} but {} does not exist",
                    users.join(", "),
                    a.sealed_path(name)
                ),
                format!("seal it with `credloader seal {name}`"),
            );
        }
    }
}

/// Sealed credentials no served service uses.
pub(super) fn unused(a: &Audit, f: &mut Findings) {
    let referenced = a.served.all_credentials();
    for name in a
        .on_disk
        .iter()
        .filter(|n| !referenced.contains(n.as_str()))
    {
        // While a file is broken, what it uses is unknown: never advise
        // removing a credential it may still need.
        if a.config.is_clean() {
            f.add(
                Severity::Warning,
                format!("credential {name}"),
                "no configured service uses it",
                format!(
                    "add it to a service's `credentials`; if the key is retired, revoke it where \
                     it was issued. {} may stay (an unused credential is never decrypted); it may \
                     be the only copy of that key, so do not delete it before the key is revoked",
                    a.sealed_path(name)
                ),
            );
        } else {
            f.add(
                Severity::Warning,
                format!("credential {name}"),
                "no service that loads uses it, but the configuration has errors and a broken file may",
                "keep it: fix the configuration errors first, then check again",
            );
        }
    }
}

/// What the generations recorded of each sealed value: a rotation that
/// rejected it, and its expiry as recorded when credloader sealed it.
pub(super) fn recorded(a: &Audit, f: &mut Findings) {
    for name in &a.on_disk {
        let Ok(sealed) = a.store.sealed(name) else {
            continue;
        };
        let Ok(history) = History::open(a.root, &a.loader.state_dir, name, false) else {
            continue;
        };
        rejected(f, name, &history, &sealed);
        expiry(a, f, name, &history, &sealed);
    }
}

/// The live value is a generation a rotation installed and that failed
/// verification.
fn rejected(f: &mut Findings, name: &str, history: &History, sealed: &Sealed) {
    if let Ok(Some((n, when))) = history.rejected_as(&sealed.digest) {
        f.add(
            Severity::Error,
            format!("credential {name}"),
            format!(
                "its live value is generation {n}, which failed verification when a rotation \
                 installed it at {}",
                format_utc(when)
            ),
            format!(
                "go back to the newest good value with `credloader rollback {name}`, or, once \
                 the cause is fixed, verify this one again with `credloader rollback {name} --to {n}`"
            ),
        );
    }
}

/// The live value expired, or expires within [`EXPIRY_WARNING_SECS`].
fn expiry(a: &Audit, f: &mut Findings, name: &str, history: &History, sealed: &Sealed) {
    let Some(at) = history.info_for(&sealed.digest).and_then(|i| i.not_after) else {
        return;
    };
    if at <= a.now {
        f.add(
            Severity::Error,
            format!("credential {name}"),
            format!(
                "expired at {} (its not-after time); it no longer decrypts",
                format_utc(at)
            ),
            format!("seal a new value with `credloader rotate {name}`"),
        );
    } else if at - a.now <= EXPIRY_WARNING_SECS {
        f.add(
            Severity::Warning,
            format!("credential {name}"),
            format!(
                "expires at {}, within {} days",
                format_utc(at),
                EXPIRY_WARNING_SECS / 86400
            ),
            format!("seal a new value with `credloader rotate {name}` before then"),
        );
    }
}

/// Sealed values that end in a newline their consumers do not keep, as the
/// last apply that decrypted them recorded (see [`crate::newline`]): an
/// env file gets the value without it (a warning: the service gets what
/// `$(cat ...)` gave it, but the sealed file is not what is meant), while
/// `delivery = "credential"` gets it as sealed (an error: the service
/// receives bytes the policy says are not part of the value).
pub(super) fn newlines(a: &Audit, f: &mut Findings) {
    for name in a.served.all_credentials() {
        let (Some(rec), Ok(sealed)) = (a.state.sealed.get(name), a.store.sealed(name)) else {
            continue;
        };
        if rec.ends_in_newline != Some(true) || rec.digest != sealed.digest {
            continue;
        }
        let (mut stripped, mut handed) = (Vec::new(), Vec::new());
        for s in a
            .served
            .consumers(name)
            .filter(|s| !s.keep_newline.contains(name))
        {
            match s.delivery {
                Delivery::Env => stripped.push(s.name.as_str()),
                Delivery::Credential => handed.push(s.name.as_str()),
            }
        }
        newline(f, name, &stripped, &handed);
    }
}

/// The findings of one credential sealed with a newline: `stripped` get it
/// without, `handed` get it as sealed.
fn newline(f: &mut Findings, name: &str, stripped: &[&str], handed: &[&str]) {
    let subject = format!("credential {name}");
    let s = |who: &[&str]| if who.len() == 1 { "s" } else { "" };
    if !stripped.is_empty() {
        f.add(
            Severity::Warning,
            subject.clone(),
            format!(
                "its sealed value ends in a newline (as `echo` adds); {} get{} it without \
                 (as `$(cat ...)` gave it)",
                stripped.join(", "),
                s(stripped)
            ),
            crate::newline::fix(name),
        );
    }
    if !handed.is_empty() {
        f.add(
            Severity::Error,
            subject,
            format!(
                "its sealed value ends in a newline, and {} (delivery = \"credential\") \
                 get{} it as sealed, newline included",
                handed.join(", "),
                s(handed)
            ),
            crate::newline::fix(name),
        );
    }
}
