//! Imports arbitrary bytes as a compact overlay archive (`export::compact::import`) into a
//! copy-on-write disk whose overlay already holds a block. A failed import must be a typed
//! error and leave the disk exactly as it was; a successful one must have written exactly
//! the archive's blocks. The first input byte picks the overlay's block size and whether
//! the harness appends the archive's SHA-256 (see `qemuweb_storage_fuzz`).
#![no_main]

use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use qemuweb_storage::export::compact;
use qemuweb_storage::{BlockDevice, ErrorKind};
use qemuweb_storage_fuzz::overlay_archive::{archive, block_size, disk, snapshot, PRESET_BLOCK};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bs = block_size(mode);
    let archive = archive(mode, rest);
    let disk = disk(bs);
    let before = snapshot(&disk);
    match block_on(compact::import(&archive, &disk)) {
        Err(e) => {
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::Integrity | ErrorKind::Unsupported | ErrorKind::InvalidArgument
                ),
                "untyped failure: {e:?}"
            );
            assert!(
                snapshot(&disk) == before,
                "a failed import changed the disk: {e}"
            );
        }
        Ok(summary) => {
            // It verified, so it is well formed: 32-byte header, records, 32-byte digest.
            let record_len = 8 + bs as usize;
            let records = &archive[32..archive.len() - 32];
            assert_eq!(records.len() % record_len, 0);
            assert_eq!(summary.ranges as usize, records.len() / record_len);
            assert_eq!(summary.bytes, summary.ranges * u64::from(bs));
            let mut expected = before.0.clone();
            let mut indices = before.1.clone();
            for r in records.chunks_exact(record_len) {
                let index = u64::from_le_bytes(r[..8].try_into().unwrap());
                let start = index as usize * bs as usize;
                let end = (start + bs as usize).min(expected.len());
                expected[start..end].copy_from_slice(&r[8..8 + end - start]);
                indices.push(index);
            }
            indices.sort_unstable();
            indices.dedup();
            let (bytes, got_indices) = snapshot(&disk);
            assert!(
                bytes == expected,
                "the disk does not read as the archive says"
            );
            assert_eq!(got_indices, indices);
            assert!(disk.overlay().contains(PRESET_BLOCK));
            assert_eq!(disk.size(), before.0.len() as u64);
        }
    }
});
