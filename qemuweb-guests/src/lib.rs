//! The embedded default guests of QemuWeb: two tiny programs written in this repository,
//! assembled from source by `build.rs`, for tests and the demo.
//!
//! - **x86 BIOS disk** ([`x86_bios_disk`]): a boot sector that loads the rest of its code
//!   with int 13h, prints [`X86_BANNER`] on COM1 and on the VGA text screen, then runs a
//!   command loop on COM1 (see [the protocol](#the-x86-command-loop)).
//! - **aarch64 `virt` kernel** ([`aarch64_virt_kernel`]): an arm64 Linux `Image` for
//!   `-M virt -kernel`, which prints [`AARCH64_BANNER`] on the PL011 UART at
//!   `0x09000000` and runs the same command loop on it (`echo`, `read`, `write`, `info`),
//!   with a virtio-blk-pci disk found on the PCIe bus of `virt`, and on request a
//!   virtio-gpu-pci display (`gfx`, `hline`, `redraw`; see
//!   [the aarch64 guest](#the-aarch64-guest)).
//! - **instruction test guests** ([`x86_insn_disk`], [`aarch64_insn_kernel`]): bare-metal
//!   programs that run instruction tests and print one line per test, to compare QEMU
//!   builds line by line ([`insn_results`], [`insn_mismatches`]).
//!
//! Both are deterministic: the same sources give the same bytes.
//!
//! # The x86 command loop
//!
//! After the banner the guest prints the prompt [`PROMPT`] and reads a line from COM1
//! (115200 8N1; CR or LF ends a line; typed characters are not echoed back). Every reply
//! is one line ending in CR LF, followed by the prompt again.
//!
//! | command | reply |
//! | --- | --- |
//! | `echo TEXT` | `TEXT` |
//! | `read N` | `SECTOR N CRC32 XXXXXXXX` ([`read_reply`]; the checksum is [`crc32`] of the 512 bytes of sector `N`) |
//! | `write N BB` | `WROTE SECTOR N FILL BB` ([`write_reply`]; every byte of sector `N` becomes the hex byte `BB`) |
//! | `info` | `DISK SECTORS N` (the disk size the BIOS reports) |
//! | `gfx` | `GFX 320x200`: VGA mode 13h through int 10h, DAC entries 0-7 programmed and the pattern [`x86_gfx_pixel`] drawn |
//! | `hline Y BB` | `HLINE Y FILL BB`: in graphics mode, row `Y` (0-199) set to colour `BB` |
//! | `text` | `TEXT 80x25`: back to text mode 3, the banner on row 0 again |
//! | `redraw N [HZ]` | `REDRAW N`: in graphics mode, the whole screen filled `N` times (1-65535), fill `k` (from 0) in colour [`x86_redraw_index`]`(k + 1)`, so that every fill changes every pixel (a display benchmark's load); at full speed, or with `HZ` (1-1000) paced: the PIT programmed to tick `HZ` times a second meanwhile (the BIOS's 18.2 Hz again after) and each fill started on a new tick |
//! | `keys [bios]` | `KEYS ON`: keyboard and mouse mode: the text screen cleared to the banner and the cursor hidden; every byte of the PS/2 controller reported as `K XX` (a keyboard byte, scan code set 1) or `M BB XX YY` (a mouse packet: buttons and signs, dx, dy up positive), and, with `keys bios`, `B SS AA` a key read through the BIOS (int 16h: scan code, character; a keyboard the i8042 does not see, such as the USB keyboard SeaBIOS drives on `linux-x86_64-pc-graphics`, where QEMU sends keys to its usb-kbd); what is typed (US layout) shown from row 2 and sent as `LINE TEXT` on Enter; Escape or a byte on the serial port ends it with `KEYS OFF` |
//!
//! `N` is decimal and `BB` two hex digits. Errors are `ERR unknown command`,
//! `ERR bad number`, `ERR protected sector` (a `write` below [`X86_DATA_START_LBA`]),
//! `ERR disk status XX` (the BIOS status) and `ERR not in graphics mode` (`hline` or `redraw`
//! in text mode). Sectors are read and written with the int 13h
//! extensions (AH=42h/43h), so the same image works as an IDE/AHCI, virtio-blk or
//! virtio-scsi disk under SeaBIOS.
//!
//! # The aarch64 guest
//!
//! The same protocol, with a display of its own (below): `echo TEXT`, `read N`, `write N BB` and
//! `info` give the x86 guest's replies (so [`read_reply`] and [`write_reply`] are its
//! oracles too), on the first virtio block device of PCI bus 0 (transitional or
//! modern-only `virtio-blk-pci`): the guest places its BAR 4 at `0x10000000` in the
//! 32-bit window of `virt`'s PCIe host (ECAM at `0x40_1000_0000`), takes the virtio 1.0
//! capabilities and drives one polled split virtqueue. `info` is `DISK SECTORS N` with the
//! device's capacity; errors are `ERR unknown command`, `ERR bad number` (also a sector
//! past the end), `ERR protected sector` (a `write` below [`X86_DATA_START_LBA`]),
//! `ERR disk status XX` (the virtio status byte) and `ERR no disk`.
//!
//! Its display is opt-in, as the x86 guest's graphics mode: nothing touches the first
//! virtio-gpu-pci (`1af4:1050`) of PCI bus 0 before `gfx`. Then the guest places its BAR 4
//! at `0x10100000`, brings it up as a virtio 1.0 device (one polled control queue), prints
//! `GPU SCANOUT WxH` (the host's preferred size of scanout 0, from GET_DISPLAY_INFO) once,
//! creates a [`AARCH64_GFX_WIDTH`] x [`AARCH64_GFX_HEIGHT`] B8G8R8X8 resource backed by a
//! framebuffer in guest RAM at `0x41000000` and sets it as scanout 0. Every drawing is sent
//! with TRANSFER_TO_HOST_2D and RESOURCE_FLUSH of the rectangle it changed.
//!
//! | command | reply |
//! | --- | --- |
//! | `gfx` | `GFX 640x480`: the pattern [`aarch64_gfx_pixel`] drawn and sent whole |
//! | `hline Y BB` | `HLINE Y FILL BB`: row `Y` (0-479) set to colour `BB` (`00`-`07`, [`x86_gfx_colour`]), only that row sent (a dirty rectangle) |
//! | `redraw N` | `REDRAW N`: the whole screen filled `N` times (1-65535), fill `k` (from 0) in colour [`x86_redraw_index`]`(k + 1)`, each sent and flushed whole |
//!
//! Errors: `ERR no gpu`, `ERR gpu init` (feature or queue negotiation failed),
//! `ERR gpu CCCC RRRR` (command `CCCC` answered with `RRRR`, `0000` when the device never
//! answered; every wait is bounded), `ERR not in graphics mode` (`hline` or `redraw` before
//! `gfx`) and `ERR bad number`.
//!
//! # Disk layout
//!
//! | sectors | contents |
//! | --- | --- |
//! | `0` | boot sector |
//! | `1..16` | the rest of the guest's code ([`X86_CODE_SECTORS`] in all) |
//! | `16..64` | zero, reserved |
//! | `64..8192` | data region, each sector filled by [`x86_initial_sector`] |
//!
//! ```
//! let disk = qemuweb_guests::x86_bios_disk();
//! assert_eq!(disk.len() as u64, qemuweb_guests::X86_DISK_SECTORS * 512);
//! assert_eq!(&disk[510..512], &[0x55, 0xaa]);
//! let sector = &disk[100 * 512..101 * 512];
//! assert_eq!(sector, qemuweb_guests::x86_initial_sector(100));
//! ```
#![warn(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

