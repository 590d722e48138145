//! [`IndexedDbOverlay`]: a VM disk's changed blocks kept in the browser's IndexedDB
//! (`wasm32` only), in generations so snapshots can keep their overlay point.
//!
//! The database and its stores are described in `db` (database `qemuweb-storage`,
//! version 2). Each disk has a record with its block size, its base image's identity and
//! its [`Lineage`] (the overlay's generations), and its blocks keyed by
//! `[vmId, diskId, generation, index]`. The guest writes into the head generation; a disk
//! reads each block from the first generation of the head's chain that holds it.
//! [`IndexedDbOverlay::pin`] (a snapshot is saved) freezes the head, and
//! [`IndexedDbOptions::resume`] (a snapshot is resumed) opens the disk on a new head over
//! the snapshot's point, so the disk is as it was at the save.
//!
//! Writes are visible at once and batched in memory; a batch is written in one
//! `readwrite` transaction with `durability: "strict"`, so each block is stored whole, old
//! or new, never torn, even if the page dies mid-commit. [`Overlay::sync`] resolves only
//! after that transaction has committed. Every change to a lineage is one transaction
//! that also deletes the blocks of the generations it leaves dead. One page (or worker)
//! at a time may write a disk: the overlay holds a Web Lock named after the disk while it
//! is open.

pub(crate) mod db;
pub(crate) mod snapshots;

use crate::cow::{check_block_len, check_block_size, Overlay};
use crate::error::{Result, StorageError};
use crate::snapshot::{Lineage, UNDO_PIN};
use async_trait::async_trait;
use db::{
    block_key, change_lineage, commit, copy_record, disk_ids, disk_lock_name, generation_range,
    idb_err, key, number_field, open_database, prefix_range, read_store, record_lineage, request,
    set, strict_transaction, text_field, WebLock, DISKS, GEN_BLOCKS, LEGACY_BLOCKS, SNAPSHOTS,
    SNAPSHOT_CHUNKS,
};
use idb::{KeyRange, Query};
use js_sys::{Object, Reflect, Uint8Array};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::IdbDatabase;

/// Pending bytes that trigger a commit without waiting for `sync`.
const DEFAULT_FLUSH_BYTES: usize = 4 << 20;
/// Version-1 blocks moved to the current store per transaction.
const MIGRATE_BATCH: u32 = 64;

/// What to do when another page or worker already has the disk open for writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockPolicy {
    /// Fail with [`ErrorKind::Locked`](crate::ErrorKind::Locked).
    #[default]
    Exclusive,
    /// Open read-only; writes fail with [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly).
    ///
    /// The view reads the generations of the writer's head as they were when it opened:
    /// blocks the writer commits in them are read as they change; blocks the writer adds
    /// later are found by [`Overlay::read_block`], but [`Overlay::contains`] (and so a
    /// `CowBlockDevice` over this view) learns of them only when the view is opened
    /// again, as it does of anything written after the writer saves a snapshot.
    ReadOnlyIfLocked,
}

/// A snapshot's overlay point to open a disk on (see [`IndexedDbOptions::resume`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The snapshot's id (it must pin `point`).
    pub snapshot: String,
    /// The overlay generation (the snapshot header's `DiskPoint::point`).
    pub point: u32,
}

/// How to open an [`IndexedDbOverlay`].
#[derive(Debug, Clone)]
pub struct IndexedDbOptions {
    /// Block size in bytes (a power of two, at least 512). Must match the size the disk
    /// was first created with.
    pub block_size: u32,
    /// What to do when the disk is locked by another writer.
    pub lock: LockPolicy,
    /// Pending bytes after which a write commits its batch without waiting for `sync`.
    pub flush_bytes: usize,
    /// The identity of the base image the overlay's blocks apply to, if known: an opaque
    /// string the caller derives from the image, e.g. its format and size plus an HTTP
    /// validator (strong `ETag` or `Last-Modified`) or else its URL, or for a `File` its
    /// name, size and `lastModified`. Stored on first use; a later open with a different
    /// identity fails with [`ErrorKind::ImageChanged`](crate::ErrorKind::ImageChanged)
    /// rather than lay old blocks over a different image. An overlay stored without one
    /// adopts the given identity. `None` checks nothing.
    pub base: Option<String>,
    /// Open the disk as it was when a snapshot was saved: a new head over its point. What
    /// was written since stays until [`IndexedDbOverlay::settle_resume`] says whether the
    /// resumed VM runs (then it goes, unless a snapshot keeps it) or not (then it is the
    /// head again). Needs the disk writable.
    pub resume: Option<ResumePoint>,
}

