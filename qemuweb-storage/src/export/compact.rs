//! QemuWeb's compact overlay archive: the changed blocks of one disk, versioned and
//! checksummed.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `QWOVERLY` |
//! | 4 | format version, `1` |
//! | 4 | block size in bytes |
//! | 8 | disk size in bytes |
//! | 8 | number of blocks `n` |
//! | `n` × (8 + block size) | block index, then the block's bytes; indices strictly ascending |
//! | 32 | SHA-256 of everything before it |
//!
//! An import checks the whole archive (length, version, geometry, ordering, checksum)
//! before it writes a single block, so a damaged archive changes nothing.

use super::{check_same_size, ExportSink, ImportSummary};
use crate::cow::CowBlockDevice;
use crate::device::BlockDevice;
use crate::error::{Result, StorageError};
use sha2::{Digest, Sha256};

/// The first eight bytes of every archive.
pub const MAGIC: [u8; 8] = *b"QWOVERLY";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 32;
const DIGEST_LEN: usize = 32;

/// Writes the overlay of `disk` to `sink` as a compact archive.
///
/// ```
/// use qemuweb_storage::export::compact;
/// use qemuweb_storage::{BlockDevice, CowBlockDevice, MemoryBlockDevice, MemoryOverlay};
/// # futures::executor::block_on(async {
/// let base = || Box::new(MemoryBlockDevice::read_only(vec![0; 1 << 16]));
/// let overlay = || Box::new(MemoryOverlay::new(4096).unwrap());
/// let vm = CowBlockDevice::new(base(), overlay()).unwrap();
/// vm.write_at(8192, b"saved").await.unwrap();
///
/// let mut archive = Vec::new();
/// compact::export(&vm, &mut archive).await.unwrap();
///
/// let elsewhere = CowBlockDevice::new(base(), overlay()).unwrap();
/// compact::import(&archive, &elsewhere).await.unwrap();
/// assert_eq!(elsewhere.read_vec(8192, 5).await.unwrap(), b"saved");
/// # });
/// ```
pub async fn export(disk: &CowBlockDevice, sink: &mut dyn ExportSink) -> Result<()> {
    let overlay = disk.overlay();
    let indices = overlay.block_indices();
    let bs = overlay.block_size();
    let mut hash = Sha256::new();
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&bs.to_le_bytes());
    header.extend_from_slice(&disk.size().to_le_bytes());
    header.extend_from_slice(&(indices.len() as u64).to_le_bytes());
    hash.update(&header);
    sink.write_all(&header).await?;
    let mut record = vec![0u8; 8 + bs as usize];
    for index in indices {
        record[..8].copy_from_slice(&index.to_le_bytes());
        if !overlay.read_block(index, &mut record[8..]).await? {
            return Err(StorageError::NotFound(format!(
                "overlay block {index} vanished during the export"
            )));
        }
        hash.update(&record);
        sink.write_all(&record).await?;
    }
    sink.write_all(hash.finalize().as_slice()).await
}

/// A parsed, verified archive: its geometry and the offsets of its block records.
struct Verified<'a> {
    block_size: usize,
    records: &'a [u8],
}

fn bad(reason: impl Into<String>) -> StorageError {
    StorageError::Integrity(format!("overlay archive: {}", reason.into()))
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// Checks everything about `data` without writing anything.
fn verify(data: &[u8], disk_size: u64) -> Result<Verified<'_>> {
    if data.len() < HEADER_LEN + DIGEST_LEN {
        return Err(bad(format!("{} bytes is too short", data.len())));
    }
    if data[..8] != MAGIC {
        return Err(bad("not a QemuWeb overlay archive (bad magic)"));
    }
    let version = le_u32(&data[8..12]);
    if version != VERSION {
        return Err(StorageError::Unsupported(format!(
            "overlay archive version {version} (this build reads version {VERSION})"
        )));
    }
    let block_size = le_u32(&data[12..16]);
    crate::cow::check_block_size(block_size)
        .map_err(|_| bad(format!("block size {block_size}")))?;
    let (body, digest) = data.split_at(data.len() - DIGEST_LEN);
    if Sha256::digest(body).as_slice() != digest {
        return Err(bad(
            "SHA-256 checksum mismatch: the archive is damaged or was altered",
        ));
    }
    check_same_size("the overlay archive", le_u64(&data[16..24]), disk_size)?;
    let count = le_u64(&data[24..32]);
    let record_len = 8 + block_size as usize;
    let records = &body[HEADER_LEN..];
    if (records.len() / record_len) as u64 != count || records.len() % record_len != 0 {
        return Err(bad(format!(
            "{} bytes of records do not hold {count} blocks",
            records.len()
        )));
    }
    let blocks = disk_size.div_ceil(u64::from(block_size));
    let mut previous = None;
    for record in records.chunks_exact(record_len) {
        let index = le_u64(&record[..8]);
        if index >= blocks {
            return Err(bad(format!(
                "block {index} lies beyond the disk's {blocks} blocks"
            )));
        }
        if previous.is_some_and(|p| index <= p) {
            return Err(bad("block indices are not strictly ascending"));
        }
        previous = Some(index);
    }
    Ok(Verified {
        block_size: block_size as usize,
        records,
    })
}

