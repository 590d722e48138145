//! Pixel conversion to RGBA for displays: whole frames or just their dirty rectangles.

use crate::frame::{DirtyRect, PixelFormat};
use crate::SidecarError;

/// Writes the pixels of `rect` of a `width x height` screen laid out as `format` into
/// `out` as RGBA rows (`rect.width * rect.height * 4` bytes; `out` is resized).
///
/// RGB565 expands each channel to 8 bits (replicating the high bits, so white stays
/// white); YUV420 (I420) converts with BT.601 limited-range coefficients. Compressed
/// frames cannot be converted (an error of kind
/// [`ErrorKind::UnsupportedFormat`](crate::ErrorKind::UnsupportedFormat)); the screen
/// must hold the format's whole data and `rect` must fit.
///
/// ```
/// use qemuweb_sidecar::{rect_to_rgba, DirtyRect, PixelFormat};
/// // A 2x1 RGB565 screen: pure red, pure white.
/// let screen = [0x00, 0xf8, 0xff, 0xff];
/// let mut out = Vec::new();
/// rect_to_rgba(PixelFormat::Rgb565, 2, 1, &screen, &DirtyRect::new(0, 0, 2, 1), &mut out)?;
/// assert_eq!(out, [255, 0, 0, 255, 255, 255, 255, 255]);
/// # Ok::<(), qemuweb_sidecar::SidecarError>(())
/// ```
pub fn rect_to_rgba(
    format: PixelFormat,
    width: u32,
    height: u32,
    screen: &[u8],
    rect: &DirtyRect,
    out: &mut Vec<u8>,
) -> Result<(), SidecarError> {
    let expected = format
        .data_len(width, height)
        .ok_or(SidecarError::UnsupportedFormat { format })?;
    if screen.len() != expected {
        return Err(SidecarError::DataLength {
            format,
            width,
            height,
            expected,
            actual: screen.len(),
        });
    }
    if !rect.fits(width, height) {
        return Err(SidecarError::RectOutOfBounds {
            rect: *rect,
            width,
            height,
        });
    }
    let (w, h) = (width as usize, height as usize);
    let (x0, y0) = (rect.x as usize, rect.y as usize);
    let (rw, rh) = (rect.width as usize, rect.height as usize);
    out.clear();
    out.reserve(rw * rh * 4);
    match format {
        PixelFormat::Rgba => {
            for row in y0..y0 + rh {
                let at = (row * w + x0) * 4;
                out.extend_from_slice(&screen[at..at + rw * 4]);
            }
        }
        PixelFormat::Rgb565 => {
            for row in y0..y0 + rh {
                let at = (row * w + x0) * 2;
                for px in screen[at..at + rw * 2].chunks_exact(2) {
                    let v = u16::from_le_bytes([px[0], px[1]]);
                    let r = ((v >> 11) & 0x1f) as u8;
                    let g = ((v >> 5) & 0x3f) as u8;
                    let b = (v & 0x1f) as u8;
                    out.extend_from_slice(&[
                        (r << 3) | (r >> 2),
                        (g << 2) | (g >> 4),
                        (b << 3) | (b >> 2),
                        255,
                    ]);
                }
            }
        }
        PixelFormat::Yuv420 => {
            let cw = w.div_ceil(2);
            let (u_plane, v_plane) = (w * h, w * h + cw * h.div_ceil(2));
            for row in y0..y0 + rh {
                for col in x0..x0 + rw {
                    let y = screen[row * w + col] as i32;
                    let c = (row / 2) * cw + col / 2;
                    let u = screen[u_plane + c] as i32;
                    let v = screen[v_plane + c] as i32;
                    out.extend_from_slice(&yuv_to_rgb(y, u, v));
                }
            }
        }
        PixelFormat::Compressed => unreachable!("rejected above: no fixed data length"),
    }
    Ok(())
}

