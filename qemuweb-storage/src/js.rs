//! The JavaScript API of this crate (`wasm32` with the `js` feature): the `Disk` class of
//! the `@qemuweb/storage` package.
//!
//! Every method that does I/O returns a `Promise`. Failures reject with an `Error` whose
//! `code` is the [`ErrorKind`](crate::ErrorKind) in kebab case (`"quota-exceeded"`,
//! `"locked"`, `"read-only"`, `"image-changed"`, ...; the TypeScript union `ErrorKind`),
//! so scripts can branch on it; its `name` is the kind's Rust name (`"QuotaExceeded"`).

use crate::export::{compact, qcow2};
use crate::format::{open_image, ImageFormat, OpenOptions};
use crate::{
    BlobBlockDevice, BlockDevice, CowBlockDevice, HttpBlockDevice, HttpOptions, IndexedDbOptions,
    IndexedDbOverlay, LockPolicy, MemoryBlockDevice, StorageError,
};
use js_sys::{Promise, Uint8Array};
use std::future::Future;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// The TypeScript of the `Disk` API's argument unions and errors.
#[wasm_bindgen(typescript_custom_section)]
const TYPESCRIPT: &'static str = r#"
/** An image format: `"raw"` or `"qcow2"`; `"auto"` (or nothing) detects it from the bytes. */
export type ImageFormatName = "raw" | "qcow2" | "auto";
/** The formats an overlay is exported to and imported from. */
export type OverlayFormat = "compact" | "qcow2";
/** What a rejected `Disk` promise carries: an `Error` with the `ErrorKind` as `code`. */
export type DiskError = Error & { code: ErrorKind };
"#;

/// The block size of the overlays the runtime (`@qemuweb/runtime`) makes.
const RUNTIME_BLOCK_SIZE: u32 = 4096;

/// Converts an error to a JS `Error` with its kind as `code` (kebab case) and `name`.
fn to_js(e: StorageError) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name(&format!("{:?}", e.kind()));
    let code = serde_json::to_value(e.kind())
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = js_sys::Reflect::set(&err, &"code".into(), &code.into());
    err.into()
}

fn promise<T: Into<JsValue>>(f: impl Future<Output = crate::Result<T>> + 'static) -> Promise {
    future_to_promise(async move { f.await.map(Into::into).map_err(to_js) })
}

fn parse_format(format: Option<String>) -> Result<Option<ImageFormat>, JsValue> {
    match format.as_deref() {
        None | Some("") | Some("auto") => Ok(None),
        Some(name) => ImageFormat::from_name(name).map(Some).ok_or_else(|| {
            to_js(StorageError::InvalidArgument(format!(
                "unknown image format {name:?}"
            )))
        }),
    }
}

fn offset(v: f64) -> crate::Result<u64> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
        Ok(v as u64)
    } else {
        Err(StorageError::InvalidArgument(format!(
            "{v} is not a byte offset"
        )))
    }
}

#[derive(Clone)]
enum Inner {
    Plain(Rc<dyn BlockDevice>),
    Cow(Rc<CowBlockDevice>),
}

impl Inner {
    fn device(&self) -> Rc<dyn BlockDevice> {
        match self {
            Inner::Plain(d) => d.clone(),
            Inner::Cow(c) => c.clone(),
        }
    }

    fn cow(&self) -> crate::Result<Rc<CowBlockDevice>> {
        match self {
            Inner::Cow(c) => Ok(c.clone()),
            Inner::Plain(_) => Err(StorageError::InvalidArgument(
                "this disk has no overlay: open it with Disk.persistent".into(),
            )),
        }
    }
}

/// A disk: an image (from a URL, a `Blob`/`File`, or memory), optionally under a
/// persistent IndexedDB overlay.
#[wasm_bindgen]
pub struct Disk {
    inner: Inner,
}

async fn open_formatted(
    dev: Box<dyn BlockDevice>,
    format: Option<ImageFormat>,
) -> crate::Result<Disk> {
    let options = OpenOptions {
        format,
        ..OpenOptions::default()
    };
    let image = open_image(dev, &options).await?;
    Ok(Disk {
        inner: Inner::Plain(Rc::from(image)),
    })
}

