//! [`DirAtlasBackend`]: an Atlas backend in a native directory (not on `wasm32`).
//!
//! Layout under the root:
//!
//! - `blobs/<64 hex digits>`: one file per blob, named by its hash;
//! - `manifests/`, `files/`, `provenance/`: one JSON file per record, named by the SHA-256
//!   of its key (keys are arbitrary text, file names are not), holding
//!   `{"key": ..., "value": ...}`;
//! - `tmp/`: files being written. Every write goes to a temporary file that is synced and
//!   then renamed over its final name, so a crash never leaves a torn blob or record.

use super::backend::{AtlasBackend, RecordTable};
use super::types::ContentHash;
use crate::error::{Result, StorageError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{ErrorKind as IoKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An [`AtlasBackend`] in a directory; clones share the same directory.
///
/// ```
/// use qemuweb_storage::atlas::{AtlasStore, DirAtlasBackend, StoreOptions};
/// # futures::executor::block_on(async {
/// let root = std::env::temp_dir().join(format!("qemuweb-atlas-doc-{}", std::process::id()));
/// let store = AtlasStore::new(DirAtlasBackend::open(&root).unwrap());
/// store.store_file("hello.txt", b"hello", StoreOptions::default()).await.unwrap();
/// let again = AtlasStore::new(DirAtlasBackend::open(&root).unwrap());
/// assert_eq!(again.read_file("hello.txt").await.unwrap(), b"hello");
/// # std::fs::remove_dir_all(&root).unwrap();
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct DirAtlasBackend {
    root: Arc<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    key: String,
    value: String,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl DirAtlasBackend {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        for sub in ["blobs", "tmp", "manifests", "files", "provenance"] {
            let p = root.join(sub);
            fs::create_dir_all(&p)
                .map_err(|e| StorageError::io(format!("creating {}", p.display()), e))?;
        }
        Ok(Self {
            root: Arc::new(root),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of the blob `hash` (which may not exist).
    pub fn blob_path(&self, hash: &ContentHash) -> PathBuf {
        self.root.join("blobs").join(hash.hex())
    }

    fn record_path(&self, table: RecordTable, key: &str) -> PathBuf {
        self.root
            .join(table.name())
            .join(format!("{}.json", ContentHash::of(key.as_bytes()).hex()))
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<()> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}-{n}.tmp", std::process::id()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, path)?;
            // Make the rename itself durable (where directories can be synced).
            if let Some(parent) = path.parent() {
                if let Ok(d) = fs::File::open(parent) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error(format!("writing {}", path.display()), e)
        })
    }
}

/// Maps an I/O error, turning a full disk into [`StorageError::QuotaExceeded`].
fn io_error(context: String, e: std::io::Error) -> StorageError {
    if e.kind() == IoKind::StorageFull || e.kind() == IoKind::QuotaExceeded {
        StorageError::QuotaExceeded(format!("{context}: {e}"))
    } else {
        StorageError::io(context, e)
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == IoKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}

fn remove_optional(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == IoKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(format!("removing {}", path.display()), e)),
    }
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let ctx = || format!("listing {}", dir.display());
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io(ctx(), e))? {
        let entry = entry.map_err(|e| StorageError::io(ctx(), e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_owned(), entry.path()));
        }
    }
    Ok(out)
}

#[async_trait(?Send)]
impl AtlasBackend for DirAtlasBackend {
    async fn put_blob(&self, hash: &ContentHash, data: &[u8]) -> Result<()> {
        self.write_atomic(&self.blob_path(hash), data)
    }

    async fn get_blob(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>> {
        read_optional(&self.blob_path(hash))
    }

    async fn has_blob(&self, hash: &ContentHash) -> Result<bool> {
        let p = self.blob_path(hash);
        p.try_exists()
            .map_err(|e| StorageError::io(format!("checking {}", p.display()), e))
    }

    async fn delete_blob(&self, hash: &ContentHash) -> Result<()> {
        remove_optional(&self.blob_path(hash))
    }

    async fn list_blobs(&self) -> Result<Vec<ContentHash>> {
        Ok(list_dir(&self.root.join("blobs"))?
            .into_iter()
            .filter_map(|(name, _)| ContentHash::from_hex(&name).ok())
            .collect())
    }

    async fn put_record(&self, table: RecordTable, key: &str, json: &str) -> Result<()> {
        let env = Envelope {
            key: key.to_owned(),
            value: json.to_owned(),
        };
        let bytes = serde_json::to_vec(&env)
            .map_err(|e| StorageError::InvalidArgument(format!("record {key:?}: {e}")))?;
        self.write_atomic(&self.record_path(table, key), &bytes)
    }

    async fn get_record(&self, table: RecordTable, key: &str) -> Result<Option<String>> {
        let path = self.record_path(table, key);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let env = parse_envelope(&path, &bytes)?;
        if env.key != key {
            return Err(StorageError::Integrity(format!(
                "{} holds the record {:?}, not {key:?}",
                path.display(),
                env.key
            )));
        }
        Ok(Some(env.value))
    }

    async fn list_records(&self, table: RecordTable) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        for (name, path) in list_dir(&self.root.join(table.name()))? {
            if !name.ends_with(".json") {
                continue;
            }
            let Some(bytes) = read_optional(&path)? else {
                continue; // removed meanwhile
            };
            keys.push(parse_envelope(&path, &bytes)?.key);
        }
        Ok(keys)
    }

    async fn delete_record(&self, table: RecordTable, key: &str) -> Result<()> {
        remove_optional(&self.record_path(table, key))
    }
}

fn parse_envelope(path: &Path, bytes: &[u8]) -> Result<Envelope> {
    serde_json::from_slice(bytes).map_err(|e| {
        StorageError::Integrity(format!("{} is not an Atlas record: {e}", path.display()))
    })
}
