//! Sealed generations of a credential, kept so `rotate` and `rollback` can
//! go back: `<state_dir>/generations/NAME/<N>.cred` (root, dirs 0700, files
//! 0600), pruned to `loader.keep_generations`.
//!
//! **A value keeps its number.** Each value gets a number once, when it
//! becomes current (or, for a value credloader did not install, when it is
//! first kept), from a counter that never goes back, so a number once shown
//! always names the same value: the current value has one too, it is kept
//! under that number when it is replaced, and a value put back by
//! `rollback` is current again under its own number.
//!
//! Beside them, `meta.json` records what cannot be read back from a sealed
//! file without decrypting it: the not-after time and key it was sealed with,
//! for the current file and for every kept generation, each tied to the
//! SHA-256 of the sealed bytes so a hand-replaced file is not misdescribed.
//! Nothing here is secret: sealed bytes, digests, times.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::creds::hex_digest;
use crate::root::Root;
use crate::safefs::{Dir, DirPolicy, FsError, Owner};
use crate::systemd_creds::MAX_SEALED;

const META: &str = "meta.json";

/// What is known about one sealed value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// SHA-256 of the sealed bytes this describes.
    pub digest: String,
    /// Seconds since the epoch after which it no longer decrypts.
    pub not_after: Option<u64>,
    /// The key asked for at sealing (`auto`, `host`, ...).
    pub key: Option<String>,
    /// When credloader sealed it (seconds since the epoch).
    pub sealed_at: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    /// The value in the creds dir, as credloader last installed it.
    pub current: Option<Info>,
    /// The number of that value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_number: Option<u32>,
    /// The next number to give a value: numbers are never reused (0 in a
    /// file from before it was recorded: one past the highest known).
    #[serde(default)]
    pub next: u32,
    /// Kept generations by number.
    #[serde(default)]
    pub generations: BTreeMap<u32, Info>,
    /// Kept generations that `rotate` (or `sync`) installed, saw fail
    /// verification and took out again, by number: when (seconds since the
    /// epoch). Kept so the value can be retried on purpose (`rollback --to
    /// N`), never picked by a plain `rollback`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected: BTreeMap<u32, u64>,
}

/// One kept generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub number: u32,
    pub size: u64,
    pub mtime: i64,
    pub digest: String,
    pub not_after: Option<u64>,
    /// When a rotation installed this value and rolled it back because a
    /// consumer did not verify with it (see [`Meta::rejected`]).
    pub rejected_at: Option<u64>,
}

/// The generations directory of one credential.
pub struct History {
    dir: Option<Dir>,
    pub name: String,
    pub meta: Meta,
}

fn file_name(n: u32) -> OsString {
    OsString::from(format!("{n}.cred"))
}

impl History {
    /// Opens the history of `name`; with `create`, makes the directories
    /// (root 0700). Without it, a missing directory is an empty history.
    pub fn open(
        root: &Root,
        state_dir: &Path,
        name: &str,
        create: bool,
    ) -> Result<History, FsError> {
        let path = state_dir.join("generations").join(name);
        let dir = if create {
            Some(Dir::open(root, &path, DirPolicy::create(0o700))?)
        } else {
            match Dir::open(root, &path, DirPolicy::EXISTING) {
                Ok(d) => Some(d),
                Err(FsError::Os {
                    errno: nix::errno::Errno::ENOENT,
                    ..
                }) => None,
                Err(e) => return Err(e),
            }
        };
        let meta = match &dir {
            Some(d) => d
                .read(OsStr::new(META), 1024 * 1024)?
                .and_then(|(b, _)| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            None => Meta::default(),
        };
        Ok(History {
            dir,
            name: name.to_string(),
            meta: Meta {
                name: name.to_string(),
                ..meta
            },
        })
    }

    fn dir(&self) -> Result<&Dir, FsError> {
        self.dir.as_ref().ok_or_else(|| FsError::Os {
            op: "open",
            path: self.name.clone().into(),
            errno: nix::errno::Errno::ENOENT,
        })
    }

    /// The kept generations, oldest first.
    pub fn list(&self) -> Result<Vec<Generation>, FsError> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in dir.list()? {
            let Some(n) = entry
                .to_str()
                .and_then(|s| s.strip_suffix(".cred"))
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((bytes, st)) = dir.read(&entry, MAX_SEALED)? {
                let digest = hex_digest(&bytes);
                let recorded = self.meta.generations.get(&n).filter(|i| i.digest == digest);
                let not_after = recorded.and_then(|i| i.not_after);
                let rejected_at = recorded.and(self.meta.rejected.get(&n).copied());
                out.push(Generation {
                    number: n,
                    size: st.st_size as u64,
                    mtime: st.st_mtime,
                    digest,
                    not_after,
                    rejected_at,
                });
            }
        }
        out.sort_by_key(|g| g.number);
        Ok(out)
    }

