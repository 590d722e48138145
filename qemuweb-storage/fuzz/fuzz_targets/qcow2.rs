//! Opens arbitrary bytes as a qcow2 image on a `MemoryBlockDevice` and reads it through.
//! Any outcome but a panic, a hang or an unbounded allocation is fine; errors must be typed.
#![no_main]

use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use qemuweb_storage::format::{open_image, ImageFormat, OpenOptions};
use qemuweb_storage::{BlockDevice, ErrorKind, MemoryBlockDevice};

/// Reads at most this much of a disk per input.
const READ_LIMIT: u64 = 8 << 20;

fuzz_target!(|data: &[u8]| {
    let options = OpenOptions {
        format: Some(ImageFormat::Qcow2),
        ..OpenOptions::default()
    };
    block_on(async {
        let dev = Box::new(MemoryBlockDevice::read_only(data.to_vec()));
        let disk = match open_image(dev, &options).await {
            Ok(d) => d,
            Err(e) => {
                assert_typed(e.kind());
                return;
            }
        };
        let size = disk.size();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < size.min(READ_LIMIT) {
            let n = (size - at).min(buf.len() as u64) as usize;
            if let Err(e) = disk.read_at(at, &mut buf[..n]).await {
                assert_typed(e.kind());
            }
            at += n as u64;
        }
        // An odd-sized read near the end, across cluster boundaries.
        let n = size.min(70_001) as usize;
        if let Err(e) = disk.read_at(size - n as u64, &mut buf[..n]).await {
            assert_typed(e.kind());
        }
    });
});

fn assert_typed(kind: ErrorKind) {
    assert!(
        matches!(
            kind,
            ErrorKind::Corrupt
                | ErrorKind::Unsupported
                | ErrorKind::Encrypted
                | ErrorKind::ImplicitOpenDenied
                | ErrorKind::ChainTooDeep
        ),
        "untyped failure: {kind:?}"
    );
}
