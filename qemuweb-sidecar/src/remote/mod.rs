//! The remote transport: frames over a WebSocket, for a display on another machine.
//!
//! [`RemoteTransport`] is a [`FrameTransport`](crate::FrameTransport) whose two ends
//! talk over one WebSocket connection in the [`wire`](crate::wire) format. Either end
//! may dial: the receiving end opens the stream with a [`Hello`] (wire versions, the
//! pixel formats it shows, whether it wants checksums) and the sending end answers with
//! a [`Welcome`] naming the stream's version and format, or a refusal.
//!
//! # What travels
//!
//! The first frame of every connection is a keyframe (the whole screen), so a
//! receiver that reconnects is whole again at once. After that a frame carries only its
//! dirty rectangles' bytes and names the frame it applies on (`base`), so the receiver
//! detects any gap ([`ErrorKind::Desync`](crate::ErrorKind::Desync)); a resize is a
//! keyframe. If the receiver asked for them, each frame carries the CRC-32 of the
//! sender's screen and the receiver checks its own against it. The receiver answers
//! every frame with an [`Ack`] (its sequence and the receiver's checksum).
//!
//! If the receiver takes only RGBA and the sender's frames are RGB565 or YUV420, the
//! sender converts them (only the dirty rectangles).
//!
//! # Back-pressure: the producer never queues more than one frame
//!
//! `send` never waits for the network. Natively a writer thread owns the socket and an
//! outbox holds at most one frame waiting for it; in the browser a frame waits while the
//! socket's `bufferedAmount` is above [`RemoteOptions::max_buffered`]. A frame sent
//! while another is still waiting replaces it (the newest wins) and the waiting frame's
//! dirty rectangles are merged into the new one's, so nothing is lost but stale
//! intermediate screens ([`RemoteStats::dropped`] counts them).
//!
//! The receiving end keeps the screen ([`FrameTransport::screen`](crate::FrameTransport::screen)) across reconnects;
//! after an error the connection is dropped and `connect` makes a new one.

use crate::convert::rect_to_rgba;
use crate::frame::{merge_damage, DirtyRect, Frame, FrameMetadata, PixelFormat, MAX_DIRTY_RECTS};
use crate::wire::{encode_frame_head, Ack, Hello, Refusal, Welcome, WireFrame, WIRE_VERSION};
use crate::SidecarError;

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(target_arch = "wasm32")]
mod web;

#[cfg(not(target_arch = "wasm32"))]
pub use native::RemoteTransport;
#[cfg(target_arch = "wasm32")]
pub use web::{RemoteDisplay, RemoteTransport};

/// Settings of a [`RemoteTransport`] end.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteOptions {
    /// Receiving end: the pixel formats it shows, most preferred first (1 to 4).
    pub accept: Vec<PixelFormat>,
    /// Receiving end: ask for the sender's screen checksum in every frame and check it
    /// (costs a CRC-32 of the screen per frame on both ends).
    pub checksums: bool,
    /// Sending end: the pixel format of the frames it will send.
    pub source_format: PixelFormat,
    /// Sending end in the browser: the socket's `bufferedAmount`, in bytes, above which
    /// frames wait (and newer ones replace them).
    pub max_buffered: u32,
}

impl Default for RemoteOptions {
    /// Accept RGBA, RGB565 and YUV420 (what `CanvasPresenter` draws), no checksums,
    /// send RGBA, and let up to 4 MiB wait in the browser's socket.
    fn default() -> RemoteOptions {
        RemoteOptions {
            accept: vec![PixelFormat::Rgba, PixelFormat::Rgb565, PixelFormat::Yuv420],
            checksums: false,
            source_format: PixelFormat::Rgba,
            max_buffered: 4 << 20,
        }
    }
}

impl RemoteOptions {
    /// The receiving end's opening message.
    pub(crate) fn hello(&self) -> Hello {
        Hello {
            min_version: WIRE_VERSION,
            max_version: WIRE_VERSION,
            formats: self.accept.clone(),
            checksums: self.checksums,
        }
    }
}