    /// The sealed bytes of generation `n`.
    pub fn read(&self, n: u32) -> Result<Option<Vec<u8>>, FsError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        Ok(dir.read(&file_name(n), MAX_SEALED)?.map(|(b, _)| b))
    }

    /// Keeps `bytes`, the value being replaced, as a generation under its
    /// own number (a new one if it has none), then prunes to `keep`.
    /// Returns its number.
    pub fn push(&mut self, bytes: &[u8], info: Option<Info>, keep: u32) -> Result<u32, FsError> {
        let digest = hex_digest(bytes);
        let own = self.current_number_of(&digest).filter(|n| {
            self.meta
                .generations
                .get(n)
                .is_none_or(|i| i.digest == digest)
        });
        let n = match own {
            Some(n) => n,
            None => self.allocate()?,
        };
        if self.read(n)?.is_none_or(|b| hex_digest(&b) != digest) {
            self.write(n, bytes, info)?;
        }
        self.prune(keep)?;
        Ok(n)
    }

    /// The number of the current value, if `digest` is the current value's.
    fn current_number_of(&self, digest: &str) -> Option<u32> {
        let current = self.meta.current.as_ref();
        current
            .filter(|c| c.digest == digest)
            .and(self.meta.current_number)
    }

    /// A number no value ever had.
    fn allocate(&mut self) -> Result<u32, FsError> {
        let highest = self
            .list()?
            .iter()
            .map(|g| g.number)
            .chain(self.meta.generations.keys().copied())
            .chain(self.meta.rejected.keys().copied())
            .chain(self.meta.current_number)
            .max()
            .unwrap_or(0);
        let n = self.meta.next.max(highest + 1);
        self.meta.next = n + 1;
        Ok(n)
    }

    /// Keeps `bytes`, a value that was installed as number `number`,
    /// failed verification and was taken out again, as a generation marked
    /// rejected at `at` (a new number if it got none); then drops generation
    /// `replaced`, the value that is current again (it would only duplicate
    /// it), and prunes to `keep`. Returns its number.
    pub fn keep_rejected(
        &mut self,
        bytes: &[u8],
        info: Info,
        number: Option<u32>,
        replaced: Option<u32>,
        at: u64,
        keep: u32,
    ) -> Result<u32, FsError> {
        let n = match number.filter(|n| Some(*n) != replaced) {
            Some(n) => n,
            None => self.allocate()?,
        };
        // The mark is saved before the file exists: a crash in between
        // must never leave the rejected value kept but unmarked, for a
        // plain `rollback` to put back (a mark without a file is ignored).
        self.meta.generations.insert(n, info.clone());
        self.meta.rejected.insert(n, at);
        self.save()?;
        self.write(n, bytes, Some(info))?;
        if let Some(r) = replaced.filter(|r| *r != n) {
            self.dir()?.remove(&file_name(r))?;
            self.meta.generations.remove(&r);
            self.meta.rejected.remove(&r);
        }
        self.prune(keep)?;
        Ok(n)
    }

    /// Writes `bytes` as generation `n` (not pruned, not saved).
    fn write(&mut self, n: u32, bytes: &[u8], info: Option<Info>) -> Result<(), FsError> {
        let dir = self.dir()?;
        dir.write_atomic(&file_name(n), bytes, Owner::ROOT_0600)?;
        let digest = hex_digest(bytes);
        let info = match info {
            Some(i) if i.digest == digest => i,
            _ => Info {
                digest,
                ..Info::default()
            },
        };
        self.meta.generations.insert(n, info);
        Ok(())
    }

    /// Removes the oldest generations beyond `keep`. Rejected ones are
    /// counted apart (at most `keep` of them too): failed rotations must not
    /// push out the good values a plain `rollback` goes back to.
    pub fn prune(&mut self, keep: u32) -> Result<Vec<u32>, FsError> {
        let list = self.list()?;
        let mut removed = Vec::new();
        let mut kept: Vec<u32> = Vec::new();
        for rejected in [false, true] {
            let group: Vec<u32> = list
                .iter()
                .filter(|g| g.rejected_at.is_some() == rejected)
                .map(|g| g.number)
                .collect();
            let excess = group.len().saturating_sub(keep as usize);
            for n in &group[..excess] {
                self.dir()?.remove(&file_name(*n))?;
                self.meta.generations.remove(n);
                removed.push(*n);
            }
            kept.extend_from_slice(&group[excess..]);
        }
        removed.sort_unstable();
        self.meta.generations.retain(|n, _| kept.contains(n));
        self.meta.rejected.retain(|n, _| kept.contains(n));
        self.save()?;
        Ok(removed)
    }

    /// Generation `n` was restored and verified: it is no longer rejected.
    pub fn clear_rejected(&mut self, n: u32) -> Result<(), FsError> {
        if self.meta.rejected.remove(&n).is_some() {
            self.save()?;
        }
        Ok(())
    }

    /// Records what the creds dir now holds, and returns its number: the
    /// number of the kept generation it is (a value put back), the number
    /// it had as current already, or a new one.
    pub fn set_current(&mut self, info: Info) -> Result<u32, FsError> {
        let kept = self
            .list()?
            .into_iter()
            .rev()
            .find(|g| g.digest == info.digest)
            .map(|g| g.number);
        let n = match kept.or_else(|| self.current_number_of(&info.digest)) {
            Some(n) => n,
            None => self.allocate()?,
        };
        self.meta.current = Some(info);
        self.meta.current_number = Some(n);
        self.save()?;
        Ok(n)
    }

    pub fn save(&self) -> Result<(), FsError> {
        let bytes = serde_json::to_vec_pretty(&self.meta).expect("meta serializes");
        self.dir()?
            .write_atomic(OsStr::new(META), &bytes, Owner::ROOT_0600)
    }

    /// The kept generation marked rejected that holds the sealed bytes with
    /// `digest` (the live value, say), and when it was rejected.
    pub fn rejected_as(&self, digest: &str) -> Result<Option<(u32, u64)>, FsError> {
        Ok(self
            .list()?
            .into_iter()
            .find_map(|g| Some((g.number, g.rejected_at?)).filter(|_| g.digest == digest)))
    }

    /// The recorded info for the sealed bytes with `digest`, if any.
    pub fn info_for(&self, digest: &str) -> Option<&Info> {
        self.meta
            .current
            .iter()
            .chain(self.meta.generations.values())
            .find(|i| i.digest == digest)
    }
}

