//! [`AtlasBlockDevice`]: a file in an Atlas store as a read-only disk.

use super::backend::AtlasBackend;
use super::store::AtlasStore;
use super::types::FileManifest;
use crate::device::{check_range, BlockDevice};
use crate::error::{Result, StorageError};
use async_trait::async_trait;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// How many chunks an [`AtlasBlockDevice`] keeps by default (16 MiB of 4 MiB chunks).
pub const DEFAULT_CACHED_CHUNKS: usize = 4;

/// A stored file as a read-only [`BlockDevice`], opened with
/// [`AtlasStore::open_device`].
///
/// A read fetches only the chunks it touches, checks each chunk's SHA-256 (a corrupted
/// chunk fails the read with [`ErrorKind::Integrity`](crate::ErrorKind::Integrity)) and
/// keeps the most recently used chunks in a small cache. The manifest is read once, at
/// open; replacing the file in the store later does not change an open device.
///
/// ```
/// use qemuweb_storage::BlockDevice;
/// use qemuweb_storage::atlas::{AtlasStore, MemoryAtlasBackend, StoreOptions};
/// # futures::executor::block_on(async {
/// let store = AtlasStore::new(MemoryAtlasBackend::new());
/// let image: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
/// store.store_file("disk.img", &image, StoreOptions::default()).await.unwrap();
/// let disk = store.open_device("disk.img").await.unwrap();
/// assert_eq!(disk.size(), 3000);
/// assert!(disk.read_only());
/// assert_eq!(disk.read_vec(1000, 4).await.unwrap(), &image[1000..1004]);
/// # });
/// ```
#[derive(Debug)]
pub struct AtlasBlockDevice<B> {
    store: AtlasStore<B>,
    name: String,
    manifest: FileManifest,
    cache: Mutex<LruCache<usize, Arc<[u8]>>>,
    closed: AtomicBool,
}

impl<B: AtlasBackend> AtlasBlockDevice<B> {
    pub(crate) fn new(store: AtlasStore<B>, name: &str, manifest: FileManifest) -> Self {
        Self {
            store,
            name: name.to_owned(),
            manifest,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(DEFAULT_CACHED_CHUNKS).unwrap_or(NonZeroUsize::MIN),
            )),
            closed: AtomicBool::new(false),
        }
    }

    /// Keeps up to `chunks` chunks in the cache (at least one).
    pub fn with_cached_chunks(self, chunks: usize) -> Self {
        let n = NonZeroUsize::new(chunks).unwrap_or(NonZeroUsize::MIN);
        self.lock().resize(n);
        self
    }

    /// The stored file's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The manifest the device reads.
    pub fn manifest(&self) -> &FileManifest {
        &self.manifest
    }

    /// How many chunks the cache holds now.
    pub fn cached_chunks(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<usize, Arc<[u8]>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn chunk(&self, index: usize) -> Result<Arc<[u8]>> {
        if let Some(c) = self.lock().get(&index) {
            return Ok(c.clone());
        }
        let data: Arc<[u8]> = Arc::from(self.store.read_chunk(&self.manifest.chunks[index]).await?);
        self.lock().put(index, data.clone());
        Ok(data)
    }
}

#[async_trait(?Send)]
impl<B: AtlasBackend> BlockDevice for AtlasBlockDevice<B> {
    fn size(&self) -> u64 {
        self.manifest.total_size
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        check_range(self.size(), offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = self.manifest.chunk_index(pos).ok_or_else(|| {
                StorageError::Integrity(format!("no chunk of {:?} covers offset {pos}", self.name))
            })?;
            let chunk = self.chunk(index).await?;
            let within = (pos - self.manifest.chunks[index].offset) as usize;
            let n = (chunk.len() - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&chunk[within..within + n]);
            done += n;
        }
        Ok(())
    }

    async fn write_at(&self, _offset: u64, _data: &[u8]) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        Err(StorageError::ReadOnly(format!(
            "Atlas file {:?} (content-addressed files never change; put a CowBlockDevice over it)",
            self.name
        )))
    }

    async fn sync(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.lock().clear();
        Ok(())
    }
}
