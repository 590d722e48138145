//! [`AtlasBackend`]: the small storage interface every Atlas backend implements.

use super::types::ContentHash;
use crate::error::Result;
use async_trait::async_trait;

/// The tables of small records a backend keeps beside its blobs.
///
/// Records are UTF-8 JSON text keyed by a string; the store (not the backend) gives them
/// meaning and checks them when it reads them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordTable {
    /// File manifests, keyed by their content hash (`sha256:...`).
    Manifests,
    /// File metadata, keyed by file name.
    Files,
    /// Provenance records, keyed by record id.
    Provenance,
}

impl RecordTable {
    /// Every table.
    pub const ALL: [RecordTable; 3] = [Self::Manifests, Self::Files, Self::Provenance];

    /// A stable lowercase name (IndexedDB object store, directory name).
    pub fn name(self) -> &'static str {
        match self {
            Self::Manifests => "manifests",
            Self::Files => "files",
            Self::Provenance => "provenance",
        }
    }
}

/// Where an [`AtlasStore`](super::AtlasStore) keeps its bytes.
///
/// A backend is a thin adapter: blobs keyed by their hash, and records in three
/// [`RecordTable`]s. It does not verify hashes or parse records; the store does. Backends
/// are cheap handles: cloning one shares the same storage.
///
/// Writes of one key are all-or-nothing: a reader sees either the old value or the new
/// one, never a torn write.
#[async_trait(?Send)]
pub trait AtlasBackend {
    /// Stores `data` as the blob `hash` (replacing any existing blob of that key).
    async fn put_blob(&self, hash: &ContentHash, data: &[u8]) -> Result<()>;

    /// The blob `hash`, or `None` when it is not stored.
    async fn get_blob(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>>;

    /// Whether the blob `hash` is stored.
    async fn has_blob(&self, hash: &ContentHash) -> Result<bool>;

    /// Removes the blob `hash`; removing a missing blob succeeds.
    async fn delete_blob(&self, hash: &ContentHash) -> Result<()>;

    /// Every stored blob's hash, in no particular order.
    async fn list_blobs(&self) -> Result<Vec<ContentHash>>;

    /// Stores the record `key` in `table`, replacing any existing one.
    async fn put_record(&self, table: RecordTable, key: &str, json: &str) -> Result<()>;

    /// The record `key` of `table`, or `None`.
    async fn get_record(&self, table: RecordTable, key: &str) -> Result<Option<String>>;

    /// Every key of `table`, in no particular order.
    async fn list_records(&self, table: RecordTable) -> Result<Vec<String>>;

    /// Removes the record `key` of `table`; removing a missing record succeeds.
    async fn delete_record(&self, table: RecordTable, key: &str) -> Result<()>;
}

macro_rules! forward_backend {
    ($($ptr:ident)::+) => {
        #[async_trait(?Send)]
        impl<T: AtlasBackend + ?Sized> AtlasBackend for $($ptr)::+<T> {
            async fn put_blob(&self, hash: &ContentHash, data: &[u8]) -> Result<()> {
                (**self).put_blob(hash, data).await
            }
            async fn get_blob(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>> {
                (**self).get_blob(hash).await
            }
            async fn has_blob(&self, hash: &ContentHash) -> Result<bool> {
                (**self).has_blob(hash).await
            }
            async fn delete_blob(&self, hash: &ContentHash) -> Result<()> {
                (**self).delete_blob(hash).await
            }
            async fn list_blobs(&self) -> Result<Vec<ContentHash>> {
                (**self).list_blobs().await
            }
            async fn put_record(&self, table: RecordTable, key: &str, json: &str) -> Result<()> {
                (**self).put_record(table, key, json).await
            }
            async fn get_record(&self, table: RecordTable, key: &str) -> Result<Option<String>> {
                (**self).get_record(table, key).await
            }
            async fn list_records(&self, table: RecordTable) -> Result<Vec<String>> {
                (**self).list_records(table).await
            }
            async fn delete_record(&self, table: RecordTable, key: &str) -> Result<()> {
                (**self).delete_record(table, key).await
            }
        }
    };
}

forward_backend!(Box);
forward_backend!(std::rc::Rc);
forward_backend!(std::sync::Arc);
