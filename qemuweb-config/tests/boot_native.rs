//! Boots the test guests in real QEMU with the arguments `build_qemu_args` makes for the
//! native target, and for the browser target with its mount and firmware directories
//! pointed at real ones.
//!
//! Most tests ask for TCG explicitly, which boots these tiny guests in a fraction of a
//! second; `auto_accelerator_*` use `Accelerator::Auto` on the detected host, which picks
//! KVM wherever `/dev/kvm` is usable (even a slow nested one) and TCG otherwise.
//!
//! Needs `qemu-system-x86`, `qemu-system-arm`, `qemu-utils` and `seabios` (Debian).

#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{read_sector, write_x86_qcow2, write_x86_raw, Qemu, TempDir};
use qemuweb_config::*;
use qemuweb_guests::{
    read_reply, write_reply, x86_initial_sector, AARCH64_BANNER, X86_BANNER, X86_DISK_SECTORS,
};

/// The detected host with TCG.
fn native() -> Target {
    Target::Native(NativeTarget::new(Accelerator::Tcg, HostCaps::detect()))
}

fn disk(path: &std::path::Path, format: DiskFormat) -> VmInputs {
    VmInputs {
        disk: Some(DiskInput::new(
            ImageSource::file(path.to_str().unwrap()),
            format,
        )),
        ..VmInputs::default()
    }
}

/// Builds the arguments, checks the accelerator choice, starts QEMU.
fn start(
    profile_id: &str,
    inputs: &VmInputs,
    overrides: Option<&VmOverrides>,
    target: &Target,
) -> Qemu {
    let profile = profile_by_id(profile_id).unwrap();
    let result = build_qemu_args(&profile, inputs, overrides, target);
    assert!(result.is_ok(), "{:?}", result.errors);
    if let Target::Native(n) = target {
        let accel = n.resolve_accelerator(profile.arch).unwrap();
        assert!(result
            .args
            .windows(2)
            .any(|w| w == ["-accel", accel.as_str()]));
        let software_warning = result
            .warning_codes()
            .contains(&IssueCode::SoftwareEmulation);
        assert_eq!(
            software_warning,
            n.accelerator == Accelerator::Auto && accel == Accelerator::Tcg
        );
        if n.accelerator == Accelerator::Auto && n.host.os == HostOs::Linux {
            let kvm_here = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
            let expected = if kvm_here && profile.arch != Arch::Aarch64 {
                Accelerator::Kvm
            } else {
                Accelerator::Tcg
            };
            assert_eq!(accel, expected);
        }
    }
    Qemu::spawn(&result)
}

fn boot_x86_echo(profile_id: &str, format: DiskFormat) {
    let dir = TempDir::new(profile_id);
    let path = dir.join(&format!("disk.{}", format.as_str()));
    match format {
        DiskFormat::Raw => write_x86_raw(&path),
        DiskFormat::Qcow2 => write_x86_qcow2(&path),
    }
    let mut vm = start(profile_id, &disk(&path, format), None, &native());
    vm.expect_banner(X86_BANNER);
    assert_eq!(
        vm.command(&format!("echo hello from {profile_id}")),
        format!("hello from {profile_id}")
    );
    assert_eq!(
        vm.command("info"),
        format!("DISK SECTORS {X86_DISK_SECTORS}")
    );
}

fn boot_aarch64_echo(profile_id: &str) {
    let dir = TempDir::new(profile_id);
    let kernel = dir.join("aarch64-virt.img");
    std::fs::write(&kernel, qemuweb_guests::aarch64_virt_kernel()).unwrap();
    let initrd = dir.join("initrd");
    std::fs::write(&initrd, b"not a real initrd: the guest ignores it").unwrap();
    let data = dir.join("data.raw");
    write_x86_raw(&data);
    // Kernel, initrd, command line and a virtio disk: QEMU must accept them all; the
    // guest only talks on its UART.
    let inputs = VmInputs {
        kernel: Some(ImageSource::file(kernel.to_str().unwrap())),
        initrd: Some(ImageSource::file(initrd.to_str().unwrap())),
        kernel_cmdline: Some("console=ttyAMA0".into()),
        disk: Some(DiskInput::new(
            ImageSource::file(data.to_str().unwrap()),
            DiskFormat::Raw,
        )),
        ..VmInputs::default()
    };
    let mut vm = start(profile_id, &inputs, None, &native());
    vm.expect_banner(AARCH64_BANNER);
    assert_eq!(vm.command("echo hello aarch64"), "hello aarch64");
    assert_eq!(vm.command("bogus"), "ERR unknown command");
}

