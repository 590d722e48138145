//! The disk channel of the QEMU engine: how QEMU's synchronous file reads and writes reach
//! the asynchronous storage stacks.
//!
//! QEMU opens each disk as a file of the Emscripten filesystem whose `read`/`write`
//! callbacks run on the QEMU module's main JavaScript thread (a worker of its own,
//! `web/qemu-worker.js`; Emscripten proxies every file syscall of QEMU's threads to it
//! synchronously). A callback cannot await a fetch or IndexedDB, so it hands the request
//! to the VM worker, which holds the storage stacks, and blocks with `Atomics.wait` until
//! the answer is there:
//!
//! ```text
//!  qemu-worker (blocks)                       VM worker (async)
//!  header <- request (op, disk, offset, len, seq); window <- data (writes)
//!  STATE = PENDING; postMessage("io") ------> read header, check it
//!  Atomics.wait(STATE == PENDING, timeout)    dev.read_at / write_at
//!                                             window <- data (reads); RESULT = len or -errno
//!  <------------------------------------------ STATE = DONE; Atomics.notify
//!  copy window -> QEMU's buffer (reads); STATE = IDLE
//! ```
//!
//! The channel is one `SharedArrayBuffer`: a header of [`HEADER_WORDS`] 32-bit words, a
//! [`STDIN_RING`]-byte ring for the guest's serial input, a [`QMP_RING`]-byte ring for
//! commands to QEMU's QMP monitor (snapshots: `engine::qmp`), then a data window of
//! `window` bytes. Serial input and QMP commands go through shared memory too, because
//! QEMU polls its file descriptors from the module's main thread in a loop of proxied
//! calls, during which that thread may never return to its event loop to receive a
//! message. Both rings work alike: a byte counter each side (written, taken), wrapping. A request larger than the window is [`split`] into
//! window-sized pieces. A wait that times out breaks the channel for good (a late answer
//! could land in the window of the next request): every later request fails at once with
//! `EIO`, and the engine reports an error event, so the guest sees I/O errors, never a hang.
//!
//! Everything here is plain data and arithmetic (tested natively); the wasm32 code that
//! moves bytes between the buffers is `engine::qemu`.
//!
//! ```
//! use qemuweb_runtime::engine::qemu_channel::*;
//! let req = IoRequest { op: IoOp::Read, disk: 0, offset: 1 << 33, len: 4096, seq: 7 };
//! let mut header = [0i32; HEADER_WORDS];
//! req.encode(&mut header);
//! assert_eq!(IoRequest::decode(&header).unwrap(), req);
//! let pieces: Vec<_> = split(100, 2500, 1024).collect();
//! assert_eq!(pieces, [(100, 0, 1024), (1124, 1024, 1024), (2148, 2048, 452)]);
//! ```

use std::fmt;

/// Words of the header (each an `i32`, for `Atomics`).
pub const HEADER_WORDS: usize = 16;
/// Bytes of the header; the data window starts here.
pub const HEADER_BYTES: usize = HEADER_WORDS * 4;
/// Bytes of the serial input ring (the most one `serialIn` command carries).
pub const STDIN_RING: usize = 64 * 1024;
/// Where the QMP command ring starts.
pub const QMP_OFFSET: usize = HEADER_BYTES + STDIN_RING;
/// Bytes of the QMP command ring (the same size as the serial ring, so both use
/// [`stdin_free`] and [`stdin_slot`]).
pub const QMP_RING: usize = STDIN_RING;
/// Where the data window starts.
pub const WINDOW_OFFSET: usize = QMP_OFFSET + QMP_RING;
/// The default data window: 1 MiB (QEMU's reads are mostly 4 KiB to 1 MiB).
pub const DEFAULT_WINDOW: u32 = 1 << 20;
/// How long a callback waits for one answer before it gives up (the storage stack does a
/// few HTTP requests at most per piece).
pub const DEFAULT_TIMEOUT_MS: u32 = 60_000;

/// The `errno` QEMU sees for a failed read or write: Emscripten's `EIO` (its errno values
/// are WASI's).
pub const EIO: i32 = 29;
/// The `errno` for a write to a read-only channel disk (`EROFS` in Emscripten).
pub const EROFS: i32 = 69;

