//! The QEMU engine's display and input: the block our QEMU patch 0020
//! (`qemuweb-wasm-build/patches/qemu-10.2.2/0020-qemuweb-display.patch`, `-display qemuweb`)
//! keeps in the module's shared memory, read and written by the VM worker.
//!
//! QEMU's display backend copies every screen update of the guest (text and graphics modes
//! alike: QEMU's VGA renders text itself) into an RGBA copy of the console's surface and
//! widens a dirty box; a new surface (a mode or size change) bumps `generation`. The VM
//! worker takes the dirty rows every [`POLL_MS`] under the block's spin lock, diffs them
//! into a [`GraphicsScreen`](super::vga_graphics::GraphicsScreen) and publishes the changed
//! rectangles into the display ring, as the v86 engine does. Input goes the other way
//! through a ring of [`INPUT_SLOTS`] events in the same block, which QEMU's main loop
//! empties at every display refresh into its input layer. Nobody waits: the module's main
//! thread (which serves disk reads) is not involved after it handed over the address.
//!
//! The layout (little-endian, offsets in bytes), version [`VERSION`]:
//!
//! | offset | field |
//! | --- | --- |
//! | 0 | magic `QWDS` ([`MAGIC`]) |
//! | 4 | version |
//! | 8 | lock (0 free, 1 held) |
//! | 12 | generation |
//! | 16, 20, 24 | width, height, stride of the RGBA copy |
//! | 28 | updates (a counter) |
//! | 32, 36, 40, 44 | dirty box x0, y0, x1, y1 (x1 = 0: nothing) |
//! | 48 | address of the RGBA copy (`u64`) |
//! | 56, 60, 64 | input head (the worker's), tail (QEMU's), dropped |
//! | 72 | [`INPUT_SLOTS`] events of 4 `i32`: type, a, b, c |

use crate::engine::vga_graphics::{GraphicsScreen, Layer};
use crate::error::RuntimeError;
use crate::input::{InputEvent, Key, PointerButton};
use qemuweb_sidecar::Frame;

/// `QWDS`, little-endian.
pub const MAGIC: u32 = 0x5344_5751;
/// The layout version this reader speaks.
pub const VERSION: u32 = 1;
/// The header's 32-bit words (up to the input ring).
pub const HEADER_WORDS: usize = 18;
/// Byte offset of the input ring.
pub const INPUT_OFFSET: usize = 72;
/// Events the input ring holds.
pub const INPUT_SLOTS: u32 = 256;
/// How often the worker looks for screen updates and feeds input.
pub const POLL_MS: u32 = 16;
/// The largest screen accepted from QEMU, each side.
pub const MAX_SIDE: u32 = 4096;

/// Word indices of the header.
pub mod word {
    /// Magic.
    pub const MAGIC: usize = 0;
    /// Layout version.
    pub const VERSION: usize = 1;
    /// The spin lock.
    pub const LOCK: usize = 2;
    /// Surface generation.
    pub const GENERATION: usize = 3;
    /// Width.
    pub const WIDTH: usize = 4;
    /// Height.
    pub const HEIGHT: usize = 5;
    /// Bytes per row.
    pub const STRIDE: usize = 6;
    /// Update counter.
    pub const UPDATES: usize = 7;
    /// Dirty box left.
    pub const DIRTY_X0: usize = 8;
    /// Dirty box top.
    pub const DIRTY_Y0: usize = 9;
    /// Dirty box right (exclusive; 0: nothing changed).
    pub const DIRTY_X1: usize = 10;
    /// Dirty box bottom (exclusive).
    pub const DIRTY_Y1: usize = 11;
    /// Low word of the pixels' address.
    pub const PIXELS_LO: usize = 12;
    /// High word of the pixels' address.
    pub const PIXELS_HI: usize = 13;
    /// Input ring head (written by the worker).
    pub const INPUT_HEAD: usize = 14;
    /// Input ring tail (written by QEMU).
    pub const INPUT_TAIL: usize = 15;
    /// Events dropped because the ring was full (counted by the worker).
    pub const INPUT_DROPPED: usize = 16;
}

/// The bytes of the block from its start to the end of the input ring.
pub const BLOCK_BYTES: usize = INPUT_OFFSET + INPUT_SLOTS as usize * 16;