mod insn;
pub use insn::{
    aarch64_insn_kernel, aarch64_insn_qemu_args, insn_crc32, insn_mismatches, insn_results,
    run_insn_guest, x86_insn_disk, x86_insn_qemu_args, InsnLogError, AARCH64_INSN_BANNER,
    INSN_DONE, X86_INSN_BANNER, X86_INSN_SECTORS,
};

static X86_CODE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/x86-bios.bin"));
static AARCH64_IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/aarch64-virt.img"));

/// The banner the x86 guest prints on COM1 and on the VGA text screen.
pub const X86_BANNER: &str = "QEMUWEB-GUEST x86 v1";
/// The banner the aarch64 guest prints on the PL011 UART.
pub const AARCH64_BANNER: &str = "QEMUWEB-GUEST aarch64 v1";
/// The prompt both guests print before reading a command line.
pub const PROMPT: &str = "> ";
/// Bytes in one disk sector.
pub const SECTOR_SIZE: usize = 512;
/// Sectors holding the x86 guest's code: the boot sector and the code it loads.
pub const X86_CODE_SECTORS: u64 = 16;
/// First sector the x86 guest's `write` command may change.
pub const X86_DATA_START_LBA: u64 = 64;
/// Sectors in the disk image made by [`x86_bios_disk`] (4 MiB).
pub const X86_DISK_SECTORS: u64 = 8192;
// The guest's code must stay out of the sectors `write` may change.
const _: () = assert!(X86_CODE_SECTORS <= X86_DATA_START_LBA);

