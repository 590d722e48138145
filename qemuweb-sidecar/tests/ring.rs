//! Native tests of the frame ring: a producer and a consumer over `SharedMemory`.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use qemuweb_sidecar::*;

fn ring(
    slots: u32,
    capacity: u32,
) -> (
    SharedMemory,
    RingProducer<SharedMemory>,
    RingConsumer<SharedMemory>,
) {
    let layout = RingLayout::new(slots, capacity).unwrap();
    let memory = SharedMemory::new(layout.len_words());
    layout.init(&memory).unwrap();
    let producer = RingProducer::attach(memory.clone()).unwrap();
    let consumer = RingConsumer::attach(memory.clone()).unwrap();
    (memory, producer, consumer)
}

/// A deterministic pseudo-random generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % n as u64) as u32
    }
}

/// An emulator-like screen: a full framebuffer that changes in rectangles.
struct Screen {
    width: u32,
    height: u32,
    format: PixelFormat,
    data: Vec<u8>,
}

impl Screen {
    fn new(width: u32, height: u32, format: PixelFormat) -> Screen {
        let len = format.data_len(width, height).unwrap();
        Screen {
            width,
            height,
            format,
            data: (0..len).map(|i| (i * 31 % 251) as u8).collect(),
        }
    }

    /// Paints `rect` with `value` (all planes for YUV420) and returns it.
    fn paint(&mut self, rect: DirtyRect, value: u8) -> DirtyRect {
        let bpp = match self.format {
            PixelFormat::Rgba => 4,
            PixelFormat::Rgb565 => 2,
            _ => 1,
        };
        let w = self.width as usize;
        for row in rect.y..rect.y + rect.height {
            let start = (row as usize * w + rect.x as usize) * bpp;
            let end = start + rect.width as usize * bpp;
            for (i, b) in self.data[start..end].iter_mut().enumerate() {
                *b = value.wrapping_add(i as u8);
            }
        }
        if self.format == PixelFormat::Yuv420 {
            let (cw, ch) = (w.div_ceil(2), (self.height as usize).div_ceil(2));
            let cx0 = rect.x as usize / 2;
            let cx1 = ((rect.x + rect.width) as usize).div_ceil(2);
            let cy0 = rect.y as usize / 2;
            let cy1 = ((rect.y + rect.height) as usize).div_ceil(2);
            for plane in [w * self.height as usize, w * self.height as usize + cw * ch] {
                for row in cy0..cy1 {
                    for b in &mut self.data[plane + row * cw + cx0..plane + row * cw + cx1] {
                        *b = value ^ 0x5a;
                    }
                }
            }
        }
        rect
    }

    fn random_rect(&mut self, rng: &mut Rng) -> DirtyRect {
        let x = rng.below(self.width);
        let y = rng.below(self.height);
        let w = 1 + rng.below(self.width - x);
        let h = 1 + rng.below((self.height - y).min(8));
        DirtyRect::new(x, y, w, h)
    }

    fn keyframe(&self, seq: u64) -> Frame {
        Frame {
            metadata: FrameMetadata::keyframe(
                seq,
                seq as f64,
                self.width,
                self.height,
                self.format,
            ),
            data: self.data.clone(),
        }
    }

    fn delta(&self, seq: u64, dirty: Vec<DirtyRect>) -> Frame {
        Frame {
            metadata: FrameMetadata::delta(
                seq,
                seq as f64,
                self.width,
                self.height,
                self.format,
                dirty,
            ),
            data: self.data.clone(),
        }
    }
}

/// Shared memory whose byte reads are slow, so the consumer holds a slot long enough
/// for the producer to lap the ring several times meanwhile.
#[derive(Clone)]
struct SlowReads(SharedMemory);

