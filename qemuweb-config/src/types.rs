//! The data types of profiles, inputs, overrides and results, shared with TypeScript.

use serde::{Deserialize, Serialize};
use tsify::Tsify;

/// A guest CPU architecture, which picks the QEMU system emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
pub enum Arch {
    /// 64-bit x86 (`qemu-system-x86_64`).
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit Arm (`qemu-system-aarch64`).
    #[serde(rename = "aarch64")]
    Aarch64,
    /// 32-bit x86 (`qemu-system-i386`), the only guest arch of today's wasm32 QEMU and v86.
    #[serde(rename = "i386")]
    I386,
}

impl Arch {
    /// The name QEMU and this crate's serialized form use: `x86_64`, `aarch64` or `i386`.
    ///
    /// ```
    /// assert_eq!(qemuweb_config::Arch::Aarch64.as_str(), "aarch64");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::I386 => "i386",
        }
    }

    /// The QEMU system emulator for this arch, e.g. `qemu-system-x86_64`.
    ///
    /// ```
    /// assert_eq!(qemuweb_config::Arch::I386.qemu_binary(), "qemu-system-i386");
    /// ```
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
            Arch::I386 => "qemu-system-i386",
        }
    }

    /// Whether this is an x86 arch (BIOS boot, VGA, IDE).
    pub fn is_x86(self) -> bool {
        matches!(self, Arch::X86_64 | Arch::I386)
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How disks are attached to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum DiskInterface {
    /// `virtio-blk-pci`, one PCI device per disk.
    VirtioBlk,
    /// IDE (AHCI on `q35`), x86 only; the one interface v86 emulates.
    Ide,
    /// `scsi-hd` disks on one `virtio-scsi-pci` controller.
    Scsi,
}

impl DiskInterface {
    /// The serialized name: `virtio-blk`, `ide` or `scsi`.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskInterface::VirtioBlk => "virtio-blk",
            DiskInterface::Ide => "ide",
            DiskInterface::Scsi => "scsi",
        }
    }
}

/// Guest networking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum NetMode {
    /// QEMU user-mode networking (slirp) behind one NIC.
    User,
    /// No network device.
    None,
}

/// Where the guest's first serial port goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum SerialMode {
    /// QEMU's standard input and output (in the browser: the worker's stdin/stdout callbacks).
    Stdio,
    /// A host pseudo-terminal (native only; the browser build falls back to `stdio`).
    Pty,
    /// No serial port.
    None,
}

/// The devices a profile gives its machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct VmDevices {
    /// How disks are attached.
    pub disk_interface: DiskInterface,
    /// Networking.
    pub net: NetMode,
    /// A `virtio-rng-pci` entropy device.
    #[serde(default)]
    pub rng: bool,
    /// The first serial port.
    pub serial: SerialMode,
    /// A USB controller (`qemu-xhci`) with a USB tablet for absolute pointing.
    #[serde(default)]
    pub usb: bool,
    /// A USB keyboard (needs `usb` and a display). x86 machines always have a PS/2 keyboard.
    #[serde(default)]
    pub keyboard: bool,
}