/// Width of the x86 guest's graphics screen (`gfx`: VGA mode 13h).
pub const X86_GFX_WIDTH: u32 = 320;
/// Height of the x86 guest's graphics screen.
pub const X86_GFX_HEIGHT: u32 = 200;

/// The colour (R, G, B) of DAC entry `index` (0-7) after the x86 guest's `gfx`: red is
/// bit 2, green bit 1, blue bit 0, each fully on (6-bit 63, shown as 255) or off.
///
/// ```
/// assert_eq!(qemuweb_guests::x86_gfx_colour(6), [255, 255, 0]);
/// ```
pub fn x86_gfx_colour(index: u8) -> [u8; 3] {
    let on = |bit: u8| if index & bit != 0 { 255 } else { 0 };
    [on(4), on(2), on(1)]
}

/// The colour index the x86 guest's `gfx` draws at (`x`, `y`) of its 320x200 screen:
/// `((x >> 4) ^ (y >> 3)) & 7`, blocks 16 pixels wide and 8 tall.
///
/// ```
/// assert_eq!(qemuweb_guests::x86_gfx_index(0, 0), 0);
/// assert_eq!(qemuweb_guests::x86_gfx_index(16, 0), 1);
/// assert_eq!(qemuweb_guests::x86_gfx_index(16, 8), 0);
/// ```
pub fn x86_gfx_index(x: u32, y: u32) -> u8 {
    (((x >> 4) ^ (y >> 3)) & 7) as u8
}

/// The colour the x86 guest's `gfx` shows at (`x`, `y`): [`x86_gfx_colour`] of
/// [`x86_gfx_index`].
pub fn x86_gfx_pixel(x: u32, y: u32) -> [u8; 3] {
    x86_gfx_colour(x86_gfx_index(x, y))
}

/// The colour index of the whole screen after the x86 guest's `redraw N` (`n` >= 1):
/// `1 + (n - 1) % 7`, the fills cycling through indices 1 to 7 so that no two in a row
/// are equal and none is black.
///
/// ```
/// assert_eq!(qemuweb_guests::x86_redraw_index(1), 1);
/// assert_eq!(qemuweb_guests::x86_redraw_index(7), 7);
/// assert_eq!(qemuweb_guests::x86_redraw_index(8), 1);
/// ```
pub fn x86_redraw_index(n: u32) -> u8 {
    (1 + n.saturating_sub(1) % 7) as u8
}

/// Width of the aarch64 guest's screen (`gfx`: its virtio-gpu resource).
pub const AARCH64_GFX_WIDTH: u32 = 640;
/// Height of the aarch64 guest's screen.
pub const AARCH64_GFX_HEIGHT: u32 = 480;

/// The colour index the aarch64 guest's `gfx` draws at (`x`, `y`) of its 640x480 screen:
/// `((x >> 5) ^ (y >> 4)) & 7`, blocks 32 pixels wide and 16 tall (the x86 pattern at
/// twice its size); the colours are [`x86_gfx_colour`]'s.
///
/// ```
/// assert_eq!(qemuweb_guests::aarch64_gfx_index(0, 0), 0);
/// assert_eq!(qemuweb_guests::aarch64_gfx_index(32, 0), 1);
/// assert_eq!(qemuweb_guests::aarch64_gfx_index(32, 16), 0);
/// ```
pub fn aarch64_gfx_index(x: u32, y: u32) -> u8 {
    (((x >> 5) ^ (y >> 4)) & 7) as u8
}

/// The colour the aarch64 guest's `gfx` shows at (`x`, `y`): [`x86_gfx_colour`] of
/// [`aarch64_gfx_index`].
pub fn aarch64_gfx_pixel(x: u32, y: u32) -> [u8; 3] {
    x86_gfx_colour(aarch64_gfx_index(x, y))
}

/// The guest physical address the aarch64 image runs at on `virt` (RAM base + `text_offset`).
pub const AARCH64_LOAD_ADDRESS: u64 = 0x4008_0000;