/// Word indexes of the header.
pub mod slot {
    /// [`State`](super::State) of the channel; the word `Atomics.wait` waits on.
    pub const STATE: usize = 0;
    /// The [`IoOp`](super::IoOp).
    pub const OP: usize = 1;
    /// The disk's index (`disk0` is 0).
    pub const DISK: usize = 2;
    /// Bytes to transfer (at most the window).
    pub const LEN: usize = 3;
    /// Low 32 bits of the byte offset.
    pub const OFFSET_LO: usize = 4;
    /// High 32 bits of the byte offset.
    pub const OFFSET_HI: usize = 5;
    /// The answer: bytes transferred, or minus an errno.
    pub const RESULT: usize = 6;
    /// The request's sequence number, echoed in [`ACK`].
    pub const SEQ: usize = 7;
    /// The sequence number of the request the answer is for.
    pub const ACK: usize = 8;
    /// Serial input bytes written into the ring so far (wrapping), by the VM worker.
    pub const STDIN_WRITTEN: usize = 9;
    /// Serial input bytes taken from the ring so far (wrapping), by QEMU's side.
    pub const STDIN_TAKEN: usize = 10;
    /// QMP command bytes written into the QMP ring so far (wrapping), by the VM worker.
    pub const QMP_WRITTEN: usize = 11;
    /// QMP command bytes taken from the QMP ring so far (wrapping), by QEMU's side.
    pub const QMP_TAKEN: usize = 12;
}

/// How many bytes the serial input ring (or the QMP ring, of the same size) can take,
/// from its two counters.
///
/// ```
/// use qemuweb_runtime::engine::qemu_channel::{stdin_free, STDIN_RING};
/// assert_eq!(stdin_free(0, 0), STDIN_RING);
/// assert_eq!(stdin_free(10, 4), STDIN_RING - 6);
/// assert_eq!(stdin_free(3, u32::MAX), STDIN_RING - 4); // the counters wrap
/// ```
pub fn stdin_free(written: u32, taken: u32) -> usize {
    STDIN_RING.saturating_sub(written.wrapping_sub(taken) as usize)
}

/// The ring offset of the byte with counter value `n` (either ring).
pub fn stdin_slot(n: u32) -> usize {
    n as usize % STDIN_RING
}

/// The values of the [`slot::STATE`] word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum State {
    /// No request.
    Idle = 0,
    /// A request waits for its answer.
    Pending = 1,
    /// The answer is in the header (and the window, for reads).
    Done = 2,
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum IoOp {
    /// Read `len` bytes at `offset` into the window.
    Read = 1,
    /// Write the window's first `len` bytes at `offset`.
    Write = 2,
}

/// One request on the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoRequest {
    /// Read or write.
    pub op: IoOp,
    /// The disk's index.
    pub disk: u32,
    /// Byte offset in the disk.
    pub offset: u64,
    /// Bytes (at most the window).
    pub len: u32,
    /// Sequence number.
    pub seq: u32,
}

/// Why a request read from the header cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// The op word is neither read nor write.
    BadOp(i32),
    /// A negative length.
    BadLength(i32),
    /// The length is larger than the window.
    TooLong {
        /// The length asked for.
        len: u32,
        /// The window.
        window: u32,
    },
    /// No disk with this index.
    NoDisk(u32),
    /// The range runs past the end of the disk.
    OutOfRange {
        /// The offset.
        offset: u64,
        /// The length.
        len: u32,
        /// The disk's size.
        size: u64,
    },
    /// A write to a disk QEMU must not write.
    ReadOnly(u32),
}

impl ChannelError {
    /// The errno QEMU's syscall fails with.
    pub fn errno(&self) -> i32 {
        match self {
            ChannelError::ReadOnly(_) => EROFS,
            _ => EIO,
        }
    }
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::BadOp(op) => write!(f, "unknown disk channel op {op}"),
            ChannelError::BadLength(len) => write!(f, "negative disk channel length {len}"),
            ChannelError::TooLong { len, window } => {
                write!(
                    f,
                    "a {len}-byte request does not fit the {window}-byte window"
                )
            }
            ChannelError::NoDisk(d) => write!(f, "no disk{d}"),
            ChannelError::OutOfRange { offset, len, size } => write!(
                f,
                "{len} bytes at {offset} run past the end of the {size}-byte disk"
            ),
            ChannelError::ReadOnly(d) => write!(f, "disk{d} is read-only"),
        }
    }
}

