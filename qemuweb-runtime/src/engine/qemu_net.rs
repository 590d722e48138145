//! The QEMU engine's NIC on the page's virtual network: the block our QEMU patch 0030
//! (`qemuweb-wasm-build/patches/qemu-10.2.2/0030-qemuweb-netdev.patch`, `-netdev qemuweb`)
//! keeps in the module's shared memory, read and written by the VM worker, and connected
//! to the VM's `MessagePort` to the page's switch ([`crate::network`]) as the v86 engine's
//! NIC is (`engine::v86_net`): one frame is one transferred `ArrayBuffer`.
//!
//! The block is a header and two byte rings of records, one per direction:
//!
//! - **TX** (guest to page): QEMU's netdev appends each frame the NIC sends and notifies
//!   the `tx_head` word (`memory.atomic.notify`); the worker waits on that word with
//!   `Atomics.waitAsync` (no polling, no blocking: it wakes when a frame is there, or after
//!   [`TX_WAIT_MS`] to look again), takes every record and posts it to the page;
//! - **RX** (page to guest): the worker appends each frame the page posts, or drops it
//!   (counted in `rx_dropped`) when the ring has no room; a timer of QEMU's main loop takes
//!   the records (every millisecond while frames flow, backing off to 16 ms when the link
//!   is quiet) and hands them to the NIC.
//!
//! Neither side waits for the other and nothing goes through QEMU's threads, which are
//! often blocked (the module's main thread while it serves a disk read).
//!
//! The layout (little-endian, offsets in bytes), version [`VERSION`]:
//!
//! | offset | field |
//! | --- | --- |
//! | 0 | magic `QWNT` ([`MAGIC`]) |
//! | 4 | version |
//! | 8, 12 | sizes of the TX and RX rings (powers of two, [`MIN_RING`] to [`MAX_RING`]) |
//! | 16 | the largest frame (QEMU's bound, at most [`MAX_FRAME`]) |
//! | 20 | QEMU's timer ticks |
//! | 24, 28 | TX head (QEMU's), TX tail (the worker's) |
//! | 32, 36 | RX head (the worker's), RX tail (QEMU's) |
//! | 40, 44 | frames QEMU put in the TX ring, dropped (out of bounds) |
//! | 48, 52 | frames QEMU handed to the NIC, dropped by the worker (no room) |
//! | 56, 60 | bad RX records QEMU met, times the TX ring was full |
//! | 64 | the TX ring, then the RX ring |
//!
//! A record is the frame's length (a 32-bit word at a 4-byte aligned position of the
//! ring), then the frame, padded to 4 bytes; the frame may wrap around the ring's end.
//! Heads and tails count bytes and wrap at 2^32.

use crate::error::RuntimeError;

/// `QWNT`, little-endian.
pub const MAGIC: u32 = 0x544E_5751;
/// The layout version this reader speaks.
pub const VERSION: u32 = 1;
/// The header's 32-bit words.
pub const HEADER_WORDS: usize = 16;
/// The header's bytes (where the TX ring starts).
pub const HEADER_BYTES: u32 = 64;
/// The smallest frame a ring carries (an Ethernet header).
pub const MIN_FRAME: u32 = 14;
/// The largest frame a ring may carry.
pub const MAX_FRAME: u32 = 65550;
/// The smallest ring.
pub const MIN_RING: u32 = 128 << 10;
/// The largest ring.
pub const MAX_RING: u32 = 16 << 20;
/// How long the worker waits on the TX head before it looks again anyway (QEMU notifies
/// it at every frame; this only bounds how long a stop or a lost wake-up goes unseen).
pub const TX_WAIT_MS: f64 = 1000.0;
/// Records taken from the TX ring at one wake-up, at most (the worker's event loop has
/// the page's frames to write too).
pub const TX_BATCH: usize = 256;

