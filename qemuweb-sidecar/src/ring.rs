//! A single-producer single-consumer ring of frames in shared memory.
//!
//! The emulator's side (a worker) holds a [`RingProducer`], the display's side (the
//! page) a [`RingConsumer`]; both work over any [`SharedWords`], natively threads over
//! `SharedMemory`, in the browser a `SharedArrayBuffer` (`SabMemory`).
//!
//! # Layout
//!
//! A header (magic, version, slot count, slot capacity, geometry generation, a notify
//! word, counters, the consumer's last sequence number), then [`RingLayout::slot_count`]
//! slots, each with its own header (state word, sequence, timestamp, geometry, up to
//! [`SLOT_RECTS`] damage rectangles) and `slot_capacity` bytes of data. Every slot holds
//! a whole screen.
//!
//! # Ownership
//!
//! A slot's state word is `FREE`, `WRITING`, `READY` or `READING`, tagged with the low
//! 30 bits of the sequence number of the frame it holds so compare-and-swap cannot
//! confuse two frames. The producer only writes a slot it moved to `WRITING` (from
//! `FREE` or `READY`); the consumer only reads a slot it moved from `READY` to
//! `READING`. So no frame the consumer sees is ever torn.
//!
//! # Back-pressure: the producer never blocks, stale frames are dropped
//!
//! [`RingProducer::send`] writes into a `FREE` slot if there is one; otherwise it
//! overwrites the **oldest unread** (`READY`) frame, which is dropped. The consumer
//! holds at most one slot (`READING`) so with at least two slots the producer always
//! finds one. [`RingConsumer::try_receive`] takes the **newest** ready frame and frees
//! older ready ones unread (dropped as stale). A slow consumer therefore sees the
//! latest screen and skips the rest; [`RingStats::dropped`] counts what it skipped.
//!
//! # Dirty rectangles: only changes are copied
//!
//! Every [`Frame`]'s data is the whole screen, and `metadata.dirty` lists what changed
//! since the previous frame. The producer remembers which frame each slot holds and the
//! damage of recent frames, so it copies into a slot only what changed since that slot's
//! frame (everything after a keyframe or a resize). The consumer keeps its own copy of
//! the screen and copies out of the slot only what changed since the frame it received
//! last; frames it skipped are covered because the producer records, in each slot, the
//! damage since the consumer's last frame. An unchanged screen copies nothing.
//!
//! # Resize
//!
//! A frame whose width, height or format differs from the previous one starts a new
//! geometry *generation*: the producer copies it whole and the consumer, seeing the new
//! generation, replaces its copy (the delivered metadata is then a keyframe). Frames
//! must fit [`RingLayout::slot_capacity`]; a larger screen needs a new ring.
//!
//! ```
//! use qemuweb_sidecar::*;
//!
//! let layout = RingLayout::new(3, 64 * 48 * 4)?;
//! let memory = SharedMemory::new(layout.len_words());
//! layout.init(&memory)?;
//! let mut producer = RingProducer::attach(memory.clone())?;
//! let mut consumer = RingConsumer::attach(memory)?;
//!
//! let mut screen = vec![0u8; 64 * 48 * 4];
//! producer.send(&Frame {
//!     metadata: FrameMetadata::keyframe(1, 0.0, 64, 48, PixelFormat::Rgba),
//!     data: screen.clone(),
//! })?;
//! screen[0..4].copy_from_slice(&[255, 0, 0, 255]);
//! producer.send(&Frame {
//!     metadata: FrameMetadata::delta(2, 16.0, 64, 48, PixelFormat::Rgba,
//!         vec![DirtyRect::new(0, 0, 1, 1)]),
//!     data: screen.clone(),
//! })?;
//!
//! // The consumer gets the newest frame; frame 1 was stale and dropped.
//! let got = consumer.try_receive()?.expect("a frame");
//! assert_eq!(got.sequence, 2);
//! assert_eq!(consumer.data(), &screen[..]);
//! assert_eq!(consumer.stats().dropped, 1);
//! assert!(consumer.try_receive()?.is_none());
//! # Ok::<(), SidecarError>(())
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use crate::frame::{DirtyRect, Frame, FrameMetadata, PixelFormat};
use crate::memory::{SharedWords, WaitOutcome};
use crate::SidecarError;

/// The most damage rectangles a slot records; more are merged into their bounding box.
pub const SLOT_RECTS: usize = 64;
/// The fewest slots a ring may have.
pub const MIN_SLOTS: u32 = 2;
/// The most slots a ring may have.
pub const MAX_SLOTS: u32 = 64;
/// The largest slot capacity, in bytes (a 8192x8192 RGBA screen).
pub const MAX_SLOT_CAPACITY: u32 = 8192 * 8192 * 4;
/// The largest ring, in bytes (what a `SharedArrayBuffer` and wasm32 can address).
pub const MAX_RING_BYTES: u64 = 1 << 31;