/// A machine the user can pick: arch, machine type, CPU, memory and devices.
///
/// The serialized form uses the reference design's camelCase names (`memoryMiB`,
/// `supportsGraphics`, ...), so TypeScript code reads and writes the same objects; see
/// [`ProfileSet::insert_json`](crate::ProfileSet::insert_json) for a custom profile in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct VmProfile {
    /// Stable identifier, e.g. `linux-x86_64-pc-nographic`: lowercase ASCII letters, digits,
    /// `-`, `_` and `.`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// One or two sentences for a picker.
    #[serde(default)]
    pub description: String,
    /// Guest architecture.
    pub arch: Arch,
    /// QEMU machine type (`-machine`), e.g. `q35`, `pc`, `virt`.
    pub machine: String,
    /// QEMU CPU model (`-cpu`); `None` keeps the machine's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub cpu: Option<String>,
    /// Guest RAM in MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u32,
    /// Number of virtual CPUs.
    pub smp: u32,
    /// Whether the machine has a display device (VGA / virtio-gpu).
    pub supports_graphics: bool,
    /// Extra QEMU arguments appended after the generated ones. Host-only options
    /// (`-enable-kvm`, `-accel kvm`, ...) are dropped with a warning where they cannot apply.
    #[serde(default)]
    pub default_args: Vec<String>,
    /// Whether a kernel (`-kernel`) must be given: machines without usable firmware, such as
    /// `virt`, boot nothing else.
    pub requires_kernel: bool,
    /// What to tell a user who has to supply the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub kernel_help_text: Option<String>,
    /// The machine's devices.
    pub devices: VmDevices,
    /// The size of the HTTP Range reads of this machine's disk images in the browser (the
    /// runtime fetches whole blocks of this size, clamped to 4 KiB-1 MiB); a power of two
    /// from 512 to 16 MiB. It is not the block size of the copy-on-write overlays that keep
    /// the guest's writes: those are always 4096 bytes (`OVERLAY_BLOCK_SIZE` of
    /// `qemuweb-runtime`). Passed on in [`FileMountInfo::block_size_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub block_size_bytes: Option<u32>,
    /// The most RAM (MiB) this profile may be given with overrides.
    #[serde(
        rename = "maxMemoryMiB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[tsify(optional)]
    pub max_memory_mib: Option<u32>,
    /// The NICs this machine has on named virtual networks (see
    /// [`VirtualNetwork`](crate::VirtualNetwork)); when there are any, they replace the
    /// `devices.net` NIC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[tsify(optional)]
    pub networks: Vec<crate::NetworkAttachment>,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ImageSource {
    /// A local file: its path natively, or the name of the `File`/`Blob` the page holds
    /// in the browser (the bytes stay in JavaScript; the worker mounts them).
    File {
        /// Path (native) or file name (browser).
        path: String,
    },
    /// An image behind an HTTP(S) URL, read with Range requests by the browser storage
    /// layer. Native QEMU needs a local file instead.
    Url {
        /// The URL.
        url: String,
    },
}

impl ImageSource {
    /// A [`ImageSource::File`].
    pub fn file(path: impl Into<String>) -> Self {
        ImageSource::File { path: path.into() }
    }

    /// A [`ImageSource::Url`].
    pub fn url(url: impl Into<String>) -> Self {
        ImageSource::Url { url: url.into() }
    }

    /// The path or URL.
    pub fn location(&self) -> &str {
        match self {
            ImageSource::File { path } => path,
            ImageSource::Url { url } => url,
        }
    }
}

/// A disk image format. QEMU is always told the format (`format=` in `-drive`), never
/// left to probe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// A raw image.
    Raw,
    /// A qcow2 image.
    Qcow2,
}

impl DiskFormat {
    /// The name QEMU uses: `raw` or `qcow2`.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// One disk the guest sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct DiskInput {
    /// Where the image is.
    pub source: ImageSource,
    /// The image format; `None` infers it from the file name (`.qcow2`/`.qcow` = qcow2;
    /// `.img`, `.raw`, `.bin`, `.iso`, `.dd` = raw; anything else = raw with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub format: Option<DiskFormat>,
    /// Attach the disk read-only.
    #[serde(default)]
    pub read_only: bool,
}

impl DiskInput {
    /// A writable disk with an explicit format.
    pub fn new(source: ImageSource, format: DiskFormat) -> Self {
        DiskInput {
            source,
            format: Some(format),
            read_only: false,
        }
    }

    /// The same disk, read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
}

/// What to boot: disks, kernel, initrd, kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct VmInputs {
    /// The boot disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub disk: Option<DiskInput>,
    /// A kernel for `-kernel` (direct boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub kernel: Option<ImageSource>,
    /// An initial ramdisk for `-initrd`; needs a kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub initrd: Option<ImageSource>,
    /// The kernel command line for `-append`; needs a kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub kernel_cmdline: Option<String>,
    /// More disks after the boot disk.
    #[serde(default)]
    pub additional_disks: Vec<DiskInput>,
}