/// Word indices of the header.
pub mod word {
    /// Magic.
    pub const MAGIC: usize = 0;
    /// Layout version.
    pub const VERSION: usize = 1;
    /// Bytes of the TX ring.
    pub const TX_SIZE: usize = 2;
    /// Bytes of the RX ring.
    pub const RX_SIZE: usize = 3;
    /// The largest frame.
    pub const MAX_FRAME: usize = 4;
    /// QEMU's timer ticks.
    pub const POLLS: usize = 5;
    /// TX head (QEMU's).
    pub const TX_HEAD: usize = 6;
    /// TX tail (the worker's).
    pub const TX_TAIL: usize = 7;
    /// RX head (the worker's).
    pub const RX_HEAD: usize = 8;
    /// RX tail (QEMU's).
    pub const RX_TAIL: usize = 9;
    /// Frames QEMU put in the TX ring.
    pub const TX_FRAMES: usize = 10;
    /// Frames QEMU dropped (out of bounds).
    pub const TX_DROPPED: usize = 11;
    /// Frames QEMU handed to the NIC.
    pub const RX_FRAMES: usize = 12;
    /// Frames the worker dropped (no room).
    pub const RX_DROPPED: usize = 13;
    /// Bad RX records QEMU met.
    pub const RX_ERRORS: usize = 14;
    /// Times the TX ring was full.
    pub const TX_FULL: usize = 15;
}

/// What is wrong with a QEMU network block: the runtime refuses it (and disconnects the
/// NIC) rather than read past it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetBlockFault {
    /// Not a `QWNT` block (or one QEMU closed).
    #[error("magic {0:#x}, not QWNT")]
    Magic(u32),
    /// Another layout version.
    #[error("layout version {0} (this runtime reads {VERSION})")]
    Version(u32),
    /// A ring size that is not a power of two within bounds.
    #[error("a ring of {0} bytes (a power of two from {MIN_RING} to {MAX_RING} expected)")]
    RingSize(u32),
    /// A frame bound out of range.
    #[error("a frame bound of {0} bytes (at most {MAX_FRAME}, at least {MIN_FRAME})")]
    FrameBound(u32),
    /// A ring's head or tail that do not fit the ring.
    #[error("the {ring} ring has {used} bytes queued in {size}")]
    Positions {
        /// `TX` or `RX`.
        ring: &'static str,
        /// Bytes between tail and head.
        used: u32,
        /// The ring's size.
        size: u32,
    },
    /// A record whose length is out of bounds or runs past the head.
    #[error("a record of {len} bytes in the TX ring with {used} bytes queued")]
    Record {
        /// The length it gives.
        len: u32,
        /// Bytes queued from it to the head.
        used: u32,
    },
    /// The block does not lie inside the module's memory.
    #[error("{0}")]
    Memory(String),
}

/// The checked layout of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of the TX ring.
    pub tx_size: u32,
    /// Bytes of the RX ring.
    pub rx_size: u32,
    /// The largest frame.
    pub max_frame: u32,
}

impl Layout {
    /// Reads and checks the header words.
    ///
    /// ```
    /// use qemuweb_runtime::engine::qemu_net::*;
    /// let mut w = [0i32; HEADER_WORDS];
    /// w[word::MAGIC] = MAGIC as i32;
    /// w[word::VERSION] = VERSION as i32;
    /// w[word::TX_SIZE] = 256 << 10;
    /// w[word::RX_SIZE] = 256 << 10;
    /// w[word::MAX_FRAME] = 65550;
    /// let l = Layout::parse(&w).unwrap();
    /// assert_eq!(l.rx_offset(), 64 + (256 << 10));
    /// w[word::VERSION] = 2;
    /// assert_eq!(Layout::parse(&w), Err(NetBlockFault::Version(2)));
    /// ```
    ///
    /// # Errors
    ///
    /// [`NetBlockFault`] for another magic or version, ring sizes or a frame bound out of
    /// range.
    pub fn parse(w: &[i32; HEADER_WORDS]) -> Result<Layout, NetBlockFault> {
        let u = |i: usize| w[i] as u32;
        if u(word::MAGIC) != MAGIC {
            return Err(NetBlockFault::Magic(u(word::MAGIC)));
        }
        if u(word::VERSION) != VERSION {
            return Err(NetBlockFault::Version(u(word::VERSION)));
        }
        for size in [u(word::TX_SIZE), u(word::RX_SIZE)] {
            if !(MIN_RING..=MAX_RING).contains(&size) || !size.is_power_of_two() {
                return Err(NetBlockFault::RingSize(size));
            }
        }
        let max_frame = u(word::MAX_FRAME);
        if !(MIN_FRAME..=MAX_FRAME).contains(&max_frame) {
            return Err(NetBlockFault::FrameBound(max_frame));
        }
        Ok(Layout {
            tx_size: u(word::TX_SIZE),
            rx_size: u(word::RX_SIZE),
            max_frame,
        })
    }

