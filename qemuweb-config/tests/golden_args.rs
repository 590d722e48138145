//! Golden tests: the exact argument lists `build_qemu_args` gives, for the browser build
//! (today's wasm32 i386 build, and a future build with every arch) and for native hosts
//! described by hand, so they do not depend on the machine that runs the test.

use qemuweb_config::*;

fn v(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn qcow2_file(name: &str) -> VmInputs {
    VmInputs {
        disk: Some(DiskInput::new(ImageSource::file(name), DiskFormat::Qcow2)),
        ..VmInputs::default()
    }
}

fn kernel_inputs() -> VmInputs {
    VmInputs {
        kernel: Some(ImageSource::url("https://example.test/Image")),
        initrd: Some(ImageSource::file("initrd.cpio.gz")),
        kernel_cmdline: Some("console=ttyAMA0".into()),
        disk: Some(DiskInput::new(
            ImageSource::url("https://example.test/root.qcow2"),
            DiskFormat::Qcow2,
        )),
        ..VmInputs::default()
    }
}

fn browser() -> Target {
    Target::Browser(BrowserTarget::qemu_wasm_i386())
}

/// A browser build with every arch (a wasm64 build): the same rules, more archs.
fn browser_all_archs() -> Target {
    Target::Browser(BrowserTarget {
        archs: vec![Arch::X86_64, Arch::Aarch64, Arch::I386],
        ..BrowserTarget::qemu_wasm_i386()
    })
}

fn build(id: &str, inputs: &VmInputs, target: &Target) -> QemuArgsResult {
    build_qemu_args(&profile_by_id(id).unwrap(), inputs, None, target)
}

const NO_NET: &str =
    "user networking is not compiled into the browser build; the guest has no network";
const NO_DISPLAY: &str =
    "the browser build has no display backend: the display device is emulated but not shown";

#[test]
fn browser_i386_nographic() {
    let r = build(
        LINUX_I386_PC_NOGRAPHIC,
        &qcow2_file("guest.qcow2"),
        &browser(),
    );
    assert_eq!(r.binary, "qemu-system-i386");
    assert_eq!(r.arch, Arch::I386);
    assert_eq!(
        r.args,
        v(&[
            "-L",
            "/firmware",
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-cpu",
            "qemu32",
            "-m",
            "256",
            "-smp",
            "1",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-drive",
            "file=/mnt/disk0.qcow2,format=qcow2,if=ide,index=0,media=disk",
        ])
    );
    assert_eq!(
        r.warnings,
        vec![Issue::new(IssueCode::UserNetUnavailable, NO_NET)]
    );
    assert!(r.errors.is_empty());
    assert_eq!(
        r.files_to_mount,
        vec![FileMountInfo {
            role: MountRole::Disk,
            index: 0,
            source: ImageSource::file("guest.qcow2"),
            path: "/mnt/disk0.qcow2".into(),
            format: Some(DiskFormat::Qcow2),
            read_only: false,
            block_size_bytes: Some(65536),
            overlay_base: None,
        }]
    );
}

#[test]
fn browser_i386_graphics_with_raw_url_and_extra_disk() {
    let inputs = VmInputs {
        disk: Some(DiskInput {
            source: ImageSource::url("https://example.test/boot.img"),
            format: None,
            read_only: false,
        }),
        additional_disks: vec![DiskInput::new(
            ImageSource::file("data.qcow2"),
            DiskFormat::Qcow2,
        )],
        ..VmInputs::default()
    };
    let r = build(LINUX_I386_PC_GRAPHICS, &inputs, &browser());
    assert_eq!(
        r.args,
        v(&[
            "-L",
            "/firmware",
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-cpu",
            "qemu32",
            "-m",
            "256",
            "-smp",
            "1",
            "-display",
            "none",
            "-vga",
            "std",
            "-serial",
            "stdio",
            "-drive",
            "file=/mnt/disk0.raw,format=raw,if=ide,index=0,media=disk",
            "-drive",
            "file=/mnt/disk1.qcow2,format=qcow2,if=ide,index=1,media=disk",
        ])
    );
    assert_eq!(
        r.warnings,
        vec![
            Issue::new(IssueCode::UserNetUnavailable, NO_NET),
            Issue::new(IssueCode::DisplayUnavailable, NO_DISPLAY),
        ]
    );
    let paths: Vec<_> = r
        .files_to_mount
        .iter()
        .map(|f| (f.index, f.path.as_str()))
        .collect();
    assert_eq!(paths, vec![(0, "/mnt/disk0.raw"), (1, "/mnt/disk1.qcow2")]);
}

#[test]
fn browser_x86_64_profiles_on_a_build_with_every_arch() {
    let base = [
        "-L",
        "/firmware",
        "-nodefaults",
        "-no-user-config",
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-cpu",
        "qemu64",
    ];
    let disk = [
        "-drive",
        "file=/mnt/disk0.qcow2,format=qcow2,if=none,id=disk0",
        "-device",
        "virtio-blk-pci,drive=disk0,bootindex=0",
    ];
    let r = build(
        LINUX_X86_64_PC_NOGRAPHIC,
        &qcow2_file("g.qcow2"),
        &browser_all_archs(),
    );
    let mut expected = v(&base);
    expected.extend(v(&[
        "-m", "512", "-smp", "1", "-display", "none", "-serial", "stdio",
    ]));
    expected.extend(v(&disk));
    expected.extend(v(&["-device", "virtio-rng-pci"]));
    assert_eq!(r.args, expected);

    let r = build(
        LINUX_X86_64_PC_GRAPHICS,
        &qcow2_file("g.qcow2"),
        &browser_all_archs(),
    );
    let mut expected = v(&base);
    expected.extend(v(&[
        "-m", "512", "-smp", "1", "-display", "none", "-vga", "std", "-serial", "stdio",
    ]));
    expected.extend(v(&disk));
    expected.extend(v(&[
        "-device",
        "virtio-rng-pci",
        "-device",
        "qemu-xhci,id=usb0",
        "-device",
        "usb-tablet,bus=usb0.0",
        "-device",
        "usb-kbd,bus=usb0.0",
    ]));
    assert_eq!(r.args, expected);

    let r = build(MINIMAL_X86_64, &qcow2_file("g.qcow2"), &browser_all_archs());
    let mut expected = v(&base);
    expected[5] = "microvm".into();
    expected.extend(v(&[
        "-m",
        "128",
        "-smp",
        "1",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-drive",
        "file=/mnt/disk0.qcow2,format=qcow2,if=none,id=disk0",
        "-device",
        "virtio-blk-device,drive=disk0,bootindex=0",
    ]));
    assert_eq!(r.args, expected);
    assert!(r.warnings.is_empty());
}

#[test]
fn browser_aarch64_profiles_on_a_build_with_every_arch() {
    let r = build(
        LINUX_AARCH64_VIRT_NOGRAPHIC,
        &kernel_inputs(),
        &browser_all_archs(),
    );
    assert_eq!(r.binary, "qemu-system-aarch64");
    assert_eq!(
        r.args,
        v(&[
            "-L",
            "/firmware",
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "virt,dtb-randomness=off",
            "-accel",
            "tcg",
            "-cpu",
            "cortex-a57",
            "-m",
            "512",
            "-smp",
            "1",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-kernel",
            "/mnt/kernel",
            "-initrd",
            "/mnt/initrd",
            "-append",
            "console=ttyAMA0",
            "-drive",
            "file=/mnt/disk0.qcow2,format=qcow2,if=none,id=disk0",
            "-device",
            "virtio-blk-pci,drive=disk0,bootindex=0",
            "-device",
            "virtio-rng-pci",
        ])
    );
    let roles: Vec<_> = r
        .files_to_mount
        .iter()
        .map(|f| (f.role, f.path.as_str(), f.read_only))
        .collect();
    assert_eq!(
        roles,
        vec![
            (MountRole::Kernel, "/mnt/kernel", true),
            (MountRole::Initrd, "/mnt/initrd", true),
            (MountRole::Disk, "/mnt/disk0.qcow2", false),
        ]
    );

    let r = build(
        LINUX_AARCH64_VIRT_GRAPHICS,
        &kernel_inputs(),
        &browser_all_archs(),
    );
    assert_eq!(
        r.args,
        v(&[
            "-L",
            "/firmware",
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "virt,dtb-randomness=off",
            "-accel",
            "tcg",
            "-cpu",
            "cortex-a57",
            "-m",
            "512",
            "-smp",
            "1",
            "-display",
            "none",
            "-device",
            "virtio-gpu-pci",
            "-serial",
            "stdio",
            "-kernel",
            "/mnt/kernel",
            "-initrd",
            "/mnt/initrd",
            "-append",
            "console=ttyAMA0",
            "-drive",
            "file=/mnt/disk0.qcow2,format=qcow2,if=none,id=disk0",
            "-device",
            "virtio-blk-pci,drive=disk0,bootindex=0",
            "-device",
            "virtio-rng-pci",
            "-device",
            "qemu-xhci,id=usb0",
            "-device",
            "usb-tablet,bus=usb0.0",
            "-device",
            "usb-kbd,bus=usb0.0",
        ])
    );
}

#[test]
fn browser_mount_dir_and_firmware_are_the_targets() {
    let target = Target::Browser(BrowserTarget {
        mount_dir: "/data/".into(),
        firmware_dir: None,
        ..BrowserTarget::qemu_wasm_i386()
    });
    let r = build(LINUX_I386_PC_NOGRAPHIC, &qcow2_file("x.qcow2"), &target);
    assert_eq!(&r.args[..2], &v(&["-nodefaults", "-no-user-config"])[..]);
    assert!(r
        .args
        .contains(&"file=/data/disk0.qcow2,format=qcow2,if=ide,index=0,media=disk".to_string()));
}

#[test]
fn browser_with_user_net_and_display() {
    let target = Target::Browser(BrowserTarget {
        user_net: true,
        display: true,
        ..BrowserTarget::qemu_wasm_i386()
    });
    let r = build(LINUX_I386_PC_GRAPHICS, &qcow2_file("x.qcow2"), &target);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let tail: Vec<_> = r.args[14..].to_vec();
    assert_eq!(
        tail,
        v(&[
            "-display",
            "qemuweb",
            "-vga",
            "std",
            "-serial",
            "stdio",
            "-drive",
            "file=/mnt/disk0.qcow2,format=qcow2,if=ide,index=0,media=disk",
            "-netdev",
            "user,id=net0",
            "-device",
            "e1000,netdev=net0,romfile=",
        ])
    );
}

fn kvm_host() -> HostCaps {
    HostCaps {
        arch: Some(Arch::X86_64),
        os: HostOs::Linux,
        kvm: true,
    }
}

#[test]
fn native_kvm_x86_64_nographic() {
    let target = Target::Native(NativeTarget::new(Accelerator::Auto, kvm_host()));
    let r = build(
        LINUX_X86_64_PC_NOGRAPHIC,
        &qcow2_file("/vm/a,b.qcow2"),
        &target,
    );
    assert_eq!(
        r.args,
        v(&[
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "q35",
            "-accel",
            "kvm",
            "-cpu",
            "qemu64",
            "-m",
            "512",
            "-smp",
            "1",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-drive",
            "file=/vm/a,,b.qcow2,format=qcow2,if=none,id=disk0",
            "-device",
            "virtio-blk-pci,drive=disk0,bootindex=0",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
            "-device",
            "virtio-rng-pci",
        ])
    );
    assert!(r.warnings.is_empty());
    assert_eq!(r.files_to_mount[0].path, "/vm/a,b.qcow2");
}

#[test]
fn native_tcg_aarch64_graphics_vnc_firmware_and_scsi() {
    let mut native = NativeTarget::new(Accelerator::Tcg, kvm_host());
    native.display = NativeDisplay::Vnc { display: 3 };
    native.firmware_dir = Some("/usr/share/qemu".into());
    let inputs = VmInputs {
        kernel: Some(ImageSource::file("/boot/Image")),
        disk: Some(DiskInput::new(ImageSource::file("/vm/root.raw"), DiskFormat::Raw).read_only()),
        additional_disks: vec![DiskInput::new(
            ImageSource::file("/vm/data.qcow2"),
            DiskFormat::Qcow2,
        )],
        ..VmInputs::default()
    };
    let overrides = VmOverrides {
        disk_interface: Some(DiskInterface::Scsi),
        smp: Some(2),
        memory_mib: Some(1024),
        kernel_cmdline: Some("console=ttyAMA0 root=/dev/sda".into()),
        extra_args: v(&["-rtc", "base=utc"]),
        ..VmOverrides::default()
    };
    let profile = profile_by_id(LINUX_AARCH64_VIRT_GRAPHICS).unwrap();
    let r = build_qemu_args(&profile, &inputs, Some(&overrides), &Target::Native(native));
    assert_eq!(
        r.args,
        v(&[
            "-L",
            "/usr/share/qemu",
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "virt,dtb-randomness=off",
            "-accel",
            "tcg",
            "-cpu",
            "cortex-a57",
            "-m",
            "1024",
            "-smp",
            "2",
            "-display",
            "vnc=127.0.0.1:3",
            "-device",
            "virtio-gpu-pci",
            "-serial",
            "stdio",
            "-kernel",
            "/boot/Image",
            "-append",
            "console=ttyAMA0 root=/dev/sda",
            "-device",
            "virtio-scsi-pci,id=scsi0",
            "-drive",
            "file=/vm/root.raw,format=raw,if=none,id=disk0,readonly=on",
            "-device",
            "scsi-hd,drive=disk0,bus=scsi0.0,bootindex=0",
            "-drive",
            "file=/vm/data.qcow2,format=qcow2,if=none,id=disk1",
            "-device",
            "scsi-hd,drive=disk1,bus=scsi0.0",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
            "-device",
            "virtio-rng-pci",
            "-device",
            "qemu-xhci,id=usb0",
            "-device",
            "usb-tablet,bus=usb0.0",
            "-device",
            "usb-kbd,bus=usb0.0",
            "-rtc",
            "base=utc",
        ])
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn native_overlay_replaces_the_boot_disk() {
    let mut native = NativeTarget::new(Accelerator::Tcg, HostCaps::tcg_only());
    native.disk_overlay = Some("/run/vm/disk.qcow2".into());
    let inputs = VmInputs {
        disk: Some(
            DiskInput::new(ImageSource::file("/images/base.raw"), DiskFormat::Raw).read_only(),
        ),
        ..VmInputs::default()
    };
    let r = build(MINIMAL_X86_64, &inputs, &Target::Native(native));
    assert!(r
        .args
        .contains(&"file=/run/vm/disk.qcow2,format=qcow2,if=none,id=disk0".to_string()));
    assert!(!r.args.iter().any(|a| a.contains("base.raw")));
    assert_eq!(
        r.files_to_mount[0].overlay_base.as_deref(),
        Some("/images/base.raw")
    );
    assert!(!r.files_to_mount[0].read_only);
}

#[test]
fn native_kvm_aarch64_host_uses_cpu_host() {
    let host = HostCaps {
        arch: Some(Arch::Aarch64),
        os: HostOs::Linux,
        kvm: true,
    };
    let target = Target::Native(NativeTarget::new(Accelerator::Auto, host));
    let r = build(
        LINUX_AARCH64_VIRT_NOGRAPHIC,
        &kernel_inputs_local(),
        &target,
    );
    assert!(r.args.windows(2).any(|w| w == ["-accel", "kvm"]));
    assert!(r.args.windows(2).any(|w| w == ["-cpu", "host"]));
    let macos = HostCaps {
        arch: Some(Arch::Aarch64),
        os: HostOs::Macos,
        kvm: false,
    };
    let target = Target::Native(NativeTarget::new(Accelerator::Auto, macos));
    let r = build(
        LINUX_AARCH64_VIRT_NOGRAPHIC,
        &kernel_inputs_local(),
        &target,
    );
    assert!(r.args.windows(2).any(|w| w == ["-accel", "hvf"]));
    assert!(r.args.windows(2).any(|w| w == ["-cpu", "host"]));
    assert!(r.warnings.is_empty());
}

fn kernel_inputs_local() -> VmInputs {
    VmInputs {
        kernel: Some(ImageSource::file("/boot/Image")),
        ..VmInputs::default()
    }
}

#[test]
fn deterministic() {
    let target = browser_all_archs();
    for profile in default_profiles() {
        let inputs = if profile.requires_kernel {
            kernel_inputs()
        } else {
            qcow2_file("g.qcow2")
        };
        let a = build_qemu_args(&profile, &inputs, None, &target);
        let b = build_qemu_args(&profile, &inputs, None, &target);
        assert_eq!(a, b);
        assert!(a.is_ok(), "{}: {:?}", profile.id, a.errors);
    }
}

#[test]
fn native_serial_net_and_display_variants() {
    let mut profile = profile_by_id(LINUX_I386_PC_GRAPHICS).unwrap();
    profile.devices.serial = SerialMode::Pty;
    let mut native = NativeTarget::new(Accelerator::Tcg, HostCaps::tcg_only());
    native.display = NativeDisplay::Default;
    let r = build_qemu_args(
        &profile,
        &qcow2_file("/d.qcow2"),
        None,
        &Target::Native(native),
    );
    assert_eq!(
        r.args,
        v(&[
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-cpu",
            "qemu32",
            "-m",
            "256",
            "-smp",
            "1",
            "-vga",
            "std",
            "-serial",
            "pty",
            "-drive",
            "file=/d.qcow2,format=qcow2,if=ide,index=0,media=disk",
            "-netdev",
            "user,id=net0",
            "-device",
            "e1000,netdev=net0,romfile=",
        ])
    );
    profile.devices.serial = SerialMode::None;
    let overrides = VmOverrides {
        net: Some(NetMode::None),
        graphics: Some(false),
        machine: Some("isapc".into()),
        cpu: Some("486".into()),
        ..VmOverrides::default()
    };
    let r = build_qemu_args(
        &profile,
        &qcow2_file("/d.qcow2"),
        Some(&overrides),
        &tcg_target(),
    );
    assert_eq!(
        r.args,
        v(&[
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "isapc",
            "-accel",
            "tcg",
            "-cpu",
            "486",
            "-m",
            "256",
            "-smp",
            "1",
            "-display",
            "none",
            "-drive",
            "file=/d.qcow2,format=qcow2,if=ide,index=0,media=disk",
        ])
    );
}

fn tcg_target() -> Target {
    Target::Native(NativeTarget::new(Accelerator::Tcg, HostCaps::tcg_only()))
}

#[test]
fn profile_without_cpu_keeps_the_machine_default() {
    let mut profile = profile_by_id(MINIMAL_X86_64).unwrap();
    profile.cpu = None;
    let r = build_qemu_args(&profile, &qcow2_file("/d.qcow2"), None, &tcg_target());
    assert!(!r.args.contains(&"-cpu".to_string()));
}

#[test]
fn port_forwards_and_serial_file() {
    let overrides = VmOverrides {
        port_forwards: vec![PortForward::tcp(8080, 80), "udp:5353:53".parse().unwrap()],
        serial_file: Some("/state/serial.log".into()),
        ..VmOverrides::default()
    };
    let profile = profile_by_id(LINUX_X86_64_PC_NOGRAPHIC).unwrap();
    let r = build_qemu_args(
        &profile,
        &qcow2_file("/d.qcow2"),
        Some(&overrides),
        &tcg_target(),
    );
    assert!(r.is_ok(), "{:?}", r.errors);
    let at = |flag: &str| {
        let i = r.args.iter().position(|a| a == flag).unwrap();
        r.args[i + 1].clone()
    };
    assert_eq!(at("-serial"), "file:/state/serial.log");
    assert_eq!(
        at("-netdev"),
        "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:5353-:53"
    );
    assert_eq!(r.args.iter().filter(|a| *a == "-serial").count(), 1);

    // The browser cannot listen on host ports or write host files: both dropped, warned.
    let r = build_qemu_args(
        &profile,
        &qcow2_file("/d.qcow2"),
        Some(&overrides),
        &browser_all_archs(),
    );
    assert!(r.is_ok(), "{:?}", r.errors);
    let codes = r.warning_codes();
    assert!(
        codes.contains(&IssueCode::PortForwardUnavailable),
        "{codes:?}"
    );
    assert!(
        codes.contains(&IssueCode::SerialFileUnavailable),
        "{codes:?}"
    );
    assert!(!r
        .args
        .iter()
        .any(|a| a.contains("hostfwd") || a.starts_with("file:")));
    assert!(r.args.windows(2).any(|w| w == ["-serial", "stdio"]));

    // Errors (no network, a host port twice, a bad path) are in tests/issues.rs.

    // The JSON form.
    let json = serde_json::to_value(&overrides).unwrap();
    assert_eq!(
        json["portForwards"],
        serde_json::json!([
            {"protocol": "tcp", "hostPort": 8080, "guestPort": 80},
            {"protocol": "udp", "hostPort": 5353, "guestPort": 53}
        ])
    );
    assert_eq!(json["serialFile"], "/state/serial.log");
    let back: VmOverrides = serde_json::from_value(json).unwrap();
    assert_eq!(back, overrides);
}

fn nics(a: Vec<NetworkAttachment>) -> VmOverrides {
    VmOverrides {
        networks: Some(a),
        ..VmOverrides::default()
    }
}

fn netdev_args(r: &QemuArgsResult) -> Vec<String> {
    r.args
        .windows(2)
        .filter(|w| w[0] == "-netdev" || w[1].contains("netdev="))
        .map(|w| w[1].clone())
        .collect()
}

#[test]
fn nics_on_named_networks_natively_use_their_addresses() {
    let profile = profile_by_id(LINUX_I386_PC_NOGRAPHIC).unwrap();
    let mut lan = VirtualNetwork::nat("lan", "192.168.9.0/24");
    lan.mode = NetworkMode::Isolated;
    let target = Target::Native(NativeTarget {
        networks: [default_networks(), vec![lan]].concat(),
        ..NativeTarget::new(Accelerator::Tcg, HostCaps::tcg_only())
    });
    let overrides = VmOverrides {
        port_forwards: vec![PortForward::tcp(8080, 80)],
        ..nics(vec![
            NetworkAttachment {
                mac: Some("52:54:00:AA:00:01".into()),
                ..NetworkAttachment::on("default")
            },
            NetworkAttachment {
                model: Some(NicModel::VirtioNet),
                ..NetworkAttachment::on("lan")
            },
        ])
    };
    let r = build_qemu_args(&profile, &qcow2_file("x.qcow2"), Some(&overrides), &target);
    assert!(r.is_ok() && r.warnings.is_empty(), "{r:?}");
    assert_eq!(
        netdev_args(&r),
        v(&[
            "user,id=net0,ipv4=on,ipv6=off,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,dhcpstart=10.0.2.15,hostfwd=tcp:127.0.0.1:8080-:80",
            "e1000,netdev=net0,mac=52:54:00:aa:00:01,romfile=",
            "user,id=net1,ipv4=on,ipv6=off,net=192.168.9.0/24,host=192.168.9.1,dns=192.168.9.1,dhcpstart=192.168.9.10,restrict=on",
            "virtio-net-pci,netdev=net1,romfile=",
        ])
    );
    // `net: none` removes them.
    let off = VmOverrides {
        net: Some(NetMode::None),
        ..nics(vec![NetworkAttachment::on("default")])
    };
    let r = build_qemu_args(&profile, &qcow2_file("x.qcow2"), Some(&off), &target);
    assert!(netdev_args(&r).is_empty());
}

#[test]
fn nics_in_the_browser_use_the_qemuweb_netdev() {
    let target = Target::Browser(BrowserTarget {
        netdev: true,
        ..BrowserTarget::qemu_wasm_i386()
    });
    let profile = profile_by_id(LINUX_I386_PC_NOGRAPHIC).unwrap();
    let overrides = nics(vec![NetworkAttachment::on("anything")]);
    let r = build_qemu_args(&profile, &qcow2_file("x.qcow2"), Some(&overrides), &target);
    // The profile's own user NIC is replaced, so no user-net warning either.
    assert!(r.is_ok() && r.warnings.is_empty(), "{r:?}");
    assert_eq!(
        netdev_args(&r),
        v(&["qemuweb,id=net0", "e1000,netdev=net0,romfile="])
    );
}

#[test]
fn nics_on_the_wasm64_build_use_the_qemuweb_netdev_with_the_profiles_model() {
    let target = Target::Browser(BrowserTarget::qemu_wasm64());
    let on = |mac: Option<&str>| {
        nics(vec![NetworkAttachment {
            mac: mac.map(Into::into),
            ..NetworkAttachment::on("lan")
        }])
    };
    let kernel = VmInputs {
        kernel: Some(ImageSource::url("https://example.test/bzImage")),
        initrd: Some(ImageSource::url("https://example.test/initrd-net.img")),
        kernel_cmdline: Some("console=ttyS0".into()),
        ..VmInputs::default()
    };
    let profile = profile_by_id(LINUX_I386_PC_NOGRAPHIC).unwrap();
    let r = build_qemu_args(
        &profile,
        &kernel,
        Some(&on(Some("52:54:00:6E:DD:D4"))),
        &target,
    );
    assert!(r.is_ok() && r.warnings.is_empty(), "{r:?}");
    // The wasm32 build's arguments for the same inputs (no netdev there), then the NIC.
    let base = build_qemu_args(&profile, &kernel, None, &browser());
    let nic = [
        "-netdev",
        "qemuweb,id=net0",
        "-device",
        "e1000,netdev=net0,mac=52:54:00:6e:dd:d4,romfile=",
    ];
    assert_eq!(r.args, [base.args, v(&nic)].concat());
    // virtio-net elsewhere: on PCI, or on virtio-mmio (no option ROM) for microvm.
    for (id, device) in [
        (
            LINUX_X86_64_PC_NOGRAPHIC,
            "virtio-net-pci,netdev=net0,romfile=",
        ),
        (MINIMAL_X86_64, "virtio-net-device,netdev=net0"),
        (
            LINUX_AARCH64_VIRT_NOGRAPHIC,
            "virtio-net-pci,netdev=net0,romfile=",
        ),
    ] {
        let r = build_qemu_args(
            &profile_by_id(id).unwrap(),
            &kernel,
            Some(&on(None)),
            &target,
        );
        assert!(r.is_ok() && r.warnings.is_empty(), "{id}: {r:?}");
        assert_eq!(netdev_args(&r), v(&["qemuweb,id=net0", device]), "{id}");
    }
}

#[test]
fn aarch64_without_a_kernel_boots_the_disk_through_uefi() {
    let r = build(
        LINUX_AARCH64_VIRT_NOGRAPHIC,
        &qcow2_file("debian-arm64.qcow2"),
        &browser_all_archs(),
    );
    assert!(r.is_ok(), "{:?}", r.errors);
    let args = r.args.join(" ");
    assert!(args.contains("-bios QEMU_EFI.fd"), "{args}");
    assert!(!args.contains("-kernel"), "{args}");
    let native = build(
        LINUX_AARCH64_VIRT_NOGRAPHIC,
        &qcow2_file("/images/debian-arm64.qcow2"),
        &tcg_target(),
    );
    assert!(native
        .args
        .join(" ")
        .contains("-bios /usr/share/qemu-efi-aarch64/QEMU_EFI.fd"));
    // With a kernel, no firmware: the kernel is entered directly.
    let k = build(
        LINUX_AARCH64_VIRT_NOGRAPHIC,
        &kernel_inputs(),
        &tcg_target(),
    );
    assert!(!k.args.contains(&"-bios".to_string()), "{:?}", k.args);
}

#[test]
fn an_x86_kernel_boot_leaves_bootindex_0_to_the_kernel() {
    // QEMU's linuxboot option ROM holds bootindex 0 on x86 with -kernel: the disk takes
    // none ("The bootindex 0 has already been used" otherwise); aarch64 keeps it.
    let mut inputs = kernel_inputs();
    inputs.disk = qcow2_file("g.qcow2").disk;
    let r = build(LINUX_X86_64_PC_NOGRAPHIC, &inputs, &browser_all_archs());
    assert!(r.args.iter().any(|a| a == "-kernel"), "{:?}", r.args);
    assert!(
        r.args.iter().any(|a| a == "virtio-blk-pci,drive=disk0"),
        "{:?}",
        r.args
    );
    assert!(
        !r.args.iter().any(|a| a.contains("bootindex")),
        "{:?}",
        r.args
    );
    let r = build(LINUX_AARCH64_VIRT_NOGRAPHIC, &inputs, &browser_all_archs());
    assert!(
        r.args
            .iter()
            .any(|a| a.ends_with("drive=disk0,bootindex=0")),
        "{:?}",
        r.args
    );
}

/// A SCSI boot disk on `microvm` turns the virtio-mmio transports' ioeventfd off (SeaBIOS
/// there cannot time its wait for the disk; `boot_native` boots it); a kernel booted
/// directly does not need it.
#[test]
fn scsi_boot_disk_on_microvm_answers_in_the_vcpu() {
    let overrides = VmOverrides {
        disk_interface: Some(DiskInterface::Scsi),
        ..VmOverrides::default()
    };
    let tcg = Target::Native(NativeTarget::new(Accelerator::Tcg, HostCaps::tcg_only()));
    let profile = profile_by_id(MINIMAL_X86_64).unwrap();
    let r = build_qemu_args(&profile, &qcow2_file("g.qcow2"), Some(&overrides), &tcg);
    let tail = r.args.iter().position(|a| a == "-global").unwrap();
    assert_eq!(
        r.args[tail..tail + 6],
        [
            "-global",
            "virtio-mmio.ioeventfd=off",
            "-device",
            "virtio-scsi-device,id=scsi0",
            "-drive",
            "file=g.qcow2,format=qcow2,if=none,id=disk0",
        ]
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let direct = VmInputs {
        kernel: Some(ImageSource::file("/boot/bzImage")),
        ..qcow2_file("g.qcow2")
    };
    let r = build_qemu_args(&profile, &direct, Some(&overrides), &tcg);
    assert!(r.is_ok(), "{:?}", r.errors);
    assert!(!r.args.iter().any(|a| a.contains("ioeventfd")));
}
