//! The HTTP device test bodies, run both in a window (`web_http.rs`) and in a dedicated
//! worker (`web_worker.rs`), which define their tests with [`http_case_tests!`].

use super::*;
use futures::future::join_all;
use qemuweb_storage::resolver::{ImageResolver, ImplicitKind, ImplicitOpen};
use qemuweb_storage::{BlockDevice, ErrorKind, HttpBlockDevice, HttpResolver, Progress};
use std::cell::RefCell;
use std::rc::Rc;

/// Defines one `#[wasm_bindgen_test]` for every case of this module, in the test file that
/// invokes it (which chooses where they run with `wasm_bindgen_test_configure!`).
#[macro_export]
macro_rules! http_case_tests {
    () => {
        $crate::http_case_tests!(
            random_reads_are_byte_exact,
            cache_read_ahead_and_merging_show_in_the_log,
            concurrent_reads_are_correct_and_shared,
            progress_is_reported,
            transient_failures_are_retried,
            misbehaviours_give_typed_errors,
            a_swapped_image_is_detected,
            a_weak_etag_pins_last_modified,
            device_basics_and_resolver,
            redirects_are_refused,
            bodies_without_length_are_bounded,
            a_size_near_u64_max_is_read_without_overflow,
        );
    };
    ($($case:ident),+ $(,)?) => {
        $(
            #[wasm_bindgen_test::wasm_bindgen_test]
            async fn $case() {
                $crate::web_support::http_cases::$case().await;
            }
        )+
    };
}

async fn open(token: &str, mode: &str) -> qemuweb_storage::Result<HttpBlockDevice> {
    HttpBlockDevice::open(&mis_url(token, mode, "disk.img"), small_options()).await
}

async fn check_all(dev: &HttpBlockDevice, want: &[u8]) {
    for off in (0..want.len()).step_by(100_000) {
        let len = 100_000.min(want.len() - off);
        let got = dev.read_vec(off as u64, len).await.unwrap();
        assert!(got == want[off..off + len], "bytes at {off}");
    }
}

pub async fn random_reads_are_byte_exact() {
    let want = fetch_bytes(&url("disk.img")).await;
    assert_eq!(want.len(), DISK_SIZE);
    for (chunk, ahead, cache) in [(4096, 0, 1024), (4096, 16384, 8), (65536, 262144, 0)] {
        let opts = small_options()
            .chunk_size(chunk)
            .read_ahead(ahead)
            .cache_chunks(cache);
        let dev = HttpBlockDevice::open(&url("disk.img"), opts).await.unwrap();
        assert_eq!(dev.size(), DISK_SIZE as u64);
        let mut rng = Rng(chunk as u64 + ahead + cache as u64);
        for _ in 0..100 {
            let off = rng.below(DISK_SIZE as u64);
            let len = rng.below(40_000).min(DISK_SIZE as u64 - off) as usize;
            let got = dev.read_vec(off, len).await.unwrap();
            assert!(
                got == want[off as usize..off as usize + len],
                "{len} at {off}"
            );
        }
        assert!(dev.read_vec(0, DISK_SIZE).await.unwrap() == want);
        let e = dev.read_vec(DISK_SIZE as u64, 1).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfRange);
    }
}

pub async fn cache_read_ahead_and_merging_show_in_the_log() {
    let want = fetch_bytes(&url("disk.img")).await;
    let t = token("log");
    let dev = open(&t, "plain").await.unwrap();
    dev.read_vec(8192 + 5, 3 * 4096 - 10).await.unwrap();
    let ranges: Vec<String> = gets_for_token(&t)
        .await
        .into_iter()
        .map(|e| e.range)
        .collect();
    assert_eq!(ranges, ["bytes=0-4095", "bytes=8192-20479"]);
    let before = dev.stats();
    for _ in 0..5 {
        assert!(dev.read_vec(8192, 3 * 4096).await.unwrap() == want[8192..20480]);
    }
    assert_eq!(
        dev.stats().requests,
        before.requests,
        "cache hits cost nothing"
    );
    assert_eq!(gets_for_token(&t).await.len(), 2);

    let t = token("ahead");
    let dev = HttpBlockDevice::open(
        &mis_url(&t, "plain", "disk.img"),
        small_options().read_ahead(8192),
    )
    .await
    .unwrap();
    dev.read_vec(40_000, 1).await.unwrap();
    for off in (40_000..53_000).step_by(500) {
        dev.read_vec(off, 100).await.unwrap();
    }
    let ranges: Vec<String> = gets_for_token(&t)
        .await
        .into_iter()
        .map(|e| e.range)
        .collect();
    assert_eq!(
        ranges,
        ["bytes=0-12287", "bytes=36864-49151", "bytes=49152-61439"]
    );
}