    /// Byte offset of the RX ring from the block's start (the TX ring is at
    /// [`HEADER_BYTES`]).
    pub fn rx_offset(&self) -> u32 {
        HEADER_BYTES + self.tx_size
    }

    /// The block's bytes.
    pub fn block_bytes(&self) -> u64 {
        u64::from(self.rx_offset()) + u64::from(self.rx_size)
    }
}

/// The bytes a record of a `len`-byte frame takes: its length word and the frame, padded
/// to 4 bytes.
///
/// ```
/// assert_eq!(qemuweb_runtime::engine::qemu_net::record_bytes(60), 64);
/// assert_eq!(qemuweb_runtime::engine::qemu_net::record_bytes(61), 68);
/// ```
pub fn record_bytes(len: u32) -> u32 {
    4 + len.next_multiple_of(4)
}

/// Where `len` bytes from ring position `pos` lie in a ring of `size` bytes (a power of
/// two): one span, or two when they wrap around its end; `(offset, length)` each.
///
/// ```
/// use qemuweb_runtime::engine::qemu_net::spans;
/// assert_eq!(spans(4, 8, 16), [(4, 8), (0, 0)]);
/// assert_eq!(spans(16 + 12, 8, 16), [(12, 4), (0, 4)]);
/// ```
pub fn spans(pos: u32, len: u32, size: u32) -> [(u32, u32); 2] {
    let at = pos & (size - 1);
    let first = len.min(size - at);
    [(at, first), (0, len - first)]
}

/// One record of a ring, located: its frame's length and where the frame lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The frame's bytes.
    pub len: u32,
    /// Where they are ([`spans`]).
    pub spans: [(u32, u32); 2],
    /// The tail after the record.
    pub next: u32,
}

/// The record at `tail` of the TX ring (`size` bytes, QEMU's `head`), whose length word
/// `read_len` reads at a ring offset; `None` when the ring is empty.
///
/// ```
/// use qemuweb_runtime::engine::qemu_net::{next_record, Record};
/// // A 60-byte frame at position 0 of a 1024-byte ring.
/// let r = next_record(64, 0, 1024, 1514, |_| 60).unwrap().unwrap();
/// assert_eq!(r, Record { len: 60, spans: [(4, 60), (0, 0)], next: 64 });
/// assert_eq!(next_record(64, 64, 1024, 1514, |_| 60).unwrap(), None);
/// ```
///
/// # Errors
///
/// [`NetBlockFault::Positions`] for a head more than the ring ahead of the tail (or not a
/// whole record from it), [`NetBlockFault::Record`] for a length out of bounds or a
/// record running past the head.
pub fn next_record(
    head: u32,
    tail: u32,
    size: u32,
    max_frame: u32,
    read_len: impl FnOnce(u32) -> u32,
) -> Result<Option<Record>, NetBlockFault> {
    let used = head.wrapping_sub(tail);
    if used == 0 {
        return Ok(None);
    }
    if used > size || used < 4 || used % 4 != 0 || tail % 4 != 0 {
        return Err(NetBlockFault::Positions {
            ring: "TX",
            used,
            size,
        });
    }
    let len = read_len(tail & (size - 1));
    if !(MIN_FRAME..=max_frame).contains(&len) || record_bytes(len) > used {
        return Err(NetBlockFault::Record { len, used });
    }
    Ok(Some(Record {
        len,
        spans: spans(tail.wrapping_add(4), len, size),
        next: tail.wrapping_add(record_bytes(len)),
    }))
}