/// Per-run changes to a profile. Every `None` keeps the profile's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct VmOverrides {
    /// Guest RAM in MiB; at most the profile's `maxMemoryMiB` and the target's limit.
    #[serde(rename = "memoryMiB", default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub memory_mib: Option<u32>,
    /// Number of virtual CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub smp: Option<u32>,
    /// CPU model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub cpu: Option<String>,
    /// Machine type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub machine: Option<String>,
    /// Turn the display on or off; on needs a profile that supports graphics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub graphics: Option<bool>,
    /// Disk interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub disk_interface: Option<DiskInterface>,
    /// Networking. `none` also removes the NICs of `networks` and of the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub net: Option<NetMode>,
    /// The NICs on named virtual networks, replacing the profile's `networks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub networks: Option<Vec<crate::NetworkAttachment>>,
    /// Kernel command line, replacing the one in the inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub kernel_cmdline: Option<String>,
    /// QEMU arguments appended last (filtered like the profile's `defaultArgs`).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Host ports forwarded to the guest over user networking (native only; the browser
    /// target drops them with a warning).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[tsify(optional)]
    pub port_forwards: Vec<PortForward>,
    /// Write the first serial port to this file (`-serial file:PATH`) instead of the
    /// profile's serial mode (native only; the browser keeps the worker's serial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub serial_file: Option<String>,
}

/// The transport of a [`PortForward`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum ForwardProtocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A port on the host's `127.0.0.1` forwarded to a guest port through QEMU's user
/// network (`hostfwd`). Native targets only: a browser cannot listen on host ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct PortForward {
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: ForwardProtocol,
    /// The port on the host's `127.0.0.1`.
    pub host_port: u16,
    /// The guest's port.
    pub guest_port: u16,
}

impl PortForward {
    /// A TCP forward from `127.0.0.1:host_port` to the guest's `guest_port`.
    pub fn tcp(host_port: u16, guest_port: u16) -> Self {
        PortForward {
            protocol: ForwardProtocol::Tcp,
            host_port,
            guest_port,
        }
    }

    /// QEMU's `hostfwd=` value.
    ///
    /// ```
    /// assert_eq!(qemuweb_config::PortForward::tcp(8080, 80).hostfwd(), "tcp:127.0.0.1:8080-:80");
    /// ```
    pub fn hostfwd(&self) -> String {
        let proto = match self.protocol {
            ForwardProtocol::Tcp => "tcp",
            ForwardProtocol::Udp => "udp",
        };
        format!("{proto}:127.0.0.1:{}-:{}", self.host_port, self.guest_port)
    }
}

impl std::str::FromStr for PortForward {
    type Err = crate::ConfigError;

    /// Parses `[tcp:|udp:]HOST_PORT:GUEST_PORT`, e.g. `8080:80`.
    ///
    /// ```
    /// use qemuweb_config::{ForwardProtocol, PortForward};
    /// let f: PortForward = "udp:5353:53".parse().unwrap();
    /// assert_eq!((f.protocol, f.host_port, f.guest_port), (ForwardProtocol::Udp, 5353, 53));
    /// assert!("80".parse::<PortForward>().is_err());
    /// assert!("0:80".parse::<PortForward>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || crate::ConfigError::InvalidPortForward { text: s.into() };
        let (protocol, rest) = match s.strip_prefix("udp:") {
            Some(r) => (ForwardProtocol::Udp, r),
            None => (ForwardProtocol::Tcp, s.strip_prefix("tcp:").unwrap_or(s)),
        };
        let (h, g) = rest.split_once(':').ok_or_else(bad)?;
        let host_port: u16 = h.parse().map_err(|_| bad())?;
        let guest_port: u16 = g.parse().map_err(|_| bad())?;
        if host_port == 0 || guest_port == 0 {
            return Err(bad());
        }
        Ok(PortForward {
            protocol,
            host_port,
            guest_port,
        })
    }
}

