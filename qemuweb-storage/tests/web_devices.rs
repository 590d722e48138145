//! `BlobBlockDevice` and `MemoryBlockDevice` in a browser window (headless Chromium).
//! Run with `scripts/browser-tests.sh`.
#![cfg(target_arch = "wasm32")]

mod web_support;

use js_sys::{Array, Uint8Array};
use qemuweb_storage::{BlobBlockDevice, BlockDevice, ErrorKind, MemoryBlockDevice};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_support::*;

wasm_bindgen_test_configure!(run_in_browser);

fn blob_of(bytes: &[u8]) -> web_sys::Blob {
    let parts = Array::new();
    parts.push(&Uint8Array::from(bytes));
    web_sys::Blob::new_with_u8_array_sequence(&parts).unwrap()
}

#[wasm_bindgen_test]
async fn blob_reads_are_byte_exact() {
    let mut rng = Rng(42);
    let data: Vec<u8> = (0..300_001).map(|_| rng.next() as u8).collect();
    let dev = BlobBlockDevice::new(blob_of(&data));
    assert_eq!(dev.size(), data.len() as u64);
    assert!(dev.read_only());
    for _ in 0..200 {
        let off = rng.below(data.len() as u64);
        let len = rng.below(20_000).min(data.len() as u64 - off) as usize;
        let got = dev.read_vec(off, len).await.unwrap();
        assert!(
            got == data[off as usize..off as usize + len],
            "{len} at {off}"
        );
    }
    assert!(dev.read_vec(0, data.len()).await.unwrap() == data);
    assert!(dev.read_vec(5, 0).await.unwrap().is_empty());
    let mut sector = vec![0u8; 1024];
    dev.read_blocks(2, &mut sector).await.unwrap();
    assert!(sector == data[1024..2048]);
    let e = dev.read_vec(data.len() as u64 - 1, 2).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
    assert_read_only_then_closed(&dev).await;
}

#[wasm_bindgen_test]
async fn a_blob_from_the_network_reads_like_the_file() {
    let response = fetch_response(&url("disk.img")).await;
    let blob: web_sys::Blob = JsFuture::from(response.blob().unwrap())
        .await
        .unwrap()
        .into();
    let want = fetch_bytes(&url("disk.img")).await;
    let dev = BlobBlockDevice::new(blob);
    assert_eq!(dev.size(), DISK_SIZE as u64);
    for off in (0..DISK_SIZE).step_by(65_536) {
        let len = 70_000.min(DISK_SIZE - off);
        assert!(dev.read_vec(off as u64, len).await.unwrap() == want[off..off + len]);
    }
}

#[wasm_bindgen_test]
async fn an_empty_blob() {
    let dev = BlobBlockDevice::new(blob_of(&[]));
    assert_eq!(dev.size(), 0);
    assert!(dev.read_vec(0, 0).await.unwrap().is_empty());
    assert_eq!(
        dev.read_vec(0, 1).await.unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
}

#[wasm_bindgen_test]
async fn memory_device_in_the_browser() {
    let dev = MemoryBlockDevice::new(64 * 1024);
    dev.write_blocks(3, &[0xab; 1024]).await.unwrap();
    dev.write_at(100, b"hello").await.unwrap();
    assert_eq!(dev.read_vec(98, 9).await.unwrap(), b"\0\0hello\0\0");
    let mut two = vec![0u8; 1024];
    dev.read_blocks(3, &mut two).await.unwrap();
    assert!(two.iter().all(|&b| b == 0xab));
    assert_eq!(
        dev.read_vec(64 * 1024 - 1, 2).await.unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    let ro = MemoryBlockDevice::read_only(vec![1, 2, 3]);
    assert_eq!(
        ro.write_at(0, b"x").await.unwrap_err().kind(),
        ErrorKind::ReadOnly
    );
    dev.close().await.unwrap();
    assert_eq!(
        dev.read_vec(0, 1).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
}
