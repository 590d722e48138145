//! Taking a VM's changes away, and bringing them back.
//!
//! - [`compact`]: QemuWeb's own versioned, checksummed archive of an overlay's blocks.
//! - [`qcow2`]: a standard qcow2 overlay whose backing file is the base image, for
//!   `qemu-img` and QEMU on any machine.
//!
//! Exports are written to an [`ExportSink`]: a `Vec<u8>` (in a browser, to hand to a
//! `Blob`), or natively a `std::fs::File`.

pub mod compact;
pub mod qcow2;

use crate::error::{Result, StorageError};
use async_trait::async_trait;

/// Where an export's bytes go, in order.
#[async_trait(?Send)]
pub trait ExportSink {
    /// Appends `data`.
    async fn write_all(&mut self, data: &[u8]) -> Result<()>;
}

#[async_trait(?Send)]
impl ExportSink for Vec<u8> {
    async fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.extend_from_slice(data);
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[async_trait(?Send)]
impl ExportSink for std::fs::File {
    async fn write_all(&mut self, data: &[u8]) -> Result<()> {
        std::io::Write::write_all(self, data).map_err(|e| StorageError::io("writing the export", e))
    }
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportSummary {
    /// Number of bytes of guest data written into the overlay.
    pub bytes: u64,
    /// Number of separate ranges (blocks or clusters) written.
    pub ranges: u64,
}

/// Fails unless the disk sizes agree.
pub(crate) fn check_same_size(what: &str, theirs: u64, ours: u64) -> Result<()> {
    if theirs != ours {
        return Err(StorageError::InvalidArgument(format!(
            "{what} is for a disk of {theirs} bytes, this disk has {ours}"
        )));
    }
    Ok(())
}
