//! What the fuzz targets and the seed writer (`examples/seeds.rs`) share: how an input
//! becomes an archive, and the disks and stores the archives are imported into.
//!
//! Both archive formats are sealed with SHA-256, which byte mutations never get right, so
//! an input's first byte picks a mode: even, the rest is the archive as it is; odd, the
//! harness seals the rest first (see [`overlay_archive`] and [`atlas_bundle`]), so the
//! fuzzer reaches the checks behind the hash.

use futures::executor::block_on;
use qemuweb_storage::atlas::{
    Actor, AtlasBackend, AtlasStore, ContentHash, FileOrigin, ManifestType, MemoryAtlasBackend,
    ProvenanceRecord, ProvenanceType, RecordTable, StoreOptions,
};
use qemuweb_storage::{BlockDevice, CowBlockDevice, MemoryBlockDevice, MemoryOverlay, Overlay};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Inputs for `overlay_archive`.
pub mod overlay_archive {
    use super::*;

    /// The disk's size: an odd number of 512-byte sectors, so the last block of every block
    /// size is partial.
    pub const DISK_SIZE: usize = 20 * 1024 + 512;
    /// The overlay block the disk already holds before the import.
    pub const PRESET_BLOCK: u64 = 1;

    /// The overlay's block size for `mode`: 512, 1024, 2048 or 4096 bytes.
    pub fn block_size(mode: u8) -> u32 {
        512 << ((mode >> 1) & 3)
    }

    /// The archive an input stands for: `rest` as it is (even `mode`), or `rest` followed
    /// by its SHA-256 (odd `mode`).
    pub fn archive(mode: u8, rest: &[u8]) -> Vec<u8> {
        let mut out = rest.to_vec();
        if mode & 1 == 1 {
            out.extend_from_slice(Sha256::digest(rest).as_slice());
        }
        out
    }

    /// The disk an archive is imported into: a patterned base and an overlay of `block_size`
    /// blocks holding [`PRESET_BLOCK`] (so "nothing written" is more than "still empty").
    pub fn disk(block_size: u32) -> CowBlockDevice {
        let base = (0..DISK_SIZE).map(|i| (i % 251) as u8).collect();
        let overlay = MemoryOverlay::new(block_size).expect("a valid block size");
        block_on(overlay.write_block(PRESET_BLOCK, &vec![0x5a; block_size as usize]))
            .expect("a memory overlay takes a block");
        CowBlockDevice::new(
            Box::new(MemoryBlockDevice::read_only(base)),
            Box::new(overlay),
        )
        .expect("a valid geometry")
    }

    /// Everything a reader of `disk` can see: its bytes and its overlay's block indices.
    pub fn snapshot(disk: &CowBlockDevice) -> (Vec<u8>, Vec<u64>) {
        let bytes = block_on(disk.read_vec(0, disk.size() as usize)).expect("a memory read");
        (bytes, disk.overlay().block_indices())
    }
}

/// Inputs for `atlas_bundle`.
pub mod atlas_bundle {
    use super::*;

    /// Chunk size of the stores (small, so files have several chunks).
    pub const CHUNK_SIZE: u64 = 64;
    /// A file the store holds before the import.
    pub const PRESET_FILE: &str = "preset.img";
    /// Its provenance record.
    pub const PRESET_RECORD: &str = "preset-dl";

    /// The content of [`PRESET_FILE`].
    pub fn preset_bytes() -> Vec<u8> {
        (0..200u32).map(|i| (i * 7 % 256) as u8).collect()
    }