/// Event types of the input ring.
pub mod event {
    /// a: Linux evdev code, b: 1 down / 0 up.
    pub const KEY: i32 = 1;
    /// a, b: absolute position 0..=0x7fff (used when the guest's pointer is a tablet).
    pub const ABS: i32 = 2;
    /// a, b: relative motion, down positive (used otherwise).
    pub const REL: i32 = 3;
    /// a: 0 left, 1 middle, 2 right; b: 1 down / 0 up.
    pub const BUTTON: i32 = 4;
    /// a: horizontal notches (right), b: vertical notches (down).
    pub const WHEEL: i32 = 5;
}

/// The screen part of the header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screen {
    /// Bumped for each new surface.
    pub generation: u32,
    /// Width in pixels (0: no surface).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Address of the RGBA copy in the module's memory.
    pub pixels: u64,
    /// Rows and columns changed since the last read: (x0, y0, x1, y1), exclusive ends.
    pub dirty: Option<(u32, u32, u32, u32)>,
}

impl Screen {
    /// Reads and checks the header words (read under the lock).
    ///
    /// ```
    /// use qemuweb_runtime::engine::qemu_display::*;
    /// let mut w = [0i32; HEADER_WORDS];
    /// w[word::MAGIC] = MAGIC as i32;
    /// w[word::VERSION] = 1;
    /// w[word::WIDTH] = 720;
    /// w[word::HEIGHT] = 400;
    /// w[word::STRIDE] = 2880;
    /// w[word::PIXELS_LO] = 0x1000;
    /// w[word::DIRTY_X1] = 9;
    /// w[word::DIRTY_Y1] = 16;
    /// let s = Screen::parse(&w, 1 << 31).unwrap();
    /// assert_eq!(s.dirty, Some((0, 0, 9, 16)));
    /// ```
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Engine`] for another magic or version, or sizes, a dirty box or
    /// pixels that do not fit (`memory_len`: the bytes of the module's memory).
    pub fn parse(w: &[i32; HEADER_WORDS], memory_len: u64) -> Result<Screen, RuntimeError> {
        let u = |i: usize| w[i] as u32;
        let bad = |why: String| Err(RuntimeError::Engine(format!("QEMU display block: {why}")));
        if u(word::MAGIC) != MAGIC {
            return bad(format!("magic {:#x}, not QWDS", u(word::MAGIC)));
        }
        if u(word::VERSION) != VERSION {
            return bad(format!(
                "layout version {} (this runtime reads {VERSION})",
                u(word::VERSION)
            ));
        }
        let (width, height) = (u(word::WIDTH), u(word::HEIGHT));
        let pixels = u64::from(u(word::PIXELS_LO)) | u64::from(u(word::PIXELS_HI)) << 32;
        if width == 0 || height == 0 {
            return Ok(Screen {
                generation: u(word::GENERATION),
                width: 0,
                height: 0,
                pixels: 0,
                dirty: None,
            });
        }
        if width > MAX_SIDE || height > MAX_SIDE || u(word::STRIDE) != width * 4 {
            return bad(format!(
                "a {width}x{height} screen with stride {}",
                u(word::STRIDE)
            ));
        }
        let end = pixels.checked_add(u64::from(width) * u64::from(height) * 4);
        if pixels == 0 || end.is_none_or(|e| e > memory_len) {
            return bad(format!("pixels at {pixels:#x} outside the memory"));
        }
        let (x0, y0, x1, y1) = (
            u(word::DIRTY_X0),
            u(word::DIRTY_Y0),
            u(word::DIRTY_X1),
            u(word::DIRTY_Y1),
        );
        let dirty = if x1 == 0 {
            None
        } else if x0 < x1 && y0 < y1 && x1 <= width && y1 <= height {
            Some((x0, y0, x1, y1))
        } else {
            return bad(format!(
                "dirty box ({x0},{y0})-({x1},{y1}) of {width}x{height}"
            ));
        };
        Ok(Screen {
            generation: u(word::GENERATION),
            width,
            height,
            pixels,
            dirty,
        })
    }
}

/// Which part of QEMU's RGBA copy to read (under the block's lock): whole rows
/// `y0..y1`, of which columns `x0..x1` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRead {
    /// First row.
    pub y0: u32,
    /// End row (exclusive).
    pub y1: u32,
    /// First changed column.
    pub x0: u32,
    /// End column (exclusive).
    pub x1: u32,
}

impl RowRead {
    /// Where the rows start, in bytes from the start of the pixels.
    pub fn offset(&self, width: u32) -> u64 {
        u64::from(self.y0) * u64::from(width) * 4
    }

    /// How many bytes the rows hold.
    pub fn len(&self, width: u32) -> u64 {
        u64::from(self.y1 - self.y0) * u64::from(width) * 4
    }

    /// Whether no row is read.
    pub fn is_empty(&self) -> bool {
        self.y1 <= self.y0
    }
}

/// The VM worker's side of QEMU's screen: what it last saw of the block and a
/// [`GraphicsScreen`] that turns what changed into the display ring's frames (the same
/// path as v86's graphics modes: only rows and columns that really changed go out).
#[derive(Debug, Default)]
pub struct ScreenReader {
    generation: Option<u32>,
    width: u32,
    screen: GraphicsScreen,
}

impl ScreenReader {
    /// Forgets the surface seen (another QEMU started): the next read takes the whole
    /// screen and the next frame is a keyframe.
    pub fn restart(&mut self) {
        self.generation = None;
    }

    /// What to copy out of the block whose header is `s` (read under the lock, which is
    /// held until the rows are copied): the whole screen for a surface not seen yet (a
    /// new size, or the first read), else the dirty box's rows; `None` if nothing changed.
    ///
    /// ```
    /// use qemuweb_runtime::engine::qemu_display::{RowRead, Screen, ScreenReader};
    /// let mut r = ScreenReader::default();
    /// let s = Screen { generation: 1, width: 720, height: 400, pixels: 64, dirty: None };
    /// assert_eq!(r.plan(&s), Some(RowRead { y0: 0, y1: 400, x0: 0, x1: 720 }));
    /// assert_eq!(r.plan(&s), None);
    /// ```
    pub fn plan(&mut self, s: &Screen) -> Option<RowRead> {
        if s.width == 0 {
            return None;
        }
        if self.generation != Some(s.generation) {
            self.generation = Some(s.generation);
            self.width = s.width;
            self.screen.set_size(s.width, s.height);
            self.screen.invalidate();
            return Some(RowRead {
                y0: 0,
                y1: s.height,
                x0: 0,
                x1: s.width,
            });
        }
        s.dirty.map(|(x0, y0, x1, y1)| RowRead { y0, y1, x0, x1 })
    }