/// Records `info` as what the creds dir now holds for `name` (best effort:
/// it only feeds `list`/`check`'s not-after column and the generation
/// numbers; a failure is a warning).
pub fn record_current(root: &Root, state_dir: &Path, name: &str, info: Info) {
    let recorded = History::open(root, state_dir, name, true).and_then(|mut h| h.set_current(info));
    if let Err(e) = recorded {
        tracing::warn!("credential {name}: could not record its metadata: {e}");
    }
}

/// A `--not-after` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAfterError {
    /// Not one of the forms [`parse_not_after`] takes.
    #[error("--not-after `{0}` is not understood; use +90d, +12h, @EPOCH, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)")]
    NotUnderstood(String),
    /// A time that has passed already.
    #[error("--not-after `{0}` is in the past; a credential must be valid when sealed")]
    Past(String),
}

/// Parses `--not-after`: `+N` with a unit (`s`, `min`/`m`, `h`, `d`, `w`),
/// `@EPOCH`, `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
/// Returns seconds since the epoch; it must be in the future.
pub fn parse_not_after(text: &str, now: u64) -> Result<u64, NotAfterError> {
    let t = text.trim();
    let bad = || NotAfterError::NotUnderstood(t.to_string());
    let at = if let Some(rel) = t.strip_prefix('+') {
        let split = rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len());
        let (num, unit) = rel.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult = match unit.trim() {
            "" | "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86400,
            "w" | "week" | "weeks" => 7 * 86400,
            _ => return Err(bad()),
        };
        now.checked_add(n.checked_mul(mult).ok_or_else(bad)?)
            .ok_or_else(bad)?
    } else if let Some(e) = t.strip_prefix('@') {
        e.parse().map_err(|_| bad())?
    } else {
        parse_utc(t).ok_or_else(bad)?
    };
    if at <= now {
        return Err(NotAfterError::Past(t.to_string()));
    }
    Ok(at)
}

