//! A VGA graphics screen as RGBA frames for the display ring.
//!
//! In a graphics mode an emulator renders its framebuffer into an RGBA image of its own
//! (v86: an `ImageData` over its wasm memory, sometimes taller than the screen so the
//! guest can pan) and reports *layers*: which part of that image shows where on the
//! screen, as for `putImageData`. [`GraphicsScreen`] keeps the screen's pixels, copies
//! each layer in ([`GraphicsScreen::blit`]), remembers which pixels of each row really
//! changed and makes [`Frame`]s whose dirty rectangles cover only those (one per run of
//! consecutive changed rows with the columns they changed), so an unchanged screen costs
//! nothing even though the emulator reports the whole screen every time. A new size
//! starts with a keyframe.

use qemuweb_sidecar::{DirtyRect, Frame, FrameMetadata, PixelFormat, MAX_DIRTY_RECTS};

/// The largest graphics screen rendered (each side), as the display ring's limit.
pub const MAX_SIDE: u32 = 2048;

/// Where one layer of the emulator's image shows on the screen (the arguments of
/// `putImageData(image, screen_x - buffer_x, screen_y - buffer_y, buffer_x, buffer_y,
/// buffer_width, buffer_height)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// Screen column of the layer's left edge (may be negative: panned).
    pub screen_x: i64,
    /// Screen row of the layer's top edge.
    pub screen_y: i64,
    /// First column of the image shown.
    pub buffer_x: u32,
    /// First row of the image shown.
    pub buffer_y: u32,
    /// Columns of the image shown.
    pub buffer_width: u32,
    /// Rows of the image shown.
    pub buffer_height: u32,
}

/// A graphics screen: its RGBA pixels and what changed since the last frame.
#[derive(Debug, Default)]
pub struct GraphicsScreen {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
    /// Per row: the range of columns changed since the last frame.
    dirty: Vec<Option<(u32, u32)>>,
    /// Everything must be sent whole (new size, or the screen was not shown).
    whole: bool,
}

impl GraphicsScreen {
    /// A black `width x height` screen (each side clamped to 1..=[`MAX_SIDE`]).
    pub fn new(width: u32, height: u32) -> GraphicsScreen {
        let mut screen = GraphicsScreen::default();
        screen.set_size(width, height);
        screen
    }

    /// The screen's size in pixels.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The RGBA pixels, row by row.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Changes the size (the guest switched modes); the screen turns black and the next
    /// frame is a keyframe.
    pub fn set_size(&mut self, width: u32, height: u32) {
        let (width, height) = (width.clamp(1, MAX_SIDE), height.clamp(1, MAX_SIDE));
        if (width, height) == (self.width, self.height) {
            return;
        }
        self.width = width;
        self.height = height;
        self.pixels = vec![0; width as usize * height as usize * 4];
        self.dirty = vec![None; height as usize];
        self.whole = true;
    }

    /// Makes the next frame a keyframe (the screen is shown again after a text mode).
    pub fn invalidate(&mut self) {
        self.whole = true;
    }

    /// Copies `layer` of the emulator's RGBA image into the screen, clipped to it.
    /// `rows` holds the image's rows `layer.buffer_y ..` (as many as are given, each
    /// `image_width * 4` bytes). Returns whether any pixel changed.
    pub fn blit(&mut self, layer: &Layer, image_width: u32, rows: &[u8]) -> bool {
        let stride = image_width as usize * 4;
        if stride == 0 {
            return false;
        }
        let dx = layer.screen_x - i64::from(layer.buffer_x);
        let dy = layer.screen_y - i64::from(layer.buffer_y);
        let x0 = i64::from(layer.buffer_x).max(-dx).max(0);
        let x1 = i64::from(layer.buffer_x + layer.buffer_width)
            .min(i64::from(self.width) - dx)
            .min(i64::from(image_width));
        if x0 >= x1 {
            return false;
        }
        let mut changed = false;
        let given = (rows.len() / stride) as u32;
        for i in 0..layer.buffer_height.min(given) {
            let iy = i64::from(layer.buffer_y + i);
            let y = iy + dy;
            if y < 0 || y >= i64::from(self.height) {
                continue;
            }
            let src = &rows[i as usize * stride..][x0 as usize * 4..x1 as usize * 4];
            let at = (y as usize * self.width as usize + (x0 + dx) as usize) * 4;
            let dst = &mut self.pixels[at..at + src.len()];
            if dst == src {
                continue;
            }
            // The changed columns: first and last differing pixel.
            let differs = |p: usize| dst[p * 4..p * 4 + 4] != src[p * 4..p * 4 + 4];
            let n = src.len() / 4;
            let first = (0..n).find(|&p| differs(p)).unwrap_or(0);
            let last = (0..n).rev().find(|&p| differs(p)).unwrap_or(n - 1);
            dst.copy_from_slice(src);
            let (a, b) = (
                (x0 + dx) as u32 + first as u32,
                (x0 + dx) as u32 + last as u32,
            );
            let d = &mut self.dirty[y as usize];
            *d = Some(match *d {
                Some((p, q)) => (p.min(a), q.max(b)),
                None => (a, b),
            });
            changed = true;
        }
        changed
    }

