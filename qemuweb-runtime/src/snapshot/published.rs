//! Published boot states (wasm32): `boot-state.json` and its parts, written beside a
//! disk by `qemuweb prepare --boot-state`, imported once as a snapshot of the VM that
//! resumes it (see `qemuweb_storage::snapshot::PublishedState`).
//!
//! The images cannot be hashed without reading them whole, so each disk of the plan is
//! checked against the manifest by what its first request tells (format, virtual size,
//! file size), and the imported snapshot records the disk's own identity (its HTTP
//! validator), which every later resume and overlay then checks.

use super::{snapshot_error, SnapshotOperation};
use crate::engine::{js_text, EngineHost, EnginePlan};
use crate::error::{Result, RuntimeError};
use crate::protocol::Event;
use crate::storage_stack::{open_disk_image, FileMap};
use js_sys::{Reflect, Uint8Array};
use qemuweb_storage::snapshot::{
    IndexedDbSnapshotStore, PublishedState, SnapshotHeader, SnapshotImport, MAX_MANIFEST_BYTES,
};
use qemuweb_storage::{ErrorKind, StorageError};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Imports the published state at `url` for VM `vm_id` (unless it is already stored) and
/// returns its header.
pub async fn import(
    store: &IndexedDbSnapshotStore,
    vm_id: &str,
    url: &str,
    plan: &EnginePlan,
    files: &FileMap,
    host: &dyn EngineHost,
) -> Result<SnapshotHeader> {
    let manifest = fetch_manifest(url).await?;
    // A state of another engine is refused before its parts are fetched (the header
    // names the engine again, checked by `Resuming::find`).
    if manifest.engine != plan.engine.as_str() {
        return Err(snapshot_error(StorageError::mismatch(
            format!("the published state at {url}"),
            "engine",
            manifest.engine.clone(),
            plan.engine.as_str(),
        )));
    }
    match store.get(vm_id, &manifest.snapshot_id).await {
        Ok(h) => return Ok(h),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(snapshot_error(e)),
    }
    let mut import = store.begin_import(Some(vm_id));
    for d in &manifest.disks {
        let planned = plan.disks.iter().find(|p| p.id == d.id).ok_or_else(|| {
            snapshot_error(StorageError::mismatch(
                format!("the published state at {url}"),
                "disks",
                d.id.clone(),
                plan.disks
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ))
        })?;
        let image = open_disk_image(planned, files, plan.block_size, |_| {}).await?;
        let found = (
            image.format.name().to_string(),
            image.image.size(),
            image.file_size,
        );
        let _ = image.image.close().await;
        if found != (d.format.clone(), d.virtual_size, d.file_size) {
            return Err(snapshot_error(StorageError::mismatch(
                format!("the published state at {url}"),
                format!("the image of {}", d.id),
                format!(
                    "{} {} bytes, file {} bytes",
                    d.format, d.virtual_size, d.file_size
                ),
                format!("{} {} bytes, file {} bytes", found.0, found.1, found.2),
            )));
        }
        import.rebase(&d.id, &image.base);
    }
    match feed_parts(&mut import, &manifest, url, vm_id, host).await {
        Ok(()) => import.finish().await.map_err(snapshot_error),
        Err(e) => {
            import.abort().await;
            Err(e)
        }
    }
}

/// Fetches and parses `boot-state.json`.
async fn fetch_manifest(url: &str) -> Result<PublishedState> {
    let mut bytes = Vec::new();
    let mut reader = open(url, "a published boot state").await?;
    while let Some(chunk) = reader.next(url).await? {
        if bytes.len() + chunk.len() > MAX_MANIFEST_BYTES {
            return Err(snapshot_error(StorageError::corrupt(format!(
                "{url} is larger than {MAX_MANIFEST_BYTES} bytes"
            ))));
        }
        bytes.extend(chunk);
    }
    PublishedState::parse(&bytes).map_err(snapshot_error)
}

