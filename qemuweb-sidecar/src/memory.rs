//! Shared memory for the frame ring: bytes addressed as atomic little-endian `u32` words.
//!
//! The ring's logic ([`crate::ring`]) is written once over [`SharedWords`]. Natively
//! [`SharedMemory`] backs it with atomics in an [`Arc`](std::sync::Arc), so a producer
//! and a consumer can live on different threads; on wasm32 `SabMemory` backs it with a
//! `SharedArrayBuffer` and `Atomics`, so they can live in a worker and the page.

use std::time::Duration;

/// How a [`SharedWords::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken by [`SharedWords::notify`] (or spuriously).
    Woken,
    /// The word no longer held the expected value.
    NotEqual,
    /// The timeout passed.
    TimedOut,
    /// Blocking is not allowed in this context (the page's main thread).
    Unsupported,
}

/// Memory shared between the ring's producer and consumer: `len_words()` little-endian
/// `u32` words, read and written atomically (sequentially consistent) one word at a
/// time, plus byte copies for frame data.
///
/// Byte copies need not be atomic: the ring only copies into or out of a slot that its
/// side owns, and ownership moves through the atomic word operations. Indexes and
/// offsets passed by the ring are always in bounds (checked when a side attaches);
/// implementations may panic on out-of-bounds access.
pub trait SharedWords {
    /// The number of `u32` words.
    fn len_words(&self) -> usize;
    /// Atomically loads word `index`.
    fn load(&self, index: usize) -> u32;
    /// Atomically stores `value` in word `index`.
    fn store(&self, index: usize, value: u32);
    /// Atomically replaces word `index` with `new` if it is `current`; returns the
    /// previous value, as `Ok` if it was replaced.
    fn compare_exchange(&self, index: usize, current: u32, new: u32) -> Result<u32, u32>;
    /// Atomically adds `value` (wrapping) to word `index`; returns the previous value.
    fn fetch_add(&self, index: usize, value: u32) -> u32;
    /// Copies `src` into the memory starting at byte `offset`.
    fn write_bytes(&self, offset: usize, src: &[u8]);
    /// Copies bytes starting at byte `offset` into `dst`.
    fn read_bytes(&self, offset: usize, dst: &mut [u8]);
    /// Blocks while word `index` is `expected`, until [`notify`](Self::notify)ed or
    /// `timeout` passes.
    fn wait(&self, index: usize, expected: u32, timeout: Duration) -> WaitOutcome;
    /// Wakes every waiter on word `index`.
    fn notify(&self, index: usize);
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::SharedMemory;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::{SharedWords, WaitOutcome};
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    struct Inner {
        words: Box<[AtomicU32]>,
        lock: Mutex<()>,
        woken: Condvar,
    }

    /// Native shared memory: atomic words behind an [`Arc`]; clones share the words, so
    /// a producer and a consumer on different threads each hold a clone. Waiting uses a
    /// condition variable that [`notify`](SharedWords::notify) signals.
    ///
    /// ```
    /// use qemuweb_sidecar::{SharedMemory, SharedWords};
    /// let a = SharedMemory::new(4);
    /// let b = a.clone();
    /// a.write_bytes(3, &[1, 2, 3]);
    /// let mut out = [0; 3];
    /// b.read_bytes(3, &mut out);
    /// assert_eq!(out, [1, 2, 3]);
    /// assert_eq!(b.load(1), 0x0302);
    /// ```
    #[derive(Clone)]
    pub struct SharedMemory {
        inner: Arc<Inner>,
    }