fn parse_utc(t: &str) -> Option<u64> {
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, rest)) => (d, Some(rest.strip_suffix('Z').unwrap_or(rest))),
        None => (t, None),
    };
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let secs = match time {
        None => 0,
        Some(tm) => {
            let p: Vec<&str> = tm.split(':').collect();
            if p.len() < 2 || p.len() > 3 {
                return None;
            }
            let h: u64 = p[0].parse().ok()?;
            let mi: u64 = p[1].parse().ok()?;
            let s: u64 = p.get(2).map(|s| s.parse().ok()).unwrap_or(Some(0))?;
            if h > 23 || mi > 59 || s > 60 {
                return None;
            }
            h * 3600 + mi * 60 + s
        }
    };
    let days = days_from_civil(y, m, day);
    if days < 0 {
        return None;
    }
    Some(days as u64 * 86400 + secs)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `YYYY-MM-DDTHH:MM:SSZ` for epoch seconds.
pub fn format_utc(t: u64) -> String {
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_after_forms() {
        let now = 1_700_000_000;
        assert_eq!(parse_not_after("+90d", now).unwrap(), now + 90 * 86400);
        assert_eq!(parse_not_after("+12h", now).unwrap(), now + 12 * 3600);
        assert_eq!(parse_not_after("@1800000000", now).unwrap(), 1_800_000_000);
        assert_eq!(parse_not_after("2030-01-01", now).unwrap(), 1_893_456_000);
        assert_eq!(
            parse_not_after("2030-01-01T12:00:00Z", now).unwrap(),
            1_893_456_000 + 43200
        );
        assert!(parse_not_after("2020-01-01", now)
            .unwrap_err()
            .to_string()
            .contains("past"));
        assert!(parse_not_after("tomorrow", now).is_err());
        assert_eq!(format_utc(1_893_456_000 + 43200), "2030-01-01T12:00:00Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn push_numbers_upwards_and_prunes() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::at(t.path());
        let state = Path::new("/var/lib/credloader");
        let mut h = History::open(&root, state, "K", true).unwrap();
        for i in 0..5u8 {
            h.push(&[b'a' + i; 10], None, 3).unwrap();
        }
        let nums: Vec<u32> = h.list().unwrap().iter().map(|g| g.number).collect();
        assert_eq!(nums, vec![3, 4, 5]);
        assert_eq!(h.read(5).unwrap().unwrap(), vec![b'e'; 10]);
        let h2 = History::open(&root, state, "K", false).unwrap();
        assert_eq!(h2.meta.generations.len(), 3);
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(t.path().join("var/lib/credloader/generations/K")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o700);
        let m =
            std::fs::metadata(t.path().join("var/lib/credloader/generations/K/5.cred")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600);
        assert!(History::open(&root, state, "none", false)
            .unwrap()
            .list()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn rejected_values_never_push_out_the_good_ones() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::at(t.path());
        let state = Path::new("/var/lib/credloader");
        let mut h = History::open(&root, state, "K", true).unwrap();
        for i in 0..3u8 {
            h.push(&[b'a' + i; 10], None, 3).unwrap();
        }
        let info = |b: &[u8]| Info {
            digest: hex_digest(b),
            ..Info::default()
        };
        // Four rotations in a row rejected (the exchange had not yet
        // whitelisted the IP): the three good values stay.
        for i in 0..4u8 {
            let bad = [b'x' + i; 10];
            h.keep_rejected(&bad, info(&bad), None, None, 1_000 + u64::from(i), 3)
                .unwrap();
        }
        let list = h.list().unwrap();
        let good: Vec<u32> = list
            .iter()
            .filter(|g| g.rejected_at.is_none())
            .map(|g| g.number)
            .collect();
        let rejected: Vec<u32> = list
            .iter()
            .filter(|g| g.rejected_at.is_some())
            .map(|g| g.number)
            .collect();
        assert_eq!(good, [1, 2, 3]);
        assert_eq!(rejected, [5, 6, 7], "the newest rejected ones");
        // Marks survive a reopen.
        let h2 = History::open(&root, state, "K", false).unwrap();
        assert_eq!(
            h2.list()
                .unwrap()
                .iter()
                .filter(|g| g.rejected_at.is_some())
                .count(),
            3
        );
    }
}
