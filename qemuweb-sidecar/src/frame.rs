//! Frames of the guest's screen: metadata, pixel formats, dirty rectangles and validation.

use serde::{Deserialize, Serialize};
use tsify::Tsify;

use crate::SidecarError;

/// The largest width or height a frame may have, in pixels.
pub const MAX_DIMENSION: u32 = 16384;

/// The most dirty rectangles one frame may list.
pub const MAX_DIRTY_RECTS: usize = 1024;

/// How a frame's pixels are laid out in its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
pub enum PixelFormat {
    /// 4 bytes a pixel: red, green, blue, alpha; rows top to bottom, no padding.
    #[serde(rename = "rgba")]
    Rgba,
    /// 2 bytes a pixel, little-endian `rrrrrggg gggbbbbb`; rows top to bottom, no padding.
    #[serde(rename = "rgb565")]
    Rgb565,
    /// Planar I420: a full-size Y plane, then U and V planes of
    /// `ceil(width/2) x ceil(height/2)` bytes each.
    #[serde(rename = "yuv420")]
    Yuv420,
    /// Opaque encoded bytes (e.g. PNG or a video codec's frame), always carried whole.
    #[serde(rename = "compressed")]
    Compressed,
}

impl PixelFormat {
    /// The bytes a `width x height` frame of this format needs, or `None` for
    /// [`PixelFormat::Compressed`], whose length is whatever the encoder produced.
    ///
    /// ```
    /// use qemuweb_sidecar::PixelFormat;
    /// assert_eq!(PixelFormat::Rgba.data_len(1024, 768), Some(1024 * 768 * 4));
    /// assert_eq!(PixelFormat::Yuv420.data_len(3, 3), Some(9 + 2 * 4));
    /// assert_eq!(PixelFormat::Compressed.data_len(3, 3), None);
    /// ```
    pub fn data_len(self, width: u32, height: u32) -> Option<usize> {
        let (w, h) = (width as usize, height as usize);
        match self {
            PixelFormat::Rgba => Some(w * h * 4),
            PixelFormat::Rgb565 => Some(w * h * 2),
            PixelFormat::Yuv420 => Some(w * h + 2 * w.div_ceil(2) * h.div_ceil(2)),
            PixelFormat::Compressed => None,
        }
    }

    /// The format's number in ring headers.
    pub(crate) fn code(self) -> u32 {
        match self {
            PixelFormat::Rgba => 0,
            PixelFormat::Rgb565 => 1,
            PixelFormat::Yuv420 => 2,
            PixelFormat::Compressed => 3,
        }
    }

    /// The format with this number in ring headers.
    pub(crate) fn from_code(code: u32) -> Option<PixelFormat> {
        Some(match code {
            0 => PixelFormat::Rgba,
            1 => PixelFormat::Rgb565,
            2 => PixelFormat::Yuv420,
            3 => PixelFormat::Compressed,
            _ => return None,
        })
    }

    /// The bytes [`rect_spans`](Self::rect_spans) yields for `rect` (which must fit
    /// the frame), computed without walking the rows. 0 for compressed frames.
    pub(crate) fn rect_len(self, rect: &DirtyRect) -> usize {
        let (x, y) = (rect.x as usize, rect.y as usize);
        let (rw, rh) = (rect.width as usize, rect.height as usize);
        match self {
            PixelFormat::Rgba => rw * rh * 4,
            PixelFormat::Rgb565 => rw * rh * 2,
            PixelFormat::Yuv420 => {
                let cols = (x + rw).div_ceil(2) - x / 2;
                let rows = (y + rh).div_ceil(2) - y / 2;
                rw * rh + 2 * cols * rows
            }
            PixelFormat::Compressed => 0,
        }
    }

    /// Calls `span(offset, len)` for every byte run of `data` that holds the pixels of
    /// `rect` in a `width x height` frame (rows of RGBA/RGB565; for YUV420 the Y rows
    /// and the U and V rows covering it). Nothing for [`PixelFormat::Compressed`].
    pub(crate) fn rect_spans(
        self,
        width: u32,
        height: u32,
        rect: &DirtyRect,
        mut span: impl FnMut(usize, usize),
    ) {
        let (w, h) = (width as usize, height as usize);
        let (x, y) = (rect.x as usize, rect.y as usize);
        let (rw, rh) = (rect.width as usize, rect.height as usize);
        let bpp = match self {
            PixelFormat::Rgba => 4,
            PixelFormat::Rgb565 => 2,
            PixelFormat::Yuv420 => 1,
            PixelFormat::Compressed => return,
        };
        for row in y..y + rh {
            span((row * w + x) * bpp, rw * bpp);
        }
        if self == PixelFormat::Yuv420 {
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let (cx0, cx1) = (x / 2, (x + rw).div_ceil(2));
            let (cy0, cy1) = (y / 2, (y + rh).div_ceil(2));
            for plane in [w * h, w * h + cw * ch] {
                for row in cy0..cy1 {
                    span(plane + row * cw + cx0, cx1 - cx0);
                }
            }
        }
    }
}

