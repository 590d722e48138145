//! `IndexedDbReadCache` in headless Chromium: chunks kept across opens (a second open of
//! an image over HTTP fetches only its two-byte probe), a new image version drops the old
//! chunks, and the least recently used chunks go beyond the budget. Run with
//! `scripts/browser-tests.sh`.
#![cfg(target_arch = "wasm32")]

mod web_support;

use qemuweb_storage::read_cache::{CachedImage, IndexedDbReadCache, ReadCache};
use qemuweb_storage::{BlockDevice, HttpBlockDevice, PROBE_BYTES};
use std::rc::Rc;
use wasm_bindgen_test::*;
use web_support::*;

wasm_bindgen_test_configure!(run_in_browser);

fn image(name: &str, validator: &str) -> CachedImage {
    CachedImage::new(
        &format!("http://test/{name}"),
        validator,
        true,
        10 * 4096,
        4096,
    )
}

#[wasm_bindgen_test]
async fn chunks_are_kept_per_version_within_the_budget() {
    let name = token("rc");
    let cache = IndexedDbReadCache::open(6 * 4096).await.unwrap();
    let v1 = image(&name, "\"1\"");
    cache.bind(&v1).await.unwrap();
    let before = cache.bytes().await.unwrap();
    for i in 0..4u64 {
        cache
            .put(&v1, &[(i, &[i as u8 + 1; 4096][..])])
            .await
            .unwrap();
    }
    // Touch 0 so that 1 is the least recently used.
    assert_eq!(cache.get(&v1, &[0]).await.unwrap()[0].1, vec![1; 4096]);
    // A chunk of the wrong length is not taken.
    cache.put(&v1, &[(5, &[9; 100][..])]).await.unwrap();
    assert!(cache.get(&v1, &[5]).await.unwrap().is_empty());
    drop(cache);

    // Reopened: still there; then the budget pushes out the least recently used.
    let cache = IndexedDbReadCache::open(before + 4 * 4096).await.unwrap();
    assert_eq!(cache.image(&v1.url).await.unwrap(), Some(v1.clone()));
    cache.put(&v1, &[(7, &[8; 4096][..])]).await.unwrap();
    let held: Vec<u64> = cache
        .get(&v1, &[0, 1, 2, 3, 7])
        .await
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert!(
        !held.contains(&1),
        "the least recently used went first: {held:?}"
    );
    assert!(held.contains(&0) && held.contains(&7), "{held:?}");
    assert!(cache.bytes().await.unwrap() <= before + 4 * 4096);

    // A new version: the old chunks are gone, and the old identity finds nothing.
    let v2 = image(&name, "\"2\"");
    cache.bind(&v2).await.unwrap();
    assert!(cache.get(&v2, &[0, 7]).await.unwrap().is_empty());
    assert!(cache.get(&v1, &[0, 7]).await.unwrap().is_empty());
    assert!(cache.bytes().await.unwrap() <= before);
}

#[wasm_bindgen_test]
async fn a_second_open_over_http_reads_from_the_cache() {
    let cache: Rc<dyn ReadCache> = Rc::new(IndexedDbReadCache::open(64 << 20).await.unwrap());
    // A URL of its own (the query makes it one), so earlier runs left nothing for it.
    let plain = url("disk.img");
    let expected = fetch_bytes(&plain).await;
    let url = format!("{plain}?{}", token("second"));
    let first = HttpBlockDevice::open(&url, small_options().read_cache(cache.clone()))
        .await
        .unwrap();
    assert!(first.read_vec(0, 300_000).await.unwrap() == expected[..300_000]);
    let second = HttpBlockDevice::open(&url, small_options().read_cache(cache.clone()))
        .await
        .unwrap();
    assert!(second.read_vec(0, 300_000).await.unwrap() == expected[..300_000]);
    let s = second.stats();
    assert_eq!(s.bytes_fetched, PROBE_BYTES, "only the probe: {s:?}");
    assert!(s.persistent_hits > 0);
}
