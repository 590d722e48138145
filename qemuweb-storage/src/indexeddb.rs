//! [`IndexedDbOverlay`]: a VM disk's changed blocks kept in the browser's IndexedDB
//! (`wasm32` only).
//!
//! Layout, in database `qemuweb-storage` (version 1):
//!
//! - object store `blocks`, key path `[vmId, diskId, index]`, values
//!   `{vmId, diskId, index, data: Uint8Array}`, with indexes `by-vmId` (`vmId`) and
//!   `by-vmDisk` (`[vmId, diskId]`);
//! - object store `disks`, key path `[vmId, diskId]`, values `{vmId, diskId, blockSize}`
//!   plus `base` (the base image's identity, see [`IndexedDbOptions::base`]) when given.
//!
//! Writes are visible at once and batched in memory; a batch is written in one
//! `readwrite` transaction with `durability: "strict"`, so each block is stored whole, old
//! or new, never torn, even if the page dies mid-commit. [`Overlay::sync`] resolves only
//! after that transaction has committed. One page (or worker) at a time may write a disk:
//! the overlay holds a Web Lock named after the disk while it is open.

use crate::cow::{check_block_len, check_block_size, Overlay};
use crate::error::{Result, StorageError};
use async_trait::async_trait;
use idb::{
    Database, DatabaseEvent, Factory, IndexParams, KeyPath, KeyRange, ObjectStore,
    ObjectStoreParams, Query, Transaction, TransactionMode, TransactionResult,
};
use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DomException, IdbDatabase, IdbTransaction};

/// The database every overlay lives in.
pub const DATABASE: &str = "qemuweb-storage";
const DB_VERSION: u32 = 1;
const BLOCKS: &str = "blocks";
const DISKS: &str = "disks";
/// Pending bytes that trigger a commit without waiting for `sync`.
const DEFAULT_FLUSH_BYTES: usize = 4 << 20;

/// What to do when another page or worker already has the disk open for writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockPolicy {
    /// Fail with [`ErrorKind::Locked`](crate::ErrorKind::Locked).
    #[default]
    Exclusive,
    /// Open read-only; writes fail with [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly).
    ///
    /// The view holds the blocks the writer had committed when it opened, read as the
    /// writer commits new contents for them. Blocks the writer adds later are found by
    /// [`Overlay::read_block`], but [`Overlay::contains`] (and so a `CowBlockDevice` over
    /// this view) learns of them only when the view is opened again.
    ReadOnlyIfLocked,
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
}