/// A rectangle of the screen that changed since the previous frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
pub struct DirtyRect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width (at least 1).
    pub width: u32,
    /// Height (at least 1).
    pub height: u32,
}

/// Adds `more` to the damage list `into`; past `cap` rectangles the list collapses to
/// its bounding box.
pub(crate) fn merge_damage(into: &mut Vec<DirtyRect>, more: &[DirtyRect], cap: usize) {
    into.extend_from_slice(more);
    if into.len() > cap {
        let bound = into.iter().skip(1).fold(into[0], |a, r| a.union(r));
        into.clear();
        into.push(bound);
    }
}

impl DirtyRect {
    /// A rectangle at `(x, y)` of `width x height` pixels.
    ///
    /// ```
    /// let r = qemuweb_sidecar::DirtyRect::new(8, 16, 640, 16);
    /// assert_eq!((r.x, r.y, r.width, r.height), (8, 16, 640, 16));
    /// ```
    pub fn new(x: u32, y: u32, width: u32, height: u32) -> DirtyRect {
        DirtyRect {
            x,
            y,
            width,
            height,
        }
    }

    /// Whether the rectangle is non-empty and lies inside a `width x height` frame.
    ///
    /// ```
    /// use qemuweb_sidecar::DirtyRect;
    /// assert!(DirtyRect::new(0, 0, 640, 480).fits(640, 480));
    /// assert!(!DirtyRect::new(1, 0, 640, 480).fits(640, 480));
    /// assert!(!DirtyRect::new(0, 0, 0, 1).fits(640, 480));
    /// ```
    pub fn fits(&self, width: u32, height: u32) -> bool {
        self.width > 0
            && self.height > 0
            && self.x.checked_add(self.width).is_some_and(|r| r <= width)
            && self.y.checked_add(self.height).is_some_and(|b| b <= height)
    }

    /// The smallest rectangle covering both.
    ///
    /// ```
    /// use qemuweb_sidecar::DirtyRect;
    /// let u = DirtyRect::new(0, 0, 2, 2).union(&DirtyRect::new(5, 1, 1, 4));
    /// assert_eq!(u, DirtyRect::new(0, 0, 6, 5));
    /// ```
    pub fn union(&self, other: &DirtyRect) -> DirtyRect {
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        let right = (self.x + self.width).max(other.x + other.width);
        let bottom = (self.y + self.height).max(other.y + other.height);
        DirtyRect::new(x, y, right - x, bottom - y)
    }
}

/// What a frame is: its place in the stream, its geometry and what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct FrameMetadata {
    /// Position in the stream; strictly increasing per producer (gaps allowed).
    pub sequence: u64,
    /// When the frame was rendered, in milliseconds (e.g. `performance.now()`).
    pub timestamp: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel layout of the data.
    pub format: PixelFormat,
    /// Whether the whole screen is new (then `dirty` is empty).
    pub keyframe: bool,
    /// For non-keyframes: the rectangles that changed since the previous frame; empty
    /// means the screen is unchanged. Always empty for keyframes and compressed frames.
    #[serde(default)]
    pub dirty: Vec<DirtyRect>,
}

