//! The Atlas bundle: one self-describing, versioned archive of files, their manifests,
//! their chunks and their provenance.
//!
//! # Format (version 1)
//!
//! All integers are little-endian.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `QWATLAS\0` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 4 | flags, `0` (reserved) |
//! | 16 | 8 | `N`: length of the index in bytes (at most [`MAX_INDEX_LEN`]) |
//! | 24 | 32 | SHA-256 of bytes `0..24` followed by the index |
//! | 56 | `N` | the index: UTF-8 JSON ([`BundleIndex`]) |
//! | 56 + `N` | ... | the chunks' bytes, back to back, in the order of `index.chunks` |
//! | end − 8 | 8 | end magic `QWATEND\0` |
//!
//! The index lists every chunk (`hash`, `size`) before any chunk data, so a reader can
//! check the header, then the index, then each chunk as it streams past, and knows the
//! exact length of the archive up front. Every byte is covered by a hash: the header and
//! index by the index hash, each chunk by its content hash, and the end magic pins the
//! length. Manifests travel inside the index and are re-hashed from their canonical JSON.
//!
//! Reading never allocates more than the bundle's own size, nor more than
//! [`MAX_INDEX_LEN`] plus one chunk when streaming: [`index_len`] bounds the index from the
//! header alone, [`parse_head`] checks the header, index and every length without touching
//! chunk data, and [`check_chunk`] checks each chunk as it is read. [`decode`] does all of
//! it for a bundle held in memory.

use super::types::{
    BlobChunk, ContentHash, FileManifest, FileMetadata, ProvenanceRecord, MAX_CHUNK_SIZE,
};
use crate::error::{Result, StorageError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// The bundle's leading magic bytes.
pub const BUNDLE_MAGIC: [u8; 8] = *b"QWATLAS\0";
/// The bundle's trailing magic bytes.
pub const BUNDLE_END_MAGIC: [u8; 8] = *b"QWATEND\0";
/// The bundle format version this crate writes and reads.
pub const BUNDLE_VERSION: u32 = 1;
/// The largest index accepted: 64 MiB.
pub const MAX_INDEX_LEN: u64 = 64 * 1024 * 1024;
/// The value of the index's `format` field.
pub const BUNDLE_FORMAT_NAME: &str = "qemuweb-atlas-bundle";

const HEADER_LEN: usize = 56;

/// One chunk in a bundle: its hash and length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleChunk {
    /// The chunk's content hash.
    pub hash: ContentHash,
    /// The chunk's length in bytes.
    pub size: u64,
}

/// A manifest carried in a bundle, with the hash it is stored under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleManifest {
    /// The manifest's hash: the SHA-256 of its canonical JSON.
    pub hash: ContentHash,
    /// The manifest.
    pub manifest: FileManifest,
}

/// The JSON index at the head of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleIndex {
    /// Always [`BUNDLE_FORMAT_NAME`].
    pub format: String,
    /// Always [`BUNDLE_VERSION`] (it repeats the header's version).
    pub version: u32,
    /// The chunks, in the order their bytes follow the index.
    pub chunks: Vec<BundleChunk>,
    /// The manifests of the files.
    pub manifests: Vec<BundleManifest>,
    /// The files.
    pub files: Vec<FileMetadata>,
    /// The provenance records of the files and all their ancestors, parents first.
    pub provenance: Vec<ProvenanceRecord>,
}

/// A decoded bundle whose every hash and internal reference has been checked.
#[derive(Debug)]
pub struct DecodedBundle<'a> {
    /// The index.
    pub index: BundleIndex,
    /// Each chunk's bytes, keyed by hash.
    pub chunks: BTreeMap<ContentHash, &'a [u8]>,
}

fn integrity(msg: impl Into<String>) -> StorageError {
    StorageError::Integrity(format!("bundle rejected: {}", msg.into()))
}

