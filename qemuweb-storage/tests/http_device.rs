//! `HttpBlockDevice` and `HttpResolver` against the real test server (natively): exact
//! bytes, caching, read-ahead and merging as seen in the server's log, concurrency,
//! progress, and the resolver's confinement.
#![cfg(not(target_arch = "wasm32"))]

mod http_support;

use futures::executor::block_on;
use futures::future::join_all;
use http_support::*;
use qemuweb_storage::resolver::{ImageResolver, ImplicitKind, ImplicitOpen};
use qemuweb_storage::{
    BlockDevice, ErrorKind, HttpBlockDevice, HttpOptions, HttpResolver, Progress,
};
use std::cell::RefCell;
use std::rc::Rc;

fn ranges(f: &Fixture, prefix: &str) -> Vec<String> {
    f.server
        .gets_for(prefix)
        .into_iter()
        .map(|e| e.range.unwrap_or_default())
        .collect()
}

#[test]
fn random_reads_are_byte_exact() {
    let f = fixture();
    block_on(async {
        for (chunk, ahead, cache) in [(4096, 0, 1024), (4096, 16384, 8), (65536, 262144, 0)] {
            let opts = small_options()
                .chunk_size(chunk)
                .read_ahead(ahead)
                .cache_chunks(cache);
            let dev = HttpBlockDevice::open(&f.server.url_for("disk.img"), opts)
                .await
                .unwrap();
            assert_eq!(dev.size(), DISK_SIZE as u64);
            assert!(dev.read_only());
            let mut rng = Rng(chunk as u64 + ahead + cache as u64);
            for _ in 0..200 {
                let off = rng.below(DISK_SIZE as u64);
                let len = rng.below(40_000).min(DISK_SIZE as u64 - off) as usize;
                let got = dev.read_vec(off, len).await.unwrap();
                assert!(
                    got == f.data[off as usize..off as usize + len],
                    "{len} bytes at {off}"
                );
            }
            // The short last chunk, the very last byte, and the whole image.
            let tail = dev.read_vec(DISK_SIZE as u64 - 1, 1).await.unwrap();
            assert_eq!(tail, [f.data[DISK_SIZE - 1]]);
            assert!(dev.read_vec(0, DISK_SIZE).await.unwrap() == f.data);
            let e = dev.read_vec(DISK_SIZE as u64 - 1, 2).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::OutOfRange);
        }
    });
}

#[test]
fn size_and_first_chunk_come_in_one_request_and_later_ones_are_pinned() {
    let f = fixture();
    block_on(async {
        let url = f.server.misbehaving_url("pin", "plain", "disk.img");
        let dev = HttpBlockDevice::open(&url, small_options()).await.unwrap();
        let log = f.server.gets_for("/__mis/pin/");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].range.as_deref(), Some("bytes=0-4095"));
        assert_eq!(log[0].if_range, None);
        assert_eq!(dev.stats().requests, 1);
        // The first chunk is already cached.
        assert!(dev.read_vec(100, 3000).await.unwrap() == f.data[100..3100]);
        assert_eq!(dev.stats().requests, 1);
        dev.read_vec(500_000, 10).await.unwrap();
        let log = f.server.gets_for("/__mis/pin/");
        assert_eq!(log.len(), 2);
        let etag = dev.validator().unwrap();
        assert!(etag.starts_with('"'), "{etag}");
        assert_eq!(log[1].if_range.as_deref(), Some(etag));
        assert_eq!(log[1].status, 206);
    });
}

#[test]
fn cache_hits_cost_no_request() {
    let f = fixture();
    block_on(async {
        let url = f.server.misbehaving_url("cache", "plain", "disk.img");
        let dev = HttpBlockDevice::open(&url, small_options()).await.unwrap();
        let a = dev.read_vec(300_000, 20_000).await.unwrap();
        let after_first = dev.stats();
        let logged = f.server.gets_for("/__mis/cache/").len();
        for _ in 0..10 {
            assert!(dev.read_vec(300_000, 20_000).await.unwrap() == a);
            assert!(dev.read_vec(305_000, 7).await.unwrap() == f.data[305_000..305_007]);
        }
        let s = dev.stats();
        assert_eq!(s.requests, after_first.requests);
        assert_eq!(s.bytes_fetched, after_first.bytes_fetched);
        assert!(s.cache_hits >= 10 * 6, "{s:?}");
        assert_eq!(f.server.gets_for("/__mis/cache/").len(), logged);
        // A tiny cache evicts: reading far away and back costs a request again.
        let dev = HttpBlockDevice::open(&url, small_options().cache_chunks(2))
            .await
            .unwrap();
        dev.read_vec(0, 10).await.unwrap();
        dev.read_vec(900_000, 10).await.unwrap();
        dev.read_vec(600_000, 10).await.unwrap();
        let before = dev.stats().requests;
        dev.read_vec(0, 10).await.unwrap();
        assert_eq!(dev.stats().requests, before + 1);
    });
}