impl Default for IndexedDbOptions {
    fn default() -> Self {
        Self {
            block_size: 4096,
            lock: LockPolicy::Exclusive,
            flush_bytes: DEFAULT_FLUSH_BYTES,
            base: None,
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
    /// Every block held: committed, in flight or pending.
    present: RefCell<BTreeSet<u64>>,
    /// Written but not yet handed to a transaction.
    pending: RefCell<BTreeMap<u64, Box<[u8]>>>,
    pending_bytes: Cell<usize>,
    /// Handed to the transaction now committing.
    in_flight: RefCell<BTreeMap<u64, Box<[u8]>>>,
    /// Serialises commits, so batches land in order.
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
            .finish()
    }
}

/// Maps an `idb` failure to our error, recognising a full quota.
fn idb_err(what: &str, e: idb::Error) -> StorageError {
    let exception = match &e {
        idb::Error::DomException(d) => Some(d.clone()),
        other => js_payload(other).and_then(|v| v.dyn_into::<DomException>().ok()),
    };
    js_exception(what, exception, &format!("{e}"))
}

fn js_payload(e: &idb::Error) -> Option<JsValue> {
    use idb::Error::*;
    match e {
        AddFailed(v)
        | ClearFailed(v)
        | CountFailed(v)
        | DeleteFailed(v)
        | GetAllKeysFailed(v)
        | GetFailed(v)
        | IndexedDbOpenFailed(v)
        | IndexedDbDeleteFailed(v)
        | TransactionAbortError(v)
        | TransactionCommitError(v)
        | TransactionOpenFailed(v)
        | UpdateFailed(v) => Some(v.clone()),
        _ => None,
    }
}

fn js_exception(what: &str, exception: Option<DomException>, fallback: &str) -> StorageError {
    match exception {
        Some(d) if d.name() == "QuotaExceededError" => {
            StorageError::QuotaExceeded(format!("{what}: {}", d.message()))
        }
        Some(d) => StorageError::Browser(format!("{what}: {}: {}", d.name(), d.message())),
        None => StorageError::Browser(format!("{what}: {fallback}")),
    }
}

fn js_err(what: &str, v: JsValue) -> StorageError {
    let exception = v.clone().dyn_into::<DomException>().ok();
    js_exception(what, exception, &format!("{v:?}"))
}

async fn open_database() -> Result<IdbDatabase> {
    let factory = Factory::new().map_err(|e| idb_err("IndexedDB is not available", e))?;
    let mut request = factory
        .open(DATABASE, Some(DB_VERSION))
        .map_err(|e| idb_err("opening the database", e))?;
    request.on_upgrade_needed(|event| {
        // Errors here abort the upgrade, and the open request then fails with them.
        let Ok(db) = event.database() else { return };
        if !db.store_names().iter().any(|n| n == BLOCKS) {
            let mut params = ObjectStoreParams::new();
            params.key_path(Some(KeyPath::new_array(["vmId", "diskId", "index"])));
            if let Ok(store) = db.create_object_store(BLOCKS, params) {
                let _ =
                    store.create_index("by-vmId", KeyPath::new_single("vmId"), None::<IndexParams>);
                let _ = store.create_index(
                    "by-vmDisk",
                    KeyPath::new_array(["vmId", "diskId"]),
                    None::<IndexParams>,
                );
            }
        }
        if !db.store_names().iter().any(|n| n == DISKS) {
            let mut params = ObjectStoreParams::new();
            params.key_path(Some(KeyPath::new_array(["vmId", "diskId"])));
            let _ = db.create_object_store(DISKS, params);
        }
    });
    let db = request
        .await
        .map_err(|e| idb_err("opening the database", e))?;
    Ok(db.into())
}

fn key(parts: &[JsValue]) -> JsValue {
    parts.iter().collect::<Array>().into()
}

/// All keys that start with `prefix` (an array key), as a range.
fn prefix_range(prefix: &[JsValue]) -> Result<KeyRange> {
    let lower = key(prefix);
    let mut upper: Vec<JsValue> = prefix.to_vec();
    // An array sorts after every number and string, so [..prefix, []] bounds them all.
    upper.push(Array::new().into());
    KeyRange::bound(&lower, &key(&upper), Some(false), Some(false))
        .map_err(|e| idb_err("building a key range", e))
}

fn set(obj: &Object, k: &str, v: &JsValue) {
    // Reflect::set on a plain object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(k), v);
}

impl IndexedDbOverlay {
    /// Opens (creating if needed) the overlay of disk `disk_id` of VM `vm_id`.
    pub async fn open(vm_id: &str, disk_id: &str, options: IndexedDbOptions) -> Result<Self> {
        check_block_size(options.block_size)?;
        let lock = WebLock::try_acquire(&format!("{DATABASE}/{vm_id}/{disk_id}")).await?;
        let read_only = match (&lock, options.lock) {
            (Some(_), _) => false,
            (None, LockPolicy::ReadOnlyIfLocked) => true,
            (None, LockPolicy::Exclusive) => {
                return Err(StorageError::Locked(format!(
                    "disk {disk_id:?} of VM {vm_id:?} is open for writing in another tab or worker"
                )))
            }
        };
        let db = open_database().await?;
        let this = Self {
            db,
            vm_id: vm_id.to_string(),
            disk_id: disk_id.to_string(),
            block_size: options.block_size,
            read_only,
            flush_bytes: options.flush_bytes.max(options.block_size as usize),
            base: options.base,
            present: RefCell::new(BTreeSet::new()),
            pending: RefCell::new(BTreeMap::new()),
            pending_bytes: Cell::new(0),
            in_flight: RefCell::new(BTreeMap::new()),
            commit_lock: async_lock::Mutex::new(()),
            lock: RefCell::new(lock),
        };
        let ready = match this.check_geometry().await {
            Ok(()) => this.load_index().await,
            Err(e) => Err(e),
        };
        match ready {
            Ok(()) => Ok(this),
            Err(e) => {
                // Let the lock go before reporting, so a corrected retry can take it.
                this.release_lock().await;
                Err(e)
            }
        }
    }