#[test]
fn x86_64_pc_nographic_boots_and_echoes() {
    boot_x86_echo(LINUX_X86_64_PC_NOGRAPHIC, DiskFormat::Raw);
}

#[test]
fn x86_64_pc_graphics_boots_and_echoes() {
    boot_x86_echo(LINUX_X86_64_PC_GRAPHICS, DiskFormat::Qcow2);
}

/// Reads the first `chars` characters of the VGA text screen through a QEMU monitor
/// on a unix socket (`xp` on B800:0000: character in the low byte, attribute in the high).
fn vga_text(monitor: &std::path::Path, chars: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let stream = UnixStream::connect(monitor).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    writeln!(writer, "xp /{chars}hx 0xb8000").unwrap();
    let mut reader = BufReader::new(stream);
    let mut text = String::new();
    let mut line = String::new();
    while text.chars().count() < chars {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "monitor closed");
        // "00000000000b8000: 0x1f51 0x1f45 ..."
        let Some((addr, words)) = line.trim().split_once(": ") else {
            continue;
        };
        if !addr.ends_with(|c: char| c.is_ascii_hexdigit()) || addr.contains(' ') {
            continue;
        }
        for word in words.split_whitespace() {
            let cell = u16::from_str_radix(word.trim_start_matches("0x"), 16).unwrap();
            text.push(char::from((cell & 0xff) as u8));
        }
    }
    text
}

fn vga_banner(profile_id: &str) {
    let dir = TempDir::new(&format!("vga-{profile_id}"));
    let path = dir.join("disk.raw");
    write_x86_raw(&path);
    let monitor = dir.join("monitor.sock");
    let overrides = VmOverrides {
        extra_args: vec![
            "-monitor".into(),
            format!("unix:{},server=on,wait=off", monitor.display()),
        ],
        ..VmOverrides::default()
    };
    let mut vm = start(
        profile_id,
        &disk(&path, DiskFormat::Raw),
        Some(&overrides),
        &native(),
    );
    vm.expect_banner(X86_BANNER);
    assert_eq!(vga_text(&monitor, X86_BANNER.len()), X86_BANNER);
}

#[test]
fn x86_64_graphics_banner_on_vga() {
    vga_banner(LINUX_X86_64_PC_GRAPHICS);
}

#[test]
fn i386_graphics_banner_on_vga() {
    vga_banner(LINUX_I386_PC_GRAPHICS);
}

#[test]
fn minimal_x86_64_boots_and_echoes() {
    boot_x86_echo(MINIMAL_X86_64, DiskFormat::Raw);
}

#[test]
fn i386_pc_nographic_boots_and_echoes() {
    boot_x86_echo(LINUX_I386_PC_NOGRAPHIC, DiskFormat::Qcow2);
}

#[test]
fn i386_pc_graphics_boots_and_echoes() {
    boot_x86_echo(LINUX_I386_PC_GRAPHICS, DiskFormat::Raw);
}

#[test]
fn aarch64_virt_nographic_boots_and_echoes() {
    boot_aarch64_echo(LINUX_AARCH64_VIRT_NOGRAPHIC);
}

#[test]
fn aarch64_two_vcpus() {
    let dir = TempDir::new("aarch64-smp");
    let kernel = dir.join("aarch64-virt.img");
    std::fs::write(&kernel, qemuweb_guests::aarch64_virt_kernel()).unwrap();
    let inputs = VmInputs {
        kernel: Some(ImageSource::file(kernel.to_str().unwrap())),
        ..VmInputs::default()
    };
    let overrides = VmOverrides {
        smp: Some(2),
        ..VmOverrides::default()
    };
    let mut vm = start(
        LINUX_AARCH64_VIRT_NOGRAPHIC,
        &inputs,
        Some(&overrides),
        &native(),
    );
    vm.expect_banner(AARCH64_BANNER);
    assert_eq!(vm.command("echo two cpus"), "two cpus");
}

#[test]
fn aarch64_virt_graphics_boots_and_echoes() {
    boot_aarch64_echo(LINUX_AARCH64_VIRT_GRAPHICS);
}

