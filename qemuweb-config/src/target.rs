//! Where the arguments are for: the browser build of QEMU, or QEMU on the host.

use serde::{Deserialize, Serialize};
use tsify::Tsify;

use crate::types::Arch;

/// Where the QEMU arguments will run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Target {
    /// QEMU compiled to wasm, in a Web Worker.
    Browser(BrowserTarget),
    /// QEMU on the host.
    Native(NativeTarget),
}

/// The browser build of QEMU and what it can do.
///
/// ```
/// let target = qemuweb_config::BrowserTarget::qemu_wasm_i386();
/// assert_eq!(target.archs, vec![qemuweb_config::Arch::I386]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct BrowserTarget {
    /// The guest archs the wasm build has emulators for.
    pub archs: Vec<Arch>,
    /// The most guest RAM (MiB) the build can give: guest RAM shares the wasm linear
    /// memory with QEMU itself.
    #[serde(rename = "maxMemoryMiB")]
    pub max_memory_mib: u32,
    /// Whether user-mode networking (slirp) is compiled in.
    pub user_net: bool,
    /// Whether the build has QemuWeb's netdev (`-netdev qemuweb`), which connects NICs to
    /// the page's virtual networks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[tsify(optional)]
    pub netdev: bool,
    /// Whether the build has QemuWeb's display backend (`-display qemuweb`, patch 0020 of
    /// qemuweb-wasm-build), through which the page shows the guest's screen and sends it
    /// keyboard and pointer input; without it a display device runs headless
    /// (`-display none`).
    pub display: bool,
    /// The directory of the module's filesystem where inputs are mounted (`/mnt`).
    pub mount_dir: String,
    /// The directory holding firmware, passed with `-L`; `None` uses the build's default
    /// data directory. For x86 guests the worker puts there SeaBIOS's `bios-256k.bin`
    /// (`bios-microvm.bin` for `microvm`), `kvmvapic.bin`, `vgabios-stdvga.bin` (graphics
    /// profiles) and `linuxboot_dma.bin` (direct kernel boot); for aarch64 the EFI
    /// firmware `QEMU_EFI.fd` when there is no kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub firmware_dir: Option<String>,
    /// Whether the build needs WebAssembly Memory64 in the browser (Chrome/Edge 133+,
    /// Firefox 134+): a wasm64 build linked without lowering its memory. The build's own
    /// `qemu-build.json` says so too (`requirements.memory64`), and the runtime checks both.
    #[serde(default)]
    pub memory64: bool,
}

impl BrowserTarget {
    /// The first QEMU-in-wasm build (the wasm32 plan of `qemuweb-wasm-build`):
    /// `qemu-system-i386` only, TCG interpreter, no slirp and no display backend, 1024 MiB
    /// of guest RAM at most (the module's linear memory is 2 GiB and QEMU needs the rest),
    /// inputs under `/mnt`, firmware from `/firmware`.
    pub fn qemu_wasm_i386() -> Self {
        BrowserTarget {
            archs: vec![Arch::I386],
            max_memory_mib: 1024,
            user_net: false,
            netdev: false,
            display: false,
            mount_dir: "/mnt".to_string(),
            firmware_dir: Some("/firmware".to_string()),
            memory64: false,
        }
    }

    /// The wasm64 QEMU build (the wasm64 plan of `qemuweb-wasm-build`, `--plan wasm64`):
    /// `qemu-system-x86_64` (which also runs the i386 guests) and `qemu-system-aarch64`,
    /// TCG interpreter, no slirp, QemuWeb's display backend (`-display qemuweb`: the screen
    /// and input of graphics profiles go to the page) and netdev (`-netdev qemuweb`, patch
    /// 0030: NICs on the page's virtual networks), no Memory64 needed in the browser (64-bit
    /// pointers in a 32-bit memory: `-sMEMORY64=2`), 1280 MiB of guest RAM at most (the
    /// modules' linear memory is 2 GiB, QEMU keeps 768 MiB of it; the build's
    /// `qemu-build.json` says so as `maxGuestRamMib`), inputs under `/mnt`, firmware from
    /// `/firmware`.
    ///
    /// ```
    /// let t = qemuweb_config::BrowserTarget::qemu_wasm64();
    /// assert!(!t.memory64 && t.archs.contains(&qemuweb_config::Arch::Aarch64));
    /// ```
    pub fn qemu_wasm64() -> Self {
        BrowserTarget {
            archs: vec![Arch::I386, Arch::X86_64, Arch::Aarch64],
            max_memory_mib: 1280,
            user_net: false,
            netdev: true,
            display: true,
            mount_dir: "/mnt".to_string(),
            firmware_dir: Some("/firmware".to_string()),
            memory64: false,
        }
    }

