//! The crate's one error type.

use crate::frame::{DirtyRect, PixelFormat};

/// What kind of [`SidecarError`] happened, for matching without the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Width or height is zero or above [`MAX_DIMENSION`](crate::MAX_DIMENSION).
    InvalidSize,
    /// A dirty rectangle is empty or reaches outside the frame.
    RectOutOfBounds,
    /// More dirty rectangles than [`MAX_DIRTY_RECTS`](crate::MAX_DIRTY_RECTS).
    TooManyRects,
    /// A keyframe listed dirty rectangles.
    KeyframeWithRects,
    /// A compressed (opaque) frame listed dirty rectangles.
    CompressedWithRects,
    /// The data length does not match the format and size.
    DataLength,
    /// The timestamp is not a finite, non-negative number.
    InvalidTimestamp,
    /// A frame's sequence number does not exceed the previous one sent.
    SequenceNotIncreasing,
    /// A frame is larger than the ring's slots.
    FrameTooLarge,
    /// Ring memory is too small, uninitialised or has an unknown layout.
    InvalidLayout,
    /// The ring already has a producer (or consumer) attached.
    AlreadyAttached,
    /// Blocking waits are not possible in this context (the page's main thread).
    WaitUnsupported,
    /// A transport was used before [`connect`](crate::FrameTransport::connect).
    NotConnected,
    /// A transport endpoint was asked to do the other side's job (e.g. `send` on the
    /// receiving end).
    WrongSide,
    /// A display cannot draw this pixel format (compressed frames need a decoder).
    UnsupportedFormat,
    /// The browser refused a display operation (e.g. no 2D context for a canvas).
    Display,
    /// A [`RemoteTransport`](crate::RemoteTransport) message is not well formed
    /// (truncated, trailing bytes, bad magic, unknown type, flags or lengths).
    Malformed,
    /// The peers share no wire version or pixel format, or the peer refused.
    Negotiation,
    /// A well-formed message arrived when the protocol does not allow it.
    Protocol,
    /// A delta frame does not apply to the receiver's screen (wrong base frame or
    /// geometry).
    Desync,
    /// The receiver's screen does not match the sender's checksum.
    ChecksumMismatch,
    /// The connection failed or closed.
    Connection,
}

/// An error from this crate's API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    /// Width or height is zero or too large.
    #[error("invalid frame size {width}x{height} (each side must be 1..={max})", max = crate::MAX_DIMENSION)]
    InvalidSize {
        /// The width given.
        width: u32,
        /// The height given.
        height: u32,
    },
    /// A dirty rectangle is empty or reaches outside the frame.
    #[error("dirty rectangle {rect:?} is empty or outside the {width}x{height} frame")]
    RectOutOfBounds {
        /// The rectangle.
        rect: DirtyRect,
        /// The frame's width.
        width: u32,
        /// The frame's height.
        height: u32,
    },
    /// Too many dirty rectangles in one frame.
    #[error("{count} dirty rectangles in one frame (at most {max})", max = crate::MAX_DIRTY_RECTS)]
    TooManyRects {
        /// How many were given.
        count: usize,
    },
    /// A keyframe replaces the whole screen and lists no dirty rectangles.
    #[error("a keyframe replaces the whole screen and lists no dirty rectangles, got {count}")]
    KeyframeWithRects {
        /// How many were given.
        count: usize,
    },
    /// Compressed frames are opaque and list no dirty rectangles.
    #[error("compressed frames are opaque and list no dirty rectangles, got {count}")]
    CompressedWithRects {
        /// How many were given.
        count: usize,
    },
    /// The data length does not match the format and size.
    #[error("frame data is {actual} bytes but {format:?} {width}x{height} needs {expected}")]
    DataLength {
        /// The pixel format.
        format: PixelFormat,
        /// The frame's width.
        width: u32,
        /// The frame's height.
        height: u32,
        /// The length the format needs (for compressed frames: at least 1).
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The timestamp is NaN, infinite or negative.
    #[error("invalid frame timestamp {timestamp} (must be finite and >= 0)")]
    InvalidTimestamp {
        /// The timestamp given.
        timestamp: f64,
    },
    /// A frame's sequence number does not exceed the previous one.
    #[error("frame sequence {sequence} does not follow the previous frame's {previous}")]
    SequenceNotIncreasing {
        /// The new frame's sequence number.
        sequence: u64,
        /// The previous frame's sequence number.
        previous: u64,
    },
    /// A frame does not fit the ring's slots.
    #[error("a frame of {bytes} bytes does not fit the ring's {capacity}-byte slots")]
    FrameTooLarge {
        /// The frame's data length.
        bytes: usize,
        /// The ring's slot capacity.
        capacity: usize,
    },
    /// Ring memory is too small, uninitialised or has an unknown layout.
    #[error("invalid frame ring layout: {reason}")]
    InvalidLayout {
        /// What is wrong.
        reason: String,
    },
    /// The ring already has this side attached.
    #[error("the frame ring already has a {role} attached")]
    AlreadyAttached {
        /// `"producer"` or `"consumer"`.
        role: &'static str,
    },
    /// Blocking waits are not possible here.
    #[error("cannot wait for frames here: {reason}")]
    WaitUnsupported {
        /// Why (e.g. `Atomics.wait` is not allowed on the page's main thread).
        reason: String,
    },
    /// The transport is not connected.
    #[error("the frame transport is not connected (call connect first)")]
    NotConnected,
    /// A transport endpoint was asked to do the other side's job.
    #[error("cannot {operation} on the {side} end of a frame transport")]
    WrongSide {
        /// What was asked (`"send"` or `"receive"`).
        operation: &'static str,
        /// The endpoint's side (`"sending"` or `"receiving"`).
        side: &'static str,
    },
    /// A display cannot draw this pixel format.
    #[error("cannot draw {format:?} frames (compressed frames need a decoder)")]
    UnsupportedFormat {
        /// The format.
        format: PixelFormat,
    },
    /// The browser refused a display operation.
    #[error("display: {reason}")]
    Display {
        /// What failed, with the browser's message.
        reason: String,
    },
    /// A wire message is not well formed.
    #[error("malformed frame-stream message: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The peers share no wire version or pixel format, or the peer refused.
    #[error("frame-stream negotiation failed: {reason}")]
    Negotiation {
        /// Why.
        reason: String,
    },
    /// A well-formed message arrived when the protocol does not allow it.
    #[error("frame-stream protocol violation: {reason}")]
    Protocol {
        /// What arrived when.
        reason: String,
    },
    /// A delta frame does not apply to the receiver's screen.
    #[error("frame {sequence} is a delta on frame {base}, but the screen holds {current:?}")]
    Desync {
        /// The delta's sequence number.
        sequence: u64,
        /// The frame it applies on top of.
        base: u64,
        /// The frame the receiver holds (`None`: none on this connection yet).
        current: Option<u64>,
    },
    /// The receiver's screen does not match the sender's checksum.
    #[error("screen checksum after frame {sequence} is {actual:#010x}, the sender's is {expected:#010x}")]
    ChecksumMismatch {
        /// The frame's sequence number.
        sequence: u64,
        /// The sender's CRC-32 of its screen.
        expected: u32,
        /// The receiver's CRC-32 of its screen.
        actual: u32,
    },
    /// The connection failed or closed.
    #[error("frame-stream connection: {reason}")]
    Connection {
        /// What happened, with the socket's message.
        reason: String,
    },
}

