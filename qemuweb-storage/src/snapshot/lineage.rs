//! [`Lineage`]: the generations of one disk's overlay, which keep a snapshot's overlay
//! point readable while the guest writes on.
//!
//! Every block an overlay stores belongs to a generation. The guest writes into the
//! *head* generation only. A disk reads a block from the first generation of its chain
//! (head, its parent, the parent's parent, ...) that holds it, else from the base image.
//!
//! - Saving a snapshot [pins](Lineage::pin) the head: it is frozen (never written again)
//!   and a new, empty head is made on top of it; the frozen generation, with its
//!   ancestors, is the disk as it was at the save, for as long as the pin stays.
//! - [Resuming](Lineage::resume) a snapshot makes a new empty head on top of its point:
//!   the disk is as it was at the save, whatever was written since.
//! - A generation nobody needs (not on the head's chain, not pinned, not an ancestor of a
//!   pinned one) is [dead](Lineage::dead) and its blocks are deleted.
//!
//! The whole lineage is one value stored in the disk's record, so every change to it is
//! one atomic write; this module is the pure logic, shared by every store.

use crate::error::{Result, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The pin that keeps the head a [`resume`](Lineage::resume) replaced, until the resumed
/// engine runs ([`Lineage::confirm_resume`]) or the resume is undone
/// ([`Lineage::revert_resume`]). Not a snapshot id (ids never start with `~`), so a
/// leftover after a crash is dropped by [`Lineage::drop_dangling_pins`].
pub const UNDO_PIN: &str = "~undo";

/// What a generation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenState {
    /// The head: the guest writes here.
    Live,
    /// Written no more: a snapshot's point or an ancestor of one.
    Frozen,
    /// Being filled by an import; not usable until it commits.
    Staging,
}

/// One generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Generation {
    /// The generation below it, if any (else the base image is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// What it is for.
    pub state: GenState,
    /// The snapshots (and [`UNDO_PIN`]) that keep it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub pins: BTreeSet<String>,
}

/// The generations of one disk.
///
/// ```
/// use qemuweb_storage::snapshot::Lineage;
/// let mut l = Lineage::new();
/// let first = l.head();
/// let point = l.pin("s1", true);          // the guest had written: freeze the head
/// assert_eq!(point, first);
/// assert_ne!(l.head(), first);            // writes go to a new head on top
/// assert_eq!(l.chain(l.head()).unwrap(), [l.head(), first]);
/// let resumed = l.resume(point, "s1").unwrap();
/// assert_eq!(l.chain(resumed).unwrap(), [resumed, first]);
/// l.confirm_resume();
/// assert_eq!(l.collect().len(), 1); // the head written after the pin is gone
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lineage {
    head: u32,
    /// The next generation number (never reused, so blocks of a deleted generation can
    /// never be taken for a new one's).
    next: u32,
    gens: BTreeMap<u32, Generation>,
}

impl Default for Lineage {
    fn default() -> Self {
        Self::new()
    }
}

/// The most generations one disk may have (each snapshot adds at most one).
pub const MAX_GENERATIONS: usize = 4096;

impl Lineage {
    /// A disk with one empty live generation, number 1.
    pub fn new() -> Self {
        let mut gens = BTreeMap::new();
        gens.insert(
            1,
            Generation {
                parent: None,
                state: GenState::Live,
                pins: BTreeSet::new(),
            },
        );
        Self {
            head: 1,
            next: 2,
            gens,
        }
    }

    /// The head generation (where writes go).
    pub fn head(&self) -> u32 {
        self.head
    }

    /// Generation `g`, if it exists.
    pub fn get(&self, g: u32) -> Option<&Generation> {
        self.gens.get(&g)
    }

