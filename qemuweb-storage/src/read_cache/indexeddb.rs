//! [`IndexedDbReadCache`]: the read cache in the browser's IndexedDB (`wasm32` only).
//!
//! Database `qemuweb-read-cache` (version 1), its own so clearing it never touches a
//! VM's disks:
//!
//! | store | key | value |
//! | --- | --- | --- |
//! | `images` | `url` | the identity bound to the URL (`key`, `validator`, `etag`, `size`, `chunkSize`) |
//! | `chunks` | `[key, index]` | `{key, index, data}` |
//! | `usage` | `[key, index]` | `{key, index, used, bytes}`, index `by-used` on `used` (least recently used first) |
//! | `meta` | `name` | `{name: "total", bytes}`: bytes of chunks held |
//!
//! Every change (bind, put with its evictions) is one transaction, so the total and the
//! chunks always agree. A hit rewrites only its small `usage` record.

use super::{CachedImage, ReadCache};
use crate::error::{Result, StorageError};
use crate::indexeddb::db::{idb, idb_err, key, prefix_range, request, set};
use async_trait::async_trait;
use idb::{
    DatabaseEvent, Factory, IndexParams, KeyPath, ObjectStoreParams, Query, Transaction,
    TransactionMode, TransactionResult,
};
use js_sys::{Object, Reflect, Uint8Array};
use std::cell::Cell;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::IdbDatabase;

/// The database of the read cache.
pub const DATABASE: &str = "qemuweb-read-cache";
const DB_VERSION: u32 = 1;
const IMAGES: &str = "images";
const CHUNKS: &str = "chunks";
const USAGE: &str = "usage";
const META: &str = "meta";
const BY_USED: &str = "by-used";
/// Least recently used chunks removed per step of an eviction.
const EVICT_BATCH: u32 = 64;

/// A bounded, least-recently-used [`ReadCache`] in IndexedDB.
///
/// ```no_run
/// use qemuweb_storage::read_cache::IndexedDbReadCache;
/// use qemuweb_storage::{HttpBlockDevice, HttpOptions};
/// use std::rc::Rc;
/// # async fn demo() -> qemuweb_storage::Result<()> {
/// let cache = Rc::new(IndexedDbReadCache::open(256 << 20).await?);
/// let disk = HttpBlockDevice::open("/disk.qcow2", HttpOptions::default().read_cache(cache)).await?;
/// # Ok(()) }
/// ```
pub struct IndexedDbReadCache {
    db: IdbDatabase,
    max_bytes: u64,
    /// Makes use stamps of one millisecond distinct.
    seq: Cell<u32>,
}

impl Drop for IndexedDbReadCache {
    fn drop(&mut self) {
        self.db.close();
    }
}

async fn open_database() -> Result<IdbDatabase> {
    let factory = Factory::new().map_err(|e| idb_err("IndexedDB is not available", e))?;
    let mut req = factory
        .open(DATABASE, Some(DB_VERSION))
        .map_err(|e| idb_err("opening the read cache", e))?;
    req.on_upgrade_needed(|event| {
        let Ok(db) = event.database() else { return };
        let has = |name: &str| db.store_names().iter().any(|n| n == name);
        let params = |path: KeyPath| {
            let mut p = ObjectStoreParams::new();
            p.key_path(Some(path));
            p
        };
        if !has(IMAGES) {
            let _ = db.create_object_store(IMAGES, params(KeyPath::new_single("url")));
        }
        if !has(CHUNKS) {
            let _ = db.create_object_store(CHUNKS, params(KeyPath::new_array(["key", "index"])));
        }
        if !has(USAGE) {
            if let Ok(store) =
                db.create_object_store(USAGE, params(KeyPath::new_array(["key", "index"])))
            {
                let _ =
                    store.create_index(BY_USED, KeyPath::new_single("used"), None::<IndexParams>);
            }
        }
        if !has(META) {
            let _ = db.create_object_store(META, params(KeyPath::new_single("name")));
        }
    });
    let db = req
        .await
        .map_err(|e| idb_err("opening the read cache", e))?;
    Ok(db.into())
}

fn chunk_key(image_key: &str, index: u64) -> JsValue {
    key(&[image_key.into(), (index as f64).into()])
}

fn image_from(record: &JsValue) -> Option<CachedImage> {
    let get = |k: &str| Reflect::get(record, &k.into()).ok();
    Some(CachedImage {
        url: get("url")?.as_string()?,
        validator: get("validator")?.as_string()?,
        etag: get("etag")?.as_bool()?,
        size: get("size")?.as_f64()? as u64,
        chunk_size: get("chunkSize")?.as_f64()? as u32,
    })
}

async fn finish(tx: Transaction, what: &str) -> Result<()> {
    match tx.await.map_err(|e| idb_err(what, e))? {
        TransactionResult::Committed => Ok(()),
        TransactionResult::Aborted => Err(StorageError::Browser(format!(
            "{what}: the transaction was aborted"
        ))),
    }
}