pub async fn concurrent_reads_are_correct_and_shared() {
    let want = fetch_bytes(&url("disk.img")).await;
    let t = token("conc");
    let dev = HttpBlockDevice::open(
        &mis_url(&t, "plain", "disk.img"),
        small_options().max_concurrency(3),
    )
    .await
    .unwrap();
    let offsets: Vec<u64> = (0..20).map(|i| 20_000 + i * 45_000).collect();
    let results = join_all(offsets.iter().map(|&o| dev.read_vec(o, 5000))).await;
    for (o, r) in offsets.iter().zip(results) {
        let o = *o as usize;
        assert!(r.unwrap() == want[o..o + 5000]);
    }
    let before = dev.stats().requests;
    let same = join_all((0..8).map(|i| dev.read_vec(995_000 + i, 100))).await;
    for (i, r) in same.into_iter().enumerate() {
        assert!(r.unwrap() == want[995_000 + i..995_100 + i]);
    }
    assert_eq!(dev.stats().requests, before + 1);
}

pub async fn progress_is_reported() {
    let t = token("progress");
    let seen: Rc<RefCell<Vec<Progress>>> = Rc::default();
    let s2 = seen.clone();
    let opts = small_options().on_progress(move |p| s2.borrow_mut().push(p));
    let dev = HttpBlockDevice::open(&mis_url(&t, "plain", "disk.img"), opts)
        .await
        .unwrap();
    dev.read_vec(100_000, 50_000).await.unwrap();
    let served: u64 = gets_for_token(&t).await.iter().map(|e| e.bytes).sum();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1],
        Progress {
            bytes_fetched: served,
            total: DISK_SIZE as u64
        }
    );
    assert_eq!(dev.progress(), seen[1]);
}

pub async fn transient_failures_are_retried() {
    let want = fetch_bytes(&url("disk.img")).await;
    for mode in [
        "truncate-2",
        "short-2",
        "status-503-2",
        "status-500-1",
        "status-429-1",
    ] {
        let t = token("retry");
        let dev = open(&t, mode)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(dev.stats().retries >= 1, "{mode}");
        check_all(&dev, &want).await;
    }
    for mode in [
        "after-1-truncate-2",
        "after-1-short-2",
        "after-2-status-502-2",
    ] {
        let t = token("retry-read");
        let dev = open(&t, mode).await.unwrap();
        check_all(&dev, &want).await;
        assert_eq!(dev.stats().retries, 2, "{mode}");
    }
}

pub async fn misbehaviours_give_typed_errors() {
    let t = token("ir");
    let e = open(&t, "ignore-range").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RangeNotSupported, "{e}");
    let t = token("always");
    let e = open(&t, "status-503").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HttpStatus, "{e}");
    assert_eq!(
        gets_for_token(&t).await.len(),
        4,
        "one try and three retries"
    );
    let t = token("gone");
    let e = open(&t, "status-404").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HttpStatus, "{e}");
    assert_eq!(gets_for_token(&t).await.len(), 1, "a 404 is not retried");
    let t = token("trunc");
    let e = open(&t, "truncate-100").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    let t = token("wrong");
    let e = open(&t, "wrong-range").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadResponse, "{e}");
    let e = HttpBlockDevice::open(&url("missing.img"), small_options())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HttpStatus, "{e}");
}

pub async fn a_swapped_image_is_detected() {
    let want = fetch_bytes(&url("disk.img")).await;
    let t = token("swap");
    let dev = open(&t, "swap-1").await.unwrap();
    assert!(dev.read_vec(0, 4096).await.unwrap() == want[..4096]);
    for _ in 0..2 {
        let e = dev.read_vec(500_000, 10).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ImageChanged, "{e}");
    }
    assert!(dev.read_vec(0, 4096).await.unwrap() == want[..4096]);
    let log = gets_for_token(&t).await;
    assert!(log[1..].iter().all(|e| e.status == 200), "{log:?}");
}