#[test]
fn missing_chunks_merge_and_read_ahead_shows_in_the_log() {
    let f = fixture();
    block_on(async {
        // Three adjacent missing chunks: one request.
        let url = f.server.misbehaving_url("merge", "plain", "disk.img");
        let dev = HttpBlockDevice::open(&url, small_options()).await.unwrap();
        dev.read_vec(8192 + 5, 3 * 4096 - 10).await.unwrap();
        assert_eq!(
            ranges(&f, "/__mis/merge/"),
            ["bytes=0-4095", "bytes=8192-20479"]
        );
        // Cached chunks in the middle split the request in two (run at once, so the log
        // order may vary).
        dev.read_vec(4096, 5 * 4096).await.unwrap();
        let mut got = ranges(&f, "/__mis/merge/")[2..].to_vec();
        got.sort();
        assert_eq!(got, ["bytes=20480-24575", "bytes=4096-8191"]);

        // max_request bounds a merged request.
        let url = f.server.misbehaving_url("bounded", "plain", "disk.img");
        let dev = HttpBlockDevice::open(&url, small_options().max_request(8192))
            .await
            .unwrap();
        dev.read_vec(40960, 5 * 4096).await.unwrap();
        // The two requests run at once, so the log order may vary.
        let mut got = ranges(&f, "/__mis/bounded/");
        got.sort();
        assert_eq!(
            got,
            [
                "bytes=0-4095",
                "bytes=40960-49151",
                "bytes=49152-57343",
                "bytes=57344-61439"
            ]
        );

        // Read-ahead: the first request and every miss bring two more chunks.
        let url = f.server.misbehaving_url("ahead", "plain", "disk.img");
        let dev = HttpBlockDevice::open(&url, small_options().read_ahead(8192))
            .await
            .unwrap();
        dev.read_vec(40_000, 1).await.unwrap();
        for off in (40_000..53_000).step_by(500) {
            dev.read_vec(off, 100).await.unwrap();
        }
        assert_eq!(
            ranges(&f, "/__mis/ahead/"),
            ["bytes=0-12287", "bytes=36864-49151", "bytes=49152-61439"]
        );
        // Read-ahead stops at the end of the image.
        dev.read_vec(DISK_SIZE as u64 - 10, 10).await.unwrap();
        assert_eq!(
            ranges(&f, "/__mis/ahead/").last().unwrap(),
            "bytes=999424-1000002"
        );
    });
}

#[test]
fn concurrent_reads_are_correct_limited_and_shared() {
    let f = fixture();
    block_on(async {
        let url = f.server.misbehaving_url("conc", "plain", "disk.img");
        let dev = HttpBlockDevice::open(&url, small_options().max_concurrency(3))
            .await
            .unwrap();
        let offsets: Vec<u64> = (0..24).map(|i| 20_000 + i * 37_000).collect();
        let reads = offsets.iter().map(|&o| dev.read_vec(o, 5000));
        let results = join_all(reads).await;
        for (o, r) in offsets.iter().zip(results) {
            let o = *o as usize;
            assert!(r.unwrap() == f.data[o..o + 5000]);
        }
        // Eight concurrent reads of the same missing chunk share one request.
        let before = dev.stats().requests;
        let same = join_all((0..8).map(|i| dev.read_vec(990_000 + i, 100))).await;
        for (i, r) in same.into_iter().enumerate() {
            assert!(r.unwrap() == f.data[990_000 + i..990_100 + i]);
        }
        assert_eq!(dev.stats().requests, before + 1);
    });
}

#[test]
fn concurrency_limit_is_respected() {
    // A server that counts how many requests it holds at once.
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", listener.local_addr().unwrap());
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n2, p2) = (now.clone(), peak.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let (now, peak) = (n2.clone(), p2.clone());
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let range = text
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("range")
                            .then(|| v.trim())?
                            .strip_prefix("bytes=")
                    })
                    .unwrap()
                    .to_string();
                let (a, e) = range.split_once('-').unwrap();
                let (a, e): (u64, u64) = (a.parse().unwrap(), e.parse().unwrap());
                let e = e.min(65535);
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(50));
                now.fetch_sub(1, Ordering::SeqCst);
                let body = vec![7u8; (e - a + 1) as usize];
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{e}/65536\r\nContent-Length: {}\r\nETag: \"x\"\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            });
        }
    });
    block_on(async {
        let dev = HttpBlockDevice::open(&url, small_options().max_concurrency(2))
            .await
            .unwrap();
        let reads = (1..16).map(|i| dev.read_vec(i * 4096, 10));
        for r in join_all(reads).await {
            assert_eq!(r.unwrap(), [7u8; 10]);
        }
        assert_eq!(dev.stats().requests, 16);
    });
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}

