//! Snapshots: a running VM's machine state saved together with a consistent point of
//! each disk's overlay, kept in the browser, exported as one file and imported again.
//!
//! - [`SnapshotHeader`]: what a snapshot is of (engine, machine digest, each disk's base
//!   image identity and overlay point) and its machine state's chunks with their
//!   SHA-256; [`SnapshotHeader::check_compatible`] refuses to resume against another
//!   engine, machine or base image with [`ErrorKind::Mismatch`](crate::ErrorKind::Mismatch).
//! - [`Lineage`]: the generations of a disk's overlay; a snapshot pins its point, so the
//!   disk as it was at the save stays readable while the guest writes on.
//! - [`FileWriter`] / [`FileParser`]: the snapshot file (header, chunks, the overlay
//!   blocks of each point, a trailing SHA-256), parsed incrementally from untrusted bytes.
//! - [`PublishedState`]: a snapshot file cut into parts for static hosting, with its
//!   manifest `boot-state.json` (`qemuweb prepare --boot-state`).
//! - `IndexedDbSnapshotStore` (wasm32): snapshots in IndexedDB, chunked (a state never
//!   needs one allocation of its size in storage), beside the overlays of
//!   [`IndexedDbOverlay`](crate::IndexedDbOverlay) in the same database, with crash-safe
//!   saves and imports (staged, committed in one transaction).

mod file;
mod header;
mod lineage;
#[cfg(not(target_arch = "wasm32"))]
mod publish;
mod published;

pub use file::{FileParser, FileWriter, Item, FILE_MAGIC, FILE_VERSION, MAX_HEADER_BYTES};
pub use header::{
    check_id, sha256_tag, DiskPoint, Expectation, MachineRef, MachineState, SnapshotHeader,
    StateEncoding, DEFAULT_CHUNK_BYTES, HEADER_FORMAT, MAX_BLOCK_BYTES, MAX_CHUNK_BYTES, MAX_DISKS,
    MAX_STATE_BYTES, ZERO_CHUNK,
};
pub use lineage::{GenState, Generation, Lineage, MAX_GENERATIONS, UNDO_PIN};
#[cfg(not(target_arch = "wasm32"))]
pub use publish::{publish, PublishOptions};
pub use published::{
    PublishedDisk, PublishedPart, PublishedState, MANIFEST_NAME, MAX_MANIFEST_BYTES, MAX_PARTS,
    PUBLISHED_FORMAT,
};

#[cfg(target_arch = "wasm32")]
pub use crate::indexeddb::snapshots::{
    IndexedDbSnapshotStore, ProgressFn, SnapshotImport, SnapshotSave,
};
