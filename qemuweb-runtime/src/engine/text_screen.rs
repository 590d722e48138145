//! The VGA text screen rendered to RGBA frames for the display ring.
//!
//! An emulator in a worker has no screen; it reports text cells (character, foreground
//! and background colours) and the font the guest loaded into VGA plane 2. This module
//! keeps the cell grid, renders changed cells with that font (8 or 9 pixels wide as the
//! VGA's sequencer clocks them, 16 in the doubled 40-column modes; the font's height
//! tall: 720x400 for 80x25 with the usual 9x16 cells) and produces [`Frame`]s whose
//! dirty rectangles cover only the changed cells.
//!
//! In 9-pixel cells the ninth column is the background, or for the line-drawing
//! characters 0xB0-0xDF with line graphics enabled, a copy of the eighth, as QEMU's VGA
//! draws them, so both engines show the same pixels.
//!
//! The font is the guest's own (what a real VGA would show), so the BIOS's or the OS's
//! font, code page included, comes out as on hardware. Until the guest loads a font,
//! cells render as their background colour.

use qemuweb_sidecar::{DirtyRect, Frame, FrameMetadata, PixelFormat};

/// Bytes per glyph in VGA plane 2 (a glyph is up to 32 scan lines of 8 pixels).
pub const GLYPH_STRIDE: usize = 32;
/// Width of a character cell in pixels, unless the VGA says otherwise
/// ([`TextScreen::set_cell_width`]).
pub const CELL_WIDTH: u32 = 8;
/// The largest text grid rendered (columns x rows).
pub const MAX_COLS: u32 = 132;
/// The largest number of text rows rendered.
pub const MAX_ROWS: u32 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell {
    ch: u8,
    /// 0xRRGGBB.
    fg: u32,
    /// 0xRRGGBB.
    bg: u32,
}

const BLANK: Cell = Cell {
    ch: b' ',
    fg: 0xaa_aaaa,
    bg: 0,
};

/// A text screen: cells, font and the RGBA pixels they render to.
#[derive(Debug)]
pub struct TextScreen {
    cols: u32,
    rows: u32,
    cell_height: u32,
    /// 8, 9 or 16 pixels.
    cell_width: u32,
    /// In 9-pixel cells, the line-drawing characters repeat their eighth column.
    line_graphics: bool,
    /// 256 glyphs of [`GLYPH_STRIDE`] bytes, one byte a scan line, MSB leftmost.
    font: Vec<u8>,
    cells: Vec<Cell>,
    /// Per row: the range of columns changed since the last frame.
    dirty: Vec<Option<(u32, u32)>>,
    /// Everything must be redrawn and sent whole (new size or font).
    whole: bool,
    pixels: Vec<u8>,
    sequence: u64,
}

impl Default for TextScreen {
    fn default() -> Self {
        TextScreen::new(80, 25)
    }
}

impl TextScreen {
    /// A blank `cols x rows` screen (clamped to [`MAX_COLS`] x [`MAX_ROWS`]) with the
    /// usual 16-line font height and no font yet.
    pub fn new(cols: u32, rows: u32) -> TextScreen {
        let mut screen = TextScreen {
            cols: 0,
            rows: 0,
            cell_height: 16,
            cell_width: CELL_WIDTH,
            line_graphics: false,
            font: vec![0; 256 * GLYPH_STRIDE],
            cells: Vec::new(),
            dirty: Vec::new(),
            whole: true,
            pixels: Vec::new(),
            sequence: 0,
        };
        screen.set_size(cols, rows);
        screen
    }

    /// The size of the rendered screen in pixels.
    pub fn pixel_size(&self) -> (u32, u32) {
        (self.cols * self.cell_width, self.rows * self.cell_height)
    }

    /// Sets the cell width as the VGA's sequencer clocks characters: 9 pixels when
    /// `nine` (its 8-dot bit clear), 16 when `double` (the halved dot clock of 40-column
    /// modes; wins over `nine`), else 8; `line_graphics` (the attribute controller's
    /// line graphics enable) makes the ninth column of 0xB0-0xDF repeat the eighth.
    pub fn set_cell_width(&mut self, nine: bool, double: bool, line_graphics: bool) {
        let width = match (double, nine) {
            (true, _) => 16,
            (false, true) => 9,
            (false, false) => CELL_WIDTH,
        };
        if (width, line_graphics) != (self.cell_width, self.line_graphics) {
            self.cell_width = width;
            self.line_graphics = line_graphics;
            self.whole = true;
        }
    }

    /// The text grid's size (columns, rows).
    pub fn grid(&self) -> (u32, u32) {
        (self.cols, self.rows)
    }

    /// Changes the grid (the guest switched text modes). Cells are blanked.
    pub fn set_size(&mut self, cols: u32, rows: u32) {
        let (cols, rows) = (cols.clamp(1, MAX_COLS), rows.clamp(1, MAX_ROWS));
        if (cols, rows) == (self.cols, self.rows) {
            return;
        }
        self.cols = cols;
        self.rows = rows;
        self.cells = vec![BLANK; (cols * rows) as usize];
        self.dirty = vec![None; rows as usize];
        self.whole = true;
    }

