//! From a disk input to the device stack an engine reads and writes (wasm32 only):
//!
//! ```text
//!   URL  -> HttpBlockDevice (Range requests, cache, read-ahead, progress) ┐
//!   File -> BlobBlockDevice (progress)                                    ┴-> open_image (raw | qcow2)
//!        -> CowBlockDevice over IndexedDbOverlay (vmId, diskId)   (writable disks, persistence `indexeddb`)
//!        -> CowBlockDevice over MemoryOverlay                     (read-only disks, or persistence `memory`:
//!                                                                  writes dropped at stop)
//! ```

use crate::engine::PlannedDisk;
use crate::error::{Result, RuntimeError};
use crate::protocol::Persistence;
use crate::snapshot::snapshot_error;
use qemuweb_config::ImageSource;
use qemuweb_storage::format::{detect_format, open_image, ImageFormat, OpenOptions};
use qemuweb_storage::read_cache::ReadCache;
use qemuweb_storage::snapshot::{DiskPoint, SnapshotHeader};
use qemuweb_storage::{
    BlobBlockDevice, BlockDevice, CowBlockDevice, ErrorKind, HttpBlockDevice, HttpOptions,
    IndexedDbOptions, IndexedDbOverlay, MemoryOverlay, Progress, ResumePoint, StorageError,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

pub use crate::protocol::OVERLAY_BLOCK_SIZE;

/// One disk, ready for an engine.
pub struct DiskStack {
    /// `disk0`, `disk1`, ...
    pub id: String,
    /// The top of the stack, as the guest sees the disk.
    pub cow: Rc<CowBlockDevice>,
    /// The image format found.
    pub format: ImageFormat,
    /// The last path segment of the image's URL or file name (for qcow2 exports).
    pub name: String,
    /// Whether the overlay persists (IndexedDB) or is dropped at stop (read-only disks).
    pub persistent: bool,
    /// The HTTP device at the bottom, for URL images.
    pub http: Option<Rc<HttpBlockDevice>>,
    /// The base image's identity (see `base_identity`), recorded in snapshots.
    pub base: String,
}

/// A disk opened on a snapshot's overlay point (see `open_disk`).
#[derive(Debug, Clone, Copy)]
pub struct DiskResume<'a> {
    /// The snapshot.
    pub snapshot: &'a SnapshotHeader,
    /// This disk's point in it.
    pub point: &'a DiskPoint,
}

impl std::fmt::Debug for DiskStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStack")
            .field("id", &self.id)
            .field("size", &self.cow.size())
            .field("format", &self.format)
            .field("persistent", &self.persistent)
            .finish()
    }
}

impl DiskStack {
    /// Makes every write durable (a no-op for a read-only disk's memory overlay).
    pub async fn sync(&self) -> Result<()> {
        self.cow
            .sync()
            .await
            .map_err(|e| RuntimeError::storage(&self.id, e))
    }

    /// After opening on a snapshot's point: `running` lets what the disk held before go
    /// (unless a snapshot keeps it); otherwise it comes back. A no-op for other disks.
    pub async fn settle_resume(&self, running: bool) -> Result<()> {
        self.cow
            .overlay()
            .settle_resume(running)
            .await
            .map_err(|e| RuntimeError::storage(&self.id, e))
    }

    /// Closes the stack, releasing the overlay's lock.
    pub async fn close(&self) -> Result<()> {
        let overlay = self.cow.overlay().close().await;
        let base = self.cow.base().close().await;
        overlay
            .and(base)
            .map_err(|e| RuntimeError::storage(&self.id, e))
    }
}

/// The files a page passed beside `start`, by the name inputs use for them.
pub type FileMap = HashMap<String, web_sys::Blob>;

fn last_segment(location: &str) -> String {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("disk")
        .to_string()
}

thread_local! {
    /// The persistent read cache URL images of this worker use (see [`use_read_cache`]).
    static READ_CACHE: RefCell<Option<Rc<dyn ReadCache>>> = const { RefCell::new(None) };
}