const MAGIC: u32 = 0x5246_5751; // "QWFR" little-endian
const VERSION: u32 = 1;

// Header words.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_SLOTS: usize = 2;
const H_CAPACITY: usize = 3;
const H_GENERATION: usize = 4;
/// Incremented after every publish; the consumer waits on it.
const H_NOTIFY: usize = 5;
/// The index of the ring's notify word (a `u32` the producer increments and
/// notifies after every frame it publishes), for asynchronous waits.
pub const NOTIFY_WORD: usize = H_NOTIFY;
const H_PUBLISHED: usize = 6;
const H_DROPPED: usize = 7;
/// Seqlock version of the consumer's last sequence (odd while being written).
const H_CONSUMED_VER: usize = 8;
const H_CONSUMED_LO: usize = 9;
const H_CONSUMED_HI: usize = 10;
const H_CONSUMED_VALID: usize = 11;
const H_PRODUCER: usize = 12;
const H_CONSUMER: usize = 13;
const HEADER_WORDS: usize = 16;

// Slot header words.
const S_STATE: usize = 0;
const S_SEQ_LO: usize = 1;
const S_SEQ_HI: usize = 2;
const S_TS_LO: usize = 3;
const S_TS_HI: usize = 4;
const S_WIDTH: usize = 5;
const S_HEIGHT: usize = 6;
const S_FORMAT: usize = 7;
const S_FLAGS: usize = 8;
const S_GENERATION: usize = 9;
const S_DATA_LEN: usize = 10;
const S_BASE_LO: usize = 11;
const S_BASE_HI: usize = 12;
const S_RECT_COUNT: usize = 13;
const S_RECTS: usize = 16;
const SLOT_HEADER_WORDS: usize = S_RECTS + 4 * SLOT_RECTS;

const FLAG_KEYFRAME: u32 = 1;
/// The slot's damage list is not usable: the consumer must copy everything.
const FLAG_FULL: u32 = 2;

const FREE: u32 = 0;
const WRITING: u32 = 1;
const READY: u32 = 2;
const READING: u32 = 3;

/// How many frames of damage the producer remembers; older bases mean a full copy.
const HISTORY: usize = 256;

fn state_word(state: u32, seq: u64) -> u32 {
    ((seq as u32) << 2) | state
}

fn state_of(word: u32) -> u32 {
    word & 3
}

/// The shape of a ring: how many slots and how many data bytes each holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    slot_count: u32,
    slot_capacity: u32,
}

