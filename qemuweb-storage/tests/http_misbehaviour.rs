//! Every scripted misbehaviour of the test server, and hand-made malformed answers, end in
//! the right typed error or in a successful retry, and never in wrong bytes.
#![cfg(not(target_arch = "wasm32"))]

mod http_support;

use futures::executor::block_on;
use http_support::*;
use qemuweb_storage::resolver::{ImageResolver, ImplicitKind, ImplicitOpen};
use qemuweb_storage::{BlockDevice, ErrorKind, HttpBlockDevice, HttpResolver, StorageError};
use std::time::{Duration, Instant};

fn open(f: &Fixture, token: &str, mode: &str) -> Result<HttpBlockDevice, StorageError> {
    let url = f.server.misbehaving_url(token, mode, "disk.img");
    block_on(HttpBlockDevice::open(&url, small_options().max_retries(3)))
}

fn gets(f: &Fixture, token: &str) -> usize {
    f.server.gets_for(&format!("/__mis/{token}/")).len()
}

/// Reads the whole image in pieces and compares it with the file.
fn check_all(f: &Fixture, dev: &HttpBlockDevice) {
    block_on(async {
        for off in (0..DISK_SIZE).step_by(100_000) {
            let len = 100_000.min(DISK_SIZE - off);
            let got = dev.read_vec(off as u64, len).await.unwrap();
            assert!(got == f.data[off..off + len], "bytes at {off}");
        }
    });
}

#[test]
fn ignoring_range_is_range_not_supported() {
    let f = fixture();
    let e = open(&f, "ir", "ignore-range").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RangeNotSupported, "{e}");
    assert_eq!(gets(&f, "ir"), 1, "not retried");
}

#[test]
fn transient_failures_are_retried_then_succeed() {
    let f = fixture();
    for (token, mode) in [
        ("t1", "truncate-2"),
        ("t2", "short-3"),
        ("t3", "status-503-3"),
        ("t4", "status-500-1"),
        ("t5", "status-502-1"),
        ("t6", "status-504-1"),
        ("t7", "status-429-2"),
        ("t8", "status-408-1"),
    ] {
        let dev = open(&f, token, mode).unwrap_or_else(|e| panic!("{mode}: {e}"));
        let retries = dev.stats().retries;
        assert!(retries >= 1, "{mode}: {:?}", dev.stats());
        assert_eq!(gets(&f, token) as u64, 1 + retries, "{mode}");
        check_all(&f, &dev);
    }
}

#[test]
fn failures_during_reads_are_retried_too() {
    let f = fixture();
    for (token, mode) in [
        ("r1", "after-1-truncate-2"),
        ("r2", "after-1-short-2"),
        ("r3", "after-2-status-503-2"),
    ] {
        let dev = open(&f, token, mode).unwrap();
        assert_eq!(dev.stats().retries, 0, "{mode}");
        check_all(&f, &dev);
        assert_eq!(dev.stats().retries, 2, "{mode}");
    }
    // Without retries a failure during a read is reported, and a later read succeeds.
    let url = f
        .server
        .misbehaving_url("r4", "after-1-truncate-1", "disk.img");
    let dev = block_on(HttpBlockDevice::open(&url, small_options().max_retries(0))).unwrap();
    let e = block_on(dev.read_vec(600_000, 10)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    let got = block_on(dev.read_vec(600_000, 10)).unwrap();
    assert!(got == f.data[600_000..600_010]);
    // A swap during reads with transient errors before it still ends in ImageChanged.
    let dev = open(&f, "r5", "swap-2").unwrap();
    block_on(dev.read_vec(300_000, 10)).unwrap();
    let e = block_on(dev.read_vec(700_000, 10)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ImageChanged, "{e}");
}

#[test]
fn persistent_failures_give_typed_errors_after_the_retry_limit() {
    let f = fixture();
    let e = open(&f, "p1", "status-503").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HttpStatus, "{e}");
    assert!(e.to_string().contains("503"), "{e}");
    assert_eq!(gets(&f, "p1"), 4, "one try and three retries");
    let e = open(&f, "p2", "truncate-100").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    assert_eq!(gets(&f, "p2"), 4);
    let e = open(&f, "p3", "short-100").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    for (token, mode) in [
        ("p4", "status-404"),
        ("p5", "status-403"),
        ("p6", "status-410"),
    ] {
        let e = open(&f, token, mode).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::HttpStatus, "{mode}: {e}");
        assert_eq!(gets(&f, token), 1, "{mode} is not retried");
    }
    let e = open(&f, "p7", "status-501").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HttpStatus, "{e}");
    assert_eq!(gets(&f, "p7"), 1, "501 is not transient");
}

