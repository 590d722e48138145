//! [`BlobBlockDevice`]: a browser `Blob` or `File` as a read-only disk.

use crate::device::{check_range, BlockDevice};
use crate::error::{Result, StorageError};
use async_trait::async_trait;
use js_sys::Uint8Array;
use std::cell::Cell;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

/// A browser `Blob` (a `File` from an `<input type=file>` or drag and drop is one) as a
/// read-only [`BlockDevice`]. Each read slices the blob and reads only that slice.
///
/// ```no_run
/// use qemuweb_storage::{BlobBlockDevice, BlockDevice};
/// # async fn demo(file: web_sys::Blob) {
/// // `file` may be a `web_sys::File`, converted with `.into()`.
/// let disk = BlobBlockDevice::new(file);
/// let header = disk.read_vec(0, 512).await.unwrap();
/// # let _ = header;
/// # }
/// ```
#[derive(Debug)]
pub struct BlobBlockDevice {
    blob: Blob,
    size: u64,
    closed: Cell<bool>,
}

fn browser(what: &str, v: JsValue) -> StorageError {
    let message = v
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| v.as_string())
        .unwrap_or_else(|| format!("{v:?}"));
    StorageError::Browser(format!("{what}: {message}"))
}

impl BlobBlockDevice {
    /// A device reading `blob`.
    pub fn new(blob: Blob) -> Self {
        // Blob sizes are exact integers well below 2^53.
        let size = blob.size() as u64;
        Self {
            blob,
            size,
            closed: Cell::new(false),
        }
    }

    /// The blob read.
    pub fn blob(&self) -> &Blob {
        &self.blob
    }
}

#[async_trait(?Send)]
impl BlockDevice for BlobBlockDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.closed.get() {
            return Err(StorageError::Closed);
        }
        check_range(self.size, offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let slice = self
            .blob
            .slice_with_f64_and_f64(offset as f64, end as f64)
            .map_err(|e| browser("Blob.slice", e))?;
        let bytes = JsFuture::from(slice.array_buffer())
            .await
            .map_err(|e| browser("Blob.arrayBuffer", e))?;
        let bytes = Uint8Array::new(&bytes);
        if bytes.length() as usize != buf.len() {
            return Err(StorageError::Browser(format!(
                "the blob gave {} bytes for a {}-byte slice (was the file changed?)",
                bytes.length(),
                buf.len()
            )));
        }
        bytes.copy_to(buf);
        Ok(())
    }

    async fn write_at(&self, _offset: u64, _data: &[u8]) -> Result<()> {
        if self.closed.get() {
            return Err(StorageError::Closed);
        }
        Err(StorageError::ReadOnly("a browser Blob is read-only".into()))
    }

    async fn sync(&self) -> Result<()> {
        if self.closed.get() {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.closed.set(true);
        Ok(())
    }
}
