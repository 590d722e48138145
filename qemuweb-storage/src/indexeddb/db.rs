//! The database every IndexedDB overlay and snapshot lives in, its schema and upgrades,
//! and the helpers their code shares (transactions, requests, key ranges, Web Locks).
//!
//! Database `qemuweb-storage`, version 2:
//!
//! | store | key | value |
//! | --- | --- | --- |
//! | `disks` | `[vmId, diskId]` | `{vmId, diskId, blockSize, base?, lineage?}`: `lineage` is the JSON of the disk's [`Lineage`](crate::snapshot::Lineage) |
//! | `gen-blocks` | `[vmId, diskId, gen, index]` | `{vmId, diskId, gen, index, data}`: overlay block `index` of generation `gen` |
//! | `snapshots` | `[vmId, id]` | `{vmId, id, state, header?}`: `state` is `saving`, `importing` or `ready`; `header` the JSON of a ready snapshot's header |
//! | `snapshot-chunks` | `[vmId, id, index]` | `{vmId, id, index, data}`: a non-zero chunk of a snapshot's machine state |
//! | `blocks` | `[vmId, diskId, index]` | version 1's overlay blocks; a disk's are moved into `gen-blocks` (generation 1) when it is first opened writable |
//!
//! Version 1 had `blocks` and `disks` only; the upgrade adds the other stores and leaves
//! the data where it is (no long upgrade transaction): a disk record without a `lineage`
//! is a version-1 disk, migrated in batches, each batch moving blocks in one transaction,
//! the record written last (see `IndexedDbOverlay::open`).

use crate::error::{Result, StorageError};
use idb::{
    Database, DatabaseEvent, Factory, IndexParams, KeyPath, KeyRange, ObjectStore,
    ObjectStoreParams, Query, Transaction, TransactionMode, TransactionResult,
};
use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use std::future::IntoFuture;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DomException, IdbDatabase, IdbTransaction};

/// The database every overlay and snapshot lives in.
pub const DATABASE: &str = "qemuweb-storage";
const DB_VERSION: u32 = 2;
/// Version 1's overlay blocks.
pub(crate) const LEGACY_BLOCKS: &str = "blocks";
pub(crate) const DISKS: &str = "disks";
pub(crate) const GEN_BLOCKS: &str = "gen-blocks";
pub(crate) const SNAPSHOTS: &str = "snapshots";
pub(crate) const SNAPSHOT_CHUNKS: &str = "snapshot-chunks";

/// Opens the database, creating or upgrading its stores.
pub(crate) async fn open_database() -> Result<IdbDatabase> {
    let factory = Factory::new().map_err(|e| idb_err("IndexedDB is not available", e))?;
    let mut request = factory
        .open(DATABASE, Some(DB_VERSION))
        .map_err(|e| idb_err("opening the database", e))?;
    request.on_upgrade_needed(|event| {
        // Errors here abort the upgrade, and the open request then fails with them.
        let Ok(db) = event.database() else { return };
        let has = |name: &str| db.store_names().iter().any(|n| n == name);
        let create = |name: &str, key: &[&str]| {
            let mut params = ObjectStoreParams::new();
            params.key_path(Some(KeyPath::new_array(key.iter().copied())));
            db.create_object_store(name, params).ok()
        };
        if !has(LEGACY_BLOCKS) {
            // Kept so version-1 data has a place; new data never goes there.
            if let Some(store) = create(LEGACY_BLOCKS, &["vmId", "diskId", "index"]) {
                let _ =
                    store.create_index("by-vmId", KeyPath::new_single("vmId"), None::<IndexParams>);
            }
        }
        for (name, key) in [
            (DISKS, &["vmId", "diskId"][..]),
            (GEN_BLOCKS, &["vmId", "diskId", "gen", "index"][..]),
            (SNAPSHOTS, &["vmId", "id"][..]),
            (SNAPSHOT_CHUNKS, &["vmId", "id", "index"][..]),
        ] {
            if !has(name) {
                create(name, key);
            }
        }
    });
    let db = request
        .await
        .map_err(|e| idb_err("opening the database", e))?;
    Ok(db.into())
}

/// Maps an `idb` failure to our error, recognising a full quota.
pub(crate) fn idb_err(what: &str, e: idb::Error) -> StorageError {
    let exception = match &e {
        idb::Error::DomException(d) => Some(d.clone()),
        other => js_payload(other).and_then(|v| v.dyn_into::<DomException>().ok()),
    };
    js_exception(what, exception, &format!("{e}"))
}