#[test]
fn a_swapped_image_is_detected_and_never_mixed() {
    let f = fixture();
    let dev = open(&f, "sw", "swap-1").unwrap();
    let first = block_on(dev.read_vec(0, 4096)).unwrap();
    assert!(first == f.data[..4096]);
    for _ in 0..3 {
        let e = block_on(dev.read_vec(500_000, 10)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ImageChanged, "{e}");
    }
    // The cached part of the original image still reads as the original.
    assert!(block_on(dev.read_vec(0, 4096)).unwrap() == first);
    let log = f.server.gets_for("/__mis/sw/");
    assert!(log[1..]
        .iter()
        .all(|e| e.status == 200 && e.if_range.is_some()));
    // A device opened after the swap reads the new content consistently.
    let dev2 = open(&f, "sw", "swap-1").unwrap();
    let new = block_on(dev2.read_vec(500_000, 10)).unwrap();
    let want: Vec<u8> = f.data[500_000..500_010].iter().map(|b| b ^ 0x5a).collect();
    assert_eq!(new, want);
    assert_ne!(dev.validator(), dev2.validator());
}

#[test]
fn a_wrong_content_range_is_a_bad_response() {
    let f = fixture();
    let e = open(&f, "wr", "wrong-range").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadResponse, "{e}");
    assert_eq!(gets(&f, "wr"), 1);
}

#[test]
fn a_weak_etag_pins_last_modified() {
    let f = fixture();
    let dev = open(&f, "wk", "weak-etag").unwrap();
    let v = dev.validator().unwrap().to_string();
    assert!(v.ends_with(" GMT"), "{v}");
    check_all(&f, &dev);
    let log = f.server.gets_for("/__mis/wk/");
    assert!(log.len() > 1);
    assert!(log[1..]
        .iter()
        .all(|e| e.if_range.as_deref() == Some(v.as_str())));
    assert!(log.iter().all(|e| e.status == 206));
}

fn canned(head: &str, body: &[u8]) -> String {
    let mut r = head.replace('\n', "\r\n").into_bytes();
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    canned_server(r)
}

#[test]
fn malformed_answers_are_bad_responses() {
    let body = [1u8; 4096];
    let cases = [
        "HTTP/1.1 206 Partial Content\nContent-Length: 4096\n",
        "HTTP/1.1 206 Partial Content\nContent-Range: bytes 0-4095/abc\nContent-Length: 4096\n",
        "HTTP/1.1 206 Partial Content\nContent-Range: bytes 0-4095/*\nContent-Length: 4096\n",
        "HTTP/1.1 206 Partial Content\nContent-Range: bytes 0-4095/100\nContent-Length: 4096\n",
        "HTTP/1.1 206 Partial Content\nContent-Range: bytes 5-4100/9000\nContent-Length: 4096\n",
        "HTTP/1.1 206 Partial Content\nContent-Range: lines 0-4095/9000\nContent-Length: 4096\n",
        "HTTP/1.1 206 Partial Content\nContent-Range: bytes 0-4095/9000\nContent-Length: 5000\n",
        "HTTP/1.1 204 No Content\n",
        "HTTP/1.1 416 Range Not Satisfiable\nContent-Range: bytes */9000\nContent-Length: 0\n",
    ];
    for head in cases {
        let url = canned(head, if head.contains("204") { b"" } else { &body });
        let e = block_on(HttpBlockDevice::open(&url, small_options()))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadResponse, "{head}: {e}");
    }
    // A body longer than its range (no Content-Length, closed connection).
    let url = canned(
        "HTTP/1.1 206 Partial Content\nContent-Range: bytes 0-4095/9000\nConnection: close\n",
        &[1u8; 5000],
    );
    let e = block_on(HttpBlockDevice::open(&url, small_options())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadResponse, "{e}");
    // Garbage instead of HTTP.
    let url = canned_server(b"\x00\x01garbage\r\n\r\n".to_vec());
    let e = block_on(HttpBlockDevice::open(&url, small_options().max_retries(1))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
}

