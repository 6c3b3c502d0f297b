//! The fast boot path: `credloader-generator` lets PID 1 decrypt into
//! `credloader.service` itself, and a manifest binds what it handed over to
//! the sealed files apply reads.
//!
//! At boot (and at every `daemon-reload`) systemd runs the generator, a
//! symlink to `/usr/bin/credloader` named `credloader-generator`. It writes
//! `credloader.service.d/50-credloader-boot.conf` into the generator dir with
//! one `LoadCredentialEncrypted=NAME:CREDS_DIR/NAME.cred` per credential that
//! is safe to hand to PID 1, and `SetCredential=credloader.manifest:…`
//! listing the identity (device, inode, size, ctime) each of those files had
//! when the generator looked. Safe means: the last apply decrypted exactly
//! these bytes under their own name (`state.sealed[NAME].verified`, same
//! identity now), so PID 1 will too. A credential that fails anyway (a new
//! host key, an expired not-after) fails the unit with 243/CREDENTIALS, and
//! `OnFailure=credloader-refresh.service` applies the normal way.
//!
//! apply then takes a handed-over value only when the manifest lists its name
//! with the identity of the sealed file apply just read (see
//! [`crate::creds::Decrypter`]): the file did not change from the generator's
//! look to apply's read, so PID 1 decrypted those very bytes in between.
//!
//! The generator never decrypts, never fails boot (any problem: it writes
//! nothing, says why in one line on stderr, exits 0), and costs a config
//! parse, a state parse and one `lstat` per credential.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;
use thiserror::Error;

use crate::config::{self, Config, ConfigError, Delivery};
use crate::creds::{Store, PID1_BUDGET};
use crate::escape::Shown;
use crate::manifest::{entry, format_manifest, manifest_name, MISSING_ESCAPED};
use crate::names::NameError;
use crate::root::Root;
use crate::safefs::{Dir, DirPolicy, FsError};
use crate::state::{FileId, SealedRecord, State};

/// The name argv[0] carries when systemd runs us as a generator.
pub const GENERATOR_NAME: &str = "credloader-generator";
/// The drop-in the generator writes, in `<normal-dir>/credloader.service.d/`.
pub const DROPIN: &str = "50-credloader-boot.conf";
const UNIT: &str = "credloader.service";

/// A credential whose not-after is closer than this is not handed to PID 1.
pub const EXPIRY_MARGIN_SECS: u64 = 3600;

/// What the generator hands to PID 1, and what it leaves to apply and why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub handed: Vec<(String, FileId)>,
    pub skipped: Vec<(String, &'static str)>,
}

/// The credentials env-file services need: credential-delivery services get
/// theirs from PID 1 at their own start, apply never hands their values on.
pub fn needed(config: &Config) -> std::collections::BTreeSet<&str> {
    config
        .services
        .values()
        .filter(|s| s.delivery == Delivery::Env)
        .flat_map(|s| s.credentials())
        .collect()
}

/// Picks, among `needed`, the credentials safe to hand to PID 1: a regular
/// file with one link whose identity is the one `sealed` (the state)
/// records, last decrypted under its own name, not known to expire within
/// [`EXPIRY_MARGIN_SECS`] of `now` (`not_after` looks it up: credloader
/// records it when it seals), within PID 1's budget.
pub fn select<'a>(
    needed: impl IntoIterator<Item = &'a str>,
    sealed: &BTreeMap<String, SealedRecord>,
    creds: &Dir,
    not_after: impl Fn(&str, &SealedRecord) -> Option<u64>,
    now: u64,
) -> Selection {
    let mut sel = Selection::default();
    let mut used: u64 = 0;
    let mut names: Vec<&str> = needed.into_iter().collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let skip = |why| (name.to_string(), why);
        if crate::names::credential(name).is_err() {
            sel.skipped.push(skip("not a valid credential name"));
            continue;
        }
        let Some(rec) = sealed.get(name) else {
            sel.skipped.push(skip("never read by an apply"));
            continue;
        };
        if !rec.verified {
            sel.skipped
                .push(skip("the last apply did not decrypt it under its own name"));
            continue;
        }
        let st = match creds.entry(&Store::file_name(name)) {
            Ok(Some(st)) => st,
            Ok(None) => {
                sel.skipped.push(skip("missing"));
                continue;
            }
            Err(_) => {
                sel.skipped.push(skip("cannot be examined"));
                continue;
            }
        };
        if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() || st.st_nlink != 1 {
            sel.skipped
                .push(skip("not a regular file with a single link"));
            continue;
        }
        let id = FileId::from(&st);
        if id != rec.id {
            sel.skipped.push(skip("changed since the last apply"));
            continue;
        }
        // PID 1 would fail the whole unit on it (and every env consumer's
        // first start with it): let apply find it and fail its services only.
        if not_after(name, rec).is_some_and(|t| t <= now + EXPIRY_MARGIN_SECS) {
            sel.skipped.push(skip(
                "its not-after has passed or is less than an hour away",
            ));
            continue;
        }
        let cost = st.st_size.max(0) as u64 + entry(name, &id).len() as u64 + 1;
        if used + cost > PID1_BUDGET {
            sel.skipped
                .push(skip("beyond PID 1's 1 MiB of credentials per unit"));
            continue;
        }
        used += cost;
        sel.handed.push((name.to_string(), id));
    }
    sel
}