    /// Makes the next frame a keyframe (the screen is shown again after a graphics mode).
    pub fn invalidate(&mut self) {
        self.whole = true;
    }

    /// Loads the font from VGA plane 2 (`plane2`: glyph `c` at `c * 32`, `height` scan
    /// lines each, 1..=32). Every cell is redrawn.
    pub fn set_font(&mut self, height: u32, plane2: &[u8]) {
        let height = height.clamp(1, GLYPH_STRIDE as u32);
        let n = plane2.len().min(self.font.len());
        let changed = height != self.cell_height || self.font[..n] != plane2[..n];
        if !changed {
            return;
        }
        self.font[..n].copy_from_slice(&plane2[..n]);
        self.cell_height = height;
        self.whole = true;
    }

    /// Sets the cell at (`row`, `col`): character code `ch` (code page of the font),
    /// colours as 0xRRGGBB. Cells outside the grid are ignored.
    pub fn put_char(&mut self, row: u32, col: u32, ch: u8, fg: u32, bg: u32) {
        if row >= self.rows || col >= self.cols {
            return;
        }
        let cell = Cell {
            ch,
            fg: fg & 0xff_ffff,
            bg: bg & 0xff_ffff,
        };
        let at = (row * self.cols + col) as usize;
        if self.cells[at] == cell {
            return;
        }
        self.cells[at] = cell;
        let d = &mut self.dirty[row as usize];
        *d = Some(match *d {
            Some((a, b)) => (a.min(col), b.max(col)),
            None => (col, col),
        });
    }

    /// The text of row `row` (characters as Latin-1), for diagnostics.
    pub fn row_text(&self, row: u32) -> String {
        let start = (row.min(self.rows.saturating_sub(1)) * self.cols) as usize;
        self.cells[start..start + self.cols as usize]
            .iter()
            .map(|c| c.ch as char)
            .collect()
    }

    /// Renders what changed since the last frame and returns the next frame (the whole
    /// screen; a keyframe after a resize or font change, else dirty rectangles of the
    /// changed cells), or `None` if nothing changed.
    pub fn take_frame(&mut self, timestamp: f64) -> Option<Frame> {
        let (width, height) = self.pixel_size();
        let whole = self.whole || self.pixels.len() != (width * height * 4) as usize;
        let mut rects = Vec::new();
        if whole {
            self.pixels = vec![0; (width * height * 4) as usize];
            for row in 0..self.rows {
                for col in 0..self.cols {
                    self.render(row, col);
                }
            }
        } else {
            for row in 0..self.rows {
                if let Some((a, b)) = self.dirty[row as usize] {
                    for col in a..=b {
                        self.render(row, col);
                    }
                    rects.push(DirtyRect::new(
                        a * self.cell_width,
                        row * self.cell_height,
                        (b - a + 1) * self.cell_width,
                        self.cell_height,
                    ));
                }
            }
            if rects.is_empty() {
                return None;
            }
        }
        self.whole = false;
        self.dirty.iter_mut().for_each(|d| *d = None);
        self.sequence += 1;
        let metadata = if whole {
            FrameMetadata::keyframe(self.sequence, timestamp, width, height, PixelFormat::Rgba)
        } else {
            FrameMetadata::delta(
                self.sequence,
                timestamp,
                width,
                height,
                PixelFormat::Rgba,
                rects,
            )
        };
        Some(Frame {
            metadata,
            data: self.pixels.clone(),
        })
    }

