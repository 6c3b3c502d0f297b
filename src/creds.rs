//! Stage 2: read credentials.
//!
//! Sealed `NAME.cred` files are read from the creds dir (never through a
//! symlink) and hashed; their plaintext comes from `$CREDENTIALS_DIRECTORY`
//! when PID 1 already decrypted them for this unit, and otherwise from the
//! real `systemd-creds decrypt`, several at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::escape::ShowPath;
use crate::root::Root;
use crate::safefs::{Dir, DirPolicy, FsError};
use crate::secret::{read_secret, Secret};
use crate::systemd_creds::{self, CredsError, MAX_PLAINTEXT, MAX_SEALED};

#[derive(Debug, Error, Clone)]
pub enum CredError {
    #[error("credential {name} is missing: no {}; seal it with `credloader seal {name}`", path.shown())]
    Missing { name: String, path: PathBuf },
    #[error("credential {name}: {message}")]
    Unreadable { name: String, message: String },
    #[error("credential {name}: {source}")]
    Decrypt { name: String, source: CredsError },
}

/// A sealed credential as found on disk (ciphertext is not secret).
#[derive(Debug, Clone)]
pub struct Sealed {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of the sealed bytes.
    pub digest: String,
    pub mtime: i64,
    /// Identity of the file the bytes were read from.
    pub id: crate::state::FileId,
}

/// A decrypted credential.
#[derive(Debug)]
pub struct Plain {
    pub secret: Secret,
    /// Sealed without `--name` (embedded name `NAME.cred`).
    pub legacy: bool,
}

