//! Every error and warning `build_qemu_args` can give, each with its exact message, and
//! the errors of the rest of the API.

use std::collections::BTreeSet;

use qemuweb_config::*;

fn qcow2(name: &str) -> Option<DiskInput> {
    Some(DiskInput::new(ImageSource::file(name), DiskFormat::Qcow2))
}

fn disk_inputs() -> VmInputs {
    VmInputs {
        disk: qcow2("/vm/disk.qcow2"),
        ..VmInputs::default()
    }
}

fn kernel_inputs() -> VmInputs {
    VmInputs {
        kernel: Some(ImageSource::file("/vm/Image")),
        ..VmInputs::default()
    }
}

fn browser() -> Target {
    Target::Browser(BrowserTarget::qemu_wasm_i386())
}

fn browser_all() -> Target {
    Target::Browser(BrowserTarget {
        archs: vec![Arch::X86_64, Arch::Aarch64, Arch::I386],
        user_net: true,
        display: true,
        ..BrowserTarget::qemu_wasm_i386()
    })
}

fn tcg() -> Target {
    Target::Native(NativeTarget::new(Accelerator::Tcg, HostCaps::tcg_only()))
}

fn native(accel: Accelerator, arch: Option<Arch>, os: HostOs, kvm: bool) -> Target {
    Target::Native(NativeTarget::new(accel, HostCaps { arch, os, kvm }))
}

