//! Plain-Rust helpers of both the native HTTP tests (`http_support`) and the browser tests
//! (`web_support`), which include this module by path: it compiles for both targets.
#![allow(dead_code)]

use qemuweb_storage::{BlockDevice, ErrorKind, HttpOptions};

/// The size of the served `disk.img` (made by `http_support::fixture` natively and by
/// `scripts/browser-tests.sh` for the browser): not a multiple of any chunk size, so the
/// last chunk is short.
pub const DISK_SIZE: usize = 1_000_003;

/// HTTP options with small chunks (4 KiB, 1024 cached, no read-ahead, at most 1 MiB a
/// request), so tests are quick and show structure; each support module's `small_options`
/// adds the retry and timeout settings for its target.
pub fn small_chunks() -> HttpOptions {
    HttpOptions::default()
        .chunk_size(4096)
        .cache_chunks(1024)
        .read_ahead(0)
        .max_request(1 << 20)
}

/// A small deterministic pseudo-random generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `dev`, read-only and open, refuses a write; then it closes, and refuses reads.
pub async fn assert_read_only_then_closed(dev: &dyn BlockDevice) {
    assert_eq!(
        dev.write_at(0, b"x").await.unwrap_err().kind(),
        ErrorKind::ReadOnly
    );
    dev.close().await.unwrap();
    assert_eq!(
        dev.read_vec(0, 1).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
}
