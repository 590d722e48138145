//! The [`RemoteTransport`](crate::RemoteTransport)'s wire format: versioned binary
//! WebSocket messages, all integers little-endian.
//!
//! Every message starts with an 8-byte header: the magic `QWFS`, the wire version
//! (`u16`, [`WIRE_VERSION`]), the message type (`u8`) and a zero byte. Then, by type:
//!
//! | type | message | body after the header |
//! | --- | --- | --- |
//! | 1 | [`Hello`] (receiver to sender) | `min_version u16, max_version u16, format_count u8, flags u8, 0u16`, then `format_count` format codes in preference order |
//! | 2 | [`Welcome`] (sender to receiver) | `version u16, format u8, flags u8, 0u32` |
//! | 3 | frame ([`WireFrame`]) | `flags u8, format u8, 0u16, rect_count u32, sequence u64, base u64, timestamp f64, width u32, height u32, payload_len u32, checksum u32`, then `rect_count` rectangles (`x, y, width, height`, `u32` each), then the payload |
//! | 4 | [`Ack`] (receiver to sender) | `flags u8, 0u8, 0u16, checksum u32, sequence u64` |
//! | 5 | [`Refusal`] | `code u16, reason_len u16`, then the UTF-8 reason |
//!
//! Format codes: 0 RGBA, 1 RGB565, 2 YUV420, 3 compressed. A frame's flags: bit 0
//! keyframe, bit 1 checksum present. A keyframe's payload is the whole screen (its
//! `base` is 0, it lists no rectangles); a delta's payload is the bytes of its dirty
//! rectangles, in order, each as [`PixelFormat`]'s rows (for YUV420 the Y rows, then
//! the U rows, then the V rows covering it), and `base` names the frame it applies on.
//! Compressed frames are always keyframes. The checksum is the CRC-32 (IEEE) of the
//! sender's whole screen after the frame. An ack's flag bit 0 says its checksum (the
//! receiver's screen after the frame) is present.
//!
//! Decoding checks every length and field: a malformed message is an error of kind
//! [`Malformed`](crate::ErrorKind::Malformed) (or a frame validation kind such as
//! [`InvalidSize`](crate::ErrorKind::InvalidSize)), never a panic.
//!
//! ```
//! use qemuweb_sidecar::wire::*;
//! use qemuweb_sidecar::{FrameMetadata, PixelFormat};
//!
//! let frame = WireFrame {
//!     metadata: FrameMetadata::keyframe(7, 1.5, 2, 1, PixelFormat::Rgba),
//!     base: 0,
//!     checksum: None,
//!     payload: &[1, 2, 3, 4, 5, 6, 7, 8],
//! };
//! let bytes = WireMessage::Frame(frame.clone()).encode();
//! assert_eq!(&bytes[..4], b"QWFS");
//! assert_eq!(decode(&bytes)?, WireMessage::Frame(frame));
//! assert!(decode(&bytes[..bytes.len() - 1]).is_err());
//! # Ok::<(), qemuweb_sidecar::SidecarError>(())
//! ```

use crate::frame::{DirtyRect, FrameMetadata, PixelFormat, MAX_DIRTY_RECTS};
use crate::SidecarError;

/// The first four bytes of every message.
pub const WIRE_MAGIC: [u8; 4] = *b"QWFS";
/// The wire version this crate speaks.
pub const WIRE_VERSION: u16 = 1;
/// The length of the common message header.
pub const HEADER_LEN: usize = 8;
/// The length of a frame message before its rectangles and payload.
pub const FRAME_HEADER_LEN: usize = HEADER_LEN + 48;

const T_HELLO: u8 = 1;
const T_WELCOME: u8 = 2;
const T_FRAME: u8 = 3;
const T_ACK: u8 = 4;
const T_REFUSAL: u8 = 5;

const F_KEYFRAME: u8 = 1;
const F_CHECKSUM: u8 = 2;
/// Hello/Welcome flag: frames carry screen checksums.
const F_CHECKSUMS: u8 = 1;