impl RingLayout {
    /// A layout of `slot_count` slots ([`MIN_SLOTS`]..=[`MAX_SLOTS`]; 3 is a good
    /// default) of `slot_capacity` bytes (1..=[`MAX_SLOT_CAPACITY`]).
    ///
    /// ```
    /// use qemuweb_sidecar::{ErrorKind, RingLayout};
    /// assert!(RingLayout::new(3, 1024 * 768 * 4).is_ok());
    /// assert_eq!(RingLayout::new(1, 16).unwrap_err().kind(), ErrorKind::InvalidLayout);
    /// ```
    pub fn new(slot_count: u32, slot_capacity: u32) -> Result<RingLayout, SidecarError> {
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&slot_count) {
            return Err(SidecarError::InvalidLayout {
                reason: format!("{slot_count} slots (must be {MIN_SLOTS}..={MAX_SLOTS})"),
            });
        }
        if slot_capacity == 0 || slot_capacity > MAX_SLOT_CAPACITY {
            return Err(SidecarError::InvalidLayout {
                reason: format!(
                    "slot capacity {slot_capacity} bytes (must be 1..={MAX_SLOT_CAPACITY})"
                ),
            });
        }
        let slot_words = SLOT_HEADER_WORDS as u64 + (slot_capacity as u64).div_ceil(4);
        let bytes = 4 * (HEADER_WORDS as u64 + slot_count as u64 * slot_words);
        if bytes > MAX_RING_BYTES {
            return Err(SidecarError::InvalidLayout {
                reason: format!(
                    "{slot_count} slots of {slot_capacity} bytes need {bytes} bytes \
                     (at most {MAX_RING_BYTES})"
                ),
            });
        }
        Ok(RingLayout {
            slot_count,
            slot_capacity,
        })
    }

    /// A layout whose slots hold a `width x height` screen of `format`.
    ///
    /// ```
    /// use qemuweb_sidecar::{PixelFormat, RingLayout};
    /// let layout = RingLayout::for_screen(3, 1024, 768, PixelFormat::Rgba)?;
    /// assert_eq!(layout.slot_capacity(), 1024 * 768 * 4);
    /// # Ok::<(), qemuweb_sidecar::SidecarError>(())
    /// ```
    pub fn for_screen(
        slot_count: u32,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<RingLayout, SidecarError> {
        let bytes = format
            .data_len(width, height)
            .ok_or_else(|| SidecarError::InvalidLayout {
                reason: "compressed frames have no fixed size; use RingLayout::new".into(),
            })?;
        let capacity = u32::try_from(bytes).map_err(|_| SidecarError::InvalidLayout {
            reason: format!("{bytes}-byte screen is too large"),
        })?;
        RingLayout::new(slot_count, capacity)
    }

    /// The number of slots.
    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// The data bytes a slot holds.
    pub fn slot_capacity(&self) -> u32 {
        self.slot_capacity
    }

    fn data_words(&self) -> usize {
        (self.slot_capacity as usize).div_ceil(4)
    }

    fn slot_words(&self) -> usize {
        SLOT_HEADER_WORDS + self.data_words()
    }

    /// The number of `u32` words the ring's memory needs.
    pub fn len_words(&self) -> usize {
        HEADER_WORDS + self.slot_count as usize * self.slot_words()
    }

    /// The number of bytes the ring's memory needs (`4 * len_words()`), e.g. for a
    /// `SharedArrayBuffer`.
    pub fn byte_len(&self) -> usize {
        self.len_words() * 4
    }

    /// Writes an empty ring of this layout into `memory` (before either side attaches).
    ///
    /// ```
    /// use qemuweb_sidecar::{ErrorKind, RingLayout, SharedMemory};
    /// let layout = RingLayout::new(2, 64)?;
    /// let small = SharedMemory::new(layout.len_words() - 1);
    /// assert_eq!(layout.init(&small).unwrap_err().kind(), ErrorKind::InvalidLayout);
    /// layout.init(&SharedMemory::new(layout.len_words()))?;
    /// # Ok::<(), qemuweb_sidecar::SidecarError>(())
    /// ```
    pub fn init<M: SharedWords>(&self, memory: &M) -> Result<(), SidecarError> {
        if memory.len_words() < self.len_words() {
            return Err(SidecarError::InvalidLayout {
                reason: format!(
                    "memory has {} words, the ring needs {}",
                    memory.len_words(),
                    self.len_words()
                ),
            });
        }
        for i in 0..HEADER_WORDS {
            memory.store(i, 0);
        }
        for slot in 0..self.slot_count as usize {
            let base = HEADER_WORDS + slot * self.slot_words();
            for i in 0..SLOT_HEADER_WORDS {
                memory.store(base + i, 0);
            }
        }
        memory.store(H_SLOTS, self.slot_count);
        memory.store(H_CAPACITY, self.slot_capacity);
        memory.store(H_VERSION, VERSION);
        memory.store(H_MAGIC, MAGIC);
        Ok(())
    }

    /// Reads the layout of an initialised ring in `memory`.
    pub fn read<M: SharedWords>(memory: &M) -> Result<RingLayout, SidecarError> {
        if memory.len_words() < HEADER_WORDS {
            return Err(SidecarError::InvalidLayout {
                reason: "memory is smaller than the ring header".into(),
            });
        }
        if memory.load(H_MAGIC) != MAGIC {
            return Err(SidecarError::InvalidLayout {
                reason: "no ring here (bad magic; call RingLayout::init first)".into(),
            });
        }
        let version = memory.load(H_VERSION);
        if version != VERSION {
            return Err(SidecarError::InvalidLayout {
                reason: format!("ring version {version}, this crate speaks {VERSION}"),
            });
        }
        let layout = RingLayout::new(memory.load(H_SLOTS), memory.load(H_CAPACITY))?;
        if memory.len_words() < layout.len_words() {
            return Err(SidecarError::InvalidLayout {
                reason: format!(
                    "memory has {} words, the ring's header says {}",
                    memory.len_words(),
                    layout.len_words()
                ),
            });
        }
        Ok(layout)
    }

    fn slot_base(&self, slot: usize) -> usize {
        HEADER_WORDS + slot * self.slot_words()
    }

    fn slot_data_byte(&self, slot: usize) -> usize {
        (self.slot_base(slot) + SLOT_HEADER_WORDS) * 4
    }
}

/// Counters of a ring, readable from either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    /// Frames the producer published (wrapping at `u32::MAX`).
    pub published: u32,
    /// Frames dropped unread as stale: overwritten by the producer or skipped by the
    /// consumer in favour of a newer one (wrapping at `u32::MAX`).
    pub dropped: u32,
    /// The current geometry generation (bumped by every resize).
    pub generation: u32,
}

fn stats<M: SharedWords>(memory: &M) -> RingStats {
    RingStats {
        published: memory.load(H_PUBLISHED),
        dropped: memory.load(H_DROPPED),
        generation: memory.load(H_GENERATION),
    }
}

fn claim<M: SharedWords>(memory: &M, word: usize, role: &'static str) -> Result<(), SidecarError> {
    memory
        .compare_exchange(word, 0, 1)
        .map(|_| ())
        .map_err(|_| SidecarError::AlreadyAttached { role })
}

