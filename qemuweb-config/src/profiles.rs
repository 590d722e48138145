//! The default profiles, validation, and a registry for custom profiles.

use std::collections::BTreeMap;

use crate::error::ConfigError;
use crate::types::{Arch, DiskInterface, NetMode, SerialMode, VmDevices, VmProfile};

/// Id of the x86_64 `q35` profile with a serial console only.
pub const LINUX_X86_64_PC_NOGRAPHIC: &str = "linux-x86_64-pc-nographic";
/// Id of the x86_64 `q35` profile with a VGA display.
pub const LINUX_X86_64_PC_GRAPHICS: &str = "linux-x86_64-pc-graphics";
/// Id of the aarch64 `virt` profile with a serial console only.
pub const LINUX_AARCH64_VIRT_NOGRAPHIC: &str = "linux-aarch64-virt-nographic";
/// Id of the aarch64 `virt` profile with a virtio-gpu display.
pub const LINUX_AARCH64_VIRT_GRAPHICS: &str = "linux-aarch64-virt-graphics";
/// Id of the small x86_64 profile.
pub const MINIMAL_X86_64: &str = "minimal-x86_64";
/// Id of the i386 `pc` profile with a serial console only (today's wasm QEMU and v86).
pub const LINUX_I386_PC_NOGRAPHIC: &str = "linux-i386-pc-nographic";
/// Id of the i386 `pc` profile with a VGA display (today's wasm QEMU and v86).
pub const LINUX_I386_PC_GRAPHICS: &str = "linux-i386-pc-graphics";

/// The storage block size of the default profiles: 64 KiB.
pub const DEFAULT_BLOCK_SIZE_BYTES: u32 = 64 * 1024;

/// The machine of the aarch64 profiles: QEMU's `virt` without the random nodes it puts in the
/// device tree (`kaslr-seed`, `rng-seed`).
///
/// With a KASLR seed, Linux on a CPU without E0PD (the profiles' Cortex-A57) forces kernel page
/// table isolation on, and KPTI switches the address space ID twice per system call and
/// exception from user space; QEMU's software TLB carries no ASIDs, so each switch flushes it
/// and the jump cache whole. Without the seed the kernel is not randomized and needs no KPTI:
/// Debian arm64's short init took 116 s instead of 166 s on the wasm64 JIT build under Node
/// (one run each) and 7.2 s instead of 12.8 s on native TCG. The guest gets its entropy from
/// the profiles' virtio-rng instead of the device tree. A profile whose `machine` is plain
/// `virt` keeps KASLR; a kernel started by UEFI firmware may still get a seed from the
/// firmware.
///
/// ```
/// use qemuweb_config::{profile_by_id, AARCH64_MACHINE, LINUX_AARCH64_VIRT_NOGRAPHIC};
/// let profile = profile_by_id(LINUX_AARCH64_VIRT_NOGRAPHIC).unwrap();
/// assert_eq!(profile.machine, AARCH64_MACHINE);
/// ```
pub const AARCH64_MACHINE: &str = "virt,dtb-randomness=off";

const AARCH64_KERNEL_HELP: &str = "Boot a disk with an EFI bootloader (the virt machine \
starts UEFI firmware, QEMU_EFI.fd), or give an arm64 Linux Image (or any kernel for \
-M virt) as the kernel, with an optional initrd.";

fn devices(
    disk_interface: DiskInterface,
    net: NetMode,
    rng: bool,
    usb: bool,
    keyboard: bool,
) -> VmDevices {
    VmDevices {
        disk_interface,
        net,
        rng,
        serial: SerialMode::Stdio,
        usb,
        keyboard,
    }
}

#[allow(clippy::too_many_arguments)]
fn profile(
    id: &str,
    name: &str,
    description: &str,
    arch: Arch,
    machine: &str,
    cpu: &str,
    memory_mib: u32,
    max_memory_mib: u32,
    supports_graphics: bool,
    devices: VmDevices,
) -> VmProfile {
    let requires_kernel = false;
    VmProfile {
        id: id.to_string(),
        name: name.to_string(),
        description: description.to_string(),
        arch,
        machine: machine.to_string(),
        cpu: Some(cpu.to_string()),
        memory_mib,
        smp: 1,
        supports_graphics,
        default_args: Vec::new(),
        requires_kernel,
        kernel_help_text: (arch == Arch::Aarch64).then(|| AARCH64_KERNEL_HELP.to_string()),
        devices,
        block_size_bytes: Some(DEFAULT_BLOCK_SIZE_BYTES),
        max_memory_mib: Some(max_memory_mib),
        networks: Vec::new(),
    }
}