/// The receiver's opening message: which wire versions and pixel formats it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The oldest wire version the receiver speaks.
    pub min_version: u16,
    /// The newest wire version the receiver speaks.
    pub max_version: u16,
    /// Formats the receiver can show, most preferred first (1..=4, no repeats).
    pub formats: Vec<PixelFormat>,
    /// Whether the receiver asks for screen checksums in every frame.
    pub checksums: bool,
}

/// The sender's answer to a [`Hello`]: the version and format of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// The wire version of the stream.
    pub version: u16,
    /// The pixel format every frame will have.
    pub format: PixelFormat,
    /// Whether frames carry screen checksums.
    pub checksums: bool,
}

/// One frame on the wire: its metadata, the frame it applies on (`base`, deltas only),
/// the sender's screen checksum and the payload (borrowed from the message).
#[derive(Debug, Clone, PartialEq)]
pub struct WireFrame<'a> {
    /// The frame's metadata (`dirty` lists the rectangles the payload holds).
    pub metadata: FrameMetadata,
    /// For deltas: the sequence number of the frame this one changes; 0 for keyframes.
    pub base: u64,
    /// CRC-32 of the sender's whole screen after this frame, if negotiated.
    pub checksum: Option<u32>,
    /// The whole screen (keyframes) or the dirty rectangles' bytes (deltas).
    pub payload: &'a [u8],
}

/// The receiver's acknowledgement of a frame it applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The frame's sequence number.
    pub sequence: u64,
    /// CRC-32 of the receiver's screen after the frame, if checksums were negotiated.
    pub checksum: Option<u32>,
}

/// Why a peer refused the stream (sent before it closes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 1: no common version, 2: no common pixel format, 3: anything else.
    pub code: u16,
    /// A human-readable reason.
    pub reason: String,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum WireMessage<'a> {
    /// Receiver to sender, first.
    Hello(Hello),
    /// Sender to receiver, answering the hello.
    Welcome(Welcome),
    /// A frame.
    Frame(WireFrame<'a>),
    /// Receiver to sender, after each frame applied.
    Ack(Ack),
    /// Either way, before closing.
    Refusal(Refusal),
}

fn malformed(reason: impl Into<String>) -> SidecarError {
    SidecarError::Malformed {
        reason: reason.into(),
    }
}

fn header(out: &mut Vec<u8>, kind: u8) {
    out.extend_from_slice(&WIRE_MAGIC);
    out.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    out.extend_from_slice(&[kind, 0]);
}

