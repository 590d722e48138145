//! [`IndexedDbAtlasBackend`]: an Atlas backend in the browser's IndexedDB (`wasm32` only).
//!
//! One database (by default [`IndexedDbAtlasBackend::DEFAULT_DATABASE`]) with four object
//! stores using out-of-line string keys: `blobs` (key `sha256:<hex>`, value a
//! `Uint8Array`), and `manifests`, `files`, `provenance` (value the record's JSON text).
//! Each operation is its own transaction, so every single write is atomic.

use super::backend::{AtlasBackend, RecordTable};
use super::types::ContentHash;
use crate::error::{Result, StorageError};
use async_trait::async_trait;
use idb::{
    Database, DatabaseEvent, Factory, ObjectStore, ObjectStoreParams, Query, Transaction,
    TransactionMode,
};
use js_sys::Uint8Array;
use std::future::IntoFuture;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};

const BLOBS: &str = "blobs";
const DB_VERSION: u32 = 1;

/// An [`AtlasBackend`] in IndexedDB; clones share one connection.
///
/// Works in windows and workers (it uses the global `indexedDB`). The connection closes
/// itself when another connection deletes or upgrades the database; operations after
/// that fail with [`ErrorKind::Browser`](crate::ErrorKind::Browser).
#[derive(Debug, Clone)]
pub struct IndexedDbAtlasBackend {
    db: Rc<Database>,
    name: Rc<str>,
}

fn idb_error(context: &str, e: idb::Error) -> StorageError {
    if let idb::Error::DomException(d) = &e {
        if d.name() == "QuotaExceededError" {
            return StorageError::QuotaExceeded(format!("IndexedDB {context}: {}", d.message()));
        }
    }
    let text = e.to_string();
    if text.contains("QuotaExceeded") {
        return StorageError::QuotaExceeded(format!("IndexedDB {context}: {text}"));
    }
    StorageError::Browser(format!("IndexedDB {context}: {text}"))
}

fn factory() -> Result<Factory> {
    Factory::new().map_err(|e| idb_error("is not available", e))
}

fn key(s: &str) -> JsValue {
    JsValue::from_str(s)
}

/// Makes an IndexedDB request (`made`) and waits for its result; `ctx` names the operation
/// in errors.
async fn request<R, T>(
    made: std::result::Result<R, idb::Error>,
    ctx: &dyn Fn() -> String,
) -> Result<T>
where
    R: IntoFuture<Output = std::result::Result<T, idb::Error>>,
{
    made.map_err(|e| idb_error(&ctx(), e))?
        .await
        .map_err(|e| idb_error(&ctx(), e))
}

/// Commits `tx` and waits for it; an aborted transaction is an error.
async fn commit(tx: Transaction, ctx: &dyn Fn() -> String) -> Result<()> {
    if request(tx.commit(), ctx).await?.is_committed() {
        Ok(())
    } else {
        Err(StorageError::Browser(format!(
            "IndexedDB {}: the transaction was aborted",
            ctx()
        )))
    }
}

impl IndexedDbAtlasBackend {
    /// The database name [`open_default`](Self::open_default) uses.
    pub const DEFAULT_DATABASE: &'static str = "qemuweb-atlas";

    /// Opens (creating or upgrading if needed) the database `name`.
    pub async fn open(name: &str) -> Result<Self> {
        let mut request = factory()?
            .open(name, Some(DB_VERSION))
            .map_err(|e| idb_error("open", e))?;
        request.on_upgrade_needed(|event| {
            let Ok(db) = event.database() else { return };
            let existing = db.store_names();
            let wanted = std::iter::once(BLOBS).chain(RecordTable::ALL.iter().map(|t| t.name()));
            for store in wanted {
                if !existing.iter().any(|s| s == store) {
                    // A failure here aborts the upgrade, which fails the open request.
                    let _ = db.create_object_store(store, ObjectStoreParams::new());
                }
            }
        });
        let mut db = request
            .await
            .map_err(|e| idb_error(&format!("opening database {name:?}"), e))?;
        // Another page (or this one) deleting or upgrading the database must not wait for
        // this connection: close it, and later operations fail with a typed error.
        db.on_version_change(|event| {
            if let Ok(db) = event.database() {
                db.close();
            }
        });
        Ok(Self {
            db: Rc::new(db),
            name: Rc::from(name),
        })
    }

    /// Opens the database [`DEFAULT_DATABASE`](Self::DEFAULT_DATABASE).
    pub async fn open_default() -> Result<Self> {
        Self::open(Self::DEFAULT_DATABASE).await
    }

    /// The database's name.
    pub fn database_name(&self) -> &str {
        &self.name
    }

    /// Closes the connection (for every clone); later operations fail.
    pub fn close(&self) {
        self.db.close();
    }

