//! The x86 guest's `gfx` and `hline` commands on real hardware emulation: native
//! `qemu-system-i386` (Debian's qemu-system-x86) boots the guest, the commands go in over
//! its serial port, and QEMU's own `screendump` of the VGA screen must show
//! `x86_gfx_pixel` everywhere (row 100 red after `hline 100 04`); `redraw N` leaves the
//! whole screen in `x86_redraw_index(N)`; after `text`, `hline` and `redraw` are refused.

mod common;

use common::{assert_redraw, screendump};
use std::time::{Duration, Instant};

/// Counts the pixels of a screendump that differ from the pattern (scaled to the dump's
/// size), `red_row` being all colour 4.
fn mismatches(w: usize, h: usize, rgb: &[u8], red_row: Option<u32>) -> usize {
    let (sx, sy) = (w / 320, h / 200);
    assert!(
        sx >= 1 && sy >= 1 && w == 320 * sx && h == 200 * sy,
        "{w}x{h}"
    );
    let mut bad = 0;
    for y in 0..h {
        for x in 0..w {
            let (gx, gy) = ((x / sx) as u32, (y / sy) as u32);
            let want = match red_row {
                Some(r) if r == gy => qemuweb_guests::x86_gfx_colour(4),
                _ => qemuweb_guests::x86_gfx_pixel(gx, gy),
            };
            if rgb[(y * w + x) * 3..][..3] != want {
                bad += 1;
            }
        }
    }
    bad
}

#[test]
fn gfx_pattern_on_qemu_vga() {
    let (mut qemu, dir) = common::boot("gfx");
    let monitor = dir.join("mon.sock");
    qemu.command("gfx", "GFX 320x200");
    let (w, h, rgb) = screendump(&monitor, &dir.join("gfx.ppm"));
    assert_eq!(mismatches(w, h, &rgb, None), 0, "the gfx pattern ({w}x{h})");
    qemu.command("hline 100 04", "HLINE 100 FILL 04");
    let (w, h, rgb) = screendump(&monitor, &dir.join("hline.ppm"));
    assert_eq!(mismatches(w, h, &rgb, Some(100)), 0, "row 100 red");
    // The comparison sees the change: against the plain pattern, row 100 differs where
    // it was not red already (index ((x >> 4) ^ 12) & 7 is 4 for x >> 4 = 0, 8, 16: 48
    // pixels), at QEMU's scale.
    assert_eq!(
        mismatches(w, h, &rgb, None),
        (320 - 48) * (w / 320) * (h / 200)
    );
    // Full-screen redraws: the last fill covers every pixel, whatever was there before.
    for n in [1, 7, 10, 1000] {
        assert_redraw(&mut qemu, &monitor, &dir, n);
    }
    // Paced: 30 fills at 100 Hz take about 0.3 s (the PIT's ticks; at the BIOS's 18.2 Hz
    // they would take 1.6 s).
    let start = Instant::now();
    qemu.command("redraw 30 100", "REDRAW 30");
    let paced = start.elapsed();
    assert!(
        paced >= Duration::from_millis(250) && paced < Duration::from_millis(1500),
        "30 fills at 100 Hz in {paced:?}"
    );
    let (_, _, rgb) = screendump(&monitor, &dir.join("redraw-paced.ppm"));
    let want = qemuweb_guests::x86_gfx_colour(qemuweb_guests::x86_redraw_index(30));
    assert!(
        rgb.chunks(3).all(|px| px == want),
        "redraw 30 100: every pixel"
    );
    for bad in [
        "redraw 0",
        "redraw 65536",
        "redraw",
        "redraw 5 x",
        "redraw 5 0",
        "redraw 5 1001",
        "redraw 5 60 1",
    ] {
        qemu.command(bad, "ERR bad number");
    }
    qemu.command("text", "TEXT 80x25");
    qemu.command("hline 100 04", "ERR not in graphics mode");
    qemu.command("redraw 3", "ERR not in graphics mode");
    drop(qemu);
    std::fs::remove_dir_all(&dir).unwrap();
}
