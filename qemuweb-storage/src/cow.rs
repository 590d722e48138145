//! Copy-on-write: [`CowBlockDevice`] puts a writable [`Overlay`] over a read-only base.
//!
//! Reads take each block from the overlay when it holds that block and from the base
//! otherwise; writes always go to the overlay. A write that covers only part of a block
//! reads the rest of the block first (from the overlay, or else the base) so the overlay
//! always holds whole blocks.

use crate::device::{check_range, BlockDevice};
use crate::error::{Result, StorageError};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Sparse storage of whole blocks: the writable half of a [`CowBlockDevice`].
///
/// An overlay keeps an in-memory index of the blocks it holds, so [`contains`](Self::contains)
/// answers without I/O; only block contents are read from its backing store.
#[async_trait(?Send)]
pub trait Overlay {
    /// Size of every block, in bytes (a power of two, at least 512).
    fn block_size(&self) -> u32;

    /// Whether writes are refused (for example another tab holds the disk).
    fn read_only(&self) -> bool {
        false
    }

    /// Whether the overlay holds block `index`.
    fn contains(&self, index: u64) -> bool;

    /// The indices of every block held, in ascending order.
    fn block_indices(&self) -> Vec<u64>;

    /// Copies block `index` into `buf` (`block_size` bytes). Returns `false`, leaving `buf`
    /// untouched, when the overlay does not hold it.
    async fn read_block(&self, index: u64, buf: &mut [u8]) -> Result<bool>;

    /// Reads the consecutive blocks `first, first + 1, ...` that fill `buf` (a whole number
    /// of blocks), every one of which the overlay holds (see [`contains`](Self::contains)).
    ///
    /// The default reads them one at a time; overlays with a cost per request (IndexedDB)
    /// read the run at once.
    async fn read_run(&self, first: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.block_size() as usize;
        for (i, block) in buf.chunks_exact_mut(bs).enumerate() {
            let index = first + i as u64;
            if !self.read_block(index, block).await? {
                return Err(StorageError::NotFound(format!(
                    "overlay block {index} is not held"
                )));
            }
        }
        Ok(())
    }

    /// Stores `data` (`block_size` bytes) as block `index`, replacing any earlier content.
    /// The block is visible to the next read at once; it is durable after [`sync`](Self::sync).
    async fn write_block(&self, index: u64, data: &[u8]) -> Result<()>;

    /// Makes every completed write durable.
    async fn sync(&self) -> Result<()>;

    /// Forgets every block (the disk returns to its base).
    async fn clear(&self) -> Result<()>;

    /// Keeps the overlay's current content for snapshot `snapshot` until the snapshot is
    /// deleted, and returns its point (see
    /// [`Lineage`](crate::snapshot::Lineage)); `Ok(None)` from overlays that keep nothing
    /// beyond the page (the default).
    async fn pin(&self, snapshot: &str) -> Result<Option<u32>> {
        let _ = snapshot;
        Ok(None)
    }

    /// After opening on a snapshot's point: `running` lets the replaced content go,
    /// otherwise it comes back (see `IndexedDbOverlay::settle_resume`). The default does
    /// nothing.
    async fn settle_resume(&self, running: bool) -> Result<()> {
        let _ = running;
        Ok(())
    }

    /// Releases the overlay's resources.
    async fn close(&self) -> Result<()>;
}

/// An [`Overlay`] held in memory; it lasts as long as the process (or page).
///
/// ```
/// use qemuweb_storage::{MemoryOverlay, Overlay};
/// # futures::executor::block_on(async {
/// let overlay = MemoryOverlay::new(4096).unwrap();
/// overlay.write_block(7, &[1; 4096]).await.unwrap();
/// assert!(overlay.contains(7));
/// assert_eq!(overlay.block_indices(), [7]);
/// # });
/// ```
#[derive(Debug)]
pub struct MemoryOverlay {
    block_size: u32,
    blocks: Mutex<BTreeMap<u64, Box<[u8]>>>,
}