/// Appends a frame message's header and rectangles to `out` (the caller appends the
/// `payload_len` payload bytes after them).
pub(crate) fn encode_frame_head(
    out: &mut Vec<u8>,
    metadata: &FrameMetadata,
    base: u64,
    checksum: Option<u32>,
    payload_len: usize,
) {
    header(out, T_FRAME);
    let flags = if metadata.keyframe { F_KEYFRAME } else { 0 }
        | if checksum.is_some() { F_CHECKSUM } else { 0 };
    out.extend_from_slice(&[flags, metadata.format.code() as u8, 0, 0]);
    out.extend_from_slice(&(metadata.dirty.len() as u32).to_le_bytes());
    out.extend_from_slice(&metadata.sequence.to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&metadata.timestamp.to_le_bytes());
    out.extend_from_slice(&metadata.width.to_le_bytes());
    out.extend_from_slice(&metadata.height.to_le_bytes());
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&checksum.unwrap_or(0).to_le_bytes());
    for r in &metadata.dirty {
        for v in [r.x, r.y, r.width, r.height] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

impl WireMessage<'_> {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            WireMessage::Hello(h) => {
                header(&mut out, T_HELLO);
                out.extend_from_slice(&h.min_version.to_le_bytes());
                out.extend_from_slice(&h.max_version.to_le_bytes());
                let flags = if h.checksums { F_CHECKSUMS } else { 0 };
                out.extend_from_slice(&[h.formats.len() as u8, flags, 0, 0]);
                out.extend(h.formats.iter().map(|f| f.code() as u8));
            }
            WireMessage::Welcome(w) => {
                header(&mut out, T_WELCOME);
                out.extend_from_slice(&w.version.to_le_bytes());
                let flags = if w.checksums { F_CHECKSUMS } else { 0 };
                out.extend_from_slice(&[w.format.code() as u8, flags, 0, 0, 0, 0]);
            }
            WireMessage::Frame(f) => {
                encode_frame_head(&mut out, &f.metadata, f.base, f.checksum, f.payload.len());
                out.extend_from_slice(f.payload);
            }
            WireMessage::Ack(a) => {
                header(&mut out, T_ACK);
                out.extend_from_slice(&[a.checksum.is_some() as u8, 0, 0, 0]);
                out.extend_from_slice(&a.checksum.unwrap_or(0).to_le_bytes());
                out.extend_from_slice(&a.sequence.to_le_bytes());
            }
            WireMessage::Refusal(r) => {
                header(&mut out, T_REFUSAL);
                let reason = truncate_utf8(&r.reason, u16::MAX as usize);
                out.extend_from_slice(&r.code.to_le_bytes());
                out.extend_from_slice(&(reason.len() as u16).to_le_bytes());
                out.extend_from_slice(reason.as_bytes());
            }
        }
        out
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A cursor over a message's bytes; every read is length-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SidecarError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            malformed(format!(
                "truncated: needs {n} more bytes at offset {}, message has {}",
                self.at,
                self.bytes.len()
            ))
        })?;
        let got = &self.bytes[self.at..end];
        self.at = end;
        Ok(got)
    }

    fn u8(&mut self) -> Result<u8, SidecarError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, SidecarError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }

    fn u32(&mut self) -> Result<u32, SidecarError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    fn u64(&mut self) -> Result<u64, SidecarError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }

    fn zero(&mut self, n: usize, what: &str) -> Result<(), SidecarError> {
        if self.take(n)?.iter().any(|&b| b != 0) {
            return Err(malformed(format!("reserved {what} bytes are not zero")));
        }
        Ok(())
    }

    fn flags(&mut self, known: u8) -> Result<u8, SidecarError> {
        let flags = self.u8()?;
        if flags & !known != 0 {
            return Err(malformed(format!("unknown flags {flags:#04x}")));
        }
        Ok(flags)
    }

    fn format(&mut self) -> Result<PixelFormat, SidecarError> {
        let code = self.u8()?;
        PixelFormat::from_code(code as u32)
            .ok_or_else(|| malformed(format!("unknown pixel format code {code}")))
    }

    fn end(&self) -> Result<(), SidecarError> {
        if self.at != self.bytes.len() {
            return Err(malformed(format!(
                "{} trailing bytes after the message",
                self.bytes.len() - self.at
            )));
        }
        Ok(())
    }
}

/// Decodes one message, checking every field and length (see the module docs).
///
/// ```
/// use qemuweb_sidecar::{wire, ErrorKind};
/// let err = wire::decode(b"QWFS\x01\x00\x09\x00").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Malformed);
/// ```
pub fn decode(bytes: &[u8]) -> Result<WireMessage<'_>, SidecarError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != WIRE_MAGIC {
        return Err(malformed("bad magic (not a QemuWeb frame-stream message)"));
    }
    let version = r.u16()?;
    if version != WIRE_VERSION {
        return Err(malformed(format!(
            "wire version {version}, this end speaks {WIRE_VERSION}"
        )));
    }
    let kind = r.u8()?;
    r.zero(1, "header")?;
    let message = match kind {
        T_HELLO => WireMessage::Hello(decode_hello(&mut r)?),
        T_WELCOME => {
            let version = r.u16()?;
            let format = r.format()?;
            let flags = r.flags(F_CHECKSUMS)?;
            r.zero(4, "welcome")?;
            WireMessage::Welcome(Welcome {
                version,
                format,
                checksums: flags & F_CHECKSUMS != 0,
            })
        }
        T_FRAME => WireMessage::Frame(decode_frame(&mut r)?),
        T_ACK => {
            let flags = r.flags(1)?;
            r.zero(3, "ack")?;
            let checksum = r.u32()?;
            let sequence = r.u64()?;
            if flags == 0 && checksum != 0 {
                return Err(malformed("an ack without the checksum flag has a checksum"));
            }
            WireMessage::Ack(Ack {
                sequence,
                checksum: (flags == 1).then_some(checksum),
            })
        }
        T_REFUSAL => {
            let code = r.u16()?;
            let len = r.u16()? as usize;
            let reason = std::str::from_utf8(r.take(len)?)
                .map_err(|_| malformed("refusal reason is not UTF-8"))?;
            WireMessage::Refusal(Refusal {
                code,
                reason: reason.to_owned(),
            })
        }
        other => return Err(malformed(format!("unknown message type {other}"))),
    };
    r.end()?;
    Ok(message)
}

