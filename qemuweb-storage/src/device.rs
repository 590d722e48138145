//! The [`BlockDevice`] trait every disk in QemuWeb is built on.

use crate::error::{Result, StorageError};
use async_trait::async_trait;

/// The default block size, in bytes, of devices that have no other preference.
pub const DEFAULT_BLOCK_SIZE: u32 = 512;

/// A fixed-size, randomly addressable disk.
///
/// The trait is object-safe and its futures are not `Send`, so the same devices work on
/// `wasm32` (where browser handles are not `Send`) and natively. Methods take `&self`:
/// a device may serve several reads at once, and devices that write keep their state
/// behind interior mutability.
///
/// Byte-range methods ([`read_at`](Self::read_at), [`write_at`](Self::write_at)) accept any
/// offset and length inside the device; block methods ([`read_blocks`](Self::read_blocks),
/// [`write_blocks`](Self::write_blocks)) take whole blocks of [`block_size`](Self::block_size).
///
/// ```
/// use qemuweb_storage::{BlockDevice, MemoryBlockDevice};
/// # futures::executor::block_on(async {
/// let disk = MemoryBlockDevice::new(4096);
/// disk.write_blocks(1, &[0xab; 512]).await.unwrap();
/// let mut sector = vec![0u8; 512];
/// disk.read_blocks(1, &mut sector).await.unwrap();
/// assert!(sector.iter().all(|&b| b == 0xab));
/// assert_eq!(disk.read_vec(510, 4).await.unwrap(), [0, 0, 0xab, 0xab]);
/// # });
/// ```
#[async_trait(?Send)]
pub trait BlockDevice {
    /// Size of the device in bytes.
    fn size(&self) -> u64;

    /// Size of one block in bytes (a power of two, at least 512).
    fn block_size(&self) -> u32 {
        DEFAULT_BLOCK_SIZE
    }

    /// Whether writes are refused.
    fn read_only(&self) -> bool;

    /// Fills `buf` with the bytes starting at `offset`.
    ///
    /// Fails with [`ErrorKind::OutOfRange`](crate::ErrorKind::OutOfRange) if the range
    /// does not lie inside the device.
    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Writes `data` at `offset`.
    ///
    /// Fails with [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) on a read-only
    /// device and [`ErrorKind::OutOfRange`](crate::ErrorKind::OutOfRange) past its end.
    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<()>;

    /// Makes every completed write durable.
    async fn sync(&self) -> Result<()>;

    /// Releases the device's resources; later calls fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed).
    async fn close(&self) -> Result<()>;

    /// Reads whole blocks starting at block `first_block`; `buf.len()` must be a multiple
    /// of the block size.
    async fn read_blocks(&self, first_block: u64, buf: &mut [u8]) -> Result<()> {
        let offset = block_offset(self.block_size(), first_block, buf.len())?;
        self.read_at(offset, buf).await
    }

    /// Writes whole blocks starting at block `first_block`; `data.len()` must be a
    /// multiple of the block size.
    async fn write_blocks(&self, first_block: u64, data: &[u8]) -> Result<()> {
        let offset = block_offset(self.block_size(), first_block, data.len())?;
        self.write_at(offset, data).await
    }

    /// Reads `len` bytes at `offset` into a new vector.
    async fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_at(offset, &mut buf).await?;
        Ok(buf)
    }
}

/// The byte offset of block `first_block`, after checking that `len` is whole blocks.
fn block_offset(block_size: u32, first_block: u64, len: usize) -> Result<u64> {
    let bs = u64::from(block_size);
    if len as u64 % bs != 0 {
        return Err(StorageError::InvalidArgument(format!(
            "{len} bytes is not a whole number of {bs}-byte blocks"
        )));
    }
    first_block.checked_mul(bs).ok_or_else(|| {
        StorageError::InvalidArgument(format!("block index {first_block} overflows"))
    })
}

/// Checks that `len` bytes at `offset` lie inside a device of `size` bytes.
///
/// ```
/// use qemuweb_storage::check_range;
/// assert!(check_range(100, 90, 10).is_ok());
/// assert!(check_range(100, 91, 10).is_err());
/// assert!(check_range(100, u64::MAX, 2).is_err());
/// ```
pub fn check_range(size: u64, offset: u64, len: usize) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(StorageError::OutOfRange {
            offset,
            len: len as u64,
            size,
        }),
    }
}

macro_rules! forward_block_device {
    ($($ptr:ident)::+) => {
        #[async_trait(?Send)]
        impl<T: BlockDevice + ?Sized> BlockDevice for $($ptr)::+<T> {
            fn size(&self) -> u64 {
                (**self).size()
            }
            fn block_size(&self) -> u32 {
                (**self).block_size()
            }
            fn read_only(&self) -> bool {
                (**self).read_only()
            }
            async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
                (**self).read_at(offset, buf).await
            }
            async fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
                (**self).write_at(offset, data).await
            }
            async fn sync(&self) -> Result<()> {
                (**self).sync().await
            }
            async fn close(&self) -> Result<()> {
                (**self).close().await
            }
        }
    };
}

forward_block_device!(Box);
forward_block_device!(std::rc::Rc);
forward_block_device!(std::sync::Arc);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, MemoryBlockDevice};
    use futures::executor::block_on;

    #[test]
    fn block_methods_check_alignment() {
        block_on(async {
            let d = MemoryBlockDevice::new(2048);
            let e = d.write_blocks(0, &[1u8; 100]).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let e = d.read_blocks(u64::MAX, &mut [0u8; 512]).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let e = d.read_blocks(4, &mut [0u8; 512]).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::OutOfRange);
        });
    }

    #[test]
    fn boxed_devices_forward() {
        block_on(async {
            let d: Box<dyn BlockDevice> = Box::new(MemoryBlockDevice::new(1024));
            d.write_at(3, b"abc").await.unwrap();
            assert_eq!(d.read_vec(2, 5).await.unwrap(), b"\0abc\0");
            assert_eq!(d.size(), 1024);
            d.close().await.unwrap();
            assert_eq!(
                d.read_vec(0, 1).await.unwrap_err().kind(),
                ErrorKind::Closed
            );
        });
    }
}