impl FrameMetadata {
    /// Metadata of a keyframe (the whole screen).
    ///
    /// ```
    /// use qemuweb_sidecar::{FrameMetadata, PixelFormat};
    /// let meta = FrameMetadata::keyframe(1, 16.7, 720, 400, PixelFormat::Rgba);
    /// assert!(meta.keyframe && meta.dirty.is_empty());
    /// meta.validate()?;
    /// # Ok::<(), qemuweb_sidecar::SidecarError>(())
    /// ```
    pub fn keyframe(
        sequence: u64,
        timestamp: f64,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> FrameMetadata {
        FrameMetadata {
            sequence,
            timestamp,
            width,
            height,
            format,
            keyframe: true,
            dirty: Vec::new(),
        }
    }

    /// Metadata of a frame where only `dirty` changed since the previous one.
    ///
    /// ```
    /// use qemuweb_sidecar::{DirtyRect, FrameMetadata, PixelFormat};
    /// let meta = FrameMetadata::delta(2, 33.4, 720, 400, PixelFormat::Rgba,
    ///     vec![DirtyRect::new(0, 384, 720, 16)]);
    /// assert!(!meta.keyframe);
    /// meta.validate()?;
    /// # Ok::<(), qemuweb_sidecar::SidecarError>(())
    /// ```
    pub fn delta(
        sequence: u64,
        timestamp: f64,
        width: u32,
        height: u32,
        format: PixelFormat,
        dirty: Vec<DirtyRect>,
    ) -> FrameMetadata {
        FrameMetadata {
            sequence,
            timestamp,
            width,
            height,
            format,
            keyframe: false,
            dirty,
        }
    }

    /// Checks the size, timestamp and dirty rectangles (not the data; see
    /// [`Frame::validate`]).
    ///
    /// ```
    /// use qemuweb_sidecar::{DirtyRect, ErrorKind, FrameMetadata, PixelFormat};
    /// let meta = FrameMetadata::delta(2, 0.0, 640, 480, PixelFormat::Rgba,
    ///     vec![DirtyRect::new(600, 0, 41, 1)]);
    /// assert_eq!(meta.validate().unwrap_err().kind(), ErrorKind::RectOutOfBounds);
    /// ```
    pub fn validate(&self) -> Result<(), SidecarError> {
        let (width, height) = (self.width, self.height);
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(SidecarError::InvalidSize { width, height });
        }
        if !self.timestamp.is_finite() || self.timestamp < 0.0 {
            return Err(SidecarError::InvalidTimestamp {
                timestamp: self.timestamp,
            });
        }
        let count = self.dirty.len();
        if count > 0 && self.keyframe {
            return Err(SidecarError::KeyframeWithRects { count });
        }
        if count > 0 && self.format == PixelFormat::Compressed {
            return Err(SidecarError::CompressedWithRects { count });
        }
        if count > MAX_DIRTY_RECTS {
            return Err(SidecarError::TooManyRects { count });
        }
        if let Some(rect) = self.dirty.iter().find(|r| !r.fits(width, height)) {
            return Err(SidecarError::RectOutOfBounds {
                rect: *rect,
                width,
                height,
            });
        }
        Ok(())
    }

    /// Checks that `len` bytes of data suit this metadata: exactly
    /// [`PixelFormat::data_len`], or at least one byte for compressed frames.
    ///
    /// ```
    /// use qemuweb_sidecar::{ErrorKind, FrameMetadata, PixelFormat};
    /// let meta = FrameMetadata::keyframe(1, 0.0, 4, 2, PixelFormat::Rgb565);
    /// assert!(meta.validate_data_len(16).is_ok());
    /// assert_eq!(meta.validate_data_len(15).unwrap_err().kind(), ErrorKind::DataLength);
    /// ```
    pub fn validate_data_len(&self, len: usize) -> Result<(), SidecarError> {
        let expected = self.format.data_len(self.width, self.height);
        let ok = match expected {
            Some(expected) => len == expected,
            None => len > 0,
        };
        if ok {
            Ok(())
        } else {
            Err(SidecarError::DataLength {
                format: self.format,
                width: self.width,
                height: self.height,
                expected: expected.unwrap_or(1),
                actual: len,
            })
        }
    }
}

/// One frame of the guest's screen.
///
/// `data` always holds the whole screen (for [`PixelFormat::Compressed`]: the whole
/// encoded frame); `metadata.dirty` says which parts changed, so transports copy only
/// those.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct Frame {
    /// What the frame is.
    pub metadata: FrameMetadata,
    /// The pixels, laid out as `metadata.format` says.
    #[tsify(type = "Uint8Array | number[]")]
    pub data: Vec<u8>,
}