/// Fetches every part in order, feeding the import as the bytes arrive.
async fn feed_parts(
    import: &mut SnapshotImport<'_>,
    manifest: &PublishedState,
    url: &str,
    vm_id: &str,
    host: &dyn EngineHost,
) -> Result<()> {
    let mut loaded = 0u64;
    for part in &manifest.parts {
        let part_url = beside(url, &part.path);
        let mut reader = open(&part_url, "a part of a published boot state").await?;
        let mut got = 0u64;
        while let Some(chunk) = reader.next(&part_url).await? {
            got += chunk.len() as u64;
            if got > part.bytes {
                return Err(snapshot_error(StorageError::corrupt(format!(
                    "{part_url} holds more than its {} bytes",
                    part.bytes
                ))));
            }
            import.feed(&chunk).await.map_err(snapshot_error)?;
            loaded += chunk.len() as u64;
            host.emit(Event::SnapshotProgress {
                vm_id: vm_id.to_string(),
                snapshot_id: manifest.snapshot_id.clone(),
                operation: SnapshotOperation::Fetch,
                loaded,
                total: Some(manifest.file_bytes),
            });
        }
        if got != part.bytes {
            return Err(snapshot_error(StorageError::corrupt(format!(
                "{part_url} holds {got} bytes, not {}",
                part.bytes
            ))));
        }
    }
    Ok(())
}

/// `name` in the directory of `url`.
fn beside(url: &str, name: &str) -> String {
    match url.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_string(),
    }
}

/// A response body read piece by piece.
struct BodyReader {
    reader: Option<web_sys::ReadableStreamDefaultReader>,
}

/// Fetches `url` (`what` names it in errors).
async fn open(url: &str, what: &str) -> Result<BodyReader> {
    let err = |reason: String| RuntimeError::Fetch {
        what: what.to_string(),
        url: url.to_string(),
        reason,
    };
    let response = JsFuture::from(fetch(url).map_err(|e| err(js_text(&e)))?)
        .await
        .map_err(|e| err(js_text(&e)))?;
    let response: web_sys::Response = response.unchecked_into();
    if !response.ok() {
        return Err(err(format!("HTTP status {}", response.status())));
    }
    let reader = match response.body() {
        Some(body) => Some(
            body.get_reader()
                .dyn_into()
                .map_err(|_| err("the response body has no default reader".into()))?,
        ),
        None => None,
    };
    Ok(BodyReader { reader })
}

impl BodyReader {
    /// The next piece of the body, or `None` at its end.
    async fn next(&mut self, url: &str) -> Result<Option<Vec<u8>>> {
        let Some(reader) = &self.reader else {
            return Ok(None);
        };
        let err = |reason: String| RuntimeError::Fetch {
            what: "a published boot state".into(),
            url: url.to_string(),
            reason,
        };
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| err(js_text(&e)))?;
        if Reflect::get(&chunk, &"done".into()).is_ok_and(|d| d.is_truthy()) {
            self.reader = None;
            return Ok(None);
        }
        let value = Reflect::get(&chunk, &"value".into()).unwrap_or(JsValue::UNDEFINED);
        let bytes: Uint8Array = value
            .dyn_into()
            .map_err(|_| err("the response body gave a chunk that is not bytes".into()))?;
        Ok(Some(bytes.to_vec()))
    }
}

/// `fetch(url)` in a window or a worker.
fn fetch(url: &str) -> std::result::Result<js_sys::Promise, JsValue> {
    let global = js_sys::global();
    if let Some(w) = global.dyn_ref::<web_sys::WorkerGlobalScope>() {
        Ok(w.fetch_with_str(url))
    } else if let Some(w) = global.dyn_ref::<web_sys::Window>() {
        Ok(w.fetch_with_str(url))
    } else {
        Err(JsValue::from_str(
            "fetch is only available in a window or a worker",
        ))
    }
}