pub async fn a_weak_etag_pins_last_modified() {
    let want = fetch_bytes(&url("disk.img")).await;
    let t = token("weak");
    let dev = open(&t, "weak-etag").await.unwrap();
    assert!(dev.validator().unwrap().ends_with(" GMT"));
    check_all(&dev, &want).await;
    assert!(gets_for_token(&t).await.iter().all(|e| e.status == 206));
}

pub async fn device_basics_and_resolver() {
    let dev = HttpBlockDevice::open(&url("disk.img"), small_options())
        .await
        .unwrap();
    assert!(dev.read_only());
    assert_read_only_then_closed(&dev).await;

    let r = HttpResolver::new(&url("dir/top.img"), small_options()).unwrap();
    let req = |name: &str| ImplicitOpen {
        kind: ImplicitKind::BackingFile,
        name: name.into(),
        format: None,
        depth: 0,
    };
    let base = r.open(&req("base.img")).await.unwrap();
    let want = fetch_bytes(&url("dir/base.img")).await;
    assert!(base.read_vec(0, want.len()).await.unwrap() == want);
    let other = url("disk.img");
    for hostile in [
        "../disk.img",
        "/disk.img",
        other.as_str(),
        "//127.0.0.1/disk.img",
    ] {
        let e = r.open(&req(hostile)).await.err().unwrap();
        assert_eq!(e.kind(), ErrorKind::ImplicitOpenDenied, "{hostile}");
    }
}

/// In a browser every redirect is refused, for an image and for the files it names:
/// `fetch` runs with `redirect: "manual"`, which shows that a redirect happened but not
/// where it goes, so a same-origin one cannot be told from a cross-origin one. The
/// request never reaches the target.
pub async fn redirects_are_refused() {
    for mode in ["redirect-cross", "redirect-same"] {
        let t = token("redirect");
        let e = open(&t, mode).await.expect_err(mode);
        assert_eq!(e.kind(), ErrorKind::RedirectRefused, "{mode}: {e}");
        assert_eq!(gets_for_token(&t).await.len(), 1, "{mode}: not retried");
    }
    let t = token("redirect-named");
    let r = HttpResolver::new(
        &mis_url(&t, "redirect-cross", "dir/top.img"),
        small_options(),
    )
    .unwrap();
    let req = ImplicitOpen {
        kind: ImplicitKind::BackingFile,
        name: "base.img".into(),
        format: None,
        depth: 0,
    };
    let e = r
        .open(&req)
        .await
        .err()
        .expect("the redirected base was opened");
    assert_eq!(e.kind(), ErrorKind::RedirectRefused, "{e}");
}

/// A body without `Content-Length` is read as a stream and never past one byte more than
/// its range: an endless one ends in a bad response at once, with bounded memory.
pub async fn bodies_without_length_are_bounded() {
    let want = fetch_bytes(&url("disk.img")).await;
    let dev = open(&token("no-length"), "no-length").await.unwrap();
    check_all(&dev, &want).await;
    let started = js_sys::Date::now();
    let opts = small_options()
        .timeout(std::time::Duration::from_secs(3))
        .max_retries(0);
    let e = HttpBlockDevice::open(
        &mis_url(&token("flood"), "no-length-flood", "disk.img"),
        opts,
    )
    .await
    .unwrap_err();
    let ms = js_sys::Date::now() - started;
    assert_eq!(e.kind(), ErrorKind::BadResponse, "{e} after {ms} ms");
    assert!(ms < 2000.0, "{ms} ms");
}

/// A server claiming u64::MAX bytes: the device reads the very end without an overflow.
pub async fn a_size_near_u64_max_is_read_without_overflow() {
    let dev = open(&token("huge"), &format!("claim-size-{}", u64::MAX))
        .await
        .unwrap();
    assert_eq!(dev.size(), u64::MAX);
    for off in [u64::MAX - 10, u64::MAX - 5000, 1 << 63] {
        let got = dev.read_vec(off, (u64::MAX - off).min(300) as usize).await;
        assert!(got.unwrap().iter().all(|&b| b == 0), "{off}");
    }
}