impl IoRequest {
    /// Writes the request into the header words (not [`slot::STATE`]).
    pub fn encode(&self, header: &mut [i32; HEADER_WORDS]) {
        header[slot::OP] = self.op as i32;
        header[slot::DISK] = self.disk as i32;
        header[slot::LEN] = self.len as i32;
        header[slot::OFFSET_LO] = self.offset as u32 as i32;
        header[slot::OFFSET_HI] = (self.offset >> 32) as u32 as i32;
        header[slot::RESULT] = 0;
        header[slot::SEQ] = self.seq as i32;
    }

    /// Reads a request from the header words.
    ///
    /// # Errors
    ///
    /// [`ChannelError::BadOp`] or [`ChannelError::BadLength`] for words no client writes.
    pub fn decode(header: &[i32]) -> Result<Self, ChannelError> {
        let word = |i: usize| header.get(i).copied().unwrap_or(0);
        let op = match word(slot::OP) {
            1 => IoOp::Read,
            2 => IoOp::Write,
            other => return Err(ChannelError::BadOp(other)),
        };
        let len = word(slot::LEN);
        if len < 0 {
            return Err(ChannelError::BadLength(len));
        }
        Ok(IoRequest {
            op,
            disk: word(slot::DISK) as u32,
            offset: u64::from(word(slot::OFFSET_LO) as u32)
                | (u64::from(word(slot::OFFSET_HI) as u32) << 32),
            len: len as u32,
            seq: word(slot::SEQ) as u32,
        })
    }

    /// Checks the request against the window and the disks: `disks[i]` is disk `i`'s
    /// (size, writable).
    ///
    /// ```
    /// use qemuweb_runtime::engine::qemu_channel::*;
    /// let r = IoRequest { op: IoOp::Write, disk: 1, offset: 0, len: 512, seq: 1 };
    /// assert_eq!(r.check(4096, &[(1 << 20, true), (1 << 20, false)]).unwrap_err().errno(), EROFS);
    /// ```
    ///
    /// # Errors
    ///
    /// The [`ChannelError`] that makes it unservable.
    pub fn check(&self, window: u32, disks: &[(u64, bool)]) -> Result<(), ChannelError> {
        if self.len > window {
            return Err(ChannelError::TooLong {
                len: self.len,
                window,
            });
        }
        let &(size, writable) = disks
            .get(self.disk as usize)
            .ok_or(ChannelError::NoDisk(self.disk))?;
        if self
            .offset
            .checked_add(u64::from(self.len))
            .is_none_or(|end| end > size)
        {
            return Err(ChannelError::OutOfRange {
                offset: self.offset,
                len: self.len,
                size,
            });
        }
        if self.op == IoOp::Write && !writable {
            return Err(ChannelError::ReadOnly(self.disk));
        }
        Ok(())
    }
}

/// The bytes a read of `len` at `position` can return from a disk of `size` bytes (reads
/// at or past the end return fewer, as `pread` does).
///
/// ```
/// assert_eq!(qemuweb_runtime::engine::qemu_channel::clamp_read(1000, 900, 200), 100);
/// assert_eq!(qemuweb_runtime::engine::qemu_channel::clamp_read(1000, 2000, 200), 0);
/// ```
pub fn clamp_read(size: u64, position: u64, len: u64) -> u64 {
    size.saturating_sub(position).min(len)
}

/// Splits a transfer of `len` bytes at disk offset `offset` into pieces of at most
/// `window` bytes: `(disk offset, offset in the caller's buffer, length)`.
pub fn split(offset: u64, len: u64, window: u32) -> impl Iterator<Item = (u64, u64, u32)> {
    let window = u64::from(window.max(1));
    (0..len.div_ceil(window)).map(move |i| {
        let done = i * window;
        (offset + done, done, (len - done).min(window) as u32)
    })
}

