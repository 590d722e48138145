//! The persistent read cache under `HttpBlockDevice` (natively, over `MemoryReadCache`,
//! against the real test server): a second open of the same image fetches nothing it
//! already has, a changed image is never mixed with old chunks, an image opens offline
//! from what the cache holds, and the cache stays within its budget.
#![cfg(not(target_arch = "wasm32"))]

mod http_support;

use futures::executor::block_on;
use http_support::*;
use qemuweb_storage::read_cache::{MemoryReadCache, ReadCache};
use qemuweb_storage::{BlockDevice, ErrorKind, HttpBlockDevice, HttpOptions, PROBE_BYTES};
use std::rc::Rc;

fn options(cache: &Rc<MemoryReadCache>) -> HttpOptions {
    let cache: Rc<dyn ReadCache> = cache.clone();
    small_options().read_ahead(16384).read_cache(cache)
}

#[test]
fn a_second_open_fetches_only_a_one_byte_probe() {
    let f = fixture();
    let cache = Rc::new(MemoryReadCache::new(64 << 20));
    block_on(async {
        let url = f.server.url_for("disk.img");
        let first = HttpBlockDevice::open(&url, options(&cache)).await.unwrap();
        assert!(first.read_vec(0, DISK_SIZE).await.unwrap() == f.data);
        let fetched = first.stats().bytes_fetched;
        assert!(fetched >= DISK_SIZE as u64, "{fetched}");
        assert_eq!(cache.bytes().await.unwrap(), DISK_SIZE as u64);

        f.server.clear_log();
        let second = HttpBlockDevice::open(&url, options(&cache)).await.unwrap();
        assert!(second.read_vec(0, DISK_SIZE).await.unwrap() == f.data);
        // Random reads too.
        let mut rng = Rng(7);
        for _ in 0..100 {
            let off = rng.below(DISK_SIZE as u64);
            let len = rng.below(30_000).min(DISK_SIZE as u64 - off) as usize;
            let got = second.read_vec(off, len).await.unwrap();
            assert!(got == f.data[off as usize..off as usize + len]);
        }
        let s = second.stats();
        assert_eq!(s.bytes_fetched, PROBE_BYTES, "only the probe: {s:?}");
        assert!(s.persistent_hits > 0);
        let ranges: Vec<_> = f
            .server
            .gets_for("/disk.img")
            .into_iter()
            .map(|e| e.range.unwrap_or_default())
            .collect();
        assert_eq!(ranges, ["bytes=0-1"]);
    });
}

#[test]
fn a_changed_image_is_never_mixed_with_old_chunks() {
    let f = fixture();
    let cache = Rc::new(MemoryReadCache::new(64 << 20));
    block_on(async {
        let url = f.server.url_for("disk.img");
        let dev = HttpBlockDevice::open(&url, options(&cache)).await.unwrap();
        dev.read_vec(0, 200_000).await.unwrap();
        drop(dev);
        // The file is replaced (a new ETag), same size.
        let new = random_bytes(DISK_SIZE, 99);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(f.dir.join("disk.img"), &new).unwrap();
        let dev = HttpBlockDevice::open(&url, options(&cache)).await.unwrap();
        assert!(dev.read_vec(0, DISK_SIZE).await.unwrap() == new);
        assert_eq!(dev.stats().persistent_hits, 0);
        // Only the new version's chunks are held.
        assert_eq!(cache.bytes().await.unwrap(), DISK_SIZE as u64);
    });
}

#[test]
fn an_image_opens_offline_from_what_the_cache_holds() {
    let f = fixture();
    let cache = Rc::new(MemoryReadCache::new(64 << 20));
    // A server of its own, to stop.
    let server = qemuweb_testkit::server::TestServer::start(&f.dir).unwrap();
    let url = server.url_for("disk.img");
    block_on(async {
        let dev = HttpBlockDevice::open(&url, options(&cache)).await.unwrap();
        dev.read_vec(0, 100_000).await.unwrap();
    });
    drop(server);
    let data = &f.data;
    block_on(async {
        let dev = HttpBlockDevice::open(&url, options(&cache).max_retries(1))
            .await
            .unwrap();
        assert_eq!(dev.size(), DISK_SIZE as u64);
        assert!(dev.read_vec(0, 100_000).await.unwrap() == data[..100_000]);
        let e = dev.read_vec(500_000, 10).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Network, "{e}");
        // Without the cache the image does not open at all.
        let e = HttpBlockDevice::open(&url, small_options().max_retries(1))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Network);
    });
}

#[test]
fn the_cache_stays_within_its_budget() {
    let f = fixture();
    let cache = Rc::new(MemoryReadCache::new(100 * 4096));
    block_on(async {
        let url = f.server.url_for("disk.img");
        let dev = HttpBlockDevice::open(&url, options(&cache)).await.unwrap();
        assert!(dev.read_vec(0, DISK_SIZE).await.unwrap() == f.data);
        assert!(cache.bytes().await.unwrap() <= 100 * 4096);
        // The most recently read chunks are the ones kept.
        let again = HttpBlockDevice::open(&url, options(&cache)).await.unwrap();
        let tail = DISK_SIZE - 50 * 4096;
        assert!(again.read_vec(tail as u64, 50 * 4096).await.unwrap() == f.data[tail..]);
        assert_eq!(again.stats().bytes_fetched, PROBE_BYTES);
    });
}