impl Frame {
    /// Checks the metadata and that the data length suits it.
    ///
    /// ```
    /// use qemuweb_sidecar::{Frame, FrameMetadata, PixelFormat};
    /// let frame = Frame {
    ///     metadata: FrameMetadata::keyframe(1, 0.0, 2, 2, PixelFormat::Rgba),
    ///     data: vec![0; 16],
    /// };
    /// frame.validate()?;
    /// # Ok::<(), qemuweb_sidecar::SidecarError>(())
    /// ```
    pub fn validate(&self) -> Result<(), SidecarError> {
        self.metadata.validate()?;
        self.metadata.validate_data_len(self.data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn rgba(w: u32, h: u32, dirty: Vec<DirtyRect>) -> Frame {
        Frame {
            metadata: FrameMetadata::delta(1, 0.0, w, h, PixelFormat::Rgba, dirty),
            data: vec![0; (w * h * 4) as usize],
        }
    }

    #[test]
    fn malformed_metadata_is_rejected() {
        let kind = |f: Frame| f.validate().unwrap_err().kind();
        assert_eq!(kind(rgba(0, 4, vec![])), ErrorKind::InvalidSize);
        let mut f = rgba(4, 4, vec![]);
        f.metadata.height = MAX_DIMENSION + 1;
        assert_eq!(kind(f), ErrorKind::InvalidSize);
        let mut f = rgba(4, 4, vec![]);
        f.metadata.timestamp = f64::NAN;
        assert_eq!(kind(f), ErrorKind::InvalidTimestamp);
        let mut f = rgba(4, 4, vec![]);
        f.metadata.timestamp = -1.0;
        assert_eq!(kind(f), ErrorKind::InvalidTimestamp);
        assert_eq!(
            kind(rgba(4, 4, vec![DirtyRect::new(3, 3, 2, 1)])),
            ErrorKind::RectOutOfBounds
        );
        assert_eq!(
            kind(rgba(4, 4, vec![DirtyRect::new(u32::MAX, 0, 2, 1)])),
            ErrorKind::RectOutOfBounds
        );
        assert_eq!(
            kind(rgba(4, 4, vec![DirtyRect::new(0, 0, 1, 0)])),
            ErrorKind::RectOutOfBounds
        );
        assert_eq!(
            kind(rgba(
                4,
                4,
                vec![DirtyRect::new(0, 0, 1, 1); MAX_DIRTY_RECTS + 1]
            )),
            ErrorKind::TooManyRects
        );
        let mut f = rgba(4, 4, vec![DirtyRect::new(0, 0, 1, 1)]);
        f.metadata.keyframe = true;
        assert_eq!(kind(f), ErrorKind::KeyframeWithRects);
        let mut f = rgba(4, 4, vec![DirtyRect::new(0, 0, 1, 1)]);
        f.metadata.format = PixelFormat::Compressed;
        assert_eq!(kind(f), ErrorKind::CompressedWithRects);
        let mut f = rgba(4, 4, vec![]);
        f.data.pop();
        assert_eq!(kind(f), ErrorKind::DataLength);
        let mut f = rgba(4, 4, vec![]);
        f.metadata.format = PixelFormat::Compressed;
        f.data.clear();
        assert_eq!(kind(f), ErrorKind::DataLength);
        // And well-formed ones pass.
        rgba(4, 4, vec![DirtyRect::new(0, 3, 4, 1)])
            .validate()
            .unwrap();
    }

    #[test]
    fn serde_names_match_the_reference_design() {
        let meta = FrameMetadata::delta(
            7,
            1.5,
            640,
            480,
            PixelFormat::Rgb565,
            vec![DirtyRect::new(1, 2, 3, 4)],
        );
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"sequence": 7, "timestamp": 1.5, "width": 640, "height": 480,
                "format": "rgb565", "keyframe": false,
                "dirty": [{"x": 1, "y": 2, "width": 3, "height": 4}]})
        );
        let back: FrameMetadata = serde_json::from_value(json).unwrap();
        assert_eq!(back, meta);
        for (f, name) in [
            (PixelFormat::Rgba, "rgba"),
            (PixelFormat::Yuv420, "yuv420"),
            (PixelFormat::Compressed, "compressed"),
        ] {
            assert_eq!(serde_json::to_value(f).unwrap(), name);
            assert_eq!(PixelFormat::from_code(f.code()), Some(f));
        }
    }

    #[test]
    fn yuv420_rect_spans_cover_all_three_planes() {
        // 5x3 frame: Y 15 bytes, U and V 3x2 = 6 bytes each.
        let mut touched = vec![false; PixelFormat::Yuv420.data_len(5, 3).unwrap()];
        PixelFormat::Yuv420.rect_spans(5, 3, &DirtyRect::new(3, 1, 2, 1), |o, l| {
            touched[o..o + l].iter_mut().for_each(|t| *t = true)
        });
        let idx: Vec<usize> = (0..touched.len()).filter(|&i| touched[i]).collect();
        // Y row 1 cols 3..5; U/V row 0 cols 1..3.
        assert_eq!(idx, vec![8, 9, 15 + 1, 15 + 2, 21 + 1, 21 + 2]);
    }

    #[test]
    fn rect_len_matches_the_spans() {
        let formats = [PixelFormat::Rgba, PixelFormat::Rgb565, PixelFormat::Yuv420];
        for format in formats {
            for (x, y, w, h) in [(0, 0, 7, 5), (3, 1, 2, 1), (1, 2, 5, 3), (6, 4, 1, 1)] {
                let rect = DirtyRect::new(x, y, w, h);
                let mut total = 0;
                format.rect_spans(7, 5, &rect, |_, len| total += len);
                assert_eq!(format.rect_len(&rect), total, "{format:?} {rect:?}");
            }
        }
    }

    #[test]
    fn damage_past_the_cap_collapses_to_its_bounding_box() {
        let mut list = vec![DirtyRect::new(0, 0, 1, 1)];
        merge_damage(&mut list, &[DirtyRect::new(4, 4, 1, 1)], 2);
        assert_eq!(list.len(), 2);
        merge_damage(&mut list, &[DirtyRect::new(2, 9, 1, 1)], 2);
        assert_eq!(list, vec![DirtyRect::new(0, 0, 5, 10)]);
    }
}