impl SidecarError {
    /// The kind of error.
    ///
    /// ```
    /// use qemuweb_sidecar::{ErrorKind, FrameMetadata, PixelFormat};
    ///
    /// let meta = FrameMetadata::keyframe(1, 0.0, 0, 480, PixelFormat::Rgba);
    /// assert_eq!(meta.validate().unwrap_err().kind(), ErrorKind::InvalidSize);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            SidecarError::InvalidSize { .. } => ErrorKind::InvalidSize,
            SidecarError::RectOutOfBounds { .. } => ErrorKind::RectOutOfBounds,
            SidecarError::TooManyRects { .. } => ErrorKind::TooManyRects,
            SidecarError::KeyframeWithRects { .. } => ErrorKind::KeyframeWithRects,
            SidecarError::CompressedWithRects { .. } => ErrorKind::CompressedWithRects,
            SidecarError::DataLength { .. } => ErrorKind::DataLength,
            SidecarError::InvalidTimestamp { .. } => ErrorKind::InvalidTimestamp,
            SidecarError::SequenceNotIncreasing { .. } => ErrorKind::SequenceNotIncreasing,
            SidecarError::FrameTooLarge { .. } => ErrorKind::FrameTooLarge,
            SidecarError::InvalidLayout { .. } => ErrorKind::InvalidLayout,
            SidecarError::AlreadyAttached { .. } => ErrorKind::AlreadyAttached,
            SidecarError::WaitUnsupported { .. } => ErrorKind::WaitUnsupported,
            SidecarError::NotConnected => ErrorKind::NotConnected,
            SidecarError::WrongSide { .. } => ErrorKind::WrongSide,
            SidecarError::UnsupportedFormat { .. } => ErrorKind::UnsupportedFormat,
            SidecarError::Display { .. } => ErrorKind::Display,
            SidecarError::Malformed { .. } => ErrorKind::Malformed,
            SidecarError::Negotiation { .. } => ErrorKind::Negotiation,
            SidecarError::Protocol { .. } => ErrorKind::Protocol,
            SidecarError::Desync { .. } => ErrorKind::Desync,
            SidecarError::ChecksumMismatch { .. } => ErrorKind::ChecksumMismatch,
            SidecarError::Connection { .. } => ErrorKind::Connection,
        }
    }
}