    /// Takes the rows `read` named (`rows`: as many whole rows of the RGBA copy as were
    /// read) into the screen; returns whether any pixel changed.
    pub fn take(&mut self, read: &RowRead, rows: &[u8]) -> bool {
        let layer = Layer {
            screen_x: i64::from(read.x0),
            screen_y: i64::from(read.y0),
            buffer_x: read.x0,
            buffer_y: 0,
            buffer_width: read.x1.saturating_sub(read.x0),
            buffer_height: read.y1.saturating_sub(read.y0),
        };
        self.screen.blit(&layer, self.width, rows)
    }

    /// The next frame (see [`GraphicsScreen::take_frame`]).
    pub fn take_frame(&mut self, sequence: u64, timestamp: f64) -> Option<Frame> {
        self.screen.take_frame(sequence, timestamp)
    }
}

/// The input ring's entries for `events` (checked with
/// [`check_events`](crate::input::check_events)): a move is both an absolute and a
/// relative entry, QEMU uses the one its guest's pointer takes.
///
/// ```
/// use qemuweb_runtime::engine::qemu_display::{encode_input, event};
/// use qemuweb_runtime::input::InputEvent;
/// let e = encode_input(&[InputEvent::Key { code: "KeyA".into(), down: true }]).unwrap();
/// assert_eq!(e, vec![[event::KEY, 30, 1, 0]]);
/// ```
///
/// # Errors
///
/// [`RuntimeError::Malformed`] for an unknown key.
pub fn encode_input(events: &[InputEvent]) -> Result<Vec<[i32; 4]>, RuntimeError> {
    let mut out = Vec::with_capacity(events.len() * 2);
    for e in events {
        match e {
            InputEvent::Key { code, down } => {
                let key = Key::from_code(code)?;
                out.push([event::KEY, i32::from(key.evdev), i32::from(*down), 0]);
            }
            InputEvent::Move { x, y, dx, dy } => {
                out.push([event::ABS, *x as i32, *y as i32, 0]);
                if *dx != 0 || *dy != 0 {
                    out.push([event::REL, *dx, *dy, 0]);
                }
            }
            InputEvent::Button { button, down } => {
                let b = match button {
                    PointerButton::Left => 0,
                    PointerButton::Middle => 1,
                    PointerButton::Right => 2,
                };
                out.push([event::BUTTON, b, i32::from(*down), 0]);
            }
            InputEvent::Wheel { dx, dy } => out.push([event::WHEEL, *dx, *dy, 0]),
        }
    }
    Ok(out)
}