/// Counters of a [`RemoteTransport`] end (across its connections).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// Connections made (handshakes completed).
    pub connections: u64,
    /// Frames written to the socket (sending end).
    pub sent: u64,
    /// Frames replaced by a newer one before they were written (sending end).
    pub dropped: u64,
    /// Bytes of frame messages written (sending end).
    pub bytes_sent: u64,
    /// Frames applied (receiving end).
    pub received: u64,
    /// The sequence number of the newest acknowledged frame (sending end) or the newest
    /// frame applied (receiving end).
    pub last_acked: Option<u64>,
    /// The receiver's screen checksum in that acknowledgement, if it sent one.
    pub last_ack_checksum: Option<u32>,
}

impl RemoteStats {
    pub(crate) fn record_ack(&mut self, ack: &Ack) {
        self.last_acked = Some(ack.sequence);
        self.last_ack_checksum = ack.checksum;
    }
}

/// The sending end's answer to `hello` for frames of `source` format: the stream's
/// version and format, or why not.
///
/// ```
/// use qemuweb_sidecar::{remote::negotiate, wire::Hello, PixelFormat};
/// let hello = Hello { min_version: 1, max_version: 1, formats: vec![PixelFormat::Rgba],
///     checksums: false };
/// // RGB565 frames are converted for a receiver that takes only RGBA.
/// assert_eq!(negotiate(&hello, PixelFormat::Rgb565).unwrap().format, PixelFormat::Rgba);
/// assert!(negotiate(&hello, PixelFormat::Compressed).is_err());
/// ```
pub fn negotiate(hello: &Hello, source: PixelFormat) -> Result<Welcome, Refusal> {
    if hello.min_version > WIRE_VERSION || hello.max_version < WIRE_VERSION {
        return Err(Refusal {
            code: 1,
            reason: format!(
                "the receiver speaks wire versions {}..={}, the sender {WIRE_VERSION}",
                hello.min_version, hello.max_version
            ),
        });
    }
    let convertible = matches!(source, PixelFormat::Rgb565 | PixelFormat::Yuv420);
    let format = if hello.formats.contains(&source) {
        source
    } else if convertible && hello.formats.contains(&PixelFormat::Rgba) {
        PixelFormat::Rgba
    } else {
        return Err(Refusal {
            code: 2,
            reason: format!(
                "the sender has {source:?} frames, the receiver takes {:?}",
                hello.formats
            ),
        });
    };
    Ok(Welcome {
        version: WIRE_VERSION,
        format,
        checksums: hello.checksums,
    })
}

/// Checks that the sender's `welcome` gives what the receiving end asked for.
pub(crate) fn check_welcome(
    options: &RemoteOptions,
    welcome: &Welcome,
) -> Result<(), SidecarError> {
    if !options.accept.contains(&welcome.format) || welcome.checksums != options.checksums {
        return Err(SidecarError::Negotiation {
            reason: format!("the sender chose {welcome:?}, not what was asked"),
        });
    }
    Ok(())
}

/// Checks a frame the sending end is given: valid, sequence increasing, and of a format
/// the stream can carry.
pub(crate) fn check_outgoing(
    frame: &Frame,
    last: Option<u64>,
    wire_format: PixelFormat,
) -> Result<(), SidecarError> {
    frame.validate()?;
    if let Some(previous) = last.filter(|&p| frame.metadata.sequence <= p) {
        return Err(SidecarError::SequenceNotIncreasing {
            sequence: frame.metadata.sequence,
            previous,
        });
    }
    let format = frame.metadata.format;
    let convertible = wire_format == PixelFormat::Rgba
        && matches!(format, PixelFormat::Rgb565 | PixelFormat::Yuv420);
    if format != wire_format && !convertible {
        return Err(SidecarError::UnsupportedFormat { format });
    }
    Ok(())
}

/// At most one frame waiting for the socket: a newer frame replaces it, merging the
/// waiting frame's damage, so the producer never queues.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pending: Option<Frame>,
    /// Frames replaced before they were taken.
    pub(crate) dropped: u64,
}

impl Outbox {
    /// Puts `frame` in the outbox (replacing a waiting one).
    pub(crate) fn offer(&mut self, frame: &Frame) {
        let Some(waiting) = &mut self.pending else {
            self.pending = Some(frame.clone());
            return;
        };
        self.dropped += 1;
        let (old, new) = (&mut waiting.metadata, &frame.metadata);
        let same = (old.width, old.height, old.format) == (new.width, new.height, new.format);
        if !same || old.keyframe || new.keyframe {
            old.keyframe = true;
            old.dirty.clear();
        } else {
            merge_damage(&mut old.dirty, &new.dirty, MAX_DIRTY_RECTS);
        }
        old.sequence = new.sequence;
        old.timestamp = new.timestamp;
        (old.width, old.height, old.format) = (new.width, new.height, new.format);
        waiting.data.clear();
        waiting.data.extend_from_slice(&frame.data);
    }