/// read / write / protected sector against one disk; returns after a clean shutdown.
fn sector_commands(profile_id: &str, format: DiskFormat, overrides: Option<&VmOverrides>) {
    let dir = TempDir::new(&format!("sectors-{profile_id}-{}", format.as_str()));
    let path = dir.join(&format!("disk.{}", format.as_str()));
    match format {
        DiskFormat::Raw => write_x86_raw(&path),
        DiskFormat::Qcow2 => write_x86_qcow2(&path),
    }
    let mut vm = start(profile_id, &disk(&path, format), overrides, &native());
    vm.expect_banner(X86_BANNER);
    assert_eq!(vm.command("read 0"), read_reply(0, &x86_initial_sector(0)));
    assert_eq!(
        vm.command("read 100"),
        read_reply(100, &x86_initial_sector(100))
    );
    assert_eq!(vm.command("write 100 a5"), write_reply(100, 0xa5));
    assert_eq!(vm.command("read 100"), read_reply(100, &[0xa5; 512]));
    assert_eq!(vm.command("write 8191 3C"), write_reply(8191, 0x3c));
    assert_eq!(vm.command("write 63 11"), "ERR protected sector");
    assert_eq!(vm.command("write 100"), "ERR bad number");
    assert_eq!(vm.command("read"), "ERR bad number");
    assert_eq!(vm.command("frobnicate"), "ERR unknown command");
    let beyond = vm.command(&format!("read {}", X86_DISK_SECTORS + 10));
    assert!(beyond.starts_with("ERR disk status "), "{beyond}");
    vm.shutdown();

    let fmt = format.as_str();
    assert_eq!(read_sector(&path, fmt, 100), vec![0xa5; 512]);
    assert_eq!(read_sector(&path, fmt, 8191), vec![0x3c; 512]);
    assert_eq!(
        read_sector(&path, fmt, 101),
        x86_initial_sector(101).to_vec()
    );
    assert_eq!(read_sector(&path, fmt, 63), x86_initial_sector(63).to_vec());
    assert_eq!(read_sector(&path, fmt, 0), x86_initial_sector(0).to_vec());
}

#[test]
fn sectors_raw_virtio_blk() {
    sector_commands(LINUX_X86_64_PC_NOGRAPHIC, DiskFormat::Raw, None);
}

#[test]
fn sectors_qcow2_ide() {
    sector_commands(LINUX_I386_PC_NOGRAPHIC, DiskFormat::Qcow2, None);
}

/// [`sector_commands`] on a qcow2 disk attached through `iface`.
fn sectors_qcow2_on(profile_id: &str, iface: DiskInterface) {
    let overrides = VmOverrides {
        disk_interface: Some(iface),
        ..VmOverrides::default()
    };
    sector_commands(profile_id, DiskFormat::Qcow2, Some(&overrides));
}

#[test]
fn sectors_qcow2_virtio_scsi_pci() {
    sectors_qcow2_on(LINUX_X86_64_PC_NOGRAPHIC, DiskInterface::Scsi);
}

/// SCSI over virtio-mmio, booted by SeaBIOS, whose wait for the disk is far shorter on
/// `microvm` than it says (its timer is not calibrated there): with the transport's
/// ioeventfd on, about one boot in four found no boot disk on a loaded host; the builder
/// turns it off for this case.
#[test]
fn sectors_qcow2_virtio_scsi_microvm() {
    sectors_qcow2_on(MINIMAL_X86_64, DiskInterface::Scsi);
}

#[test]
fn sectors_qcow2_ide_on_q35() {
    sectors_qcow2_on(LINUX_X86_64_PC_NOGRAPHIC, DiskInterface::Ide);
}