/// The bytes of a channel's `SharedArrayBuffer` with a `window`-byte data window.
pub fn channel_bytes(window: u32) -> usize {
    WINDOW_OFFSET + window as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_the_header() {
        for (op, offset, len) in [
            (IoOp::Read, 0u64, 0u32),
            (IoOp::Write, u64::from(u32::MAX) + 1, 512),
            (IoOp::Read, (1u64 << 40) + 12345, DEFAULT_WINDOW),
        ] {
            let r = IoRequest {
                op,
                disk: 3,
                offset,
                len,
                seq: u32::MAX,
            };
            let mut h = [0i32; HEADER_WORDS];
            r.encode(&mut h);
            assert_eq!(IoRequest::decode(&h).unwrap(), r);
        }
        let mut h = [0i32; HEADER_WORDS];
        h[slot::OP] = 9;
        assert_eq!(IoRequest::decode(&h), Err(ChannelError::BadOp(9)));
        h[slot::OP] = 1;
        h[slot::LEN] = -1;
        assert_eq!(IoRequest::decode(&h), Err(ChannelError::BadLength(-1)));
        // A short header reads as zeros: no op.
        assert!(IoRequest::decode(&[]).is_err());
    }

    #[test]
    fn requests_are_checked() {
        let disks = [(10_000u64, true), (4096, false)];
        let r = |op, disk, offset, len| IoRequest {
            op,
            disk,
            offset,
            len,
            seq: 1,
        };
        assert!(r(IoOp::Read, 0, 9_000, 1000).check(4096, &disks).is_ok());
        assert!(r(IoOp::Read, 1, 0, 4096).check(4096, &disks).is_ok());
        let e = r(IoOp::Read, 0, 9_001, 1000)
            .check(4096, &disks)
            .unwrap_err();
        assert!(
            matches!(e, ChannelError::OutOfRange { size: 10_000, .. }),
            "{e}"
        );
        assert_eq!(e.errno(), EIO);
        let e = r(IoOp::Read, 0, u64::MAX, 1)
            .check(4096, &disks)
            .unwrap_err();
        assert!(matches!(e, ChannelError::OutOfRange { .. }));
        assert_eq!(
            r(IoOp::Read, 2, 0, 1).check(4096, &disks),
            Err(ChannelError::NoDisk(2))
        );
        assert_eq!(
            r(IoOp::Read, 0, 0, 4097).check(4096, &disks),
            Err(ChannelError::TooLong {
                len: 4097,
                window: 4096
            })
        );
        let e = r(IoOp::Write, 1, 0, 512).check(4096, &disks).unwrap_err();
        assert_eq!(e, ChannelError::ReadOnly(1));
        assert!(e.to_string().contains("read-only"));
    }

    #[test]
    fn transfers_split_into_window_pieces() {
        assert_eq!(split(5, 0, 1024).count(), 0);
        assert_eq!(split(5, 1024, 1024).collect::<Vec<_>>(), [(5, 0, 1024)]);
        let pieces: Vec<_> = split(1 << 32, 3 * 1024 + 1, 1024).collect();
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces[3], ((1 << 32) + 3 * 1024, 3 * 1024, 1));
        // Pieces cover the range exactly, in order.
        let total: u64 = pieces.iter().map(|p| u64::from(p.2)).sum();
        assert_eq!(total, 3 * 1024 + 1);
        for w in pieces.windows(2) {
            assert_eq!(w[0].0 + u64::from(w[0].2), w[1].0);
            assert_eq!(w[0].1 + u64::from(w[0].2), w[1].1);
        }
        // A zero window is treated as one byte rather than looping forever.
        assert_eq!(split(0, 3, 0).count(), 3);
        assert_eq!(
            channel_bytes(DEFAULT_WINDOW),
            HEADER_BYTES + STDIN_RING + QMP_RING + (1 << 20)
        );
        // The ring's slots wrap with the counters (STDIN_RING divides 2^32).
        assert_eq!(stdin_slot(u32::MAX), STDIN_RING - 1);
        assert_eq!(stdin_slot(u32::MAX.wrapping_add(1)), 0);
    }
}