#[wasm_bindgen]
impl Disk {
    /// Opens the image at `url` with HTTP Range requests. `format` is `"raw"`, `"qcow2"` or
    /// omitted to detect it. Resolves to a read-only `Disk`.
    #[wasm_bindgen(js_name = openUrl, unchecked_return_type = "Promise<Disk>")]
    pub fn open_url(
        url: String,
        #[wasm_bindgen(unchecked_optional_param_type = "ImageFormatName")] format: Option<String>,
    ) -> Promise {
        let format = match parse_format(format) {
            Ok(f) => f,
            Err(e) => return Promise::reject(&e),
        };
        promise(async move {
            let dev = HttpBlockDevice::open(&url, HttpOptions::default()).await?;
            open_formatted(Box::new(dev), format).await
        })
    }

    /// Opens a `Blob` or `File` holding an image. Resolves to a read-only `Disk`.
    #[wasm_bindgen(js_name = openBlob, unchecked_return_type = "Promise<Disk>")]
    pub fn open_blob(
        blob: web_sys::Blob,
        #[wasm_bindgen(unchecked_optional_param_type = "ImageFormatName")] format: Option<String>,
    ) -> Promise {
        let format = match parse_format(format) {
            Ok(f) => f,
            Err(e) => return Promise::reject(&e),
        };
        promise(async move { open_formatted(Box::new(BlobBlockDevice::new(blob)), format).await })
    }

    /// A zero-filled, writable in-memory disk of `size` bytes.
    pub fn memory(size: f64) -> Result<Disk, JsValue> {
        let size = offset(size).map_err(to_js)? as usize;
        Ok(Disk {
            inner: Inner::Plain(Rc::new(MemoryBlockDevice::new(size))),
        })
    }

    /// Puts a persistent IndexedDB overlay (VM `vmId`, disk `diskId`) over `base`: writes go
    /// to IndexedDB and survive reloads. `blockSize` is the overlay's block size; without
    /// it, an existing overlay's own, else 4096 (the size of the overlays
    /// `@qemuweb/runtime` keeps for its VMs' disks). A different size than the stored
    /// overlay's is refused with code `invalid-argument`. With `readOnlyIfLocked`, a disk
    /// another tab holds opens read-only instead of failing with `locked`.
    #[wasm_bindgen(unchecked_return_type = "Promise<Disk>")]
    pub fn persistent(
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        #[wasm_bindgen(js_name = "diskId")] disk_id: String,
        base: &Disk,
        #[wasm_bindgen(js_name = "blockSize")] block_size: Option<u32>,
        #[wasm_bindgen(js_name = "readOnlyIfLocked")] read_only_if_locked: Option<bool>,
    ) -> Promise {
        let base = base.inner.device();
        promise(async move {
            let block_size = match block_size {
                Some(b) => b,
                None => IndexedDbOverlay::list_vm(&vm_id)
                    .await?
                    .into_iter()
                    .find(|d| d.disk_id == disk_id)
                    .map_or(RUNTIME_BLOCK_SIZE, |d| d.block_size),
            };
            let options = IndexedDbOptions {
                block_size,
                lock: if read_only_if_locked.unwrap_or(false) {
                    LockPolicy::ReadOnlyIfLocked
                } else {
                    LockPolicy::Exclusive
                },
                ..IndexedDbOptions::default()
            };
            let overlay = IndexedDbOverlay::open(&vm_id, &disk_id, options).await?;
            let cow = CowBlockDevice::new(Box::new(base), Box::new(overlay))?;
            Ok(Disk {
                inner: Inner::Cow(Rc::new(cow)),
            })
        })
    }

    /// Deletes every persistent overlay of VM `vmId`.
    #[wasm_bindgen(js_name = deleteVm, unchecked_return_type = "Promise<void>")]
    pub fn delete_vm(#[wasm_bindgen(js_name = "vmId")] vm_id: String) -> Promise {
        promise(async move {
            IndexedDbOverlay::delete_vm(&vm_id)
                .await
                .map(|()| JsValue::UNDEFINED)
        })
    }