    /// The waiting frame, if any.
    pub(crate) fn take(&mut self) -> Option<Frame> {
        self.pending.take()
    }

    /// Whether no frame waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_none()
    }
}

/// The sending end of one connection: turns frames into wire messages.
#[derive(Debug)]
pub(crate) struct StreamEncoder {
    welcome: Welcome,
    /// (sequence, width, height, source format) of the last frame encoded.
    last: Option<(u64, u32, u32, PixelFormat)>,
    /// The screen converted to the wire format, when the source differs.
    converted: Vec<u8>,
    scratch: Vec<u8>,
}

impl StreamEncoder {
    pub(crate) fn new(welcome: Welcome) -> StreamEncoder {
        StreamEncoder {
            welcome,
            last: None,
            converted: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The stream's parameters.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn welcome(&self) -> Welcome {
        self.welcome
    }

    /// Makes the next frame a keyframe (after a frame was lost).
    pub(crate) fn restart(&mut self) {
        self.last = None;
    }

    /// Appends the message for `frame` to `out`. `frame.metadata.dirty` must cover
    /// everything that changed since the last frame encoded (the [`Outbox`] merges the
    /// damage of frames it replaced).
    pub(crate) fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), SidecarError> {
        let last_sequence = self.last.map(|l| l.0);
        check_outgoing(frame, last_sequence, self.welcome.format)?;
        let meta = &frame.metadata;
        let (w, h) = (meta.width, meta.height);
        let keyframe = meta.keyframe
            || meta.format == PixelFormat::Compressed
            || self.last.map(|l| (l.1, l.2, l.3)) != Some((w, h, meta.format));
        let target = self.welcome.format;
        if meta.format != target {
            let rects = if keyframe {
                vec![DirtyRect::new(0, 0, w, h)]
            } else {
                meta.dirty.clone()
            };
            if keyframe {
                self.converted.resize(w as usize * h as usize * 4, 0);
            }
            for rect in &rects {
                rect_to_rgba(meta.format, w, h, &frame.data, rect, &mut self.scratch)?;
                let row = rect.width as usize * 4;
                for (i, src) in self.scratch.chunks_exact(row).enumerate() {
                    let at = ((rect.y as usize + i) * w as usize + rect.x as usize) * 4;
                    self.converted[at..at + row].copy_from_slice(src);
                }
            }
        }
        let screen: &[u8] = if meta.format == target {
            &frame.data
        } else {
            &self.converted
        };
        let wire_meta = FrameMetadata {
            format: target,
            keyframe,
            dirty: if keyframe {
                Vec::new()
            } else {
                meta.dirty.clone()
            },
            ..meta.clone()
        };
        let payload_len = if keyframe {
            screen.len()
        } else {
            wire_meta.dirty.iter().map(|d| target.rect_len(d)).sum()
        };
        let checksum = self.welcome.checksums.then(|| crc32fast::hash(screen));
        let base = if keyframe {
            0
        } else {
            last_sequence.unwrap_or(0)
        };
        out.reserve(payload_len + 64 + 16 * wire_meta.dirty.len());
        encode_frame_head(out, &wire_meta, base, checksum, payload_len);
        if keyframe {
            out.extend_from_slice(screen);
        } else {
            for rect in &wire_meta.dirty {
                target.rect_spans(w, h, rect, |off, len| {
                    out.extend_from_slice(&screen[off..off + len])
                });
            }
        }
        self.last = Some((meta.sequence, w, h, meta.format));
        Ok(())
    }
}

/// What the receiving end holds: the frame in its screen.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Current {
    sequence: u64,
    timestamp: f64,
    width: u32,
    height: u32,
    format: PixelFormat,
}

/// The receiving end: applies wire frames to its screen and collects the change since
/// the change was last taken.
#[derive(Debug, Default, Clone)]
pub(crate) struct StreamDecoder {
    screen: Vec<u8>,
    current: Option<Current>,
    /// Whether `current` arrived on this connection (deltas apply only then).
    linked: bool,
    format: Option<PixelFormat>,
    change: Option<FrameMetadata>,
}