#[test]
fn unreachable_and_silent_servers_fail_in_time() {
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/x.img");
    let e = block_on(HttpBlockDevice::open(&url, small_options().max_retries(2))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");

    // A server that accepts and never answers: the timeout turns it into a network error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x.img", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(2).collect();
        std::thread::sleep(Duration::from_secs(3));
        drop(conns);
    });
    let t = Instant::now();
    let opts = small_options()
        .timeout(Duration::from_millis(300))
        .max_retries(1);
    let e = block_on(HttpBlockDevice::open(&url, opts)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    held.join().unwrap();
}

/// A redirect to another origin is refused, for the image and for a file it names, and
/// nothing is fetched from the redirect's target; a same-origin redirect is followed.
#[test]
fn cross_origin_redirects_are_refused() {
    let f = fixture();
    let e = open(&f, "rx", "redirect-cross").expect_err("a cross-origin redirect was followed");
    assert_eq!(e.kind(), ErrorKind::RedirectRefused, "{e}");
    assert!(e.to_string().contains("http://localhost:"), "{e}");
    assert_eq!(gets(&f, "rx"), 1, "not retried");
    assert!(
        f.server.gets_for("/disk.img").is_empty(),
        "the target was fetched"
    );

    // The files an image names: resolved on its origin, then redirected away.
    let top = f
        .server
        .misbehaving_url("rn", "redirect-cross", "dir/top.img");
    let r = HttpResolver::new(&top, small_options()).unwrap();
    let req = ImplicitOpen {
        kind: ImplicitKind::BackingFile,
        name: "base.img".into(),
        format: None,
        depth: 0,
    };
    let e = block_on(r.open(&req))
        .err()
        .expect("the redirected base was opened");
    assert_eq!(e.kind(), ErrorKind::RedirectRefused, "{e}");
    assert!(f.server.gets_for("/dir/base.img").is_empty());

    // Same origin: followed, every read byte-exact.
    let dev = open(&f, "rs", "redirect-same").unwrap();
    check_all(&f, &dev);
    assert!(!f.server.gets_for("/disk.img").is_empty());
}

/// A redirect chain that loops ends in a typed error.
#[test]
fn redirect_loops_end() {
    let url = canned(
        "HTTP/1.1 302 Found\nLocation: /x.img\nContent-Length: 0\n",
        b"",
    );
    let e = block_on(HttpBlockDevice::open(&url, small_options())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RedirectRefused, "{e}");
    assert!(e.to_string().contains("redirects"), "{e}");
}

/// A server that claims the image is u64::MAX bytes long: the device reads its very end
/// (zeros from this server) without an arithmetic overflow.
#[test]
fn a_size_near_u64_max_is_read_without_overflow() {
    let f = fixture();
    let dev = open(&f, "big", &format!("claim-size-{}", u64::MAX)).unwrap();
    assert_eq!(dev.size(), u64::MAX);
    block_on(async {
        for off in [u64::MAX - 10, u64::MAX - 5000, 1 << 63, u64::MAX / 2] {
            let got = dev.read_vec(off, (u64::MAX - off).min(300) as usize).await;
            assert!(got.unwrap().iter().all(|&b| b == 0), "{off}");
        }
        let e = dev.read_vec(u64::MAX - 1, 2).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfRange);
    });
}

/// A body without Content-Length is read to the end of the connection, but never past one
/// more byte than the range: a server that floods ends in a bad response at once.
#[test]
fn bodies_without_length_are_bounded() {
    let f = fixture();
    let dev = open(&f, "nl", "no-length").unwrap();
    check_all(&f, &dev);
    let t = Instant::now();
    let e = open(&f, "flood", "no-length-flood").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadResponse, "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