    /// Every generation number.
    pub fn generations(&self) -> impl Iterator<Item = u32> + '_ {
        self.gens.keys().copied()
    }

    /// Checks a lineage read from storage: the head exists and is live, parents exist,
    /// no cycles, numbers below `next`, at most [`MAX_GENERATIONS`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) naming what is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StorageError::Integrity(format!("overlay lineage: {m}")));
        if self.gens.len() > MAX_GENERATIONS {
            return bad(format!("{} generations", self.gens.len()));
        }
        match self.gens.get(&self.head) {
            Some(g) if g.state == GenState::Live => {}
            _ => return bad(format!("head {} is not a live generation", self.head)),
        }
        for (&n, g) in &self.gens {
            if n == 0 || n >= self.next {
                return bad(format!("generation {n} is not below next {}", self.next));
            }
            if g.state == GenState::Live && n != self.head {
                return bad(format!("generation {n} is live but not the head"));
            }
            self.chain(n)?;
        }
        Ok(())
    }

    /// Generation `from` and its ancestors, nearest first.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) for a missing generation or
    /// a cycle.
    pub fn chain(&self, from: u32) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut at = Some(from);
        while let Some(g) = at {
            if out.len() > self.gens.len() {
                return Err(StorageError::Integrity(format!(
                    "overlay lineage: a cycle through generation {g}"
                )));
            }
            let gen = self.gens.get(&g).ok_or_else(|| {
                StorageError::Integrity(format!("overlay lineage: no generation {g}"))
            })?;
            out.push(g);
            at = gen.parent;
        }
        Ok(out)
    }

    fn new_gen(&mut self, parent: Option<u32>, state: GenState) -> u32 {
        let n = self.next;
        self.next += 1;
        self.gens.insert(
            n,
            Generation {
                parent,
                state,
                pins: BTreeSet::new(),
            },
        );
        n
    }

    /// Pins the disk's current state for `snapshot` and returns its point. With
    /// `head_written` (the head holds blocks) the head is frozen and a new head made on
    /// top; otherwise the head adds nothing to its parent, and a frozen parent is pinned
    /// instead (so saving twice without writes makes no new generation).
    pub fn pin(&mut self, snapshot: &str, head_written: bool) -> u32 {
        let head = self.head;
        let parent = self.gens[&head].parent;
        if !head_written {
            if let Some(p) = parent.filter(|p| self.gens[p].state == GenState::Frozen) {
                self.gens
                    .get_mut(&p)
                    .expect("parent exists")
                    .pins
                    .insert(snapshot.into());
                return p;
            }
        }
        let g = self.gens.get_mut(&head).expect("head exists");
        g.state = GenState::Frozen;
        g.pins.insert(snapshot.into());
        self.head = self.new_gen(Some(head), GenState::Live);
        head
    }

    /// Drops `snapshot`'s pin wherever it is; returns whether there was one.
    pub fn unpin(&mut self, snapshot: &str) -> bool {
        let mut found = false;
        for g in self.gens.values_mut() {
            found |= g.pins.remove(snapshot);
        }
        found
    }

    /// The generation `snapshot` pins, if any.
    pub fn point_of(&self, snapshot: &str) -> Option<u32> {
        self.gens
            .iter()
            .find(|(_, g)| g.pins.contains(snapshot) && g.state == GenState::Frozen)
            .map(|(&n, _)| n)
    }

    /// Makes a new empty head on top of `point` (which `snapshot` must pin), keeping the
    /// replaced head under [`UNDO_PIN`] until [`confirm_resume`](Self::confirm_resume) or
    /// [`revert_resume`](Self::revert_resume). Returns the new head.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `snapshot` does not pin
    /// `point`.
    pub fn resume(&mut self, point: u32, snapshot: &str) -> Result<u32> {
        match self.gens.get(&point) {
            Some(g) if g.state == GenState::Frozen && g.pins.contains(snapshot) => {}
            _ => {
                return Err(StorageError::NotFound(format!(
                    "overlay generation {point} of snapshot {snapshot:?} is not stored"
                )))
            }
        }
        // An undo left from an earlier resume that was never confirmed goes first.
        self.confirm_resume();
        let old = self.head;
        let g = self.gens.get_mut(&old).expect("head exists");
        g.state = GenState::Frozen;
        g.pins.insert(UNDO_PIN.into());
        self.head = self.new_gen(Some(point), GenState::Live);
        Ok(self.head)
    }

    /// Lets go of the head a resume replaced (it dies unless something else keeps it).
    pub fn confirm_resume(&mut self) {
        self.unpin(UNDO_PIN);
    }

    /// Undoes the last resume: the replaced head is the head again and the resumed one is
    /// dropped. Returns the dropped generation, or `None` when there is nothing to undo.
    pub fn revert_resume(&mut self) -> Option<u32> {
        let (&old, _) = self.gens.iter().find(|(_, g)| g.pins.contains(UNDO_PIN))?;
        let dropped = self.head;
        self.gens.remove(&dropped);
        let g = self.gens.get_mut(&old).expect("found above");
        g.pins.remove(UNDO_PIN);
        // It may have been frozen by a snapshot before the resume.
        if g.pins.is_empty() {
            g.state = GenState::Live;
            self.head = old;
        } else {
            self.head = self.new_gen(Some(old), GenState::Live);
        }
        Some(dropped)
    }

    /// Cuts the head from its ancestors (the disk reads as its base plus the head's own
    /// blocks, which the caller deletes).
    pub fn detach_head(&mut self) {
        let head = self.head;
        self.gens.get_mut(&head).expect("head exists").parent = None;
    }

    /// Starts a generation for an import of `snapshot`: staging, with no parent, pinned by
    /// it.
    pub fn begin_import(&mut self, snapshot: &str) -> u32 {
        let g = self.new_gen(None, GenState::Staging);
        self.gens
            .get_mut(&g)
            .expect("just made")
            .pins
            .insert(snapshot.into());
        g
    }

    /// Makes a staging generation usable.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) if it is not staging.
    pub fn commit_import(&mut self, g: u32) -> Result<()> {
        match self.gens.get_mut(&g) {
            Some(gen) if gen.state == GenState::Staging => {
                gen.state = GenState::Frozen;
                Ok(())
            }
            _ => Err(StorageError::NotFound(format!(
                "no staging overlay generation {g}"
            ))),
        }
    }

    /// Removes pins for which `keep` says no (snapshots that no longer exist, a leftover
    /// [`UNDO_PIN`]); returns whether any went.
    pub fn drop_dangling_pins(&mut self, keep: impl Fn(&str) -> bool) -> bool {
        let mut changed = false;
        for g in self.gens.values_mut() {
            let before = g.pins.len();
            g.pins.retain(|p| keep(p));
            changed |= g.pins.len() != before;
        }
        changed
    }

    /// The generations nobody needs: not on the head's chain, not pinned and no ancestor
    /// of a pinned one.
    pub fn dead(&self) -> Vec<u32> {
        let mut alive = BTreeSet::new();
        let roots = std::iter::once(self.head).chain(
            self.gens
                .iter()
                .filter(|(_, g)| !g.pins.is_empty())
                .map(|(&n, _)| n),
        );
        for r in roots {
            let mut at = Some(r);
            while let Some(g) = at {
                if !alive.insert(g) {
                    break;
                }
                at = self.gens.get(&g).and_then(|x| x.parent);
            }
        }
        self.gens
            .keys()
            .copied()
            .filter(|g| !alive.contains(g))
            .collect()
    }

    /// Removes the [dead](Self::dead) generations and returns them (their blocks are the
    /// caller's to delete).
    pub fn collect(&mut self) -> Vec<u32> {
        let dead = self.dead();
        for g in &dead {
            self.gens.remove(g);
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_freeze_and_resumes_branch() {
        let mut l = Lineage::new();
        let g1 = l.head();
        let p1 = l.pin("s1", true);
        assert_eq!(p1, g1);
        let g2 = l.head();
        // No writes since: a second snapshot shares the point.
        assert_eq!(l.pin("s2", false), g1);
        assert_eq!(l.head(), g2);
        // Writes, a third snapshot.
        let p3 = l.pin("s3", true);
        assert_eq!(p3, g2);
        let g3 = l.head();
        assert_eq!(l.chain(g3).unwrap(), [g3, g2, g1]);
        l.validate().unwrap();

        // Back to s1: a new head on g1; g3 is kept by the undo pin until confirmed.
        let r = l.resume(g1, "s1").unwrap();
        assert_eq!(l.chain(r).unwrap(), [r, g1]);
        assert!(l.dead().is_empty());
        l.confirm_resume();
        assert_eq!(l.collect(), [g3]);
        // g2 stays: s3 pins it.
        assert!(l.get(g2).is_some());
        l.unpin("s3");
        assert_eq!(l.collect(), [g2]);
        l.validate().unwrap();
        // s1 and s2 still pin g1.
        assert_eq!(l.point_of("s2"), Some(g1));
        assert!(l.resume(g1, "s9").is_err());
        assert!(l.resume(99, "s1").is_err());
    }

    #[test]
    fn a_failed_resume_is_undone() {
        let mut l = Lineage::new();
        let g1 = l.head();
        l.pin("s1", true);
        let written = l.head();
        l.resume(g1, "s1").unwrap();
        let dropped = l.revert_resume().unwrap();
        assert_eq!(l.head(), written);
        assert!(l.get(dropped).is_none());
        assert_eq!(l.get(written).unwrap().state, GenState::Live);
        assert!(l.revert_resume().is_none());
        l.validate().unwrap();
        // The undo pin is not a snapshot: dropped as dangling after a crash.
        l.resume(g1, "s1").unwrap();
        assert!(l.drop_dangling_pins(|p| !p.starts_with('~')));
        assert_eq!(l.collect(), [written]);
    }

    #[test]
    fn imports_stage_then_commit() {
        let mut l = Lineage::new();
        let g = l.begin_import("imp");
        assert!(l.dead().is_empty(), "a staging generation is pinned");
        assert_eq!(l.point_of("imp"), None, "not usable while staging");
        l.commit_import(g).unwrap();
        assert_eq!(l.point_of("imp"), Some(g));
        let head = l.resume(g, "imp").unwrap();
        l.confirm_resume();
        assert_eq!(l.chain(head).unwrap(), [head, g]);
        assert_eq!(l.collect(), [1], "the old empty head");
        // An abandoned import is dead once its pin is dropped.
        let s = l.begin_import("gone");
        l.drop_dangling_pins(|p| p != "gone");
        assert_eq!(l.collect(), [s]);
        assert!(l.commit_import(s).is_err());
    }

    #[test]
    fn corrupt_lineages_are_refused() {
        let mut l = Lineage::new();
        l.pin("s", true);
        let json = serde_json::to_value(&l).unwrap();
        let back: Lineage = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, l);
        let mut cyc = json.clone();
        cyc["gens"]["1"]["parent"] = 2.into();
        let cyc: Lineage = serde_json::from_value(cyc).unwrap();
        assert!(cyc.validate().is_err());
        let mut no_head = json.clone();
        no_head["head"] = 7.into();
        let no_head: Lineage = serde_json::from_value(no_head).unwrap();
        assert!(no_head.validate().is_err());
        let mut two_live = json;
        two_live["gens"]["1"]["state"] = "live".into();
        let two_live: Lineage = serde_json::from_value(two_live).unwrap();
        assert!(two_live.validate().is_err());
    }
}