pub fn hex_digest(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(bytes).iter() {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// The creds dir, opened once.
pub struct Store {
    dir: Result<Dir, FsError>,
    path: PathBuf,
    cache: Mutex<BTreeMap<String, Result<Sealed, CredError>>>,
}

impl Store {
    /// Opens `creds_dir`; a failure is reported per credential later, so that
    /// services without credentials are still served.
    pub fn open(root: &Root, creds_dir: &Path) -> Store {
        Store {
            dir: Dir::open(root, creds_dir, DirPolicy::EXISTING),
            path: root.host(creds_dir),
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn dir(&self) -> Result<&Dir, &FsError> {
        self.dir.as_ref()
    }

    pub fn file_name(name: &str) -> OsString {
        OsString::from(format!("{name}.cred"))
    }

    /// The names of every credential file in the creds dir (for `list` and
    /// `check`): none when it cannot be read.
    pub fn sealed_names(&self) -> BTreeSet<String> {
        self.dir()
            .ok()
            .and_then(|d| d.list().ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| {
                n.to_str()
                    .and_then(|s| s.strip_suffix(".cred"))
                    .map(str::to_string)
            })
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// Reads (once per run) the sealed file of `name`.
    pub fn sealed(&self, name: &str) -> Result<Sealed, CredError> {
        if let Some(hit) = self.cache.lock().unwrap().get(name) {
            return hit.clone();
        }
        let result = self.read_sealed(name);
        self.cache
            .lock()
            .unwrap()
            .insert(name.to_string(), result.clone());
        result
    }

    /// The digest of `name`'s sealed bytes. When its file still has the
    /// identity recorded in `known` (see [`crate::state::State::sealed`]),
    /// that costs one stat; otherwise the file is read and hashed.
    pub fn fingerprint(
        &self,
        name: &str,
        known: &BTreeMap<String, crate::state::SealedRecord>,
    ) -> Result<String, CredError> {
        if let (Some(rec), Ok(dir)) = (known.get(name), self.dir.as_ref()) {
            if let Ok(Some(st)) = dir.entry(&Self::file_name(name)) {
                if st.st_mode & nix::sys::stat::SFlag::S_IFMT.bits()
                    == nix::sys::stat::SFlag::S_IFREG.bits()
                    && crate::state::FileId::from(&st) == rec.id
                {
                    return Ok(rec.digest.clone());
                }
            }
        }
        self.sealed(name).map(|s| s.digest)
    }

    /// What was read in full during this run, as records for the state.
    /// `verified`: `plain` (this run's decryption) has it decrypted under its
    /// own name; bytes read but not decrypted keep what `known` (the last
    /// state) said about the same digest.
    pub fn read_records(
        &self,
        plain: &BTreeMap<String, Result<Plain, CredError>>,
        known: &BTreeMap<String, crate::state::SealedRecord>,
    ) -> BTreeMap<String, crate::state::SealedRecord> {
        self.cache
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(n, r)| {
                r.as_ref().ok().map(|s| {
                    let same = known.get(n).filter(|k| k.digest == s.digest);
                    let (verified, ends_in_newline) = match plain.get(n) {
                        Some(Ok(p)) => (
                            !p.legacy,
                            Some(crate::newline::ends_in_newline(p.secret.expose())),
                        ),
                        Some(Err(_)) => (false, None),
                        None => (
                            same.is_some_and(|k| k.verified),
                            same.and_then(|k| k.ends_in_newline),
                        ),
                    };
                    (
                        n.clone(),
                        crate::state::SealedRecord {
                            digest: s.digest.clone(),
                            id: s.id,
                            verified,
                            ends_in_newline,
                        },
                    )
                })
            })
            .collect()
    }

    fn read_sealed(&self, name: &str) -> Result<Sealed, CredError> {
        let dir = self.dir.as_ref().map_err(|e| CredError::Unreadable {
            name: name.into(),
            message: format!("the creds dir is unusable: {e}"),
        })?;
        let file = Self::file_name(name);
        match dir.read(&file, MAX_SEALED) {
            Ok(Some((bytes, st))) => {
                if bytes.is_empty() {
                    return Err(CredError::Unreadable {
                        name: name.into(),
                        message: format!(
                            "{} is empty; seal it again with `credloader rotate {name}`",
                            self.path.join(&file).shown()
                        ),
                    });
                }
                Ok(Sealed {
                    name: name.into(),
                    digest: hex_digest(&bytes),
                    bytes,
                    mtime: st.st_mtime,
                    id: crate::state::FileId::from(&st),
                })
            }
            Ok(None) => Err(CredError::Missing {
                name: name.into(),
                path: self.path.join(&file),
            }),
            Err(e) => Err(CredError::Unreadable {
                name: name.into(),
                message: e.to_string(),
            }),
        }
    }
}

/// Where plaintext comes from, in order of preference:
/// 1. `$CREDENTIALS_DIRECTORY/NAME`, when PID 1 already decrypted it for the
///    unit credloader runs in (at boot, see [`crate::boot`]), and only if
///    the manifest handed over with it (`credloader.manifest`) lists NAME
///    with the identity of the sealed file read now: unchanged since the
///    generator looked, so PID 1 decrypted these very bytes;
/// 2. PID 1 in bulk: one transient unit with a `LoadCredentialEncrypted=`
///    per credential streams them back over a pipe (~65 ms for 200, where
///    200 `systemd-creds` calls take ~2 s). It needs the state directory,
///    which holds the copies PID 1 reads (see [`pid1_bulk`]). One bad
///    credential fails that unit as a whole (243/CREDENTIALS), so any
///    failure falls through to:
/// 3. `systemd-creds decrypt` per credential, several at a time, which
///    isolates the bad one and says what is wrong with it.
#[derive(Debug, Clone)]
pub struct Decrypter {
    handed: Option<Handed>,
    /// Bulk decryption by PID 1 may be tried (a live system).
    via_pid1: bool,
}

/// What PID 1 handed to the unit credloader runs in.
#[derive(Debug, Clone)]
struct Handed {
    /// `$CREDENTIALS_DIRECTORY`.
    dir: PathBuf,
    /// Name → identity of the sealed file PID 1 was given (the manifest).
    manifest: BTreeMap<String, crate::state::FileId>,
}

impl Handed {
    fn open_dir(path: &Path) -> Option<Dir> {
        Dir::open(
            &Root::live(),
            path,
            DirPolicy {
                create: None,
                strict: false,
            },
        )
        .ok()
    }

    /// `None` without a (valid) manifest: then nothing handed over is used.
    fn load(dir: PathBuf) -> Option<Handed> {
        let manifest = crate::manifest::read_manifest(&Self::open_dir(&dir)?)?;
        Some(Handed { dir, manifest })
    }
}

/// Below this many credentials a transient unit costs more than it saves.
const BULK_MIN: usize = 4;

impl Decrypter {
    /// Uses what the running system offers; under `--root` only `systemd-creds`.
    pub fn detect(root: &Root, manager: crate::systemd::Manager) -> Decrypter {
        let handed = match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(d) if !root.is_offline() && !d.is_empty() => Handed::load(PathBuf::from(d)),
            _ => None,
        };
        let via_pid1 = manager == crate::systemd::Manager::Live
            && !root.is_offline()
            && std::env::var_os("CREDLOADER_NO_BULK_DECRYPT").is_none();
        Decrypter { handed, via_pid1 }
    }

    /// The value PID 1 handed over for `sealed`, if the manifest binds it to
    /// exactly the file `sealed` was read from.
    fn handed(handed: &Handed, dir: &Dir, sealed: &Sealed) -> Option<Plain> {
        match handed.manifest.get(&sealed.name) {
            None => return None,
            Some(id) if *id != sealed.id => {
                tracing::info!(
                    "credential {} changed since PID 1 decrypted it; decrypting the bytes read now",
                    sealed.name
                );
                return None;
            }
            Some(_) => {}
        }
        let (secret, _) = dir
            .read_secret(OsStr::new(&sealed.name), MAX_PLAINTEXT)
            .ok()
            .flatten()?;
        if secret.expose() == crate::manifest::MISSING {
            // The file was missing when the unit started (and is back, the
            // same identity: it cannot be, but this costs nothing).
            return None;
        }
        Some(Plain {
            secret,
            legacy: false,
        })
    }

    fn one(sealed: &Sealed) -> Result<Plain, CredError> {
        systemd_creds::decrypt(&sealed.name, &sealed.bytes)
            .map(|(secret, legacy)| Plain { secret, legacy })
            .map_err(|source| CredError::Decrypt {
                name: sealed.name.clone(),
                source,
            })
    }

    /// Decrypts every credential in `sealed` (see the type's docs), and
    /// tells which source decrypted how many. `state` is the state
    /// directory (root's, 0700); without it PID 1 does not decrypt in bulk.
    pub fn decrypt_all(
        &self,
        sealed: &[&Sealed],
        jobs: usize,
        state: Option<&Dir>,
    ) -> (BTreeMap<String, Result<Plain, CredError>>, DecryptCounts) {
        let mut counts = DecryptCounts::default();
        let mut results = BTreeMap::new();
        let mut rest: Vec<&Sealed> = Vec::new();
        let handed = self
            .handed
            .as_ref()
            .and_then(|h| Some((h, Handed::open_dir(&h.dir)?)));
        for s in sealed {
            let got = handed.as_ref().and_then(|(h, dir)| Self::handed(h, dir, s));
            match got {
                Some(p) => {
                    counts.handed += 1;
                    results.insert(s.name.clone(), Ok(p));
                }
                None => rest.push(s),
            }
        }
        let bulk = within_budget(&rest);
        if let (true, Some(state)) = (self.via_pid1 && bulk.len() >= BULK_MIN, state) {
            match pid1_bulk(&bulk, state) {
                Ok(mut got) => rest.retain(|s| match got.remove(&s.name) {
                    Some(secret) => {
                        counts.pid1 += 1;
                        results.insert(
                            s.name.clone(),
                            Ok(Plain {
                                secret,
                                legacy: false,
                            }),
                        );
                        false
                    }
                    None => true,
                }),
                Err(why) => {
                    tracing::info!("PID 1 did not decrypt in bulk ({why}); decrypting one by one")
                }
            }
        }
        counts.systemd_creds = rest.len();
        let next = AtomicUsize::new(0);
        let found = Mutex::new(results);
        // No thread at all when there is nothing left to decrypt.
        let workers = jobs.max(1).min(rest.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = rest.get(i) else { break };
                    let r = Self::one(item);
                    found.lock().unwrap().insert(item.name.clone(), r);
                });
            }
        });
        (found.into_inner().unwrap(), counts)
    }
}