/// The built-in profiles, in a fixed order: the five of the reference design, then the
/// two i386 profiles for the engines that run 32-bit guests today (the wasm32 QEMU build
/// and v86).
///
/// | id | arch | machine | graphics | memory | disks | net |
/// | --- | --- | --- | --- | --- | --- | --- |
/// | `linux-x86_64-pc-nographic` | x86_64 | q35 | no | 512 MiB | virtio-blk | user |
/// | `linux-x86_64-pc-graphics` | x86_64 | q35 | VGA, USB keyboard + tablet | 512 MiB | virtio-blk | user |
/// | `linux-aarch64-virt-nographic` | aarch64 | virt ([`AARCH64_MACHINE`]) | no | 512 MiB | virtio-blk | user |
/// | `linux-aarch64-virt-graphics` | aarch64 | virt ([`AARCH64_MACHINE`]) | virtio-gpu, USB keyboard + tablet | 512 MiB | virtio-blk | user |
/// | `minimal-x86_64` | x86_64 | microvm | no | 128 MiB | virtio-blk (MMIO) | none |
/// | `linux-i386-pc-nographic` | i386 | pc | no | 256 MiB | ide | user |
/// | `linux-i386-pc-graphics` | i386 | pc | VGA | 256 MiB | ide | user |
///
/// The aarch64 profiles boot a kernel (`-kernel`) or, without one, a disk's EFI
/// bootloader through UEFI firmware ([`AARCH64_EFI_FIRMWARE`](crate::AARCH64_EFI_FIRMWARE)).
/// All have one vCPU and a serial console on stdio.
///
/// ```
/// let ids: Vec<String> = qemuweb_config::default_profiles().into_iter().map(|p| p.id).collect();
/// assert_eq!(ids[0], "linux-x86_64-pc-nographic");
/// assert_eq!(ids.len(), 7);
/// ```
pub fn default_profiles() -> Vec<VmProfile> {
    use DiskInterface::{Ide, VirtioBlk};
    use NetMode::{None, User};
    vec![
        profile(
            LINUX_X86_64_PC_NOGRAPHIC,
            "Linux x86_64 (serial console)",
            "A q35 PC with virtio disk, network and entropy, and a serial console only.",
            Arch::X86_64,
            "q35",
            "qemu64",
            512,
            8192,
            false,
            devices(VirtioBlk, User, true, false, false),
        ),
        profile(
            LINUX_X86_64_PC_GRAPHICS,
            "Linux x86_64 (graphics)",
            "A q35 PC with a VGA display, USB keyboard and tablet, virtio disk and network.",
            Arch::X86_64,
            "q35",
            "qemu64",
            512,
            8192,
            true,
            devices(VirtioBlk, User, true, true, true),
        ),
        profile(
            LINUX_AARCH64_VIRT_NOGRAPHIC,
            "Linux aarch64 (serial console)",
            "An Arm virt machine booted from a kernel, with a PL011 serial console.",
            Arch::Aarch64,
            AARCH64_MACHINE,
            "cortex-a57",
            512,
            8192,
            false,
            devices(VirtioBlk, User, true, false, false),
        ),
        profile(
            LINUX_AARCH64_VIRT_GRAPHICS,
            "Linux aarch64 (graphics)",
            "An Arm virt machine booted from a kernel, with a virtio-gpu display and USB input.",
            Arch::Aarch64,
            AARCH64_MACHINE,
            "cortex-a57",
            512,
            8192,
            true,
            devices(VirtioBlk, User, true, true, true),
        ),
        profile(
            MINIMAL_X86_64,
            "Minimal x86_64",
            "The smallest x86_64 machine: microvm (no PCI, no ACPI legacy devices, SeaBIOS \
             booting a virtio-mmio disk), 128 MiB, serial console, no network.",
            Arch::X86_64,
            "microvm",
            "qemu64",
            128,
            512,
            false,
            devices(VirtioBlk, None, false, false, false),
        ),
        profile(
            LINUX_I386_PC_NOGRAPHIC,
            "Linux i386 (serial console)",
            "A 32-bit i440FX PC with an IDE disk and a serial console, as the browser engines \
             run today.",
            Arch::I386,
            "pc",
            "qemu32",
            256,
            1024,
            false,
            devices(Ide, User, false, false, false),
        ),
        profile(
            LINUX_I386_PC_GRAPHICS,
            "Linux i386 (graphics)",
            "A 32-bit i440FX PC with a VGA display, PS/2 keyboard and mouse and an IDE disk.",
            Arch::I386,
            "pc",
            "qemu32",
            256,
            1024,
            true,
            devices(Ide, User, false, false, false),
        ),
    ]
}

/// The built-in profile with this id.
///
/// ```
/// let p = qemuweb_config::profile_by_id("minimal-x86_64").unwrap();
/// assert_eq!(p.memory_mib, 128);
/// ```
///
/// # Errors
///
/// [`ErrorKind::UnknownProfile`](crate::ErrorKind::UnknownProfile) if there is none.
pub fn profile_by_id(id: &str) -> Result<VmProfile, ConfigError> {
    default_profiles()
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(|| ConfigError::UnknownProfile { id: id.to_string() })
}

