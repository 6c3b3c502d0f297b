//! The undo list of a rotation: what each installed value replaced, and
//! how to put it back. It is explicit so that every way out of a rotation
//! that fails once something is installed (a consumer that does not verify,
//! an apply that cannot run, a file that cannot be written) undoes the same
//! list, and says how that went.

use std::path::Path;

use crate::generations::{self, History, Info};
use crate::root::Root;
use crate::safefs::{Dir, FsError};
use crate::sealed::{self, install};

/// Sealed bytes and what is recorded about them.
pub(super) type Sealed = (Vec<u8>, Info);

/// What to put back on failure.
pub(super) struct Undo {
    pub name: String,
    /// The previous sealed bytes and what was recorded about them (`None`:
    /// it did not exist, remove it).
    pub previous: Option<Sealed>,
    /// The generation the previous value is kept as.
    pub generation: Option<u32>,
    /// The new sealed bytes and what is recorded about them: kept as a
    /// rejected generation when verification fails.
    pub new: Sealed,
    /// The number the new value got when it became current.
    pub new_number: Option<u32>,
}

impl Undo {
    /// How the restore step names it: its generation, or that it is new.
    pub fn describe(&self) -> String {
        match self.generation {
            Some(g) => format!("{} (generation {g})", self.name),
            None => format!("{} (new: removed again)", self.name),
        }
    }

    /// Keeps the new value, which a consumer rejected, as a generation
    /// marked rejected (the one of the value current again is dropped).
    pub fn keep_rejected(
        &self,
        root: &Root,
        state_dir: &Path,
        now: u64,
        keep: u32,
    ) -> Result<u32, FsError> {
        let mut history = History::open(root, state_dir, &self.name, true)?;
        let (bytes, info) = &self.new;
        history.keep_rejected(
            bytes,
            info.clone(),
            self.new_number,
            self.generation,
            now,
            keep,
        )
    }
}

/// What is installed so far, in order, and once the previous values were
/// put back, what failed.
#[derive(Default)]
pub(super) struct UndoList {
    entries: Vec<Undo>,
    /// Per entry: why putting it back failed (`None`: it is back).
    restored: Option<Vec<Option<String>>>,
}

impl UndoList {
    pub fn push(&mut self, undo: Undo) {
        self.entries.push(undo);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Undo] {
        &self.entries
    }

    /// The names of the credentials installed, in order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|u| u.name.as_str()).collect()
    }

    /// Puts the previous value of every installed credential back (removes
    /// the ones that did not exist before), last installed first, going on
    /// past a failure; true when every one is back.
    pub fn restore(&mut self, root: &Root, state_dir: &Path, creds: &Dir) -> bool {
        let mut failures = vec![None; self.entries.len()];
        for (u, failure) in self.entries.iter().zip(failures.iter_mut()).rev() {
            let name = &u.name;
            let done = match &u.previous {
                Some((bytes, info)) => install(creds, name, bytes).map(|()| {
                    generations::record_current(root, state_dir, name, info.clone());
                }),
                None => sealed::remove(creds, name),
            };
            if let Err(e) = done {
                *failure = Some(e.to_string());
            }
        }
        let all_back = failures.iter().all(Option::is_none);
        self.restored = Some(failures);
        all_back
    }

    /// How putting the previous values back went (putting them back first
    /// if that was not done yet), for the error that ends the rotation.
    pub fn undone(&mut self, root: &Root, state_dir: &Path, creds: &Dir) -> String {
        if self.restored.is_none() {
            self.restore(root, state_dir, creds);
        }
        let failures = self.restored.as_deref().unwrap_or_default();
        describe_undo(&self.entries, failures)
    }
}

/// How putting the previous values back went, for an error message.
fn describe_undo(undo: &[Undo], failures: &[Option<String>]) -> String {
    let mut back = Vec::new();
    let mut parts = Vec::new();
    for (u, failure) in undo.iter().zip(failures) {
        let name = &u.name;
        match (failure, u.generation) {
            (None, _) => back.push(name.as_str()),
            (Some(e), Some(g)) => parts.push(format!(
                "putting the previous value of {name} back FAILED ({e}): it holds the new, \
                 unverified value; its previous value is generation {g} \
                 (`credloader rollback {name} --to {g}`)"
            )),
            (Some(e), None) => parts.push(format!(
                "removing the new credential {name} again FAILED ({e}): it holds the new, \
                 unverified value"
            )),
        }
    }
    if !back.is_empty() {
        parts.insert(
            0,
            format!(
                "the rotation was undone for {}: the previous value is back in place, \
                 not yet delivered (the next `credloader apply` delivers it)",
                back.join(", ")
            ),
        );
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn undo(name: &str, generation: Option<u32>) -> Undo {
        Undo {
            name: name.into(),
            previous: generation.map(|_| (b"old".to_vec(), Info::default())),
            generation,
            new: (b"new".to_vec(), Info::default()),
            new_number: None,
        }
    }

    #[test]
    fn an_undo_says_what_is_back_and_what_is_not() {
        let batch = [undo("A", Some(4)), undo("B", None), undo("C", Some(2))];
        let all = describe_undo(&batch, &[None, None, None]);
        assert!(all.contains("undone for A, B, C"), "{all}");
        assert!(!all.contains("FAILED"), "{all}");
        let some = describe_undo(&batch, &[Some("EIO".into()), Some("EROFS".into()), None]);
        assert!(some.starts_with("the rotation was undone for C:"), "{some}");
        assert!(
            some.contains("previous value of A back FAILED (EIO)")
                && some.contains("`credloader rollback A --to 4`"),
            "{some}"
        );
        assert!(
            some.contains("removing the new credential B again FAILED (EROFS)"),
            "{some}"
        );
    }
}