    impl std::fmt::Debug for SharedMemory {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SharedMemory")
                .field("len_words", &self.inner.words.len())
                .finish()
        }
    }

    impl SharedMemory {
        /// `len_words` zeroed words.
        pub fn new(len_words: usize) -> SharedMemory {
            SharedMemory {
                inner: Arc::new(Inner {
                    words: (0..len_words).map(|_| AtomicU32::new(0)).collect(),
                    lock: Mutex::new(()),
                    woken: Condvar::new(),
                }),
            }
        }

        fn word(&self, index: usize) -> &AtomicU32 {
            &self.inner.words[index]
        }
    }

    impl SharedWords for SharedMemory {
        fn len_words(&self) -> usize {
            self.inner.words.len()
        }

        fn load(&self, index: usize) -> u32 {
            self.word(index).load(SeqCst)
        }

        fn store(&self, index: usize, value: u32) {
            self.word(index).store(value, SeqCst)
        }

        fn compare_exchange(&self, index: usize, current: u32, new: u32) -> Result<u32, u32> {
            self.word(index)
                .compare_exchange(current, new, SeqCst, SeqCst)
        }

        fn fetch_add(&self, index: usize, value: u32) -> u32 {
            self.word(index).fetch_add(value, SeqCst)
        }

        fn write_bytes(&self, offset: usize, src: &[u8]) {
            let mut pos = offset;
            let mut src = src;
            while !src.is_empty() {
                let (index, within) = (pos / 4, pos % 4);
                let n = (4 - within).min(src.len());
                let word = self.word(index);
                if n == 4 {
                    let v = u32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                    word.store(v, std::sync::atomic::Ordering::Relaxed);
                } else {
                    let mut bytes = word
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .to_le_bytes();
                    bytes[within..within + n].copy_from_slice(&src[..n]);
                    word.store(
                        u32::from_le_bytes(bytes),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                pos += n;
                src = &src[n..];
            }
        }

        fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
            let mut pos = offset;
            let mut done = 0;
            while done < dst.len() {
                let (index, within) = (pos / 4, pos % 4);
                let n = (4 - within).min(dst.len() - done);
                let bytes = self
                    .word(index)
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_le_bytes();
                dst[done..done + n].copy_from_slice(&bytes[within..within + n]);
                pos += n;
                done += n;
            }
        }

        fn wait(&self, index: usize, expected: u32, timeout: Duration) -> WaitOutcome {
            let deadline = Instant::now() + timeout;
            let mut guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            if self.load(index) != expected {
                return WaitOutcome::NotEqual;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let (g, result) = self
                .inner
                .woken
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner());
            guard = g;
            drop(guard);
            if result.timed_out() {
                WaitOutcome::TimedOut
            } else {
                WaitOutcome::Woken
            }
        }

        fn notify(&self, _index: usize) {
            // Taking the lock orders this after a waiter's check-then-sleep, so a store
            // made before `notify` is never missed.
            let _guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.inner.woken.notify_all();
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use wasm::SabMemory;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use super::{SharedWords, WaitOutcome};
    use js_sys::{Atomics, Int32Array, SharedArrayBuffer, Uint8Array};
    use std::time::Duration;

    #[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
export function sidecar_sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
"#)]
    extern "C" {
        fn sidecar_sleep(ms: f64) -> js_sys::Promise;
    }

    /// Sleeps `ms` milliseconds (a `setTimeout`), in a window or a worker.
    pub(crate) async fn sleep_ms(ms: f64) {
        let _ = wasm_bindgen_futures::JsFuture::from(sidecar_sleep(ms)).await;
    }

    const IN_BOUNDS: &str = "ring word index in bounds (checked on attach)";

    /// Shared memory in a `SharedArrayBuffer`, used through `Atomics`; post the buffer
    /// to a worker and wrap it there too, so both sides share it. Waiting uses
    /// `Atomics.wait`, which works in workers; on the page's main thread it reports
    /// [`WaitOutcome::Unsupported`] (poll with `try_receive` there).
    #[derive(Debug, Clone)]
    pub struct SabMemory {
        buffer: SharedArrayBuffer,
        words: Int32Array,
        bytes: Uint8Array,
    }

    impl SabMemory {
        /// A new zeroed buffer of `len_words` words.
        pub fn new(len_words: usize) -> SabMemory {
            SabMemory::from_buffer(SharedArrayBuffer::new((len_words * 4) as u32))
        }

        /// Wraps an existing buffer (e.g. one received from another thread). A length
        /// that is not a multiple of 4 has its tail ignored.
        pub fn from_buffer(buffer: SharedArrayBuffer) -> SabMemory {
            let words =
                Int32Array::new_with_byte_offset_and_length(&buffer, 0, buffer.byte_length() / 4);
            let bytes = Uint8Array::new(&buffer);
            SabMemory {
                buffer,
                words,
                bytes,
            }
        }

        /// The buffer, to post to another thread.
        pub fn buffer(&self) -> &SharedArrayBuffer {
            &self.buffer
        }

        /// Waits without blocking the thread (`Atomics.waitAsync`, allowed on the page's
        /// main thread too) while word `index` is `expected`, until notified or
        /// `timeout` passes. Where `Atomics.waitAsync` is missing it sleeps for the
        /// timeout (capped at 16 ms, a display frame) and reports `TimedOut`.
        pub async fn wait_async(
            &self,
            index: usize,
            expected: u32,
            timeout: Duration,
        ) -> WaitOutcome {
            let ms = timeout.as_secs_f64() * 1000.0;
            let result = match Atomics::wait_async_with_timeout(
                &self.words,
                index as u32,
                expected as i32,
                ms,
            ) {
                Ok(result) => result,
                Err(_) => {
                    sleep_ms(ms.min(16.0)).await;
                    return WaitOutcome::TimedOut;
                }
            };
            let is_async = js_sys::Reflect::get(&result, &"async".into())
                .map(|v| v.is_truthy())
                .unwrap_or(false);
            let value = js_sys::Reflect::get(&result, &"value".into()).unwrap_or_default();
            let outcome = if is_async {
                match wasm_bindgen_futures::JsFuture::from(js_sys::Promise::from(value)).await {
                    Ok(v) => v.as_string().unwrap_or_default(),
                    Err(_) => return WaitOutcome::Unsupported,
                }
            } else {
                value.as_string().unwrap_or_default()
            };
            match outcome.as_str() {
                "not-equal" => WaitOutcome::NotEqual,
                "timed-out" => WaitOutcome::TimedOut,
                _ => WaitOutcome::Woken,
            }
        }
    }

    impl SharedWords for SabMemory {
        fn len_words(&self) -> usize {
            self.words.length() as usize
        }

        fn load(&self, index: usize) -> u32 {
            Atomics::load(&self.words, index as u32).expect(IN_BOUNDS) as u32
        }

        fn store(&self, index: usize, value: u32) {
            Atomics::store(&self.words, index as u32, value as i32).expect(IN_BOUNDS);
        }

        fn compare_exchange(&self, index: usize, current: u32, new: u32) -> Result<u32, u32> {
            let old =
                Atomics::compare_exchange(&self.words, index as u32, current as i32, new as i32)
                    .expect(IN_BOUNDS) as u32;
            if old == current {
                Ok(old)
            } else {
                Err(old)
            }
        }

        fn fetch_add(&self, index: usize, value: u32) -> u32 {
            Atomics::add(&self.words, index as u32, value as i32).expect(IN_BOUNDS) as u32
        }

        fn write_bytes(&self, offset: usize, src: &[u8]) {
            let end = (offset + src.len()) as u32;
            self.bytes.subarray(offset as u32, end).copy_from(src);
        }

        fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
            let end = (offset + dst.len()) as u32;
            self.bytes.subarray(offset as u32, end).copy_to(dst);
        }

        fn wait(&self, index: usize, expected: u32, timeout: Duration) -> WaitOutcome {
            let ms = timeout.as_secs_f64() * 1000.0;
            match Atomics::wait_with_timeout(&self.words, index as u32, expected as i32, ms) {
                Ok(s) => match String::from(s).as_str() {
                    "not-equal" => WaitOutcome::NotEqual,
                    "timed-out" => WaitOutcome::TimedOut,
                    _ => WaitOutcome::Woken,
                },
                // Atomics.wait throws where blocking is not allowed (the main thread).
                Err(_) => WaitOutcome::Unsupported,
            }
        }

        fn notify(&self, index: usize) {
            let _ = Atomics::notify(&self.words, index as u32);
        }
    }
}
