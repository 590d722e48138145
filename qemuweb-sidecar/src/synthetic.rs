//! A synthetic screen for demos, tests and benchmarks: seeded, so two copies with the
//! same seed produce the same frames (a sender and a receiver's replica).
//!
//! Frame 1 is a keyframe of a gradient; every later frame paints one to three
//! rectangles and lists them as dirty; an optional resize turns one frame into a
//! keyframe of a new size.
//!
//! ```
//! use qemuweb_sidecar::synthetic::SyntheticScreen;
//!
//! let mut sender = SyntheticScreen::new(7, 64, 48).with_resize(3, 32, 16);
//! let mut replica = SyntheticScreen::new(7, 64, 48).with_resize(3, 32, 16);
//! assert!(sender.frame().metadata.keyframe);
//! let second = sender.step();
//! assert!(!second.metadata.keyframe && !second.metadata.dirty.is_empty());
//! let third = sender.step();
//! assert_eq!((third.metadata.width, third.metadata.keyframe), (32, true));
//! replica.advance_to(3);
//! assert_eq!(replica.frame().data, third.data);
//! ```

use crate::frame::{DirtyRect, Frame, FrameMetadata, PixelFormat};

/// A seeded RGBA screen that changes in rectangles (see the module docs).
#[derive(Debug, Clone)]
pub struct SyntheticScreen {
    width: u32,
    height: u32,
    data: Vec<u8>,
    rng: u64,
    sequence: u64,
    dirty: Vec<DirtyRect>,
    resize: Option<(u64, u32, u32)>,
}

impl SyntheticScreen {
    /// Frame 1 of a `width x height` screen (each side at least 1), seeded by `seed`.
    pub fn new(seed: u64, width: u32, height: u32) -> SyntheticScreen {
        let mut screen = SyntheticScreen {
            width: width.max(1),
            height: height.max(1),
            data: Vec::new(),
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            sequence: 1,
            dirty: Vec::new(),
            resize: None,
        };
        screen.fill();
        screen
    }

    /// Makes frame `at` a keyframe of `width x height`.
    pub fn with_resize(mut self, at: u64, width: u32, height: u32) -> SyntheticScreen {
        self.resize = Some((at, width.max(1), height.max(1)));
        self
    }

    fn fill(&mut self) {
        let (w, h) = (self.width, self.height);
        let salt = self.sequence as u8;
        self.data = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    salt.wrapping_mul(37),
                    255,
                ]
            })
            .collect();
    }

    fn below(&mut self, n: u32) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n as u64) as u32
    }

    /// The current frame's sequence number.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The current screen's width and height.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The current screen's RGBA bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Moves to the next frame without building it.
    pub fn advance(&mut self) {
        self.sequence += 1;
        self.dirty.clear();
        if let Some((at, w, h)) = self.resize {
            if at == self.sequence {
                (self.width, self.height) = (w, h);
                self.fill();
                return;
            }
        }
        for _ in 0..1 + self.below(3) {
            let x = self.below(self.width);
            let y = self.below(self.height);
            let rect = DirtyRect::new(
                x,
                y,
                1 + self.below((self.width - x).min(96)),
                1 + self.below((self.height - y).min(64)),
            );
            let colour = [
                self.below(256) as u8,
                self.below(256) as u8,
                self.sequence as u8,
                255,
            ];
            for row in rect.y..rect.y + rect.height {
                let start = ((row * self.width + rect.x) * 4) as usize;
                let end = start + (rect.width * 4) as usize;
                for (i, px) in self.data[start..end].chunks_exact_mut(4).enumerate() {
                    px.copy_from_slice(&colour);
                    px[0] ^= i as u8;
                }
            }
            self.dirty.push(rect);
        }
    }

    /// Moves forward to frame `sequence` (no-op if already there or past it).
    pub fn advance_to(&mut self, sequence: u64) {
        while self.sequence < sequence {
            self.advance();
        }
    }

    /// The current frame: a keyframe for frame 1 and resizes, otherwise a delta listing
    /// the rectangles painted since the previous frame. Timestamped with its sequence.
    pub fn frame(&self) -> Frame {
        let mut metadata = FrameMetadata::delta(
            self.sequence,
            self.sequence as f64,
            self.width,
            self.height,
            PixelFormat::Rgba,
            self.dirty.clone(),
        );
        metadata.keyframe = self.dirty.is_empty();
        Frame {
            metadata,
            data: self.data.clone(),
        }
    }

    /// Advances and returns the new frame.
    pub fn step(&mut self) -> Frame {
        self.advance();
        self.frame()
    }
}