/// The drop-in for `credloader.service`; `None` when nothing is handed.
pub fn render(sel: &Selection, creds_dir: &Path) -> Option<String> {
    if sel.handed.is_empty() {
        return None;
    }
    let mut s = String::from(
        "# Written by credloader-generator: PID 1 decrypts these credentials into\n\
         # credloader.service; apply uses a value only if the manifest lists the\n\
         # identity of the sealed file it reads (docs/architecture.md, boot path).\n\
         [Service]\n",
    );
    for (name, _) in &sel.handed {
        // The `SetCredential=` is a default (see [`MISSING`]): a file
        // deleted after the generator looked (a credential retired, then
        // this unit restarted by hand) is skipped by PID 1 instead of
        // failing the unit with 243.
        s.push_str(&format!(
            "LoadCredentialEncrypted={name}:{}/{name}.cred\nSetCredential={name}:{MISSING_ESCAPED}\n",
            creds_dir.display()
        ));
    }
    for (i, chunk) in format_manifest(&sel.handed).iter().enumerate() {
        s.push_str(&format!("SetCredential={}:{chunk}\n", manifest_name(i)));
    }
    Some(s)
}

/// What one generator run did, for its one line of log.
#[derive(Debug)]
pub struct Generated {
    pub handed: usize,
    pub skipped: Vec<(String, &'static str)>,
}

/// What happens when the generator writes nothing.
const FALLBACK: &str = "credloader.service decrypts everything itself";

/// Why the generator wrote nothing (each says so: [`FALLBACK`]).
#[derive(Debug, Error)]
pub enum GenerateError {
    /// The configuration does not load.
    #[error("cannot load the configuration ({0}); {FALLBACK}")]
    Config(ConfigError),
    /// The creds dir cannot be named in a unit file.
    #[error("{0}; {FALLBACK}")]
    CredsDirName(NameError),
    /// No state dir (yet).
    #[error("no state ({0}: not applied yet, or /var not mounted yet); {FALLBACK}")]
    NoStateDir(FsError),
    /// The state cannot be read.
    #[error("{0}; {FALLBACK}")]
    State(FsError),
    /// The state was read with a warning (it may not be credloader's).
    #[error("{0}; {FALLBACK}")]
    StateWarning(String),
    /// The state records no sealed file yet.
    #[error("no credential in {}/state.json yet; {FALLBACK}", Shown(.0))]
    NoCredential(PathBuf),
    /// The creds dir cannot be opened.
    #[error("{0}; {FALLBACK}")]
    CredsDir(FsError),
    /// The drop-in cannot be written.
    #[error("cannot write {UNIT}.d/{DROPIN}: {0}; {FALLBACK}")]
    Write(std::io::Error),
}

/// Writes the drop-in for the configuration at `config_path` into
/// `normal_dir`. `Err` says why nothing was written.
pub fn generate(normal_dir: &Path, config_path: &Path) -> Result<Generated, GenerateError> {
    let config = config::load(config_path, false).map_err(GenerateError::Config)?;
    let needed = needed(&config);
    if needed.is_empty() {
        return Ok(Generated {
            handed: 0,
            skipped: Vec::new(),
        });
    }
    let loader = &config.loader;
    let creds_dir = loader.creds_dir.to_str().unwrap_or_default();
    crate::names::managed_path(creds_dir).map_err(GenerateError::CredsDirName)?;
    let live = Root::live();
    let state_dir = Dir::open(&live, &loader.state_dir, DirPolicy::EXISTING)
        .map_err(GenerateError::NoStateDir)?;
    let state = match State::load(&state_dir) {
        Ok((_, Some(warning))) => return Err(GenerateError::StateWarning(warning)),
        Err(e) => return Err(GenerateError::State(e)),
        Ok((s, None)) if s.sealed.is_empty() => {
            return Err(GenerateError::NoCredential(state_dir.path().to_path_buf()))
        }
        Ok((s, None)) => s,
    };
    let creds = Dir::open(&live, &loader.creds_dir, DirPolicy::EXISTING)
        .map_err(GenerateError::CredsDir)?;
    // The not-after credloader recorded when it sealed these very bytes.
    let not_after = |name: &str, rec: &SealedRecord| {
        let history =
            crate::generations::History::open(&live, &loader.state_dir, name, false).ok()?;
        history
            .meta
            .current
            .filter(|i| i.digest == rec.digest)
            .and_then(|i| i.not_after)
    };
    let sel = select(
        needed,
        &state.sealed,
        &creds,
        not_after,
        crate::state::now(),
    );
    if let Some(text) = render(&sel, &loader.creds_dir) {
        write(normal_dir, text.as_bytes()).map_err(GenerateError::Write)?;
    }
    Ok(Generated {
        handed: sel.handed.len(),
        skipped: sel.skipped,
    })
}

/// Writes `<dir>/credloader.service.d/50-credloader-boot.conf` whole or not
/// at all: a cut-off line could name a path that does not exist.
fn write(normal_dir: &Path, text: &[u8]) -> std::io::Result<()> {
    let dir = normal_dir.join(format!("{UNIT}.d"));
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{DROPIN}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(DROPIN))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `credloader-generator NORMAL-DIR EARLY-DIR LATE-DIR`, as systemd runs
/// it. Always 0: a generator must never fail boot.
pub fn generator_main(args: &[OsString]) -> u8 {
    let say = |msg: &str| {
        let _ = writeln!(std::io::stderr(), "{GENERATOR_NAME}: {msg}");
    };
    let Some(normal) = args.get(1).filter(|_| args.len() == 4) else {
        say("usage: credloader-generator NORMAL-DIR EARLY-DIR LATE-DIR (run by systemd); nothing written");
        return 0;
    };
    match generate(&PathBuf::from(normal), Path::new(config::DEFAULT_CONFIG)) {
        Ok(g) if g.skipped.is_empty() => {}
        Ok(g) => {
            let mut names: Vec<String> = g
                .skipped
                .iter()
                .take(5)
                .map(|(n, why)| format!("{n}: {why}"))
                .collect();
            if g.skipped.len() > 5 {
                names.push(format!("and {} more", g.skipped.len() - 5));
            }
            say(&format!(
                "PID 1 decrypts {} credential(s) for {UNIT}; {} left to apply ({})",
                g.handed,
                g.skipped.len(),
                names.join("; ")
            ));
        }
        Err(e) => say(&e.to_string()),
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn why_nothing_was_generated_reads_as_it_did_when_it_was_a_string() {
        let fallback = "credloader.service decrypts everything itself";
        let fs = || FsError::NotADirectory {
            path: "/var/lib/credloader".into(),
        };
        let cases = [
            (
                GenerateError::NoStateDir(fs()),
                format!(
                    "no state (/var/lib/credloader: is not a directory: not applied yet, or /var \
                     not mounted yet); {fallback}"
                ),
            ),
            (
                GenerateError::State(fs()),
                format!("/var/lib/credloader: is not a directory; {fallback}"),
            ),
            (
                GenerateError::StateWarning("w".into()),
                format!("w; {fallback}"),
            ),
            (
                GenerateError::NoCredential("/var/lib/credloader".into()),
                format!("no credential in /var/lib/credloader/state.json yet; {fallback}"),
            ),
            (
                GenerateError::CredsDir(fs()),
                format!("/var/lib/credloader: is not a directory; {fallback}"),
            ),
            (
                GenerateError::Write(std::io::Error::from_raw_os_error(28)),
                format!(
                    "cannot write credloader.service.d/50-credloader-boot.conf: No space left on \
                     device (os error 28); {fallback}"
                ),
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    /// A creds dir with `files`, and a state recording each one's identity.
    fn scene(files: &[&str]) -> (tempfile::TempDir, Dir, BTreeMap<String, SealedRecord>) {
        let tmp = tempfile::tempdir().unwrap();
        let mut sealed = BTreeMap::new();
        for f in files {
            let p = tmp.path().join(format!("{f}.cred"));
            std::fs::write(&p, b"sealed-bytes").unwrap();
            sealed.insert(f.to_string(), verified(&p));
        }
        let dir = Dir::open(&Root::live(), tmp.path(), DirPolicy::EXISTING).unwrap();
        (tmp, dir, sealed)
    }

    /// A verified record of the file at `p`, as the state holds it.
    fn verified(p: &std::path::Path) -> SealedRecord {
        let st = nix::sys::stat::lstat(p).unwrap();
        SealedRecord {
            digest: "d".into(),
            id: FileId::from(&st),
            verified: true,
            ends_in_newline: None,
        }
    }

    #[test]
    fn a_credential_about_to_expire_is_left_to_apply() {
        let (_tmp, dir, sealed) = scene(&["EXPIRED", "SOON", "LATER", "UNKNOWN"]);
        let now = 1_800_000_000;
        let not_after = |name: &str, _: &SealedRecord| match name {
            "EXPIRED" => Some(now - 1),
            "SOON" => Some(now + EXPIRY_MARGIN_SECS - 1),
            "LATER" => Some(now + 90 * 86400),
            _ => None,
        };
        let sel = select(
            ["EXPIRED", "SOON", "LATER", "UNKNOWN"],
            &sealed,
            &dir,
            not_after,
            now,
        );
        let handed: Vec<&str> = sel.handed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(handed, ["LATER", "UNKNOWN"]);
        assert!(sel
            .skipped
            .iter()
            .all(|(n, why)| (n == "EXPIRED" || n == "SOON") && why.contains("not-after")));
    }

    #[test]
    fn hands_over_only_what_the_last_apply_verified_unchanged() {
        let (tmp, dir, mut sealed) =
            scene(&["GOOD", "LEGACY", "ROTATED", "GONE", "LINKED", "LINK"]);
        sealed.get_mut("LEGACY").unwrap().verified = false;
        let p = |n: &str| tmp.path().join(format!("{n}.cred"));
        // Rotated by rename: another inode.
        std::fs::write(p("next"), b"new").unwrap();
        std::fs::rename(p("next"), p("ROTATED")).unwrap();
        std::fs::remove_file(p("GONE")).unwrap();
        std::fs::hard_link(p("LINKED"), tmp.path().join("elsewhere")).unwrap();
        std::fs::remove_file(p("LINK")).unwrap();
        std::os::unix::fs::symlink(p("GOOD"), p("LINK")).unwrap();
        let needed = [
            "GOOD", "LEGACY", "ROTATED", "GONE", "LINKED", "LINK", "NEVER", "GOOD",
        ];
        let sel = select(needed, &sealed, &dir, |_, _| None, 0);
        assert_eq!(
            sel.handed
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["GOOD"]
        );
        assert_eq!(sel.handed[0].1, sealed["GOOD"].id);
        let why: BTreeMap<&str, &str> = sel.skipped.iter().map(|(n, w)| (n.as_str(), *w)).collect();
        assert_eq!(
            why["LEGACY"],
            "the last apply did not decrypt it under its own name"
        );
        assert_eq!(why["ROTATED"], "changed since the last apply");
        assert_eq!(why["GONE"], "missing");
        assert_eq!(why["LINKED"], "not a regular file with a single link");
        assert_eq!(why["LINK"], "not a regular file with a single link");
        assert_eq!(why["NEVER"], "never read by an apply");
        assert_eq!(why.len(), 6);

        let text = render(&sel, Path::new("/etc/quantum/creds")).unwrap();
        assert!(text.contains(
            "\n[Service]\nLoadCredentialEncrypted=GOOD:/etc/quantum/creds/GOOD.cred\n\
             SetCredential=GOOD:\\x00\nSetCredential=credloader.manifest:GOOD="
        ));
        assert!(render(&Selection::default(), Path::new("/x")).is_none());
    }

    #[test]
    fn stays_within_pid1s_budget() {
        let names: Vec<String> = (0..40).map(|i| format!("BIG{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (tmp, _, _) = scene(&[]);
        let mut sealed = BTreeMap::new();
        for n in &refs {
            let p = tmp.path().join(format!("{n}.cred"));
            std::fs::write(&p, vec![b'A'; 64 * 1024]).unwrap();
            sealed.insert(n.to_string(), verified(&p));
        }
        let dir = Dir::open(&Root::live(), tmp.path(), DirPolicy::EXISTING).unwrap();
        let sel = select(refs.iter().copied(), &sealed, &dir, |_, _| None, 0);
        assert_eq!(
            sel.handed.len(),
            14,
            "960 KiB of 64 KiB files, with the manifest"
        );
        assert_eq!(sel.skipped.len(), 26);
    }
}