fn decode_hello(r: &mut Reader<'_>) -> Result<Hello, SidecarError> {
    let min_version = r.u16()?;
    let max_version = r.u16()?;
    let count = r.u8()? as usize;
    let flags = r.flags(F_CHECKSUMS)?;
    r.zero(2, "hello")?;
    if min_version == 0 || min_version > max_version {
        return Err(malformed(format!(
            "version range {min_version}..={max_version} is empty"
        )));
    }
    if !(1..=4).contains(&count) {
        return Err(malformed(format!("{count} formats (must be 1..=4)")));
    }
    let mut formats = Vec::with_capacity(count);
    for _ in 0..count {
        let format = r.format()?;
        if formats.contains(&format) {
            return Err(malformed(format!("format {format:?} listed twice")));
        }
        formats.push(format);
    }
    Ok(Hello {
        min_version,
        max_version,
        formats,
        checksums: flags & F_CHECKSUMS != 0,
    })
}

fn decode_frame<'a>(r: &mut Reader<'a>) -> Result<WireFrame<'a>, SidecarError> {
    let flags = r.flags(F_KEYFRAME | F_CHECKSUM)?;
    let format = r.format()?;
    r.zero(2, "frame")?;
    let rect_count = r.u32()? as usize;
    let sequence = r.u64()?;
    let base = r.u64()?;
    let timestamp = f64::from_bits(r.u64()?);
    let width = r.u32()?;
    let height = r.u32()?;
    let payload_len = r.u32()? as usize;
    let checksum = r.u32()?;
    if rect_count > MAX_DIRTY_RECTS {
        return Err(SidecarError::TooManyRects { count: rect_count });
    }
    let mut dirty = Vec::with_capacity(rect_count);
    for _ in 0..rect_count {
        dirty.push(DirtyRect::new(r.u32()?, r.u32()?, r.u32()?, r.u32()?));
    }
    let payload = r.take(payload_len)?;
    let keyframe = flags & F_KEYFRAME != 0;
    let metadata = FrameMetadata {
        sequence,
        timestamp,
        width,
        height,
        format,
        keyframe,
        dirty,
    };
    metadata.validate()?;
    if format == PixelFormat::Compressed && !keyframe {
        return Err(malformed("compressed frames must be keyframes"));
    }
    if keyframe {
        if base != 0 {
            return Err(malformed(format!("keyframe {sequence} names base {base}")));
        }
        metadata.validate_data_len(payload.len())?;
    } else {
        if base >= sequence {
            return Err(malformed(format!(
                "delta {sequence} applies on a later frame {base}"
            )));
        }
        let expected: usize = metadata.dirty.iter().map(|d| format.rect_len(d)).sum();
        if payload.len() != expected {
            return Err(malformed(format!(
                "delta payload is {} bytes, its rectangles hold {expected}",
                payload.len()
            )));
        }
    }
    if flags & F_CHECKSUM == 0 && checksum != 0 {
        return Err(malformed(
            "a frame without the checksum flag has a checksum",
        ));
    }
    Ok(WireFrame {
        metadata,
        base,
        checksum: (flags & F_CHECKSUM != 0).then_some(checksum),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn samples() -> Vec<Vec<u8>> {
        let delta = FrameMetadata::delta(
            9,
            2.5,
            4,
            3,
            PixelFormat::Yuv420,
            vec![DirtyRect::new(1, 1, 2, 2), DirtyRect::new(3, 0, 1, 1)],
        );
        let len: usize = delta
            .dirty
            .iter()
            .map(|d| PixelFormat::Yuv420.rect_len(d))
            .sum();
        let payload: Vec<u8> = (0..len as u8).collect();
        vec![
            WireMessage::Hello(Hello {
                min_version: 1,
                max_version: 3,
                formats: vec![PixelFormat::Rgb565, PixelFormat::Rgba],
                checksums: true,
            })
            .encode(),
            WireMessage::Welcome(Welcome {
                version: 1,
                format: PixelFormat::Rgba,
                checksums: false,
            })
            .encode(),
            WireMessage::Frame(WireFrame {
                metadata: delta,
                base: 4,
                checksum: Some(0xdead_beef),
                payload: &payload,
            })
            .encode(),
            WireMessage::Frame(WireFrame {
                metadata: FrameMetadata::keyframe(1, 0.0, 1, 1, PixelFormat::Compressed),
                base: 0,
                checksum: None,
                payload: &[1, 2, 3],
            })
            .encode(),
            WireMessage::Ack(Ack {
                sequence: u64::MAX,
                checksum: Some(7),
            })
            .encode(),
            WireMessage::Refusal(Refusal {
                code: 2,
                reason: "no common format: é".into(),
            })
            .encode(),
        ]
    }

    #[test]
    fn every_message_round_trips_and_every_truncation_or_extension_is_refused() {
        for bytes in samples() {
            let message = decode(&bytes).unwrap();
            assert_eq!(message.encode(), bytes);
            for cut in 0..bytes.len() {
                let err = decode(&bytes[..cut]).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Malformed, "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(decode(&longer).unwrap_err().kind(), ErrorKind::Malformed);
        }
    }

    #[test]
    fn bad_fields_are_typed_errors() {
        let frame = &samples()[2];
        let kind = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = frame.clone();
            edit(&mut b);
            decode(&b).unwrap_err().kind()
        };
        assert_eq!(kind(&|b| b[0] = b'X'), ErrorKind::Malformed); // magic
        assert_eq!(kind(&|b| b[4] = 2), ErrorKind::Malformed); // version
        assert_eq!(kind(&|b| b[6] = 99), ErrorKind::Malformed); // type
        assert_eq!(kind(&|b| b[7] = 1), ErrorKind::Malformed); // reserved
        assert_eq!(kind(&|b| b[8] |= 0x80), ErrorKind::Malformed); // flags
        assert_eq!(kind(&|b| b[9] = 4), ErrorKind::Malformed); // format
        assert_eq!(kind(&|b| b[8] |= 1), ErrorKind::KeyframeWithRects);
        assert_eq!(kind(&|b| b[13] = 0xff), ErrorKind::TooManyRects);
        assert_eq!(kind(&|b| b[40] = 0), ErrorKind::InvalidSize); // width
        assert_eq!(kind(&|b| b[56] = 3), ErrorKind::RectOutOfBounds); // rect x
        assert_eq!(kind(&|b| b[24] = 9), ErrorKind::Malformed); // base >= sequence
        assert_eq!(kind(&|b| b[39] = 0xff), ErrorKind::InvalidTimestamp); // NaN
        assert_eq!(kind(&|b| b[8] &= !2), ErrorKind::Malformed); // checksum w/o flag
        let hello = &samples()[0];
        let mut twice = hello.clone();
        twice[17] = twice[16];
        assert_eq!(decode(&twice).unwrap_err().kind(), ErrorKind::Malformed);
        let mut empty = hello.clone();
        empty[8] = 4; // min_version 4 > max_version 3
        assert_eq!(decode(&empty).unwrap_err().kind(), ErrorKind::Malformed);
    }
}
