//! The Atlas data model: content hashes, manifests, file metadata and provenance records.
//!
//! Every type here is serde-serialisable with camelCase field names, so the JSON the store
//! keeps (and that bundles carry) matches the TypeScript shapes of the web app.

use crate::error::{Result, StorageError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The default size of a file chunk: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 * 1024 * 1024;

/// The largest chunk the store writes or accepts from a manifest or bundle: 16 MiB.
pub const MAX_CHUNK_SIZE: u64 = 16 * 1024 * 1024;

/// The longest file name or record id accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// The manifest format version this crate writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// A SHA-256 content hash, written `sha256:<64 lowercase hex digits>`.
///
/// ```
/// use qemuweb_storage::atlas::ContentHash;
/// let h = ContentHash::of(b"abc");
/// assert_eq!(
///     h.to_string(),
///     "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// assert_eq!(h.to_string().parse::<ContentHash>().unwrap(), h);
/// assert!("sha256:BA78".parse::<ContentHash>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// The hash of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Parses 64 lowercase hex digits (no prefix).
    pub fn from_hex(hex: &str) -> Result<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(bad_hash(hex));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or_else(|| bad_hash(hex))?;
            let lo = hex_val(pair[1]).ok_or_else(|| bad_hash(hex))?;
            out[i] = hi << 4 | lo;
        }
        Ok(Self(out))
    }

    /// Checks that `data` hashes to `self`, failing with
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) otherwise.
    pub fn verify(&self, data: &[u8], what: &str) -> Result<()> {
        let actual = Self::of(data);
        if actual == *self {
            Ok(())
        } else {
            Err(StorageError::Integrity(format!(
                "{what}: expected {self}, the data hashes to {actual}"
            )))
        }
    }

    /// Checks that `data` is a chunk of `size` bytes that hashes to `self`, failing with
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) otherwise; `what` names the
    /// data if the hash differs.
    pub(crate) fn verify_chunk(&self, size: u64, data: &[u8], what: &str) -> Result<()> {
        if data.len() as u64 != size {
            return Err(StorageError::Integrity(format!(
                "chunk {self} is {} bytes, expected {size}",
                data.len()
            )));
        }
        self.verify(data, what)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn bad_hash(s: &str) -> StorageError {
    let shown: String = s.chars().take(80).collect();
    StorageError::InvalidArgument(format!(
        "{shown:?} is not a content hash (sha256: and 64 lowercase hex digits)"
    ))
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl FromStr for ContentHash {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self> {
        match s.strip_prefix("sha256:") {
            Some(hex) => Self::from_hex(hex),
            None => Err(bad_hash(s)),
        }
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What kind of content a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ManifestType {
    /// A qcow2 disk image.
    Qcow2,
    /// A raw disk image.
    Raw,
    /// An ISO 9660 image.
    Iso,
    /// A kernel image.
    Kernel,
    /// An initial ramdisk.
    Initrd,
    /// A WebAssembly module.
    Wasm,
    /// A configuration file (VM profile, network, ...).
    Config,
    /// Anything else.
    Other,
}

/// Where a file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FileOrigin {
    /// Chosen by the user from their machine.
    Uploaded,
    /// Fetched from a URL.
    Downloaded,
    /// Produced by a build.
    Built,
    /// Written by an assistant or a program.
    Generated,
    /// Brought in from a bundle.
    Imported,
    /// Derived from other stored files (converted, snapshotted, ...).
    Derived,
}

/// One chunk of a file: its content hash and where it lies in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlobChunk {
    /// The hash of the chunk's bytes (the key of its blob).
    pub hash: ContentHash,
    /// The offset of the chunk's first byte in the file.
    pub offset: u64,
    /// The chunk's length in bytes (at least 1, at most [`MAX_CHUNK_SIZE`]).
    pub size: u64,
}

/// How a file is assembled from chunks.
///
/// A manifest is itself content-addressed: its hash ([`FileManifest::hash`]) is the SHA-256
/// of its canonical JSON ([`FileManifest::to_json`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileManifest {
    /// Always [`MANIFEST_VERSION`].
    pub version: u32,
    /// The kind of content.
    #[serde(rename = "type")]
    pub file_type: ManifestType,
    /// The file's length in bytes: the sum of the chunk sizes.
    pub total_size: u64,
    /// The chunks, in file order, contiguous from offset 0.
    pub chunks: Vec<BlobChunk>,
    /// The MIME type, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

impl FileManifest {
    /// The canonical JSON encoding whose SHA-256 is the manifest's hash.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The manifest's content hash.
    pub fn hash(&self) -> ContentHash {
        ContentHash::of(&self.to_json())
    }

    /// Checks the manifest's structure: version, chunk sizes, contiguity and total size.
    /// Failures are [`ErrorKind::Integrity`](crate::ErrorKind::Integrity).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StorageError::Integrity(format!("invalid manifest: {m}")));
        if self.version != MANIFEST_VERSION {
            return bad(format!(
                "version {} (expected {MANIFEST_VERSION})",
                self.version
            ));
        }
        let mut expected = 0u64;
        for (i, c) in self.chunks.iter().enumerate() {
            if c.size == 0 || c.size > MAX_CHUNK_SIZE {
                return bad(format!("chunk {i} has size {}", c.size));
            }
            if c.offset != expected {
                return bad(format!(
                    "chunk {i} starts at {} instead of {expected}",
                    c.offset
                ));
            }
            expected = match expected.checked_add(c.size) {
                Some(e) => e,
                None => return bad(format!("chunk {i} overflows")),
            };
        }
        if expected != self.total_size {
            return bad(format!(
                "chunks cover {expected} bytes but totalSize is {}",
                self.total_size
            ));
        }
        if let Some(m) = &self.mime_type {
            check_text("mime type", m)?;
        }
        Ok(())
    }

    /// Parses and validates stored manifest JSON, checking it hashes to `hash`.
    pub fn from_json_verified(bytes: &[u8], hash: &ContentHash) -> Result<Self> {
        hash.verify(bytes, "manifest")?;
        let m: FileManifest = serde_json::from_slice(bytes).map_err(|e| {
            StorageError::Integrity(format!("manifest {hash} is not valid JSON: {e}"))
        })?;
        m.validate()?;
        Ok(m)
    }

    /// The index of the chunk holding byte `offset`, if `offset < total_size`.
    pub fn chunk_index(&self, offset: u64) -> Option<usize> {
        if offset >= self.total_size {
            return None;
        }
        // Chunks are contiguous and sorted by offset (checked by `validate`).
        let i = self.chunks.partition_point(|c| c.offset <= offset);
        i.checked_sub(1)
    }
}

/// A stored file's record: its name, content and descriptive metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileMetadata {
    /// The file's unique name in the store.
    pub name: String,
    /// The hash of the file's manifest.
    pub manifest_hash: ContentHash,
    /// The kind of content.
    #[serde(rename = "type")]
    pub file_type: ManifestType,
    /// The file's size in bytes.
    pub size: u64,
    /// The MIME type, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Where the file came from.
    pub origin: FileOrigin,
    /// Free-form labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether the user shared the file with an assistant.
    #[serde(default)]
    pub shared_with_assistant: bool,
    /// The provenance record describing how the file came to be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance_id: Option<String>,
}

