//! [`AtlasStore`]: the content-addressed store, written once over any [`AtlasBackend`].

use super::backend::{AtlasBackend, RecordTable};
use super::bundle::{self, BundleChunk, BundleIndex, BundleManifest};
use super::device::AtlasBlockDevice;
use super::graph;
use super::types::{
    check_name, BlobChunk, ContentHash, FileFilter, FileManifest, FileMetadata, ImportResult,
    ProvenanceRecord, StoreOptions, VerifyReport, DEFAULT_CHUNK_SIZE, MANIFEST_VERSION,
    MAX_CHUNK_SIZE,
};
use crate::device::BlockDevice;
use crate::error::{Result, StorageError};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

/// The most provenance records one chain walk visits before giving up.
pub const MAX_PROVENANCE_CHAIN: usize = 100_000;

/// Content-addressed storage of files, split into chunks, with manifests, metadata and
/// provenance, over any [`AtlasBackend`].
///
/// - Each chunk (default [`DEFAULT_CHUNK_SIZE`], 4 MiB) is a blob keyed by its SHA-256,
///   stored once however many files contain it.
/// - A [`FileManifest`] lists a file's chunks; it is keyed by the hash of its JSON.
/// - A [`FileMetadata`] record gives a manifest a name, type, origin and tags.
/// - [`ProvenanceRecord`]s describe where content came from and link to their parents.
///
/// Every read re-hashes what the backend returns, so corruption or tampering is reported
/// as [`ErrorKind::Integrity`](crate::ErrorKind::Integrity), never returned as data.
///
/// Writes are ordered so that an interrupted operation never leaves a file naming
/// missing content: chunks first, then the manifest, then the file record. Leftover
/// unreferenced blobs are removed by [`gc`](Self::gc).
///
/// ```
/// use qemuweb_storage::atlas::{AtlasStore, FileFilter, MemoryAtlasBackend, StoreOptions};
/// # futures::executor::block_on(async {
/// let store = AtlasStore::new(MemoryAtlasBackend::new()).with_chunk_size(4).unwrap();
/// store.store_file("a", b"abcdefgh", StoreOptions::default()).await.unwrap();
/// store.store_file("b", b"abcdXYZ", StoreOptions::default()).await.unwrap();
/// // "abcd" is stored once: 3 blobs, not 4.
/// assert_eq!(store.blob_count().await.unwrap(), 3);
/// assert_eq!(store.read_file("b").await.unwrap(), b"abcdXYZ");
/// let names: Vec<_> = store.list_files(&FileFilter::default()).await.unwrap()
///     .into_iter().map(|f| f.name).collect();
/// assert_eq!(names, ["a", "b"]);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct AtlasStore<B> {
    backend: B,
    chunk_size: u64,
}

fn not_found(what: impl Into<String>) -> StorageError {
    StorageError::NotFound(what.into())
}

