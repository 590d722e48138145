//! The QEMU engine's disk channel on arbitrary header words, window and disks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qemuweb_runtime::engine::qemu_channel::{
    clamp_read, split, stdin_free, stdin_slot, IoRequest, HEADER_WORDS, STDIN_RING,
};

fn u32_at(data: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(at + i).copied().unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from(u32_at(data, at)) | (u64::from(u32_at(data, at + 4)) << 32)
}

fuzz_target!(|data: &[u8]| {
    // Header words, then the window, then up to four disks (size, writable).
    let header: Vec<i32> = (0..HEADER_WORDS).map(|i| u32_at(data, i * 4) as i32).collect();
    let base = HEADER_WORDS * 4;
    let window = u32_at(data, base);
    let disks: Vec<(u64, bool)> = (0..(data.get(base + 4).copied().unwrap_or(0) % 5) as usize)
        .map(|i| {
            let at = base + 5 + i * 9;
            (u64_at(data, at), data.get(at + 8).is_some_and(|b| b & 1 == 1))
        })
        .collect();
    if let Ok(request) = IoRequest::decode(&header) {
        if request.check(window, &disks).is_ok() {
            let size = disks[request.disk as usize].0;
            assert!(request.len <= window);
            let (mut disk_at, mut buf_at) = (request.offset, 0u64);
            for (d, b, n) in split(request.offset, u64::from(request.len), window) {
                assert_eq!((d, b), (disk_at, buf_at));
                assert!(n >= 1 && n <= window.max(1));
                disk_at += u64::from(n);
                buf_at += u64::from(n);
                assert!(disk_at <= size);
            }
            assert_eq!(buf_at, u64::from(request.len));
            assert!(clamp_read(size, request.offset, u64::from(request.len)) <= u64::from(request.len));
        }
    }
    // The serial ring's counters may hold anything (they wrap).
    let (written, taken) = (u32_at(data, 0), u32_at(data, 4));
    assert!(stdin_free(written, taken) <= STDIN_RING);
    assert!(stdin_slot(written) < STDIN_RING);
});