/// Verifies a compact archive and writes its blocks into `disk`'s overlay.
///
/// The overlay must use the archive's block size. Nothing is written unless the whole
/// archive verifies.
pub async fn import(data: &[u8], disk: &CowBlockDevice) -> Result<ImportSummary> {
    let v = verify(data, disk.size())?;
    let ours = disk.overlay().block_size() as usize;
    if v.block_size != ours {
        return Err(StorageError::InvalidArgument(format!(
            "the archive has {}-byte blocks, this overlay {ours}-byte blocks",
            v.block_size
        )));
    }
    let mut summary = ImportSummary::default();
    for record in v.records.chunks_exact(8 + v.block_size) {
        disk.write_whole_block(le_u64(&record[..8]), &record[8..])
            .await?;
        summary.bytes += v.block_size as u64;
        summary.ranges += 1;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, MemoryBlockDevice, MemoryOverlay};
    use futures::executor::block_on;

    const SIZE: usize = 40 * 1024 + 512;

    fn vm() -> CowBlockDevice {
        let base = MemoryBlockDevice::read_only((0..SIZE).map(|i| (i % 251) as u8).collect());
        CowBlockDevice::new(Box::new(base), Box::new(MemoryOverlay::new(4096).unwrap())).unwrap()
    }

    async fn archive() -> (CowBlockDevice, Vec<u8>) {
        let src = vm();
        src.write_at(100, &[1; 5000]).await.unwrap();
        src.write_at(SIZE as u64 - 10, &[2; 10]).await.unwrap();
        let mut out = Vec::new();
        export(&src, &mut out).await.unwrap();
        (src, out)
    }

    #[test]
    fn round_trip_restores_every_byte() {
        block_on(async {
            let (src, data) = archive().await;
            assert_eq!(data.len(), HEADER_LEN + 3 * (8 + 4096) + DIGEST_LEN);
            let dst = vm();
            let s = import(&data, &dst).await.unwrap();
            assert_eq!(
                s,
                ImportSummary {
                    bytes: 3 * 4096,
                    ranges: 3
                }
            );
            assert_eq!(
                dst.read_vec(0, SIZE).await.unwrap(),
                src.read_vec(0, SIZE).await.unwrap()
            );
        });
    }

    #[test]
    fn any_damage_is_rejected_and_nothing_is_written() {
        block_on(async {
            let (_, data) = archive().await;
            let dst = vm();
            // Every single-byte flip anywhere is caught (by the checksum or a field check).
            for at in (0..data.len())
                .step_by(97)
                .chain([0, 9, 13, 20, 28, data.len() - 1])
            {
                let mut bad = data.clone();
                bad[at] ^= 0x40;
                let e = import(&bad, &dst).await.unwrap_err();
                assert!(
                    matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Unsupported),
                    "flip at {at}: {e}"
                );
            }
            for len in [0, 10, HEADER_LEN + DIGEST_LEN, data.len() - 1] {
                assert_eq!(
                    import(&data[..len], &dst).await.unwrap_err().kind(),
                    ErrorKind::Integrity
                );
            }
            assert!(dst.overlay().block_indices().is_empty());
        });
    }

    #[test]
    fn geometry_mismatches_are_clear_errors() {
        block_on(async {
            let (_, data) = archive().await;
            let other_size = CowBlockDevice::new(
                Box::new(MemoryBlockDevice::new(SIZE * 2)),
                Box::new(MemoryOverlay::new(4096).unwrap()),
            )
            .unwrap();
            let e = import(&data, &other_size).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.to_string().contains("this disk has"), "{e}");
            let other_block = CowBlockDevice::new(
                Box::new(MemoryBlockDevice::new(SIZE)),
                Box::new(MemoryOverlay::new(512).unwrap()),
            )
            .unwrap();
            let e = import(&data, &other_block).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        });
    }

    /// A well-formed archive (valid checksum) whose content lies is still refused.
    #[test]
    fn resealed_lies_are_refused() {
        block_on(async {
            let (_, data) = archive().await;
            let reseal = |mut body: Vec<u8>| {
                let d = Sha256::digest(&body);
                body.extend_from_slice(d.as_slice());
                body
            };
            let body = data[..data.len() - DIGEST_LEN].to_vec();
            // Block index beyond the disk.
            let mut b = body.clone();
            b[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&1000u64.to_le_bytes());
            let e = import(&reseal(b), &vm()).await.unwrap_err();
            assert!(e.to_string().contains("beyond the disk"), "{e}");
            // Duplicate index.
            let mut b = body.clone();
            let second = HEADER_LEN + 8 + 4096;
            let first_index = b[HEADER_LEN..HEADER_LEN + 8].to_vec();
            b[second..second + 8].copy_from_slice(&first_index);
            let e = import(&reseal(b), &vm()).await.unwrap_err();
            assert!(e.to_string().contains("ascending"), "{e}");
            // Count that does not match the records.
            let mut b = body.clone();
            b[24..32].copy_from_slice(&7u64.to_le_bytes());
            let e = import(&reseal(b), &vm()).await.unwrap_err();
            assert!(e.to_string().contains("do not hold 7 blocks"), "{e}");
            // Future version.
            let mut b = body;
            b[8..12].copy_from_slice(&2u32.to_le_bytes());
            let e = import(&reseal(b), &vm()).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported);
        });
    }
}