/// What a [`RingProducer::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendReport {
    /// The sequence number of an unread frame that was overwritten (dropped as stale).
    pub dropped: Option<u64>,
    /// Data bytes copied into the ring.
    pub bytes_copied: usize,
    /// Whether this frame started a new geometry generation.
    pub resized: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Damage {
    Full,
    Rects(Vec<DirtyRect>),
}

impl Damage {
    fn add(&mut self, other: &Damage) {
        match (&mut *self, other) {
            (Damage::Full, _) => {}
            (_, Damage::Full) => *self = Damage::Full,
            (Damage::Rects(a), Damage::Rects(b)) => a.extend_from_slice(b),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    width: u32,
    height: u32,
    format: PixelFormat,
}

/// The producing side of a frame ring (the emulator's). It never blocks.
///
/// Only one producer may be attached at a time; dropping it detaches.
#[derive(Debug)]
pub struct RingProducer<M: SharedWords> {
    memory: M,
    layout: RingLayout,
    last_sequence: Option<u64>,
    geometry: Option<Geometry>,
    generation: u32,
    /// Damage of recent frames, oldest first. Damage since any sequence number below
    /// `history_floor` is unknown (a full copy).
    history: VecDeque<(u64, Damage)>,
    history_floor: u64,
    /// Per slot: the (generation, sequence) of the frame its data holds.
    contents: Vec<Option<(u32, u64)>>,
}

impl<M: SharedWords> RingProducer<M> {
    /// Attaches as the ring's producer. Fails if `memory` holds no ring
    /// ([`RingLayout::init`]) or another producer is attached.
    pub fn attach(memory: M) -> Result<RingProducer<M>, SidecarError> {
        RingProducer::attach_inner(memory, false)
    }

    /// Attaches as the ring's producer even if one is recorded as attached: for when
    /// the previous producer is known to be gone without detaching (its worker was
    /// terminated). A frame it left half-written is discarded. Never use it while the
    /// previous producer may still run.
    pub fn force_attach(memory: M) -> Result<RingProducer<M>, SidecarError> {
        RingProducer::attach_inner(memory, true)
    }

    fn attach_inner(memory: M, force: bool) -> Result<RingProducer<M>, SidecarError> {
        let layout = RingLayout::read(&memory)?;
        if force {
            memory.store(H_PRODUCER, 1);
        } else {
            claim(&memory, H_PRODUCER, "producer")?;
        }
        // Only a producer writes, so a slot left WRITING is a dead producer's.
        for slot in 0..layout.slot_count as usize {
            let at = layout.slot_base(slot) + S_STATE;
            let word = memory.load(at);
            if state_of(word) == WRITING {
                let _ = memory.compare_exchange(at, word, (word & !3) | FREE);
            }
        }
        let generation = memory.load(H_GENERATION);
        Ok(RingProducer {
            contents: vec![None; layout.slot_count as usize],
            memory,
            layout,
            last_sequence: None,
            geometry: None,
            generation,
            history: VecDeque::new(),
            history_floor: 0,
        })
    }

    /// The ring's layout.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// The ring's counters.
    pub fn stats(&self) -> RingStats {
        stats(&self.memory)
    }

    /// Damage of the frames after `since`, up to the newest in the history.
    fn damage_since(&self, since: u64) -> Damage {
        if since < self.history_floor {
            return Damage::Full;
        }
        let mut damage = Damage::Rects(Vec::new());
        for (_, d) in self.history.iter().filter(|(seq, _)| *seq > since) {
            damage.add(d);
            if damage == Damage::Full {
                break;
            }
        }
        damage
    }

    /// The consumer's last sequence number; `None` if it has none or is stuck
    /// mid-update (a terminated consumer): the caller then copies everything.
    fn consumed(&self) -> Option<u64> {
        for _ in 0..10_000 {
            let v1 = self.memory.load(H_CONSUMED_VER);
            if v1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let valid = self.memory.load(H_CONSUMED_VALID);
            let lo = self.memory.load(H_CONSUMED_LO) as u64;
            let hi = self.memory.load(H_CONSUMED_HI) as u64;
            if self.memory.load(H_CONSUMED_VER) == v1 {
                return (valid == 1).then_some(hi << 32 | lo);
            }
        }
        None
    }

    /// Picks a slot and moves it to `WRITING`: a free one holding the newest content
    /// (least to copy), else the oldest ready one (dropping its frame).
    fn acquire(&self, sequence: u64) -> (usize, Option<u64>) {
        loop {
            let mut best_free: Option<(usize, u32, u64)> = None;
            let mut oldest_ready: Option<(usize, u32, u64)> = None;
            for slot in 0..self.layout.slot_count as usize {
                let word = self.memory.load(self.layout.slot_base(slot) + S_STATE);
                match state_of(word) {
                    FREE => {
                        let held = match self.contents[slot] {
                            Some((g, s)) if g == self.generation => s + 1,
                            _ => 0,
                        };
                        if best_free.is_none_or(|(_, _, h)| held > h) {
                            best_free = Some((slot, word, held));
                        }
                    }
                    READY => {
                        let seq = self.contents[slot].map_or(0, |(_, s)| s);
                        if oldest_ready.is_none_or(|(_, _, s)| seq < s) {
                            oldest_ready = Some((slot, word, seq));
                        }
                    }
                    _ => {}
                }
            }
            let (slot, word, dropped) = match (best_free, oldest_ready) {
                (Some((slot, word, _)), _) => (slot, word, None),
                (None, Some((slot, word, seq))) => (slot, word, Some(seq)),
                (None, None) => {
                    std::hint::spin_loop();
                    continue;
                }
            };
            let base = self.layout.slot_base(slot);
            if self
                .memory
                .compare_exchange(base + S_STATE, word, state_word(WRITING, sequence))
                .is_ok()
            {
                return (slot, dropped);
            }
        }
    }

    /// Publishes `frame`, copying into the ring only what the slot lacks. Never
    /// blocks: when every slot holds an unread frame, the oldest is overwritten.
    ///
    /// Fails (and publishes nothing) if the frame is malformed
    /// ([`Frame::validate`]), larger than the slots, or its sequence number does not
    /// exceed the previous frame's.
    pub fn send(&mut self, frame: &Frame) -> Result<SendReport, SidecarError> {
        frame.validate()?;
        let meta = &frame.metadata;
        if frame.data.len() > self.layout.slot_capacity as usize {
            return Err(SidecarError::FrameTooLarge {
                bytes: frame.data.len(),
                capacity: self.layout.slot_capacity as usize,
            });
        }
        if let Some(previous) = self.last_sequence {
            if meta.sequence <= previous {
                return Err(SidecarError::SequenceNotIncreasing {
                    sequence: meta.sequence,
                    previous,
                });
            }
        }
        let geometry = Geometry {
            width: meta.width,
            height: meta.height,
            format: meta.format,
        };
        let resized = self.geometry != Some(geometry);
        if resized {
            self.generation = self.generation.wrapping_add(1);
            self.memory.store(H_GENERATION, self.generation);
            self.geometry = Some(geometry);
            self.history.clear();
            self.history_floor = 0;
        }
        let damage = if resized || meta.keyframe || meta.format == PixelFormat::Compressed {
            Damage::Full
        } else {
            Damage::Rects(meta.dirty.clone())
        };
        if damage == Damage::Full {
            self.history.clear();
        }
        self.history.push_back((meta.sequence, damage));

        let (slot, dropped) = self.acquire(meta.sequence);
        if dropped.is_some() {
            self.memory.fetch_add(H_DROPPED, 1);
        }
        // Bring the slot's data up to this frame.
        let slot_damage = match self.contents[slot] {
            Some((g, s)) if g == self.generation => self.damage_since(s),
            _ => Damage::Full,
        };
        let data_at = self.layout.slot_data_byte(slot);
        let mut bytes_copied = 0;
        match &slot_damage {
            Damage::Full => {
                self.memory.write_bytes(data_at, &frame.data);
                bytes_copied = frame.data.len();
            }
            Damage::Rects(rects) => {
                for rect in rects {
                    meta.format
                        .rect_spans(meta.width, meta.height, rect, |off, len| {
                            self.memory
                                .write_bytes(data_at + off, &frame.data[off..off + len]);
                            bytes_copied += len;
                        });
                }
            }
        }
        // What the consumer must copy: the damage since the frame it received last.
        let base_seq = self.consumed();
        let consumer_damage = match base_seq {
            Some(c) => self.damage_since(c),
            None => Damage::Full,
        };
        let (flags_full, rects) = match consumer_damage {
            Damage::Full => (FLAG_FULL, Vec::new()),
            Damage::Rects(rects) if rects.len() > SLOT_RECTS => {
                let bbox = rects[1..].iter().fold(rects[0], |a, r| a.union(r));
                (0, vec![bbox])
            }
            Damage::Rects(rects) => (0, rects),
        };
        let base = self.layout.slot_base(slot);
        let m = &self.memory;
        m.store(base + S_SEQ_LO, meta.sequence as u32);
        m.store(base + S_SEQ_HI, (meta.sequence >> 32) as u32);
        let ts = meta.timestamp.to_bits();
        m.store(base + S_TS_LO, ts as u32);
        m.store(base + S_TS_HI, (ts >> 32) as u32);
        m.store(base + S_WIDTH, meta.width);
        m.store(base + S_HEIGHT, meta.height);
        m.store(base + S_FORMAT, meta.format.code());
        let keyframe = if meta.keyframe { FLAG_KEYFRAME } else { 0 };
        m.store(base + S_FLAGS, keyframe | flags_full);
        m.store(base + S_GENERATION, self.generation);
        m.store(base + S_DATA_LEN, frame.data.len() as u32);
        let b = base_seq.unwrap_or(0);
        m.store(base + S_BASE_LO, b as u32);
        m.store(base + S_BASE_HI, (b >> 32) as u32);
        m.store(base + S_RECT_COUNT, rects.len() as u32);
        for (i, r) in rects.iter().enumerate() {
            let at = base + S_RECTS + 4 * i;
            m.store(at, r.x);
            m.store(at + 1, r.y);
            m.store(at + 2, r.width);
            m.store(at + 3, r.height);
        }
        m.store(base + S_STATE, state_word(READY, meta.sequence));
        m.fetch_add(H_PUBLISHED, 1);
        m.fetch_add(H_NOTIFY, 1);
        m.notify(H_NOTIFY);

        self.contents[slot] = Some((self.generation, meta.sequence));
        self.last_sequence = Some(meta.sequence);
        self.prune(base_seq);
        Ok(SendReport {
            dropped,
            bytes_copied,
            resized,
        })
    }

    /// Forgets damage no slot and not the consumer can still need.
    fn prune(&mut self, consumed: Option<u64>) {
        let mut low = consumed.unwrap_or(0);
        for (g, s) in self.contents.iter().flatten() {
            if *g == self.generation {
                low = low.min(*s);
            }
        }
        while let Some(&(seq, _)) = self.history.front() {
            if seq <= low || self.history.len() > HISTORY {
                self.history.pop_front();
                self.history_floor = self.history_floor.max(seq);
            } else {
                break;
            }
        }
    }
}

impl<M: SharedWords> Drop for RingProducer<M> {
    fn drop(&mut self) {
        self.memory.store(H_PRODUCER, 0);
    }
}

/// The consuming side of a frame ring (the display's). It keeps a copy of the screen
/// ([`data`](Self::data)) that each received frame updates in place.
///
/// Only one consumer may be attached at a time; dropping it detaches.
#[derive(Debug)]
pub struct RingConsumer<M: SharedWords> {
    memory: M,
    layout: RingLayout,
    screen: Vec<u8>,
    /// (generation, geometry, sequence) of the frame in `screen`.
    current: Option<(u32, Geometry, u64)>,
    /// The timestamp of the frame in `screen`.
    timestamp: f64,
}

impl<M: SharedWords> RingConsumer<M> {
    /// Attaches as the ring's consumer. Fails if `memory` holds no ring
    /// ([`RingLayout::init`]) or another consumer is attached.
    pub fn attach(memory: M) -> Result<RingConsumer<M>, SidecarError> {
        RingConsumer::attach_inner(memory, false)
    }

    /// Attaches as the ring's consumer even if one is recorded as attached: for when
    /// the previous consumer is known to be gone without detaching. A slot it held
    /// is released. Never use it while the previous consumer may still run.
    pub fn force_attach(memory: M) -> Result<RingConsumer<M>, SidecarError> {
        RingConsumer::attach_inner(memory, true)
    }

    fn attach_inner(memory: M, force: bool) -> Result<RingConsumer<M>, SidecarError> {
        let layout = RingLayout::read(&memory)?;
        if force {
            memory.store(H_CONSUMER, 1);
        } else {
            claim(&memory, H_CONSUMER, "consumer")?;
        }
        // Only a consumer reads, so a slot left READING is a dead consumer's.
        for slot in 0..layout.slot_count as usize {
            let at = layout.slot_base(slot) + S_STATE;
            let word = memory.load(at);
            if state_of(word) == READING {
                let _ = memory.compare_exchange(at, word, (word & !3) | FREE);
            }
        }
        // A consumer stuck mid-update of its last sequence: reset it (even version,
        // nothing consumed), so the producer copies whole frames.
        let ver = memory.load(H_CONSUMED_VER);
        if ver & 1 == 1 {
            memory.store(H_CONSUMED_VALID, 0);
            memory.store(H_CONSUMED_VER, ver.wrapping_add(1));
        }
        Ok(RingConsumer {
            memory,
            layout,
            screen: Vec::new(),
            current: None,
            timestamp: 0.0,
        })
    }

    /// The ring's layout.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// The ring's counters.
    pub fn stats(&self) -> RingStats {
        stats(&self.memory)
    }

    /// The screen as of the last received frame (empty before the first), laid out as
    /// that frame's format says.
    pub fn data(&self) -> &[u8] {
        &self.screen
    }

    /// Takes the newest ready frame, if any, without blocking; older ready frames are
    /// dropped as stale. Updates [`data`](Self::data) and returns metadata describing
    /// the change *since the previously received frame*: `keyframe` when the whole
    /// screen was replaced (first frame, resize, sent keyframe, compressed), otherwise
    /// the `dirty` rectangles to redraw (empty: nothing changed).
    pub fn try_receive(&mut self) -> Result<Option<FrameMetadata>, SidecarError> {
        let (slot, seq_tag) = loop {
            let mut newest: Option<(usize, u32, u64)> = None;
            for slot in 0..self.layout.slot_count as usize {
                let base = self.layout.slot_base(slot);
                let word = self.memory.load(base + S_STATE);
                if state_of(word) != READY {
                    continue;
                }
                let seq = self.slot_sequence(base);
                if state_word(READY, seq) != word {
                    continue; // Rewritten meanwhile; the next scan sees it.
                }
                if newest.is_none_or(|(_, _, s)| seq > s) {
                    newest = Some((slot, word, seq));
                }
            }
            let Some((slot, word, seq)) = newest else {
                return Ok(None);
            };
            let base = self.layout.slot_base(slot);
            if self
                .memory
                .compare_exchange(base + S_STATE, word, state_word(READING, seq))
                .is_ok()
            {
                break (slot, word >> 2);
            }
        };
        let base = self.layout.slot_base(slot);
        let m = &self.memory;
        let sequence = self.slot_sequence(base);
        debug_assert_eq!(state_word(0, sequence) >> 2, seq_tag);
        // Older unread frames are stale now: free them.
        for other in 0..self.layout.slot_count as usize {
            let ob = self.layout.slot_base(other);
            let word = m.load(ob + S_STATE);
            if other != slot && state_of(word) == READY {
                let s = self.slot_sequence(ob);
                if s < sequence
                    && state_word(READY, s) == word
                    && m.compare_exchange(ob + S_STATE, word, state_word(FREE, s))
                        .is_ok()
                {
                    m.fetch_add(H_DROPPED, 1);
                }
            }
        }
        let result = self.read_slot(slot, sequence);
        self.memory
            .store(base + S_STATE, state_word(FREE, sequence));
        result.map(Some)
    }

    fn slot_sequence(&self, base: usize) -> u64 {
        (self.memory.load(base + S_SEQ_HI) as u64) << 32 | self.memory.load(base + S_SEQ_LO) as u64
    }

    /// Copies what changed out of a slot this side holds (`READING`).
    fn read_slot(&mut self, slot: usize, sequence: u64) -> Result<FrameMetadata, SidecarError> {
        let base = self.layout.slot_base(slot);
        let m = &self.memory;
        let bad = |reason: String| SidecarError::InvalidLayout { reason };
        let width = m.load(base + S_WIDTH);
        let height = m.load(base + S_HEIGHT);
        let format = PixelFormat::from_code(m.load(base + S_FORMAT))
            .ok_or_else(|| bad(format!("slot {slot} has an unknown pixel format")))?;
        let flags = m.load(base + S_FLAGS);
        let generation = m.load(base + S_GENERATION);
        let data_len = m.load(base + S_DATA_LEN) as usize;
        let ts = (m.load(base + S_TS_HI) as u64) << 32 | m.load(base + S_TS_LO) as u64;
        let base_seq = (m.load(base + S_BASE_HI) as u64) << 32 | m.load(base + S_BASE_LO) as u64;
        let rect_count = (m.load(base + S_RECT_COUNT) as usize).min(SLOT_RECTS);
        let geometry = Geometry {
            width,
            height,
            format,
        };
        if data_len > self.layout.slot_capacity as usize {
            return Err(bad(format!("slot {slot} claims {data_len} data bytes")));
        }
        let full = flags & FLAG_FULL != 0
            || format == PixelFormat::Compressed
            || match self.current {
                Some((g, geo, seq)) => {
                    g != generation || geo != geometry || seq < base_seq || seq > sequence
                }
                None => true,
            };
        let data_at = self.layout.slot_data_byte(slot);
        let mut dirty = Vec::new();
        if full {
            self.screen.resize(data_len, 0);
            m.read_bytes(data_at, &mut self.screen);
        } else {
            for i in 0..rect_count {
                let at = base + S_RECTS + 4 * i;
                let rect =
                    DirtyRect::new(m.load(at), m.load(at + 1), m.load(at + 2), m.load(at + 3));
                if !rect.fits(width, height) {
                    return Err(bad(format!(
                        "slot {slot} has a rectangle outside the frame"
                    )));
                }
                let screen = &mut self.screen;
                format.rect_spans(width, height, &rect, |off, len| {
                    m.read_bytes(data_at + off, &mut screen[off..off + len]);
                });
                dirty.push(rect);
            }
        }
        self.current = Some((generation, geometry, sequence));
        self.timestamp = f64::from_bits(ts);
        // Publish what this side now holds, for the producer's damage records.
        let ver = m.load(H_CONSUMED_VER);
        m.store(H_CONSUMED_VER, ver.wrapping_add(1));
        m.store(H_CONSUMED_LO, sequence as u32);
        m.store(H_CONSUMED_HI, (sequence >> 32) as u32);
        m.store(H_CONSUMED_VALID, 1);
        m.store(H_CONSUMED_VER, ver.wrapping_add(2));
        Ok(FrameMetadata {
            sequence,
            timestamp: f64::from_bits(ts),
            width,
            height,
            format,
            keyframe: full,
            dirty,
        })
    }

    /// Like [`try_receive`](Self::try_receive), but waits up to `timeout` for a frame.
    /// Natively it sleeps on the ring; on wasm32 it uses `Atomics.wait`, which only
    /// workers may do: on the page's main thread it fails with
    /// [`ErrorKind::WaitUnsupported`](crate::ErrorKind::WaitUnsupported) (poll
    /// `try_receive`, e.g. each animation frame, there).
    pub fn receive_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<FrameMetadata>, SidecarError> {
        let start = now();
        loop {
            let seen = self.memory.load(H_NOTIFY);
            if let Some(meta) = self.try_receive()? {
                return Ok(Some(meta));
            }
            let left = timeout.saturating_sub(elapsed(start));
            if left.is_zero() {
                return Ok(None);
            }
            if self.memory.wait(H_NOTIFY, seen, left) == WaitOutcome::Unsupported {
                return Err(SidecarError::WaitUnsupported {
                    reason: "Atomics.wait is not allowed on this thread".into(),
                });
            }
        }
    }

    /// The ring's notify word now: pass it to a wait (e.g. `Atomics.waitAsync` on word
    /// [`NOTIFY_WORD`]) started after a `try_receive` that found nothing, so a frame
    /// published in between is not missed.
    pub fn notify_value(&self) -> u32 {
        self.memory.load(H_NOTIFY)
    }

    /// The whole current screen as a [`Frame`] (a copy), or `None` before the first.
    pub fn frame(&self) -> Option<Frame> {
        let (_, geo, seq) = self.current?;
        Some(Frame {
            metadata: FrameMetadata::keyframe(
                seq,
                self.timestamp,
                geo.width,
                geo.height,
                geo.format,
            ),
            data: self.screen.clone(),
        })
    }
}

impl<M: SharedWords> Drop for RingConsumer<M> {
    fn drop(&mut self) {
        self.memory.store(H_CONSUMER, 0);
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

#[cfg(not(target_arch = "wasm32"))]
fn elapsed(start: std::time::Instant) -> Duration {
    start.elapsed()
}

#[cfg(target_arch = "wasm32")]
fn now() -> f64 {
    js_sys::Date::now()
}

#[cfg(target_arch = "wasm32")]
fn elapsed(start: f64) -> Duration {
    Duration::from_secs_f64(((js_sys::Date::now() - start) / 1000.0).max(0.0))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::SharedMemory;

    fn frame(seq: u64, value: u8) -> Frame {
        Frame {
            metadata: FrameMetadata::keyframe(seq, 0.0, 2, 2, PixelFormat::Rgba),
            data: vec![value; 16],
        }
    }

    #[test]
    fn layouts_beyond_what_memory_can_address_are_refused() {
        let err = RingLayout::new(MAX_SLOTS, MAX_SLOT_CAPACITY).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidLayout);
        let ok = RingLayout::new(3, MAX_SLOT_CAPACITY / 2).unwrap();
        assert!(ok.byte_len() as u64 <= MAX_RING_BYTES);
    }

    #[test]
    fn a_replacement_recovers_slots_left_by_terminated_sides() {
        let layout = RingLayout::new(2, 16).unwrap();
        let memory = SharedMemory::new(layout.len_words());
        layout.init(&memory).unwrap();
        let mut producer = RingProducer::attach(memory.clone()).unwrap();
        let mut consumer = RingConsumer::attach(memory.clone()).unwrap();
        producer.send(&frame(1, 1)).unwrap();
        consumer.try_receive().unwrap().unwrap();
        producer.send(&frame(2, 2)).unwrap();
        // Simulate both workers dying mid-operation: the consumer holding slot A
        // (READING) and mid-update of its sequence, the producer writing slot B.
        let (a, b) = (layout.slot_base(0) + S_STATE, layout.slot_base(1) + S_STATE);
        let wa = memory.load(a);
        memory.store(a, (wa & !3) | READING);
        memory.store(b, state_word(WRITING, 3));
        memory.store(H_CONSUMED_VER, memory.load(H_CONSUMED_VER) | 1);
        std::mem::forget(producer);
        std::mem::forget(consumer);

        let err = RingProducer::attach(memory.clone()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::AlreadyAttached);
        let mut producer = RingProducer::force_attach(memory.clone()).unwrap();
        let mut consumer = RingConsumer::force_attach(memory.clone()).unwrap();
        for seq in 4..10 {
            producer.send(&frame(seq, seq as u8)).unwrap();
            let got = consumer.try_receive().unwrap().unwrap();
            assert_eq!(got.sequence, seq);
            assert_eq!(consumer.data(), &[seq as u8; 16]);
        }
        // Both slots are usable again: two unread frames fit without a drop.
        producer.send(&frame(10, 10)).unwrap();
        assert_eq!(producer.send(&frame(11, 11)).unwrap().dropped, None);
        assert_eq!(consumer.try_receive().unwrap().unwrap().sequence, 11);
    }
}
