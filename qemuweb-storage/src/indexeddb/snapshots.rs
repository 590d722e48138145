//! [`IndexedDbSnapshotStore`]: snapshots in IndexedDB, beside the overlays they point
//! into (database `qemuweb-storage`, stores `snapshots` and `snapshot-chunks`).
//!
//! A snapshot is a record `{vmId, id, state, header}` and its machine state's non-zero
//! chunks, each its own value (a state never needs one allocation of its size in
//! storage). Saves and imports are staged: the record says `saving` or `importing` while
//! a Web Lock named after the snapshot is held, and `ready` (with the header) once
//! everything is written; a staged record whose lock is free was left by a crash and is
//! removed, with its chunks and pins, by the next [`list`](IndexedDbSnapshotStore::list).
//! Nothing of a failed import or save stays.

use super::db::{
    change_lineage, commit, disk_ids, idb_err, js_bytes, key, number_field, open_database,
    prefix_range, read_store, request, set, snapshot_lock_name, strict_transaction, text_field,
    WebLock, DISKS, GEN_BLOCKS, SNAPSHOTS, SNAPSHOT_CHUNKS,
};
use crate::error::{Result, StorageError};
use crate::snapshot::{
    check_id, FileParser, FileWriter, Item, Lineage, MachineState, SnapshotHeader, StateEncoding,
    ZERO_CHUNK,
};
use idb::{KeyRange, Query};
use js_sys::{Array, Object, Uint8Array};
use std::collections::BTreeMap;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::IdbDatabase;

/// Chunks (or blocks) written per transaction, by bytes.
const BATCH_BYTES: usize = 8 << 20;
/// Bytes of a `Blob` read per step of an import.
const READ_STEP: f64 = (4 << 20) as f64;

const SAVING: &str = "saving";
const IMPORTING: &str = "importing";
const READY: &str = "ready";

/// Called with (bytes done, bytes in all) as an export or import goes on.
pub type ProgressFn<'a> = &'a dyn Fn(u64, u64);

/// The snapshots of every VM in this browser profile.
///
/// ```no_run
/// use qemuweb_storage::snapshot::IndexedDbSnapshotStore;
/// # async fn demo() -> qemuweb_storage::Result<()> {
/// let store = IndexedDbSnapshotStore::open().await?;
/// for h in store.list(Some("vm1")).await? {
///     println!("{} {} ({} bytes of state)", h.id, h.name, h.state.bytes);
/// }
/// # Ok(()) }
/// ```
pub struct IndexedDbSnapshotStore {
    db: IdbDatabase,
}

impl Drop for IndexedDbSnapshotStore {
    fn drop(&mut self) {
        self.db.close();
    }
}

fn chunk_key(vm_id: &str, id: &str, index: u64) -> wasm_bindgen::JsValue {
    key(&[vm_id.into(), id.into(), (index as f64).into()])
}

/// A batch of puts into one store, written in one transaction.
#[derive(Default)]
struct Batch {
    records: Vec<(&'static str, Object)>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, store: &'static str, record: Object, bytes: usize) {
        self.records.push((store, record));
        self.bytes += bytes;
    }

    async fn write(&mut self, db: &IdbDatabase) -> Result<()> {
        if self.records.is_empty() {
            return Ok(());
        }
        let what = "storing a snapshot";
        let tx = strict_transaction(db, &[SNAPSHOT_CHUNKS, GEN_BLOCKS])?;
        for (store, record) in self.records.drain(..) {
            tx.object_store(store)
                .map_err(|e| idb_err(what, e))?
                .put(&record.into(), None)
                .map_err(|e| idb_err(what, e))?;
        }
        self.bytes = 0;
        commit(tx, what).await
    }
}

impl IndexedDbSnapshotStore {
    /// Opens the database (shared with the overlays).
    pub async fn open() -> Result<Self> {
        Ok(Self {
            db: open_database().await?,
        })
    }

    async fn record(&self, vm_id: &str, id: &str) -> Result<Option<wasm_bindgen::JsValue>> {
        let (_tx, store) = read_store(&self.db, SNAPSHOTS, "reading a snapshot")?;
        request(
            store.get(key(&[vm_id.into(), id.into()])),
            "reading a snapshot",
        )
        .await
    }

