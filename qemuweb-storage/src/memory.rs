//! [`MemoryBlockDevice`]: a disk held in a `Vec<u8>`.

use crate::device::{check_range, BlockDevice, DEFAULT_BLOCK_SIZE};
use crate::error::{Result, StorageError};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A disk held entirely in memory.
///
/// ```
/// use qemuweb_storage::{BlockDevice, MemoryBlockDevice};
/// # futures::executor::block_on(async {
/// let disk = MemoryBlockDevice::from_vec(b"hello world".to_vec());
/// assert_eq!(disk.read_vec(6, 5).await.unwrap(), b"world");
/// # });
/// ```
#[derive(Debug)]
pub struct MemoryBlockDevice {
    data: Mutex<Vec<u8>>,
    block_size: u32,
    read_only: bool,
    closed: AtomicBool,
}

impl MemoryBlockDevice {
    /// A zero-filled writable disk of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self::from_vec(vec![0; size])
    }

    /// A writable disk holding `data`.
    pub fn from_vec(data: Vec<u8>) -> Self {
        Self {
            data: Mutex::new(data),
            block_size: DEFAULT_BLOCK_SIZE,
            read_only: false,
            closed: AtomicBool::new(false),
        }
    }

    /// A read-only disk holding `data`.
    pub fn read_only(data: Vec<u8>) -> Self {
        Self {
            read_only: true,
            ..Self::from_vec(data)
        }
    }

    /// Sets the block size the device reports (a power of two, at least 512).
    pub fn with_block_size(mut self, block_size: u32) -> Result<Self> {
        crate::cow::check_block_size(block_size)?;
        self.block_size = block_size;
        Ok(self)
    }

    /// A copy of the whole contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock cannot leave the bytes half-updated in a way
        // that matters more than losing the device, so recover the guard.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(StorageError::Closed)
        } else {
            Ok(())
        }
    }
}

#[async_trait(?Send)]
impl BlockDevice for MemoryBlockDevice {
    fn size(&self) -> u64 {
        self.lock().len() as u64
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_open()?;
        let data = self.lock();
        check_range(data.len() as u64, offset, buf.len())?;
        let start = offset as usize;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }

    async fn write_at(&self, offset: u64, src: &[u8]) -> Result<()> {
        self.check_open()?;
        if self.read_only {
            return Err(StorageError::ReadOnly("in-memory device".into()));
        }
        let mut data = self.lock();
        check_range(data.len() as u64, offset, src.len())?;
        let start = offset as usize;
        data[start..start + src.len()].copy_from_slice(src);
        Ok(())
    }

    async fn sync(&self) -> Result<()> {
        self.check_open()
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use futures::executor::block_on;

    #[test]
    fn read_write_bounds_and_read_only() {
        block_on(async {
            let d = MemoryBlockDevice::new(1024);
            d.write_at(1020, b"abcd").await.unwrap();
            assert_eq!(d.read_vec(1020, 4).await.unwrap(), b"abcd");
            assert_eq!(
                d.write_at(1021, b"abcd").await.unwrap_err().kind(),
                ErrorKind::OutOfRange
            );
            let r = MemoryBlockDevice::read_only(vec![7; 512]);
            assert!(r.read_only());
            assert_eq!(
                r.write_at(0, b"x").await.unwrap_err().kind(),
                ErrorKind::ReadOnly
            );
            assert_eq!(r.read_vec(511, 1).await.unwrap(), [7]);
        });
    }

    #[test]
    fn block_size_validation() {
        assert!(MemoryBlockDevice::new(0).with_block_size(4096).is_ok());
        for bad in [0, 256, 1000] {
            let e = MemoryBlockDevice::new(0).with_block_size(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        }
    }
}