impl SharedWords for SlowReads {
    fn len_words(&self) -> usize {
        self.0.len_words()
    }
    fn load(&self, index: usize) -> u32 {
        self.0.load(index)
    }
    fn store(&self, index: usize, value: u32) {
        self.0.store(index, value)
    }
    fn compare_exchange(&self, index: usize, current: u32, new: u32) -> Result<u32, u32> {
        self.0.compare_exchange(index, current, new)
    }
    fn fetch_add(&self, index: usize, value: u32) -> u32 {
        self.0.fetch_add(index, value)
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        self.0.write_bytes(offset, src)
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        thread::sleep(Duration::from_micros(20));
        self.0.read_bytes(offset, dst)
    }
    fn wait(&self, index: usize, expected: u32, timeout: Duration) -> WaitOutcome {
        self.0.wait(index, expected, timeout)
    }
    fn notify(&self, index: usize) {
        self.0.notify(index)
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn wrap_around_copies_only_damage_and_survives_sequence_wrap() {
    let (_m, mut producer, mut consumer) = ring(3, 64 * 48 * 4);
    let mut screen = Screen::new(64, 48, PixelFormat::Rgba);
    let mut rng = Rng(7);
    // Start just below the 30-bit state tag and the 32-bit word boundaries, so both wrap.
    for start in [(1u64 << 30) - 4, (1u64 << 32) - 4] {
        let r = producer.send(&screen.keyframe(start)).unwrap();
        assert_eq!(r.bytes_copied, 64 * 48 * 4);
        let got = consumer.try_receive().unwrap().unwrap();
        assert!(got.keyframe);
        assert_eq!(consumer.data(), &screen.data[..]);
        for seq in start + 1..start + 40 {
            let rect = screen.random_rect(&mut rng);
            screen.paint(rect, seq as u8);
            let report = producer.send(&screen.delta(seq, vec![rect])).unwrap();
            assert_eq!(report.dropped, None);
            let got = consumer.try_receive().unwrap().unwrap();
            assert_eq!(got.sequence, seq);
            assert!(!got.keyframe, "frame {seq} should be a delta");
            assert_eq!(got.dirty, vec![rect]);
            assert_eq!(got.timestamp, seq as f64);
            assert_eq!(consumer.data(), &screen.data[..], "frame {seq}");
            assert!(consumer.try_receive().unwrap().is_none());
            let whole = consumer.frame().unwrap();
            assert_eq!(whole, screen.keyframe(seq));
        }
    }
    // Once every slot holds a recent frame, a one-pixel change copies 4 bytes.
    let rect = screen.paint(DirtyRect::new(5, 5, 1, 1), 1);
    let seq = (1u64 << 32) + 100;
    let report = producer.send(&screen.delta(seq, vec![rect])).unwrap();
    assert!(report.bytes_copied <= 3 * 4 * 8 * 64, "{report:?}");
    consumer.try_receive().unwrap().unwrap();
    let report = producer.send(&screen.delta(seq + 1, vec![rect])).unwrap();
    assert!(report.bytes_copied <= 2 * 4 * 8 * 64 + 4, "{report:?}");
    consumer.try_receive().unwrap().unwrap();
    // An unchanged screen copies nothing (once every slot caught up) and delivers no
    // rectangles.
    for s in seq + 2..seq + 6 {
        producer.send(&screen.delta(s, vec![])).unwrap();
        consumer.try_receive().unwrap().unwrap();
    }
    let report = producer.send(&screen.delta(seq + 6, vec![])).unwrap();
    let got = consumer.try_receive().unwrap().unwrap();
    assert!(got.dirty.is_empty() && !got.keyframe);
    assert_eq!(report.bytes_copied, 0, "{report:?}");
    assert_eq!(consumer.data(), &screen.data[..]);
    assert_eq!(consumer.stats().dropped, 0);
}

#[test]
fn resize_mid_stream_starts_a_new_generation() {
    let (_m, mut producer, mut consumer) = ring(3, 64 * 48 * 4);
    let mut big = Screen::new(64, 48, PixelFormat::Rgba);
    producer.send(&big.keyframe(1)).unwrap();
    assert!(consumer.try_receive().unwrap().unwrap().keyframe);
    let gen0 = consumer.stats().generation;
    let r = big.paint(DirtyRect::new(1, 1, 3, 3), 9);
    producer.send(&big.delta(2, vec![r])).unwrap();

    // The guest switches mode before the consumer read frame 2: 33x17 RGB565, sent as
    // a delta (the emulator only knows what changed) but the ring copies it whole.
    let mut small = Screen::new(33, 17, PixelFormat::Rgb565);
    let r = small.paint(DirtyRect::new(3, 3, 5, 5), 4);
    let report = producer.send(&small.delta(3, vec![r])).unwrap();
    assert!(report.resized);
    assert_eq!(report.bytes_copied, 33 * 17 * 2);
    let got = consumer.try_receive().unwrap().unwrap();
    assert_eq!((got.sequence, got.width, got.height), (3, 33, 17));
    assert_eq!(got.format, PixelFormat::Rgb565);
    assert!(got.keyframe, "a resize is delivered as a whole screen");
    assert_eq!(consumer.data(), &small.data[..]);
    assert_eq!(consumer.stats().generation, gen0 + 1);
    assert_eq!(consumer.stats().dropped, 1, "frame 2 was stale");

    // Deltas continue in the new geometry, including odd (unaligned) 2-byte pixels.
    for seq in 4..20 {
        let r = small.paint(
            DirtyRect::new(seq as u32 % 7, seq as u32 % 5, 3, 2),
            seq as u8,
        );
        producer.send(&small.delta(seq, vec![r])).unwrap();
        let got = consumer.try_receive().unwrap().unwrap();
        assert!(!got.keyframe);
        assert_eq!(consumer.data(), &small.data[..], "frame {seq}");
    }
    // A frame larger than the slots is refused: the ring must be recreated.
    let huge = Screen::new(128, 128, PixelFormat::Rgba);
    let err = producer.send(&huge.keyframe(30)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FrameTooLarge);
}

#[test]
fn yuv420_deltas_cross_the_ring() {
    let (_m, mut producer, mut consumer) = ring(2, 4096);
    let mut screen = Screen::new(21, 13, PixelFormat::Yuv420);
    producer.send(&screen.keyframe(1)).unwrap();
    consumer.try_receive().unwrap().unwrap();
    let mut rng = Rng(99);
    for seq in 2..60 {
        let rect = screen.random_rect(&mut rng);
        screen.paint(rect, seq as u8);
        producer.send(&screen.delta(seq, vec![rect])).unwrap();
        if seq % 3 == 0 {
            consumer.try_receive().unwrap().unwrap();
            assert_eq!(consumer.data(), &screen.data[..], "frame {seq}");
        }
    }
}

#[test]
fn slow_consumer_gets_the_newest_frame_and_stale_ones_are_dropped() {
    let (_m, mut producer, mut consumer) = ring(3, 64 * 48 * 4);
    let mut screen = Screen::new(64, 48, PixelFormat::Rgba);
    producer.send(&screen.keyframe(1)).unwrap();
    consumer.try_receive().unwrap().unwrap();

    // Ten frames while the consumer sleeps: the producer never blocks and overwrites
    // the oldest unread frame once all slots are full.
    let mut dropped_by_producer = Vec::new();
    let mut all_rects = Vec::new();
    for seq in 2..12u64 {
        let rect = screen.paint(
            DirtyRect::new(seq as u32 * 4, seq as u32 * 2, 3, 2),
            seq as u8,
        );
        all_rects.push(rect);
        let report = producer.send(&screen.delta(seq, vec![rect])).unwrap();
        dropped_by_producer.extend(report.dropped);
    }
    // Slots hold 9, 10, 11 (frame 1's slot was freed by the consumer): 2..=8 dropped.
    assert_eq!(dropped_by_producer, (2..9).collect::<Vec<u64>>());
    let got = consumer.try_receive().unwrap().unwrap();
    assert_eq!(got.sequence, 11);
    assert!(!got.keyframe);
    // The delivered damage covers every skipped frame's change.
    assert_eq!(got.dirty, all_rects);
    assert_eq!(consumer.data(), &screen.data[..]);
    assert!(
        consumer.try_receive().unwrap().is_none(),
        "9 and 10 were stale"
    );
    let stats = consumer.stats();
    assert_eq!((stats.published, stats.dropped), (11, 9));

    // Damage from more skipped frames than a slot can list is merged into one box.
    for seq in 12..(12 + ring::SLOT_RECTS as u64 + 10) {
        let rect = screen.paint(
            DirtyRect::new(seq as u32 % 60, seq as u32 % 40, 2, 2),
            seq as u8,
        );
        producer.send(&screen.delta(seq, vec![rect])).unwrap();
    }
    let got = consumer.try_receive().unwrap().unwrap();
    assert_eq!(got.dirty.len(), 1);
    assert_eq!(consumer.data(), &screen.data[..]);
}

#[test]
fn receive_timeout_waits_and_times_out() {
    let (memory, mut producer, mut consumer) = ring(3, 16);
    let start = Instant::now();
    assert!(consumer
        .receive_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
    assert!(start.elapsed() >= Duration::from_millis(50));

    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        let frame = Frame {
            metadata: FrameMetadata::keyframe(1, 0.0, 2, 2, PixelFormat::Rgba),
            data: vec![3; 16],
        };
        producer.send(&frame).unwrap();
        producer
    });
    let start = Instant::now();
    let got = consumer
        .receive_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(got.sequence, 1);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "woken, not timed out"
    );
    assert_eq!(consumer.data(), &[3; 16]);
    drop(sender.join().unwrap());
    // The producer detached on drop: another may attach; a second consumer may not.
    RingProducer::attach(memory.clone()).unwrap();
    let err = RingConsumer::attach(memory).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyAttached);
}