    /// The VM this overlay belongs to.
    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }

    /// The disk of that VM.
    pub fn disk_id(&self) -> &str {
        &self.disk_id
    }

    /// Deletes every disk overlay of VM `vm_id`; other VMs are untouched. Fails with
    /// [`ErrorKind::Locked`](crate::ErrorKind::Locked) while one of its disks is open.
    pub async fn delete_vm(vm_id: &str) -> Result<()> {
        Self::delete(vm_id, None).await
    }

    /// Deletes the overlay of disk `disk_id` of VM `vm_id` (the disk then reads as its
    /// base image again); other disks are untouched. Fails with
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
    /// later. A record without a base identity adopts the given one.
    async fn check_geometry(&self) -> Result<()> {
        let k = key(&[self.vm_id.as_str().into(), self.disk_id.as_str().into()]);
        let existing = {
            let (_tx, store) = read_store(&self.db, DISKS, "reading disk metadata")?;
            request(store.get(k), "reading disk metadata").await?
        };
        let record = match existing {
            Some(record) => {
                let stored = Reflect::get(&record, &"blockSize".into())
                    .ok()
                    .and_then(|v| v.as_f64())
                    .ok_or_else(|| {
                        StorageError::Integrity("disk metadata has no blockSize".into())
                    })?;
                if stored as u32 != self.block_size {
                    return Err(StorageError::InvalidArgument(format!(
                        "disk {:?} of VM {:?} was created with {stored}-byte blocks, not {}",
                        self.disk_id, self.vm_id, self.block_size
                    )));
                }
                let Some(given) = &self.base else {
                    return Ok(());
                };
                let stored = Reflect::get(&record, &"base".into())
                    .ok()
                    .and_then(|v| v.as_string());
                match stored {
                    Some(stored) if &stored == given => return Ok(()),
                    Some(stored) => {
                        return Err(StorageError::BaseChanged {
                            vm_id: self.vm_id.as_str().into(),
                            disk_id: self.disk_id.as_str().into(),
                            stored: stored.into(),
                            given: given.as_str().into(),
                        })
                    }
                    // A record from before base identities: adopt the given one.
                    None if self.read_only => return Ok(()),
                    None => record.unchecked_into::<Object>(),
                }
            }
            None if self.read_only => return Ok(()),
            None => {
                let record = Object::new();
                set(&record, "vmId", &self.vm_id.as_str().into());
                set(&record, "diskId", &self.disk_id.as_str().into());
                set(&record, "blockSize", &self.block_size.into());
                record
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
        commit(tx, "writing disk metadata").await
    }

    /// Loads the indices of the committed blocks of this disk.
    async fn load_index(&self) -> Result<()> {
        let keys = {
            let (_tx, store) = read_store(&self.db, BLOCKS, "listing blocks")?;
            let range = prefix_range(&[self.vm_id.as_str().into(), self.disk_id.as_str().into()])?;
            request(
                store.get_all_keys(Some(Query::from(range)), None),
                "listing blocks",
            )
            .await?
        };
        let mut present = self.present.borrow_mut();
        for k in keys {
            let index = Reflect::get(&k, &2.into()).ok().and_then(|v| v.as_f64());
            match index {
                Some(i) if i >= 0.0 && i.fract() == 0.0 => {
                    present.insert(i as u64);
                }
                _ => return Err(StorageError::Integrity(format!("bad block key {k:?}"))),
            }
        }
        Ok(())
    }

    fn block_key(&self, index: u64) -> JsValue {
        key(&[
            self.vm_id.as_str().into(),
            self.disk_id.as_str().into(),
            (index as f64).into(),
        ])
    }

    /// Commits everything pending in one strict transaction.
    async fn commit_pending(&self) -> Result<()> {
        let _guard = self.commit_lock.lock().await;
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
        let tx = strict_transaction(&self.db, &[BLOCKS])?;
        let store = tx
            .object_store(BLOCKS)
            .map_err(|e| idb_err("writing blocks", e))?;
        for (index, data) in self.in_flight.borrow().iter() {
            let record = Object::new();
            set(&record, "vmId", &self.vm_id.as_str().into());
            set(&record, "diskId", &self.disk_id.as_str().into());
            set(&record, "index", &(*index as f64).into());
            set(&record, "data", &Uint8Array::from(&data[..]).into());
            store
                .put(&record.into(), None)
                .map_err(|e| idb_err("writing blocks", e))?;
        }
        commit(tx, "writing blocks").await
    }

    async fn read_stored(&self, index: u64, buf: &mut [u8]) -> Result<bool> {
        let (_tx, store) = read_store(&self.db, BLOCKS, "reading a block")?;
        let value = request(store.get(self.block_key(index)), "reading a block").await?;
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

/// A `readwrite` transaction that completes only once its data is on disk
/// (`durability: "strict"`; web-sys has this overload only as an unstable API).
fn strict_transaction(raw: &IdbDatabase, stores: &[&str]) -> Result<Transaction> {
    let names: Array = stores.iter().map(|s| JsValue::from_str(s)).collect();
    let options = Object::new();
    set(&options, "durability", &"strict".into());
    let open = Reflect::get(raw, &"transaction".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| StorageError::Browser("IDBDatabase.transaction is missing".into()))?;
    open.call3(raw, &names, &"readwrite".into(), &options)
        .and_then(|t| t.dyn_into::<IdbTransaction>())
        .map(Transaction::from)
        .map_err(|e| js_err("starting a transaction", e))
}

/// An `idb` view of a database handle.
fn idb(db: &IdbDatabase) -> Database {
    Database::from(db.clone())
}

/// A read-only transaction on the store `name` alone, and that store; `what` names the
/// operation in errors.
fn read_store(db: &IdbDatabase, name: &str, what: &str) -> Result<(Transaction, ObjectStore)> {
    let tx = idb(db)
        .transaction(&[name], TransactionMode::ReadOnly)
        .map_err(|e| idb_err(what, e))?;
    let store = tx.object_store(name).map_err(|e| idb_err(what, e))?;
    Ok((tx, store))
}

/// Makes a request (`made`) and waits for its result; `what` names the operation in
/// errors.
async fn request<R, T>(made: std::result::Result<R, idb::Error>, what: &str) -> Result<T>
where
    R: IntoFuture<Output = std::result::Result<T, idb::Error>>,
{
    made.map_err(|e| idb_err(what, e))?
        .await
        .map_err(|e| idb_err(what, e))
}

/// Copies the data of stored block `index` (a `{..., data}` record) into `buf`, checking
/// its length.
fn copy_record(record: &JsValue, index: u64, buf: &mut [u8]) -> Result<()> {
    let data = Reflect::get(record, &"data".into())
        .ok()
        .and_then(|d| d.dyn_into::<Uint8Array>().ok())
        .ok_or_else(|| StorageError::Integrity(format!("block {index} has no data")))?;
    if data.length() as usize != buf.len() {
        return Err(StorageError::Integrity(format!(
            "block {index} holds {} bytes, not {}",
            data.length(),
            buf.len()
        )));
    }
    data.copy_to(buf);
    Ok(())
}

/// A disk overlay kept in IndexedDB, as [`IndexedDbOverlay::list_vm`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOverlay {
    /// The disk (`disk0`, ...).
    pub disk_id: String,
    /// The size of its blocks.
    pub block_size: u32,
    /// How many blocks it holds (the guest's changed blocks).
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
        let field = |k: &str| Reflect::get(&record, &k.into()).unwrap_or(JsValue::UNDEFINED);
        let disk_id = field("diskId")
            .as_string()
            .ok_or_else(|| StorageError::Integrity("disk metadata has no diskId".into()))?;
        let block_size = field("blockSize")
            .as_f64()
            .filter(|b| *b >= 1.0 && b.fract() == 0.0 && *b <= f64::from(u32::MAX))
            .ok_or_else(|| StorageError::Integrity("disk metadata has no blockSize".into()))?;
        let blocks = {
            let (_tx, store) = read_store(db, BLOCKS, what)?;
            let range = prefix_range(&[vm_id.into(), disk_id.as_str().into()])?;
            request(store.count(Some(Query::from(range))), what).await?
        };
        out.push(StoredOverlay {
            disk_id,
            block_size: block_size as u32,
            blocks: u64::from(blocks),
            base: field("base").as_string(),
        });
    }
    Ok(out)
}

async fn delete_in(db: &IdbDatabase, vm_id: &str, disk_id: Option<&str>) -> Result<()> {
    let disks: Vec<String> = match disk_id {
        Some(d) => vec![d.to_string()],
        None => list_vm_in(db, vm_id)
            .await?
            .into_iter()
            .map(|d| d.disk_id)
            .collect(),
    };
    // Hold every disk's lock while deleting, so no writer races the delete.
    let mut locks = Vec::new();
    for disk in &disks {
        match WebLock::try_acquire(&format!("{DATABASE}/{vm_id}/{disk}")).await? {
            Some(l) => locks.push(l),
            None => {
                return Err(StorageError::Locked(format!(
                    "disk {disk:?} of VM {vm_id:?} is open; close it (stop the VM) before \
                     deleting its overlay"
                )))
            }
        }
    }
    let mut prefix: Vec<JsValue> = vec![vm_id.into()];
    if let Some(d) = disk_id {
        prefix.push(d.into());
    }
    let tx = strict_transaction(db, &[BLOCKS, DISKS])?;
    for store in [BLOCKS, DISKS] {
        let s = tx
            .object_store(store)
            .map_err(|e| idb_err("deleting overlays", e))?;
        let deleted = if disk_id.is_some() && store == DISKS {
            s.delete(Query::from(key(&prefix)))
        } else {
            s.delete(prefix_range(&prefix)?)
        };
        deleted.map_err(|e| idb_err("deleting overlays", e))?;
    }
    let done = commit(tx, "deleting overlays").await;
    for lock in locks {
        lock.release().await;
    }
    done
}

async fn commit(tx: Transaction, what: &str) -> Result<()> {
    let raw: IdbTransaction = tx.into();
    match Transaction::from(raw.clone()).await {
        Ok(TransactionResult::Committed) => Ok(()),
        Ok(TransactionResult::Aborted) => Err(js_exception(
            what,
            raw.error(),
            "the transaction was aborted",
        )),
        Err(e) => Err(idb_err(what, e)),
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
        self.present.borrow().contains(&index)
    }

    fn block_indices(&self) -> Vec<u64> {
        self.present.borrow().iter().copied().collect()
    }

    async fn read_block(&self, index: u64, buf: &mut [u8]) -> Result<bool> {
        check_block_len(self.block_size, buf.len())?;
        for map in [&self.pending, &self.in_flight] {
            if let Some(data) = map.borrow().get(&index) {
                buf.copy_from_slice(data);
                return Ok(true);
            }
        }
        if !self.read_only && !self.contains(index) {
            return Ok(false);
        }
        // A read-only view also looks up blocks the writer committed after it opened.
        let found = self.read_stored(index, buf).await?;
        if found {
            self.present.borrow_mut().insert(index);
        }
        Ok(found)
    }

    /// One readonly transaction and one `getAll` over the run's key range, then the
    /// blocks still in flight or pending on top (they are newer than what is stored).
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
        let range = KeyRange::bound(
            &self.block_key(first),
            &self.block_key(first + count - 1),
            Some(false),
            Some(false),
        )
        .map_err(|e| idb_err("reading blocks", e))?;
        let (_tx, store) = read_store(&self.db, BLOCKS, "reading blocks")?;
        let records = request(
            store.get_all(Some(Query::from(range)), None),
            "reading blocks",
        )
        .await?;
        for record in records {
            let index = Reflect::get(&record, &"index".into())
                .ok()
                .and_then(|v| v.as_f64())
                .filter(|i| *i >= first as f64 && *i < (first + count) as f64)
                .ok_or_else(|| StorageError::Integrity("a stored block has a bad index".into()))?
                as u64;
            let slot = (index - first) as usize;
            copy_record(&record, index, &mut buf[slot * bs..(slot + 1) * bs])?;
            filled[slot] = true;
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
        self.present.borrow_mut().insert(index);
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

    async fn clear(&self) -> Result<()> {
        self.check_writable(self.block_size as usize)?;
        let _guard = self.commit_lock.lock().await;
        let tx = strict_transaction(&self.db, &[BLOCKS])?;
        let store = tx
            .object_store(BLOCKS)
            .map_err(|e| idb_err("clearing the overlay", e))?;
        store
            .delete(prefix_range(&[
                self.vm_id.as_str().into(),
                self.disk_id.as_str().into(),
            ])?)
            .map_err(|e| idb_err("clearing the overlay", e))?;
        commit(tx, "clearing the overlay").await?;
        self.pending.borrow_mut().clear();
        self.pending_bytes.set(0);
        self.present.borrow_mut().clear();
        Ok(())
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

/// An exclusive Web Lock, held until released or dropped.
struct WebLock {
    release: js_sys::Function,
    /// The `navigator.locks.request` promise: it settles once the lock is released.
    settled: Promise,
}

impl Drop for WebLock {
    fn drop(&mut self) {
        let _ = self.release.call0(&JsValue::UNDEFINED);
    }
}

impl WebLock {
    /// Takes the lock `name` if it is free: `Ok(None)` when someone else holds it.
    async fn try_acquire(name: &str) -> Result<Option<Self>> {
        let global = js_sys::global();
        let locks = Reflect::get(&global, &"navigator".into())
            .and_then(|n| Reflect::get(&n, &"locks".into()))
            .ok()
            .filter(|l| !l.is_undefined())
            .ok_or_else(|| {
                StorageError::Unsupported(
                    "this browser has no Web Locks API (navigator.locks), needed to keep one writer per disk".into(),
                )
            })?;
        // The lock is held while the promise our callback returns is pending.
        let mut release = None;
        let held = Promise::new(&mut |resolve, _reject| release = Some(resolve));
        let release = release.expect("Promise executors run synchronously");
        let (tx, rx) = futures::channel::oneshot::channel::<bool>();
        let callback = Closure::once_into_js(move |lock: JsValue| -> JsValue {
            let acquired = !lock.is_null();
            let _ = tx.send(acquired);
            if acquired {
                held.into()
            } else {
                JsValue::UNDEFINED
            }
        });
        let options = Object::new();
        set(&options, "mode", &"exclusive".into());
        set(&options, "ifAvailable", &true.into());
        let request = Reflect::get(&locks, &"request".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
            .ok_or_else(|| StorageError::Browser("navigator.locks.request is missing".into()))?;
        let promise = request
            .call3(&locks, &name.into(), &options, &callback)
            .map_err(|e| js_err("requesting a Web Lock", e))?;
        // Surface a rejected request (e.g. an invalid name) instead of waiting forever.
        let settled: Promise = promise.unchecked_into();
        let outcome = futures::future::select(
            rx,
            Box::pin(wasm_bindgen_futures::JsFuture::from(settled.clone())),
        )
        .await;
        let acquired = match outcome {
            futures::future::Either::Left((Ok(acquired), _)) => acquired,
            futures::future::Either::Left((Err(_), _)) => false,
            futures::future::Either::Right((Err(e), _)) => {
                return Err(js_err("requesting a Web Lock", e))
            }
            // The request settled before the callback reported: it was not granted.
            futures::future::Either::Right((Ok(_), _)) => false,
        };
        Ok(acquired.then_some(Self { release, settled }))
    }

    /// Releases the lock and waits until the browser has let it go, so the same page can
    /// take it again at once.
    async fn release(self) {
        let settled = self.settled.clone();
        drop(self);
        let _ = wasm_bindgen_futures::JsFuture::from(settled).await;
    }
}