/// Makes every URL image this worker opens from now on ([`open_source`]) keep its
/// fetched chunks in `cache` (or in nothing). A worker hosts one VM, so its start sets it.
pub fn use_read_cache(cache: Option<Rc<dyn ReadCache>>) {
    READ_CACHE.with(|c| *c.borrow_mut() = cache);
}

/// Opens the bottom device for `source`; `on_progress` hears how much of the file was
/// read (downloaded, for a URL). URL images use the worker's read cache
/// ([`use_read_cache`]).
pub async fn open_source(
    what: &str,
    source: &ImageSource,
    files: &FileMap,
    http: HttpOptions,
    on_progress: impl Fn(Progress) + 'static,
) -> Result<(Box<dyn BlockDevice>, Option<Rc<HttpBlockDevice>>)> {
    match source {
        ImageSource::Url { url } => {
            let mut http = http.on_progress(on_progress);
            if let Some(cache) = READ_CACHE.with(|c| c.borrow().clone()) {
                http = http.read_cache(cache);
            }
            let dev = HttpBlockDevice::open(url, http)
                .await
                .map_err(|e| RuntimeError::storage(what, e))?;
            let dev = Rc::new(dev);
            Ok((Box::new(dev.clone()), Some(dev)))
        }
        ImageSource::File { path } => {
            let blob = files.get(path).ok_or_else(|| {
                RuntimeError::InvalidInputs(format!(
                    "{what}: the page passed no File or Blob named {path:?}"
                ))
            })?;
            let dev = BlobBlockDevice::with_progress(blob.clone(), on_progress);
            Ok((Box::new(dev), None))
        }
    }
}

/// The identity of a disk's base image, stored beside its persistent overlay so the
/// overlay is never laid over a different image: format and guest-visible size, plus the
/// HTTP validator (else the URL) or the File's name, size and `lastModified`.
fn base_identity(
    source: &ImageSource,
    files: &FileMap,
    format: ImageFormat,
    size: u64,
    http: Option<&HttpBlockDevice>,
) -> String {
    let origin = match (source, http) {
        (_, Some(dev)) => match dev.validator() {
            Some(v) => format!("validator {v}"),
            None => format!("url {}", dev.url()),
        },
        (ImageSource::Url { url }, None) => format!("url {url}"),
        (ImageSource::File { path }, None) => {
            let blob = files.get(path);
            let prop = |k: &str| {
                blob.and_then(|b| js_sys::Reflect::get(b, &k.into()).ok())
                    .filter(|v| !v.is_undefined())
                    .map(|v| {
                        v.as_string()
                            .unwrap_or_else(|| format!("{}", v.as_f64().unwrap_or(0.0)))
                    })
                    .unwrap_or_default()
            };
            let len = blob.map(|b| b.size()).unwrap_or(0.0);
            format!(
                "file {} bytes {len} modified {}",
                prop("name"),
                prop("lastModified")
            )
        }
    };
    format!("{format} {size} bytes, {origin}")
}

/// Builds the stack of `disk` of VM `vm_id`. `on_progress` hears how much of the image
/// file was read (downloaded, for a URL).
///
/// With `resume`, the disk opens as it was when the snapshot was saved: the image must be
/// the one the snapshot names (its identity and size; else
/// [`ErrorCode::SnapshotMismatch`](crate::ErrorCode::SnapshotMismatch) and nothing is
/// changed) and the overlay opens on the snapshot's point (settled with
/// `Overlay::settle_resume` once the engine runs or failed).
pub async fn open_disk(
    vm_id: &str,
    disk: &PlannedDisk,
    files: &FileMap,
    chunk_size: u32,
    persistence: Persistence,
    resume: Option<DiskResume<'_>>,
    on_progress: impl Fn(Progress) + 'static,
) -> Result<DiskStack> {
    let id = disk.id.as_str();
    let Image {
        image,
        format,
        base,
        http,
        ..
    } = open_disk_image(disk, files, chunk_size, on_progress).await?;
    let in_memory = disk.read_only || persistence == Persistence::Memory;
    let resume_point = match resume {
        Some(r) => check_resume(id, r, &base, image.size(), in_memory)?,
        None => None,
    };
    let (overlay, persistent): (Box<dyn qemuweb_storage::Overlay>, bool) = if in_memory {
        let o = MemoryOverlay::new(OVERLAY_BLOCK_SIZE).map_err(|e| RuntimeError::storage(id, e))?;
        (Box::new(o), false)
    } else {
        let o = IndexedDbOverlay::open(
            vm_id,
            id,
            IndexedDbOptions {
                block_size: OVERLAY_BLOCK_SIZE,
                base: Some(base.clone()),
                resume: resume_point,
                ..IndexedDbOptions::default()
            },
        )
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound if resume.is_some() => snapshot_error(e),
            _ => RuntimeError::storage(id, e),
        })?;
        (Box::new(o), true)
    };
    let cow = CowBlockDevice::new(image, overlay).map_err(|e| RuntimeError::storage(id, e))?;
    Ok(DiskStack {
        id: id.to_string(),
        cow: Rc::new(cow),
        format,
        name: last_segment(disk.source.location()),
        persistent,
        http,
        base,
    })
}