/// Where a `len`-byte frame goes in the RX ring (`size` bytes, the worker's `head`, QEMU's
/// `tail`): its length word at the record's ring offset, the frame in [`Record::spans`],
/// the new head in [`Record::next`]. `Ok(None)` when the ring has no room for it.
///
/// ```
/// use qemuweb_runtime::engine::qemu_net::place_record;
/// let r = place_record(0, 0, 1024, 60).unwrap().unwrap();
/// assert_eq!((r.spans[0], r.next), ((4, 60), 64));
/// assert_eq!(place_record(1000, 0, 1024, 60).unwrap(), None);
/// ```
///
/// # Errors
///
/// [`NetBlockFault::Positions`] when QEMU's tail is ahead of the head or more than the
/// ring behind it.
pub fn place_record(
    head: u32,
    tail: u32,
    size: u32,
    len: u32,
) -> Result<Option<Record>, NetBlockFault> {
    let used = head.wrapping_sub(tail);
    if used > size {
        return Err(NetBlockFault::Positions {
            ring: "RX",
            used,
            size,
        });
    }
    if size - used < record_bytes(len) {
        return Ok(None);
    }
    Ok(Some(Record {
        len,
        spans: spans(head.wrapping_add(4), len, size),
        next: head.wrapping_add(record_bytes(len)),
    }))
}

impl From<NetBlockFault> for RuntimeError {
    fn from(e: NetBlockFault) -> Self {
        RuntimeError::NetBlock(e)
    }
}

#[cfg(target_arch = "wasm32")]
pub use nic::{NetBlock, QemuNet, QemuNic};

#[cfg(target_arch = "wasm32")]
mod nic {
    use super::*;
    use crate::engine::module_memory::{int32_view, locate, uint8_view, Located};
    use crate::network::{post_frame, PortListener};
    use js_sys::{Atomics, Int32Array, Promise, Reflect, Uint8Array};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen_futures::{spawn_local, JsFuture};

    /// The NIC of a VM on the QEMU engine: its end of the frame channel to the page (QEMU's
    /// arguments carry the model and MAC).
    pub struct QemuNic {
        /// The page's end of the frame channel.
        pub port: web_sys::MessagePort,
    }

    /// The block in the QEMU module's memory (a shared `WebAssembly.Memory`): its header
    /// words and the two rings (views that stay valid: the block never moves).
    pub struct NetBlock {
        words: Int32Array,
        tx: Uint8Array,
        rx: Uint8Array,
        layout: Layout,
    }

    impl NetBlock {
        /// The block at `address` of `memory`, checked: it lies inside the memory and
        /// carries QWNT version [`VERSION`] with sizes in range.
        ///
        /// # Errors
        ///
        /// [`RuntimeError::NetBlock`] for another object, an address outside the memory,
        /// another magic or version, sizes out of range.
        pub fn new(memory: &JsValue, address: &JsValue) -> Result<NetBlock, RuntimeError> {
            let what = "QEMU network block";
            let fault = |e: RuntimeError| NetBlockFault::Memory(e.to_string());
            let header =
                locate(memory, address, HEADER_BYTES as usize, 4.0, what).map_err(fault)?;
            let words = int32_view(&header.buffer, header.address, HEADER_WORDS as f64);
            let mut w = [0i32; HEADER_WORDS];
            for (i, v) in w.iter_mut().enumerate() {
                *v = Atomics::load(&words, i as u32).unwrap_or(0);
            }
            let layout = Layout::parse(&w)?;
            let Located {
                buffer, address, ..
            } = locate(memory, address, layout.block_bytes() as usize, 4.0, what).map_err(fault)?;
            Ok(NetBlock {
                words: int32_view(&buffer, address, HEADER_WORDS as f64),
                tx: uint8_view(
                    &buffer,
                    address + f64::from(HEADER_BYTES),
                    f64::from(layout.tx_size),
                ),
                rx: uint8_view(
                    &buffer,
                    address + f64::from(layout.rx_offset()),
                    f64::from(layout.rx_size),
                ),
                layout,
            })
        }

        fn load(&self, i: usize) -> u32 {
            Atomics::load(&self.words, i as u32).unwrap_or(0) as u32
        }

        fn store(&self, i: usize, v: u32) {
            let _ = Atomics::store(&self.words, i as u32, v as i32);
        }

        /// Whether QEMU still keeps the block (it clears the magic when the netdev goes).
        fn open(&self) -> bool {
            self.load(word::MAGIC) == MAGIC
        }