impl Default for IndexedDbOptions {
    fn default() -> Self {
        Self {
            block_size: 4096,
            lock: LockPolicy::Exclusive,
            flush_bytes: DEFAULT_FLUSH_BYTES,
            base: None,
            resume: None,
        }
    }
}

/// A sparse, persistent overlay of one VM disk in IndexedDB.
///
/// ```no_run
/// use qemuweb_storage::{IndexedDbOverlay, IndexedDbOptions, Overlay};
/// # async fn demo() -> qemuweb_storage::Result<()> {
/// let overlay = IndexedDbOverlay::open("vm-1", "disk0", IndexedDbOptions::default()).await?;
/// overlay.write_block(3, &[0u8; 4096]).await?;
/// overlay.sync().await?; // durable once this resolves
/// let point = overlay.pin("snap-1").await?; // the disk as it is now, kept
/// # Ok(()) }
/// ```
pub struct IndexedDbOverlay {
    db: IdbDatabase,
    vm_id: String,
    disk_id: String,
    block_size: u32,
    read_only: bool,
    flush_bytes: usize,
    base: Option<String>,
    /// The lineage as last read or written.
    lineage: RefCell<Lineage>,
    /// The head's chain, head first.
    chain: RefCell<Vec<u32>>,
    /// Every block held (committed, in flight or pending) and the generation it is read
    /// from.
    present: RefCell<BTreeMap<u64, u32>>,
    /// Written but not yet handed to a transaction.
    pending: RefCell<BTreeMap<u64, Box<[u8]>>>,
    pending_bytes: Cell<usize>,
    /// Handed to the transaction now committing.
    in_flight: RefCell<BTreeMap<u64, Box<[u8]>>>,
    /// Serialises commits and lineage changes, so batches land in order and in the
    /// right generation.
    commit_lock: async_lock::Mutex<()>,
    lock: RefCell<Option<WebLock>>,
}

impl std::fmt::Debug for IndexedDbOverlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedDbOverlay")
            .field("vm_id", &self.vm_id)
            .field("disk_id", &self.disk_id)
            .field("block_size", &self.block_size)
            .field("read_only", &self.read_only)
            .field("blocks", &self.present.borrow().len())
            .field("chain", &self.chain.borrow())
            .finish()
    }
}

impl IndexedDbOverlay {
    /// Opens (creating if needed) the overlay of disk `disk_id` of VM `vm_id`.
    ///
    /// A writable open also moves a version-1 disk's blocks into generation 1, drops
    /// pins of snapshots that no longer exist and deletes what nobody needs (crash
    /// leftovers), and with [`IndexedDbOptions::resume`] starts a new head over the
    /// snapshot's point.
    pub async fn open(vm_id: &str, disk_id: &str, options: IndexedDbOptions) -> Result<Self> {
        check_block_size(options.block_size)?;
        let lock = WebLock::try_acquire(&disk_lock_name(vm_id, disk_id)).await?;
        let read_only = match (&lock, options.lock) {
            (Some(_), _) => false,
            (None, LockPolicy::ReadOnlyIfLocked) => true,
            (None, LockPolicy::Exclusive) => {
                return Err(StorageError::Locked(format!(
                    "disk {disk_id:?} of VM {vm_id:?} is open for writing in another tab or worker"
                )))
            }
        };
        if read_only && options.resume.is_some() {
            return Err(StorageError::Locked(format!(
                "disk {disk_id:?} of VM {vm_id:?} is open for writing in another tab or \
                 worker; a snapshot cannot be resumed on it"
            )));
        }
        let db = open_database().await?;
        let this = Self {
            db,
            vm_id: vm_id.to_string(),
            disk_id: disk_id.to_string(),
            block_size: options.block_size,
            read_only,
            flush_bytes: options.flush_bytes.max(options.block_size as usize),
            base: options.base,
            lineage: RefCell::new(Lineage::new()),
            chain: RefCell::new(vec![1]),
            present: RefCell::new(BTreeMap::new()),
            pending: RefCell::new(BTreeMap::new()),
            pending_bytes: Cell::new(0),
            in_flight: RefCell::new(BTreeMap::new()),
            commit_lock: async_lock::Mutex::new(()),
            lock: RefCell::new(lock),
        };
        match this.prepare(options.resume.as_ref()).await {
            Ok(()) => Ok(this),
            Err(e) => {
                // Let the lock go before reporting, so a corrected retry can take it.
                this.release_lock().await;
                Err(e)
            }
        }
    }

