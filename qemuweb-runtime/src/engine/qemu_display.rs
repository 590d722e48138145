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

use crate::error::RuntimeError;
use crate::input::{InputEvent, Key, PointerButton};

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
}

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