    /// The same target with at most `mib` of guest RAM (the limit of the module at hand,
    /// from its `qemu-build.json`).
    pub fn with_max_memory_mib(mut self, mib: u32) -> Self {
        self.max_memory_mib = mib;
        self
    }
}

/// Which accelerator native QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    /// KVM on Linux or HVF on macOS when the guest arch matches the host and the
    /// hypervisor is usable; TCG otherwise (with a warning).
    Auto,
    /// Linux KVM (`/dev/kvm`).
    Kvm,
    /// macOS Hypervisor.framework.
    Hvf,
    /// TCG software emulation: runs any arch anywhere, slower.
    Tcg,
}

impl Accelerator {
    /// QEMU's name: `kvm`, `hvf` or `tcg` (`auto` for [`Accelerator::Auto`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Auto => "auto",
            Accelerator::Kvm => "kvm",
            Accelerator::Hvf => "hvf",
            Accelerator::Tcg => "tcg",
        }
    }
}

/// The host operating system, as far as accelerators care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum HostOs {
    /// Linux (KVM).
    Linux,
    /// macOS (HVF).
    Macos,
    /// Anything else (TCG only).
    Other,
}

/// What the host offers to accelerators. [`HostCaps::detect`] fills it in; tests and
/// callers that plan for another host set it by hand, which keeps
/// [`build_qemu_args`](crate::build_qemu_args) deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct HostCaps {
    /// The host CPU arch, if it is one QEMU can accelerate guests of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub arch: Option<Arch>,
    /// The host OS.
    pub os: HostOs,
    /// Whether `/dev/kvm` can be opened for reading and writing.
    pub kvm: bool,
}

impl HostCaps {
    /// A host with no hardware acceleration (TCG only).
    pub fn tcg_only() -> Self {
        HostCaps {
            arch: None,
            os: HostOs::Other,
            kvm: false,
        }
    }

    /// The machine this runs on. KVM counts only if `/dev/kvm` opens read-write (as QEMU
    /// needs); on wasm32 nothing is detected.
    pub fn detect() -> Self {
        let arch = if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else if cfg!(target_arch = "x86") {
            Some(Arch::I386)
        } else {
            None
        };
        let os = if cfg!(target_os = "linux") {
            HostOs::Linux
        } else if cfg!(target_os = "macos") {
            HostOs::Macos
        } else {
            HostOs::Other
        };
        HostCaps {
            arch: if cfg!(target_arch = "wasm32") {
                None
            } else {
                arch
            },
            os,
            kvm: os == HostOs::Linux && kvm_usable(),
        }
    }

