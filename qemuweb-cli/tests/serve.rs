//! `qemuweb serve` run for real, checked with curl and with the storage crate's HTTP
//! device.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use futures::executor::block_on;
use qemuweb_storage::format::{open_image, OpenOptions};
use qemuweb_storage::{BlockDevice, HttpBlockDevice, HttpOptions};
use std::process::Command;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A root with files of several types, a subdirectory, symbolic links in and out, and a
/// secret next to the root.
fn site() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(tmp.path().join("secret.txt"), "secret\n").unwrap();
    std::fs::write(root.join("index.html"), "<!doctype html><p>hi</p>\n").unwrap();
    for name in [
        "a.js", "a.mjs", "a.wasm", "a.json", "a.css", "a.qcow2", "a.svg",
    ] {
        std::fs::write(root.join(name), name).unwrap();
    }
    let data = pattern(300_000);
    std::fs::write(root.join("sub/disk.img"), &data).unwrap();
    std::fs::write(root.join("sub/index.html"), "sub index\n").unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("out.txt")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), root.join("outdir")).unwrap();
    std::os::unix::fs::symlink("sub/disk.img", root.join("in.img")).unwrap();
    (tmp, root, data)
}

#[test]
fn isolation_headers_and_mime_types() {
    let (_tmp, root, _) = site();
    let (_server, url) = serve(&root, &[]);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    for (path, mime) in [
        ("", "text/html; charset=utf-8"),
        ("index.html", "text/html; charset=utf-8"),
        ("a.js", "text/javascript; charset=utf-8"),
        ("a.mjs", "text/javascript; charset=utf-8"),
        ("a.wasm", "application/wasm"),
        ("a.json", "application/json"),
        ("a.css", "text/css; charset=utf-8"),
        ("a.svg", "image/svg+xml"),
        ("a.qcow2", "application/octet-stream"),
    ] {
        let a = curl(&[], &format!("{url}{path}"));
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.header("content-type"), Some(mime), "{path}");
        assert_eq!(a.header("cross-origin-opener-policy"), Some("same-origin"));
        assert_eq!(
            a.header("cross-origin-embedder-policy"),
            Some("require-corp")
        );
        assert_eq!(
            a.header("cross-origin-resource-policy"),
            Some("cross-origin")
        );
        assert_eq!(a.header("accept-ranges"), Some("bytes"));
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    }
    let a = curl(&[], &format!("{url}a.wasm"));
    assert_eq!(a.body, b"a.wasm");
}

#[test]
fn ranges_partial_content_and_416() {
    let (_tmp, root, data) = site();
    let (_server, url) = serve(&root, &[]);
    let file = format!("{url}sub/disk.img");

    let a = curl(&["-r", "1000-1999"], &file);
    assert_eq!(a.status, 206);
    assert_eq!(a.header("content-range"), Some("bytes 1000-1999/300000"));
    assert_eq!(a.header("content-length"), Some("1000"));
    assert!(a.body == data[1000..2000]);

    let a = curl(&["-r", "-100"], &file);
    assert_eq!(a.status, 206);
    assert_eq!(
        a.header("content-range"),
        Some("bytes 299900-299999/300000")
    );
    assert!(a.body == data[299_900..]);

    let a = curl(&["-r", "299990-"], &file);
    assert_eq!(a.status, 206);
    assert!(a.body == data[299_990..]);

    // A range past the end is clamped; one starting past the end is unsatisfiable.
    let a = curl(&["-r", "299000-999999"], &file);
    assert_eq!(
        a.header("content-range"),
        Some("bytes 299000-299999/300000")
    );
    let a = curl(&["-r", "300000-"], &file);
    assert_eq!(a.status, 416);
    assert_eq!(a.header("content-range"), Some("bytes */300000"));

    // Several ranges: the whole file, as RFC 9110 allows.
    let a = curl(&["-r", "0-1,5-6"], &file);
    assert_eq!(a.status, 200);
    assert!(a.body == data);

    let a = curl(&[], &file);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-length"), Some("300000"));
    assert!(a.body == data);

    // HEAD: the headers of GET, no body.
    let a = curl(&["-I"], &file);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-length"), Some("300000"));
    assert!(a.body.is_empty());
    let a = curl(&["-I", "-r", "10-19"], &file);
    assert_eq!(a.status, 206);
    assert_eq!(a.header("content-length"), Some("10"));
}

