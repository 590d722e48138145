//! Block devices for virtual machines that run in a web page.
//!
//! `qemuweb-storage` turns standard QEMU disk images, local or behind a URL, into
//! [`BlockDevice`]s that an emulator reads and writes. The same code runs natively and on
//! `wasm32` in a browser; only thin adapters (files, HTTP, timers) differ.
//!
//! The layers, bottom to top:
//!
//! - [`BlockDevice`]: the one async, object-safe trait; [`StorageError`] and its
//!   [`ErrorKind`] for every failure.
//! - Sources of bytes: [`MemoryBlockDevice`], [`FileBlockDevice`] (native files),
//!   `BlobBlockDevice` (browser `Blob`/`File`), [`HttpBlockDevice`] (HTTP Range requests
//!   with caching, read-ahead, retries, image pinning and no redirect off the image's
//!   origin); [`http_headers`] parses what such a server sends.
//! - Image formats over any device, detected by magic: raw and qcow2 ([`format`]),
//!   with backing and data files opened only through an embedder's [`resolver`].
//! - [`CowBlockDevice`]: a read-only base under a writable [`Overlay`].
//! - [`atlas`]: content-addressed storage (SHA-256 chunks, manifests, provenance, bundles)
//!   over memory, a directory or IndexedDB; stored files open as read-only devices.
//! - [`read_cache`]: a persistent, bounded, least-recently-used cache of the chunks the
//!   HTTP device fetched, keyed by the image's version.
//! - [`snapshot`]: saved VM states with the overlay point of each disk (headers, the
//!   overlay's generations, the snapshot file, and their IndexedDB store).
#![warn(missing_docs)]

pub mod atlas;
mod cow;
mod device;
mod error;
pub mod export;
pub mod format;
mod http;
mod memory;
pub mod read_cache;
pub mod resolver;
pub mod snapshot;

#[cfg(not(target_arch = "wasm32"))]
mod file;
#[cfg(not(target_arch = "wasm32"))]
mod file_overlay;
#[cfg(target_arch = "wasm32")]
mod indexeddb;
#[cfg(all(target_arch = "wasm32", feature = "js"))]
pub mod js;

pub use cow::{CowBlockDevice, MemoryOverlay, Overlay};
pub use device::{check_range, BlockDevice, DEFAULT_BLOCK_SIZE};
pub use error::{ErrorKind, Result, StorageError};
pub use http::headers as http_headers;
pub use http::{
    HttpBlockDevice, HttpOptions, HttpResolver, HttpStats, Progress, MAX_REDIRECTS, PROBE_BYTES,
};
pub use memory::MemoryBlockDevice;

#[cfg(not(target_arch = "wasm32"))]
pub use file::FileBlockDevice;
#[cfg(not(target_arch = "wasm32"))]
pub use file_overlay::FileOverlay;

#[cfg(target_arch = "wasm32")]
mod blob;
#[cfg(target_arch = "wasm32")]
pub use blob::BlobBlockDevice;

#[cfg(target_arch = "wasm32")]
pub use indexeddb::{IndexedDbOptions, IndexedDbOverlay, LockPolicy, ResumePoint, StoredOverlay};