#[test]
fn fast_producer_slow_consumer_threads_never_see_a_torn_frame() {
    const FRAMES: u64 = 3000;
    let (width, height) = (96u32, 64u32);
    let (memory, mut producer, consumer) = ring(3, width * height * 4);
    drop(consumer);
    let mut consumer = RingConsumer::attach(SlowReads(memory)).unwrap();
    let sums: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();

    let producer_sums = sums.clone();
    let producer_thread = thread::spawn(move || {
        let mut screen = Screen::new(width, height, PixelFormat::Rgba);
        let mut rng = Rng(12345);
        let mut dropped = 0;
        for seq in 1..=FRAMES {
            let frame = if seq == 1 || seq % 500 == 0 {
                screen.keyframe(seq)
            } else {
                let rects: Vec<DirtyRect> = (0..1 + rng.below(3))
                    .map(|i| {
                        let r = screen.random_rect(&mut rng);
                        screen.paint(r, (seq as u8).wrapping_add(i as u8))
                    })
                    .collect();
                screen.delta(seq, rects)
            };
            producer_sums
                .lock()
                .unwrap()
                .insert(seq, checksum(&screen.data));
            dropped += producer.send(&frame).unwrap().dropped.is_some() as u32;
            if seq % 16 == 0 {
                thread::sleep(Duration::from_micros(50));
            }
        }
        dropped
    });

    let mut received = 0u64;
    let mut last = 0;
    let mut rng = Rng(42);
    while last < FRAMES {
        let Some(meta) = consumer.receive_timeout(Duration::from_secs(10)).unwrap() else {
            panic!("no frame within 10 s after {last}");
        };
        assert!(meta.sequence > last, "frames arrive in order");
        last = meta.sequence;
        received += 1;
        let expected = sums.lock().unwrap()[&meta.sequence];
        assert_eq!(
            checksum(consumer.data()),
            expected,
            "frame {} is torn or stale",
            meta.sequence
        );
        if rng.below(4) == 0 {
            thread::sleep(Duration::from_micros(300)); // a slow consumer now and then
        }
    }
    let dropped_by_producer = producer_thread.join().unwrap();
    let stats = consumer.stats();
    assert_eq!(stats.published as u64, FRAMES);
    assert_eq!(
        received + stats.dropped as u64,
        FRAMES,
        "every frame delivered or dropped"
    );
    assert!(stats.dropped >= dropped_by_producer);
    assert!(received > 1);
}