pub(crate) fn js_payload(e: &idb::Error) -> Option<JsValue> {
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

pub(crate) fn js_exception(
    what: &str,
    exception: Option<DomException>,
    fallback: &str,
) -> StorageError {
    match exception {
        Some(d) if d.name() == "QuotaExceededError" => {
            StorageError::QuotaExceeded(format!("{what}: {}", d.message()))
        }
        Some(d) => StorageError::Browser(format!("{what}: {}: {}", d.name(), d.message())),
        None => StorageError::Browser(format!("{what}: {fallback}")),
    }
}

pub(crate) fn js_err(what: &str, v: JsValue) -> StorageError {
    let exception = v.clone().dyn_into::<DomException>().ok();
    js_exception(what, exception, &format!("{v:?}"))
}

pub(crate) fn key(parts: &[JsValue]) -> JsValue {
    parts.iter().collect::<Array>().into()
}

/// All keys that start with `prefix` (an array key), as a range.
pub(crate) fn prefix_range(prefix: &[JsValue]) -> Result<KeyRange> {
    let lower = key(prefix);
    let mut upper: Vec<JsValue> = prefix.to_vec();
    // An array sorts after every number and string, so [..prefix, []] bounds them all.
    upper.push(Array::new().into());
    KeyRange::bound(&lower, &key(&upper), Some(false), Some(false))
        .map_err(|e| idb_err("building a key range", e))
}

pub(crate) fn set(obj: &Object, k: &str, v: &JsValue) {
    // Reflect::set on a plain object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(k), v);
}

/// A `readwrite` transaction that completes only once its data is on disk
/// (`durability: "strict"`; web-sys has this overload only as an unstable API).
pub(crate) fn strict_transaction(raw: &IdbDatabase, stores: &[&str]) -> Result<Transaction> {
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
pub(crate) fn idb(db: &IdbDatabase) -> Database {
    Database::from(db.clone())
}

/// A read-only transaction on the store `name` alone, and that store; `what` names the
/// operation in errors.
pub(crate) fn read_store(
    db: &IdbDatabase,
    name: &str,
    what: &str,
) -> Result<(Transaction, ObjectStore)> {
    let tx = idb(db)
        .transaction(&[name], TransactionMode::ReadOnly)
        .map_err(|e| idb_err(what, e))?;
    let store = tx.object_store(name).map_err(|e| idb_err(what, e))?;
    Ok((tx, store))
}

/// Makes a request (`made`) and waits for its result; `what` names the operation in
/// errors.
pub(crate) async fn request<R, T>(made: std::result::Result<R, idb::Error>, what: &str) -> Result<T>
where
    R: IntoFuture<Output = std::result::Result<T, idb::Error>>,
{
    made.map_err(|e| idb_err(what, e))?
        .await
        .map_err(|e| idb_err(what, e))
}

/// Copies the data of stored block `index` (a `{..., data}` record) into `buf`, checking
/// its length.
pub(crate) fn copy_record(record: &JsValue, index: u64, buf: &mut [u8]) -> Result<()> {
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

pub(crate) async fn commit(tx: Transaction, what: &str) -> Result<()> {
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

/// An exclusive Web Lock, held until released or dropped.
pub(crate) struct WebLock {
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
    pub(crate) async fn try_acquire(name: &str) -> Result<Option<Self>> {
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
    pub(crate) async fn release(self) {
        let settled = self.settled.clone();
        drop(self);
        let _ = wasm_bindgen_futures::JsFuture::from(settled).await;
    }
}

/// The key of overlay block `index` of generation `gen` of a disk.
pub(crate) fn block_key(vm_id: &str, disk_id: &str, gen: u32, index: u64) -> JsValue {
    key(&[
        vm_id.into(),
        disk_id.into(),
        f64::from(gen).into(),
        (index as f64).into(),
    ])
}

/// The key range of every block of generation `gen` of a disk.
pub(crate) fn generation_range(vm_id: &str, disk_id: &str, gen: u32) -> Result<KeyRange> {
    prefix_range(&[vm_id.into(), disk_id.into(), f64::from(gen).into()])
}

/// A string field of a stored record.
pub(crate) fn text_field(record: &JsValue, name: &str) -> Option<String> {
    Reflect::get(record, &name.into())
        .ok()
        .and_then(|v| v.as_string())
}

/// A number field of a stored record.
pub(crate) fn number_field(record: &JsValue, name: &str) -> Option<f64> {
    Reflect::get(record, &name.into())
        .ok()
        .and_then(|v| v.as_f64())
}

/// The lineage stored in a disk record; `None` for a version-1 record.
pub(crate) fn record_lineage(record: &JsValue) -> Result<Option<crate::snapshot::Lineage>> {
    let Some(json) = text_field(record, "lineage") else {
        return Ok(None);
    };
    let lineage: crate::snapshot::Lineage = serde_json::from_str(&json)
        .map_err(|e| StorageError::Integrity(format!("disk record: bad lineage: {e}")))?;
    lineage.validate()?;
    Ok(Some(lineage))
}

/// Changes the lineage of disk `disk_id` of VM `vm_id` in one strict transaction: reads
/// its record (a version-1 record's lineage is [`Lineage::new`](crate::snapshot::Lineage::new))
/// and the ids of the VM's snapshot records (in any state), applies `change` to both,
/// deletes the blocks of the generations in `clear` and of every generation that became
/// dead, and writes the record. Returns `change`'s result and the lineage as stored.
///
/// # Errors
///
/// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when the disk has no record;
/// `change`'s error (nothing is written then).
pub(crate) async fn change_lineage<T>(
    db: &IdbDatabase,
    vm_id: &str,
    disk_id: &str,
    clear: &[u32],
    change: impl FnOnce(&mut crate::snapshot::Lineage, &[String]) -> Result<T>,
) -> Result<(T, crate::snapshot::Lineage)> {
    let what = "changing a disk's generations";
    let tx = strict_transaction(db, &[DISKS, GEN_BLOCKS, SNAPSHOTS])?;
    let result = change_in(&tx, vm_id, disk_id, clear, change).await;
    match result {
        Ok(out) => {
            commit(tx, what).await?;
            Ok(out)
        }
        Err(e) => {
            let _ = tx.abort();
            Err(e)
        }
    }
}

async fn change_in<T>(
    tx: &Transaction,
    vm_id: &str,
    disk_id: &str,
    clear: &[u32],
    change: impl FnOnce(&mut crate::snapshot::Lineage, &[String]) -> Result<T>,
) -> Result<(T, crate::snapshot::Lineage)> {
    let what = "changing a disk's generations";
    let disks = tx.object_store(DISKS).map_err(|e| idb_err(what, e))?;
    let snapshots = tx.object_store(SNAPSHOTS).map_err(|e| idb_err(what, e))?;
    let record: Option<JsValue> =
        request(disks.get(key(&[vm_id.into(), disk_id.into()])), what).await?;
    let Some(record) = record else {
        return Err(StorageError::NotFound(format!(
            "disk {disk_id:?} of VM {vm_id:?} is not stored"
        )));
    };
    let keys = request(
        snapshots.get_all_keys(Some(Query::from(prefix_range(&[vm_id.into()])?)), None),
        what,
    )
    .await?;
    let known: Vec<String> = keys
        .iter()
        .filter_map(|k| Reflect::get(k, &1.into()).ok().and_then(|v| v.as_string()))
        .collect();
    let stored = record_lineage(&record)?;
    let mut lineage = stored.clone().unwrap_or_default();
    let out = change(&mut lineage, &known)?;
    let dead = lineage.collect();
    if stored.as_ref() == Some(&lineage) && clear.is_empty() {
        // Nothing to write (an open that changes nothing must work on a full quota).
        return Ok((out, lineage));
    }
    let blocks = tx.object_store(GEN_BLOCKS).map_err(|e| idb_err(what, e))?;
    for g in clear.iter().chain(&dead) {
        blocks
            .delete(generation_range(vm_id, disk_id, *g)?)
            .map_err(|e| idb_err(what, e))?;
    }
    let json = serde_json::to_string(&lineage)
        .map_err(|e| StorageError::Integrity(format!("encoding a lineage: {e}")))?;
    set(record.unchecked_ref(), "lineage", &json.into());
    disks.put(&record, None).map_err(|e| idb_err(what, e))?;
    Ok((out, lineage))
}

/// The ids of every disk of VM `vm_id` that has a record.
pub(crate) async fn disk_ids(db: &IdbDatabase, vm_id: &str) -> Result<Vec<String>> {
    let (_tx, store) = read_store(db, DISKS, "listing disks")?;
    let keys = request(
        store.get_all_keys(Some(Query::from(prefix_range(&[vm_id.into()])?)), None),
        "listing disks",
    )
    .await?;
    Ok(keys
        .iter()
        .filter_map(|k| Reflect::get(k, &1.into()).ok().and_then(|v| v.as_string()))
        .collect())
}

/// The lock that keeps one writer per disk.
pub(crate) fn disk_lock_name(vm_id: &str, disk_id: &str) -> String {
    format!("{DATABASE}/{vm_id}/{disk_id}")
}

/// The lock held while a snapshot is being saved or imported.
pub(crate) fn snapshot_lock_name(vm_id: &str, id: &str) -> String {
    format!("{DATABASE}/snapshot/{vm_id}/{id}")
}

/// A Uint8Array copy of `bytes` (what IndexedDB stores).
pub(crate) fn js_bytes(bytes: &[u8]) -> Uint8Array {
    Uint8Array::from(bytes)
}