/// How many entries fit in the ring now (`head` the worker's count, `tail` QEMU's).
///
/// ```
/// use qemuweb_runtime::engine::qemu_display::{ring_space, INPUT_SLOTS};
/// assert_eq!(ring_space(10, 10), INPUT_SLOTS);
/// assert_eq!(ring_space(u32::MAX, u32::MAX - 5), INPUT_SLOTS - 5);
/// assert_eq!(ring_space(5, 10), 0); // a tail ahead of the head: a broken ring takes nothing
/// ```
pub fn ring_space(head: u32, tail: u32) -> u32 {
    let used = head.wrapping_sub(tail);
    INPUT_SLOTS.saturating_sub(used)
}

/// Key events handed to QEMU at one refresh, at most. QEMU's PS/2 keyboard queues 16
/// bytes and drops what comes beyond them: all the keys typed within one 16 ms refresh
/// would overflow it before a slow (interpreted) guest read them. At most this many (each
/// one or two bytes) go per refresh; a human does not type faster.
pub const KEYS_PER_REFRESH: usize = 4;

/// How many of the waiting `entries` (in order) go into the ring now: as many as there is
/// `space` for, up to (not including) the key event past [`KEYS_PER_REFRESH`].
///
/// ```
/// use qemuweb_runtime::engine::qemu_display::{input_chunk, event};
/// let key = [event::KEY, 30, 1, 0];
/// let abs = [event::ABS, 1, 2, 0];
/// let waiting = [abs, key, key, abs, key, key, key, abs];
/// assert_eq!(input_chunk(waiting.iter(), 256), 6);
/// assert_eq!(input_chunk(waiting.iter(), 3), 3);
/// ```
pub fn input_chunk<'a>(entries: impl Iterator<Item = &'a [i32; 4]>, space: u32) -> usize {
    let mut keys = 0;
    let mut n = 0;
    for e in entries.take(space as usize) {
        if e[0] == event::KEY {
            if keys == KEYS_PER_REFRESH {
                break;
            }
            keys += 1;
        }
        n += 1;
    }
    n
}

/// The index (in 32-bit words from the block's start) of the first word of input entry
/// number `n` (the ring wraps every [`INPUT_SLOTS`]).
///
/// ```
/// use qemuweb_runtime::engine::qemu_display::{input_word, INPUT_SLOTS};
/// assert_eq!(input_word(0), 18);
/// assert_eq!(input_word(INPUT_SLOTS + 1), 22);
/// ```
pub fn input_word(n: u32) -> usize {
    INPUT_OFFSET / 4 + (n % INPUT_SLOTS) as usize * 4
}

/// How long the worker tries to take the block's lock before it leaves the read to the
/// next poll (QEMU holds it while it copies one update).
#[cfg(target_arch = "wasm32")]
const LOCK_SPIN_MS: f64 = 20.0;

/// Input entries waiting for room in the ring, at most (a whole batch of
/// [`MAX_INPUT_EVENTS`](crate::input::MAX_INPUT_EVENTS) moves fits); a batch that does not
/// fit is dropped and counted.
pub const INPUT_BACKLOG: usize = 2 * crate::input::MAX_INPUT_EVENTS;

#[cfg(target_arch = "wasm32")]
pub use block::{DisplayBlock, QemuDisplay};

#[cfg(target_arch = "wasm32")]
mod block {
    use super::*;
    use crate::engine::frame_ring::FrameRing;
    use crate::engine::module_memory::{int32_view, locate, uint8_view, Located};
    use js_sys::{Atomics, Int32Array, WebAssembly};
    use std::collections::VecDeque;
    use wasm_bindgen::prelude::*;

