//! The aarch64 guest's disk commands on native `qemu-system-aarch64` (Debian's
//! qemu-system-arm) as the oracle: on `-M virt` with the x86 guest's image as a
//! virtio-blk-pci disk (transitional and modern-only), `info`, `read` and `write` answer
//! what [`qemuweb_guests::read_reply`] and [`qemuweb_guests::write_reply`] compute from
//! the image's bytes, the write reaches the image file, and errors are the x86 guest's.

mod common;

use common::{boot_aarch64, Qemu};
use qemuweb_guests::{read_reply, write_reply, x86_bios_disk, X86_DISK_SECTORS};
use std::path::{Path, PathBuf};

/// The guest on `-M virt` with 128 MiB, with `disk` (an image and the `-device` to attach
/// it as) when given; at its first prompt, with its private directory.
fn aarch64(disk: Option<(&Path, &str)>) -> (Qemu, PathBuf) {
    let Some((path, device)) = disk else {
        return boot_aarch64("a64-disk", 128, &[]);
    };
    let drive = format!("id=d0,file={},format=raw,if=none", path.display());
    let device = format!("{device},drive=d0");
    boot_aarch64("a64-disk", 128, &["-drive", &drive, "-device", &device])
}

#[test]
fn the_aarch64_guest_reads_and_writes_a_virtio_blk_pci_disk() {
    let dir = std::env::temp_dir().join(format!("qemuweb-guests-a64-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for device in ["virtio-blk-pci", "virtio-blk-pci,disable-legacy=on"] {
        let path = dir.join("disk.raw");
        let image = x86_bios_disk();
        std::fs::write(&path, &image).unwrap();
        let (mut q, guest_dir) = aarch64(Some((&path, device)));
        q.command("info", &format!("DISK SECTORS {X86_DISK_SECTORS}"));
        for lba in [0u64, 64, 100, X86_DISK_SECTORS - 1] {
            let sector = &image[lba as usize * 512..][..512];
            q.command(&format!("read {lba}"), &read_reply(lba, sector));
        }
        q.command("write 100 A5", &write_reply(100, 0xa5));
        q.command("read 100", &read_reply(100, &[0xa5; 512]));
        q.command("write 10 A5", "ERR protected sector");
        q.command(&format!("read {X86_DISK_SECTORS}"), "ERR bad number");
        q.command("read 99999999999999999999", "ERR bad number");
        q.command("write 70 zz", "ERR bad number");
        q.command("read", "ERR bad number");
        q.command("echo still here", "still here");
        drop(q);
        std::fs::remove_dir_all(guest_dir).unwrap();
        let after = std::fs::read(&path).unwrap();
        assert_eq!(&after[100 * 512..101 * 512], &[0xa5; 512][..], "{device}");
        assert_eq!(&after[..100 * 512], &image[..100 * 512], "{device}");
        assert_eq!(&after[101 * 512..], &image[101 * 512..], "{device}");
    }
    let (mut q, guest_dir) = aarch64(None);
    q.command("info", "ERR no disk");
    q.command("read 64", "ERR no disk");
    drop(q);
    std::fs::remove_dir_all(guest_dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