impl MemoryOverlay {
    /// An empty overlay of `block_size`-byte blocks (a power of two, at least 512).
    pub fn new(block_size: u32) -> Result<Self> {
        check_block_size(block_size)?;
        Ok(Self {
            block_size,
            blocks: Mutex::new(BTreeMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Box<[u8]>>> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Checks that a buffer of `len` bytes is exactly one overlay block of `block_size`.
pub(crate) fn check_block_len(block_size: u32, len: usize) -> Result<()> {
    if len != block_size as usize {
        return Err(StorageError::InvalidArgument(format!(
            "overlay blocks are {block_size} bytes, got {len}"
        )));
    }
    Ok(())
}

/// Checks that `block_size` is a power of two of at least 512 bytes.
pub(crate) fn check_block_size(block_size: u32) -> Result<()> {
    if block_size < 512 || !block_size.is_power_of_two() {
        return Err(StorageError::InvalidArgument(format!(
            "block size {block_size} is not a power of two of at least 512"
        )));
    }
    Ok(())
}

#[async_trait(?Send)]
impl Overlay for MemoryOverlay {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn contains(&self, index: u64) -> bool {
        self.lock().contains_key(&index)
    }

    fn block_indices(&self) -> Vec<u64> {
        self.lock().keys().copied().collect()
    }

    async fn read_block(&self, index: u64, buf: &mut [u8]) -> Result<bool> {
        check_block_len(self.block_size, buf.len())?;
        match self.lock().get(&index) {
            Some(block) => {
                buf.copy_from_slice(block);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn write_block(&self, index: u64, data: &[u8]) -> Result<()> {
        check_block_len(self.block_size, data.len())?;
        self.lock().insert(index, data.into());
        Ok(())
    }

    async fn sync(&self) -> Result<()> {
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        self.lock().clear();
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// A writable disk made of a read-only base device and an [`Overlay`].
///
/// Its size is the base's size and its block size the overlay's.
///
/// ```
/// use qemuweb_storage::{BlockDevice, CowBlockDevice, MemoryBlockDevice, MemoryOverlay};
/// # futures::executor::block_on(async {
/// let base = MemoryBlockDevice::read_only(vec![0x11; 8192]);
/// let cow = CowBlockDevice::new(Box::new(base), Box::new(MemoryOverlay::new(4096).unwrap())).unwrap();
/// cow.write_at(4100, b"new").await.unwrap();
/// assert_eq!(cow.read_vec(4098, 6).await.unwrap(), [0x11, 0x11, b'n', b'e', b'w', 0x11]);
/// assert_eq!(cow.overlay().block_indices(), [1]);
/// # });
/// ```
pub struct CowBlockDevice {
    base: Box<dyn BlockDevice>,
    overlay: Box<dyn Overlay>,
    size: u64,
    block_size: u32,
    /// Serialises writes so a partial-block read-modify-write never races another write.
    write_lock: async_lock::Mutex<()>,
}

impl std::fmt::Debug for CowBlockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CowBlockDevice")
            .field("size", &self.size)
            .field("block_size", &self.block_size)
            .field("overlay_blocks", &self.overlay.block_indices().len())
            .finish()
    }
}

impl CowBlockDevice {
    /// Puts `overlay` over `base`. The overlay's block size must be a multiple of the
    /// base's.
    pub fn new(base: Box<dyn BlockDevice>, overlay: Box<dyn Overlay>) -> Result<Self> {
        let block_size = overlay.block_size();
        check_block_size(block_size)?;
        if block_size % base.block_size() != 0 {
            return Err(StorageError::InvalidArgument(format!(
                "overlay block size {block_size} is not a multiple of the base's {}",
                base.block_size()
            )));
        }
        Ok(Self {
            size: base.size(),
            base,
            overlay,
            block_size,
            write_lock: async_lock::Mutex::new(()),
        })
    }

    /// The read-only base.
    pub fn base(&self) -> &dyn BlockDevice {
        &*self.base
    }

    /// The overlay holding every block written so far.
    pub fn overlay(&self) -> &dyn Overlay {
        &*self.overlay
    }

    /// Discards every write: the disk reads as its base again.
    pub async fn reset(&self) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        self.overlay.clear().await
    }

    /// Stores a whole overlay block (for imports), serialised with the guest's writes.
    pub(crate) async fn write_whole_block(&self, index: u64, data: &[u8]) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        self.overlay.write_block(index, data).await
    }

    /// Reads one whole block as the guest sees it: the overlay's copy or the base's bytes
    /// (zero-padded past the end of the device).
    pub(crate) async fn read_block(&self, index: u64, buf: &mut [u8]) -> Result<()> {
        if self.overlay.read_block(index, buf).await? {
            return Ok(());
        }
        let start = index * u64::from(self.block_size);
        let n = (self.size - start).min(buf.len() as u64) as usize;
        buf[n..].fill(0);
        self.base.read_at(start, &mut buf[..n]).await
    }
}

#[async_trait(?Send)]
impl BlockDevice for CowBlockDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read_only(&self) -> bool {
        self.overlay.read_only()
    }

    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        let bs = u64::from(self.block_size);
        let end_at = offset + buf.len() as u64;
        // The first overlay block index at or past `end_at`.
        let end_index = end_at.div_ceil(bs);
        let mut run = Vec::new();
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let index = at / bs;
            if self.overlay.contains(index) {
                // A run of blocks the overlay holds: one overlay read.
                let mut last = index + 1;
                while last < end_index && self.overlay.contains(last) {
                    last += 1;
                }
                run.resize(((last - index) * bs) as usize, 0);
                self.overlay.read_run(index, &mut run).await?;
                let within = (at % bs) as usize;
                let n = (run.len() - within).min(buf.len() - pos);
                buf[pos..pos + n].copy_from_slice(&run[within..within + n]);
                pos += n;
                continue;
            }
            // A run of blocks the overlay does not hold: one read from the base.
            let mut end_block = index + 1;
            while end_block < end_index && !self.overlay.contains(end_block) {
                end_block += 1;
            }
            let end = (end_block * bs).min(end_at);
            let n = (end - at) as usize;
            self.base.read_at(at, &mut buf[pos..pos + n]).await?;
            pos += n;
        }
        Ok(())
    }

    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        check_range(self.size, offset, data.len())?;
        if self.overlay.read_only() {
            return Err(StorageError::ReadOnly("the overlay is read-only".into()));
        }
        let _guard = self.write_lock.lock().await;
        let bs = u64::from(self.block_size);
        let mut block = vec![0u8; self.block_size as usize];
        let mut pos = 0usize;
        while pos < data.len() {
            let at = offset + pos as u64;
            let index = at / bs;
            let within = (at % bs) as usize;
            let n = (self.block_size as usize - within).min(data.len() - pos);
            if n == self.block_size as usize {
                self.overlay.write_block(index, &data[pos..pos + n]).await?;
            } else {
                self.read_block(index, &mut block).await?;
                block[within..within + n].copy_from_slice(&data[pos..pos + n]);
                self.overlay.write_block(index, &block).await?;
            }
            pos += n;
        }
        Ok(())
    }

    async fn sync(&self) -> Result<()> {
        self.overlay.sync().await
    }

    async fn close(&self) -> Result<()> {
        let overlay = self.overlay.close().await;
        let base = self.base.close().await;
        overlay.and(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, MemoryBlockDevice};
    use futures::executor::block_on;

    /// A deterministic byte pattern that differs at every offset of interest.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    fn cow(base_len: usize, block: u32) -> CowBlockDevice {
        let base = MemoryBlockDevice::read_only(pattern(base_len, 3));
        CowBlockDevice::new(Box::new(base), Box::new(MemoryOverlay::new(block).unwrap())).unwrap()
    }

    /// Random writes and reads against a plain in-memory model of the same disk.
    #[test]
    fn matches_a_flat_model_under_random_io() {
        block_on(async {
            // An odd size, so the last block is partial.
            let size = 64 * 1024 + 1536;
            let dev = cow(size, 4096);
            let mut model = pattern(size, 3);
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut next = move |bound: usize| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % bound as u64) as usize
            };
            for round in 0..400 {
                let off = next(size);
                let len = 1 + next((size - off).min(10_000));
                if round % 2 == 0 {
                    let data = pattern(len, round as u8);
                    dev.write_at(off as u64, &data).await.unwrap();
                    model[off..off + len].copy_from_slice(&data);
                } else {
                    let got = dev.read_vec(off as u64, len).await.unwrap();
                    assert_eq!(got, &model[off..off + len], "read {len} at {off}");
                }
            }
            assert_eq!(dev.read_vec(0, size).await.unwrap(), model);
            // The base was never written.
            assert_eq!(
                dev.base().read_vec(0, size).await.unwrap(),
                pattern(size, 3)
            );
        });
    }