    /// The block in the QEMU module's memory (a shared `WebAssembly.Memory`, wasm32 or
    /// Memory64: addresses are byte offsets into its buffer either way).
    pub struct DisplayBlock {
        memory: WebAssembly::Memory,
        /// The block's words (it is static in QEMU's data: the view stays valid when the
        /// memory grows).
        words: Int32Array,
    }

    impl DisplayBlock {
        /// The block at `address` of `memory`, checked: it lies inside the memory and
        /// carries QWDS version [`VERSION`].
        ///
        /// # Errors
        ///
        /// [`RuntimeError::Engine`] for another object, an address outside the memory,
        /// another magic or version.
        pub fn new(memory: &JsValue, address: &JsValue) -> Result<DisplayBlock, RuntimeError> {
            let Located {
                memory,
                buffer,
                address,
            } = locate(memory, address, BLOCK_BYTES, 4.0, "QEMU display block")?;
            let bad = |why: String| RuntimeError::Engine(format!("QEMU display block: {why}"));
            let words = int32_view(&buffer, address, (BLOCK_BYTES / 4) as f64);
            let magic = Atomics::load(&words, word::MAGIC as u32).unwrap_or(0) as u32;
            let version = Atomics::load(&words, word::VERSION as u32).unwrap_or(0) as u32;
            if magic != MAGIC || version != VERSION {
                return Err(bad(format!(
                    "magic {magic:#x} version {version} (this runtime reads QWDS version {VERSION})"
                )));
            }
            Ok(DisplayBlock { memory, words })
        }

        /// Takes the spin lock, trying for [`LOCK_SPIN_MS`]; `false` if QEMU held it
        /// all that time.
        fn lock(&self) -> bool {
            let start = js_sys::Date::now();
            loop {
                if Atomics::compare_exchange(&self.words, word::LOCK as u32, 0, 1) == Ok(0) {
                    return true;
                }
                if js_sys::Date::now() - start > LOCK_SPIN_MS {
                    return false;
                }
            }
        }

        fn unlock(&self) {
            let _ = Atomics::store(&self.words, word::LOCK as u32, 0);
        }

        fn load(&self, i: usize) -> u32 {
            Atomics::load(&self.words, i as u32).unwrap_or(0) as u32
        }

        /// Under the lock: reads the header, copies what `reader` plans out of the RGBA
        /// copy and clears the dirty box. `Ok(None)`: nothing changed (or QEMU held the
        /// lock).
        fn read(
            &self,
            reader: &mut ScreenReader,
        ) -> Result<Option<(RowRead, Vec<u8>)>, RuntimeError> {
            if !self.lock() {
                return Ok(None);
            }
            let result = (|| {
                let mut w = [0i32; HEADER_WORDS];
                for (i, v) in w.iter_mut().enumerate() {
                    *v = self.words.get_index(i as u32);
                }
                let buffer = self.memory.buffer();
                let len = js_sys::Reflect::get(&buffer, &"byteLength".into())
                    .ok()
                    .and_then(|l| l.as_f64())
                    .unwrap_or(0.0);
                let screen = Screen::parse(&w, len as u64)?;
                let Some(plan) = reader.plan(&screen) else {
                    return Ok(None);
                };
                let at = screen.pixels + plan.offset(screen.width);
                let rows = uint8_view(&buffer, at as f64, plan.len(screen.width) as f64).to_vec();
                for i in word::DIRTY_X0..=word::DIRTY_Y1 {
                    self.words.set_index(i as u32, 0);
                }
                Ok(Some((plan, rows)))
            })();
            self.unlock();
            result
        }
    }

    /// The QEMU engine's display and input: the block QEMU announced, the display ring
    /// the page gave (if any) and input waiting for room in QEMU's ring.
    #[derive(Default)]
    pub struct QemuDisplay {
        block: Option<DisplayBlock>,
        ring: Option<FrameRing>,
        reader: ScreenReader,
        backlog: VecDeque<[i32; 4]>,
        dropped: u64,
    }

    impl QemuDisplay {
        /// A display publishing into `ring` (without one the screen is not read, and only
        /// input goes through the block).
        pub fn new(ring: Option<FrameRing>) -> QemuDisplay {
            QemuDisplay {
                ring,
                ..QemuDisplay::default()
            }
        }

        /// Takes the block of a (new) QEMU: the screen is read whole from it, input not
        /// yet handed to the previous one is dropped.
        pub fn set_block(&mut self, block: DisplayBlock) {
            self.block = Some(block);
            self.reader.restart();
            self.backlog.clear();
        }