/// Checks a profile: a non-empty id of lowercase ASCII letters, digits, `-`, `_`, `.`; a
/// non-empty name and machine; memory and smp above 0; `maxMemoryMiB` not below
/// `memoryMiB`; a block size that is a power of two from 512 bytes to 16 MiB; a USB
/// keyboard only with USB and graphics.
///
/// # Errors
///
/// [`ErrorKind::InvalidProfile`](crate::ErrorKind::InvalidProfile) naming the first problem.
pub fn validate_profile(profile: &VmProfile) -> Result<(), ConfigError> {
    let fail = |reason: String| {
        Err(ConfigError::InvalidProfile {
            id: profile.id.clone(),
            reason,
        })
    };
    if profile.id.is_empty() {
        return fail("the id is empty".into());
    }
    if let Some(c) = profile
        .id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return fail(format!(
            "the id may only hold lowercase ASCII letters, digits, '-', '_' and '.', not {c:?}"
        ));
    }
    if profile.name.trim().is_empty() {
        return fail("the name is empty".into());
    }
    if profile.machine.trim().is_empty() {
        return fail("the machine is empty".into());
    }
    if profile.memory_mib == 0 {
        return fail("memoryMiB must be above 0".into());
    }
    if profile.smp == 0 {
        return fail("smp must be above 0".into());
    }
    if let Some(max) = profile.max_memory_mib {
        if max < profile.memory_mib {
            return fail(format!(
                "maxMemoryMiB ({max}) is below memoryMiB ({})",
                profile.memory_mib
            ));
        }
    }
    if let Some(size) = profile.block_size_bytes {
        if !size.is_power_of_two() || !(512..=16 * 1024 * 1024).contains(&size) {
            return fail(format!(
                "blockSizeBytes ({size}) must be a power of two from 512 to 16777216"
            ));
        }
    }
    if profile.devices.keyboard && !profile.devices.usb {
        return fail("a USB keyboard needs usb".into());
    }
    if profile.devices.keyboard && !profile.supports_graphics {
        return fail("a USB keyboard needs a profile that supports graphics".into());
    }
    Ok(())
}

/// The built-in profiles plus custom ones, by id.
///
/// ```
/// use qemuweb_config::ProfileSet;
/// let mut set = ProfileSet::with_defaults();
/// let mut custom = set.get("minimal-x86_64").unwrap().clone();
/// custom.id = "my-custom-profile".into();
/// custom.memory_mib = 256;
/// set.insert(custom).unwrap();
/// assert_eq!(set.get("my-custom-profile").unwrap().memory_mib, 256);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    profiles: BTreeMap<String, VmProfile>,
}

impl ProfileSet {
    /// An empty set.
    pub fn new() -> Self {
        ProfileSet::default()
    }

    /// A set holding [`default_profiles`].
    pub fn with_defaults() -> Self {
        let mut set = ProfileSet::new();
        for profile in default_profiles() {
            set.profiles.insert(profile.id.clone(), profile);
        }
        set
    }

    /// Adds a validated profile.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidProfile`](crate::ErrorKind::InvalidProfile) from
    /// [`validate_profile`], or [`ErrorKind::DuplicateProfile`](crate::ErrorKind::DuplicateProfile)
    /// if the id is taken.
    pub fn insert(&mut self, profile: VmProfile) -> Result<(), ConfigError> {
        validate_profile(&profile)?;
        if self.profiles.contains_key(&profile.id) {
            return Err(ConfigError::DuplicateProfile { id: profile.id });
        }
        self.profiles.insert(profile.id.clone(), profile);
        Ok(())
    }

    /// Parses a profile from JSON (the reference design's camelCase form) and adds it.
    ///
    /// ```
    /// let mut set = qemuweb_config::ProfileSet::new();
    /// set.insert_json(r#"{
    ///     "id": "my-custom-profile", "name": "My Custom VM", "description": "",
    ///     "arch": "x86_64", "machine": "pc", "cpu": "qemu64", "memoryMiB": 1024, "smp": 2,
    ///     "supportsGraphics": false, "defaultArgs": ["-enable-kvm"], "requiresKernel": false,
    ///     "devices": { "diskInterface": "virtio-blk", "net": "user", "serial": "stdio" }
    /// }"#).unwrap();
    /// assert_eq!(set.get("my-custom-profile").unwrap().memory_mib, 1024);
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Json`](crate::ErrorKind::Json) for malformed JSON, else as
    /// [`ProfileSet::insert`].
    pub fn insert_json(&mut self, json: &str) -> Result<(), ConfigError> {
        let profile = serde_json::from_str(json).map_err(|source| ConfigError::Json {
            what: "VM profile",
            source,
        })?;
        self.insert(profile)
    }

    /// The profile with this id.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::UnknownProfile`](crate::ErrorKind::UnknownProfile) if there is none.
    pub fn get(&self, id: &str) -> Result<&VmProfile, ConfigError> {
        self.profiles
            .get(id)
            .ok_or_else(|| ConfigError::UnknownProfile { id: id.to_string() })
    }

    /// Removes and returns the profile with this id.
    pub fn remove(&mut self, id: &str) -> Option<VmProfile> {
        self.profiles.remove(id)
    }

    /// All profiles, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &VmProfile> {
        self.profiles.values()
    }

    /// Number of profiles.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Whether there are no profiles.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}