/// A disk's image, opened without an overlay.
pub struct Image {
    /// The image as the guest sees it (qcow2 decoded).
    pub image: Box<dyn BlockDevice>,
    /// Its format.
    pub format: ImageFormat,
    /// Its identity (see `base_identity`).
    pub base: String,
    /// The HTTP device at the bottom, for URL images.
    pub http: Option<Rc<HttpBlockDevice>>,
    /// The size of the image file (not the guest-visible size).
    pub file_size: u64,
}

/// Opens the image of `disk` (format detected, qcow2 decoded) and names its identity.
pub async fn open_disk_image(
    disk: &PlannedDisk,
    files: &FileMap,
    chunk_size: u32,
    on_progress: impl Fn(Progress) + 'static,
) -> Result<Image> {
    let id = disk.id.as_str();
    let options = HttpOptions::default().chunk_size(chunk_size.clamp(4096, 1 << 20));
    let (bottom, http) = open_source(id, &disk.source, files, options, on_progress).await?;
    let file_size = bottom.size();
    let format = detect_format(&*bottom)
        .await
        .map_err(|e| RuntimeError::storage(id, e))?;
    let image = open_image(
        bottom,
        &OpenOptions {
            format: Some(format),
            ..OpenOptions::default()
        },
    )
    .await
    .map_err(|e| RuntimeError::storage(id, e))?;
    let base = base_identity(&disk.source, files, format, image.size(), http.as_deref());
    Ok(Image {
        image,
        format,
        base,
        http,
        file_size,
    })
}

/// Checks that disk `id` (its image's identity `base` and size) is the one snapshot
/// point `r` was saved over, and that the disk can hold the point; returns the overlay's
/// resume point (`None` for a point of no blocks on a disk kept in memory).
fn check_resume(
    id: &str,
    r: DiskResume<'_>,
    base: &str,
    size: u64,
    in_memory: bool,
) -> Result<Option<ResumePoint>> {
    let subject = r.snapshot.subject();
    if r.point.base != base {
        return Err(snapshot_error(StorageError::mismatch(
            subject,
            format!("the base image of {id}"),
            &r.point.base,
            base,
        )));
    }
    if r.point.size != size {
        return Err(snapshot_error(StorageError::mismatch(
            subject,
            format!("the size of {id}"),
            r.point.size.to_string(),
            size.to_string(),
        )));
    }
    match (in_memory, r.point.point) {
        (true, 0) => Ok(None),
        (true, _) => Err(RuntimeError::Unsupported(format!(
            "{subject} holds writes of {id}; it resumes only with the disk writable and \
             persistence \"indexeddb\""
        ))),
        (false, 0) => Err(RuntimeError::Unsupported(format!(
            "{subject} was saved with {id} read-only or in memory; resume it the same way"
        ))),
        (false, point) => Ok(Some(ResumePoint {
            snapshot: r.snapshot.id.clone(),
            point,
        })),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::last_segment("http://h/a/b.qcow2?x=1"), "b.qcow2");
        assert_eq!(super::last_segment("file.img"), "file.img");
        assert_eq!(super::last_segment("http://h/"), "h");
    }
}