    /// The next frame (sequence `sequence`): a keyframe after a resize or
    /// [`invalidate`](Self::invalidate), else a delta whose rectangles cover the changed
    /// pixels (one per run of changed rows); `None` if nothing changed.
    pub fn take_frame(&mut self, sequence: u64, timestamp: f64) -> Option<Frame> {
        let (w, h) = (self.width, self.height);
        let metadata = if self.whole {
            FrameMetadata::keyframe(sequence, timestamp, w, h, PixelFormat::Rgba)
        } else {
            let mut rects: Vec<DirtyRect> = Vec::new();
            let mut run: Option<(u32, u32, u32)> = None; // (first row, min x, max x)
            for y in 0..=h {
                let d = self.dirty.get(y as usize).copied().flatten();
                match (d, run) {
                    (Some((a, b)), Some((y0, p, q))) => run = Some((y0, p.min(a), q.max(b))),
                    (Some((a, b)), None) => run = Some((y, a, b)),
                    (None, Some((y0, p, q))) => {
                        rects.push(DirtyRect::new(p, y0, q - p + 1, y - y0));
                        run = None;
                    }
                    (None, None) => {}
                }
            }
            match rects.len() {
                0 => return None,
                n if n > MAX_DIRTY_RECTS => {
                    FrameMetadata::keyframe(sequence, timestamp, w, h, PixelFormat::Rgba)
                }
                _ => FrameMetadata::delta(sequence, timestamp, w, h, PixelFormat::Rgba, rects),
            }
        };
        self.whole = false;
        self.dirty.iter_mut().for_each(|d| *d = None);
        Some(Frame {
            metadata,
            data: self.pixels.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w x h` RGBA image whose pixel (x, y) is `[x, y, seed, 255]`.
    fn image(w: u32, h: u32, seed: u8) -> Vec<u8> {
        let mut v = Vec::new();
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&[x as u8, y as u8, seed, 255]);
            }
        }
        v
    }

    fn whole(w: u32, h: u32) -> Layer {
        Layer {
            screen_x: 0,
            screen_y: 0,
            buffer_x: 0,
            buffer_y: 0,
            buffer_width: w,
            buffer_height: h,
        }
    }

    #[test]
    fn keyframe_then_only_changed_rows_then_nothing() {
        let mut s = GraphicsScreen::new(320, 200);
        let mut img = image(320, 200, 1);
        assert!(s.blit(&whole(320, 200), 320, &img));
        let key = s.take_frame(1, 0.0).unwrap();
        assert!(key.metadata.keyframe);
        key.validate().unwrap();
        assert_eq!(key.data, img);
        // The emulator reports the whole screen again, unchanged: no frame.
        assert!(!s.blit(&whole(320, 200), 320, &img));
        assert!(s.take_frame(2, 0.0).is_none());
        // Row 100 changes from x = 10 to 19, rows 101-102 at x = 300: one rect per run.
        for x in 10..20 {
            img[(100 * 320 + x) * 4] = 0xee;
        }
        for y in 101..103 {
            img[(y * 320 + 300) * 4 + 1] = 0xee;
        }
        img[(150 * 320 + 5) * 4 + 2] = 0xee;
        assert!(s.blit(&whole(320, 200), 320, &img));
        let f = s.take_frame(3, 0.0).unwrap();
        f.validate().unwrap();
        assert!(!f.metadata.keyframe);
        assert_eq!(
            f.metadata.dirty,
            vec![
                DirtyRect::new(10, 100, 291, 3),
                DirtyRect::new(5, 150, 1, 1)
            ]
        );
        assert_eq!(f.data, img);
    }

    #[test]
    fn layers_pan_and_clip_like_put_image_data() {
        // A 4x6 image; the screen is 4x3 and shows image rows 2..5 (panned down by 2),
        // shifted right by one column (column 3 falls off the screen).
        let img = image(4, 6, 9);
        let mut s = GraphicsScreen::new(4, 3);
        let layer = Layer {
            screen_x: 1,
            screen_y: 0,
            buffer_x: 0,
            buffer_y: 2,
            buffer_width: 4,
            buffer_height: 3,
        };
        s.blit(&layer, 4, &img[2 * 16..]);
        let px = |x: usize, y: usize| s.pixels()[(y * 4 + x) * 4..][..4].to_vec();
        assert_eq!(px(0, 0), vec![0, 0, 0, 0], "left of the layer: untouched");
        assert_eq!(px(1, 0), vec![0, 2, 9, 255]);
        assert_eq!(px(3, 2), vec![2, 4, 9, 255]);
        // Fewer rows given than the layer names: only those are copied, nothing panics.
        s.blit(&layer, 4, &img[..16]);
        // A layer entirely off the screen changes nothing.
        let off = Layer {
            screen_x: 10,
            ..layer
        };
        assert!(!s.blit(&off, 4, &img));
        assert!(!s.blit(&layer, 0, &img));
    }

    #[test]
    fn resize_and_invalidate_make_keyframes() {
        let mut s = GraphicsScreen::new(320, 200);
        s.take_frame(1, 0.0).unwrap();
        assert!(s.take_frame(2, 0.0).is_none());
        s.set_size(640, 480);
        let f = s.take_frame(3, 0.0).unwrap();
        assert!(f.metadata.keyframe);
        assert_eq!((f.metadata.width, f.metadata.height), (640, 480));
        assert_eq!(f.data.len(), 640 * 480 * 4);
        s.invalidate();
        assert!(s.take_frame(4, 0.0).unwrap().metadata.keyframe);
        s.set_size(0, 100_000);
        assert_eq!(s.size(), (1, MAX_SIDE));
    }
}