    /// The ready snapshots of VM `vm_id` (or of every VM), oldest first. Removes what
    /// crashed saves and imports left.
    pub async fn list(&self, vm_id: Option<&str>) -> Result<Vec<SnapshotHeader>> {
        let records = {
            let (_tx, store) = read_store(&self.db, SNAPSHOTS, "listing snapshots")?;
            let query = match vm_id {
                Some(vm) => Some(Query::from(prefix_range(&[vm.into()])?)),
                None => None,
            };
            request(store.get_all(query, None), "listing snapshots").await?
        };
        let mut out = Vec::new();
        for r in records {
            let (Some(vm), Some(id)) = (text_field(&r, "vmId"), text_field(&r, "id")) else {
                continue;
            };
            match text_field(&r, "state").as_deref() {
                Some(READY) => {
                    let json = text_field(&r, "header").unwrap_or_default();
                    out.push(SnapshotHeader::parse(json.as_bytes()).map_err(|e| {
                        StorageError::Integrity(format!("stored snapshot {id:?}: {e}"))
                    })?);
                }
                _ => {
                    // Staged: abandoned if nobody holds its lock.
                    if let Some(lock) = WebLock::try_acquire(&snapshot_lock_name(&vm, &id)).await? {
                        let purged = self.purge(&vm, &id).await;
                        lock.release().await;
                        purged?;
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }

    /// The header of ready snapshot `id` of VM `vm_id`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when there is none.
    pub async fn get(&self, vm_id: &str, id: &str) -> Result<SnapshotHeader> {
        let record = self.record(vm_id, id).await?;
        match record {
            Some(r) if text_field(&r, "state").as_deref() == Some(READY) => {
                let json = text_field(&r, "header").unwrap_or_default();
                SnapshotHeader::parse(json.as_bytes())
                    .map_err(|e| StorageError::Integrity(format!("stored snapshot {id:?}: {e}")))
            }
            _ => Err(StorageError::NotFound(format!(
                "VM {vm_id:?} has no snapshot {id:?}"
            ))),
        }
    }

    /// Writes a staged record (after checking the id is free) and takes its lock.
    async fn stage(&self, vm_id: &str, id: &str, state: &str) -> Result<WebLock> {
        check_id("vmId", vm_id)?;
        check_id("snapshot id", id)?;
        let lock = WebLock::try_acquire(&snapshot_lock_name(vm_id, id))
            .await?
            .ok_or_else(|| {
                StorageError::Locked(format!("snapshot {id:?} of VM {vm_id:?} is being written"))
            })?;
        let what = "starting a snapshot";
        let staged = async {
            let tx = strict_transaction(&self.db, &[SNAPSHOTS])?;
            let store = tx.object_store(SNAPSHOTS).map_err(|e| idb_err(what, e))?;
            let k = key(&[vm_id.into(), id.into()]);
            let existing: Option<wasm_bindgen::JsValue> = request(store.get(k), what).await?;
            if existing.is_some() {
                let _ = tx.abort();
                return Err(StorageError::InvalidArgument(format!(
                    "VM {vm_id:?} already has a snapshot {id:?}"
                )));
            }
            let record = Object::new();
            set(&record, "vmId", &vm_id.into());
            set(&record, "id", &id.into());
            set(&record, "state", &state.into());
            store
                .put(&record.into(), None)
                .map_err(|e| idb_err(what, e))?;
            commit(tx, what).await
        }
        .await;
        match staged {
            Ok(()) => Ok(lock),
            Err(e) => {
                lock.release().await;
                Err(e)
            }
        }
    }

    /// Starts saving snapshot `id` of VM `vm_id`: the caller then pins each disk's
    /// overlay (`IndexedDbOverlay::pin`), hands the machine state over in chunks and
    /// commits (or aborts, which also drops the pins).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a bad or
    /// taken id.
    pub async fn begin_save(
        &self,
        vm_id: &str,
        id: &str,
        chunk_size: u32,
    ) -> Result<SnapshotSave<'_>> {
        if chunk_size == 0 || chunk_size > crate::snapshot::MAX_CHUNK_BYTES {
            return Err(StorageError::InvalidArgument(format!(
                "chunk size {chunk_size}"
            )));
        }
        let lock = self.stage(vm_id, id, SAVING).await?;
        Ok(SnapshotSave {
            store: self,
            vm_id: vm_id.into(),
            id: id.into(),
            lock: Some(lock),
            chunk_size,
            chunks: Vec::new(),
            bytes: 0,
            short_seen: false,
            batch: Batch::default(),
        })
    }

    /// Removes snapshot `id` of VM `vm_id` in any state: its record and chunks, then its
    /// pin on each disk (which deletes the overlay generations only it kept).
    async fn purge(&self, vm_id: &str, id: &str) -> Result<()> {
        let what = "deleting a snapshot";
        let tx = strict_transaction(&self.db, &[SNAPSHOTS, SNAPSHOT_CHUNKS])?;
        for store in [SNAPSHOTS, SNAPSHOT_CHUNKS] {
            let s = tx.object_store(store).map_err(|e| idb_err(what, e))?;
            let range = if store == SNAPSHOTS {
                KeyRange::only(&key(&[vm_id.into(), id.into()])).map_err(|e| idb_err(what, e))?
            } else {
                prefix_range(&[vm_id.into(), id.into()])?
            };
            s.delete(range).map_err(|e| idb_err(what, e))?;
        }
        commit(tx, what).await?;
        for disk in disk_ids(&self.db, vm_id).await? {
            change_lineage(&self.db, vm_id, &disk, &[], |l, _| {
                l.unpin(id);
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Deletes ready snapshot `id` of VM `vm_id`, its machine state and the overlay
    /// generations only it kept.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when there is none.
    pub async fn delete(&self, vm_id: &str, id: &str) -> Result<()> {
        self.get(vm_id, id).await?;
        self.purge(vm_id, id).await
    }

    /// Reads chunk `index` of the machine state of `header` (`None` for a zero chunk),
    /// checked against its digest.
    pub async fn read_chunk(
        &self,
        header: &SnapshotHeader,
        index: u64,
    ) -> Result<Option<Uint8Array>> {
        let digest = header
            .state
            .chunks
            .get(index as usize)
            .ok_or_else(|| StorageError::NotFound(format!("no chunk {index}")))?;
        if digest == ZERO_CHUNK {
            return Ok(None);
        }
        let (_tx, store) = read_store(&self.db, SNAPSHOT_CHUNKS, "reading a snapshot")?;
        let record: Option<wasm_bindgen::JsValue> = request(
            store.get(chunk_key(&header.vm_id, &header.id, index)),
            "reading a snapshot",
        )
        .await?;
        let data = record
            .and_then(|r| js_sys::Reflect::get(&r, &"data".into()).ok())
            .and_then(|d| d.dyn_into::<Uint8Array>().ok())
            .ok_or_else(|| {
                StorageError::Integrity(format!("chunk {index} of {} is missing", header.subject()))
            })?;
        header.state.check_chunk(index, &data.to_vec())?;
        Ok(Some(data))
    }

    /// The whole machine state of `header` in one `Uint8Array` (engines restore from one
    /// buffer), filled chunk by chunk, each checked.
    pub async fn read_state(
        &self,
        header: &SnapshotHeader,
        progress: ProgressFn<'_>,
    ) -> Result<Uint8Array> {
        let total = header.state.bytes;
        let out = Uint8Array::new_with_length(u32::try_from(total).map_err(|_| {
            StorageError::unsupported(format!("a machine state of {total} bytes (at most 4 GiB)"))
        })?);
        let cs = u64::from(header.state.chunk_size);
        for index in 0..header.state.chunks.len() as u64 {
            if let Some(data) = self.read_chunk(header, index).await? {
                out.set(&data, (index * cs) as u32);
            }
            progress(((index + 1) * cs).min(total), total);
        }
        Ok(out)
    }

    /// The blocks disk `d` of `header` holds at its point, ascending: (index, generation).
    async fn point_blocks(&self, header: &SnapshotHeader, d: usize) -> Result<Vec<(u64, u32)>> {
        let disk = &header.disks[d];
        if disk.point == 0 {
            return Ok(Vec::new());
        }
        let lineage = self.lineage(&header.vm_id, &disk.id).await?;
        let chain = lineage.chain(disk.point)?;
        let position: BTreeMap<u32, usize> =
            chain.iter().enumerate().map(|(i, g)| (*g, i)).collect();
        let keys = {
            let (_tx, store) = read_store(&self.db, GEN_BLOCKS, "listing blocks")?;
            request(
                store.get_all_keys(
                    Some(Query::from(prefix_range(&[
                        header.vm_id.as_str().into(),
                        disk.id.as_str().into(),
                    ])?)),
                    None,
                ),
                "listing blocks",
            )
            .await?
        };
        let mut nearest: BTreeMap<u64, u32> = BTreeMap::new();
        for k in keys {
            let num = |i: u32| {
                js_sys::Reflect::get(&k, &i.into())
                    .ok()
                    .and_then(|v| v.as_f64())
            };
            let (Some(gen), Some(index)) = (num(2), num(3)) else {
                continue;
            };
            let (gen, index) = (gen as u32, index as u64);
            if let Some(&pos) = position.get(&gen) {
                if nearest.get(&index).is_none_or(|g| position[g] > pos) {
                    nearest.insert(index, gen);
                }
            }
        }
        Ok(nearest.into_iter().collect())
    }

    async fn lineage(&self, vm_id: &str, disk_id: &str) -> Result<Lineage> {
        let (_tx, store) = read_store(&self.db, DISKS, "reading disk metadata")?;
        let record: Option<wasm_bindgen::JsValue> = request(
            store.get(key(&[vm_id.into(), disk_id.into()])),
            "reading disk metadata",
        )
        .await?;
        let record = record.ok_or_else(|| {
            StorageError::NotFound(format!("disk {disk_id:?} of VM {vm_id:?} is not stored"))
        })?;
        Ok(super::db::record_lineage(&record)?.unwrap_or_default())
    }

    /// Snapshot `id` of VM `vm_id` as one file (see
    /// [`snapshot`](crate::snapshot)'s file format): a `Blob` made of the stored chunks
    /// and blocks (the browser keeps large blobs out of memory), every chunk checked on
    /// the way.
    pub async fn export(
        &self,
        vm_id: &str,
        id: &str,
        progress: ProgressFn<'_>,
    ) -> Result<web_sys::Blob> {
        let mut header = self.get(vm_id, id).await?;
        let mut blocks = Vec::new();
        for d in 0..header.disks.len() {
            let b = self.point_blocks(&header, d).await?;
            header.disks[d].blocks = b.len() as u64;
            blocks.push(b);
        }
        let total = header.state.bytes
            + header
                .disks
                .iter()
                .map(|d| d.blocks * u64::from(d.block_size))
                .sum::<u64>();
        let mut done = 0u64;
        let parts = Array::new();
        let mut w = FileWriter::new(&header);
        parts.push(&js_bytes(&w.start()));
        for index in 0..header.state.chunks.len() as u64 {
            let data = self.read_chunk(&header, index).await?;
            let bytes = data
                .as_ref()
                .map(|d| d.to_vec())
                .unwrap_or_else(|| vec![0; header.state.chunk_len(index) as usize]);
            let (prefix, follows) = w.chunk_prefix(index as u32, &bytes);
            parts.push(&js_bytes(&prefix));
            if let (true, Some(d)) = (follows, data) {
                parts.push(&d);
            }
            done += bytes.len() as u64;
            progress(done, total);
        }
        for (d, list) in blocks.iter().enumerate() {
            let disk = &header.disks[d];
            let (_tx, store) = read_store(&self.db, GEN_BLOCKS, "reading blocks")?;
            for &(index, gen) in list {
                let record: Option<wasm_bindgen::JsValue> = request(
                    store.get(super::db::block_key(vm_id, &disk.id, gen, index)),
                    "reading blocks",
                )
                .await?;
                let mut data = vec![0u8; disk.block_size as usize];
                let record = record.ok_or_else(|| {
                    StorageError::Integrity(format!("block {index} of {} vanished", disk.id))
                })?;
                super::db::copy_record(&record, index, &mut data)?;
                parts.push(&js_bytes(&w.block(d as u8, index, &data)));
                done += data.len() as u64;
            }
            progress(done, total);
        }
        parts.push(&js_bytes(&w.end()));
        let options = web_sys::BlobPropertyBag::new();
        options.set_type("application/octet-stream");
        web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)
            .map_err(|e| super::db::js_err("making the snapshot file", e))
    }

    /// Starts an import of a snapshot file: feed it its bytes, then finish it. With
    /// `vm_id`, the snapshot is stored for that VM instead of the one it names.
    pub fn begin_import(&self, vm_id: Option<&str>) -> SnapshotImport<'_> {
        SnapshotImport {
            store: self,
            vm_id: vm_id.map(str::to_string),
            parser: FileParser::new(),
            header: None,
            lock: None,
            staged: Vec::new(),
            batch: Batch::default(),
            failed: false,
            rebase: Vec::new(),
        }
    }

    /// Imports the snapshot file in `blob` (read a few MiB at a time); with `vm_id`, for
    /// that VM. Everything is checked before the snapshot becomes visible; on any error
    /// nothing of it stays and nothing else is changed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) /
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) for a damaged or truncated
    /// file, [`ErrorKind::Mismatch`](crate::ErrorKind::Mismatch) when the VM's disk is
    /// stored with another block size or base image,
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the VM
    /// already has a snapshot of that id.
    pub async fn import_blob(
        &self,
        blob: &web_sys::Blob,
        vm_id: Option<&str>,
        progress: ProgressFn<'_>,
    ) -> Result<SnapshotHeader> {
        let mut import = self.begin_import(vm_id);
        let size = blob.size();
        let mut at = 0.0;
        while at < size {
            let end = (at + READ_STEP).min(size);
            let piece = read_blob(blob, at, end).await;
            let fed = match piece {
                Ok(bytes) => import.feed(&bytes).await,
                Err(e) => Err(e),
            };
            if let Err(e) = fed {
                import.abort().await;
                return Err(e);
            }
            at = end;
            progress(at as u64, size as u64);
        }
        import.finish().await
    }
}

async fn read_blob(blob: &web_sys::Blob, start: f64, end: f64) -> Result<Vec<u8>> {
    let err = |e| super::db::js_err("reading the snapshot file", e);
    let slice = blob.slice_with_f64_and_f64(start, end).map_err(err)?;
    let buffer = JsFuture::from(slice.array_buffer()).await.map_err(err)?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// A save in progress (see [`IndexedDbSnapshotStore::begin_save`]).
pub struct SnapshotSave<'a> {
    store: &'a IndexedDbSnapshotStore,
    vm_id: String,
    id: String,
    lock: Option<WebLock>,
    chunk_size: u32,
    chunks: Vec<String>,
    bytes: u64,
    short_seen: bool,
    batch: Batch,
}

impl SnapshotSave<'_> {
    /// The snapshot's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stores the next chunk of the machine state: `chunk_size` bytes, except the last
    /// one, which may be shorter.
    pub async fn put_chunk(&mut self, data: &Uint8Array) -> Result<()> {
        let len = data.length();
        if self.short_seen || len == 0 || len > self.chunk_size {
            return Err(StorageError::InvalidArgument(format!(
                "a machine-state chunk of {len} bytes (chunks are {} bytes; only the last may be shorter)",
                self.chunk_size
            )));
        }
        self.short_seen = len < self.chunk_size;
        let digest = MachineState::chunk_digest(&data.to_vec());
        let index = self.chunks.len() as u64;
        if digest != ZERO_CHUNK {
            let record = Object::new();
            set(&record, "vmId", &self.vm_id.as_str().into());
            set(&record, "id", &self.id.as_str().into());
            set(&record, "index", &(index as f64).into());
            // A copy: the caller's buffer may change once this returns.
            set(&record, "data", &data.slice(0, len).into());
            self.batch.push(SNAPSHOT_CHUNKS, record, len as usize);
        }
        self.chunks.push(digest);
        self.bytes += u64::from(len);
        if self.batch.bytes >= BATCH_BYTES {
            self.batch.write(&self.store.db).await?;
        }
        Ok(())
    }

    /// The machine state stored so far.
    pub fn state(&self, encoding: StateEncoding) -> MachineState {
        MachineState {
            bytes: self.bytes,
            chunk_size: self.chunk_size,
            encoding,
            chunks: self.chunks.clone(),
        }
    }

    /// Makes the snapshot visible with `header` (whose `state` must be
    /// [`state`](Self::state)'s, whose `id`/`vmId` are this save's, and whose disks
    /// point at the generations the caller pinned).
    pub async fn commit(mut self, header: SnapshotHeader) -> Result<SnapshotHeader> {
        let result = self.commit_inner(&header).await;
        match result {
            Ok(()) => {
                if let Some(lock) = self.lock.take() {
                    lock.release().await;
                }
                Ok(header)
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn commit_inner(&mut self, header: &SnapshotHeader) -> Result<()> {
        header.validate()?;
        if header.id != self.id || header.vm_id != self.vm_id || header.state.chunks != self.chunks
        {
            return Err(StorageError::InvalidArgument(
                "the header is not this save's (id, VM or machine state differ)".into(),
            ));
        }
        self.batch.write(&self.store.db).await?;
        write_ready(&self.store.db, header).await
    }

    /// Drops the save: its chunks, record and pins.
    pub async fn abort(mut self) {
        self.batch.records.clear();
        let _ = self.store.purge(&self.vm_id, &self.id).await;
        if let Some(lock) = self.lock.take() {
            lock.release().await;
        }
    }
}

/// Marks a staged snapshot ready with its header.
async fn write_ready(db: &IdbDatabase, header: &SnapshotHeader) -> Result<()> {
    let what = "committing a snapshot";
    let tx = strict_transaction(db, &[SNAPSHOTS])?;
    let store = tx.object_store(SNAPSHOTS).map_err(|e| idb_err(what, e))?;
    let record = Object::new();
    set(&record, "vmId", &header.vm_id.as_str().into());
    set(&record, "id", &header.id.as_str().into());
    set(&record, "state", &READY.into());
    set(&record, "createdMs", &(header.created_ms as f64).into());
    let json = String::from_utf8(header.to_json()).unwrap_or_default();
    set(&record, "header", &json.into());
    store
        .put(&record.into(), None)
        .map_err(|e| idb_err(what, e))?;
    commit(tx, what).await
}

/// An import in progress (see [`IndexedDbSnapshotStore::begin_import`]).
pub struct SnapshotImport<'a> {
    store: &'a IndexedDbSnapshotStore,
    vm_id: Option<String>,
    parser: FileParser,
    /// The header as it will be stored (VM and points relabelled).
    header: Option<SnapshotHeader>,
    lock: Option<WebLock>,
    /// Disks whose staging generation was made.
    staged: Vec<String>,
    batch: Batch,
    failed: bool,
    /// Base identities to record instead of the file's, by disk id.
    rebase: Vec<(String, String)>,
}

impl SnapshotImport<'_> {
    /// Records `base` as disk `disk_id`'s base image identity instead of the one the file
    /// names (for a published state, whose images the caller has checked by other means).
    /// Call before the first [`feed`](Self::feed).
    pub fn rebase(&mut self, disk_id: &str, base: &str) {
        self.rebase.push((disk_id.to_string(), base.to_string()));
    }

    /// The snapshot's header as it will be stored, once read.
    pub fn header(&self) -> Option<&SnapshotHeader> {
        self.header.as_ref()
    }

    /// Parses the next bytes of the file, storing what they complete.
    ///
    /// # Errors
    ///
    /// As [`IndexedDbSnapshotStore::import_blob`]; after an error call
    /// [`abort`](Self::abort).
    pub async fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        if self.failed {
            return Err(StorageError::InvalidArgument(
                "the import already failed".into(),
            ));
        }
        let result = self.feed_inner(bytes).await;
        self.failed = result.is_err();
        result
    }

    async fn feed_inner(&mut self, bytes: &[u8]) -> Result<()> {
        for item in self.parser.feed(bytes)? {
            match item {
                Item::Header(h) => self.start(h).await?,
                Item::Chunk { index, data } => {
                    let Some(data) = data else { continue };
                    let h = self.header.as_ref().expect("the header comes first");
                    let record = Object::new();
                    set(&record, "vmId", &h.vm_id.as_str().into());
                    set(&record, "id", &h.id.as_str().into());
                    set(&record, "index", &f64::from(index).into());
                    set(&record, "data", &js_bytes(&data).into());
                    self.batch.push(SNAPSHOT_CHUNKS, record, data.len());
                }
                Item::Block { disk, index, data } => {
                    let h = self.header.as_ref().expect("the header comes first");
                    let d = &h.disks[disk as usize];
                    let record = Object::new();
                    set(&record, "vmId", &h.vm_id.as_str().into());
                    set(&record, "diskId", &d.id.as_str().into());
                    set(&record, "gen", &d.point.into());
                    set(&record, "index", &(index as f64).into());
                    set(&record, "data", &js_bytes(&data).into());
                    self.batch.push(GEN_BLOCKS, record, data.len());
                }
            }
            if self.batch.bytes >= BATCH_BYTES {
                self.batch.write(&self.store.db).await?;
            }
        }
        Ok(())
    }

    /// The header arrived: stage the record, check and stage each disk.
    async fn start(&mut self, mut h: SnapshotHeader) -> Result<()> {
        if let Some(vm) = &self.vm_id {
            h.vm_id = vm.clone();
        }
        for d in &mut h.disks {
            if let Some((_, base)) = self.rebase.iter().find(|(id, _)| *id == d.id) {
                d.base = base.clone();
            }
        }
        let lock = self.store.stage(&h.vm_id, &h.id, IMPORTING).await?;
        self.lock = Some(lock);
        // Published now so an abort can purge what was staged.
        self.header = Some(h.clone());
        for d in 0..h.disks.len() {
            let point = &h.disks[d];
            ensure_disk(&self.store.db, &h, d).await?;
            let (gen, _) = change_lineage(&self.store.db, &h.vm_id, &point.id, &[], |l, _| {
                Ok(l.begin_import(&h.id))
            })
            .await?;
            self.staged.push(point.id.clone());
            h.disks[d].point = gen;
            self.header = Some(h.clone());
        }
        Ok(())
    }

    /// Checks that the file ended where it should, then makes the snapshot visible.
    pub async fn finish(mut self) -> Result<SnapshotHeader> {
        let result = self.finish_inner().await;
        match result {
            Ok(h) => {
                if let Some(lock) = self.lock.take() {
                    lock.release().await;
                }
                Ok(h)
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn finish_inner(&mut self) -> Result<SnapshotHeader> {
        if self.failed {
            return Err(StorageError::InvalidArgument(
                "the import already failed".into(),
            ));
        }
        self.parser.finish()?;
        self.batch.write(&self.store.db).await?;
        let h = self.header.clone().expect("a finished file had a header");
        for d in &h.disks {
            change_lineage(&self.store.db, &h.vm_id, &d.id, &[], |l, _| {
                l.commit_import(d.point)
            })
            .await?;
        }
        write_ready(&self.store.db, &h).await?;
        Ok(h)
    }

    /// Drops the import: its record, chunks and staged blocks.
    pub async fn abort(mut self) {
        self.batch.records.clear();
        if let Some(h) = &self.header {
            let _ = self.store.purge(&h.vm_id, &h.id).await;
        }
        if let Some(lock) = self.lock.take() {
            lock.release().await;
        }
    }
}

/// Makes sure VM `h.vm_id` has a record for disk `d` of `h` with the same block size and
/// base image (creating one if it has none).
async fn ensure_disk(db: &IdbDatabase, h: &SnapshotHeader, d: usize) -> Result<()> {
    let point = &h.disks[d];
    let what = "checking a disk for an import";
    let tx = strict_transaction(db, &[DISKS])?;
    let store = tx.object_store(DISKS).map_err(|e| idb_err(what, e))?;
    let record: Option<wasm_bindgen::JsValue> = request(
        store.get(key(&[h.vm_id.as_str().into(), point.id.as_str().into()])),
        what,
    )
    .await?;
    let subject = h.subject();
    let mismatch = |what: String, saved: String, given: String| {
        StorageError::mismatch(&subject, what, saved, given)
    };
    match record {
        Some(r) => {
            let _ = tx.abort();
            let bs = number_field(&r, "blockSize").unwrap_or(0.0) as u32;
            if bs != point.block_size {
                return Err(mismatch(
                    format!("the overlay block size of {}", point.id),
                    point.block_size.to_string(),
                    format!("{bs} (as VM {:?} stores it)", h.vm_id),
                ));
            }
            match text_field(&r, "base") {
                Some(base) if base != point.base => Err(mismatch(
                    format!("the base image of {}", point.id),
                    point.base.clone(),
                    format!("{base} (as VM {:?} stores it)", h.vm_id),
                )),
                _ => Ok(()),
            }
        }
        None => {
            let record = Object::new();
            set(&record, "vmId", &h.vm_id.as_str().into());
            set(&record, "diskId", &point.id.as_str().into());
            set(&record, "blockSize", &point.block_size.into());
            set(&record, "base", &point.base.as_str().into());
            let json = serde_json::to_string(&Lineage::new()).unwrap_or_default();
            set(&record, "lineage", &json.into());
            store
                .put(&record.into(), None)
                .map_err(|e| idb_err(what, e))?;
            commit(tx, what).await
        }
    }
}