/// How many credentials each source decrypted in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecryptCounts {
    /// Read from `$CREDENTIALS_DIRECTORY`.
    pub handed: usize,
    /// Decrypted by PID 1 in one transient unit.
    pub pid1: usize,
    /// One `systemd-creds decrypt` each.
    pub systemd_creds: usize,
}

/// PID 1 gives one unit at most 1 MiB of credentials in all
/// (`CREDENTIALS_TOTAL_SIZE_MAX`) and fails it beyond. A sealed file's size
/// bounds its plaintext from above; what does not fit goes one by one.
pub const PID1_BUDGET: u64 = 1024 * 1024 - 64 * 1024;

/// The credentials of `sealed`, in order, while their sealed sizes fit in
/// [`PID1_BUDGET`].
fn within_budget<'a>(sealed: &[&'a Sealed]) -> Vec<&'a Sealed> {
    let mut used = 0u64;
    let mut out = Vec::new();
    for s in sealed {
        let cost = s.bytes.len() as u64;
        if used + cost <= PID1_BUDGET {
            used += cost;
            out.push(*s);
        }
    }
    out
}

/// The sandbox of the transient unit that hands credentials back: it only
/// reads its credentials directory and writes to the pipe it was given, as
/// a user of its own rather than root.
const BULK_SANDBOX: &[&str] = &[
    "DefaultDependencies=no",
    "DynamicUser=yes",
    "CapabilityBoundingSet=",
    "NoNewPrivileges=yes",
    "PrivateNetwork=yes",
    "RestrictAddressFamilies=AF_UNIX",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "MemoryDenyWriteExecute=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "LimitCORE=0",
    "UMask=0077",
];