    #[test]
    fn writes_only_touch_the_blocks_they_cover_and_reset_restores_the_base() {
        block_on(async {
            let dev = cow(16 * 1024, 1024);
            dev.write_at(1000, &[9; 100]).await.unwrap();
            assert_eq!(dev.overlay().block_indices(), [0, 1]);
            dev.write_at(4096, &[8; 1024]).await.unwrap();
            assert_eq!(dev.overlay().block_indices(), [0, 1, 4]);
            dev.reset().await.unwrap();
            assert!(dev.overlay().block_indices().is_empty());
            assert_eq!(
                dev.read_vec(0, 16 * 1024).await.unwrap(),
                pattern(16 * 1024, 3)
            );
        });
    }

    #[test]
    fn bounds_and_geometry_are_checked() {
        block_on(async {
            let dev = cow(8192, 4096);
            assert_eq!(dev.size(), 8192);
            assert_eq!(dev.block_size(), 4096);
            assert!(!dev.read_only());
            let e = dev.write_at(8190, &[0; 4]).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::OutOfRange);
            let e = MemoryOverlay::new(1000).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let base = MemoryBlockDevice::new(8192).with_block_size(4096).unwrap();
            let e =
                CowBlockDevice::new(Box::new(base), Box::new(MemoryOverlay::new(1024).unwrap()))
                    .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let o = MemoryOverlay::new(512).unwrap();
            assert_eq!(
                o.write_block(0, &[0; 100]).await.unwrap_err().kind(),
                ErrorKind::InvalidArgument
            );
        });
    }
}
