//! Shared set-up for the native HTTP tests: a directory of test files served by the real
//! test server of `qemuweb-testkit`.
#![allow(dead_code)]

#[path = "../device_common/mod.rs"]
mod device_common;
pub use device_common::*;

use qemuweb_storage::HttpOptions;
use qemuweb_testkit::server::TestServer;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

pub struct Fixture {
    pub server: TestServer,
    pub dir: PathBuf,
    pub data: Vec<u8>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed);
    (0..len).map(|_| r.next() as u8).collect()
}

/// Serves a fresh directory holding `disk.img` (random), `dir/top.img`, `dir/base.img`,
/// `secret.img` (outside `dir/`) and `empty.img`.
pub fn fixture() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("qemuweb-http-test-")
        .tempdir()
        .unwrap()
        .keep();
    std::fs::create_dir_all(dir.join("dir")).unwrap();
    let data = random_bytes(DISK_SIZE, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(dir.join("disk.img"), &data).unwrap();
    std::fs::write(dir.join("dir/top.img"), random_bytes(70_000, 1)).unwrap();
    std::fs::write(dir.join("dir/base.img"), random_bytes(50_000, 2)).unwrap();
    std::fs::write(dir.join("secret.img"), random_bytes(5_000, 3)).unwrap();
    std::fs::write(dir.join("empty.img"), b"").unwrap();
    let server = TestServer::start(&dir).unwrap();
    Fixture { server, dir, data }
}

/// Options with small chunks and fast retries, so tests are quick and show structure.
pub fn small_options() -> HttpOptions {
    small_chunks()
        .retry_base_delay(Duration::from_millis(1))
        .timeout(Duration::from_secs(10))
}

/// A server on 127.0.0.1 that answers every request on every connection with `response`
/// (then closes), for responses the real server never sends. Returns its URL.
pub fn canned_server(response: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let response = response.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(&response);
            });
        }
    });
    format!("http://{addr}/x.img")
}