        /// Hands at most [`TX_BATCH`] frames of the TX ring to `deliver` (each a new
        /// `Uint8Array` of its own buffer) and frees their room; returns QEMU's head as
        /// it was last read (the value to wait on when the ring is empty).
        fn take_tx(&self, mut deliver: impl FnMut(&Uint8Array)) -> Result<u32, NetBlockFault> {
            let size = self.layout.tx_size;
            let mut tail = self.load(word::TX_TAIL);
            let mut head = self.load(word::TX_HEAD);
            for _ in 0..TX_BATCH {
                let read_len = |at: u32| {
                    let b = |k: u32| u32::from(self.tx.get_index(at + k));
                    b(0) | b(1) << 8 | b(2) << 16 | b(3) << 24
                };
                let Some(r) = next_record(head, tail, size, self.layout.max_frame, read_len)?
                else {
                    break;
                };
                let frame = Uint8Array::new_with_length(r.len);
                let mut at = 0;
                for (offset, n) in r.spans {
                    if n > 0 {
                        frame.set(&self.tx.subarray(offset, offset + n), at);
                        at += n;
                    }
                }
                tail = r.next;
                self.store(word::TX_TAIL, tail);
                deliver(&frame);
                head = self.load(word::TX_HEAD);
            }
            Ok(head)
        }

        /// Appends `frame` to the RX ring; `Ok(false)` (counted in `rx_dropped`) when it has
        /// no room or the frame is out of bounds.
        fn put_rx(&self, frame: &Uint8Array) -> Result<bool, NetBlockFault> {
            let len = frame.length();
            let head = self.load(word::RX_HEAD);
            let tail = self.load(word::RX_TAIL);
            let placed = if (MIN_FRAME..=self.layout.max_frame).contains(&len) {
                place_record(head, tail, self.layout.rx_size, len)?
            } else {
                None
            };
            let Some(r) = placed else {
                let _ = Atomics::add(&self.words, word::RX_DROPPED as u32, 1);
                return Ok(false);
            };
            let at = head & (self.layout.rx_size - 1);
            for (k, b) in len.to_le_bytes().iter().enumerate() {
                self.rx.set_index(at + k as u32, *b);
            }
            let mut from = 0;
            for (offset, n) in r.spans {
                if n > 0 {
                    self.rx.set(&frame.subarray(from, from + n), offset);
                    from += n;
                }
            }
            self.store(word::RX_HEAD, r.next);
            Ok(true)
        }

        /// Resolves when QEMU's TX head is no longer `head` (or after [`TX_WAIT_MS`]).
        async fn tx_moved(&self, head: u32) {
            let waited = Atomics::wait_async_with_timeout(
                &self.words,
                word::TX_HEAD as u32,
                head as i32,
                TX_WAIT_MS,
            );
            let Ok(result) = waited else {
                // No Atomics.waitAsync: look again shortly.
                gloo_timers::future::TimeoutFuture::new(4).await;
                return;
            };
            if Reflect::get(&result, &"async".into())
                .ok()
                .and_then(|a| a.as_bool())
                == Some(true)
            {
                if let Ok(p) = Reflect::get(&result, &"value".into()) {
                    let _ = JsFuture::from(Promise::from(p)).await;
                }
            }
        }
    }

    /// What the page's frames and the TX loop share.
    struct Shared {
        port: web_sys::MessagePort,
        block: RefCell<Option<Rc<NetBlock>>>,
        /// Bumped for each block (and when it goes): a TX loop of an older one ends.
        generation: Cell<u32>,
        /// Frames of the page dropped while QEMU had no block yet.
        early: Cell<u64>,
    }

    /// A QEMU NIC connected to the page's switch: the page's frames go into the RX ring
    /// of the block QEMU announced (dropped until it did), the TX ring's frames to the
    /// page. Dropping it disconnects the NIC (and closes its port).
    pub struct QemuNet {
        shared: Rc<Shared>,
        _listener: PortListener,
    }

    impl QemuNet {
        /// Starts listening to the page's frames on `nic`'s port.
        pub fn connect(nic: QemuNic) -> QemuNet {
            let shared = Rc::new(Shared {
                port: nic.port.clone(),
                block: RefCell::new(None),
                generation: Cell::new(0),
                early: Cell::new(0),
            });
            let s = shared.clone();
            let listener = PortListener::new(nic.port, move |data| {
                if !data.is_instance_of::<js_sys::ArrayBuffer>() {
                    return;
                }
                let block = s.block.borrow().clone();
                match block {
                    // A broken ring shows in the TX loop, which reports it.
                    Some(b) => {
                        let _ = b.put_rx(&Uint8Array::new(&data));
                    }
                    None => s.early.set(s.early.get() + 1),
                }
            });
            QemuNet {
                shared,
                _listener: listener,
            }
        }