    /// Deletes the database `name` and everything in it. Connections opened by this type
    /// close themselves when asked to; others may delay the deletion until they close.
    pub async fn delete_database(name: &str) -> Result<()> {
        factory()?
            .delete(name)
            .map_err(|e| idb_error("delete", e))?
            .await
            .map_err(|e| idb_error(&format!("deleting database {name:?}"), e))
    }

    /// A transaction on `store` alone, and the store in it.
    fn store(
        &self,
        store: &str,
        mode: TransactionMode,
        ctx: &dyn Fn() -> String,
    ) -> Result<(Transaction, ObjectStore)> {
        let tx = self
            .db
            .transaction(&[store], mode)
            .map_err(|e| idb_error(&ctx(), e))?;
        let os = tx.object_store(store).map_err(|e| idb_error(&ctx(), e))?;
        Ok((tx, os))
    }

    async fn put(&self, store: &str, k: JsValue, value: JsValue) -> Result<()> {
        let ctx = || format!("writing to {store}");
        let (tx, os) = self.store(store, TransactionMode::ReadWrite, &ctx)?;
        request(os.put(&value, Some(&k)), &ctx).await?;
        commit(tx, &ctx).await
    }

    async fn delete(&self, store: &str, k: JsValue) -> Result<()> {
        let ctx = || format!("deleting from {store}");
        let (tx, os) = self.store(store, TransactionMode::ReadWrite, &ctx)?;
        request(os.delete(Query::Key(k)), &ctx).await?;
        commit(tx, &ctx).await
    }

    async fn get(&self, store: &str, k: JsValue) -> Result<Option<JsValue>> {
        let ctx = || format!("reading from {store}");
        let (_tx, os) = self.store(store, TransactionMode::ReadOnly, &ctx)?;
        let v = request(os.get(Query::Key(k)), &ctx).await?;
        Ok(v.filter(|v| !v.is_undefined()))
    }

    async fn count(&self, store: &str, k: JsValue) -> Result<u32> {
        let ctx = || format!("counting in {store}");
        let (_tx, os) = self.store(store, TransactionMode::ReadOnly, &ctx)?;
        request(os.count(Some(Query::Key(k))), &ctx).await
    }

    async fn keys(&self, store: &str) -> Result<Vec<String>> {
        let ctx = || format!("listing {store}");
        let (_tx, os) = self.store(store, TransactionMode::ReadOnly, &ctx)?;
        let keys = request(os.get_all_keys(None, None), &ctx).await?;
        keys.into_iter()
            .map(|k| {
                k.as_string().ok_or_else(|| {
                    StorageError::Integrity(format!("the {store} store holds a non-string key"))
                })
            })
            .collect()
    }
}

#[async_trait(?Send)]
impl AtlasBackend for IndexedDbAtlasBackend {
    async fn put_blob(&self, hash: &ContentHash, data: &[u8]) -> Result<()> {
        let value = Uint8Array::from(data);
        self.put(BLOBS, key(&hash.to_string()), value.into()).await
    }

    async fn get_blob(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>> {
        match self.get(BLOBS, key(&hash.to_string())).await? {
            None => Ok(None),
            Some(v) => match v.dyn_into::<Uint8Array>() {
                Ok(a) => Ok(Some(a.to_vec())),
                Err(_) => Err(StorageError::Integrity(format!(
                    "the blob {hash} in IndexedDB is not a byte array"
                ))),
            },
        }
    }

    async fn has_blob(&self, hash: &ContentHash) -> Result<bool> {
        Ok(self.count(BLOBS, key(&hash.to_string())).await? > 0)
    }

    async fn delete_blob(&self, hash: &ContentHash) -> Result<()> {
        self.delete(BLOBS, key(&hash.to_string())).await
    }

    async fn list_blobs(&self) -> Result<Vec<ContentHash>> {
        self.keys(BLOBS)
            .await?
            .into_iter()
            .map(|k| {
                k.parse().map_err(|_| {
                    StorageError::Integrity(format!("the blobs store holds a bad key {k:?}"))
                })
            })
            .collect()
    }

    async fn put_record(&self, table: RecordTable, k: &str, json: &str) -> Result<()> {
        self.put(table.name(), key(k), JsValue::from_str(json))
            .await
    }

    async fn get_record(&self, table: RecordTable, k: &str) -> Result<Option<String>> {
        match self.get(table.name(), key(k)).await? {
            None => Ok(None),
            Some(v) => v.as_string().map(Some).ok_or_else(|| {
                StorageError::Integrity(format!(
                    "the {} record {k:?} in IndexedDB is not text",
                    table.name()
                ))
            }),
        }
    }

    async fn list_records(&self, table: RecordTable) -> Result<Vec<String>> {
        self.keys(table.name()).await
    }

    async fn delete_record(&self, table: RecordTable, k: &str) -> Result<()> {
        self.delete(table.name(), key(k)).await
    }
}