/// Where [`pid1_bulk`] puts the copies PID 1 reads: `decrypt.<boot>.<pid>`
/// in the state directory, which outlives boots (hence the boot).
const SCRATCH_PREFIX: &str = "decrypt.";

/// This boot, as a short name (the first part of the kernel's boot id).
fn boot_tag() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|b| b.split('-').next().map(str::to_string))
        .unwrap_or_else(|| "boot".to_string())
}

fn scratch_name(pid: u32) -> OsString {
    OsString::from(format!("{SCRATCH_PREFIX}{}.{pid}", boot_tag()))
}

/// A directory of its own in the state directory (root's, 0700) holding
/// copies of the sealed bytes for one bulk decrypt; removed when dropped.
struct Scratch<'a> {
    state: &'a Dir,
    name: OsString,
    dir: Dir,
}

impl<'a> Scratch<'a> {
    fn create(state: &'a Dir) -> Result<Scratch<'a>, FsError> {
        let name = scratch_name(std::process::id());
        // One a crashed run with our pid left (the state dir outlives boots).
        state.remove_subdir(&name)?;
        let dir = state.subdir(&name, DirPolicy::create(0o700))?;
        Ok(Scratch { state, name, dir })
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.state.remove_subdir(&self.name) {
            tracing::warn!("{e}");
        }
    }
}

/// Removes the scratch directories of runs that died before removing
/// their own (their pid is gone). The copies are ciphertext that the creds
/// dir holds anyway, but they must not pile up.
pub fn sweep_scratch(state: &Dir) {
    let boot = boot_tag();
    for name in state.list().unwrap_or_default() {
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else {
            continue;
        };
        let alive = match rest.split_once('.') {
            // Only ESRCH means gone (EPERM: alive, someone else's).
            Some((b, pid)) if b == boot => pid.parse::<i32>().is_ok_and(|pid| {
                pid as u32 == std::process::id()
                    || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                        != Err(nix::errno::Errno::ESRCH)
            }),
            // Another boot's: nothing of it runs now.
            _ => false,
        };
        if !alive {
            if let Err(e) = state.remove_subdir(&name) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Whether PID 1 takes `path` as written in a `LoadCredentialEncrypted=`:
/// absolute, and nothing it would expand or split on.
fn plain_path(path: &Path) -> bool {
    path.is_absolute()
        && path.to_str().is_some_and(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        })
}

/// Asks PID 1 to decrypt `sealed` in one transient unit; see [`Decrypter`].
///
/// PID 1 gets the very bytes that were read (and hashed) from the creds
/// dir, never the creds dir's own paths, which it would open again: what it
/// decrypts is what the state records, and no link is followed. They go as
/// copies in a directory only root can enter ([`Scratch`]), not inline
/// (`SetCredentialEncrypted=`): an inline credential is in systemd-run's
/// argv and in the unit's properties, both readable by every local user,
/// and a credential sealed to the TPM alone is one `systemd-creds decrypt`
/// away from plaintext for anyone who may use the TPM.
fn pid1_bulk(sealed: &[&Sealed], state: &Dir) -> Result<BTreeMap<String, Secret>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find our own binary: {e}"))?;
    if !exe.is_file() {
        return Err(format!("{} is gone (upgraded while running?)", exe.shown()));
    }
    let scratch = Scratch::create(state).map_err(|e| e.to_string())?;
    if !plain_path(scratch.dir.path()) {
        return Err(format!(
            "{}: not a path a unit file can carry as is",
            scratch.dir.path().shown()
        ));
    }
    let mut cmd = Command::new("systemd-run");
    cmd.args([
        "--quiet",
        "--wait",
        "--pipe",
        "--collect",
        "--service-type=exec",
    ])
    .arg("--description=credloader: decrypt credentials");
    for p in BULK_SANDBOX {
        cmd.args(["-p", p]);
    }
    for s in sealed {
        scratch
            .dir
            .create_new(OsStr::new(&s.name), &s.bytes)
            .map_err(|e| e.to_string())?;
        cmd.arg("-p").arg(format!(
            "LoadCredentialEncrypted={}:{}",
            s.name,
            scratch.dir.path().join(&s.name).display()
        ));
    }
    cmd.arg(&exe)
        .arg("__dump-credentials")
        .args(sealed.iter().map(|s| &s.name));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run systemd-run: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let err = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut e);
        e
    });
    let stream = read_secret(stdout, sealed.len() * (MAX_PLAINTEXT + 512));
    let status = child.wait().map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&err.join().unwrap_or_default())
        .trim()
        .replace('\n', "; ");
    if !status.success() {
        return Err(format!(
            "systemd-run: {status}{}",
            if err.is_empty() {
                String::new()
            } else {
                format!(": {err}")
            }
        ));
    }
    let stream = stream.map_err(|e| format!("reading the credentials back: {e}"))?;
    parse_frames(stream.expose()).ok_or_else(|| "the credentials came back garbled".to_string())
}