        /// Takes the block of a (new) QEMU and carries its TX ring's frames to the page
        /// until it goes; `on_fault` hears of a broken block (which is then dropped).
        pub fn set_block(&self, block: NetBlock, on_fault: impl Fn(RuntimeError) + 'static) {
            let block = Rc::new(block);
            let generation = self.shared.generation.get().wrapping_add(1);
            self.shared.generation.set(generation);
            *self.shared.block.borrow_mut() = Some(block.clone());
            let shared = self.shared.clone();
            spawn_local(async move {
                loop {
                    if shared.generation.get() != generation || !block.open() {
                        return;
                    }
                    match block.take_tx(|frame| {
                        post_frame(&shared.port, frame);
                    }) {
                        Ok(head) => {
                            if head == block.load(word::TX_TAIL) {
                                block.tx_moved(head).await;
                            }
                        }
                        Err(e) => {
                            if shared.generation.get() == generation {
                                shared.block.borrow_mut().take();
                            }
                            return on_fault(e.into());
                        }
                    }
                }
            });
        }

        /// The block's counters: frames QEMU put in the TX ring, frames it handed to the
        /// NIC, frames dropped on either side (out of bounds, no room; before QEMU had a
        /// block), QEMU's timer ticks. `None` without a block.
        pub fn counters(&self) -> Option<[u64; 4]> {
            let block = self.shared.block.borrow();
            let b = block.as_ref()?;
            let n = |i: usize| u64::from(b.load(i));
            Some([
                n(word::TX_FRAMES),
                n(word::RX_FRAMES),
                n(word::TX_DROPPED) + n(word::RX_DROPPED) + self.shared.early.get(),
                n(word::POLLS),
            ])
        }

        /// Forgets the block (its QEMU is gone); the page's frames are dropped until the
        /// next one.
        pub fn clear_block(&self) {
            self.shared
                .generation
                .set(self.shared.generation.get().wrapping_add(1));
            self.shared.block.borrow_mut().take();
        }
    }

    impl Drop for QemuNet {
        fn drop(&mut self) {
            self.clear_block();
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
        w[word::TX_SIZE] = MIN_RING as i32;
        w[word::RX_SIZE] = MAX_RING as i32;
        w[word::MAX_FRAME] = MAX_FRAME as i32;
        w
    }

    #[test]
    fn a_header_is_checked_before_the_rings_are_used() {
        let l = Layout::parse(&header()).unwrap();
        assert_eq!(
            l.block_bytes(),
            64 + u64::from(MIN_RING) + u64::from(MAX_RING)
        );
        let cases: Vec<(usize, i32, NetBlockFault)> = vec![
            (word::MAGIC, 0, NetBlockFault::Magic(0)),
            (word::VERSION, 2, NetBlockFault::Version(2)),
            (
                word::TX_SIZE,
                (MIN_RING + 4) as i32,
                NetBlockFault::RingSize(MIN_RING + 4),
            ),
            (
                word::RX_SIZE,
                (MAX_RING * 2) as i32,
                NetBlockFault::RingSize(MAX_RING * 2),
            ),
            (word::TX_SIZE, 4096, NetBlockFault::RingSize(4096)),
            (word::MAX_FRAME, 13, NetBlockFault::FrameBound(13)),
            (
                word::MAX_FRAME,
                MAX_FRAME as i32 + 1,
                NetBlockFault::FrameBound(MAX_FRAME + 1),
            ),
        ];
        for (i, v, want) in cases {
            let mut w = header();
            w[i] = v;
            assert_eq!(Layout::parse(&w), Err(want.clone()), "{want}");
            // As the engine reports it.
            let e = RuntimeError::from(want);
            assert_eq!(e.code(), crate::ErrorCode::Engine);
            assert!(e.to_string().contains("QEMU network block"), "{e}");
        }
    }

    /// A ring in memory, written as QEMU's netdev and the worker write it.
    struct Ring {
        bytes: Vec<u8>,
        head: u32,
        tail: u32,
    }

