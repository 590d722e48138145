//! Atlas: content-addressed storage of VM images and other files, with provenance.
//!
//! - Files are split into chunks (4 MiB by default); each chunk is a blob keyed by its
//!   SHA-256 ([`ContentHash`], written `sha256:<hex>`) and stored once however many files
//!   share it.
//! - A [`FileManifest`] lists a file's chunks and is itself keyed by its hash; a
//!   [`FileMetadata`] record names it and carries its type, size, origin and tags.
//! - [`ProvenanceRecord`]s form a graph of where content came from;
//!   [`AtlasStore::provenance_chain`] walks it, detecting cycles and missing parents.
//! - Everything read back is re-hashed: tampering is an
//!   [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) error, never wrong data.
//! - [`AtlasStore::export_bundle`] writes files, manifests, chunks and provenance into one
//!   self-describing archive ([`bundle`]); [`AtlasStore::import_bundle`] checks all of it
//!   before writing anything.
//! - [`AtlasStore::open_device`] opens a stored file as a read-only
//!   [`BlockDevice`](crate::BlockDevice), so a downloaded image is kept once and boots
//!   offline.
//!
//! The logic lives once in [`AtlasStore`], over the small [`AtlasBackend`] trait. Backends:
//! [`MemoryAtlasBackend`] everywhere, `DirAtlasBackend` (a directory) natively, and
//! `IndexedDbAtlasBackend` (IndexedDB) on `wasm32`.
//!
//! ```
//! use qemuweb_storage::BlockDevice;
//! use qemuweb_storage::atlas::*;
//! # futures::executor::block_on(async {
//! let store = AtlasStore::new(MemoryAtlasBackend::new());
//! let meta = store
//!     .store_file("alpine.qcow2", b"QFI\xfb...", StoreOptions::new(ManifestType::Qcow2, FileOrigin::Downloaded))
//!     .await
//!     .unwrap();
//! store
//!     .add_provenance(
//!         ProvenanceRecord::new("dl-1", meta.manifest_hash, ProvenanceType::Download, Actor::User),
//!     )
//!     .await
//!     .unwrap();
//!
//! let bundle = store.export_bundle(&["alpine.qcow2"]).await.unwrap();
//! let other = AtlasStore::new(MemoryAtlasBackend::new());
//! let imported = other.import_bundle(&bundle).await.unwrap();
//! assert_eq!(imported.files[0].name, "alpine.qcow2");
//! let disk = other.open_device("alpine.qcow2").await.unwrap();
//! assert_eq!(disk.read_vec(0, 3).await.unwrap(), b"QFI");
//! # });
//! ```

mod backend;
pub mod bundle;
mod device;
mod graph;
mod memory;
mod store;
mod types;

#[cfg(not(target_arch = "wasm32"))]
mod dir;
#[cfg(target_arch = "wasm32")]
mod indexeddb;

pub use backend::{AtlasBackend, RecordTable};
pub use device::{AtlasBlockDevice, DEFAULT_CACHED_CHUNKS};
pub use memory::MemoryAtlasBackend;
pub use store::{AtlasStore, MAX_PROVENANCE_CHAIN};
pub use types::{
    Actor, BlobChunk, BuildInfo, ContentHash, FileFilter, FileManifest, FileMetadata, FileOrigin,
    ImportResult, ManifestType, ProvenanceRecord, ProvenanceType, StoreOptions, VerifyReport,
    DEFAULT_CHUNK_SIZE, MANIFEST_VERSION, MAX_CHUNK_SIZE, MAX_NAME_LEN,
};

#[cfg(not(target_arch = "wasm32"))]
pub use dir::DirAtlasBackend;
#[cfg(target_arch = "wasm32")]
pub use indexeddb::IndexedDbAtlasBackend;