/// The message of an error, without the "integrity check failed" style prefix of its kind.
pub(crate) fn detail(e: &StorageError) -> String {
    match e {
        StorageError::Integrity(m) | StorageError::InvalidArgument(m) => m.clone(),
        other => other.to_string(),
    }
}

fn index_hash(header: &[u8], index: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(header);
    h.update(index);
    h.finalize().into()
}

/// Encodes the head of a bundle (header and index) for `index`; the chunks' bytes, in
/// the order of `index.chunks`, and then [`BUNDLE_END_MAGIC`] must follow.
///
/// Also returns the total length the finished bundle will have.
pub fn encode_head(index: &BundleIndex) -> Result<(Vec<u8>, u64)> {
    let json = serde_json::to_vec(index)
        .map_err(|e| StorageError::InvalidArgument(format!("bundle index: {e}")))?;
    if json.len() as u64 > MAX_INDEX_LEN {
        return Err(StorageError::InvalidArgument(format!(
            "the bundle index would be {} bytes (the limit is {MAX_INDEX_LEN}); export fewer files",
            json.len()
        )));
    }
    let data_len = index
        .chunks
        .iter()
        .try_fold(0u64, |acc, c| acc.checked_add(c.size))
        .ok_or_else(|| StorageError::InvalidArgument("chunk sizes overflow".into()))?;
    let total = (HEADER_LEN as u64 + json.len() as u64 + 8)
        .checked_add(data_len)
        .ok_or_else(|| StorageError::InvalidArgument("bundle size overflows".into()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + json.len());
    out.extend_from_slice(&BUNDLE_MAGIC);
    out.extend_from_slice(&BUNDLE_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    let digest = index_hash(&out[..24], &json);
    out.extend_from_slice(&digest);
    out.extend_from_slice(&json);
    Ok((out, total))
}

/// Encodes a whole bundle in memory from its index and a source of chunk bytes (called
/// once per chunk of `index.chunks`, in order; each result is checked against the chunk's
/// hash and size).
pub fn encode(
    index: &BundleIndex,
    mut chunk_bytes: impl FnMut(&BundleChunk) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let (mut out, total) = encode_head(index)?;
    reserve_total(&mut out, total)?;
    for c in &index.chunks {
        let data = chunk_bytes(c)?;
        append_chunk(&mut out, c, &data)?;
    }
    out.extend_from_slice(&BUNDLE_END_MAGIC);
    Ok(out)
}

/// Reserves room for a bundle of `total` bytes, failing cleanly when memory is short.
pub(crate) fn reserve_total(out: &mut Vec<u8>, total: u64) -> Result<()> {
    let extra = usize::try_from(total)
        .ok()
        .and_then(|t| t.checked_sub(out.len()))
        .ok_or_else(|| {
            StorageError::InvalidArgument(format!("a bundle of {total} bytes is too large"))
        })?;
    out.try_reserve_exact(extra)
        .map_err(|e| StorageError::QuotaExceeded(format!("a bundle of {total} bytes: {e}")))
}

/// Appends one chunk's bytes after checking them against `c`.
pub(crate) fn append_chunk(out: &mut Vec<u8>, c: &BundleChunk, data: &[u8]) -> Result<()> {
    c.hash.verify_chunk(c.size, data, "chunk being exported")?;
    out.extend_from_slice(data);
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The checked head of a bundle: its index and where its chunks lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleHead {
    /// The index, with every internal reference checked.
    pub index: BundleIndex,
    /// The offset of each chunk's first byte in the bundle, in the order of `index.chunks`.
    pub chunk_offsets: Vec<u64>,
    /// The bundle's total length in bytes.
    pub total_len: u64,
}

/// The length of the header that starts every bundle.
pub const BUNDLE_HEADER_LEN: usize = HEADER_LEN;

/// Reads the index length from a bundle's first [`BUNDLE_HEADER_LEN`] bytes, after checking
/// the magic and that the index fits in a bundle of `total_len` bytes and under
/// [`MAX_INDEX_LEN`].
pub fn index_len(header: &[u8], total_len: u64) -> Result<u64> {
    let min = (HEADER_LEN + BUNDLE_END_MAGIC.len()) as u64;
    if total_len < min || header.len() < HEADER_LEN {
        return Err(integrity(format!(
            "{total_len} bytes is too short for a bundle"
        )));
    }
    if header[..8] != BUNDLE_MAGIC {
        return Err(integrity("not an Atlas bundle (bad magic)"));
    }
    let index_len = u64_at(header, 16);
    if index_len > MAX_INDEX_LEN || index_len > total_len - min {
        return Err(integrity(format!(
            "index length {index_len} exceeds the limit or the bundle"
        )));
    }
    Ok(index_len)
}

/// Checks a bundle's head: `header` (its first [`BUNDLE_HEADER_LEN`] bytes), `index_bytes`
/// (the [`index_len`] bytes that follow), its `total_len` and its last 8 bytes `end`.
///
/// Checks the index hash, version, end marker, the index's structure, that the chunk sizes
/// add up to exactly the bytes between index and end marker, every manifest's hash and
/// structure, that every manifest chunk is listed with the same size and every listed
/// chunk is used, that every file names a carried manifest of its size and type, and that
/// names and record ids are unique and valid. The chunks' bytes are not read.
pub fn parse_head(
    header: &[u8],
    index_bytes: &[u8],
    total_len: u64,
    end: &[u8],
) -> Result<BundleHead> {
    let index_len = index_len(header, total_len)?;
    if index_bytes.len() as u64 != index_len {
        return Err(integrity("the index is truncated"));
    }
    if index_hash(&header[..24], index_bytes)[..] != header[24..56] {
        return Err(integrity("the header or index does not match its hash"));
    }
    let version = u32_at(header, 8);
    if version != BUNDLE_VERSION {
        return Err(StorageError::unsupported(format!(
            "Atlas bundle format version {version} (this build reads version {BUNDLE_VERSION})"
        )));
    }
    let flags = u32_at(header, 12);
    if flags != 0 {
        return Err(StorageError::unsupported(format!(
            "Atlas bundle flags {flags:#x}"
        )));
    }
    if end != BUNDLE_END_MAGIC {
        return Err(integrity("bad end marker (truncated or extended bundle)"));
    }
    let index: BundleIndex = serde_json::from_slice(index_bytes)
        .map_err(|e| integrity(format!("the index is not valid: {e}")))?;
    if index.format != BUNDLE_FORMAT_NAME || index.version != BUNDLE_VERSION {
        return Err(integrity(format!(
            "the index describes {:?} version {}",
            index.format, index.version
        )));
    }

    // Chunks: sizes add up exactly to what follows the index; no duplicates.
    let data_start = HEADER_LEN as u64 + index_len;
    let data_end = total_len - BUNDLE_END_MAGIC.len() as u64;
    let mut sizes = BTreeMap::new();
    let mut chunk_offsets = Vec::with_capacity(index.chunks.len());
    let mut pos = data_start;
    for c in &index.chunks {
        if c.size == 0 || c.size > MAX_CHUNK_SIZE {
            return Err(integrity(format!("chunk {} has size {}", c.hash, c.size)));
        }
        chunk_offsets.push(pos);
        pos = pos
            .checked_add(c.size)
            .filter(|&e| e <= data_end)
            .ok_or_else(|| integrity("the chunks run past the end of the bundle"))?;
        if sizes.insert(c.hash, c.size).is_some() {
            return Err(integrity(format!("chunk {} is listed twice", c.hash)));
        }
    }
    if pos != data_end {
        return Err(integrity(format!(
            "{} bytes follow the last chunk",
            data_end - pos
        )));
    }

    // Manifests: hash of canonical JSON, structure, every chunk carried with its size.
    let mut manifests = BTreeMap::new();
    let mut used = BTreeSet::new();
    for m in &index.manifests {
        if m.manifest.hash() != m.hash {
            return Err(integrity(format!(
                "manifest {} does not match its hash",
                m.hash
            )));
        }
        m.manifest
            .validate()
            .map_err(|e| integrity(format!("manifest {}: {}", m.hash, detail(&e))))?;
        for BlobChunk { hash, size, .. } in &m.manifest.chunks {
            match sizes.get(hash) {
                Some(s) if s == size => {
                    used.insert(*hash);
                }
                Some(_) => {
                    return Err(integrity(format!(
                        "manifest {} gives chunk {hash} a different size",
                        m.hash
                    )))
                }
                None => {
                    return Err(integrity(format!(
                        "manifest {} needs chunk {hash}, which the bundle lacks",
                        m.hash
                    )))
                }
            }
        }
        if manifests.insert(m.hash, &m.manifest).is_some() {
            return Err(integrity(format!("manifest {} is listed twice", m.hash)));
        }
    }
    if used.len() != sizes.len() {
        return Err(integrity("the bundle carries chunks no manifest uses"));
    }

    // Files: valid, unique, and consistent with a carried manifest.
    let mut names = BTreeSet::new();
    for f in &index.files {
        f.validate()
            .map_err(|e| integrity(format!("file record: {}", detail(&e))))?;
        if !names.insert(f.name.as_str()) {
            return Err(integrity(format!("file {:?} is listed twice", f.name)));
        }
        let m = manifests.get(&f.manifest_hash).ok_or_else(|| {
            integrity(format!(
                "file {:?} names manifest {}, which the bundle lacks",
                f.name, f.manifest_hash
            ))
        })?;
        if m.total_size != f.size || m.file_type != f.file_type {
            return Err(integrity(format!(
                "file {:?} disagrees with its manifest on size or type",
                f.name
            )));
        }
    }
    let mut ids = BTreeSet::new();
    for p in &index.provenance {
        p.validate()
            .map_err(|e| integrity(format!("provenance record: {}", detail(&e))))?;
        if !ids.insert(p.id.as_str()) {
            return Err(integrity(format!(
                "provenance record {:?} is listed twice",
                p.id
            )));
        }
    }
    Ok(BundleHead {
        index,
        chunk_offsets,
        total_len,
    })
}

/// Decodes a whole bundle held in memory: [`parse_head`], then every chunk's bytes checked
/// against its hash.
///
/// Every failure is [`ErrorKind::Integrity`](crate::ErrorKind::Integrity), except a
/// well-formed bundle of a newer format version, which is
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
pub fn decode(bytes: &[u8]) -> Result<DecodedBundle<'_>> {
    let total = bytes.len() as u64;
    let index_len = index_len(bytes, total)? as usize;
    let head = parse_head(
        &bytes[..HEADER_LEN],
        &bytes[HEADER_LEN..HEADER_LEN + index_len],
        total,
        &bytes[bytes.len() - BUNDLE_END_MAGIC.len()..],
    )?;
    let mut chunks = BTreeMap::new();
    for (c, &at) in head.index.chunks.iter().zip(&head.chunk_offsets) {
        // parse_head checked every chunk lies inside the bundle.
        let slice = &bytes[at as usize..(at + c.size) as usize];
        check_chunk(c, slice)?;
        chunks.insert(c.hash, slice);
    }
    Ok(DecodedBundle {
        index: head.index,
        chunks,
    })
}

/// Checks one chunk's bytes read from a bundle.
pub fn check_chunk(c: &BundleChunk, data: &[u8]) -> Result<()> {
    if data.len() as u64 != c.size || ContentHash::of(data) != c.hash {
        return Err(integrity(format!(
            "chunk {} does not match its hash",
            c.hash
        )));
    }
    Ok(())
}