        /// Forgets the block (its QEMU is gone).
        pub fn clear_block(&mut self) {
            self.block = None;
        }

        /// Whether QEMU announced its block.
        pub fn has_block(&self) -> bool {
            self.block.is_some()
        }

        /// Events dropped so far because there was no room for them.
        pub fn dropped(&self) -> u64 {
            self.dropped
        }

        /// One poll: hands waiting input to QEMU's ring and publishes what changed on
        /// the screen (with a ring). Returns whether a frame went out.
        ///
        /// # Errors
        ///
        /// [`RuntimeError::Engine`] for a block whose header is broken (the caller then
        /// forgets it).
        pub fn poll(&mut self) -> Result<bool, RuntimeError> {
            self.pump();
            let (Some(block), Some(ring)) = (&self.block, &mut self.ring) else {
                return Ok(false);
            };
            if let Some((plan, rows)) = block.read(&mut self.reader)? {
                self.reader.take(&plan, &rows);
            }
            let frame = self
                .reader
                .take_frame(ring.next_sequence(), js_sys::Date::now());
            Ok(ring.publish(frame))
        }

        /// Queues `entries` (one batch, from [`encode_input`]) for QEMU's input ring;
        /// returns how many were dropped (the whole batch when the backlog has no room
        /// for it, so that no key stays held half-way).
        pub fn queue(&mut self, entries: Vec<[i32; 4]>) -> usize {
            if self.backlog.len() + entries.len() > INPUT_BACKLOG {
                let n = entries.len();
                self.dropped += n as u64;
                if let Some(block) = &self.block {
                    let _ = Atomics::add(&block.words, word::INPUT_DROPPED as u32, n as i32);
                }
                return n;
            }
            self.backlog.extend(entries);
            self.pump();
            0
        }