#[test]
fn overlay_takes_writes_and_base_stays() {
    let dir = TempDir::new("overlay");
    let base = dir.join("base.raw");
    let overlay = dir.join("overlay.qcow2");
    write_x86_raw(&base);
    let status = std::process::Command::new("qemu-img")
        .args(overlay_create_args(
            base.to_str().unwrap(),
            DiskFormat::Raw,
            overlay.to_str().unwrap(),
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let mut target = NativeTarget::new(Accelerator::Tcg, HostCaps::detect());
    target.disk_overlay = Some(overlay.to_str().unwrap().to_string());
    let inputs = disk(&base, DiskFormat::Raw);
    let mut vm = start(
        LINUX_I386_PC_NOGRAPHIC,
        &inputs,
        None,
        &Target::Native(target),
    );
    vm.expect_banner(X86_BANNER);
    assert_eq!(vm.command("write 200 5a"), write_reply(200, 0x5a));
    assert_eq!(vm.command("read 200"), read_reply(200, &[0x5a; 512]));
    vm.shutdown();
    assert_eq!(
        read_sector(&base, "raw", 200),
        x86_initial_sector(200).to_vec()
    );
    assert_eq!(read_sector(&overlay, "qcow2", 200), vec![0x5a; 512]);
    assert_eq!(
        read_sector(&overlay, "qcow2", 201),
        x86_initial_sector(201).to_vec()
    );
}

#[test]
fn read_only_virtio_disk_refuses_writes() {
    let dir = TempDir::new("readonly-virtio");
    let path = dir.join("disk.raw");
    write_x86_raw(&path);
    let mut inputs = disk(&path, DiskFormat::Raw);
    inputs.disk = inputs.disk.map(DiskInput::read_only);
    let mut vm = start(MINIMAL_X86_64, &inputs, None, &native());
    vm.expect_banner(X86_BANNER);
    let reply = vm.command("write 100 a5");
    assert!(reply.starts_with("ERR disk status "), "{reply}");
    assert_eq!(
        vm.command("read 100"),
        read_reply(100, &x86_initial_sector(100))
    );
    vm.shutdown();
    assert_eq!(
        read_sector(&path, "raw", 100),
        x86_initial_sector(100).to_vec()
    );
}

#[test]
fn read_only_ide_disk_discards_writes() {
    let dir = TempDir::new("readonly-ide");
    let path = dir.join("disk.qcow2");
    write_x86_qcow2(&path);
    let mut inputs = disk(&path, DiskFormat::Qcow2);
    inputs.disk = inputs.disk.map(DiskInput::read_only);
    let profile = profile_by_id(LINUX_I386_PC_NOGRAPHIC).unwrap();
    let result = build_qemu_args(&profile, &inputs, None, &native());
    assert!(result
        .warning_codes()
        .contains(&IssueCode::ReadOnlyIdeSnapshot));
    let mut vm = Qemu::spawn(&result);
    vm.expect_banner(X86_BANNER);
    assert_eq!(vm.command("write 100 a5"), write_reply(100, 0xa5));
    assert_eq!(vm.command("read 100"), read_reply(100, &[0xa5; 512]));
    vm.shutdown();
    assert_eq!(
        read_sector(&path, "qcow2", 100),
        x86_initial_sector(100).to_vec()
    );
}

#[test]
fn additional_disks_are_attached_and_boot_disk_comes_first() {
    let dir = TempDir::new("two-disks");
    let boot = dir.join("boot.raw");
    let data = dir.join("data.qcow2");
    write_x86_raw(&boot);
    write_x86_qcow2(&data);
    let mut inputs = disk(&boot, DiskFormat::Raw);
    inputs.additional_disks.push(DiskInput::new(
        ImageSource::file(data.to_str().unwrap()),
        DiskFormat::Qcow2,
    ));
    let mut vm = start(LINUX_X86_64_PC_NOGRAPHIC, &inputs, None, &native());
    vm.expect_banner(X86_BANNER);
    assert_eq!(vm.command("write 300 77"), write_reply(300, 0x77));
    vm.shutdown();
    // The guest writes to the disk it booted from: the boot disk, not the extra one.
    assert_eq!(read_sector(&boot, "raw", 300), vec![0x77; 512]);
    assert_eq!(
        read_sector(&data, "qcow2", 300),
        x86_initial_sector(300).to_vec()
    );
}

/// The browser target's arguments for the i386 profiles, with the mount directory and the
/// firmware directory pointed at real ones, boot the same guest in native
/// `qemu-system-i386`: everything else in the list is exactly what the wasm build gets.
fn browser_args_boot(profile_id: &str, format: DiskFormat) {
    let dir = TempDir::new(&format!("browser-{profile_id}"));
    let mut target = BrowserTarget::qemu_wasm_i386();
    target.mount_dir = dir.path().to_str().unwrap().to_string();
    target.firmware_dir = Some("/usr/share/seabios".to_string());
    let target = Target::Browser(target);
    let inputs = VmInputs {
        disk: Some(DiskInput::new(
            ImageSource::url("https://example.invalid/guest"),
            format,
        )),
        ..VmInputs::default()
    };
    let profile = profile_by_id(profile_id).unwrap();
    let result = build_qemu_args(&profile, &inputs, None, &target);
    assert!(result.is_ok(), "{:?}", result.errors);
    assert_eq!(result.files_to_mount.len(), 1);
    let mount = &result.files_to_mount[0];
    // The worker would put the URL's bytes here; the test puts the guest there.
    let path = std::path::Path::new(&mount.path);
    match format {
        DiskFormat::Raw => write_x86_raw(path),
        DiskFormat::Qcow2 => write_x86_qcow2(path),
    }
    let mut vm = Qemu::spawn(&result);
    vm.expect_banner(X86_BANNER);
    assert_eq!(vm.command("echo browser args"), "browser args");
    assert_eq!(vm.command("write 64 01"), write_reply(64, 1));
    vm.shutdown();
    assert_eq!(read_sector(path, format.as_str(), 64), vec![1; 512]);
}

#[test]
fn browser_args_i386_nographic_boot_native_qemu() {
    browser_args_boot(LINUX_I386_PC_NOGRAPHIC, DiskFormat::Qcow2);
}

#[test]
fn browser_args_i386_graphics_boot_native_qemu() {
    browser_args_boot(LINUX_I386_PC_GRAPHICS, DiskFormat::Raw);
}

fn boot_auto(profile_id: &str, inputs: &VmInputs, banner: &str) {
    let mut vm = start(
        profile_id,
        inputs,
        None,
        &Target::Native(NativeTarget::detect()),
    );
    vm.expect_banner(banner);
    assert_eq!(vm.command("echo auto accelerator"), "auto accelerator");
}

#[test]
fn auto_accelerator_x86_64() {
    let dir = TempDir::new("auto-x86_64");
    let path = dir.join("disk.raw");
    write_x86_raw(&path);
    boot_auto(
        LINUX_X86_64_PC_NOGRAPHIC,
        &disk(&path, DiskFormat::Raw),
        X86_BANNER,
    );
}

#[test]
fn auto_accelerator_i386() {
    let dir = TempDir::new("auto-i386");
    let path = dir.join("disk.qcow2");
    write_x86_qcow2(&path);
    boot_auto(
        LINUX_I386_PC_NOGRAPHIC,
        &disk(&path, DiskFormat::Qcow2),
        X86_BANNER,
    );
}

#[test]
fn auto_accelerator_aarch64_is_tcg_on_x86_hosts() {
    let dir = TempDir::new("auto-aarch64");
    let kernel = dir.join("aarch64-virt.img");
    std::fs::write(&kernel, qemuweb_guests::aarch64_virt_kernel()).unwrap();
    let inputs = VmInputs {
        kernel: Some(ImageSource::file(kernel.to_str().unwrap())),
        ..VmInputs::default()
    };
    boot_auto(LINUX_AARCH64_VIRT_NOGRAPHIC, &inputs, AARCH64_BANNER);
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `serialFile` and `portForwards` as QEMU takes them: the banner lands in the file, the
/// forward listens on the host and shows in the monitor's `info usernet`.
#[test]
fn serial_file_and_port_forward() {
    use std::io::{BufRead, BufReader, Write};
    let dir = TempDir::new("serial-file-forward");
    let path = dir.join("disk.raw");
    write_x86_raw(&path);
    let serial = dir.join("serial.log");
    let monitor = dir.join("monitor.sock");
    let port = free_port();
    let overrides = VmOverrides {
        serial_file: Some(serial.to_str().unwrap().into()),
        port_forwards: vec![PortForward::tcp(port, 7)],
        extra_args: vec![
            "-monitor".into(),
            format!("unix:{},server=on,wait=off", monitor.display()),
        ],
        ..VmOverrides::default()
    };
    let _vm = start(
        LINUX_I386_PC_NOGRAPHIC,
        &disk(&path, DiskFormat::Raw),
        Some(&overrides),
        &native(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&serial).unwrap_or_default();
        if text.contains(X86_BANNER) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serial file: {text:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // QEMU listens on the forwarded host port.
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let stream = std::os::unix::net::UnixStream::connect(&monitor).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    writeln!(stream.try_clone().unwrap(), "info usernet").unwrap();
    let mut reader = BufReader::new(stream);
    // "TCP[HOST_FORWARD]  13  127.0.0.1 PORT  10.0.2.15  7 ..."
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "monitor: {seen}");
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"TCP[HOST_FORWARD]") && words.contains(&&*port.to_string()) {
            assert!(words.contains(&"7"), "{line}");
            break;
        }
        seen.push_str(&line);
    }
}