    /// The bundle an input stands for. Even `mode`: `rest` as it is. Odd `mode`: `rest` is
    /// a little-endian `u32` index length `n`, `n` bytes of index JSON and then the chunks'
    /// bytes, and the harness adds the header (version 1, flags 0, the index hash) and the
    /// end marker around them.
    pub fn bundle(mode: u8, rest: &[u8]) -> Vec<u8> {
        if mode & 1 == 0 {
            return rest.to_vec();
        }
        let (len, body) = rest.split_at(rest.len().min(4));
        let mut n = [0u8; 4];
        n[..len.len()].copy_from_slice(len);
        let n = (u32::from_le_bytes(n) as usize).min(body.len());
        let (index, chunks) = body.split_at(n);
        let mut out = Vec::with_capacity(56 + rest.len() + 8);
        out.extend_from_slice(b"QWATLAS\0");
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(index.len() as u64).to_le_bytes());
        let mut h = Sha256::new();
        h.update(&out[..24]);
        h.update(index);
        out.extend_from_slice(h.finalize().as_slice());
        out.extend_from_slice(index);
        out.extend_from_slice(chunks);
        out.extend_from_slice(b"QWATEND\0");
        out
    }

    /// The inverse of [`bundle`] for an odd mode: the input (after the mode byte) that
    /// stands for the well-formed `bundle`.
    pub fn unseal(bundle: &[u8]) -> Vec<u8> {
        let index_len = u64::from_le_bytes(bundle[16..24].try_into().unwrap()) as usize;
        let mut out = (index_len as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&bundle[56..bundle.len() - 8]);
        out
    }

    /// A store holding [`PRESET_FILE`] with its provenance record [`PRESET_RECORD`].
    pub fn store() -> AtlasStore<MemoryAtlasBackend> {
        let store = AtlasStore::new(MemoryAtlasBackend::new())
            .with_chunk_size(CHUNK_SIZE)
            .expect("a valid chunk size");
        block_on(async {
            let options = || StoreOptions::new(ManifestType::Raw, FileOrigin::Downloaded);
            let meta = store
                .store_file(PRESET_FILE, &preset_bytes(), options())
                .await
                .expect("a memory store takes a file");
            store
                .add_provenance(ProvenanceRecord::new(
                    PRESET_RECORD,
                    meta.manifest_hash,
                    ProvenanceType::Download,
                    Actor::User,
                ))
                .await
                .expect("a new record");
            // Again, now naming its record (this replaces the file record).
            let mut with_record = options();
            with_record.provenance_id = Some(PRESET_RECORD.into());
            store
                .store_file(PRESET_FILE, &preset_bytes(), with_record)
                .await
                .expect("a memory store takes a file");
        });
        store
    }

    /// Everything `backend` holds: blobs, and the records of every table.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Snapshot {
        blobs: BTreeMap<ContentHash, Vec<u8>>,
        records: BTreeMap<(RecordTable, String), String>,
    }

    /// A [`Snapshot`] of `backend`.
    pub fn snapshot(backend: &MemoryAtlasBackend) -> Snapshot {
        block_on(async {
            let mut blobs = BTreeMap::new();
            for h in backend.list_blobs().await.unwrap() {
                blobs.insert(h, backend.get_blob(&h).await.unwrap().unwrap());
            }
            let mut records = BTreeMap::new();
            for t in RecordTable::ALL {
                for k in backend.list_records(t).await.unwrap() {
                    let v = backend.get_record(t, &k).await.unwrap().unwrap();
                    records.insert((t, k), v);
                }
            }
            Snapshot { blobs, records }
        })
    }
}

/// Inputs for `snapshot_file`.
pub mod snapshot_file {
    use qemuweb_storage::snapshot::{
        sha256_tag, DiskPoint, FileWriter, MachineRef, MachineState, SnapshotHeader,
        StateEncoding, HEADER_FORMAT,
    };

    /// A valid snapshot file built from `rest`: its bytes pick the chunk size, the machine
    /// state (with zero chunks where a byte is 0) and the overlay blocks of two disks.
    pub fn valid_file(rest: &[u8]) -> Vec<u8> {
        let (&shape, body) = rest.split_first().unwrap_or((&0, &[]));
        let chunk_size = 64u32 << (shape & 3);
        let mut state: Vec<u8> = body.iter().take(4096).copied().collect();
        if state.is_empty() {
            state.push(1);
        }
        // A zero chunk wherever a chunk starts with 0.
        for c in state.chunks_mut(chunk_size as usize) {
            if c[0] == 0 {
                c.fill(0);
            }
        }
        let chunks: Vec<&[u8]> = state.chunks(chunk_size as usize).collect();
        let block_size = 512u32;
        let blocks: Vec<(u8, u64)> = body
            .iter()
            .skip(4096)
            .take(8)
            .enumerate()
            .map(|(i, b)| ((b & 1), u64::from(*b >> 1) + i as u64 * 128))
            .collect();
        let count = |d: u8| blocks.iter().filter(|b| b.0 == d).count() as u64;
        let header = SnapshotHeader {
            format: HEADER_FORMAT,
            id: "fuzz".into(),
            vm_id: "vm".into(),
            name: "fuzzed".into(),
            created_ms: 1,
            engine: "v86".into(),
            machine: MachineRef {
                profile_id: "p".into(),
                digest: sha256_tag(b"m"),
            },
            state: MachineState {
                bytes: state.len() as u64,
                chunk_size,
                encoding: StateEncoding::Raw,
                chunks: chunks.iter().map(|c| MachineState::chunk_digest(c)).collect(),
            },
            disks: (0..2u8)
                .map(|d| DiskPoint {
                    id: format!("disk{d}"),
                    base: "raw".into(),
                    size: 2048 * 512,
                    block_size,
                    point: 1,
                    blocks: count(d),
                })
                .collect(),
        };
        let mut w = FileWriter::new(&header);
        let mut out = w.start();
        for (i, c) in chunks.iter().enumerate() {
            out.extend(w.chunk(i as u32, c));
        }
        for d in 0..2u8 {
            let mut mine: Vec<u64> = blocks.iter().filter(|b| b.0 == d).map(|b| b.1).collect();
            mine.sort_unstable();
            for index in mine {
                out.extend(w.block(d, index, &[index as u8; 512]));
            }
        }
        out.extend(w.end());
        out
    }
}
