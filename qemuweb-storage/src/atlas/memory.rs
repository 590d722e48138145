//! [`MemoryAtlasBackend`]: an Atlas backend held in memory.

use super::backend::{AtlasBackend, RecordTable};
use super::types::ContentHash;
use crate::error::Result;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Inner {
    blobs: BTreeMap<ContentHash, Arc<[u8]>>,
    records: BTreeMap<(RecordTable, String), String>,
}

/// An [`AtlasBackend`] in memory; clones share the same contents.
///
/// ```
/// use qemuweb_storage::atlas::{AtlasBackend, ContentHash, MemoryAtlasBackend};
/// # futures::executor::block_on(async {
/// let backend = MemoryAtlasBackend::new();
/// let h = ContentHash::of(b"x");
/// backend.clone().put_blob(&h, b"x").await.unwrap();
/// assert_eq!(backend.get_blob(&h).await.unwrap().unwrap(), b"x");
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryAtlasBackend {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryAtlasBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait(?Send)]
impl AtlasBackend for MemoryAtlasBackend {
    async fn put_blob(&self, hash: &ContentHash, data: &[u8]) -> Result<()> {
        self.lock().blobs.insert(*hash, Arc::from(data));
        Ok(())
    }

    async fn get_blob(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().blobs.get(hash).map(|b| b.to_vec()))
    }

    async fn has_blob(&self, hash: &ContentHash) -> Result<bool> {
        Ok(self.lock().blobs.contains_key(hash))
    }

    async fn delete_blob(&self, hash: &ContentHash) -> Result<()> {
        self.lock().blobs.remove(hash);
        Ok(())
    }

    async fn list_blobs(&self) -> Result<Vec<ContentHash>> {
        Ok(self.lock().blobs.keys().copied().collect())
    }

    async fn put_record(&self, table: RecordTable, key: &str, json: &str) -> Result<()> {
        self.lock()
            .records
            .insert((table, key.to_owned()), json.to_owned());
        Ok(())
    }

    async fn get_record(&self, table: RecordTable, key: &str) -> Result<Option<String>> {
        Ok(self.lock().records.get(&(table, key.to_owned())).cloned())
    }

    async fn list_records(&self, table: RecordTable) -> Result<Vec<String>> {
        Ok(self
            .lock()
            .records
            .keys()
            .filter(|(t, _)| *t == table)
            .map(|(_, k)| k.clone())
            .collect())
    }

    async fn delete_record(&self, table: RecordTable, key: &str) -> Result<()> {
        self.lock().records.remove(&(table, key.to_owned()));
        Ok(())
    }
}
