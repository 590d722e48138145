//! The x86 guest's `keys` mode on real hardware emulation: native `qemu-system-i386`
//! boots the guest, its monitor's `sendkey`, `mouse_move` and `mouse_button` drive
//! QEMU's PS/2 keyboard and mouse, and the guest must report every scan code and mouse
//! packet on its serial port, the typed line on Enter, and show the text on its VGA
//! screen (checked in QEMU's own screendump).
//! On `qemu-system-x86_64` with the devices of the `linux-x86_64-pc-graphics` profile (q35,
//! an xHCI controller with a USB keyboard and tablet), QEMU sends keys to the USB keyboard:
//! in `keys bios` the guest reads them from the BIOS (SeaBIOS drives the keyboard) and
//! reports `B SS AA`; the pointer stays QEMU's PS/2 mouse until a guest driver uses the
//! tablet.

mod common;

use common::{screendump, XHCI_TABLET_KEYBOARD};

/// The colour of the grey text `keys` types (VGA attribute 7 through QEMU's DAC).
const GREY: [u8; 3] = [0xa8, 0xa8, 0xa8];

/// How many pixels of the 9x16 cell (`row`, `col`) of a 720x400 dump have colour `rgb`.
fn cell_pixels(w: usize, dump: &[u8], row: usize, col: usize, rgb: [u8; 3]) -> usize {
    let mut n = 0;
    for y in row * 16..row * 16 + 16 {
        for x in col * 9..col * 9 + 9 {
            if dump[(y * w + x) * 3..][..3] == rgb {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn keys_and_mouse_reach_the_guest_on_qemu_ps2() {
    let (mut qemu, dir) = common::boot("keys");
    let monitor = dir.join("mon.sock");
    qemu.command_no_prompt("keys", "KEYS ON");

    qemu.monitor("sendkey h");
    qemu.until("K 23\r\n");
    qemu.until("K A3\r\n");
    // Shift down, i down, then released in reverse order.
    qemu.monitor("sendkey shift-i");
    qemu.until("K 2A\r\nK 17\r\nK 97\r\nK AA\r\n");
    // An extended key: 0xE0 prefixes, and nothing is typed.
    qemu.monitor("sendkey right");
    qemu.until("K E0\r\nK 4D\r\nK E0\r\nK CD\r\n");
    qemu.monitor("sendkey ret");
    qemu.until("LINE hI\r\n");

    // PS/2 packets: bit 3 always set, dy up positive.
    qemu.monitor("mouse_move 10 -5");
    qemu.until("M 08 0A 05\r\n");
    qemu.monitor("mouse_move -3 2");
    qemu.until("M 38 FD FE\r\n");
    qemu.monitor("mouse_button 1");
    qemu.until("M 09 00 00\r\n");
    qemu.monitor("mouse_button 0");
    qemu.until("M 08 00 00\r\n");

    // The typed line stays on row 2; row 3 is where the next one goes.
    let (w, h, rgb) = screendump(&monitor, &dir.join("keys.ppm"));
    assert_eq!((w, h), (720, 400), "mode 3 in 9-pixel cells");
    for col in 0..2 {
        let lit = cell_pixels(w, &rgb, 2, col, GREY);
        assert!(
            (10..=60).contains(&lit),
            "cell {col} of row 2: {lit} grey pixels"
        );
    }
    for col in 2..80 {
        assert_eq!(cell_pixels(w, &rgb, 2, col, GREY), 0, "cell {col} of row 2");
    }
    // The rest of the screen was cleared: only the banner (row 0) and the line remain.
    for row in [1, 3, 10, 24] {
        for col in 0..80 {
            assert_eq!(cell_pixels(w, &rgb, row, col, [0, 0, 0]), 144, "row {row}");
        }
    }

    qemu.monitor("sendkey esc");
    qemu.until("KEYS OFF\r\n");
    qemu.until("> ");
    qemu.command("echo still here", "still here");
    qemu.command("keys usb", "ERR bad number");
    drop(qemu);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keys_from_a_usb_keyboard_through_the_bios_on_q35() {
    let (mut qemu, dir) = common::boot_on(
        "keys-usb",
        "qemu-system-x86_64",
        &[
            &["-machine", "q35", "-vga", "std"][..],
            &XHCI_TABLET_KEYBOARD,
        ]
        .concat(),
    );
    let monitor = dir.join("mon.sock");
    qemu.command_no_prompt("keys bios", "KEYS ON");
    // Scan code and character as int 16h gives them: Shift makes a capital.
    qemu.monitor("sendkey shift-h");
    qemu.until("B 23 48\r\n");
    qemu.monitor("sendkey i");
    qemu.until("B 17 69\r\n");
    qemu.monitor("sendkey x");
    qemu.until("B 2D 78\r\n");
    qemu.monitor("sendkey backspace");
    qemu.until("B 0E 08\r\n");
    qemu.monitor("sendkey ret");
    qemu.until("B 1C 0D\r\nLINE Hi\r\n");
    // The pointer: PS/2 packets (the tablet is not in use).
    qemu.monitor("mouse_move 10 -5");
    qemu.until("M 08 0A 05\r\n");
    qemu.monitor("mouse_button 1");
    qemu.until("M 09 00 00\r\n");
    qemu.monitor("mouse_button 0");
    qemu.until("M 08 00 00\r\n");
    let (w, h, rgb) = screendump(&monitor, &dir.join("keys-usb.ppm"));
    assert_eq!((w, h), (720, 400));
    for col in 0..2 {
        let lit = cell_pixels(w, &rgb, 2, col, GREY);
        assert!(
            (10..=60).contains(&lit),
            "cell {col} of row 2: {lit} grey pixels"
        );
    }
    for col in 2..80 {
        assert_eq!(cell_pixels(w, &rgb, 2, col, GREY), 0, "cell {col} of row 2");
    }
    qemu.monitor("sendkey esc");
    qemu.until("B 01 1B\r\nKEYS OFF\r\n");
    qemu.until("> ");
    qemu.command("echo still here", "still here");
    drop(qemu);
    std::fs::remove_dir_all(&dir).unwrap();
}