impl FileMetadata {
    /// Checks names, tags and text fields for length and control characters.
    pub fn validate(&self) -> Result<()> {
        check_name("file name", &self.name)?;
        for t in &self.tags {
            check_name("tag", t)?;
        }
        if let Some(m) = &self.mime_type {
            check_text("mime type", m)?;
        }
        if let Some(p) = &self.provenance_id {
            check_name("provenance id", p)?;
        }
        Ok(())
    }
}

/// Options of [`AtlasStore::store_file`](super::AtlasStore::store_file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The kind of content.
    pub file_type: ManifestType,
    /// Where the file came from.
    pub origin: FileOrigin,
    /// The MIME type, when known.
    pub mime_type: Option<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// Whether the file is shared with an assistant.
    pub shared_with_assistant: bool,
    /// An existing provenance record for the file.
    pub provenance_id: Option<String>,
}

impl StoreOptions {
    /// Options for a file of `file_type` from `origin`, with no tags.
    pub fn new(file_type: ManifestType, origin: FileOrigin) -> Self {
        Self {
            file_type,
            origin,
            mime_type: None,
            tags: Vec::new(),
            shared_with_assistant: false,
            provenance_id: None,
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self::new(ManifestType::Other, FileOrigin::Uploaded)
    }
}

/// Which files [`AtlasStore::list_files`](super::AtlasStore::list_files) returns; every
/// field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileFilter {
    /// Only files of this type.
    pub file_type: Option<ManifestType>,
    /// Only files from this origin.
    pub origin: Option<FileOrigin>,
    /// Only files carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only files whose name starts with this prefix.
    pub name_prefix: Option<String>,
}