    async fn prepare(&self, resume: Option<&ResumePoint>) -> Result<()> {
        let stored = self.check_geometry().await?;
        if self.read_only {
            if let Some(l) = stored {
                self.adopt(l)?;
            }
            return self.load_index().await;
        }
        if stored.is_none() {
            self.migrate_legacy().await?;
        }
        let (_, lineage) = change_lineage(&self.db, &self.vm_id, &self.disk_id, &[], |l, known| {
            // Pins of snapshots that are gone (and an undo left by a crash) go.
            l.drop_dangling_pins(|p| known.iter().any(|k| k == p));
            if let Some(r) = resume {
                l.resume(r.point, &r.snapshot)?;
            }
            Ok(())
        })
        .await?;
        self.adopt(lineage)?;
        self.load_index().await
    }

    /// The VM this overlay belongs to.
    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }

    /// The disk of that VM.
    pub fn disk_id(&self) -> &str {
        &self.disk_id
    }

    /// The generation writes go to.
    pub fn head(&self) -> u32 {
        self.chain.borrow()[0]
    }

    /// The overlay's lineage as last read or written.
    pub fn lineage(&self) -> Lineage {
        self.lineage.borrow().clone()
    }

    fn adopt(&self, lineage: Lineage) -> Result<()> {
        *self.chain.borrow_mut() = lineage.chain(lineage.head())?;
        *self.lineage.borrow_mut() = lineage;
        Ok(())
    }

    /// Deletes every disk overlay and snapshot of VM `vm_id`; other VMs are untouched.
    /// Fails with [`ErrorKind::Locked`](crate::ErrorKind::Locked) while one of its disks
    /// is open.
    pub async fn delete_vm(vm_id: &str) -> Result<()> {
        Self::delete(vm_id, None).await
    }

    /// Deletes the overlay of disk `disk_id` of VM `vm_id` (the disk then reads as its
    /// base image again); other disks are untouched. Generations that snapshots pin stay
    /// (those snapshots still resume). Fails with
    /// [`ErrorKind::Locked`](crate::ErrorKind::Locked) while the disk is open.
    pub async fn delete_disk(vm_id: &str, disk_id: &str) -> Result<()> {
        Self::delete(vm_id, Some(disk_id)).await
    }

    /// The stored overlays of VM `vm_id`, by disk id.
    pub async fn list_vm(vm_id: &str) -> Result<Vec<StoredOverlay>> {
        let db = open_database().await?;
        let listed = list_vm_in(&db, vm_id).await;
        db.close();
        listed
    }

    async fn delete(vm_id: &str, disk_id: Option<&str>) -> Result<()> {
        let db = open_database().await?;
        let done = delete_in(&db, vm_id, disk_id).await;
        db.close();
        done
    }

    /// Closes the database connection and releases the disk's lock.
    async fn release_lock(&self) {
        self.db.close();
        let lock = self.lock.borrow_mut().take();
        if let Some(lock) = lock {
            lock.release().await;
        }
    }

    /// Records the block size (and base identity) on first use; refuses a different one
    /// later. A record without a base identity adopts the given one. Returns the stored
    /// lineage (`None` for a new disk or a version-1 one).
    async fn check_geometry(&self) -> Result<Option<Lineage>> {
        let k = key(&[self.vm_id.as_str().into(), self.disk_id.as_str().into()]);
        let existing = {
            let (_tx, store) = read_store(&self.db, DISKS, "reading disk metadata")?;
            request(store.get(k), "reading disk metadata").await?
        };
        let (record, lineage) = match existing {
            Some(record) => {
                let stored = number_field(&record, "blockSize").ok_or_else(|| {
                    StorageError::Integrity("disk metadata has no blockSize".into())
                })?;
                if stored as u32 != self.block_size {
                    return Err(StorageError::InvalidArgument(format!(
                        "disk {:?} of VM {:?} was created with {stored}-byte blocks, not {}",
                        self.disk_id, self.vm_id, self.block_size
                    )));
                }
                let lineage = record_lineage(&record)?;
                let Some(given) = &self.base else {
                    return Ok(lineage);
                };
                match text_field(&record, "base") {
                    Some(stored) if &stored == given => return Ok(lineage),
                    Some(stored) => {
                        return Err(StorageError::BaseChanged {
                            vm_id: self.vm_id.as_str().into(),
                            disk_id: self.disk_id.as_str().into(),
                            stored: stored.into(),
                            given: given.as_str().into(),
                        })
                    }
                    // A record from before base identities: adopt the given one.
                    None if self.read_only => return Ok(lineage),
                    None => (record.unchecked_into::<Object>(), lineage),
                }
            }
            None if self.read_only => return Ok(None),
            None => {
                let record = Object::new();
                set(&record, "vmId", &self.vm_id.as_str().into());
                set(&record, "diskId", &self.disk_id.as_str().into());
                set(&record, "blockSize", &self.block_size.into());
                let json = serde_json::to_string(&Lineage::new()).unwrap_or_default();
                set(&record, "lineage", &json.into());
                (record, Some(Lineage::new()))
            }
        };
        if let Some(base) = &self.base {
            set(&record, "base", &base.as_str().into());
        }
        let tx = strict_transaction(&self.db, &[DISKS])?;
        let store = tx
            .object_store(DISKS)
            .map_err(|e| idb_err("writing disk metadata", e))?;
        store
            .put(&record.into(), None)
            .map_err(|e| idb_err("writing disk metadata", e))?;
        commit(tx, "writing disk metadata").await?;
        Ok(lineage)
    }

    /// Moves a version-1 disk's blocks into generation 1, a batch per transaction (each
    /// block is in exactly one of the stores at every moment; a crash resumes the move on
    /// the next open). The lineage is written afterwards, by the caller.
    async fn migrate_legacy(&self) -> Result<()> {
        let what = "moving version-1 blocks";
        let (vm, disk) = (self.vm_id.as_str(), self.disk_id.as_str());
        loop {
            let tx = strict_transaction(&self.db, &[LEGACY_BLOCKS, GEN_BLOCKS])?;
            let legacy = tx
                .object_store(LEGACY_BLOCKS)
                .map_err(|e| idb_err(what, e))?;
            let records = request(
                legacy.get_all(
                    Some(Query::from(prefix_range(&[vm.into(), disk.into()])?)),
                    Some(MIGRATE_BATCH),
                ),
                what,
            )
            .await?;
            if records.is_empty() {
                let _ = tx.abort();
                return Ok(());
            }
            let blocks = tx.object_store(GEN_BLOCKS).map_err(|e| idb_err(what, e))?;
            for r in &records {
                let index = number_field(r, "index")
                    .filter(|i| *i >= 0.0 && i.fract() == 0.0)
                    .ok_or_else(|| {
                        StorageError::Integrity("a version-1 block has no index".into())
                    })?;
                let record = Object::new();
                set(&record, "vmId", &vm.into());
                set(&record, "diskId", &disk.into());
                set(&record, "gen", &1.into());
                set(&record, "index", &index.into());
                set(
                    &record,
                    "data",
                    &Reflect::get(r, &"data".into()).unwrap_or(JsValue::UNDEFINED),
                );
                blocks
                    .put(&record.into(), None)
                    .map_err(|e| idb_err(what, e))?;
                legacy
                    .delete(key(&[vm.into(), disk.into(), index.into()]))
                    .map_err(|e| idb_err(what, e))?;
            }
            commit(tx, what).await?;
        }
    }

    /// Loads which block is read from which generation of the head's chain; a writable
    /// overlay deletes blocks of generations its lineage no longer has (left by a crash
    /// between two transactions of an older build; normally none).
    async fn load_index(&self) -> Result<()> {
        let keys = {
            let (_tx, store) = read_store(&self.db, GEN_BLOCKS, "listing blocks")?;
            let range = prefix_range(&[self.vm_id.as_str().into(), self.disk_id.as_str().into()])?;
            request(
                store.get_all_keys(Some(Query::from(range)), None),
                "listing blocks",
            )
            .await?
        };
        let position: HashMap<u32, usize> = self
            .chain
            .borrow()
            .iter()
            .enumerate()
            .map(|(i, g)| (*g, i))
            .collect();
        let lineage = self.lineage.borrow().clone();
        let mut orphans = Vec::new();
        let mut present = BTreeMap::new();
        for k in keys {
            let num = |i: u32| Reflect::get(&k, &i.into()).ok().and_then(|v| v.as_f64());
            let (Some(gen), Some(index)) = (num(2), num(3)) else {
                return Err(StorageError::Integrity(format!("bad block key {k:?}")));
            };
            if gen < 0.0 || gen.fract() != 0.0 || index < 0.0 || index.fract() != 0.0 {
                return Err(StorageError::Integrity(format!("bad block key {k:?}")));
            }
            let (gen, index) = (gen as u32, index as u64);
            match position.get(&gen) {
                Some(&pos) => {
                    let nearer = present.get(&index).is_none_or(|g: &u32| position[g] > pos);
                    if nearer {
                        present.insert(index, gen);
                    }
                }
                None if lineage.get(gen).is_none() && !orphans.contains(&gen) => orphans.push(gen),
                None => {}
            }
        }
        *self.present.borrow_mut() = present;
        if !self.read_only && !orphans.is_empty() {
            let tx = strict_transaction(&self.db, &[GEN_BLOCKS])?;
            let store = tx
                .object_store(GEN_BLOCKS)
                .map_err(|e| idb_err("deleting unused blocks", e))?;
            for g in orphans {
                store
                    .delete(generation_range(&self.vm_id, &self.disk_id, g)?)
                    .map_err(|e| idb_err("deleting unused blocks", e))?;
            }
            commit(tx, "deleting unused blocks").await?;
        }
        Ok(())
    }

    /// Keeps the disk as it is now for snapshot `snapshot` and returns its overlay point:
    /// commits what is pending, then freezes the head (writes go to a new head on top),
    /// unless nothing was written since the last pin, when that point is shared. The
    /// point's blocks stay until the snapshot is deleted
    /// ([`IndexedDbSnapshotStore::delete`](crate::snapshot::IndexedDbSnapshotStore::delete)).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) for a read-only view; storage
    /// errors (nothing is pinned then).
    pub async fn pin(&self, snapshot: &str) -> Result<u32> {
        self.check_writable(self.block_size as usize)?;
        let _guard = self.commit_lock.lock().await;
        self.commit_locked().await?;
        let head = self.head();
        let written = self.present.borrow().values().any(|g| *g == head);
        let (point, lineage) = change_lineage(&self.db, &self.vm_id, &self.disk_id, &[], |l, _| {
            if l.head() != head {
                return Err(StorageError::Integrity(format!(
                    "the head of disk {:?} of VM {:?} changed under its writer",
                    self.disk_id, self.vm_id
                )));
            }
            Ok(l.pin(snapshot, written))
        })
        .await?;
        self.adopt(lineage)?;
        Ok(point)
    }

    /// After an open with [`IndexedDbOptions::resume`]: with `running`, lets go of what
    /// was written before the resume (unless a snapshot keeps it); without, goes back to
    /// it (the resumed head and anything written to it are dropped). Does nothing when
    /// there is no resume to settle.
    pub async fn settle_resume(&self, running: bool) -> Result<()> {
        self.check_writable(self.block_size as usize)?;
        let _guard = self.commit_lock.lock().await;
        let undo = self.lineage.borrow().point_of(UNDO_PIN);
        if undo.is_none() {
            return Ok(());
        }
        if running {
            let (_, lineage) = change_lineage(&self.db, &self.vm_id, &self.disk_id, &[], |l, _| {
                l.confirm_resume();
                Ok(())
            })
            .await?;
            return self.adopt(lineage);
        }
        self.pending.borrow_mut().clear();
        self.pending_bytes.set(0);
        let (_, lineage) = change_lineage(&self.db, &self.vm_id, &self.disk_id, &[], |l, _| {
            l.revert_resume();
            Ok(())
        })
        .await?;
        self.adopt(lineage)?;
        self.load_index().await
    }

    /// Commits everything pending in one strict transaction.
    async fn commit_pending(&self) -> Result<()> {
        let _guard = self.commit_lock.lock().await;
        self.commit_locked().await
    }

    /// [`commit_pending`](Self::commit_pending) with the commit lock held.
    async fn commit_locked(&self) -> Result<()> {
        if self.pending.borrow().is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        self.pending_bytes.set(0);
        *self.in_flight.borrow_mut() = batch;
        let result = self.write_in_flight().await;
        let batch = std::mem::take(&mut *self.in_flight.borrow_mut());
        if result.is_err() {
            // Keep the data visible and retry it on the next commit, unless it was
            // overwritten meanwhile.
            let mut pending = self.pending.borrow_mut();
            for (k, v) in batch {
                if let std::collections::btree_map::Entry::Vacant(e) = pending.entry(k) {
                    self.pending_bytes.set(self.pending_bytes.get() + v.len());
                    e.insert(v);
                }
            }
        }
        result
    }

    async fn write_in_flight(&self) -> Result<()> {
        let tx = strict_transaction(&self.db, &[GEN_BLOCKS])?;
        let store = tx
            .object_store(GEN_BLOCKS)
            .map_err(|e| idb_err("writing blocks", e))?;
        let head = self.head();
        for (index, data) in self.in_flight.borrow().iter() {
            let record = Object::new();
            set(&record, "vmId", &self.vm_id.as_str().into());
            set(&record, "diskId", &self.disk_id.as_str().into());
            set(&record, "gen", &head.into());
            set(&record, "index", &(*index as f64).into());
            set(&record, "data", &Uint8Array::from(&data[..]).into());
            store
                .put(&record.into(), None)
                .map_err(|e| idb_err("writing blocks", e))?;
        }
        commit(tx, "writing blocks").await
    }

    fn key_of(&self, gen: u32, index: u64) -> JsValue {
        block_key(&self.vm_id, &self.disk_id, gen, index)
    }

    /// Reads block `index` of generation `gen` from the store.
    async fn read_stored(&self, gen: u32, index: u64, buf: &mut [u8]) -> Result<bool> {
        let (_tx, store) = read_store(&self.db, GEN_BLOCKS, "reading a block")?;
        let value = request(store.get(self.key_of(gen, index)), "reading a block").await?;
        let Some(record) = value else {
            return Ok(false);
        };
        copy_record(&record, index, buf)?;
        Ok(true)
    }

    fn check_writable(&self, len: usize) -> Result<()> {
        if self.read_only {
            return Err(StorageError::ReadOnly(format!(
                "disk {:?} of VM {:?} is open for writing elsewhere",
                self.disk_id, self.vm_id
            )));
        }
        check_block_len(self.block_size, len)
    }
}

