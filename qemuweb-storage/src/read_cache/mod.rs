//! A persistent read cache for base images: the chunks an [`HttpBlockDevice`] fetched,
//! kept across page loads, so a second boot of the same image fetches only what it never
//! read, and a page can boot offline what it has seen.
//!
//! - [`ReadCache`]: the store the HTTP device consults (given as
//!   [`HttpOptions::read_cache`](crate::HttpOptions::read_cache)); [`MemoryReadCache`]
//!   keeps chunks for the life of the process, `IndexedDbReadCache` (wasm32) in the
//!   browser's IndexedDB.
//! - Chunks are keyed by the image's [`CachedImage`] identity: its URL, its HTTP validator
//!   (strong `ETag`, or `Last-Modified`), its size and the chunk size. When an image's
//!   validator changes, the cache is [bound](ReadCache::bind) to the new identity and the
//!   old chunks are dropped, so chunks of two versions are never mixed. Images without a
//!   validator are not cached.
//! - Each store is bounded by a byte budget and evicts the least recently used chunks.
//!
//! ```
//! use qemuweb_storage::read_cache::{CachedImage, MemoryReadCache, ReadCache};
//! # futures::executor::block_on(async {
//! let cache = MemoryReadCache::new(1 << 20);
//! let image = CachedImage::new("http://h/disk.img", "\"v1\"", true, 65536, 4096);
//! cache.bind(&image).await.unwrap();
//! cache.put(&image, &[(3, &[7u8; 4096][..])]).await.unwrap();
//! let got = cache.get(&image, &[3, 4]).await.unwrap();
//! assert_eq!(got.len(), 1);
//! assert_eq!(got[0].0, 3);
//! // A new version of the image: the old chunks are gone.
//! let v2 = CachedImage::new("http://h/disk.img", "\"v2\"", true, 65536, 4096);
//! cache.bind(&v2).await.unwrap();
//! assert!(cache.get(&v2, &[3]).await.unwrap().is_empty());
//! # });
//! ```
//!
//! [`HttpBlockDevice`]: crate::HttpBlockDevice

mod memory;

#[cfg(target_arch = "wasm32")]
mod indexeddb;

pub use memory::MemoryReadCache;

#[cfg(target_arch = "wasm32")]
pub use indexeddb::IndexedDbReadCache;

use crate::error::Result;
use async_trait::async_trait;

/// The default byte budget of a read cache: 512 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;

/// What a cached image is: every field must match for its chunks to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    /// The image's URL.
    pub url: String,
    /// Its validator, exactly as the server sent it.
    pub validator: String,
    /// Whether the validator is a strong `ETag` (else a `Last-Modified` date).
    pub etag: bool,
    /// The image's size in bytes.
    pub size: u64,
    /// The size of the cached chunks (the HTTP device's chunk size).
    pub chunk_size: u32,
}

impl CachedImage {
    /// An identity.
    pub fn new(url: &str, validator: &str, etag: bool, size: u64, chunk_size: u32) -> Self {
        Self {
            url: url.to_string(),
            validator: validator.to_string(),
            etag,
            size,
            chunk_size,
        }
    }

    /// The key its chunks are stored under: every field of the identity, so a chunk of
    /// one version can never be found for another.
    pub fn key(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}",
            self.url,
            if self.etag { "etag" } else { "date" },
            self.validator,
            self.size,
            self.chunk_size
        )
    }

    /// Whether chunk `index` has the length `len` this image's chunks have.
    pub fn chunk_fits(&self, index: u64, len: usize) -> bool {
        let cs = u64::from(self.chunk_size);
        let start = index.saturating_mul(cs);
        start < self.size && len as u64 == cs.min(self.size - start)
    }
}

/// A persistent store of image chunks (see the [module](self)).
///
/// Failures of a cache never fail a read: the device goes to the network instead.
#[async_trait(?Send)]
pub trait ReadCache {
    /// The identity the cache holds chunks of for `url`, if any.
    async fn image(&self, url: &str) -> Result<Option<CachedImage>>;

    /// Makes `image` the identity of its URL, dropping every chunk of another identity
    /// of that URL.
    async fn bind(&self, image: &CachedImage) -> Result<()>;

    /// The chunks of `image` among `indices` that the cache holds, marked as just used.
    async fn get(&self, image: &CachedImage, indices: &[u64]) -> Result<Vec<(u64, Vec<u8>)>>;

    /// Stores chunks of `image` (each its full length), evicting the least recently used
    /// chunks beyond the budget.
    async fn put(&self, image: &CachedImage, chunks: &[(u64, &[u8])]) -> Result<()>;

    /// Bytes of chunks held (every image).
    async fn bytes(&self) -> Result<u64>;
}