/// What a mounted file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum MountRole {
    /// A disk (`index` 0 is the boot disk).
    Disk,
    /// The `-kernel` image.
    Kernel,
    /// The `-initrd` image.
    Initrd,
}

/// A file QEMU opens, and where it sees it.
///
/// In the browser the worker must place `source` at `path` in the module's filesystem
/// before starting QEMU; natively `path` is the real path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct FileMountInfo {
    /// What the file is for.
    pub role: MountRole,
    /// The disk number for disks (`disk0` is the boot disk); 0 otherwise.
    pub index: u32,
    /// Where the bytes come from.
    pub source: ImageSource,
    /// The path in QEMU's arguments.
    pub path: String,
    /// The disk format passed to QEMU (disks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub format: Option<DiskFormat>,
    /// Whether QEMU opens it read-only (kernel and initrd always are).
    pub read_only: bool,
    /// The profile's `blockSizeBytes`: the size of the HTTP Range reads of the image (disks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub block_size_bytes: Option<u32>,
    /// Natively, with an overlay: the base image under the qcow2 overlay at `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub overlay_base: Option<String>,
}

/// Whether an [`Issue`] stops the build or only warns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// The arguments cannot work; [`QemuArgsResult::errors`].
    Error,
    /// The arguments work but something was changed or is doubtful;
    /// [`QemuArgsResult::warnings`].
    Warning,
}

/// What went wrong or is doubtful, for callers to match on. Each code always has the same
/// [`Severity`] ([`IssueCode::severity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum IssueCode {
    /// Error: the profile fails [`validate_profile`](crate::validate_profile).
    InvalidProfile,
    /// Error: memory or smp overridden to 0.
    InvalidOverride,
    /// Error: the profile needs a kernel and none was given.
    KernelRequired,
    /// Error: no disk and no kernel.
    NothingToBoot,
    /// Error: an initrd without a kernel.
    InitrdWithoutKernel,
    /// Error: memory above the profile's `maxMemoryMiB`.
    MemoryAboveProfileMax,
    /// Error: memory above what the target can give a guest.
    MemoryAboveTargetMax,
    /// Error: the target cannot run guests of this arch.
    ArchUnsupported,
    /// Error: graphics turned on for a profile without graphics support.
    GraphicsUnsupported,
    /// Error: a device that only works with a display (USB keyboard) while graphics are off.
    GraphicsDeviceWithoutDisplay,
    /// Error: the disk interface does not exist on this arch.
    DiskInterfaceUnsupported,
    /// Error: more IDE disks than the machine has IDE ports.
    TooManyDisks,
    /// Error: an image path or URL is empty.
    EmptySource,
    /// Error: native QEMU was given a URL instead of a local file.
    UrlNotSupportedNative,
    /// Error: the requested accelerator cannot run here (or cannot run this arch).
    AcceleratorUnavailable,
    /// Error: CPU model `host` without a hardware accelerator.
    CpuHostWithoutAccelerator,
    /// Error: a disk overlay was given without a disk.
    OverlayWithoutDisk,
    /// Error: port forwards with networking off (a profile or override without user net).
    PortForwardWithoutNet,
    /// Error: two port forwards on the same host port and protocol, or a port of 0.
    InvalidPortForward,
    /// Error: the serial file path is empty or holds a comma.
    InvalidSerialFile,
    /// Error: a NIC is attached to a network the target does not define.
    UnknownNetwork,
    /// Error: a network, or a NIC's attachment to it, is invalid.
    InvalidNetwork,
    /// Warning: an argument that cannot apply on this target was dropped.
    HostOnlyArgDropped,
    /// Warning: an accelerator option in the profile's or overrides' arguments was
    /// dropped because the builder chooses the accelerator.
    AcceleratorArgDropped,
    /// Warning: native `Auto` found no hardware accelerator and uses TCG.
    SoftwareEmulation,
    /// Warning: the disk format could not be told from the file name; raw was assumed.
    FormatGuessed,
    /// Warning: a kernel command line without a kernel is ignored.
    CmdlineWithoutKernel,
    /// Warning: user networking is not in the browser build; networking is off.
    UserNetUnavailable,
    /// Warning: `pty` serial is not available in the browser; `stdio` is used.
    SerialPtyUnavailable,
    /// Warning: QEMU's IDE disks cannot be read-only; `snapshot=on` discards writes instead.
    ReadOnlyIdeSnapshot,
    /// Warning: more than one vCPU in the browser build, which emulates them on one thread.
    SmpInBrowser,
    /// Warning: the target has no display backend; the display device is emulated headless.
    DisplayUnavailable,
    /// Warning: port forwards in the browser, which cannot listen on host ports; dropped.
    PortForwardUnavailable,
    /// Warning: a serial file in the browser, where the worker owns the serial port; ignored.
    SerialFileUnavailable,
    /// Warning: the browser build has no netdev for virtual networks; the NICs are left out.
    NetworkUnavailable,
}

