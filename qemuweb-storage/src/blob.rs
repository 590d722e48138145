//! [`BlobBlockDevice`]: a browser `Blob` or `File` as a read-only disk.

use crate::device::{check_range, BlockDevice};
use crate::error::{Result, StorageError};
use crate::Progress;
use async_trait::async_trait;
use js_sys::Uint8Array;
use std::cell::{Cell, RefCell};
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
pub struct BlobBlockDevice {
    blob: Blob,
    size: u64,
    closed: Cell<bool>,
    progress: Option<ReadProgress>,
}

impl std::fmt::Debug for BlobBlockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobBlockDevice")
            .field("size", &self.size)
            .field("closed", &self.closed.get())
            .finish()
    }
}

/// The size of the pieces [`ReadProgress`] counts.
const PROGRESS_PIECE: u64 = 64 * 1024;

/// Which pieces of a blob were read, for progress reports.
struct ReadProgress {
    /// One bit per [`PROGRESS_PIECE`] bytes.
    seen: RefCell<Vec<u64>>,
    loaded: Cell<u64>,
    report: Box<dyn Fn(Progress)>,
}

impl ReadProgress {
    /// Marks `offset..offset + len` of a `size`-byte blob as read; reports a new total.
    fn mark(&self, size: u64, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let mut added = 0;
        let mut seen = self.seen.borrow_mut();
        for piece in offset / PROGRESS_PIECE..=(offset + len - 1) / PROGRESS_PIECE {
            let (word, bit) = ((piece / 64) as usize, piece % 64);
            if let Some(w) = seen.get_mut(word) {
                if *w & (1 << bit) == 0 {
                    *w |= 1 << bit;
                    let start = piece * PROGRESS_PIECE;
                    added += (start + PROGRESS_PIECE).min(size) - start;
                }
            }
        }
        drop(seen);
        if added > 0 {
            let loaded = self.loaded.get() + added;
            self.loaded.set(loaded);
            (self.report)(Progress {
                bytes_fetched: loaded,
                total: size,
            });
        }
    }
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
            progress: None,
        }
    }

    /// A device reading `blob` that reports how much of it was read: `report` hears the
    /// bytes of the distinct 64 KiB pieces read so far (rereads count once) and the blob's
    /// size, each time that grows.
    pub fn with_progress(blob: Blob, report: impl Fn(Progress) + 'static) -> Self {
        let mut dev = Self::new(blob);
        let words = dev.size.div_ceil(PROGRESS_PIECE).div_ceil(64) as usize;
        dev.progress = Some(ReadProgress {
            seen: RefCell::new(vec![0; words]),
            loaded: Cell::new(0),
            report: Box::new(report),
        });
        dev
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
        if let Some(p) = &self.progress {
            p.mark(self.size, offset, buf.len() as u64);
        }
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
