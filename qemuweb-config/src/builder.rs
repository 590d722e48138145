//! `build_qemu_args`: profile + inputs + overrides + target -> QEMU command line.

use crate::network::{format_mac, parse_mac, NetworkAttachment, NetworkMode, NicModel};
use crate::profiles::validate_profile;
use crate::target::{Accelerator, BrowserTarget, NativeDisplay, NativeTarget, Target};
use crate::types::{
    Arch, DiskFormat, DiskInput, DiskInterface, FileMountInfo, ImageSource, Issue, IssueCode,
    MountRole, NetMode, PortForward, QemuArgsResult, SerialMode, VmInputs, VmOverrides, VmProfile,
};

/// Options that exist only on a host, never in the browser build: `(option, takes a value)`.
const HOST_ONLY_OPTIONS: &[(&str, bool)] = &[
    ("-daemonize", false),
    ("-pidfile", true),
    ("-runas", true),
    ("-chroot", true),
    ("-mem-path", true),
    ("-mem-prealloc", false),
    ("-sandbox", true),
];

/// Builds the QEMU command line for `profile` booting `inputs` on `target`.
///
/// Deterministic: the same arguments always give the same result (native hosts are
/// described by [`HostCaps`](crate::HostCaps), detected once by the caller). Problems are
/// reported, never panicked on: [`QemuArgsResult::errors`] lists every reason the
/// combination cannot run (and `args` is then empty), [`QemuArgsResult::warnings`] what was
/// changed or is doubtful. Every issue has an [`IssueCode`] and a message.
///
/// The arguments, in order: `-L` (if the target has a firmware directory), `-nodefaults
/// -no-user-config`, `-machine`, `-accel`, `-cpu`, `-m`, `-smp`, display, serial, kernel,
/// disks (always with an explicit `format=`), network, entropy, USB, then the profile's
/// `defaultArgs` and the overrides' `extraArgs`.
///
/// - **Browser**: the accelerator is TCG (the wasm build's interpreter); accelerator and
///   host-only options are dropped with a warning; files are mounted under the target's
///   `mountDir` as `disk0.qcow2`, `disk1.raw`, `kernel`, `initrd`; memory must fit the
///   build's limit; only the archs the build has can run.
/// - **Native**: the accelerator is resolved with
///   [`NativeTarget::resolve_accelerator`]; files are used where they are; a disk overlay
///   replaces the boot disk.
///
/// ```
/// use qemuweb_config::*;
/// let profile = profile_by_id("linux-i386-pc-nographic").unwrap();
/// let inputs = VmInputs {
///     disk: Some(DiskInput::new(ImageSource::file("guest.qcow2"), DiskFormat::Qcow2)),
///     ..VmInputs::default()
/// };
/// let target = Target::Browser(BrowserTarget::qemu_wasm_i386());
/// let result = build_qemu_args(&profile, &inputs, None, &target);
/// assert!(result.is_ok());
/// assert_eq!(result.binary, "qemu-system-i386");
/// assert!(result.args.contains(&"file=/mnt/disk0.qcow2,format=qcow2,if=ide,index=0,media=disk".to_string()));
/// assert_eq!(result.warning_codes(), vec![IssueCode::UserNetUnavailable]);
/// ```
pub fn build_qemu_args(
    profile: &VmProfile,
    inputs: &VmInputs,
    overrides: Option<&VmOverrides>,
    target: &Target,
) -> QemuArgsResult {
    let default_overrides = VmOverrides::default();
    let ov = overrides.unwrap_or(&default_overrides);
    let mut b = Builder {
        profile,
        target,
        args: Vec::new(),
        files: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    b.build(inputs, ov);
    let ok = b.errors.is_empty();
    QemuArgsResult {
        binary: profile.arch.qemu_binary().to_string(),
        args: if ok { b.args } else { Vec::new() },
        arch: profile.arch,
        files_to_mount: if ok { b.files } else { Vec::new() },
        warnings: b.warnings,
        errors: b.errors,
    }
}

/// The `qemu-img` arguments that create `overlay`, a qcow2 image backed by `base` (of
/// format `base_format`), for [`NativeTarget::disk_overlay`].
///
/// ```
/// use qemuweb_config::{overlay_create_args, DiskFormat};
/// assert_eq!(
///     overlay_create_args("/images/base.raw", DiskFormat::Raw, "/run/vm/disk.qcow2"),
///     ["create", "-q", "-f", "qcow2", "-b", "/images/base.raw", "-F", "raw", "/run/vm/disk.qcow2"],
/// );
/// ```
pub fn overlay_create_args(base: &str, base_format: DiskFormat, overlay: &str) -> Vec<String> {
    [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base,
        "-F",
        base_format.as_str(),
        overlay,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The UEFI firmware (edk2's ArmVirtQemu, Debian's `qemu-efi-aarch64`) an aarch64 guest
/// without a kernel boots from: it starts the EFI bootloader of the disk.
pub const AARCH64_EFI_FIRMWARE: &str = "QEMU_EFI.fd";

/// Whether `machine` is x86's `microvm`, which has no PCI bus: its virtio devices sit on
/// virtio-mmio transports (`virtio-blk-device`, ...).
fn is_microvm(machine: &str) -> bool {
    machine == "microvm" || machine.starts_with("microvm,")
}

/// The virtio device `base` (e.g. `virtio-blk`) on the machine's transport: `-device` on
/// `microvm`, `-pci` elsewhere.
fn virtio_device(base: &str, machine: &str) -> String {
    if is_microvm(machine) {
        format!("{base}-device")
    } else {
        format!("{base}-pci")
    }
}

/// QEMU's device for a NIC of `model`, virtio on the machine's transport
/// (`virtio-net-device` on `microvm`).
fn nic_device(model: NicModel, machine: &str) -> String {
    match model {
        NicModel::VirtioNet => virtio_device("virtio-net", machine),
        other => other.qemu_device().to_string(),
    }
}

/// Doubles commas, as QEMU's option syntax needs inside a value such as `file=`.
fn escape_opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// The format of `location` by its extension, if known.
fn format_from_name(location: &str) -> Option<DiskFormat> {
    let name = location.split(['?', '#']).next().unwrap_or(location);
    let name = name.rsplit('/').next().unwrap_or(name);
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "qcow2" | "qcow" => Some(DiskFormat::Qcow2),
        "img" | "raw" | "bin" | "iso" | "dd" => Some(DiskFormat::Raw),
        _ => None,
    }
}

struct Builder<'a> {
    profile: &'a VmProfile,
    target: &'a Target,
    args: Vec<String>,
    files: Vec<FileMountInfo>,
    warnings: Vec<Issue>,
    errors: Vec<Issue>,
}

struct Effective {
    memory: u32,
    smp: u32,
    cpu: Option<String>,
    machine: String,
    graphics: bool,
    disk_interface: DiskInterface,
    net: NetMode,
    serial: SerialMode,
    /// `-serial file:PATH` in place of `serial`.
    serial_file: Option<String>,
    forwards: Vec<PortForward>,
    /// NICs on named networks (when not empty, `net` is `None`).
    networks: Vec<NetworkAttachment>,
    accel: Accelerator,
}

impl Builder<'_> {
    fn error(&mut self, code: IssueCode, message: String) {
        self.errors.push(Issue::new(code, message));
    }

    fn warn(&mut self, code: IssueCode, message: String) {
        self.warnings.push(Issue::new(code, message));
    }

    fn push<S: Into<String>>(&mut self, items: impl IntoIterator<Item = S>) {
        self.args.extend(items.into_iter().map(Into::into));
    }

    fn browser(&self) -> Option<&BrowserTarget> {
        match self.target {
            Target::Browser(b) => Some(b),
            Target::Native(_) => None,
        }
    }

    fn native(&self) -> Option<&NativeTarget> {
        match self.target {
            Target::Native(n) => Some(n),
            Target::Browser(_) => None,
        }
    }

    fn build(&mut self, inputs: &VmInputs, ov: &VmOverrides) {
        let profile = self.profile;
        if let Err(err) = validate_profile(profile) {
            self.error(IssueCode::InvalidProfile, err.to_string());
            return;
        }
        let Some(eff) = self.effective(ov) else {
            return;
        };

        if let Some(dir) = self.firmware_dir() {
            self.push(["-L".to_string(), dir]);
        }
        self.push(["-nodefaults", "-no-user-config"]);
        self.push(["-machine".to_string(), eff.machine.clone()]);
        self.push(["-accel", eff.accel.as_str()]);
        if let Some(cpu) = &eff.cpu {
            self.push(["-cpu".to_string(), cpu.clone()]);
        }
        self.push(["-m".to_string(), eff.memory.to_string()]);
        self.push(["-smp".to_string(), eff.smp.to_string()]);
        self.display(&eff);
        self.serial(eff.serial, eff.serial_file.as_deref());
        self.boot(inputs, ov);
        self.disks(inputs, &eff);
        if eff.networks.is_empty() {
            self.net(eff.net, &eff.forwards, &eff.machine);
        } else {
            self.networks(&eff.networks, &eff.forwards, &eff.machine);
        }
        if profile.devices.rng {
            let rng = virtio_device("virtio-rng", &eff.machine);
            self.push(["-device".to_string(), rng]);
        }
        self.usb(&eff);
        self.user_args(&profile.default_args, "the profile's defaultArgs", &eff);
        self.user_args(&ov.extra_args, "the overrides' extraArgs", &eff);
    }

    fn firmware_dir(&self) -> Option<String> {
        match self.target {
            Target::Browser(b) => b.firmware_dir.clone(),
            Target::Native(n) => n.firmware_dir.clone(),
        }
    }

    /// Profile values with overrides applied and checked against the profile and target.
    /// `None` if the overrides are unusable.
    fn effective(&mut self, ov: &VmOverrides) -> Option<Effective> {
        let profile = self.profile;
        let arch = profile.arch;
        let memory = ov.memory_mib.unwrap_or(profile.memory_mib);
        let smp = ov.smp.unwrap_or(profile.smp);
        let mut bad = false;
        if memory == 0 {
            self.error(
                IssueCode::InvalidOverride,
                "memoryMiB must be above 0".into(),
            );
            bad = true;
        }
        if smp == 0 {
            self.error(IssueCode::InvalidOverride, "smp must be above 0".into());
            bad = true;
        }
        if bad {
            return None;
        }
        if let Some(max) = profile.max_memory_mib {
            if memory > max {
                self.error(
                    IssueCode::MemoryAboveProfileMax,
                    format!(
                        "memory {memory} MiB is above the maximum of {max} MiB for profile '{}'",
                        profile.id
                    ),
                );
            }
        }

        let graphics = match ov.graphics {
            Some(true) if !profile.supports_graphics => {
                self.error(
                    IssueCode::GraphicsUnsupported,
                    format!("profile '{}' does not support graphics", profile.id),
                );
                false
            }
            Some(on) => on,
            None => profile.supports_graphics,
        };
        if profile.devices.keyboard && !graphics {
            self.error(
                IssueCode::GraphicsDeviceWithoutDisplay,
                format!(
                    "the USB keyboard of profile '{}' needs a display, but graphics are off",
                    profile.id
                ),
            );
        }

        let mut cpu = ov.cpu.clone().or_else(|| profile.cpu.clone());
        let mut serial = profile.devices.serial;
        let mut net = ov.net.unwrap_or(profile.devices.net);
        let mut networks = crate::network::effective_networks(profile, Some(ov));
        if !networks.is_empty() {
            // Named networks replace the profile's own NIC.
            net = NetMode::None;
        }
        let mut serial_file = ov.serial_file.clone();
        let mut forwards = ov.port_forwards.clone();
        if let Some(path) = &serial_file {
            if path.is_empty() || path.contains(',') {
                self.error(
                    IssueCode::InvalidSerialFile,
                    format!("serial file '{path}': the path must be non-empty without commas"),
                );
            }
        }
        for (i, f) in forwards.iter().enumerate() {
            let twice = forwards[..i]
                .iter()
                .any(|o| o.protocol == f.protocol && o.host_port == f.host_port);
            if f.host_port == 0 || f.guest_port == 0 || twice {
                self.error(
                    IssueCode::InvalidPortForward,
                    format!(
                        "port forward {}: ports must be from 1 to 65535 and each host port \
                         forwarded once",
                        f.hostfwd()
                    ),
                );
            }
        }
        let accel;
        match self.target {
            Target::Browser(browser) => {
                accel = Accelerator::Tcg;
                if !browser.archs.contains(&arch) {
                    let runs = browser
                        .archs
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.error(
                        IssueCode::ArchUnsupported,
                        format!(
                            "the browser build cannot run {arch} guests (it runs: {})",
                            if runs.is_empty() { "none" } else { &runs }
                        ),
                    );
                }
                if memory > browser.max_memory_mib {
                    self.error(
                        IssueCode::MemoryAboveTargetMax,
                        format!(
                            "memory {memory} MiB is above the browser build's limit of {} MiB",
                            browser.max_memory_mib
                        ),
                    );
                }
                if cpu.as_deref() == Some("host") {
                    self.warn(
                        IssueCode::HostOnlyArgDropped,
                        "dropped CPU model 'host': the browser build has no host CPU to pass \
                         through; the machine's default CPU is used"
                            .into(),
                    );
                    cpu = None;
                }
                if serial == SerialMode::Pty {
                    self.warn(
                        IssueCode::SerialPtyUnavailable,
                        "serial 'pty' is not available in the browser; the serial port uses stdio"
                            .into(),
                    );
                    serial = SerialMode::Stdio;
                }
                if !forwards.is_empty() {
                    self.warn(
                        IssueCode::PortForwardUnavailable,
                        "port forwards dropped: a browser cannot listen on host ports".into(),
                    );
                    forwards.clear();
                }
                if serial_file.take().is_some() {
                    self.warn(
                        IssueCode::SerialFileUnavailable,
                        "serial file ignored: in the browser the worker owns the serial port"
                            .into(),
                    );
                }
                if net == NetMode::User && !browser.user_net {
                    self.warn(
                        IssueCode::UserNetUnavailable,
                        "user networking is not compiled into the browser build; the guest has \
                         no network"
                            .into(),
                    );
                    net = NetMode::None;
                }
                if !networks.is_empty() && !browser.netdev {
                    self.warn(
                        IssueCode::NetworkUnavailable,
                        "this browser build has no netdev for virtual networks; the guest has \
                         no network"
                            .into(),
                    );
                    networks.clear();
                }
                if smp > 1 {
                    self.warn(
                        IssueCode::SmpInBrowser,
                        format!(
                            "smp {smp} in the browser build: its TCG interpreter gains nothing \
                             from more vCPUs and the guest runs slower"
                        ),
                    );
                }
            }
            Target::Native(native) => {
                if !forwards.is_empty() && net != NetMode::User && networks.is_empty() {
                    self.error(
                        IssueCode::PortForwardWithoutNet,
                        "port forwards need user networking, which is off".into(),
                    );
                }
                accel = match native.resolve_accelerator(arch) {
                    Ok(accel) => accel,
                    Err(message) => {
                        self.error(IssueCode::AcceleratorUnavailable, message);
                        Accelerator::Tcg
                    }
                };
                if native.accelerator == Accelerator::Auto && accel == Accelerator::Tcg {
                    self.warn(
                        IssueCode::SoftwareEmulation,
                        format!(
                            "no usable KVM or HVF for {arch} guests on this host; using TCG \
                             software emulation, which is much slower"
                        ),
                    );
                }
                if accel == Accelerator::Tcg && cpu.as_deref() == Some("host") {
                    self.error(
                        IssueCode::CpuHostWithoutAccelerator,
                        "CPU model 'host' needs KVM or HVF, but TCG is in use".into(),
                    );
                }
                // Named Arm cores cannot be virtualized on other cores: a hardware
                // accelerated aarch64 guest uses the host's CPU unless told otherwise.
                if arch == Arch::Aarch64 && accel != Accelerator::Tcg && ov.cpu.is_none() {
                    cpu = Some("host".to_string());
                }
            }
        }
        Some(Effective {
            memory,
            smp,
            cpu,
            machine: ov
                .machine
                .clone()
                .unwrap_or_else(|| profile.machine.clone()),
            graphics,
            disk_interface: ov.disk_interface.unwrap_or(profile.devices.disk_interface),
            net,
            serial,
            serial_file,
            forwards,
            networks,
            accel,
        })
    }

    fn display(&mut self, eff: &Effective) {
        let arch = self.profile.arch;
        if !eff.graphics {
            self.push(["-display", "none"]);
            return;
        }
        match self.target {
            Target::Browser(browser) => {
                if !browser.display {
                    self.warn(
                        IssueCode::DisplayUnavailable,
                        "the browser build has no display backend: the display device is \
                         emulated but not shown"
                            .into(),
                    );
                    self.push(["-display", "none"]);
                } else {
                    // QemuWeb's display backend (qemuweb-wasm-build's patch 0020): the
                    // screen and input shared with the page's worker.
                    self.push(["-display", "qemuweb"]);
                }
            }
            Target::Native(native) => match native.display {
                NativeDisplay::None => self.push(["-display", "none"]),
                NativeDisplay::Default => {}
                NativeDisplay::Vnc { display } => {
                    self.push(["-display".to_string(), format!("vnc=127.0.0.1:{display}")])
                }
            },
        }
        if arch.is_x86() {
            self.push(["-vga", "std"]);
        } else {
            self.push(["-device", "virtio-gpu-pci"]);
        }
    }

    fn serial(&mut self, serial: SerialMode, file: Option<&str>) {
        if let Some(path) = file {
            self.push(["-serial".to_string(), format!("file:{path}")]);
            return;
        }
        match serial {
            SerialMode::Stdio => self.push(["-serial", "stdio"]),
            SerialMode::Pty => self.push(["-serial", "pty"]),
            SerialMode::None => {}
        }
    }

    /// The path QEMU sees for an input, or `None` after reporting why there is none.
    fn input_path(&mut self, what: &str, source: &ImageSource, mount_name: &str) -> Option<String> {
        let location = source.location();
        if location.trim().is_empty() {
            self.error(
                IssueCode::EmptySource,
                format!("{what} has an empty path or URL"),
            );
            return None;
        }
        match self.target {
            Target::Browser(browser) => Some(format!(
                "{}/{mount_name}",
                browser.mount_dir.trim_end_matches('/')
            )),
            Target::Native(_) => match source {
                ImageSource::File { path } => Some(path.clone()),
                ImageSource::Url { url } => {
                    self.error(
                        IssueCode::UrlNotSupportedNative,
                        format!(
                            "native QEMU needs a local file for {what}, not the URL '{url}'; \
                             download it first"
                        ),
                    );
                    None
                }
            },
        }
    }

    fn boot(&mut self, inputs: &VmInputs, ov: &VmOverrides) {
        let profile = self.profile;
        let cmdline = ov
            .kernel_cmdline
            .as_ref()
            .or(inputs.kernel_cmdline.as_ref());
        match &inputs.kernel {
            None => {
                if profile.requires_kernel {
                    let help = profile
                        .kernel_help_text
                        .as_deref()
                        .map(|h| format!(" {h}"))
                        .unwrap_or_default();
                    self.error(
                        IssueCode::KernelRequired,
                        format!(
                            "profile '{}' requires a kernel, but none was given.{help}",
                            profile.id
                        ),
                    );
                } else if inputs.disk.is_none() {
                    self.error(
                        IssueCode::NothingToBoot,
                        "nothing to boot: give a disk or a kernel".into(),
                    );
                } else if profile.arch == Arch::Aarch64 {
                    // No kernel: the disk's EFI bootloader, started by UEFI firmware.
                    let bios = self.aarch64_efi();
                    self.push(["-bios".to_string(), bios]);
                }
                if inputs.initrd.is_some() {
                    self.error(
                        IssueCode::InitrdWithoutKernel,
                        "an initrd was given without a kernel".into(),
                    );
                }
                if cmdline.is_some() {
                    self.warn(
                        IssueCode::CmdlineWithoutKernel,
                        "the kernel command line is ignored: no kernel was given".into(),
                    );
                }
            }
            Some(kernel) => {
                if let Some(path) = self.input_path("the kernel", kernel, "kernel") {
                    self.push(["-kernel".to_string(), path.clone()]);
                    self.files.push(FileMountInfo {
                        role: MountRole::Kernel,
                        index: 0,
                        source: kernel.clone(),
                        path,
                        format: None,
                        read_only: true,
                        block_size_bytes: None,
                        overlay_base: None,
                    });
                }
                if let Some(initrd) = &inputs.initrd {
                    if let Some(path) = self.input_path("the initrd", initrd, "initrd") {
                        self.push(["-initrd".to_string(), path.clone()]);
                        self.files.push(FileMountInfo {
                            role: MountRole::Initrd,
                            index: 0,
                            source: initrd.clone(),
                            path,
                            format: None,
                            read_only: true,
                            block_size_bytes: None,
                            overlay_base: None,
                        });
                    }
                }
                if let Some(cmdline) = cmdline {
                    self.push(["-append".to_string(), cmdline.clone()]);
                }
            }
        }
    }

    /// The UEFI firmware for an aarch64 guest booted from its disk: by name in the
    /// firmware directory when the target has one (the browser build's `/firmware`), else
    /// where Debian's `qemu-efi-aarch64` installs it.
    fn aarch64_efi(&self) -> String {
        match self.firmware_dir() {
            Some(_) => AARCH64_EFI_FIRMWARE.to_string(),
            None => format!("/usr/share/qemu-efi-aarch64/{AARCH64_EFI_FIRMWARE}"),
        }
    }

    fn disks(&mut self, inputs: &VmInputs, eff: &Effective) {
        let overlay = self.native().and_then(|n| n.disk_overlay.clone());
        if overlay.is_some() && inputs.disk.is_none() {
            self.error(
                IssueCode::OverlayWithoutDisk,
                "a disk overlay was given, but there is no boot disk".into(),
            );
        }
        // The boot disk boots first (bootindex 0), unless a kernel is booted directly: on
        // x86 QEMU's linuxboot option ROM holds bootindex 0 then, and a second one is
        // refused ("The bootindex 0 has already been used").
        let direct = inputs.kernel.is_some() && self.profile.arch.is_x86();
        let disks: Vec<(&DiskInput, bool)> = inputs
            .disk
            .iter()
            .map(|d| (d, !direct))
            .chain(inputs.additional_disks.iter().map(|d| (d, false)))
            .collect();
        if disks.is_empty() {
            return;
        }
        let iface = eff.disk_interface;
        if iface == DiskInterface::Ide && is_microvm(&eff.machine) {
            self.error(
                IssueCode::DiskInterfaceUnsupported,
                "IDE disks are not available on the microvm machine (it has no PCI bus); use \
                 virtio-blk or scsi"
                    .into(),
            );
            return;
        }
        if iface == DiskInterface::Ide {
            if !self.profile.arch.is_x86() {
                self.error(
                    IssueCode::DiskInterfaceUnsupported,
                    format!(
                        "IDE disks are not available on {} machines; use virtio-blk or scsi",
                        self.profile.arch
                    ),
                );
                return;
            }
            let ports = if eff.machine.starts_with("q35") { 6 } else { 4 };
            if disks.len() > ports {
                self.error(
                    IssueCode::TooManyDisks,
                    format!(
                        "{} IDE disks were given, but machine '{}' has {ports} IDE ports",
                        disks.len(),
                        eff.machine
                    ),
                );
                return;
            }
        }
        if iface == DiskInterface::Scsi {
            if is_microvm(&eff.machine) && disks.iter().any(|(_, boot)| *boot) {
                // SeaBIOS on microvm has no timer it can calibrate (no ACPI PM timer, no
                // port 0x61 to time the PIT with), so its 5 s wait for a SCSI disk to become
                // ready lasts tens of milliseconds. With ioeventfd the main loop answers the
                // disk's commands, which on a busy host comes too late (no boot disk, about
                // one boot in four under load); without it the vCPU answers them itself,
                // at once.
                self.push(["-global", "virtio-mmio.ioeventfd=off"]);
            }
            let scsi = virtio_device("virtio-scsi", &eff.machine);
            self.push(["-device".to_string(), format!("{scsi},id=scsi0")]);
        }
        let blk = virtio_device("virtio-blk", &eff.machine);
        for (index, (disk, boot)) in disks.into_iter().enumerate() {
            self.disk(
                index,
                disk,
                boot,
                (iface, &blk),
                overlay.as_deref().filter(|_| boot),
            );
        }
    }

    fn disk(
        &mut self,
        index: usize,
        disk: &DiskInput,
        boot: bool,
        (iface, blk): (DiskInterface, &str),
        overlay: Option<&str>,
    ) {
        let id = format!("disk{index}");
        let format = match disk.format {
            Some(format) => format,
            None => format_from_name(disk.source.location()).unwrap_or_else(|| {
                self.warn(
                    IssueCode::FormatGuessed,
                    format!(
                        "cannot tell the format of {id} from '{}'; assuming raw (set the format \
                         to be sure)",
                        disk.source.location()
                    ),
                );
                DiskFormat::Raw
            }),
        };
        let mount_name = format!("{id}.{}", format.as_str());
        let Some(base_path) = self.input_path(&id, &disk.source, &mount_name) else {
            return;
        };
        let (path, format, read_only, overlay_base) = match overlay {
            Some(overlay) => (
                overlay.to_string(),
                DiskFormat::Qcow2,
                false,
                Some(base_path),
            ),
            None => (base_path, format, disk.read_only, None),
        };
        self.files.push(FileMountInfo {
            role: MountRole::Disk,
            index: index as u32,
            source: disk.source.clone(),
            path: path.clone(),
            format: Some(format),
            read_only,
            block_size_bytes: self.profile.block_size_bytes,
            overlay_base,
        });
        let file = format!("file={},format={}", escape_opt(&path), format.as_str());
        let bootindex = if boot { ",bootindex=0" } else { "" };
        match iface {
            DiskInterface::Ide => {
                let mut drive = format!("{file},if=ide,index={index},media=disk");
                if read_only {
                    self.warn(
                        IssueCode::ReadOnlyIdeSnapshot,
                        format!(
                            "IDE disks cannot be read-only in QEMU: {id} is attached with \
                             snapshot=on, so the guest's writes are discarded"
                        ),
                    );
                    drive.push_str(",snapshot=on");
                }
                self.push(["-drive".to_string(), drive]);
            }
            DiskInterface::VirtioBlk | DiskInterface::Scsi => {
                let ro = if read_only { ",readonly=on" } else { "" };
                self.push(["-drive".to_string(), format!("{file},if=none,id={id}{ro}")]);
                let device = if iface == DiskInterface::Scsi {
                    format!("scsi-hd,drive={id},bus=scsi0.0{bootindex}")
                } else {
                    format!("{blk},drive={id}{bootindex}")
                };
                self.push(["-device".to_string(), device]);
            }
        }
    }

    fn net(&mut self, net: NetMode, forwards: &[PortForward], machine: &str) {
        if net == NetMode::User {
            // e1000 for the 32-bit PC (the NIC old and small guests know), virtio elsewhere.
            // `romfile=` leaves out the NIC's PXE option ROM: boots stay on the disk and no
            // iPXE files are needed (a virtio-mmio NIC has no ROM at all).
            let nic = nic_device(NicModel::qemu_default(self.profile.arch), machine);
            let mut netdev = "user,id=net0".to_string();
            for f in forwards {
                netdev.push_str(",hostfwd=");
                netdev.push_str(&f.hostfwd());
            }
            self.push(["-netdev".to_string(), netdev]);
            let rom = if is_microvm(machine) { "" } else { ",romfile=" };
            self.push(["-device".to_string(), format!("{nic},netdev=net0{rom}")]);
        }
    }

    /// The NICs on named networks: QemuWeb's netdev in the browser; user networking with
    /// the network's addresses natively (the per-VM `portForwards` go to the first NIC).
    fn networks(
        &mut self,
        networks: &[NetworkAttachment],
        forwards: &[PortForward],
        machine: &str,
    ) {
        for (i, a) in networks.iter().enumerate() {
            let id = format!("net{i}");
            let netdev = match self.target {
                Target::Browser(_) => format!("qemuweb,id={id}"),
                Target::Native(native) => {
                    let Some(network) = native.networks.iter().find(|n| n.id == a.network) else {
                        self.error(
                            IssueCode::UnknownNetwork,
                            format!("NIC {i}: no network '{}' is defined", a.network),
                        );
                        continue;
                    };
                    let plan = match network.plan().and_then(|p| a.check(&p).map(|()| p)) {
                        Ok(p) => p,
                        Err(e) => {
                            self.error(IssueCode::InvalidNetwork, format!("NIC {i}: {e}"));
                            continue;
                        }
                    };
                    let mut netdev = format!(
                        "user,id={id},ipv4=on,ipv6=off,net={},host={}",
                        plan.cidr(),
                        plan.gateway
                    );
                    if let Some(dns) = plan.dns {
                        netdev.push_str(&format!(",dns={dns}"));
                    }
                    if let Some(dhcp) = plan.dhcp {
                        netdev.push_str(&format!(",dhcpstart={}", dhcp.start));
                    }
                    if plan.mode == NetworkMode::Isolated {
                        netdev.push_str(",restrict=on");
                    }
                    if i == 0 {
                        for f in forwards {
                            netdev.push_str(",hostfwd=");
                            netdev.push_str(&f.hostfwd());
                        }
                    }
                    netdev
                }
            };
            let model = a.model.unwrap_or(NicModel::qemu_default(self.profile.arch));
            let mut device = format!("{},netdev={id}", nic_device(model, machine));
            if let Some(mac) = &a.mac {
                match parse_mac(mac) {
                    Some(m) => device.push_str(&format!(",mac={}", format_mac(m))),
                    None => {
                        self.error(
                            IssueCode::InvalidNetwork,
                            format!("NIC {i}: mac '{mac}' is malformed"),
                        );
                        continue;
                    }
                }
            }
            if !is_microvm(machine) {
                device.push_str(",romfile=");
            }
            self.push(["-netdev".to_string(), netdev]);
            self.push(["-device".to_string(), device]);
        }
    }

    fn usb(&mut self, eff: &Effective) {
        let devices = &self.profile.devices;
        if !devices.usb {
            return;
        }
        let keyboard = devices.keyboard;
        self.push(["-device", "qemu-xhci,id=usb0"]);
        if eff.graphics {
            self.push(["-device", "usb-tablet,bus=usb0.0"]);
        }
        if keyboard && eff.graphics {
            self.push(["-device", "usb-kbd,bus=usb0.0"]);
        }
    }

    /// Appends user-given arguments, dropping what cannot apply on this target.
    fn user_args(&mut self, args: &[String], origin: &str, eff: &Effective) {
        let browser = self.browser().is_some();
        let accel = eff.accel.as_str();
        let mut i = 0;
        while i < args.len() {
            let arg = args[i].as_str();
            let takes_value = match arg {
                "-enable-kvm" => Some(false),
                "-accel" => Some(true),
                _ => None,
            };
            if let Some(takes_value) = takes_value {
                let shown = if takes_value && i + 1 < args.len() {
                    format!("{arg} {}", args[i + 1])
                } else {
                    arg.to_string()
                };
                if browser {
                    self.warn(
                        IssueCode::HostOnlyArgDropped,
                        format!(
                            "dropped '{shown}' from {origin}: the browser build always uses its \
                             TCG interpreter"
                        ),
                    );
                } else {
                    self.warn(
                        IssueCode::AcceleratorArgDropped,
                        format!(
                            "dropped '{shown}' from {origin}: the target chooses the accelerator \
                             ({accel})"
                        ),
                    );
                }
                i += if takes_value { 2 } else { 1 };
                continue;
            }
            if browser {
                if let Some(&(_, takes_value)) =
                    HOST_ONLY_OPTIONS.iter().find(|(name, _)| *name == arg)
                {
                    let shown = if takes_value && i + 1 < args.len() {
                        format!("{arg} {}", args[i + 1])
                    } else {
                        arg.to_string()
                    };
                    self.warn(
                        IssueCode::HostOnlyArgDropped,
                        format!(
                            "dropped '{shown}' from {origin}: a host-only option the browser \
                             build does not have"
                        ),
                    );
                    i += if takes_value { 2 } else { 1 };
                    continue;
                }
                if arg == "-cpu" && args.get(i + 1).map(String::as_str) == Some("host") {
                    self.warn(
                        IssueCode::HostOnlyArgDropped,
                        format!(
                            "dropped '-cpu host' from {origin}: the browser build has no host \
                             CPU to pass through"
                        ),
                    );
                    i += 2;
                    continue;
                }
            }
            self.args.push(arg.to_string());
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        assert_eq!(format_from_name("a/b/c.QCOW2"), Some(DiskFormat::Qcow2));
        assert_eq!(
            format_from_name("https://x.test/d.img?sig=1.qcow2"),
            Some(DiskFormat::Raw)
        );
        assert_eq!(format_from_name("https://x.test/v1.0/disk"), None);
        assert_eq!(format_from_name("disk"), None);
        assert_eq!(format_from_name("disk.vmdk"), None);
    }

    #[test]
    fn commas_are_escaped() {
        assert_eq!(escape_opt("/a,b/c"), "/a,,b/c");
    }
}