/// BT.601 limited range to RGBA, in 8.8 fixed point.
fn yuv_to_rgb(y: i32, u: i32, v: i32) -> [u8; 4] {
    let c = 298 * (y - 16);
    let (d, e) = (u - 128, v - 128);
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * e),
        clamp(c - 100 * d - 208 * e),
        clamp(c + 516 * d),
        255,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn rgba_rect_takes_only_its_rows_and_columns() {
        // 3x2 screen, pixel (x, y) = [x, y, 7, 255].
        let mut screen = Vec::new();
        for y in 0..2u8 {
            for x in 0..3u8 {
                screen.extend_from_slice(&[x, y, 7, 255]);
            }
        }
        let mut out = Vec::new();
        let rect = DirtyRect::new(1, 0, 2, 2);
        rect_to_rgba(PixelFormat::Rgba, 3, 2, &screen, &rect, &mut out).unwrap();
        assert_eq!(
            out,
            [1, 0, 7, 255, 2, 0, 7, 255, 1, 1, 7, 255, 2, 1, 7, 255]
        );
    }

    #[test]
    fn rgb565_primaries_expand_to_full_range() {
        let px = |v: u16| v.to_le_bytes();
        let screen: Vec<u8> = [0xf800u16, 0x07e0, 0x001f, 0x0000, 0x8410]
            .iter()
            .flat_map(|v| px(*v))
            .collect();
        let mut out = Vec::new();
        let rect = DirtyRect::new(0, 0, 5, 1);
        rect_to_rgba(PixelFormat::Rgb565, 5, 1, &screen, &rect, &mut out).unwrap();
        assert_eq!(&out[0..4], [255, 0, 0, 255]);
        assert_eq!(&out[4..8], [0, 255, 0, 255]);
        assert_eq!(&out[8..12], [0, 0, 255, 255]);
        assert_eq!(&out[12..16], [0, 0, 0, 255]);
        assert_eq!(&out[16..20], [132, 130, 132, 255]);
    }

    #[test]
    fn yuv420_converts_with_bt601_and_shares_chroma_between_2x2_pixels() {
        // 3x3: Y plane 9 bytes, U and V planes 2x2 each.
        let mut screen = vec![235u8; 9]; // white luma
        screen[4] = 16; // black luma at (1, 1)
        screen.extend_from_slice(&[128; 4]); // U: neutral
        screen.extend_from_slice(&[128, 128, 128, 240]); // V: red tint at chroma (1, 1)
        let mut out = Vec::new();
        let rect = DirtyRect::new(0, 0, 3, 3);
        rect_to_rgba(PixelFormat::Yuv420, 3, 3, &screen, &rect, &mut out).unwrap();
        let px = |x: usize, y: usize| &out[(y * 3 + x) * 4..(y * 3 + x) * 4 + 4];
        assert_eq!(px(0, 0), [255, 255, 255, 255]);
        assert_eq!(px(1, 1), [0, 0, 0, 255]);
        // (2, 2) uses chroma (1, 1): strong V pushes red up, green down.
        let p = px(2, 2);
        assert_eq!(p[0], 255);
        assert!(p[1] < 200 && p[2] == 255, "{p:?}");
    }

    #[test]
    fn bad_input_is_refused() {
        let mut out = Vec::new();
        let rect = DirtyRect::new(0, 0, 1, 1);
        let err = rect_to_rgba(PixelFormat::Compressed, 1, 1, &[1], &rect, &mut out);
        assert_eq!(err.unwrap_err().kind(), ErrorKind::UnsupportedFormat);
        let err = rect_to_rgba(PixelFormat::Rgba, 1, 1, &[1, 2, 3], &rect, &mut out);
        assert_eq!(err.unwrap_err().kind(), ErrorKind::DataLength);
        let far = DirtyRect::new(1, 0, 1, 1);
        let err = rect_to_rgba(PixelFormat::Rgba, 1, 1, &[0; 4], &far, &mut out);
        assert_eq!(err.unwrap_err().kind(), ErrorKind::RectOutOfBounds);
    }
}
