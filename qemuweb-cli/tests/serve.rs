//! `qemuweb serve` run for real: what the command adds to `qemuweb-http` (whose own tests
//! cover Range, ETags, traversal and the rest once): its flags, safety by default, and
//! the storage crate's HTTP device reading images through it.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use futures::executor::block_on;
use qemuweb_storage::format::{open_image, OpenOptions};
use qemuweb_storage::{BlockDevice, HttpBlockDevice, HttpOptions};
use std::process::Command;

/// A root with a page, a disk and a secret next to it.
fn site() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "<!doctype html><p>hi</p>\n").unwrap();
    std::fs::write(root.join("secret.txt"), "TOP SECRET\n").unwrap();
    std::fs::write(root.join("a.wasm"), "a.wasm").unwrap();
    (tmp, root)
}

#[test]
fn isolation_headers_and_no_cors_by_default() {
    let (_tmp, root) = site();
    let (_server, url) = serve(&root, &[]);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let a = curl(
        &["-H", "Origin: http://127.0.0.1:1"],
        &format!("{url}a.wasm"),
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/wasm"));
    assert_eq!(a.header("cross-origin-opener-policy"), Some("same-origin"));
    assert_eq!(
        a.header("cross-origin-embedder-policy"),
        Some("require-corp")
    );
    assert_eq!(
        a.header("cross-origin-resource-policy"),
        Some("same-origin")
    );
    assert_eq!(a.header("access-control-allow-origin"), None);
}

#[test]
fn cors_only_for_named_origins_or_by_the_any_flag() {
    let (_tmp, root) = site();
    let (_server, url) = serve(&root, &["--cors-origin", "http://127.0.0.1:1"]);
    let file = format!("{url}secret.txt");
    let a = curl(&["-H", "Origin: http://127.0.0.1:1"], &file);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("http://127.0.0.1:1")
    );
    let a = curl(&["-H", "Origin: http://127.0.0.1:2"], &file);
    assert_eq!(a.header("access-control-allow-origin"), None);

    let (_server, url) = serve(&root, &["--cors-any"]);
    let a = curl(
        &["-H", "Origin: http://evil.example"],
        &format!("{url}secret.txt"),
    );
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        a.header("cross-origin-resource-policy"),
        Some("cross-origin")
    );

    let bad = qemuweb_serve_refused(Command::new(QEMUWEB).arg("serve").arg(&root).args([
        "--port",
        "0",
        "--cors-origin",
        "*",
    ]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an origin"));
}

/// Issue 13: a request naming another host (a DNS-rebinding page) is refused.
#[test]
fn a_foreign_host_header_is_refused() {
    let (_tmp, root) = site();
    let (_server, url) = serve(&root, &[]);
    let port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let file = format!("{url}secret.txt");
    let a = curl(&["-H", &format!("Host: rebind.example:{port}")], &file);
    assert_eq!(a.status, 403);
    assert!(!String::from_utf8_lossy(&a.body).contains("TOP SECRET"));
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        assert_eq!(curl(&["-H", &format!("Host: {host}")], &file).status, 200);
    }
    // A name the user asked for is answered.
    let (_server, url) = serve(&root, &["--allow-host", "vm.box:1234"]);
    let a = curl(&["-H", "Host: vm.box:1234"], &format!("{url}secret.txt"));
    assert_eq!(a.status, 200);
}

/// Issue 13: a page on another origin (another port of 127.0.0.1) cannot read the files
/// `qemuweb serve` serves, in a real browser; naming its origin lets it.
#[test]
fn a_page_of_another_origin_cannot_read_the_files() {
    let (tmp, root) = site();
    let attacker = tmp.path().join("attacker");
    std::fs::create_dir_all(&attacker).unwrap();
    std::fs::write(
        attacker.join("read.html"),
        r#"<!doctype html><body>waiting</body><script>
        (async () => {
          const target = new URLSearchParams(location.search).get('target');
          let result;
          try {
            const r = await fetch(target + 'secret.txt');
            result = 'READ ' + r.status + ' ' + (await r.text());
          } catch (e) {
            result = 'BLOCKED ' + e.name;
          }
          document.body.textContent = result;
        })();
        </script>"#,
    )
    .unwrap();
    let (_attacker_server, attacker_url) = serve(&attacker, &[]);
    let (_server, url) = serve(&root, &[]);
    let dom = chromium_dom(&format!("{attacker_url}read.html?target={url}"), 5000);
    assert!(dom.contains("BLOCKED TypeError"), "{dom}");
    assert!(!dom.contains("TOP SECRET"), "{dom}");

    // The same page, its origin named by --cors-origin: it reads (the check above is real).
    let origin = attacker_url.trim_end_matches('/');
    let (_server, url) = serve(&root, &["--cors-origin", origin]);
    let dom = chromium_dom(&format!("{attacker_url}read.html?target={url}"), 5000);
    assert!(dom.contains("READ 200 TOP SECRET"), "{dom}");
}

#[test]
fn a_missing_root_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = qemuweb_serve_refused(
        Command::new(QEMUWEB)
            .arg("serve")
            .arg(tmp.path().join("missing"))
            .args(["--port", "0"]),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

/// Runs a `qemuweb serve` that must refuse to start, under the watchdog: should it serve
/// instead, the test fails in 30 s rather than hanging.
fn qemuweb_serve_refused(cmd: &mut Command) -> qemuweb_testkit::watchdog::Finished {
    let mut serve = qemuweb_testkit::watchdog::watch(
        "qemuweb serve (to be refused)",
        cmd,
        std::time::Duration::from_secs(30),
    );
    serve.close_stdin();
    serve.finish()
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
}

#[test]
fn bind_address_is_used() {
    let (_tmp, root) = site();
    let (_server, url) = serve(&root, &["--bind", "127.0.0.1"]);
    assert!(url.starts_with("http://127.0.0.1:"));
    assert_eq!(curl(&[], &url).status, 200);
}