    /// Whether a hardware accelerator of this host can run guests of `guest` (an x86_64
    /// host runs x86_64 and i386 guests, an aarch64 host aarch64 guests).
    pub fn can_accelerate(&self, guest: Arch) -> bool {
        matches!(
            (self.arch, guest),
            (Some(Arch::X86_64), Arch::X86_64 | Arch::I386)
                | (Some(Arch::Aarch64), Arch::Aarch64)
                | (Some(Arch::I386), Arch::I386)
        )
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

#[cfg(target_arch = "wasm32")]
fn kvm_usable() -> bool {
    false
}

/// How native QEMU shows a graphical guest's screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum NativeDisplay {
    /// Headless: the display device exists, `-display none` shows nothing.
    None,
    /// QEMU's default display (GTK or SDL when built in).
    Default,
    /// A VNC server on `127.0.0.1`, display number `display` (TCP port 5900 + display).
    Vnc {
        /// The VNC display number.
        display: u16,
    },
}

/// QEMU on the host.
///
/// ```
/// use qemuweb_config::{Accelerator, HostCaps, NativeTarget};
/// let target = NativeTarget::new(Accelerator::Auto, HostCaps::tcg_only());
/// assert_eq!(target.firmware_dir, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct NativeTarget {
    /// The accelerator to use.
    pub accelerator: Accelerator,
    /// What the host offers ([`HostCaps::detect`]).
    pub host: HostCaps,
    /// How a graphical guest is shown.
    pub display: NativeDisplay,
    /// A firmware directory passed with `-L`; `None` uses QEMU's own data directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub firmware_dir: Option<String>,
    /// A qcow2 overlay whose backing file is the boot disk: QEMU opens the overlay
    /// instead, so the base image never changes (make it with
    /// [`overlay_create_args`](crate::overlay_create_args)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub disk_overlay: Option<String>,
    /// The virtual networks NICs may attach to (default: [`default_networks`]). Each NIC
    /// gets QEMU user networking with its network's addresses (CIDR, gateway, DNS, DHCP
    /// start; `restrict=on` for isolated networks); VMs of one network do not see each
    /// other natively.
    ///
    /// [`default_networks`]: crate::default_networks
    #[serde(
        default = "crate::default_networks",
        skip_serializing_if = "is_default_networks"
    )]
    #[tsify(optional)]
    pub networks: Vec<crate::VirtualNetwork>,
}

fn is_default_networks(networks: &[crate::VirtualNetwork]) -> bool {
    networks == crate::default_networks()
}

impl NativeTarget {
    /// A target with this accelerator and host, headless display, no `-L`, no overlay.
    pub fn new(accelerator: Accelerator, host: HostCaps) -> Self {
        NativeTarget {
            accelerator,
            host,
            display: NativeDisplay::None,
            firmware_dir: None,
            disk_overlay: None,
            networks: crate::default_networks(),
        }
    }

    /// [`Accelerator::Auto`] on the detected host ([`HostCaps::detect`]).
    pub fn detect() -> Self {
        NativeTarget::new(Accelerator::Auto, HostCaps::detect())
    }

    /// The accelerator QEMU will use for `arch` on this host, or why the requested one
    /// cannot be used.
    ///
    /// ```
    /// use qemuweb_config::{Accelerator, Arch, HostCaps, HostOs, NativeTarget};
    /// let kvm_host = HostCaps { arch: Some(Arch::X86_64), os: HostOs::Linux, kvm: true };
    /// let t = NativeTarget::new(Accelerator::Auto, kvm_host);
    /// assert_eq!(t.resolve_accelerator(Arch::I386), Ok(Accelerator::Kvm));
    /// assert_eq!(t.resolve_accelerator(Arch::Aarch64), Ok(Accelerator::Tcg));
    /// ```
    ///
    /// # Errors
    ///
    /// A message when KVM or HVF was requested and cannot run `arch` here.
    pub fn resolve_accelerator(&self, arch: Arch) -> Result<Accelerator, String> {
        let host = &self.host;
        let host_arch = host.arch.map(Arch::as_str).unwrap_or("unknown");
        match self.accelerator {
            Accelerator::Tcg => Ok(Accelerator::Tcg),
            Accelerator::Auto => {
                if host.os == HostOs::Linux && host.kvm && host.can_accelerate(arch) {
                    Ok(Accelerator::Kvm)
                } else if host.os == HostOs::Macos && host.can_accelerate(arch) {
                    Ok(Accelerator::Hvf)
                } else {
                    Ok(Accelerator::Tcg)
                }
            }
            Accelerator::Kvm => {
                if host.os != HostOs::Linux || !host.kvm {
                    Err("KVM was requested but /dev/kvm is not available on this host".into())
                } else if !host.can_accelerate(arch) {
                    Err(format!(
                        "KVM was requested but cannot run {arch} guests on a {host_arch} host"
                    ))
                } else {
                    Ok(Accelerator::Kvm)
                }
            }
            Accelerator::Hvf => {
                if host.os != HostOs::Macos {
                    Err("HVF was requested but it exists only on macOS hosts".into())
                } else if !host.can_accelerate(arch) {
                    Err(format!(
                        "HVF was requested but cannot run {arch} guests on a {host_arch} host"
                    ))
                } else {
                    Ok(Accelerator::Hvf)
                }
            }
        }
    }
}