impl<B: AtlasBackend> AtlasStore<B> {
    /// A store over `backend`, splitting files into [`DEFAULT_CHUNK_SIZE`] chunks.
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// Sets the size new files are split into (1 byte to [`MAX_CHUNK_SIZE`]). Files
    /// already stored keep their chunks.
    pub fn with_chunk_size(mut self, chunk_size: u64) -> Result<Self> {
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(StorageError::InvalidArgument(format!(
                "chunk size {chunk_size} is not between 1 and {MAX_CHUNK_SIZE}"
            )));
        }
        self.chunk_size = chunk_size;
        Ok(self)
    }

    /// The size new files are split into.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    // ---- blobs ----

    /// Stores `data` as a blob, unless a blob of the same hash is already stored, and
    /// returns its hash.
    pub async fn put_blob(&self, data: &[u8]) -> Result<ContentHash> {
        let hash = ContentHash::of(data);
        if !self.backend.has_blob(&hash).await? {
            self.backend.put_blob(&hash, data).await?;
        }
        Ok(hash)
    }

    /// The blob `hash`, checked against its hash, or `None` when it is not stored.
    pub async fn get_blob(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>> {
        match self.backend.get_blob(hash).await? {
            Some(data) => {
                hash.verify(&data, "stored blob")?;
                Ok(Some(data))
            }
            None => Ok(None),
        }
    }

    /// How many blobs the backend holds.
    pub async fn blob_count(&self) -> Result<usize> {
        Ok(self.backend.list_blobs().await?.len())
    }

    // ---- manifests ----

    /// Stores a manifest after checking its structure and that every chunk it lists is
    /// stored; returns its hash.
    pub async fn put_manifest(&self, manifest: &FileManifest) -> Result<ContentHash> {
        manifest
            .validate()
            .map_err(|e| StorageError::InvalidArgument(bundle::detail(&e)))?;
        for c in &manifest.chunks {
            if !self.backend.has_blob(&c.hash).await? {
                return Err(not_found(format!("chunk {} of the manifest", c.hash)));
            }
        }
        let json = manifest.to_json();
        let hash = ContentHash::of(&json);
        self.put_manifest_json(&hash, &json).await?;
        Ok(hash)
    }

    async fn put_manifest_json(&self, hash: &ContentHash, json: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(json)
            .map_err(|e| StorageError::InvalidArgument(format!("manifest JSON: {e}")))?;
        self.backend
            .put_record(RecordTable::Manifests, &hash.to_string(), text)
            .await
    }

    /// The manifest `hash`, checked against its hash.
    ///
    /// Fails with [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when it is not
    /// stored and [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the stored
    /// JSON does not hash to `hash` or is malformed.
    pub async fn get_manifest(&self, hash: &ContentHash) -> Result<FileManifest> {
        let json = self
            .backend
            .get_record(RecordTable::Manifests, &hash.to_string())
            .await?
            .ok_or_else(|| not_found(format!("manifest {hash}")))?;
        FileManifest::from_json_verified(json.as_bytes(), hash)
    }

    // ---- files ----

    /// Splits `data` into chunks, stores the chunks not already stored, its manifest and
    /// its file record named `name` (replacing any file of that name).
    pub async fn store_file(
        &self,
        name: &str,
        data: &[u8],
        options: StoreOptions,
    ) -> Result<FileMetadata> {
        check_name("file name", name)?;
        let mut chunks = Vec::new();
        let mut offset = 0u64;
        for piece in data.chunks(self.chunk_size as usize) {
            let hash = self.put_blob(piece).await?;
            chunks.push(BlobChunk {
                hash,
                offset,
                size: piece.len() as u64,
            });
            offset += piece.len() as u64;
        }
        self.finish_file(name, chunks, offset, options).await
    }

    /// Copies a whole [`BlockDevice`] (for example an image being downloaded over HTTP)
    /// into the store as the file `name`, one chunk at a time, so the device is never held
    /// in memory whole.
    pub async fn store_device(
        &self,
        name: &str,
        device: &dyn BlockDevice,
        options: StoreOptions,
    ) -> Result<FileMetadata> {
        check_name("file name", name)?;
        let size = device.size();
        let mut chunks = Vec::new();
        let mut offset = 0u64;
        let mut buf = Vec::new();
        while offset < size {
            let len = (size - offset).min(self.chunk_size) as usize;
            buf.resize(len, 0);
            device.read_at(offset, &mut buf).await?;
            let hash = self.put_blob(&buf).await?;
            chunks.push(BlobChunk {
                hash,
                offset,
                size: len as u64,
            });
            offset += len as u64;
        }
        self.finish_file(name, chunks, size, options).await
    }

    async fn finish_file(
        &self,
        name: &str,
        chunks: Vec<BlobChunk>,
        total_size: u64,
        options: StoreOptions,
    ) -> Result<FileMetadata> {
        let manifest = FileManifest {
            version: MANIFEST_VERSION,
            file_type: options.file_type,
            total_size,
            chunks,
            mime_type: options.mime_type.clone(),
        };
        let hash = self.put_manifest(&manifest).await?;
        self.register_file(name, &hash, options).await
    }

    /// Records a file named `name` whose content is the stored manifest `manifest_hash`
    /// (replacing any file of that name). The file's type and size come from the manifest.
    pub async fn register_file(
        &self,
        name: &str,
        manifest_hash: &ContentHash,
        options: StoreOptions,
    ) -> Result<FileMetadata> {
        let manifest = self.get_manifest(manifest_hash).await?;
        if let Some(id) = &options.provenance_id {
            if self.provenance(id).await?.is_none() {
                return Err(not_found(format!("provenance record {id:?}")));
            }
        }
        let meta = FileMetadata {
            name: name.to_owned(),
            manifest_hash: *manifest_hash,
            file_type: manifest.file_type,
            size: manifest.total_size,
            mime_type: options.mime_type.or(manifest.mime_type),
            origin: options.origin,
            tags: options.tags,
            shared_with_assistant: options.shared_with_assistant,
            provenance_id: options.provenance_id,
        };
        meta.validate()?;
        self.put_file_record(&meta).await?;
        Ok(meta)
    }

    async fn put_file_record(&self, meta: &FileMetadata) -> Result<()> {
        let json = serde_json::to_string(meta)
            .map_err(|e| StorageError::InvalidArgument(format!("file record: {e}")))?;
        self.backend
            .put_record(RecordTable::Files, &meta.name, &json)
            .await
    }

    /// The file named `name`, or `None`.
    ///
    /// A stored record that is malformed or filed under another name fails with
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity).
    pub async fn file(&self, name: &str) -> Result<Option<FileMetadata>> {
        let Some(json) = self.backend.get_record(RecordTable::Files, name).await? else {
            return Ok(None);
        };
        let meta: FileMetadata = serde_json::from_str(&json).map_err(|e| {
            StorageError::Integrity(format!("the record of file {name:?} is malformed: {e}"))
        })?;
        if meta.name != name {
            return Err(StorageError::Integrity(format!(
                "the record of file {name:?} names {:?}",
                meta.name
            )));
        }
        Ok(Some(meta))
    }

    async fn file_required(&self, name: &str) -> Result<FileMetadata> {
        self.file(name)
            .await?
            .ok_or_else(|| not_found(format!("file {name:?}")))
    }

    /// The files that pass `filter`, sorted by name.
    pub async fn list_files(&self, filter: &FileFilter) -> Result<Vec<FileMetadata>> {
        let mut names = self.backend.list_records(RecordTable::Files).await?;
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(meta) = self.file(&name).await? {
                if filter.matches(&meta) {
                    out.push(meta);
                }
            }
        }
        Ok(out)
    }

    /// The manifest of the file named `name`.
    pub async fn file_manifest(&self, name: &str) -> Result<FileManifest> {
        let meta = self.file_required(name).await?;
        let manifest = self.get_manifest(&meta.manifest_hash).await?;
        if manifest.total_size != meta.size {
            return Err(StorageError::Integrity(format!(
                "file {name:?} records {} bytes but its manifest has {}",
                meta.size, manifest.total_size
            )));
        }
        Ok(manifest)
    }

    /// One chunk's bytes, checked against the chunk's hash and size.
    ///
    /// A missing, resized or altered chunk fails with
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity).
    pub async fn read_chunk(&self, chunk: &BlobChunk) -> Result<Vec<u8>> {
        let data = self.backend.get_blob(&chunk.hash).await?.ok_or_else(|| {
            StorageError::Integrity(format!("chunk {} is missing from the store", chunk.hash))
        })?;
        chunk.hash.verify_chunk(chunk.size, &data, "stored chunk")?;
        Ok(data)
    }

    /// The whole content of the file named `name`, every chunk checked.
    ///
    /// Fails with [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when there is no such
    /// file and [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when any chunk is
    /// missing or altered.
    pub async fn read_file(&self, name: &str) -> Result<Vec<u8>> {
        let manifest = self.file_manifest(name).await?;
        let total = usize::try_from(manifest.total_size).map_err(|_| {
            StorageError::InvalidArgument(format!("file {name:?} is too large to read into memory"))
        })?;
        let mut out = Vec::new();
        out.try_reserve_exact(total).map_err(|e| {
            StorageError::QuotaExceeded(format!("reading {total} bytes of {name:?}: {e}"))
        })?;
        for c in &manifest.chunks {
            out.extend_from_slice(&self.read_chunk(c).await?);
        }
        Ok(out)
    }

    /// Re-reads and re-hashes every chunk of the file named `name`.
    pub async fn verify_file(&self, name: &str) -> Result<VerifyReport> {
        let manifest = self.file_manifest(name).await?;
        let mut report = VerifyReport::default();
        for c in &manifest.chunks {
            self.read_chunk(c).await?;
            report.chunks += 1;
            report.bytes += c.size;
        }
        Ok(report)
    }

    /// Removes the file record `name`; returns whether it existed. Its chunks stay until
    /// [`gc`](Self::gc).
    pub async fn delete_file(&self, name: &str) -> Result<bool> {
        let existed = self
            .backend
            .get_record(RecordTable::Files, name)
            .await?
            .is_some();
        self.backend.delete_record(RecordTable::Files, name).await?;
        Ok(existed)
    }

    /// Removes manifests that no file and no provenance record names, and blobs that no
    /// remaining manifest lists; returns how many blobs were removed.
    ///
    /// Do not run it while another task is storing files: chunks written ahead of their
    /// manifest would look unreferenced.
    pub async fn gc(&self) -> Result<usize> {
        let mut live_manifests = BTreeSet::new();
        for name in self.backend.list_records(RecordTable::Files).await? {
            if let Some(meta) = self.file(&name).await? {
                live_manifests.insert(meta.manifest_hash);
            }
        }
        for id in self.backend.list_records(RecordTable::Provenance).await? {
            if let Some(rec) = self.provenance(&id).await? {
                live_manifests.insert(rec.manifest_hash);
            }
        }
        let mut live_blobs = BTreeSet::new();
        for key in self.backend.list_records(RecordTable::Manifests).await? {
            let hash: Option<ContentHash> = key.parse().ok();
            match hash {
                Some(h) if live_manifests.contains(&h) => {
                    let m = self.get_manifest(&h).await?;
                    live_blobs.extend(m.chunks.iter().map(|c| c.hash));
                }
                _ => {
                    self.backend
                        .delete_record(RecordTable::Manifests, &key)
                        .await?
                }
            }
        }
        let mut removed = 0;
        for blob in self.backend.list_blobs().await? {
            if !live_blobs.contains(&blob) {
                self.backend.delete_blob(&blob).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Opens the file named `name` as a read-only [`BlockDevice`] that reads only the
    /// chunks each access touches and checks every chunk's hash.
    pub async fn open_device(&self, name: &str) -> Result<AtlasBlockDevice<B>>
    where
        B: Clone,
    {
        let manifest = self.file_manifest(name).await?;
        Ok(AtlasBlockDevice::new(self.clone(), name, manifest))
    }

    // ---- provenance ----

    /// Adds a provenance record. Its id must be new (adding an identical record again is
    /// accepted) and every parent must already be stored, so records always form an
    /// acyclic graph. The record's manifest need not be stored: history may describe
    /// content this store does not hold.
    pub async fn add_provenance(&self, record: ProvenanceRecord) -> Result<ProvenanceRecord> {
        record.validate()?;
        if let Some(existing) = self.provenance(&record.id).await? {
            if existing == record {
                return Ok(record);
            }
            return Err(StorageError::InvalidArgument(format!(
                "a different provenance record {:?} already exists",
                record.id
            )));
        }
        for p in &record.parents {
            if self.provenance(p).await?.is_none() {
                return Err(not_found(format!(
                    "provenance record {p:?}, parent of {:?}",
                    record.id
                )));
            }
        }
        self.put_provenance_record(&record).await?;
        Ok(record)
    }

    async fn put_provenance_record(&self, record: &ProvenanceRecord) -> Result<()> {
        let json = serde_json::to_string(record)
            .map_err(|e| StorageError::InvalidArgument(format!("provenance record: {e}")))?;
        self.backend
            .put_record(RecordTable::Provenance, &record.id, &json)
            .await
    }

    /// The provenance record `id`, or `None`. A malformed stored record fails with
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity).
    pub async fn provenance(&self, id: &str) -> Result<Option<ProvenanceRecord>> {
        let Some(json) = self.backend.get_record(RecordTable::Provenance, id).await? else {
            return Ok(None);
        };
        let rec: ProvenanceRecord = serde_json::from_str(&json).map_err(|e| {
            StorageError::Integrity(format!("provenance record {id:?} is malformed: {e}"))
        })?;
        if rec.id != id {
            return Err(StorageError::Integrity(format!(
                "the provenance record filed as {id:?} has id {:?}",
                rec.id
            )));
        }
        Ok(Some(rec))
    }

    /// The record `id` and all its ancestors, each once, every record before its parents
    /// (so `id` comes first and a linear history reads newest to oldest).
    ///
    /// Fails with [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `id` is not
    /// stored, and with [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when an
    /// ancestor is missing, the records form a cycle, or the chain exceeds
    /// [`MAX_PROVENANCE_CHAIN`] records.
    pub async fn provenance_chain(&self, id: &str) -> Result<Vec<ProvenanceRecord>> {
        let start = self
            .provenance(id)
            .await?
            .ok_or_else(|| not_found(format!("provenance record {id:?}")))?;
        let mut records = HashMap::new();
        let links = parent_links(&start).collect();
        records.insert(start.id.clone(), start);
        self.fetch_ancestors(
            &mut records,
            links,
            MAX_PROVENANCE_CHAIN - 1,
            |child, p| {
                StorageError::Integrity(format!(
                    "provenance record {child:?} names a missing parent {p:?}"
                ))
            },
            || {
                StorageError::Integrity(format!(
                    "the provenance chain of {id:?} exceeds {MAX_PROVENANCE_CHAIN} records"
                ))
            },
        )
        .await?;
        graph::children_first_from(id, &records)
    }

    /// Adds to `graph` every stored record that `links` (child id, parent id) reach through
    /// parent links and `graph` lacks, each read once; at most `limit` records are read
    /// (`too_many` beyond). A parent the store lacks is `missing(child, parent)`.
    async fn fetch_ancestors(
        &self,
        graph: &mut HashMap<String, ProvenanceRecord>,
        mut links: Vec<(String, String)>,
        limit: usize,
        missing: impl Fn(&str, &str) -> StorageError,
        too_many: impl Fn() -> StorageError,
    ) -> Result<()> {
        let mut read = 0usize;
        while let Some((child, p)) = links.pop() {
            graph::step();
            if graph.contains_key(&p) {
                continue;
            }
            if read >= limit {
                return Err(too_many());
            }
            let rec = self
                .provenance(&p)
                .await?
                .ok_or_else(|| missing(&child, &p))?;
            read += 1;
            links.extend(parent_links(&rec));
            graph.insert(p, rec);
        }
        Ok(())
    }

    // ---- bundles ----

    /// Exports the files `names`, their manifests and chunks, and the provenance chains of
    /// their provenance records, as one bundle in memory (see [`bundle`](super::bundle) for
    /// the format). Every chunk is checked as it is read.
    pub async fn export_bundle(&self, names: &[&str]) -> Result<Vec<u8>> {
        let index = self.bundle_index(names).await?;
        let (mut out, total) = bundle::encode_head(&index)?;
        bundle::reserve_total(&mut out, total)?;
        self.write_chunks(&index, &mut |piece| {
            out.extend_from_slice(piece);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Like [`export_bundle`](Self::export_bundle), but hands the bundle to `sink` piece by
    /// piece (the head, then one chunk at a time, then the end marker), holding at most one
    /// chunk in memory. Returns the bundle's length.
    pub async fn export_bundle_to(
        &self,
        names: &[&str],
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        let index = self.bundle_index(names).await?;
        let (head, total) = bundle::encode_head(&index)?;
        sink(&head)?;
        drop(head);
        self.write_chunks(&index, sink).await?;
        Ok(total)
    }

    async fn write_chunks(
        &self,
        index: &BundleIndex,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        for c in &index.chunks {
            let chunk = BlobChunk {
                hash: c.hash,
                offset: 0,
                size: c.size,
            };
            sink(&self.read_chunk(&chunk).await?)?;
        }
        sink(&bundle::BUNDLE_END_MAGIC)
    }

    async fn bundle_index(&self, names: &[&str]) -> Result<BundleIndex> {
        let mut files = Vec::new();
        let mut manifests: Vec<BundleManifest> = Vec::new();
        let mut seen_manifests = BTreeSet::new();
        let mut chunks: Vec<BundleChunk> = Vec::new();
        let mut seen_chunks = BTreeSet::new();
        let mut provenance: HashMap<String, ProvenanceRecord> = HashMap::new();
        let mut seen_names = BTreeSet::new();
        for &name in names {
            if !seen_names.insert(name) {
                continue;
            }
            let meta = self.file_required(name).await?;
            let manifest = self.file_manifest(name).await?;
            if seen_manifests.insert(meta.manifest_hash) {
                for c in &manifest.chunks {
                    if seen_chunks.insert(c.hash) {
                        chunks.push(BundleChunk {
                            hash: c.hash,
                            size: c.size,
                        });
                    }
                }
                manifests.push(BundleManifest {
                    hash: meta.manifest_hash,
                    manifest,
                });
            }
            // Every file's chain, gathered in one walk shared by all files.
            if let Some(id) = &meta.provenance_id {
                if !provenance.contains_key(id) {
                    let start = self
                        .provenance(id)
                        .await?
                        .ok_or_else(|| not_found(format!("provenance record {id:?}")))?;
                    let links = parent_links(&start).collect();
                    provenance.insert(id.clone(), start);
                    self.fetch_ancestors(
                        &mut provenance,
                        links,
                        usize::MAX,
                        |child, p| {
                            StorageError::Integrity(format!(
                                "provenance record {child:?} names a missing parent {p:?}"
                            ))
                        },
                        || unreachable!("no limit"),
                    )
                    .await?;
                }
            }
            files.push(meta);
        }
        // Parents first, so an importer can add records in order.
        let mut records: Vec<&ProvenanceRecord> = provenance.values().collect();
        records.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let ordered = graph::parents_first(&records)?
            .into_iter()
            .cloned()
            .collect();
        Ok(BundleIndex {
            format: bundle::BUNDLE_FORMAT_NAME.to_owned(),
            version: bundle::BUNDLE_VERSION,
            chunks,
            manifests,
            files,
            provenance: ordered,
        })
    }

    /// Imports a bundle held in memory, made by [`export_bundle`](Self::export_bundle).
    ///
    /// Everything is checked before anything is written: the bundle's structure and every
    /// hash ([`bundle::parse_head`], [`bundle::check_chunk`]), that every provenance parent
    /// is in the bundle or the store, that the provenance graph has no cycle, that records
    /// the store already holds under the same ids are identical, and that no file of the
    /// same name with different content exists. A bundle failing any check is rejected
    /// whole (with [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) for a damaged or
    /// forged bundle, [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) for a newer
    /// format, [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a
    /// conflict with the store) and the store is left unchanged. Should a write then fail
    /// (quota, I/O), what this import had written is removed again.
    pub async fn import_bundle(&self, bytes: &[u8]) -> Result<ImportResult> {
        self.import_from(Source::Bytes(bytes)).await
    }

    /// Imports a bundle read from a [`BlockDevice`] (a native file, a browser `File`, an
    /// HTTP resource), holding at most one chunk in memory at a time.
    ///
    /// The checks and guarantees are those of [`import_bundle`](Self::import_bundle). The
    /// bundle is read twice, first to check it and then to copy the chunks the store lacks;
    /// each chunk is checked again on the second read, so a source that changes in between
    /// fails the import (which is then undone) rather than storing bad data.
    pub async fn import_bundle_from(&self, source: &dyn BlockDevice) -> Result<ImportResult> {
        self.import_from(Source::Device(source)).await
    }

    async fn import_from(&self, src: Source<'_>) -> Result<ImportResult> {
        let total = src.len();
        let header = src
            .read(0, bundle::BUNDLE_HEADER_LEN.min(total as usize))
            .await?;
        let index_len = bundle::index_len(&header, total)?;
        let index_bytes = src
            .read(bundle::BUNDLE_HEADER_LEN as u64, index_len as usize)
            .await?;
        let end = src.read(total - 8, 8).await?;
        let head = bundle::parse_head(&header, &index_bytes, total, &end)?;
        drop(index_bytes);
        let index = &head.index;
        // Every chunk's bytes, one at a time.
        for (c, &at) in index.chunks.iter().zip(&head.chunk_offsets) {
            bundle::check_chunk(c, &src.read(at, c.size as usize).await?)?;
        }

        // Provenance: every parent resolves, the union with the store is acyclic, and
        // ids already stored hold the same record. Each record and link is looked at a
        // bounded number of times (graph.rs): the index may hold hundreds of thousands.
        let mut graph: HashMap<String, ProvenanceRecord> =
            HashMap::with_capacity(index.provenance.len());
        let mut new_provenance = Vec::new();
        for rec in &index.provenance {
            graph::step();
            match self.provenance(&rec.id).await? {
                Some(existing) if existing == *rec => {}
                Some(_) => {
                    return Err(StorageError::InvalidArgument(format!(
                        "the store holds a different provenance record {:?}",
                        rec.id
                    )))
                }
                None => new_provenance.push(rec),
            }
            graph.insert(rec.id.clone(), rec.clone());
        }
        // Bring in the stored ancestors the bundle's records reach, so the cycle check
        // sees the whole graph the import would create.
        let links = index.provenance.iter().flat_map(parent_links).collect();
        self.fetch_ancestors(
            &mut graph,
            links,
            MAX_PROVENANCE_CHAIN,
            |child, p| {
                StorageError::Integrity(format!(
                    "bundle rejected: provenance record {child:?} names parent {p:?}, which neither the bundle nor the store holds"
                ))
            },
            || {
                StorageError::Integrity(format!(
                    "bundle rejected: its provenance reaches more than {MAX_PROVENANCE_CHAIN} stored records"
                ))
            },
        )
        .await?;
        let all: Vec<&ProvenanceRecord> = graph.values().collect();
        graph::parents_first(&all).map_err(|e| {
            StorageError::Integrity(format!("bundle rejected: {}", bundle::detail(&e)))
        })?;
        drop(all);
        // The new records in the bundle's order, which need not list parents first.
        let new_provenance = graph::parents_first(&new_provenance)?;
        for f in &index.files {
            if let Some(id) = &f.provenance_id {
                if !graph.contains_key(id) && self.provenance(id).await?.is_none() {
                    return Err(StorageError::Integrity(format!(
                        "bundle rejected: file {:?} names provenance record {id:?}, which neither the bundle nor the store holds",
                        f.name
                    )));
                }
            }
        }
        // Files: a same-named file must be identical.
        let mut new_files = Vec::new();
        for f in &index.files {
            match self.file(&f.name).await? {
                Some(existing) if existing == *f => {}
                Some(_) => {
                    return Err(StorageError::InvalidArgument(format!(
                        "the store already holds a different file {:?}; delete or rename it first",
                        f.name
                    )))
                }
                None => new_files.push(f),
            }
        }

        // Everything checked: write, remembering what is new so a failure can undo it.
        let mut undo = Undo::default();
        let mut result = ImportResult {
            files: index.files.clone(),
            ..ImportResult::default()
        };
        let written = async {
            for (c, &at) in index.chunks.iter().zip(&head.chunk_offsets) {
                if self.backend.has_blob(&c.hash).await? {
                    result.existing_blobs += 1;
                } else {
                    let data = src.read(at, c.size as usize).await?;
                    bundle::check_chunk(c, &data)?;
                    self.backend.put_blob(&c.hash, &data).await?;
                    undo.blobs.push(c.hash);
                    result.new_blobs += 1;
                }
            }
            for m in &index.manifests {
                let key = m.hash.to_string();
                if self
                    .backend
                    .get_record(RecordTable::Manifests, &key)
                    .await?
                    .is_none()
                {
                    self.put_manifest_json(&m.hash, &m.manifest.to_json())
                        .await?;
                    undo.records.push((RecordTable::Manifests, key));
                }
            }
            // Parents first: a record is never stored before its parents.
            for rec in new_provenance.iter().copied() {
                self.put_provenance_record(rec).await?;
                undo.records.push((RecordTable::Provenance, rec.id.clone()));
                result.new_provenance += 1;
            }
            for f in &new_files {
                self.put_file_record(f).await?;
                undo.records.push((RecordTable::Files, f.name.clone()));
            }
            Ok::<_, StorageError>(())
        }
        .await;
        match written {
            Ok(()) => Ok(result),
            Err(e) => {
                undo.run(&self.backend).await;
                Err(e)
            }
        }
    }
}

/// Where a bundle being imported is read from.
enum Source<'a> {
    Bytes(&'a [u8]),
    Device(&'a dyn BlockDevice),
}

impl<'a> Source<'a> {
    fn len(&self) -> u64 {
        match self {
            Self::Bytes(b) => b.len() as u64,
            Self::Device(d) => d.size(),
        }
    }

    /// `len` bytes at `offset` (the caller has checked they lie inside the bundle).
    async fn read(&self, offset: u64, len: usize) -> Result<Cow<'a, [u8]>> {
        match self {
            Self::Bytes(b) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                start
                    .checked_add(len)
                    .and_then(|end| b.get(start..end))
                    .map(Cow::Borrowed)
                    .ok_or_else(|| StorageError::Integrity("bundle rejected: truncated".into()))
            }
            Self::Device(d) => Ok(Cow::Owned(d.read_vec(offset, len).await?)),
        }
    }
}

#[derive(Default)]
struct Undo {
    blobs: Vec<ContentHash>,
    records: Vec<(RecordTable, String)>,
}

impl Undo {
    async fn run<B: AtlasBackend>(self, backend: &B) {
        // Best effort: the original error is what the caller needs to see.
        for (table, key) in self.records.iter().rev() {
            let _ = backend.delete_record(*table, key).await;
        }
        for hash in &self.blobs {
            let _ = backend.delete_blob(hash).await;
        }
    }
}

/// `rec`'s links to its parents, as (child id, parent id).
fn parent_links(rec: &ProvenanceRecord) -> impl Iterator<Item = (String, String)> + '_ {
    rec.parents.iter().map(|p| (rec.id.clone(), p.clone()))
}