struct Scenario {
    name: &'static str,
    profile: VmProfile,
    inputs: VmInputs,
    overrides: Option<VmOverrides>,
    target: Target,
    errors: Vec<(IssueCode, &'static str)>,
    warnings: Vec<(IssueCode, &'static str)>,
}

fn p(id: &str) -> VmProfile {
    profile_by_id(id).unwrap()
}

fn ov(f: impl FnOnce(&mut VmOverrides)) -> Option<VmOverrides> {
    let mut o = VmOverrides::default();
    f(&mut o);
    Some(o)
}

fn s(
    name: &'static str,
    profile: VmProfile,
    inputs: VmInputs,
    overrides: Option<VmOverrides>,
    target: Target,
    errors: Vec<(IssueCode, &'static str)>,
    warnings: Vec<(IssueCode, &'static str)>,
) -> Scenario {
    Scenario {
        name,
        profile,
        inputs,
        overrides,
        target,
        errors,
        warnings,
    }
}

use IssueCode::*;

const SOFTWARE_X86_64: &str = "no usable KVM or HVF for x86_64 guests on this host; using TCG software emulation, which is much slower";
const NO_NET: &str =
    "user networking is not compiled into the browser build; the guest has no network";

fn scenarios() -> Vec<Scenario> {
    // A custom profile that boots only a kernel (the default aarch64 profiles also boot a
    // disk through UEFI).
    let mut kernel_only = p(LINUX_AARCH64_VIRT_NOGRAPHIC);
    kernel_only.requires_kernel = true;
    kernel_only.kernel_help_text = Some("Give a kernel.".into());
    let mut bad_profile = p(MINIMAL_X86_64);
    bad_profile.id = "Bad Id".into();
    let mut pty_profile = p(LINUX_I386_PC_NOGRAPHIC);
    pty_profile.devices.serial = SerialMode::Pty;
    let mut host_args = p(LINUX_I386_PC_NOGRAPHIC);
    host_args.default_args = [
        "-enable-kvm",
        "-daemonize",
        "-pidfile",
        "/run/q.pid",
        "-cpu",
        "host",
        "-rtc",
        "base=utc",
    ]
    .map(String::from)
    .to_vec();
    let mut accel_args = p(MINIMAL_X86_64);
    accel_args.default_args = ["-accel", "kvm", "-enable-kvm", "-no-reboot"]
        .map(String::from)
        .to_vec();
    vec![
        s("invalid profile", bad_profile, disk_inputs(), None, tcg(),
          vec![(InvalidProfile, "invalid VM profile 'Bad Id': the id may only hold lowercase ASCII letters, digits, '-', '_' and '.', not 'B'")], vec![]),
        s("memory 0", p(MINIMAL_X86_64), disk_inputs(), ov(|o| o.memory_mib = Some(0)), tcg(),
          vec![(InvalidOverride, "memoryMiB must be above 0")], vec![]),
        s("smp 0 and memory 0", p(MINIMAL_X86_64), disk_inputs(), ov(|o| { o.smp = Some(0); o.memory_mib = Some(0) }), tcg(),
          vec![(InvalidOverride, "memoryMiB must be above 0"), (InvalidOverride, "smp must be above 0")], vec![]),
        s("kernel required", kernel_only.clone(), disk_inputs(), None, tcg(),
          vec![(KernelRequired, "profile 'linux-aarch64-virt-nographic' requires a kernel, but none was given. Give a kernel.")], vec![]),
        s("nothing to boot", p(MINIMAL_X86_64), VmInputs::default(), None, tcg(),
          vec![(NothingToBoot, "nothing to boot: give a disk or a kernel")], vec![]),
        s("initrd without kernel", p(MINIMAL_X86_64),
          VmInputs { initrd: Some(ImageSource::file("/vm/initrd")), ..disk_inputs() }, None, tcg(),
          vec![(InitrdWithoutKernel, "an initrd was given without a kernel")], vec![]),
        s("cmdline without kernel", p(MINIMAL_X86_64),
          VmInputs { kernel_cmdline: Some("quiet".into()), ..disk_inputs() }, None, tcg(),
          vec![], vec![(CmdlineWithoutKernel, "the kernel command line is ignored: no kernel was given")]),
        s("cmdline override without kernel", p(MINIMAL_X86_64), disk_inputs(),
          ov(|o| o.kernel_cmdline = Some("quiet".into())), tcg(),
          vec![], vec![(CmdlineWithoutKernel, "the kernel command line is ignored: no kernel was given")]),
        s("memory above profile max", p(MINIMAL_X86_64), disk_inputs(), ov(|o| o.memory_mib = Some(1024)), tcg(),
          vec![(MemoryAboveProfileMax, "memory 1024 MiB is above the maximum of 512 MiB for profile 'minimal-x86_64'")], vec![]),
        s("memory above browser limit", p(LINUX_X86_64_PC_NOGRAPHIC), disk_inputs(), ov(|o| o.memory_mib = Some(2048)), browser_all(),
          vec![(MemoryAboveTargetMax, "memory 2048 MiB is above the browser build's limit of 1024 MiB")], vec![]),
        s("arch the browser cannot run", p(LINUX_X86_64_PC_NOGRAPHIC), disk_inputs(), None, browser(),
          vec![(ArchUnsupported, "the browser build cannot run x86_64 guests (it runs: i386)")],
          vec![(UserNetUnavailable, NO_NET)]),
        s("arch on a browser build with no archs", p(LINUX_I386_PC_NOGRAPHIC), disk_inputs(), None,
          Target::Browser(BrowserTarget { archs: vec![], user_net: true, ..BrowserTarget::qemu_wasm_i386() }),
          vec![(ArchUnsupported, "the browser build cannot run i386 guests (it runs: none)")], vec![]),
        s("graphics on a nographic profile", p(MINIMAL_X86_64), disk_inputs(), ov(|o| o.graphics = Some(true)), tcg(),
          vec![(GraphicsUnsupported, "profile 'minimal-x86_64' does not support graphics")], vec![]),
        s("usb keyboard without display", p(LINUX_X86_64_PC_GRAPHICS), disk_inputs(), ov(|o| o.graphics = Some(false)), tcg(),
          vec![(GraphicsDeviceWithoutDisplay, "the USB keyboard of profile 'linux-x86_64-pc-graphics' needs a display, but graphics are off")], vec![]),
        s("ide on aarch64", p(LINUX_AARCH64_VIRT_NOGRAPHIC), VmInputs { disk: qcow2("/vm/d.qcow2"), ..kernel_inputs() },
          ov(|o| o.disk_interface = Some(DiskInterface::Ide)), tcg(),
          vec![(DiskInterfaceUnsupported, "IDE disks are not available on aarch64 machines; use virtio-blk or scsi")], vec![]),
        s("too many ide disks on pc", p(LINUX_I386_PC_NOGRAPHIC),
          VmInputs { additional_disks: vec![qcow2("/1.qcow2").unwrap(), qcow2("/2.qcow2").unwrap(), qcow2("/3.qcow2").unwrap(), qcow2("/4.qcow2").unwrap()], ..disk_inputs() },
          None, tcg(),
          vec![(TooManyDisks, "5 IDE disks were given, but machine 'pc' has 4 IDE ports")], vec![]),
        s("too many ide disks on q35", p(LINUX_X86_64_PC_NOGRAPHIC),
          VmInputs { additional_disks: (0..6).map(|i| qcow2(&format!("/{i}.qcow2")).unwrap()).collect(), ..disk_inputs() },
          ov(|o| o.disk_interface = Some(DiskInterface::Ide)), tcg(),
          vec![(TooManyDisks, "7 IDE disks were given, but machine 'q35' has 6 IDE ports")], vec![]),
        s("ide on microvm", p(MINIMAL_X86_64), disk_inputs(),
          ov(|o| o.disk_interface = Some(DiskInterface::Ide)), tcg(),
          vec![(DiskInterfaceUnsupported, "IDE disks are not available on the microvm machine (it has no PCI bus); use virtio-blk or scsi")], vec![]),
        s("empty disk path", p(MINIMAL_X86_64), VmInputs { disk: qcow2(" "), ..VmInputs::default() }, None, tcg(),
          vec![(EmptySource, "disk0 has an empty path or URL")], vec![]),
        s("empty kernel url", p(LINUX_AARCH64_VIRT_NOGRAPHIC),
          VmInputs { kernel: Some(ImageSource::url("")), ..VmInputs::default() }, None, browser_all(),
          vec![(EmptySource, "the kernel has an empty path or URL")], vec![]),
        s("empty initrd", p(LINUX_AARCH64_VIRT_NOGRAPHIC),
          VmInputs { initrd: Some(ImageSource::file("")), ..kernel_inputs() }, None, tcg(),
          vec![(EmptySource, "the initrd has an empty path or URL")], vec![]),
        s("url natively", p(MINIMAL_X86_64),
          VmInputs { disk: Some(DiskInput::new(ImageSource::url("https://example.test/d.qcow2"), DiskFormat::Qcow2)), ..VmInputs::default() },
          None, tcg(),
          vec![(UrlNotSupportedNative, "native QEMU needs a local file for disk0, not the URL 'https://example.test/d.qcow2'; download it first")], vec![]),
        s("kernel url natively", p(LINUX_AARCH64_VIRT_NOGRAPHIC),
          VmInputs { kernel: Some(ImageSource::url("https://example.test/Image")), ..VmInputs::default() }, None, tcg(),
          vec![(UrlNotSupportedNative, "native QEMU needs a local file for the kernel, not the URL 'https://example.test/Image'; download it first")], vec![]),
        s("kvm without /dev/kvm", p(MINIMAL_X86_64), disk_inputs(), None,
          native(Accelerator::Kvm, Some(Arch::X86_64), HostOs::Linux, false),
          vec![(AcceleratorUnavailable, "KVM was requested but /dev/kvm is not available on this host")], vec![]),
        s("kvm for another arch", p(LINUX_AARCH64_VIRT_NOGRAPHIC), kernel_inputs(), None,
          native(Accelerator::Kvm, Some(Arch::X86_64), HostOs::Linux, true),
          vec![(AcceleratorUnavailable, "KVM was requested but cannot run aarch64 guests on a x86_64 host")], vec![]),
        s("hvf off macOS", p(MINIMAL_X86_64), disk_inputs(), None,
          native(Accelerator::Hvf, Some(Arch::X86_64), HostOs::Linux, true),
          vec![(AcceleratorUnavailable, "HVF was requested but it exists only on macOS hosts")], vec![]),
        s("hvf for another arch", p(MINIMAL_X86_64), disk_inputs(), None,
          native(Accelerator::Hvf, Some(Arch::Aarch64), HostOs::Macos, false),
          vec![(AcceleratorUnavailable, "HVF was requested but cannot run x86_64 guests on a aarch64 host")], vec![]),
        s("cpu host with tcg", p(MINIMAL_X86_64), disk_inputs(), ov(|o| o.cpu = Some("host".into())), tcg(),
          vec![(CpuHostWithoutAccelerator, "CPU model 'host' needs KVM or HVF, but TCG is in use")], vec![]),
        s("overlay without disk", p(LINUX_AARCH64_VIRT_NOGRAPHIC), kernel_inputs(), None,
          Target::Native(NativeTarget { disk_overlay: Some("/run/o.qcow2".into()), ..NativeTarget::new(Accelerator::Tcg, HostCaps::tcg_only()) }),
          vec![(OverlayWithoutDisk, "a disk overlay was given, but there is no boot disk")], vec![]),
        s("host-only args in the browser", host_args, disk_inputs(), None, browser(), vec![], vec![
            (UserNetUnavailable, NO_NET),
            (HostOnlyArgDropped, "dropped '-enable-kvm' from the profile's defaultArgs: the browser build always uses its TCG interpreter"),
            (HostOnlyArgDropped, "dropped '-daemonize' from the profile's defaultArgs: a host-only option the browser build does not have"),
            (HostOnlyArgDropped, "dropped '-pidfile /run/q.pid' from the profile's defaultArgs: a host-only option the browser build does not have"),
            (HostOnlyArgDropped, "dropped '-cpu host' from the profile's defaultArgs: the browser build has no host CPU to pass through"),
        ]),
        s("accelerator in browser extra args", p(LINUX_I386_PC_NOGRAPHIC), disk_inputs(),
          ov(|o| o.extra_args = vec!["-accel".into(), "kvm".into()]), browser(), vec![], vec![
            (UserNetUnavailable, NO_NET),
            (HostOnlyArgDropped, "dropped '-accel kvm' from the overrides' extraArgs: the browser build always uses its TCG interpreter"),
        ]),
        s("cpu host override in the browser", p(LINUX_I386_PC_NOGRAPHIC), disk_inputs(),
          ov(|o| o.cpu = Some("host".into())), browser(), vec![], vec![
            (HostOnlyArgDropped, "dropped CPU model 'host': the browser build has no host CPU to pass through; the machine's default CPU is used"),
            (UserNetUnavailable, NO_NET),
        ]),
        s("accelerator args natively", accel_args, disk_inputs(), None,
          native(Accelerator::Auto, Some(Arch::X86_64), HostOs::Linux, false), vec![], vec![
            (SoftwareEmulation, SOFTWARE_X86_64),
            (AcceleratorArgDropped, "dropped '-accel kvm' from the profile's defaultArgs: the target chooses the accelerator (tcg)"),
            (AcceleratorArgDropped, "dropped '-enable-kvm' from the profile's defaultArgs: the target chooses the accelerator (tcg)"),
        ]),
        s("auto without kvm", p(MINIMAL_X86_64), disk_inputs(), None,
          native(Accelerator::Auto, Some(Arch::X86_64), HostOs::Linux, false), vec![],
          vec![(SoftwareEmulation, SOFTWARE_X86_64)]),
        s("auto across archs", p(LINUX_AARCH64_VIRT_NOGRAPHIC), kernel_inputs(), None,
          native(Accelerator::Auto, Some(Arch::X86_64), HostOs::Linux, true), vec![],
          vec![(SoftwareEmulation, "no usable KVM or HVF for aarch64 guests on this host; using TCG software emulation, which is much slower")]),
        s("format guessed", p(MINIMAL_X86_64),
          VmInputs { disk: Some(DiskInput { source: ImageSource::url("https://example.test/disk?v=2"), format: None, read_only: false }), ..VmInputs::default() },
          None, browser_all(), vec![],
          vec![(FormatGuessed, "cannot tell the format of disk0 from 'https://example.test/disk?v=2'; assuming raw (set the format to be sure)")]),
        s("pty in the browser", pty_profile, disk_inputs(), None, browser(), vec![], vec![
            (SerialPtyUnavailable, "serial 'pty' is not available in the browser; the serial port uses stdio"),
            (UserNetUnavailable, NO_NET),
        ]),
        s("read-only ide", p(LINUX_I386_PC_NOGRAPHIC),
          VmInputs { disk: qcow2("/vm/d.qcow2").map(DiskInput::read_only), ..VmInputs::default() }, None, tcg(), vec![],
          vec![(ReadOnlyIdeSnapshot, "IDE disks cannot be read-only in QEMU: disk0 is attached with snapshot=on, so the guest's writes are discarded")]),
        s("smp in the browser", p(LINUX_I386_PC_NOGRAPHIC), disk_inputs(), ov(|o| o.smp = Some(2)), browser(), vec![], vec![
            (UserNetUnavailable, NO_NET),
            (SmpInBrowser, "smp 2 in the browser build: its TCG interpreter gains nothing from more vCPUs and the guest runs slower"),
        ]),
        s("graphics in a browser without display", p(LINUX_I386_PC_GRAPHICS), disk_inputs(), None, browser(), vec![], vec![
            (UserNetUnavailable, NO_NET),
            (DisplayUnavailable, "the browser build has no display backend: the display device is emulated but not shown"),
        ]),
        s("port forwards without a network", p(LINUX_I386_PC_NOGRAPHIC), disk_inputs(),
          ov(|o| { o.net = Some(NetMode::None); o.port_forwards = vec![PortForward::tcp(8080, 80)] }), tcg(),
          vec![(PortForwardWithoutNet, "port forwards need user networking, which is off")], vec![]),
        s("a host port forwarded twice", p(LINUX_I386_PC_NOGRAPHIC), disk_inputs(),
          ov(|o| o.port_forwards = vec![PortForward::tcp(8080, 80), PortForward::tcp(8080, 81)]), tcg(),
          vec![(InvalidPortForward, "port forward tcp:127.0.0.1:8080-:81: ports must be from 1 to 65535 and each host port forwarded once")], vec![]),
        s("a serial file with a comma", p(LINUX_I386_PC_NOGRAPHIC), disk_inputs(),
          ov(|o| o.serial_file = Some("/a,b.log".into())), tcg(),
          vec![(InvalidSerialFile, "serial file '/a,b.log': the path must be non-empty without commas")], vec![]),
        s("port forwards and a serial file in the browser", p(LINUX_I386_PC_NOGRAPHIC), disk_inputs(),
          ov(|o| { o.port_forwards = vec![PortForward::tcp(8080, 80)]; o.serial_file = Some("/s.log".into()) }), browser_all(),
          vec![], vec![
            (PortForwardUnavailable, "port forwards dropped: a browser cannot listen on host ports"),
            (SerialFileUnavailable, "serial file ignored: in the browser the worker owns the serial port"),
        ]),
        s("a NIC on an unknown network", p(LINUX_I386_PC_NOGRAPHIC), disk_inputs(),
          ov(|o| o.networks = Some(vec![NetworkAttachment::on("lan")])), tcg(),
          vec![(UnknownNetwork, "NIC 0: no network 'lan' is defined")], vec![]),
        s("a NIC with a reserved address that is the gateway", p(LINUX_I386_PC_NOGRAPHIC), disk_inputs(),
          ov(|o| o.networks = Some(vec![NetworkAttachment { ip: Some("10.0.2.2".into()), ..NetworkAttachment::on("default") }])), tcg(),
          vec![(InvalidNetwork, "NIC 0: invalid network 'default': ip 10.0.2.2 is not a free host address of 10.0.2.0/24")], vec![]),
        s("NICs on a browser build without the netdev", p(LINUX_I386_PC_NOGRAPHIC), disk_inputs(),
          ov(|o| o.networks = Some(vec![NetworkAttachment::on("default")])), browser(),
          vec![], vec![(NetworkUnavailable, "this browser build has no netdev for virtual networks; the guest has no network")]),
    ]
}

#[test]
fn every_scenario_gives_exactly_its_issues() {
    for sc in scenarios() {
        let r = build_qemu_args(&sc.profile, &sc.inputs, sc.overrides.as_ref(), &sc.target);
        let errors: Vec<_> = sc.errors.iter().map(|(c, m)| Issue::new(*c, *m)).collect();
        let warnings: Vec<_> = sc
            .warnings
            .iter()
            .map(|(c, m)| Issue::new(*c, *m))
            .collect();
        assert_eq!(r.errors, errors, "errors of scenario '{}'", sc.name);
        assert_eq!(r.warnings, warnings, "warnings of scenario '{}'", sc.name);
        for issue in &r.errors {
            assert_eq!(issue.code.severity(), Severity::Error, "{}", sc.name);
        }
        for issue in &r.warnings {
            assert_eq!(issue.code.severity(), Severity::Warning, "{}", sc.name);
        }
        if r.errors.is_empty() {
            assert!(!r.args.is_empty(), "{}", sc.name);
        } else {
            assert!(
                r.args.is_empty() && r.files_to_mount.is_empty(),
                "{}",
                sc.name
            );
            let err = r.clone().into_result().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Rejected);
            let joined: Vec<_> = errors.iter().map(|i| i.message.clone()).collect();
            assert_eq!(
                err.to_string(),
                format!("QEMU arguments rejected: {}", joined.join("; "))
            );
        }
    }
}

/// Every code, listed through an exhaustive match so a new code fails to compile here
/// until it is added.
fn all_codes() -> Vec<IssueCode> {
    let all = vec![
        InvalidProfile,
        InvalidOverride,
        KernelRequired,
        NothingToBoot,
        InitrdWithoutKernel,
        MemoryAboveProfileMax,
        MemoryAboveTargetMax,
        ArchUnsupported,
        GraphicsUnsupported,
        GraphicsDeviceWithoutDisplay,
        DiskInterfaceUnsupported,
        TooManyDisks,
        EmptySource,
        UrlNotSupportedNative,
        AcceleratorUnavailable,
        CpuHostWithoutAccelerator,
        OverlayWithoutDisk,
        HostOnlyArgDropped,
        AcceleratorArgDropped,
        SoftwareEmulation,
        FormatGuessed,
        CmdlineWithoutKernel,
        UserNetUnavailable,
        SerialPtyUnavailable,
        ReadOnlyIdeSnapshot,
        SmpInBrowser,
        DisplayUnavailable,
        PortForwardWithoutNet,
        InvalidPortForward,
        InvalidSerialFile,
        PortForwardUnavailable,
        SerialFileUnavailable,
        UnknownNetwork,
        InvalidNetwork,
        NetworkUnavailable,
    ];
    for code in &all {
        match code {
            InvalidProfile
            | InvalidOverride
            | KernelRequired
            | NothingToBoot
            | InitrdWithoutKernel
            | MemoryAboveProfileMax
            | MemoryAboveTargetMax
            | ArchUnsupported
            | GraphicsUnsupported
            | GraphicsDeviceWithoutDisplay
            | DiskInterfaceUnsupported
            | TooManyDisks
            | EmptySource
            | UrlNotSupportedNative
            | AcceleratorUnavailable
            | CpuHostWithoutAccelerator
            | OverlayWithoutDisk
            | HostOnlyArgDropped
            | AcceleratorArgDropped
            | SoftwareEmulation
            | FormatGuessed
            | CmdlineWithoutKernel
            | UserNetUnavailable
            | SerialPtyUnavailable
            | ReadOnlyIdeSnapshot
            | SmpInBrowser
            | DisplayUnavailable
            | PortForwardWithoutNet
            | InvalidPortForward
            | InvalidSerialFile
            | PortForwardUnavailable
            | SerialFileUnavailable
            | UnknownNetwork
            | InvalidNetwork
            | NetworkUnavailable => {}
        }
    }
    all
}

#[test]
fn every_code_has_a_scenario() {
    let covered: BTreeSet<String> = scenarios()
        .iter()
        .flat_map(|s| {
            s.errors
                .iter()
                .chain(&s.warnings)
                .map(|(c, _)| format!("{c:?}"))
        })
        .collect();
    let all: BTreeSet<String> = all_codes().iter().map(|c| format!("{c:?}")).collect();
    let missing: Vec<_> = all.difference(&covered).collect();
    assert!(missing.is_empty(), "codes without a scenario: {missing:?}");
}

#[test]
fn codes_serialize_kebab_case() {
    assert_eq!(
        serde_json::to_string(&KernelRequired).unwrap(),
        "\"kernel-required\""
    );
    let issue = Issue::new(FormatGuessed, "m");
    assert_eq!(
        serde_json::to_string(&issue).unwrap(),
        r#"{"code":"format-guessed","message":"m"}"#
    );
}

fn invalid(f: impl FnOnce(&mut VmProfile)) -> String {
    let mut profile = p(LINUX_X86_64_PC_GRAPHICS);
    f(&mut profile);
    let err = validate_profile(&profile).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidProfile);
    err.to_string()
}

#[test]
fn profile_validation_messages() {
    let pre = "invalid VM profile 'linux-x86_64-pc-graphics': ";
    assert_eq!(
        invalid(|p| p.id.clear()),
        "invalid VM profile '': the id is empty"
    );
    assert_eq!(
        invalid(|p| p.name = " ".into()),
        format!("{pre}the name is empty")
    );
    assert_eq!(
        invalid(|p| p.machine.clear()),
        format!("{pre}the machine is empty")
    );
    assert_eq!(
        invalid(|p| p.memory_mib = 0),
        format!("{pre}memoryMiB must be above 0")
    );
    assert_eq!(invalid(|p| p.smp = 0), format!("{pre}smp must be above 0"));
    assert_eq!(
        invalid(|p| p.max_memory_mib = Some(256)),
        format!("{pre}maxMemoryMiB (256) is below memoryMiB (512)")
    );
    assert_eq!(
        invalid(|p| p.block_size_bytes = Some(1000)),
        format!("{pre}blockSizeBytes (1000) must be a power of two from 512 to 16777216")
    );
    assert_eq!(
        invalid(|p| p.block_size_bytes = Some(256)),
        format!("{pre}blockSizeBytes (256) must be a power of two from 512 to 16777216")
    );
    assert_eq!(
        invalid(|p| p.devices.usb = false),
        format!("{pre}a USB keyboard needs usb")
    );
    assert_eq!(
        invalid(|p| p.supports_graphics = false),
        format!("{pre}a USB keyboard needs a profile that supports graphics")
    );
    for profile in default_profiles() {
        validate_profile(&profile).unwrap();
    }
}

#[test]
fn api_errors() {
    let err = profile_by_id("no-such").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownProfile);
    assert_eq!(err.to_string(), "unknown VM profile 'no-such'");

    let mut set = ProfileSet::with_defaults();
    assert_eq!(set.len(), 7);
    let err = set.insert(p(MINIMAL_X86_64)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateProfile);
    assert_eq!(
        err.to_string(),
        "a VM profile with id 'minimal-x86_64' already exists"
    );

    let err = set.insert_json("{\"id\": 3}").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Json);
    assert!(
        err.to_string()
            .starts_with("invalid VM profile JSON: invalid type: integer `3`"),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());

    let err = set.get("x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownProfile);
    assert!(set.remove(MINIMAL_X86_64).is_some());
    assert!(set.get(MINIMAL_X86_64).is_err());
    assert!(ProfileSet::new().is_empty());
}