        /// Moves waiting input into QEMU's ring once QEMU took what was there before (so
        /// one refresh takes one chunk: [`input_chunk`]).
        fn pump(&mut self) {
            let Some(block) = &self.block else {
                return;
            };
            if self.backlog.is_empty() {
                return;
            }
            let head = block.load(word::INPUT_HEAD);
            let tail = block.load(word::INPUT_TAIL);
            if head != tail {
                return;
            }
            let n = input_chunk(self.backlog.iter(), ring_space(head, tail));
            for (k, entry) in self.backlog.drain(..n).enumerate() {
                let at = input_word(head.wrapping_add(k as u32));
                for (j, v) in entry.iter().enumerate() {
                    block.words.set_index((at + j) as u32, *v);
                }
            }
            if n > 0 {
                let _ = Atomics::store(
                    &block.words,
                    word::INPUT_HEAD as u32,
                    head.wrapping_add(n as u32) as i32,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [i32; HEADER_WORDS] {
        let mut w = [0i32; HEADER_WORDS];
        w[word::MAGIC] = MAGIC as i32;
        w[word::VERSION] = VERSION as i32;
        w[word::GENERATION] = 3;
        w[word::WIDTH] = 640;
        w[word::HEIGHT] = 480;
        w[word::STRIDE] = 2560;
        w[word::PIXELS_LO] = 0x10_0000;
        w
    }

    #[test]
    fn a_header_is_checked_before_its_pixels_are_read() {
        let mem = 1u64 << 31;
        let s = Screen::parse(&header(), mem).unwrap();
        assert_eq!(
            (s.generation, s.width, s.height, s.dirty),
            (3, 640, 480, None)
        );
        let cases: Vec<(usize, i32, &str)> = vec![
            (word::MAGIC, 0, "magic"),
            (word::VERSION, 2, "version"),
            (word::STRIDE, 2561, "stride"),
            (word::WIDTH, 5000, "stride"),
            (word::PIXELS_LO, 0, "outside"),
            (word::PIXELS_HI, 1, "outside"),
            (word::DIRTY_X1, 641, "dirty"),
        ];
        for (i, v, why) in cases {
            let mut w = header();
            w[i] = v;
            if i == word::DIRTY_X1 {
                w[word::DIRTY_Y1] = 1;
            }
            let e = Screen::parse(&w, mem).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        // A box whose ends are not past its start.
        let mut w = header();
        w[word::DIRTY_X0] = 5;
        w[word::DIRTY_X1] = 5;
        w[word::DIRTY_Y1] = 1;
        assert!(Screen::parse(&w, mem).is_err());
        // Pixels running past the end of the memory.
        assert!(Screen::parse(&header(), 0x10_0000 + 640 * 480 * 4 - 1).is_err());
        // No surface yet: nothing to read.
        let mut w = header();
        w[word::WIDTH] = 0;
        assert_eq!(Screen::parse(&w, mem).unwrap().width, 0);
    }

    /// A `w x h` RGBA copy whose pixel (x, y) is `[x, y, seed, 255]`.
    fn copy(w: u32, h: u32, seed: u8) -> Vec<u8> {
        let mut v = Vec::new();
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&[x as u8, y as u8, seed, 255]);
            }
        }
        v
    }

    /// Reads `s` from `pixels` as the worker does: the planned rows, then a frame.
    fn read(r: &mut ScreenReader, s: &Screen, pixels: &[u8]) -> Option<Frame> {
        if let Some(plan) = r.plan(s) {
            let at = plan.offset(s.width) as usize;
            r.take(&plan, &pixels[at..at + plan.len(s.width) as usize]);
        }
        r.take_frame(1, 0.0)
    }

    #[test]
    fn a_new_surface_is_a_keyframe_then_only_the_dirty_box_is_read() {
        let mut r = ScreenReader::default();
        let mut s = Screen {
            generation: 1,
            width: 0,
            height: 0,
            pixels: 0,
            dirty: None,
        };
        // No surface yet: nothing.
        assert!(read(&mut r, &s, &[]).is_none());
        s = Screen {
            width: 64,
            height: 32,
            pixels: 8,
            ..s
        };
        let mut px = copy(64, 32, 1);
        let key = read(&mut r, &s, &px).unwrap();
        assert!(key.metadata.keyframe);
        assert_eq!((key.metadata.width, key.metadata.height), (64, 32));
        assert_eq!(key.data, px);
        // Unchanged, nothing dirty: nothing.
        assert!(read(&mut r, &s, &px).is_none());
        // QEMU reports a box wider than what changed: the frame has only the change.
        px[(10 * 64 + 5) * 4] = 0xee;
        px[(11 * 64 + 7) * 4] = 0xee;
        s.dirty = Some((0, 8, 64, 16));
        let f = read(&mut r, &s, &px).unwrap();
        assert!(!f.metadata.keyframe);
        assert_eq!(
            f.metadata.dirty,
            vec![qemuweb_sidecar::DirtyRect::new(5, 10, 3, 2)]
        );
        assert_eq!(f.data, px);
        // A dirty box that changed nothing: no frame.
        assert!(read(&mut r, &s, &px).is_none());
        // A new surface of the same size (generation bumped) is sent whole again.
        s.generation = 2;
        s.dirty = None;
        assert!(read(&mut r, &s, &px).unwrap().metadata.keyframe);
        // A new size.
        s.generation = 3;
        s.width = 32;
        let px = copy(32, 32, 2);
        let f = read(&mut r, &s, &px).unwrap();
        assert_eq!((f.metadata.width, f.metadata.keyframe), (32, true));
        assert_eq!(f.data, px);
        // Another QEMU: its first surface may have the same generation; it is read whole.
        r.restart();
        assert!(read(&mut r, &s, &px).unwrap().metadata.keyframe);
    }

    #[test]
    fn input_goes_in_as_the_patch_reads_it() {
        let e = encode_input(&[
            InputEvent::Move {
                x: 100,
                y: 200,
                dx: -3,
                dy: 4,
            },
            InputEvent::Move {
                x: 1,
                y: 2,
                dx: 0,
                dy: 0,
            },
            InputEvent::Button {
                button: PointerButton::Right,
                down: true,
            },
            InputEvent::Wheel { dx: 0, dy: -2 },
            InputEvent::Key {
                code: "ControlRight".into(),
                down: false,
            },
        ])
        .unwrap();
        assert_eq!(
            e,
            vec![
                [event::ABS, 100, 200, 0],
                [event::REL, -3, 4, 0],
                [event::ABS, 1, 2, 0],
                [event::BUTTON, 2, 1, 0],
                [event::WHEEL, 0, -2, 0],
                [event::KEY, 97, 0, 0],
            ]
        );
    }
}