#[async_trait(?Send)]
impl Overlay for IndexedDbOverlay {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn contains(&self, index: u64) -> bool {
        self.present.borrow().contains_key(&index)
    }

    fn block_indices(&self) -> Vec<u64> {
        self.present.borrow().keys().copied().collect()
    }

    async fn read_block(&self, index: u64, buf: &mut [u8]) -> Result<bool> {
        check_block_len(self.block_size, buf.len())?;
        for map in [&self.pending, &self.in_flight] {
            if let Some(data) = map.borrow().get(&index) {
                buf.copy_from_slice(data);
                return Ok(true);
            }
        }
        let gen = self.present.borrow().get(&index).copied();
        if let Some(gen) = gen {
            return self.read_stored(gen, index, buf).await;
        }
        if !self.read_only {
            return Ok(false);
        }
        // A read-only view also looks up blocks the writer committed after it opened.
        let chain = self.chain.borrow().clone();
        for gen in chain {
            if self.read_stored(gen, index, buf).await? {
                self.present.borrow_mut().insert(index, gen);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One readonly transaction and one `getAll` per generation the run's blocks are read
    /// from, then the blocks still in flight or pending on top (they are newer than what
    /// is stored).
    async fn read_run(&self, first: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.block_size as usize;
        if buf.len() % bs != 0 {
            return Err(StorageError::InvalidArgument(format!(
                "{} bytes is not a whole number of {bs}-byte blocks",
                buf.len()
            )));
        }
        let count = (buf.len() / bs) as u64;
        let mut filled = vec![false; count as usize];
        // Which generation each block of the run is read from.
        let wanted: BTreeMap<u64, u32> = self
            .present
            .borrow()
            .range(first..first + count)
            .map(|(i, g)| (*i, *g))
            .collect();
        let mut gens: Vec<u32> = wanted.values().copied().collect();
        gens.sort_unstable();
        gens.dedup();
        if !gens.is_empty() {
            let (_tx, store) = read_store(&self.db, GEN_BLOCKS, "reading blocks")?;
            for gen in gens {
                let range = KeyRange::bound(
                    &self.key_of(gen, first),
                    &self.key_of(gen, first + count - 1),
                    Some(false),
                    Some(false),
                )
                .map_err(|e| idb_err("reading blocks", e))?;
                let records = request(
                    store.get_all(Some(Query::from(range)), None),
                    "reading blocks",
                )
                .await?;
                for record in records {
                    let index = number_field(&record, "index")
                        .filter(|i| *i >= first as f64 && *i < (first + count) as f64)
                        .ok_or_else(|| {
                            StorageError::Integrity("a stored block has a bad index".into())
                        })? as u64;
                    if wanted.get(&index) != Some(&gen) {
                        continue; // shadowed by a nearer generation
                    }
                    let slot = (index - first) as usize;
                    copy_record(&record, index, &mut buf[slot * bs..(slot + 1) * bs])?;
                    filled[slot] = true;
                }
            }
        }
        for map in [&self.in_flight, &self.pending] {
            for (index, data) in map.borrow().range(first..first + count) {
                let slot = (index - first) as usize;
                buf[slot * bs..(slot + 1) * bs].copy_from_slice(data);
                filled[slot] = true;
            }
        }
        match filled.iter().position(|f| !f) {
            None => Ok(()),
            Some(slot) => Err(StorageError::NotFound(format!(
                "overlay block {} is not held",
                first + slot as u64
            ))),
        }
    }

    async fn write_block(&self, index: u64, data: &[u8]) -> Result<()> {
        self.check_writable(data.len())?;
        let old = self.pending.borrow_mut().insert(index, data.into());
        let delta = data.len() - old.map_or(0, |o| o.len());
        self.pending_bytes.set(self.pending_bytes.get() + delta);
        let head = self.head();
        self.present.borrow_mut().insert(index, head);
        if self.pending_bytes.get() >= self.flush_bytes {
            self.commit_pending().await?;
        }
        Ok(())
    }

    async fn sync(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.commit_pending().await
    }

    /// Forgets every block: the head's are deleted and the head is cut from its
    /// ancestors, which stay only as long as snapshots pin them.
    async fn clear(&self) -> Result<()> {
        self.check_writable(self.block_size as usize)?;
        let _guard = self.commit_lock.lock().await;
        let head = self.head();
        let (_, lineage) = change_lineage(&self.db, &self.vm_id, &self.disk_id, &[head], |l, _| {
            l.detach_head();
            Ok(())
        })
        .await?;
        self.adopt(lineage)?;
        self.pending.borrow_mut().clear();
        self.pending_bytes.set(0);
        self.present.borrow_mut().clear();
        Ok(())
    }

    async fn pin(&self, snapshot: &str) -> Result<Option<u32>> {
        IndexedDbOverlay::pin(self, snapshot).await.map(Some)
    }

    async fn settle_resume(&self, running: bool) -> Result<()> {
        IndexedDbOverlay::settle_resume(self, running).await
    }

    async fn close(&self) -> Result<()> {
        let result = if self.read_only {
            Ok(())
        } else {
            self.commit_pending().await
        };
        self.release_lock().await;
        result
    }
}

/// A disk overlay kept in IndexedDB, as [`IndexedDbOverlay::list_vm`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOverlay {
    /// The disk (`disk0`, ...).
    pub disk_id: String,
    /// The size of its blocks.
    pub block_size: u32,
    /// How many blocks it holds (the guest's changed blocks, as the disk reads now).
    pub blocks: u64,
    /// The identity of the base image it was made over, if recorded
    /// ([`IndexedDbOptions::base`]).
    pub base: Option<String>,
}

async fn list_vm_in(db: &IdbDatabase, vm_id: &str) -> Result<Vec<StoredOverlay>> {
    let what = "listing a VM's disks";
    let records: Vec<JsValue> = {
        let (_tx, store) = read_store(db, DISKS, what)?;
        let range = prefix_range(&[vm_id.into()])?;
        request(store.get_all(Some(Query::from(range)), None), what).await?
    };
    let mut out = Vec::new();
    for record in records {
        let disk_id = text_field(&record, "diskId")
            .ok_or_else(|| StorageError::Integrity("disk metadata has no diskId".into()))?;
        let block_size = number_field(&record, "blockSize")
            .filter(|b| *b >= 1.0 && b.fract() == 0.0 && *b <= f64::from(u32::MAX))
            .ok_or_else(|| StorageError::Integrity("disk metadata has no blockSize".into()))?;
        let lineage = record_lineage(&record)?.unwrap_or_default();
        let chain = lineage.chain(lineage.head())?;
        let keys = {
            let (_tx, store) = read_store(db, GEN_BLOCKS, what)?;
            let range = prefix_range(&[vm_id.into(), disk_id.as_str().into()])?;
            request(store.get_all_keys(Some(Query::from(range)), None), what).await?
        };
        let mut indices = std::collections::BTreeSet::new();
        for k in keys {
            let num = |i: u32| Reflect::get(&k, &i.into()).ok().and_then(|v| v.as_f64());
            if let (Some(gen), Some(index)) = (num(2), num(3)) {
                if chain.contains(&(gen as u32)) {
                    indices.insert(index as u64);
                }
            }
        }
        // A version-1 disk not yet opened by this build.
        let legacy = {
            let (_tx, store) = read_store(db, LEGACY_BLOCKS, what)?;
            let range = prefix_range(&[vm_id.into(), disk_id.as_str().into()])?;
            request(store.count(Some(Query::from(range))), what).await?
        };
        out.push(StoredOverlay {
            disk_id,
            block_size: block_size as u32,
            blocks: indices.len() as u64 + u64::from(legacy),
            base: text_field(&record, "base"),
        });
    }
    Ok(out)
}

async fn delete_in(db: &IdbDatabase, vm_id: &str, disk_id: Option<&str>) -> Result<()> {
    let disks: Vec<String> = match disk_id {
        Some(d) => vec![d.to_string()],
        None => disk_ids(db, vm_id).await?,
    };
    // Hold every disk's lock while deleting, so no writer races the delete.
    let mut locks = Vec::new();
    for disk in &disks {
        match WebLock::try_acquire(&disk_lock_name(vm_id, disk)).await? {
            Some(l) => locks.push(l),
            None => {
                for l in locks {
                    l.release().await;
                }
                return Err(StorageError::Locked(format!(
                    "disk {disk:?} of VM {vm_id:?} is open; close it (stop the VM) before \
                     deleting its overlay"
                )));
            }
        }
    }
    let done = match disk_id {
        None => delete_vm_in(db, vm_id).await,
        Some(d) => delete_disk_in(db, vm_id, d).await,
    };
    for lock in locks {
        lock.release().await;
    }
    done
}

/// Everything of VM `vm_id`: disks, blocks and snapshots.
async fn delete_vm_in(db: &IdbDatabase, vm_id: &str) -> Result<()> {
    let stores = [LEGACY_BLOCKS, DISKS, GEN_BLOCKS, SNAPSHOTS, SNAPSHOT_CHUNKS];
    let tx = strict_transaction(db, &stores)?;
    for store in stores {
        let s = tx
            .object_store(store)
            .map_err(|e| idb_err("deleting a VM", e))?;
        s.delete(prefix_range(&[vm_id.into()])?)
            .map_err(|e| idb_err("deleting a VM", e))?;
    }
    commit(tx, "deleting a VM").await
}

/// One disk back to its base: its version-1 blocks go, and its head is cleared and cut
/// from its ancestors (which go too unless snapshots pin them; with no pins left the
/// record goes as well).
async fn delete_disk_in(db: &IdbDatabase, vm_id: &str, disk_id: &str) -> Result<()> {
    let what = "deleting an overlay";
    let tx = strict_transaction(db, &[LEGACY_BLOCKS])?;
    tx.object_store(LEGACY_BLOCKS)
        .map_err(|e| idb_err(what, e))?
        .delete(prefix_range(&[vm_id.into(), disk_id.into()])?)
        .map_err(|e| idb_err(what, e))?;
    commit(tx, what).await?;
    let cleared = change_lineage(db, vm_id, disk_id, &[], |l, _| {
        let head = l.head();
        l.detach_head();
        Ok(head)
    })
    .await;
    let lineage = match cleared {
        Ok((head, _)) => {
            // The head's own blocks (change_lineage deleted the dead ancestors).
            let tx = strict_transaction(db, &[GEN_BLOCKS])?;
            tx.object_store(GEN_BLOCKS)
                .map_err(|e| idb_err(what, e))?
                .delete(generation_range(vm_id, disk_id, head)?)
                .map_err(|e| idb_err(what, e))?;
            commit(tx, what).await?;
            change_lineage(db, vm_id, disk_id, &[], |_, _| Ok(()))
                .await?
                .1
        }
        Err(e) if e.kind() == crate::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let pinned = lineage
        .generations()
        .any(|g| lineage.get(g).is_some_and(|x| !x.pins.is_empty()));
    if !pinned {
        let tx = strict_transaction(db, &[DISKS, GEN_BLOCKS])?;
        tx.object_store(GEN_BLOCKS)
            .map_err(|e| idb_err(what, e))?
            .delete(prefix_range(&[vm_id.into(), disk_id.into()])?)
            .map_err(|e| idb_err(what, e))?;
        tx.object_store(DISKS)
            .map_err(|e| idb_err(what, e))?
            .delete(Query::from(key(&[vm_id.into(), disk_id.into()])))
            .map_err(|e| idb_err(what, e))?;
        commit(tx, what).await?;
    }
    Ok(())
}