/// The x86 guest's code as assembled: the boot sector followed by the code it loads,
/// [`X86_CODE_SECTORS`] sectors in all.
///
/// ```
/// let code = qemuweb_guests::x86_boot_code();
/// assert_eq!(code.len() as u64, qemuweb_guests::X86_CODE_SECTORS * 512);
/// ```
pub fn x86_boot_code() -> &'static [u8] {
    X86_CODE
}

/// The initial contents of sector `lba` of the image made by [`x86_bios_disk`].
///
/// Code sectors hold the code, reserved sectors are zero, and a data sector holds its LBA
/// as a little-endian `u64` followed by the bytes `(i + 31 * lba) mod 256` for offsets
/// `i` from 8 to 511, so every data sector has its own checksum.
///
/// # Panics
///
/// If `lba` is not below [`X86_DISK_SECTORS`].
pub fn x86_initial_sector(lba: u64) -> [u8; SECTOR_SIZE] {
    assert!(
        lba < X86_DISK_SECTORS,
        "sector {lba} is outside the guest disk"
    );
    let mut sector = [0u8; SECTOR_SIZE];
    if lba < X86_CODE_SECTORS {
        let start = lba as usize * SECTOR_SIZE;
        sector.copy_from_slice(&X86_CODE[start..start + SECTOR_SIZE]);
    } else if lba >= X86_DATA_START_LBA {
        sector[..8].copy_from_slice(&lba.to_le_bytes());
        for (i, byte) in sector.iter_mut().enumerate().skip(8) {
            *byte = (i as u64 + 31 * lba) as u8;
        }
    }
    sector
}

/// The x86 guest as a raw BIOS-bootable disk image of [`X86_DISK_SECTORS`] sectors.
pub fn x86_bios_disk() -> Vec<u8> {
    let mut disk = Vec::with_capacity(X86_DISK_SECTORS as usize * SECTOR_SIZE);
    for lba in 0..X86_DISK_SECTORS {
        disk.extend_from_slice(&x86_initial_sector(lba));
    }
    disk
}

/// The aarch64 guest: a raw arm64 Linux `Image` (header magic `ARM\x64`, `text_offset`
/// `0x80000`) for `qemu-system-aarch64 -M virt -kernel`, which loads it at
/// [`AARCH64_LOAD_ADDRESS`].
///
/// ```
/// let image = qemuweb_guests::aarch64_virt_kernel();
/// assert_eq!(&image[0x38..0x3c], b"ARM\x64");
/// ```
pub fn aarch64_virt_kernel() -> &'static [u8] {
    AARCH64_IMAGE
}

/// CRC-32/ISO-HDLC (the CRC of zlib, PNG and Ethernet: reflected polynomial
/// `0xEDB88320`, initial value and final xor `0xFFFFFFFF`), the checksum the x86
/// guest's `read` command prints.
///
/// ```
/// assert_eq!(qemuweb_guests::crc32(b"123456789"), 0xCBF4_3926);
/// ```
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// The x86 guest's reply to `read lba` when the sector holds `sector`.
///
/// ```
/// assert_eq!(qemuweb_guests::read_reply(64, &[0; 512]), "SECTOR 64 CRC32 B2AA7578");
/// ```
pub fn read_reply(lba: u64, sector: &[u8]) -> String {
    format!("SECTOR {lba} CRC32 {:08X}", crc32(sector))
}

/// The x86 guest's reply to `write lba byte`.
///
/// ```
/// assert_eq!(qemuweb_guests::write_reply(100, 0xa5), "WROTE SECTOR 100 FILL A5");
/// ```
pub fn write_reply(lba: u64, byte: u8) -> String {
    format!("WROTE SECTOR {lba} FILL {byte:02X}")
}

/// Where [`write_guest_images`] put the guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImagePaths {
    /// The x86 BIOS disk, raw.
    pub x86_raw: PathBuf,
    /// The x86 BIOS disk converted to qcow2 by `qemu-img convert`.
    pub x86_qcow2: PathBuf,
    /// The aarch64 `virt` kernel image.
    pub aarch64_kernel: PathBuf,
    /// The x86_64 instruction test disk ([`x86_insn_disk`]), raw.
    pub x86_insn: PathBuf,
    /// The aarch64 instruction test kernel ([`aarch64_insn_kernel`]).
    pub aarch64_insn: PathBuf,
}