    impl Ring {
        fn new(size: u32, at: u32) -> Ring {
            Ring {
                bytes: vec![0; size as usize],
                head: at,
                tail: at,
            }
        }

        fn size(&self) -> u32 {
            self.bytes.len() as u32
        }

        /// The worker's side of the RX ring (and QEMU's of the TX ring, the same code).
        fn put(&mut self, frame: &[u8]) -> bool {
            let Some(r) =
                place_record(self.head, self.tail, self.size(), frame.len() as u32).unwrap()
            else {
                return false;
            };
            let at = (self.head & (self.size() - 1)) as usize;
            self.bytes[at..at + 4].copy_from_slice(&(frame.len() as u32).to_le_bytes());
            let mut from = 0;
            for (offset, n) in r.spans {
                let (offset, n) = (offset as usize, n as usize);
                self.bytes[offset..offset + n].copy_from_slice(&frame[from..from + n]);
                from += n;
            }
            self.head = r.next;
            true
        }

        fn take(&mut self) -> Result<Option<Vec<u8>>, NetBlockFault> {
            let bytes = &self.bytes;
            let read_len = |at: u32| {
                let at = at as usize;
                u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
            };
            let Some(r) = next_record(self.head, self.tail, self.size(), 1514, read_len)? else {
                return Ok(None);
            };
            let mut frame = Vec::new();
            for (offset, n) in r.spans {
                frame.extend_from_slice(&bytes[offset as usize..(offset + n) as usize]);
            }
            self.tail = r.next;
            Ok(Some(frame))
        }
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
    }

    #[test]
    fn frames_go_through_a_ring_in_order_across_its_end_and_the_counters_wrap() {
        // Start near the end of the counters' range: they wrap at 2^32 mid-way.
        let mut ring = Ring::new(1024, u32::MAX - 203);
        let mut sent = 0u8;
        let mut got = 0u8;
        for round in 0..50 {
            // As many as fit, of awkward sizes (records wrap at every offset).
            while ring.put(&frame(14 + (usize::from(sent) * 37) % 300, sent)) {
                sent = sent.wrapping_add(1);
            }
            // Take some (all every fifth round).
            let n = if round % 5 == 4 { usize::MAX } else { 2 };
            for _ in 0..n {
                let Some(f) = ring.take().unwrap() else { break };
                assert_eq!(f, frame(14 + (usize::from(got) * 37) % 300, got));
                got = got.wrapping_add(1);
            }
        }
        assert!(sent > 100, "{sent}");
        while let Some(f) = ring.take().unwrap() {
            assert_eq!(f, frame(14 + (usize::from(got) * 37) % 300, got));
            got = got.wrapping_add(1);
        }
        assert_eq!(got, sent);
        assert_eq!(ring.head, ring.tail);
    }

    #[test]
    fn a_full_ring_refuses_and_broken_positions_or_records_are_faults() {
        let mut ring = Ring::new(256, 0);
        assert!(ring.put(&frame(130, 1)));
        assert!(!ring.put(&frame(130, 2)), "136 + 136 > 256");
        assert!(ring.put(&frame(100, 3)), "136 + 104 <= 256");
        assert_eq!(ring.take().unwrap().unwrap(), frame(130, 1));
        // A tail ahead of the head (QEMU broke it): the worker stops writing.
        assert!(matches!(
            place_record(0, 8, 256, 60),
            Err(NetBlockFault::Positions { ring: "RX", .. })
        ));
        // A head more than the ring ahead, or not a whole record.
        for (head, tail) in [(300, 0), (2, 0), (6, 2)] {
            assert!(
                matches!(
                    next_record(head, tail, 256, 1514, |_| 60),
                    Err(NetBlockFault::Positions { ring: "TX", .. })
                ),
                "{head} {tail}"
            );
        }
        // Lengths out of bounds or past the head.
        for (len, head) in [(13, 64), (1515, 2000), (60, 60), (0, 8)] {
            let e = next_record(head, 0, 4096, 1514, |_| len).unwrap_err();
            assert_eq!(e, NetBlockFault::Record { len, used: head }, "{e}");
        }
        // A ring that is full to the byte is fine.
        let r = next_record(256, 0, 256, 1514, |_| 252).unwrap().unwrap();
        assert_eq!((r.len, r.next), (252, 256));
    }
}