impl IssueCode {
    /// Whether this code is an error or a warning.
    ///
    /// ```
    /// use qemuweb_config::{IssueCode, Severity};
    /// assert_eq!(IssueCode::KernelRequired.severity(), Severity::Error);
    /// assert_eq!(IssueCode::FormatGuessed.severity(), Severity::Warning);
    /// ```
    pub fn severity(self) -> Severity {
        use IssueCode::*;
        match self {
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
            | PortForwardWithoutNet
            | InvalidPortForward
            | InvalidSerialFile
            | UnknownNetwork
            | InvalidNetwork => Severity::Error,
            HostOnlyArgDropped
            | AcceleratorArgDropped
            | SoftwareEmulation
            | FormatGuessed
            | CmdlineWithoutKernel
            | UserNetUnavailable
            | SerialPtyUnavailable
            | ReadOnlyIdeSnapshot
            | SmpInBrowser
            | DisplayUnavailable
            | PortForwardUnavailable
            | SerialFileUnavailable
            | NetworkUnavailable => Severity::Warning,
        }
    }
}

/// One error or warning from [`build_qemu_args`](crate::build_qemu_args): a code to match
/// and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
pub struct Issue {
    /// What it is.
    pub code: IssueCode,
    /// What to tell the user.
    pub message: String,
}

impl Issue {
    /// An issue with this code and message.
    pub fn new(code: IssueCode, message: impl Into<String>) -> Self {
        Issue {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The outcome of [`build_qemu_args`](crate::build_qemu_args).
///
/// When `errors` is not empty, `args` is empty: the combination cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct QemuArgsResult {
    /// The QEMU system emulator to run, e.g. `qemu-system-x86_64`.
    pub binary: String,
    /// QEMU's arguments (without the program name).
    pub args: Vec<String>,
    /// The guest arch.
    pub arch: Arch,
    /// Files QEMU opens: the worker mounts them in the browser.
    pub files_to_mount: Vec<FileMountInfo>,
    /// Doubtful things and changes made; the arguments still work.
    pub warnings: Vec<Issue>,
    /// Reasons the combination cannot run.
    pub errors: Vec<Issue>,
}

impl QemuArgsResult {
    /// Whether there are no errors.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The result if there are no errors, else [`ConfigError::Rejected`](crate::ConfigError::Rejected)
    /// carrying them.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`](crate::ErrorKind::Rejected) when `errors` is not empty.
    pub fn into_result(self) -> Result<Self, crate::ConfigError> {
        if self.errors.is_empty() {
            Ok(self)
        } else {
            Err(crate::ConfigError::Rejected {
                errors: self.errors,
            })
        }
    }

    /// The codes of the warnings, in order.
    pub fn warning_codes(&self) -> Vec<IssueCode> {
        self.warnings.iter().map(|i| i.code).collect()
    }

    /// The codes of the errors, in order.
    pub fn error_codes(&self) -> Vec<IssueCode> {
        self.errors.iter().map(|i| i.code).collect()
    }
}