#[test]
fn malformed_frames_are_rejected_and_publish_nothing() {
    let (memory, mut producer, mut consumer) = ring(3, 8 * 8 * 4);
    let screen = Screen::new(8, 8, PixelFormat::Rgba);
    let mut bad = screen.delta(1, vec![DirtyRect::new(7, 7, 2, 1)]);
    assert_eq!(
        producer.send(&bad).unwrap_err().kind(),
        ErrorKind::RectOutOfBounds
    );
    bad.metadata.dirty.clear();
    bad.data.truncate(10);
    assert_eq!(
        producer.send(&bad).unwrap_err().kind(),
        ErrorKind::DataLength
    );
    let mut bad = screen.keyframe(1);
    bad.metadata.timestamp = f64::INFINITY;
    assert_eq!(
        producer.send(&bad).unwrap_err().kind(),
        ErrorKind::InvalidTimestamp
    );
    let mut bad = screen.keyframe(1);
    bad.metadata.dirty.push(DirtyRect::new(0, 0, 1, 1));
    assert_eq!(
        producer.send(&bad).unwrap_err().kind(),
        ErrorKind::KeyframeWithRects
    );
    assert_eq!(consumer.stats().published, 0);
    assert!(consumer.try_receive().unwrap().is_none());

    producer.send(&screen.keyframe(5)).unwrap();
    for seq in [5, 4] {
        let err = producer.send(&screen.delta(seq, vec![])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SequenceNotIncreasing);
    }
    assert_eq!(consumer.try_receive().unwrap().unwrap().sequence, 5);
    assert!(consumer.try_receive().unwrap().is_none());

    // Memory without a ring, or too small for the ring its header describes.
    let blank = SharedMemory::new(1000);
    assert_eq!(
        RingConsumer::attach(blank).unwrap_err().kind(),
        ErrorKind::InvalidLayout
    );
    let layout = RingLayout::new(3, 8 * 8 * 4).unwrap();
    let short = SharedMemory::new(layout.len_words());
    layout.init(&short).unwrap();
    let truncated = SharedMemory::new(layout.len_words() - 1);
    for i in 0..16 {
        truncated.store(i, short.load(i));
    }
    assert_eq!(
        RingProducer::attach(truncated).unwrap_err().kind(),
        ErrorKind::InvalidLayout
    );
    drop(memory);
}

#[test]
fn compressed_frames_travel_whole() {
    let (_m, mut producer, mut consumer) = ring(2, 100);
    for (seq, len) in [(1u64, 10usize), (2, 99), (3, 1)] {
        let frame = Frame {
            metadata: FrameMetadata {
                keyframe: seq == 1,
                ..FrameMetadata::keyframe(seq, 0.0, 640, 480, PixelFormat::Compressed)
            },
            data: (0..len).map(|i| (i as u64 * seq) as u8).collect(),
        };
        producer.send(&frame).unwrap();
        let got = consumer.try_receive().unwrap().unwrap();
        assert!(got.keyframe);
        assert_eq!(consumer.data(), &frame.data[..]);
    }
}