impl IndexedDbReadCache {
    /// Opens the read cache, holding at most `max_bytes` of chunks (shared by every page
    /// and worker of the origin; each instance evicts down to its own budget).
    pub async fn open(max_bytes: u64) -> Result<Self> {
        Ok(Self {
            db: open_database().await?,
            max_bytes,
            seq: Cell::new(0),
        })
    }

    /// Deletes the whole cache.
    pub async fn clear(&self) -> Result<()> {
        let tx = self.write(&[IMAGES, CHUNKS, USAGE, META])?;
        for s in [IMAGES, CHUNKS, USAGE, META] {
            tx.object_store(s)
                .map_err(|e| idb_err("clearing the read cache", e))?
                .clear()
                .map_err(|e| idb_err("clearing the read cache", e))?;
        }
        finish(tx, "clearing the read cache").await
    }

    fn write(&self, stores: &[&str]) -> Result<Transaction> {
        idb(&self.db)
            .transaction(stores, TransactionMode::ReadWrite)
            .map_err(|e| idb_err("writing the read cache", e))
    }

    /// A use stamp: the time, made distinct within a millisecond.
    fn now(&self) -> f64 {
        let n = self.seq.get().wrapping_add(1) % 1000;
        self.seq.set(n);
        js_sys::Date::now() + f64::from(n) / 1000.0
    }

    async fn total(tx: &Transaction) -> Result<f64> {
        let meta = tx
            .object_store(META)
            .map_err(|e| idb_err("reading the read cache", e))?;
        let record: Option<JsValue> = request(
            meta.get(JsValue::from_str("total")),
            "reading the read cache",
        )
        .await?;
        Ok(record
            .and_then(|r| Reflect::get(&r, &"bytes".into()).ok())
            .and_then(|b| b.as_f64())
            .unwrap_or(0.0))
    }

    fn set_total(tx: &Transaction, bytes: f64) -> Result<()> {
        let record = Object::new();
        set(&record, "name", &"total".into());
        set(&record, "bytes", &bytes.max(0.0).into());
        tx.object_store(META)
            .map_err(|e| idb_err("writing the read cache", e))?
            .put(&record.into(), None)
            .map_err(|e| idb_err("writing the read cache", e))?;
        Ok(())
    }

    /// Deletes every chunk of image `image_key`; returns their bytes.
    async fn drop_image(tx: &Transaction, image_key: &str) -> Result<f64> {
        let what = "dropping an old image version";
        let usage = tx.object_store(USAGE).map_err(|e| idb_err(what, e))?;
        let range = prefix_range(&[image_key.into()])?;
        let records = request(usage.get_all(Some(Query::from(range.clone())), None), what).await?;
        let bytes: f64 = records
            .iter()
            .filter_map(|r| Reflect::get(r, &"bytes".into()).ok()?.as_f64())
            .sum();
        usage.delete(range.clone()).map_err(|e| idb_err(what, e))?;
        tx.object_store(CHUNKS)
            .map_err(|e| idb_err(what, e))?
            .delete(range)
            .map_err(|e| idb_err(what, e))?;
        Ok(bytes)
    }

    /// Removes least recently used chunks until `total` is at most the budget; returns
    /// the new total.
    async fn evict(&self, tx: &Transaction, mut total: f64) -> Result<f64> {
        let what = "evicting from the read cache";
        let usage = tx.object_store(USAGE).map_err(|e| idb_err(what, e))?;
        let chunks = tx.object_store(CHUNKS).map_err(|e| idb_err(what, e))?;
        let by_used = usage.index(BY_USED).map_err(|e| idb_err(what, e))?;
        while total > self.max_bytes as f64 {
            let oldest = request(by_used.get_all(None, Some(EVICT_BATCH)), what).await?;
            if oldest.is_empty() {
                return Ok(0.0);
            }
            for r in oldest {
                let k = (|| {
                    Some((
                        Reflect::get(&r, &"key".into()).ok()?.as_string()?,
                        Reflect::get(&r, &"index".into()).ok()?.as_f64()?,
                        Reflect::get(&r, &"bytes".into()).ok()?.as_f64()?,
                    ))
                })();
                let Some((image_key, index, bytes)) = k else {
                    continue;
                };
                let key = chunk_key(&image_key, index as u64);
                usage
                    .delete(Query::from(key.clone()))
                    .map_err(|e| idb_err(what, e))?;
                chunks
                    .delete(Query::from(key))
                    .map_err(|e| idb_err(what, e))?;
                total -= bytes;
                if total <= self.max_bytes as f64 {
                    break;
                }
            }
        }
        Ok(total)
    }

    async fn bound(tx: &Transaction, image: &CachedImage) -> Result<bool> {
        let what = "reading the read cache";
        let images = tx.object_store(IMAGES).map_err(|e| idb_err(what, e))?;
        let record: Option<JsValue> =
            request(images.get(JsValue::from_str(&image.url)), what).await?;
        Ok(record.and_then(|r| image_from(&r)).as_ref() == Some(image))
    }
}

