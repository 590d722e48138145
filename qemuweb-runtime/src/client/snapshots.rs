//! Snapshots from the page: `saveSnapshot` asks the VM's worker (it needs the running
//! engine); `listSnapshots`, `deleteSnapshot`, `exportSnapshot` and `importSnapshot` work
//! on the browser's snapshot store directly, whether or not the VM runs. A VM resumes a
//! snapshot through `startVm`'s `resume` option.

use super::events::qemu_error;
use super::{check_id, to_js, QemuClient};
use crate::protocol::{Command, ErrorCode, Event, SnapshotInfo, SnapshotOperation};
use crate::snapshot::check_snapshot_name;
use crate::RuntimeError;
use js_sys::Promise;
use qemuweb_storage::snapshot::IndexedDbSnapshotStore;
use serde::Deserialize;
use std::rc::{Rc, Weak};
use tsify::{Ts, Tsify};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// Options of `saveSnapshot(vmId, options)`.
#[derive(Debug, Default, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaveSnapshotOptions {
    /// The snapshot's id (unique per VM; default: `snap-` and the time).
    #[serde(default)]
    #[tsify(optional)]
    pub id: Option<String>,
    /// A name for people (default: empty).
    #[serde(default)]
    #[tsify(optional)]
    pub name: Option<String>,
}

/// Options of `importSnapshot(file, options)`.
#[derive(Debug, Default, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportSnapshotOptions {
    /// Store it for this VM instead of the one the file names.
    #[serde(default)]
    #[tsify(optional)]
    pub vm_id: Option<String>,
}

fn error(e: RuntimeError, vm_id: Option<&str>) -> JsValue {
    qemu_error(e.code(), &e.to_string(), vm_id, None, &JsValue::UNDEFINED)
}

fn store_error(e: qemuweb_storage::StorageError, vm_id: Option<&str>) -> JsValue {
    error(RuntimeError::Snapshot(e), vm_id)
}

fn malformed(message: String, vm_id: Option<&str>) -> JsValue {
    qemu_error(
        ErrorCode::Malformed,
        &message,
        vm_id,
        None,
        &JsValue::UNDEFINED,
    )
}

/// A progress reporter sending `snapshotProgress` events to the client's listeners.
fn reporter(
    inner: Weak<super::Inner>,
    vm_id: String,
    snapshot_id: String,
    operation: SnapshotOperation,
) -> impl Fn(u64, u64) {
    move |loaded, total| {
        let Some(inner) = inner.upgrade() else { return };
        let event = Event::SnapshotProgress {
            vm_id: vm_id.clone(),
            snapshot_id: snapshot_id.clone(),
            operation,
            loaded,
            total: Some(total),
        };
        if let Ok(v) = to_js(&event) {
            inner.listeners.dispatch(&v, None);
        }
    }
}

#[wasm_bindgen]
impl QemuClient {
    /// Saves running VM `vmId` (its CPU, memory and devices, with a point of each disk
    /// that is kept until the snapshot is deleted) and resolves to its `SnapshotInfo`. The
    /// guest pauses while its state is taken and runs on; `snapshotProgress` events
    /// (`save`) follow the storing. Needs the disks writable with persistence
    /// `indexeddb` (or untouched). Both engines save: v86 through its emulator, QEMU
    /// through its QMP monitor (`stop`, `snapshot-save`, `cont`; a QMP failure rejects
    /// with code `engine` and QEMU's message); the snapshot's header, checks and file
    /// format are the same.
    #[wasm_bindgen(js_name = saveSnapshot, unchecked_return_type = "Promise<SnapshotInfo>")]
    pub fn save_snapshot(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        options: Option<Ts<SaveSnapshotOptions>>,
    ) -> Promise {
        let options = match options.map(|o| o.to_rust()).transpose() {
            Ok(o) => o.unwrap_or_default(),
            Err(e) => return Promise::reject(&malformed(format!("options: {e}"), Some(&vm_id))),
        };
        let snapshot_id = options.id.unwrap_or_else(|| {
            format!(
                "snap-{}-{:04x}",
                js_sys::Date::now() as u64,
                (js_sys::Math::random() * 65536.0) as u32
            )
        });
        let name = options.name.unwrap_or_default();
        let checked =
            check_id("snapshot id", &snapshot_id).and_then(|()| check_snapshot_name(&name));
        if let Err(e) = checked {
            return Promise::reject(&error(e, Some(&vm_id)));
        }
        self.inner.send(
            &vm_id,
            Command::SaveSnapshot {
                vm_id: vm_id.clone(),
                snapshot_id,
                name,
            },
        )
    }

