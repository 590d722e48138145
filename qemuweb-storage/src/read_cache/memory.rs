//! [`MemoryReadCache`]: a [`ReadCache`] in memory, for native programs and tests.

use super::{CachedImage, ReadCache};
use crate::error::{Result, StorageError};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Default)]
struct State {
    /// URL -> the identity bound to it.
    images: HashMap<String, CachedImage>,
    /// (image key, index) -> (last use, bytes).
    chunks: HashMap<(String, u64), (u64, Vec<u8>)>,
    /// Last use -> (image key, index), for eviction.
    by_use: BTreeMap<u64, (String, u64)>,
    clock: u64,
    bytes: u64,
}

impl State {
    fn touch(&mut self, key: &(String, u64)) {
        self.clock += 1;
        let now = self.clock;
        if let Some((used, _)) = self.chunks.get_mut(key) {
            self.by_use.remove(used);
            *used = now;
            self.by_use.insert(now, key.clone());
        }
    }

    fn remove(&mut self, key: &(String, u64)) {
        if let Some((used, data)) = self.chunks.remove(key) {
            self.by_use.remove(&used);
            self.bytes -= data.len() as u64;
        }
    }
}

/// A bounded, least-recently-used [`ReadCache`] in memory.
///
/// ```
/// use qemuweb_storage::read_cache::{CachedImage, MemoryReadCache, ReadCache};
/// # futures::executor::block_on(async {
/// let cache = MemoryReadCache::new(8192); // two 4 KiB chunks
/// let img = CachedImage::new("http://h/x", "\"e\"", true, 1 << 20, 4096);
/// cache.bind(&img).await.unwrap();
/// for i in 0..3 {
///     cache.put(&img, &[(i, &[i as u8; 4096][..])]).await.unwrap();
/// }
/// let held: Vec<u64> = cache.get(&img, &[0, 1, 2]).await.unwrap().iter().map(|c| c.0).collect();
/// assert_eq!(held, [1, 2]); // chunk 0 was used least recently
/// # });
/// ```
pub struct MemoryReadCache {
    max_bytes: u64,
    state: Mutex<State>,
}

impl MemoryReadCache {
    /// An empty cache holding at most `max_bytes` of chunks.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait(?Send)]
impl ReadCache for MemoryReadCache {
    async fn image(&self, url: &str) -> Result<Option<CachedImage>> {
        Ok(self.lock().images.get(url).cloned())
    }

    async fn bind(&self, image: &CachedImage) -> Result<()> {
        let mut s = self.lock();
        let old = s.images.insert(image.url.clone(), image.clone());
        if let Some(old) = old.filter(|o| o != image) {
            let old_key = old.key();
            let gone: Vec<(String, u64)> = s
                .chunks
                .keys()
                .filter(|(k, _)| *k == old_key)
                .cloned()
                .collect();
            for k in gone {
                s.remove(&k);
            }
        }
        Ok(())
    }

    async fn get(&self, image: &CachedImage, indices: &[u64]) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut s = self.lock();
        if s.images.get(&image.url) != Some(image) {
            return Ok(Vec::new());
        }
        let key = image.key();
        let mut out = Vec::new();
        for &i in indices {
            let k = (key.clone(), i);
            if let Some((_, data)) = s.chunks.get(&k) {
                out.push((i, data.clone()));
                s.touch(&k);
            }
        }
        Ok(out)
    }

    async fn put(&self, image: &CachedImage, chunks: &[(u64, &[u8])]) -> Result<()> {
        let mut s = self.lock();
        if s.images.get(&image.url) != Some(image) {
            return Err(StorageError::InvalidArgument(format!(
                "the read cache is not bound to this version of {}",
                image.url
            )));
        }
        let key = image.key();
        for &(i, data) in chunks {
            if !image.chunk_fits(i, data.len()) {
                return Err(StorageError::InvalidArgument(format!(
                    "chunk {i} of {} has {} bytes",
                    image.url,
                    data.len()
                )));
            }
            if data.len() as u64 > self.max_bytes {
                continue;
            }
            let k = (key.clone(), i);
            s.remove(&k);
            s.clock += 1;
            let now = s.clock;
            s.bytes += data.len() as u64;
            s.chunks.insert(k.clone(), (now, data.to_vec()));
            s.by_use.insert(now, k);
        }
        while s.bytes > self.max_bytes {
            let Some((_, oldest)) = s.by_use.iter().next().map(|(u, k)| (*u, k.clone())) else {
                break;
            };
            s.remove(&oldest);
        }
        Ok(())
    }

    async fn bytes(&self) -> Result<u64> {
        Ok(self.lock().bytes)
    }
}