#[test]
fn etags_drive_if_none_match_if_match_and_if_range() {
    let (_tmp, root, data) = site();
    let (_server, url) = serve(&root, &[]);
    let file = format!("{url}sub/disk.img");
    let etag = curl(&["-I"], &file).header("etag").unwrap().to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );

    let inm = format!("If-None-Match: {etag}");
    let a = curl(&["-H", &inm], &file);
    assert_eq!(a.status, 304);
    assert!(a.body.is_empty());
    assert_eq!(a.header("etag"), Some(etag.as_str()));
    let a = curl(&["-H", "If-None-Match: \"other\""], &file);
    assert_eq!(a.status, 200);

    let a = curl(&["-H", "If-Match: \"other\""], &file);
    assert_eq!(a.status, 412);
    let im = format!("If-Match: {etag}");
    assert_eq!(curl(&["-H", &im], &file).status, 200);

    let ir = format!("If-Range: {etag}");
    let a = curl(&["-r", "0-9", "-H", &ir], &file);
    assert_eq!(a.status, 206);
    assert!(a.body == data[..10]);
    let a = curl(&["-r", "0-9", "-H", "If-Range: \"stale\""], &file);
    assert_eq!(a.status, 200);
    assert!(a.body == data);
    let weak = format!("If-Range: W/{etag}");
    assert_eq!(curl(&["-r", "0-9", "-H", &weak], &file).status, 200);

    // Rewriting the file changes the tag; a range pinned to the old one gets the new file.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut changed = data.clone();
    changed[0] ^= 0xff;
    std::fs::write(root.join("sub/disk.img"), &changed).unwrap();
    let new_tag = curl(&["-I"], &file).header("etag").unwrap().to_string();
    assert_ne!(new_tag, etag);
    let a = curl(&["-r", "0-9", "-H", &ir], &file);
    assert_eq!(a.status, 200);
    assert!(a.body == changed);
}

#[test]
fn paths_outside_the_root_are_refused() {
    let (_tmp, root, data) = site();
    let (_server, url) = serve(&root, &[]);
    for path in [
        "../secret.txt",
        "sub/../../secret.txt",
        "%2e%2e/secret.txt",
        "sub/%2E%2E%2F%2E%2E%2Fsecret.txt",
        "out.txt",
        "outdir/secret.txt",
    ] {
        let a = curl(&[], &format!("{url}{path}"));
        assert_eq!(a.status, 403, "{path}");
        assert!(
            !String::from_utf8_lossy(&a.body).contains("secret"),
            "{path}"
        );
    }
    // Links are judged by where they lead: back inside the root is fine.
    assert_eq!(
        curl(&[], &format!("{url}outdir/site/index.html")).status,
        200
    );
    // A link inside the root is served; missing files are 404; bad escapes 400.
    let a = curl(&[], &format!("{url}in.img"));
    assert_eq!(a.status, 200);
    assert!(a.body == data);
    assert_eq!(curl(&[], &format!("{url}nope.txt")).status, 404);
    assert_eq!(curl(&[], &format!("{url}%zz")).status, 400);
    assert_eq!(curl(&[], &format!("{url}a%00b")).status, 400);
    // A directory without the slash is redirected to a same-origin path, never `//host`.
    let a = curl(&[], &format!("{url}/sub"));
    assert_eq!(a.status, 301);
    assert_eq!(a.header("location"), Some("/sub/"));
    assert_eq!(curl(&[], &format!("{url}sub/")).body, b"sub index\n");
    // Only GET, HEAD and OPTIONS.
    let a = curl(&["-X", "POST", "-d", "x"], &format!("{url}index.html"));
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow"), Some("GET, HEAD, OPTIONS"));
    let a = curl(&["-X", "OPTIONS"], &format!("{url}index.html"));
    assert_eq!(a.status, 204);
    assert!(a
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Range"));
}

#[test]
fn a_missing_root_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(QEMUWEB)
        .arg("serve")
        .arg(tmp.path().join("missing"))
        .args(["--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

/// Reads the whole image through `HttpBlockDevice` and `open_image` in uneven pieces.
fn read_through_http(url: &str) -> Vec<u8> {
    block_on(async {
        let options = HttpOptions::default()
            .chunk_size(64 * 1024)
            .read_ahead(128 * 1024);
        let dev = HttpBlockDevice::open(url, options).await.unwrap();
        assert!(dev.validator().is_some_and(|v| v.starts_with('"')));
        let image = open_image(Box::new(dev), &OpenOptions::default())
            .await
            .unwrap();
        let size = image.size();
        let mut out = Vec::with_capacity(size as usize);
        let mut off = 0u64;
        let mut step = 512u64;
        while off < size {
            let len = step.min(size - off) as usize;
            out.extend(image.read_vec(off, len).await.unwrap());
            off += len as u64;
            step = (step * 3) % 200_000 + 512;
        }
        out
    })
}

#[test]
fn the_http_device_reads_qcow2_images_byte_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    let guests = qemuweb_guests::write_guest_images(&root, None).unwrap();
    // A compressed qcow2 with small clusters as well as the plain one.
    let compressed = root.join("x86-bios-c.qcow2");
    run(Command::new("qemu-img")
        .args([
            "convert",
            "-q",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
        ])
        .arg(&guests.x86_raw)
        .arg(&compressed));
    let (_server, url) = serve(&root, &[]);
    for image in [&guests.x86_qcow2, &compressed, &guests.x86_raw] {
        let name = image.file_name().unwrap().to_str().unwrap();
        let expected = qemu_img_raw(image, tmp.path());
        let got = read_through_http(&format!("{url}{name}"));
        assert_eq!(got.len(), expected.len(), "{name}");
        assert!(got == expected, "{name}: bytes differ");
    }
    assert_eq!(
        qemu_img_raw(&guests.x86_qcow2, tmp.path()),
        qemuweb_guests::x86_bios_disk()
    );
}

#[test]
fn bind_address_is_used() {
    let (_tmp, root, _) = site();
    let (_server, url) = serve(&root, &["--bind", "127.0.0.1"]);
    assert!(url.starts_with("http://127.0.0.1:"));
    assert_eq!(curl(&[], &url).status, 200);
}