    fn render(&mut self, row: u32, col: u32) {
        let cell = self.cells[(row * self.cols + col) as usize];
        let rgba = |c: u32| [(c >> 16) as u8, (c >> 8) as u8, c as u8, 255];
        let (fg, bg) = (rgba(cell.fg), rgba(cell.bg));
        let cw = self.cell_width as usize;
        let width = self.cols as usize * cw;
        let repeat_eighth = cw == 9 && self.line_graphics && (0xb0..=0xdf).contains(&cell.ch);
        let glyph = &self.font[cell.ch as usize * GLYPH_STRIDE..][..self.cell_height as usize];
        for (line, &bits) in glyph.iter().enumerate() {
            let y = row as usize * self.cell_height as usize + line;
            let start = (y * width + col as usize * cw) * 4;
            for (x, px) in self.pixels[start..start + cw * 4]
                .chunks_exact_mut(4)
                .enumerate()
            {
                let bit = match (cw, x) {
                    (16, x) => x / 2,
                    (9, 8) if repeat_eighth => 7,
                    (9, 8) => 8,
                    (_, x) => x,
                };
                let on = bit < 8 && bits & (0x80 >> bit) != 0;
                px.copy_from_slice(if on { &fg } else { &bg });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A font where glyph `c` has scan line `l` = `c ^ l` (distinct per character).
    fn font() -> Vec<u8> {
        let mut f = vec![0u8; 256 * GLYPH_STRIDE];
        for c in 0..256 {
            for l in 0..16 {
                f[c * GLYPH_STRIDE + l] = (c ^ l) as u8;
            }
        }
        f
    }

    fn pixel(frame: &Frame, x: u32, y: u32) -> [u8; 4] {
        let at = ((y * frame.metadata.width + x) * 4) as usize;
        frame.data[at..at + 4].try_into().unwrap()
    }

    #[test]
    fn first_frame_is_a_keyframe_of_the_whole_grid_then_only_changed_cells() {
        let mut s = TextScreen::new(80, 25);
        s.set_font(16, &font());
        let key = s.take_frame(0.0).unwrap();
        assert!(key.metadata.keyframe);
        assert_eq!((key.metadata.width, key.metadata.height), (640, 400));
        key.validate().unwrap();
        assert!(s.take_frame(1.0).is_none(), "nothing changed: no frame");

        s.put_char(2, 10, b'Q', 0xffffff, 0x0000aa);
        s.put_char(2, 12, b'E', 0xffffff, 0x0000aa);
        let f = s.take_frame(2.0).unwrap();
        f.validate().unwrap();
        assert!(!f.metadata.keyframe);
        assert_eq!(f.metadata.dirty, vec![DirtyRect::new(80, 32, 24, 16)]);
        // Scan line 0 of 'Q' (0x51): bits 0101_0001 -> x = 1, 3, 7 are foreground.
        let (x0, y0) = (80, 32);
        assert_eq!(pixel(&f, x0 + 1, y0), [255, 255, 255, 255]);
        assert_eq!(pixel(&f, x0, y0), [0, 0, 0xaa, 255]);
        assert_eq!(pixel(&f, x0 + 7, y0), [255, 255, 255, 255]);
        // The same cell written again unchanged costs nothing.
        s.put_char(2, 10, b'Q', 0xffffff, 0x0000aa);
        assert!(s.take_frame(3.0).is_none());
    }

    #[test]
    fn nine_and_sixteen_pixel_cells_render_as_qemus_vga() {
        let mut s = TextScreen::new(80, 25);
        s.set_font(16, &font());
        s.take_frame(0.0).unwrap();
        s.set_cell_width(true, false, true);
        s.put_char(0, 1, 0xc4, 0xffffff, 0);
        s.put_char(0, 2, 0x41, 0xffffff, 0);
        let f = s.take_frame(1.0).unwrap();
        assert!(f.metadata.keyframe, "a new cell width redraws everything");
        assert_eq!((f.metadata.width, f.metadata.height), (720, 400));
        // Line 1 of glyph 0xC4 is 0xC5 (bit 0 set): the ninth pixel repeats the eighth.
        assert_eq!(pixel(&f, 9 + 7, 1), [255, 255, 255, 255]);
        assert_eq!(pixel(&f, 9 + 8, 1), [255, 255, 255, 255]);
        // Line 0 of 'A' (0x41) has bit 0 set too, but 'A' is no line-drawing character.
        assert_eq!(pixel(&f, 18 + 7, 0), [255, 255, 255, 255]);
        assert_eq!(pixel(&f, 18 + 8, 0), [0, 0, 0, 255]);
        s.put_char(0, 3, 0x41, 0xff0000, 0);
        let d = s.take_frame(2.0).unwrap();
        assert_eq!(d.metadata.dirty, vec![DirtyRect::new(27, 0, 9, 16)]);
        // Doubled: 40 columns of 16 pixels, each font bit twice.
        s.set_cell_width(true, true, false);
        s.set_size(40, 25);
        let f = s.take_frame(3.0).unwrap();
        assert_eq!(f.metadata.width, 640);
        s.put_char(0, 0, 0x80, 0xffffff, 0); // line 0 = 0x80: the leftmost bit only
        let f = s.take_frame(4.0).unwrap();
        assert_eq!(pixel(&f, 0, 0), [255, 255, 255, 255]);
        assert_eq!(pixel(&f, 1, 0), [255, 255, 255, 255]);
        assert_eq!(pixel(&f, 2, 0), [0, 0, 0, 255]);
    }

    #[test]
    fn resize_and_font_change_send_keyframes() {
        let mut s = TextScreen::new(80, 25);
        s.take_frame(0.0).unwrap();
        s.set_size(40, 25);
        let f = s.take_frame(1.0).unwrap();
        assert!(f.metadata.keyframe);
        assert_eq!(f.metadata.width, 320);
        s.set_font(8, &font());
        let f = s.take_frame(2.0).unwrap();
        assert!(f.metadata.keyframe);
        assert_eq!(f.metadata.height, 200);
        assert!(f.metadata.sequence > 2 - 1);
        s.put_char(100, 100, b'x', 0, 0); // outside: ignored
        assert!(s.take_frame(3.0).is_none());
        s.put_char(0, 0, b'x', 0xff0000, 0);
        assert_eq!(s.row_text(0).chars().next(), Some('x'));
    }
}