impl StreamDecoder {
    /// Starts a connection whose stream `welcome` describes: it must open with a keyframe.
    pub(crate) fn start(&mut self, welcome: &Welcome) {
        self.linked = false;
        self.format = Some(welcome.format);
    }

    /// Applies `frame`; returns the acknowledgement to send.
    pub(crate) fn apply(&mut self, frame: &WireFrame<'_>) -> Result<Ack, SidecarError> {
        let meta = &frame.metadata;
        let format = self.format.ok_or_else(|| SidecarError::Protocol {
            reason: format!("frame {} before the sender's welcome", meta.sequence),
        })?;
        if meta.format != format {
            return Err(SidecarError::Protocol {
                reason: format!(
                    "frame {} is {:?}, the stream is {format:?}",
                    meta.sequence, meta.format
                ),
            });
        }
        let linked = self.current.filter(|_| self.linked);
        if let Some(previous) = linked.map(|c| c.sequence) {
            if meta.sequence <= previous {
                return Err(SidecarError::SequenceNotIncreasing {
                    sequence: meta.sequence,
                    previous,
                });
            }
        }
        if meta.keyframe {
            self.screen.clear();
            self.screen.extend_from_slice(frame.payload);
        } else {
            let applies = linked.is_some_and(|c| {
                c.sequence == frame.base && (c.width, c.height) == (meta.width, meta.height)
            });
            if !applies {
                self.linked = false;
                return Err(SidecarError::Desync {
                    sequence: meta.sequence,
                    base: frame.base,
                    current: linked.map(|c| c.sequence),
                });
            }
            let (screen, mut at) = (&mut self.screen, 0);
            for rect in &meta.dirty {
                format.rect_spans(meta.width, meta.height, rect, |off, len| {
                    screen[off..off + len].copy_from_slice(&frame.payload[at..at + len]);
                    at += len;
                });
            }
        }
        self.current = Some(Current {
            sequence: meta.sequence,
            timestamp: meta.timestamp,
            width: meta.width,
            height: meta.height,
            format,
        });
        let checksum = frame.checksum.map(|_| crc32fast::hash(&self.screen));
        if let (Some(expected), Some(actual)) = (frame.checksum, checksum) {
            if expected != actual {
                self.linked = false;
                return Err(SidecarError::ChecksumMismatch {
                    sequence: meta.sequence,
                    expected,
                    actual,
                });
            }
        }
        self.linked = true;
        match &mut self.change {
            Some(change)
                if !change.keyframe
                    && !meta.keyframe
                    && (change.width, change.height) == (meta.width, meta.height) =>
            {
                merge_damage(&mut change.dirty, &meta.dirty, MAX_DIRTY_RECTS);
                change.sequence = meta.sequence;
                change.timestamp = meta.timestamp;
            }
            Some(change) => {
                *change = FrameMetadata::keyframe(
                    meta.sequence,
                    meta.timestamp,
                    meta.width,
                    meta.height,
                    format,
                )
            }
            None => self.change = Some(meta.clone()),
        }
        Ok(Ack {
            sequence: meta.sequence,
            checksum,
        })
    }

    /// The change since it was last taken (`None`: no frame since).
    pub(crate) fn take_change(&mut self) -> Option<FrameMetadata> {
        self.change.take()
    }

    /// Whether a change waits to be taken.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn has_change(&self) -> bool {
        self.change.is_some()
    }

    pub(crate) fn screen(&self) -> &[u8] {
        &self.screen
    }

    /// The whole screen as a frame (a copy), once one arrived.
    pub(crate) fn frame(&self) -> Option<Frame> {
        let c = self.current?;
        Some(Frame {
            metadata: FrameMetadata::keyframe(c.sequence, c.timestamp, c.width, c.height, c.format),
            data: self.screen.clone(),
        })
    }
}

/// The [`Refusal`] as this end's error.
pub(crate) fn refused(refusal: &Refusal) -> SidecarError {
    SidecarError::Negotiation {
        reason: format!(
            "the peer refused (code {}): {}",
            refusal.code, refusal.reason
        ),
    }
}

#[cfg(test)]
mod tests;