    /// Size in bytes.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> f64 {
        self.inner.device().size() as f64
    }

    /// Whether writes are refused.
    #[wasm_bindgen(getter, js_name = readOnly)]
    pub fn read_only(&self) -> bool {
        self.inner.device().read_only()
    }

    /// Resolves to the `length` bytes at `offset`, as a `Uint8Array`.
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint8Array>")]
    pub fn read(&self, #[wasm_bindgen(js_name = "offset")] offset_: f64, length: u32) -> Promise {
        let dev = self.inner.device();
        promise(async move {
            let data = dev.read_vec(offset(offset_)?, length as usize).await?;
            Ok(Uint8Array::from(&data[..]))
        })
    }

    /// Writes `data` at `offset`.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn write(
        &self,
        #[wasm_bindgen(js_name = "offset")] offset_: f64,
        data: Vec<u8>,
    ) -> Promise {
        let dev = self.inner.device();
        promise(async move {
            dev.write_at(offset(offset_)?, &data).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Resolves once every completed write is durable.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn sync(&self) -> Promise {
        let dev = self.inner.device();
        promise(async move { dev.sync().await.map(|()| JsValue::UNDEFINED) })
    }

    /// Commits pending writes and releases the disk (and its lock).
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn close(&self) -> Promise {
        let dev = self.inner.device();
        promise(async move { dev.close().await.map(|()| JsValue::UNDEFINED) })
    }

    /// The indices of the overlay's blocks.
    #[wasm_bindgen(js_name = overlayBlocks)]
    pub fn overlay_blocks(&self) -> Result<Vec<f64>, JsValue> {
        let cow = self.inner.cow().map_err(to_js)?;
        Ok(cow
            .overlay()
            .block_indices()
            .into_iter()
            .map(|i| i as f64)
            .collect())
    }

    /// Exports the overlay: `"compact"` (QemuWeb's checksummed archive) or `"qcow2"` (a
    /// qcow2 overlay naming `backingName` of `backingFormat` as its backing file).
    #[wasm_bindgen(js_name = exportOverlay, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn export_overlay(
        &self,
        #[wasm_bindgen(unchecked_param_type = "OverlayFormat")] format: String,
        #[wasm_bindgen(js_name = "backingName")] backing_name: Option<String>,
        #[wasm_bindgen(
            js_name = "backingFormat",
            unchecked_optional_param_type = "\"raw\" | \"qcow2\""
        )]
        backing_format: Option<String>,
    ) -> Promise {
        let cow = self.inner.cow();
        promise(async move {
            let cow = cow?;
            let mut out = Vec::new();
            match format.as_str() {
                "compact" => compact::export(&cow, &mut out).await?,
                "qcow2" => {
                    let backing = backing_name.map(|name| qcow2::BackingFile {
                        name,
                        format: backing_format.unwrap_or_else(|| "qcow2".into()),
                    });
                    let options = qcow2::Qcow2ExportOptions {
                        backing,
                        cluster_size: None,
                    };
                    qcow2::export(&cow, &options, &mut out).await?;
                }
                other => {
                    return Err(StorageError::InvalidArgument(format!(
                        "unknown export format {other:?} (use \"compact\" or \"qcow2\")"
                    )))
                }
            }
            Ok(Uint8Array::from(&out[..]))
        })
    }

    /// Imports an overlay into this disk's overlay: `"compact"` (the default; verified
    /// before anything is written) or `"qcow2"` (an overlay made by `qemu-img create -b`,
    /// its own clusters only). Resolves to the number of ranges written.
    #[wasm_bindgen(js_name = importOverlay, unchecked_return_type = "Promise<number>")]
    pub fn import_overlay(
        &self,
        data: Vec<u8>,
        #[wasm_bindgen(unchecked_optional_param_type = "OverlayFormat")] format: Option<String>,
    ) -> Promise {
        let cow = self.inner.cow();
        promise(async move {
            let cow = cow?;
            let summary = match format.as_deref().unwrap_or("compact") {
                "compact" => compact::import(&data, &cow).await?,
                "qcow2" => {
                    let image = Box::new(MemoryBlockDevice::read_only(data));
                    qcow2::import(image, &cow).await?
                }
                other => {
                    return Err(StorageError::InvalidArgument(format!(
                        "unknown overlay format {other:?} (use \"compact\" or \"qcow2\")"
                    )))
                }
            };
            Ok(JsValue::from(summary.ranges as f64))
        })
    }
}