/// Writes the guests into `dir` (created if missing) as `x86-bios.raw`,
/// `x86-bios.qcow2` and `aarch64-virt.img`, and the instruction test guests as
/// `x86-insn.img` and `aarch64-insn.img`.
///
/// The qcow2 form is made with `qemu-img convert -f raw -O qcow2` (Debian package
/// `qemu-utils`); `qemu_img` names the program, `None` meaning `qemu-img` on `PATH`.
///
/// # Errors
///
/// Any I/O error, or `qemu-img` missing or failing (with its output in the message).
pub fn write_guest_images(dir: &Path, qemu_img: Option<&Path>) -> io::Result<GuestImagePaths> {
    std::fs::create_dir_all(dir)?;
    let paths = GuestImagePaths {
        x86_raw: dir.join("x86-bios.raw"),
        x86_qcow2: dir.join("x86-bios.qcow2"),
        aarch64_kernel: dir.join("aarch64-virt.img"),
        x86_insn: dir.join("x86-insn.img"),
        aarch64_insn: dir.join("aarch64-insn.img"),
    };
    std::fs::write(&paths.x86_raw, x86_bios_disk())?;
    std::fs::write(&paths.aarch64_kernel, aarch64_virt_kernel())?;
    std::fs::write(&paths.x86_insn, x86_insn_disk())?;
    std::fs::write(&paths.aarch64_insn, aarch64_insn_kernel())?;
    convert_to_qcow2(&paths.x86_raw, &paths.x86_qcow2, qemu_img)?;
    Ok(paths)
}

/// Converts the raw image `raw` to the qcow2 image `qcow2` with `qemu-img convert`.
///
/// # Errors
///
/// `qemu-img` missing (`NotFound`, naming the package) or failing (its stderr).
pub fn convert_to_qcow2(raw: &Path, qcow2: &Path, qemu_img: Option<&Path>) -> io::Result<()> {
    let program = qemu_img.unwrap_or(Path::new("qemu-img"));
    let output = Command::new(program)
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(qcow2)
        .output()
        .map_err(|err| {
            io::Error::new(
                err.kind(),
                format!(
                    "could not run {} (Debian package qemu-utils): {err}",
                    program.display()
                ),
            )
        })?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{} convert failed ({}): {}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_code_is_a_boot_sector_that_fits() {
        let code = x86_boot_code();
        assert_eq!(code.len(), X86_CODE_SECTORS as usize * SECTOR_SIZE);
        assert_eq!(&code[510..512], &[0x55, 0xaa]);
        let text = String::from_utf8_lossy(code);
        assert!(text.contains(X86_BANNER));
    }

    #[test]
    fn data_sectors_differ_and_code_is_kept() {
        let disk = x86_bios_disk();
        assert_eq!(&disk[..code_len()], x86_boot_code());
        assert!(disk[code_len()..X86_DATA_START_LBA as usize * SECTOR_SIZE]
            .iter()
            .all(|&b| b == 0));
        let a = x86_initial_sector(64);
        let b = x86_initial_sector(65);
        assert_ne!(crc32(&a), crc32(&b));
        assert_eq!(&a[..8], &64u64.to_le_bytes());
        assert_eq!(a[8], (8 + 31 * 64) as u8);
    }

    fn code_len() -> usize {
        X86_CODE_SECTORS as usize * SECTOR_SIZE
    }

    #[test]
    #[should_panic(expected = "outside the guest disk")]
    fn sector_outside_disk_panics() {
        x86_initial_sector(X86_DISK_SECTORS);
    }

    #[test]
    fn aarch64_image_header() {
        let image = aarch64_virt_kernel();
        assert_eq!(&image[0x38..0x3c], b"ARM\x64");
        let text_offset = u64::from_le_bytes(image[8..16].try_into().unwrap());
        assert_eq!(text_offset, AARCH64_LOAD_ADDRESS - 0x4000_0000);
        let size = u64::from_le_bytes(image[16..24].try_into().unwrap());
        assert_eq!(size as usize, image.len());
        assert!(String::from_utf8_lossy(image).contains(AARCH64_BANNER));
    }

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(&[0u8; 512]), 0xB2AA_7578);
    }

    #[test]
    fn replies() {
        assert_eq!(read_reply(7, b"123456789"), "SECTOR 7 CRC32 CBF43926");
        assert_eq!(write_reply(64, 0x0f), "WROTE SECTOR 64 FILL 0F");
    }
}
