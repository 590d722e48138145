//! The aarch64 guest's virtio-gpu display on native `qemu-system-aarch64` (Debian's
//! qemu-system-arm) as the oracle: on `-M virt` with the `linux-aarch64-virt-graphics`
//! profile's devices (virtio-gpu-pci, a virtio-blk-pci disk, an xHCI controller with a USB
//! keyboard and tablet), `gfx`, `hline` and `redraw` go in over the serial port and
//! QEMU's own `screendump` of the virtio-gpu scanout must show `aarch64_gfx_pixel`
//! everywhere (one row changed after `hline`, one colour after `redraw N`). Without a GPU,
//! or before `gfx`, the commands are refused.

mod common;

use common::{assert_redraw, boot_aarch64, screendump, XHCI_TABLET_KEYBOARD};
use qemuweb_guests::{aarch64_gfx_pixel, x86_gfx_colour, AARCH64_GFX_HEIGHT, AARCH64_GFX_WIDTH};

/// Counts the pixels of a 640x480 screendump that differ from the `gfx` pattern, row
/// `row` being all colour `index` when given.
fn mismatches(w: usize, h: usize, rgb: &[u8], row: Option<(u32, u8)>) -> usize {
    assert_eq!(
        (w, h),
        (AARCH64_GFX_WIDTH as usize, AARCH64_GFX_HEIGHT as usize)
    );
    let mut bad = 0;
    for y in 0..h as u32 {
        for x in 0..w as u32 {
            let want = match row {
                Some((r, index)) if r == y => x86_gfx_colour(index),
                _ => aarch64_gfx_pixel(x, y),
            };
            if rgb[(y as usize * w + x as usize) * 3..][..3] != want {
                bad += 1;
            }
        }
    }
    bad
}

#[test]
fn gfx_hline_and_redraw_on_qemu_virtio_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("x86.raw");
    std::fs::write(&disk, qemuweb_guests::x86_bios_disk()).unwrap();
    let drive = format!("file={},format=raw,if=none,id=disk0", disk.display());
    let mut devices = vec![
        "-device",
        "virtio-gpu-pci",
        "-drive",
        &drive,
        "-device",
        "virtio-blk-pci,drive=disk0",
    ];
    devices.extend(XHCI_TABLET_KEYBOARD);
    let (mut qemu, dir) = boot_aarch64("gpu", 512, &devices);
    let monitor = dir.join("mon.sock");
    // Opt-in: before `gfx` the display is not the guest's.
    qemu.command("hline 100 04", "ERR not in graphics mode");
    qemu.command("redraw 3", "ERR not in graphics mode");
    qemu.command("gfx", "GFX 640x480");
    let (w, h, rgb) = screendump(&monitor, &dir.join("gfx.ppm"));
    assert_eq!(mismatches(w, h, &rgb, None), 0, "the gfx pattern ({w}x{h})");
    // The disk still answers beside the GPU.
    qemu.command(
        "read 100",
        &qemuweb_guests::read_reply(100, &qemuweb_guests::x86_initial_sector(100)),
    );
    qemu.command("hline 100 04", "HLINE 100 FILL 04");
    let (w, h, rgb) = screendump(&monitor, &dir.join("hline.ppm"));
    assert_eq!(mismatches(w, h, &rgb, Some((100, 4))), 0, "row 100 red");
    // The comparison sees the change: row 100 (y >> 4 = 6) is red where (x >> 5) ^ 6 is
    // 4, x >> 5 in {2, 10, 18}: 96 pixels were red already.
    assert_eq!(mismatches(w, h, &rgb, None), 640 - 96);
    qemu.command("hline 479 07", "HLINE 479 FILL 07");
    let (w, h, rgb) = screendump(&monitor, &dir.join("hline-last.ppm"));
    assert_eq!(
        mismatches(w, h, &rgb, None),
        (640 - 96) * 2,
        "rows 100 and 479 changed"
    );
    for n in [1, 7, 10, 30] {
        assert_redraw(&mut qemu, &monitor, &dir, n);
    }
    // `gfx` again: the pattern back, without a second setup.
    qemu.command("gfx", "GFX 640x480");
    let (w, h, rgb) = screendump(&monitor, &dir.join("gfx-again.ppm"));
    assert_eq!(mismatches(w, h, &rgb, None), 0, "the gfx pattern again");
    for bad in [
        "hline 480 01",
        "hline 10 08",
        "hline 10",
        "hline x 01",
        "redraw 0",
        "redraw 65536",
        "redraw",
        "redraw 5 x",
        "redraw 99999999999",
    ] {
        qemu.command(bad, "ERR bad number");
    }
    qemu.command("echo still here", "still here");
    drop(qemu);
    std::fs::remove_dir_all(&dir).unwrap();

    // No GPU: refused, the disk-less guest still answering.
    let (mut qemu, dir) = boot_aarch64("nogpu", 512, &[]);
    qemu.command("gfx", "ERR no gpu");
    qemu.command("hline 1 01", "ERR not in graphics mode");
    qemu.command("echo still here", "still here");
    drop(qemu);
    std::fs::remove_dir_all(&dir).unwrap();
}