impl FileFilter {
    /// Whether `file` passes the filter.
    pub fn matches(&self, file: &FileMetadata) -> bool {
        self.file_type.is_none_or(|t| t == file.file_type)
            && self.origin.is_none_or(|o| o == file.origin)
            && self.tags.iter().all(|t| file.tags.contains(t))
            && self
                .name_prefix
                .as_deref()
                .is_none_or(|p| file.name.starts_with(p))
    }
}

/// What kind of event a provenance record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProvenanceType {
    /// Content created from nothing stored.
    Create,
    /// Content derived from its parents.
    Derive,
    /// Content imported from a bundle or elsewhere.
    Import,
    /// Content downloaded from a URL.
    Download,
    /// Content produced by a build.
    Build,
    /// Content modified from its parent.
    Modify,
}

/// Who caused a provenance event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    /// A person.
    User,
    /// An AI assistant.
    Assistant,
    /// A build system.
    Build,
    /// QemuWeb itself.
    System,
}

/// Details of a build that produced content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildInfo {
    /// The tool that built it (for example `emcc 3.1.50`).
    pub tool: String,
    /// The command or recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The hashes of the inputs.
    #[serde(default)]
    pub inputs: Vec<ContentHash>,
}

/// One step in the history of some content.
///
/// Records form a directed acyclic graph through [`parents`](Self::parents);
/// [`AtlasStore::provenance_chain`](super::AtlasStore::provenance_chain) walks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvenanceRecord {
    /// The record's unique id.
    pub id: String,
    /// The manifest of the content this record describes.
    pub manifest_hash: ContentHash,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: ProvenanceType,
    /// Who did it.
    pub actor: Actor,
    /// The ids of the records of the content this was made from.
    #[serde(default)]
    pub parents: Vec<String>,
    /// Where the content came from (a URL, a bundle name), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Milliseconds since the Unix epoch, when the caller knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<u64>,
    /// Build details, for [`ProvenanceType::Build`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_info: Option<BuildInfo>,
}

impl ProvenanceRecord {
    /// A record with no parents and no optional details.
    pub fn new(
        id: impl Into<String>,
        manifest_hash: ContentHash,
        kind: ProvenanceType,
        actor: Actor,
    ) -> Self {
        Self {
            id: id.into(),
            manifest_hash,
            kind,
            actor,
            parents: Vec::new(),
            source: None,
            description: None,
            timestamp_ms: None,
            build_info: None,
        }
    }

    /// Adds a parent record id.
    pub fn with_parent(mut self, parent: impl Into<String>) -> Self {
        self.parents.push(parent.into());
        self
    }

    /// Checks ids and text fields (not references: the store does that).
    pub fn validate(&self) -> Result<()> {
        check_name("provenance id", &self.id)?;
        for p in &self.parents {
            check_name("provenance parent id", p)?;
            if *p == self.id {
                return Err(StorageError::InvalidArgument(format!(
                    "provenance record {:?} names itself as a parent",
                    self.id
                )));
            }
        }
        // One set, not a scan per parent: a record in a bundle may name millions.
        let mut seen = std::collections::HashSet::with_capacity(self.parents.len());
        for p in &self.parents {
            super::graph::step();
            if !seen.insert(p.as_str()) {
                return Err(StorageError::InvalidArgument(format!(
                    "provenance record {:?} names parent {p:?} twice",
                    self.id
                )));
            }
        }
        Ok(())
    }
}

/// What [`AtlasStore::import_bundle`](super::AtlasStore::import_bundle) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportResult {
    /// The files registered, in bundle order.
    pub files: Vec<FileMetadata>,
    /// How many chunk blobs were written (chunks the store already held are not counted).
    pub new_blobs: usize,
    /// How many chunk blobs the store already held.
    pub existing_blobs: usize,
    /// How many provenance records were added.
    pub new_provenance: usize,
}

/// What [`AtlasStore::verify_file`](super::AtlasStore::verify_file) checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Chunks read and re-hashed.
    pub chunks: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
}

/// Rejects empty, over-long or control-character names.
pub(crate) fn check_name(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(StorageError::InvalidArgument(format!("empty {what}")));
    }
    check_text(what, s)
}

/// Rejects over-long or control-character text.
pub(crate) fn check_text(what: &str, s: &str) -> Result<()> {
    if s.len() > MAX_NAME_LEN {
        return Err(StorageError::InvalidArgument(format!(
            "{what} is {} bytes long (the limit is {MAX_NAME_LEN})",
            s.len()
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(StorageError::InvalidArgument(format!(
            "{what} {s:?} contains control characters"
        )));
    }
    Ok(())
}