#[async_trait(?Send)]
impl ReadCache for IndexedDbReadCache {
    async fn image(&self, url: &str) -> Result<Option<CachedImage>> {
        let what = "reading the read cache";
        let tx = idb(&self.db)
            .transaction(&[IMAGES], TransactionMode::ReadOnly)
            .map_err(|e| idb_err(what, e))?;
        let images = tx.object_store(IMAGES).map_err(|e| idb_err(what, e))?;
        let record: Option<JsValue> = request(images.get(JsValue::from_str(url)), what).await?;
        Ok(record.and_then(|r| image_from(&r)))
    }

    async fn bind(&self, image: &CachedImage) -> Result<()> {
        let what = "binding the read cache to an image";
        let tx = self.write(&[IMAGES, CHUNKS, USAGE, META])?;
        let images = tx.object_store(IMAGES).map_err(|e| idb_err(what, e))?;
        let old: Option<JsValue> = request(images.get(JsValue::from_str(&image.url)), what).await?;
        let old = old.and_then(|r| image_from(&r));
        if let Some(old) = old.filter(|o| o != image) {
            let freed = Self::drop_image(&tx, &old.key()).await?;
            let total = Self::total(&tx).await?;
            Self::set_total(&tx, total - freed)?;
        }
        let record = Object::new();
        set(&record, "url", &image.url.as_str().into());
        set(&record, "key", &image.key().into());
        set(&record, "validator", &image.validator.as_str().into());
        set(&record, "etag", &image.etag.into());
        set(&record, "size", &(image.size as f64).into());
        set(&record, "chunkSize", &image.chunk_size.into());
        images
            .put(&record.into(), None)
            .map_err(|e| idb_err(what, e))?;
        finish(tx, what).await
    }

    async fn get(&self, image: &CachedImage, indices: &[u64]) -> Result<Vec<(u64, Vec<u8>)>> {
        let what = "reading the read cache";
        let tx = self.write(&[IMAGES, CHUNKS, USAGE])?;
        if !Self::bound(&tx, image).await? {
            let _ = tx.abort();
            return Ok(Vec::new());
        }
        let image_key = image.key();
        let chunks = tx.object_store(CHUNKS).map_err(|e| idb_err(what, e))?;
        let usage = tx.object_store(USAGE).map_err(|e| idb_err(what, e))?;
        let mut out = Vec::new();
        for &i in indices {
            let record: Option<JsValue> =
                request(chunks.get(chunk_key(&image_key, i)), what).await?;
            let Some(data) = record
                .and_then(|r| Reflect::get(&r, &"data".into()).ok())
                .and_then(|d| d.dyn_into::<Uint8Array>().ok())
            else {
                continue;
            };
            let data = data.to_vec();
            if !image.chunk_fits(i, data.len()) {
                continue;
            }
            let u = Object::new();
            set(&u, "key", &image_key.as_str().into());
            set(&u, "index", &(i as f64).into());
            set(&u, "used", &self.now().into());
            set(&u, "bytes", &(data.len() as f64).into());
            usage.put(&u.into(), None).map_err(|e| idb_err(what, e))?;
            out.push((i, data));
        }
        finish(tx, what).await?;
        Ok(out)
    }

    async fn put(&self, image: &CachedImage, chunks: &[(u64, &[u8])]) -> Result<()> {
        let what = "writing the read cache";
        let tx = self.write(&[IMAGES, CHUNKS, USAGE, META])?;
        if !Self::bound(&tx, image).await? {
            let _ = tx.abort();
            return Ok(());
        }
        let image_key = image.key();
        let store = tx.object_store(CHUNKS).map_err(|e| idb_err(what, e))?;
        let usage = tx.object_store(USAGE).map_err(|e| idb_err(what, e))?;
        let mut total = Self::total(&tx).await?;
        for &(i, data) in chunks {
            if !image.chunk_fits(i, data.len()) || data.len() as u64 > self.max_bytes {
                continue;
            }
            let k = chunk_key(&image_key, i);
            let had: Option<JsValue> = request(usage.get(k), what).await?;
            if had.is_none() {
                total += data.len() as f64;
            }
            let c = Object::new();
            set(&c, "key", &image_key.as_str().into());
            set(&c, "index", &(i as f64).into());
            set(&c, "data", &Uint8Array::from(data).into());
            store.put(&c.into(), None).map_err(|e| idb_err(what, e))?;
            let u = Object::new();
            set(&u, "key", &image_key.as_str().into());
            set(&u, "index", &(i as f64).into());
            set(&u, "used", &self.now().into());
            set(&u, "bytes", &(data.len() as f64).into());
            usage.put(&u.into(), None).map_err(|e| idb_err(what, e))?;
        }
        let total = self.evict(&tx, total).await?;
        Self::set_total(&tx, total)?;
        finish(tx, what).await
    }

    async fn bytes(&self) -> Result<u64> {
        let tx = idb(&self.db)
            .transaction(&[META], TransactionMode::ReadOnly)
            .map_err(|e| idb_err("reading the read cache", e))?;
        Ok(Self::total(&tx).await? as u64)
    }
}