/// `NAME \0 LEN(u64 LE) BYTES`, repeated.
fn parse_frames(mut data: &[u8]) -> Option<BTreeMap<String, Secret>> {
    let mut out = BTreeMap::new();
    while !data.is_empty() {
        let nul = data.iter().position(|&b| b == 0)?;
        let name = std::str::from_utf8(&data[..nul]).ok()?.to_string();
        let len = u64::from_le_bytes(data.get(nul + 1..nul + 9)?.try_into().ok()?) as usize;
        let value = data.get(nul + 9..nul + 9 + len)?;
        out.insert(name, Secret::copy_from(value));
        data = &data[nul + 9 + len..];
    }
    Some(out)
}

/// The other end of [`pid1_bulk`]: writes each handed-over credential to `out`.
pub fn dump_handed(names: &[String], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
        .ok_or_else(|| std::io::Error::other("no $CREDENTIALS_DIRECTORY: only PID 1 runs this"))?;
    let dir = Dir::open(
        &Root::live(),
        Path::new(&dir),
        DirPolicy {
            create: None,
            strict: false,
        },
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    for name in names {
        crate::names::credential(name).map_err(std::io::Error::other)?;
        let (secret, _) = dir
            .read_secret(OsStr::new(name), MAX_PLAINTEXT)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .ok_or_else(|| {
                std::io::Error::other(format!("credential {name} was not handed over"))
            })?;
        out.write_all(name.as_bytes())?;
        out.write_all(&[0])?;
        out.write_all(&(secret.len() as u64).to_le_bytes())?;
        out.write_all(secret.expose())?;
    }
    out.flush()
}

/// A sensible number of concurrent decrypts: they are process spawns that
/// mostly wait, so a few more than the cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .clamp(2, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        for (n, v) in [("A", &b"x\0y"[..]), ("B_2", b""), ("C", &[0xffu8; 300][..])] {
            buf.extend_from_slice(n.as_bytes());
            buf.push(0);
            buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
            buf.extend_from_slice(v);
        }
        let m = parse_frames(&buf).unwrap();
        assert_eq!(m["A"].expose(), b"x\0y");
        assert_eq!(m["B_2"].expose(), b"");
        assert_eq!(m["C"].len(), 300);
        assert!(parse_frames(&buf[..buf.len() - 1]).is_none());
    }

    fn sealed_of(name: &str, size: usize) -> Sealed {
        Sealed {
            name: name.into(),
            bytes: vec![b'A'; size],
            digest: String::new(),
            mtime: 0,
            id: crate::state::FileId {
                dev: 0,
                ino: 0,
                size: size as i64,
                ctime_ns: 0,
            },
        }
    }

    #[test]
    fn a_bulk_stays_within_pid1s_budget() {
        let big = PID1_BUDGET as usize / 2;
        let all = [
            sealed_of("A", big),
            sealed_of("B", big),
            sealed_of("C", big),
            sealed_of("D", 100),
        ];
        let refs: Vec<&Sealed> = all.iter().collect();
        let names: Vec<&str> = within_budget(&refs)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["A", "B"],
            "C and D would exceed the budget by 100 bytes"
        );
        let names: Vec<&str> = within_budget(&refs[2..])
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["C", "D"]);
    }

    #[test]
    fn scratch_copies_are_private_and_gone_after_use_or_after_a_crash() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let state = Dir::open(&Root::live(), tmp.path(), DirPolicy::create(0o700)).unwrap();
        let mine = tmp.path().join(scratch_name(std::process::id()));
        {
            let scratch = Scratch::create(&state).unwrap();
            scratch.dir.create_new(OsStr::new("K"), b"sealed").unwrap();
            assert!(
                scratch.dir.create_new(OsStr::new("K"), b"x").is_err(),
                "never reuses a file"
            );
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&mine), 0o700);
            assert_eq!(mode(&mine.join("K")), 0o600);
        }
        assert!(!mine.exists(), "removed when dropped");

        // What runs killed mid-decrypt left: a dead pid's is swept, a live
        // one's (a concurrent dry run) is not.
        let dead = tmp.path().join(scratch_name(i32::MAX as u32));
        let live = tmp.path().join(scratch_name(1));
        let old_boot = tmp.path().join(format!("{SCRATCH_PREFIX}0ldb00t.1"));
        for d in [&dead, &live, &mine, &old_boot] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("K"), b"sealed").unwrap();
        }
        sweep_scratch(&state);
        assert!(!dead.exists() && !old_boot.exists() && live.exists() && mine.exists());
        // A stale one carrying our own pid is cleared before use.
        drop(Scratch::create(&state).unwrap());
        assert!(!mine.exists());
    }

    #[test]
    fn a_handed_value_counts_only_when_the_manifest_binds_it_and_it_is_real() {
        let tmp = tempfile::tempdir().unwrap();
        let id = |ino| crate::state::FileId {
            dev: 1,
            ino,
            size: 10,
            ctime_ns: 7,
        };
        std::fs::write(tmp.path().join("BOUND"), b"value").unwrap();
        std::fs::write(tmp.path().join("MOVED"), b"value").unwrap();
        std::fs::write(tmp.path().join("GONE"), crate::manifest::MISSING).unwrap();
        let handed = Handed {
            dir: tmp.path().to_path_buf(),
            manifest: [("BOUND", 1), ("MOVED", 2), ("GONE", 3)]
                .into_iter()
                .map(|(n, i)| (n.to_string(), id(i)))
                .collect(),
        };
        let dir = Handed::open_dir(tmp.path()).unwrap();
        let sealed = |name: &str, ino| Sealed {
            name: name.into(),
            bytes: Vec::new(),
            digest: String::new(),
            mtime: 0,
            id: id(ino),
        };
        let got = |s: Sealed| Decrypter::handed(&handed, &dir, &s).map(|p| p.secret);
        assert_eq!(got(sealed("BOUND", 1)).unwrap().expose(), b"value");
        assert!(got(sealed("MOVED", 9)).is_none(), "another file now");
        assert!(got(sealed("GONE", 3)).is_none(), "PID 1's default");
        assert!(got(sealed("UNLISTED", 1)).is_none());
    }

    #[test]
    fn the_sealed_names_are_the_cred_files_and_none_when_the_dir_cannot_be_read() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::at(tmp.path());
        let creds = tmp.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        for f in [
            "DB_PASSWORD.cred",
            "API_KEY.cred",
            ".DB_PASSWORD.cred.tmp",
            ".hidden.cred",
        ] {
            std::fs::write(creds.join(f), b"sealed").unwrap();
        }
        std::fs::write(creds.join("notes.txt"), b"").unwrap();
        let names = Store::open(&root, Path::new("/creds")).sealed_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(names, ["API_KEY", "DB_PASSWORD"]);
        assert!(Store::open(&root, Path::new("/absent"))
            .sealed_names()
            .is_empty());
    }
}