#[test]
fn progress_is_reported() {
    let f = fixture();
    let seen: Rc<RefCell<Vec<Progress>>> = Rc::default();
    let s2 = seen.clone();
    block_on(async {
        let url = f.server.misbehaving_url("progress", "plain", "disk.img");
        let opts = small_options().on_progress(move |p| s2.borrow_mut().push(p));
        let dev = HttpBlockDevice::open(&url, opts).await.unwrap();
        dev.read_vec(100_000, 50_000).await.unwrap();
        dev.read_vec(700_000, 5).await.unwrap();
        let seen = seen.borrow();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|p| p.total == DISK_SIZE as u64));
        assert!(seen
            .windows(2)
            .all(|w| w[0].bytes_fetched < w[1].bytes_fetched));
        let served: u64 = f
            .server
            .gets_for("/__mis/progress/")
            .iter()
            .map(|e| e.bytes)
            .sum();
        assert_eq!(seen.last().unwrap().bytes_fetched, served);
        assert_eq!(dev.progress(), *seen.last().unwrap());
        assert_eq!(dev.stats().bytes_fetched, served);
    });
}

#[test]
fn plain_failures_are_typed() {
    let f = fixture();
    block_on(async {
        let e = HttpBlockDevice::open(&f.server.url_for("missing.img"), small_options())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::HttpStatus, "{e}");
        assert_eq!(
            f.server.gets_for("/missing.img").len(),
            1,
            "a 404 is not retried"
        );
        let empty = HttpBlockDevice::open(&f.server.url_for("empty.img"), small_options())
            .await
            .unwrap();
        assert_eq!(empty.size(), 0);
        assert!(empty.read_vec(0, 0).await.unwrap().is_empty());
        let dev = HttpBlockDevice::open(&f.server.url_for("disk.img"), small_options())
            .await
            .unwrap();
        assert_eq!(dev.url(), f.server.url_for("disk.img"));
        assert_read_only_then_closed(&dev).await;
        for bad in [
            small_options().chunk_size(1000),
            small_options().chunk_size(256),
            small_options().max_request(100),
            small_options().max_concurrency(0),
            small_options().max_request(2 << 30),
            small_options().timeout(std::time::Duration::ZERO),
        ] {
            let e = HttpBlockDevice::open(&f.server.url_for("disk.img"), bad)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        }
        let e = HttpBlockDevice::open("not a url", small_options())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    });
}

fn backing(name: &str) -> ImplicitOpen {
    ImplicitOpen {
        kind: ImplicitKind::BackingFile,
        name: name.into(),
        format: None,
        depth: 0,
    }
}

#[test]
fn resolver_opens_siblings_only() {
    let f = fixture();
    block_on(async {
        let r = HttpResolver::new(&f.server.url_for("dir/top.img"), small_options()).unwrap();
        let base = r.open(&backing("base.img")).await.unwrap();
        assert_eq!(base.size(), 50_000);
        assert!(base.read_vec(0, 50_000).await.unwrap() == random_bytes(50_000, 2));
        assert!(base.read_only());
        f.server.clear_log();
        let other = f.server.url_for("secret.img");
        for hostile in [
            "../secret.img",
            "/secret.img",
            "dir/../../secret.img",
            other.as_str(),
            "//127.0.0.1/secret.img",
            "http:secret.img",
            "",
            "a\\..\\secret.img",
        ] {
            let e = r.open(&backing(hostile)).await.err().unwrap();
            assert_eq!(e.kind(), ErrorKind::ImplicitOpenDenied, "{hostile}: {e}");
        }
        assert!(f.server.log().is_empty(), "refused names made no request");
        // Encoded dots stay a literal (missing) file name inside dir/.
        let e = r.open(&backing("%2e%2e/secret.img")).await.err().unwrap();
        assert_eq!(e.kind(), ErrorKind::HttpStatus, "{e}");
        let log = f.server.log();
        assert!(log
            .iter()
            .all(|e| e.path.starts_with("/dir/") && e.status == 404));
    });
}

#[test]
fn options_are_cloneable_for_resolvers() {
    let opts = HttpOptions::default().on_progress(|_| {});
    let copy = opts.clone();
    assert!(copy.on_progress.is_some());
    assert!(format!("{copy:?}").contains("chunk_size: 65536"));
}
