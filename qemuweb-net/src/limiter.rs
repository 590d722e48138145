//! Token buckets bounding what one port sends: frames and bytes per second, with a burst.

use qemuweb_config::PortLimits;

/// Two token buckets (frames, bytes), refilled from the caller's clock in milliseconds.
/// Tokens are kept in thousandths so that refills of one millisecond are exact.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    frames: Bucket,
    bytes: Bucket,
    last_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Bucket {
    /// Tokens, in thousandths.
    milli: u128,
    /// The most tokens, in thousandths.
    cap_milli: u128,
    /// Tokens added per second (= thousandths per millisecond).
    per_second: u128,
}

impl Bucket {
    fn new(cap: u64, per_second: u64) -> Self {
        let cap_milli = u128::from(cap.max(1)) * 1000;
        Bucket {
            milli: cap_milli,
            cap_milli,
            per_second: u128::from(per_second.max(1)),
        }
    }

    fn refill(&mut self, elapsed_ms: u64) {
        let add = u128::from(elapsed_ms).saturating_mul(self.per_second);
        self.milli = self.milli.saturating_add(add).min(self.cap_milli);
    }
}

impl RateLimiter {
    /// Full buckets: `burst_frames` frames, and one second of bytes (at least one
    /// `burst_frames` of largest frames' worth is not needed: a second is plenty).
    pub(crate) fn new(limits: &PortLimits) -> Self {
        RateLimiter {
            frames: Bucket::new(
                u64::from(limits.burst_frames),
                u64::from(limits.frames_per_second),
            ),
            bytes: Bucket::new(
                u64::from(limits.bytes_per_second).max(u64::from(limits.max_frame_bytes)),
                u64::from(limits.bytes_per_second),
            ),
            last_ms: None,
        }
    }

    /// Takes one frame of `len` bytes at time `now_ms`; `false` (and nothing taken) when
    /// either bucket is short. A clock going backwards refills nothing.
    pub(crate) fn take(&mut self, now_ms: u64, len: usize) -> bool {
        let elapsed = self.last_ms.map_or(0, |last| now_ms.saturating_sub(last));
        if self.last_ms.is_none_or(|last| now_ms > last) {
            self.last_ms = Some(now_ms);
        }
        self.frames.refill(elapsed);
        self.bytes.refill(elapsed);
        let need_bytes = (len as u128).saturating_mul(1000);
        if self.frames.milli < 1000 || self.bytes.milli < need_bytes {
            return false;
        }
        self.frames.milli -= 1000;
        self.bytes.milli -= need_bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(fps: u32, burst: u32) -> PortLimits {
        PortLimits {
            frames_per_second: fps,
            burst_frames: burst,
            ..PortLimits::default()
        }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut r = RateLimiter::new(&limits(1000, 10));
        assert_eq!((0..20).filter(|_| r.take(5, 100)).count(), 10);
        // 1000 frames per second: one per millisecond.
        assert!(r.take(6, 100));
        assert!(!r.take(6, 100));
        assert_eq!((0..20).filter(|_| r.take(11, 100)).count(), 5);
        // A long pause refills to the burst, not beyond.
        assert_eq!((0..50).filter(|_| r.take(100_000, 100)).count(), 10);
        // The clock going backwards gives nothing.
        assert!(!r.take(50, 100));
    }

    #[test]
    fn bytes_are_limited_too() {
        let mut r = RateLimiter::new(&PortLimits {
            bytes_per_second: 10_000,
            max_frame_bytes: 1514,
            ..limits(1_000_000, 1_000_000)
        });
        assert_eq!((0..100).filter(|_| r.take(0, 1000)).count(), 10);
        assert!(!r.take(0, 1));
        assert!(r.take(100, 1000)); // 100 ms = 1000 bytes
    }
}