    /// The snapshots of VM `vmId` (or of every VM), oldest first.
    #[wasm_bindgen(js_name = listSnapshots, unchecked_return_type = "Promise<SnapshotInfo[]>")]
    pub fn list_snapshots(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: Option<String>,
    ) -> Promise {
        if let Some(Err(e)) = vm_id.as_deref().map(|v| check_id("vmId", v)) {
            return Promise::reject(&error(e, vm_id.as_deref()));
        }
        future_to_promise(async move {
            let vm = vm_id.as_deref();
            let store = IndexedDbSnapshotStore::open()
                .await
                .map_err(|e| store_error(e, vm))?;
            let list: Vec<SnapshotInfo> = store
                .list(vm)
                .await
                .map_err(|e| store_error(e, vm))?
                .iter()
                .map(SnapshotInfo::from)
                .collect();
            to_js(&list).map_err(JsValue::from)
        })
    }

    /// Deletes snapshot `id` of VM `vmId` and the disk points only it kept.
    #[wasm_bindgen(js_name = deleteSnapshot, unchecked_return_type = "Promise<void>")]
    pub fn delete_snapshot(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        id: String,
    ) -> Promise {
        let checked = check_id("vmId", &vm_id).and_then(|()| check_id("snapshot id", &id));
        if let Err(e) = checked {
            return Promise::reject(&error(e, Some(&vm_id)));
        }
        future_to_promise(async move {
            let store = IndexedDbSnapshotStore::open()
                .await
                .map_err(|e| store_error(e, Some(&vm_id)))?;
            store
                .delete(&vm_id, &id)
                .await
                .map_err(|e| store_error(e, Some(&vm_id)))?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Snapshot `id` of VM `vmId` as one file (a `Blob`: the header, the machine state and
    /// the disks' blocks at the snapshot's point, with SHA-256 digests), for
    /// `importSnapshot` here or in another browser. `snapshotProgress` events (`export`)
    /// follow it.
    #[wasm_bindgen(js_name = exportSnapshot, unchecked_return_type = "Promise<Blob>")]
    pub fn export_snapshot(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        id: String,
    ) -> Promise {
        let checked = check_id("vmId", &vm_id).and_then(|()| check_id("snapshot id", &id));
        if let Err(e) = checked {
            return Promise::reject(&error(e, Some(&vm_id)));
        }
        let report = reporter(
            Rc::downgrade(&self.inner),
            vm_id.clone(),
            id.clone(),
            SnapshotOperation::Export,
        );
        future_to_promise(async move {
            let store = IndexedDbSnapshotStore::open()
                .await
                .map_err(|e| store_error(e, Some(&vm_id)))?;
            let blob = store
                .export(&vm_id, &id, &report)
                .await
                .map_err(|e| store_error(e, Some(&vm_id)))?;
            Ok(blob.into())
        })
    }

    /// Imports a snapshot file (a `Blob` or `File` from `exportSnapshot`), for the VM it
    /// names or `options.vmId`, and resolves to its `SnapshotInfo`. Everything is checked
    /// before it is kept: a damaged or truncated file is refused with `snapshot-corrupt`,
    /// one whose disks are stored for that VM over other base images with
    /// `snapshot-mismatch`, and nothing is changed. `snapshotProgress` events (`import`)
    /// follow it.
    #[wasm_bindgen(js_name = importSnapshot, unchecked_return_type = "Promise<SnapshotInfo>")]
    pub fn import_snapshot(
        &self,
        file: web_sys::Blob,
        options: Option<Ts<ImportSnapshotOptions>>,
    ) -> Promise {
        let options = match options.map(|o| o.to_rust()).transpose() {
            Ok(o) => o.unwrap_or_default(),
            Err(e) => return Promise::reject(&malformed(format!("options: {e}"), None)),
        };
        if let Some(Err(e)) = options.vm_id.as_deref().map(|v| check_id("vmId", v)) {
            return Promise::reject(&error(e, options.vm_id.as_deref()));
        }
        let report = reporter(
            Rc::downgrade(&self.inner),
            options.vm_id.clone().unwrap_or_default(),
            String::new(),
            SnapshotOperation::Import,
        );
        future_to_promise(async move {
            let vm = options.vm_id.as_deref();
            let store = IndexedDbSnapshotStore::open()
                .await
                .map_err(|e| store_error(e, vm))?;
            let header = store
                .import_blob(&file, vm, &report)
                .await
                .map_err(|e| store_error(e, vm))?;
            to_js(&SnapshotInfo::from(&header)).map_err(JsValue::from)
        })
    }
}
