//! The engine interface: what the worker runtime needs from an emulator, so that more than
//! one can sit behind the same protocol.
//!
//! The worker picks an engine with [`select_engine`], turns the profile, inputs and
//! overrides into an [`EnginePlan`] with [`plan`], builds the disks' storage stacks,
//! fetches the assets, and starts the engine; from then on it talks to it through the
//! [`Engine`] trait. The engine reports what the guest does through an [`EngineHost`].
//!
//! Engines: [`EngineKind::V86`] (module `v86`, wasm32 only: 32-bit x86 guests) and
//! [`EngineKind::Qemu`] (module `qemu`, wasm32 only: `qemu-system-x86_64` and
//! `qemu-system-aarch64` built to wasm64 by `qemuweb-wasm-build`, described by its
//! [`qemu_build`] manifest, with our storage stacks as its disks through
//! [`qemu_channel`]). Profiles neither can run are refused with
//! [`ErrorCode::Unsupported`](crate::ErrorCode::Unsupported).

use crate::error::{Result, RuntimeError};
use crate::protocol::{EngineKind, Event};
use async_trait::async_trait;
use qemuweb_config::{
    build_qemu_args, validate_profile, Arch, BrowserTarget, DiskFormat, DiskInterface, ImageSource,
    IssueCode, MountRole, Target, VmInputs, VmOverrides, VmProfile,
};

pub mod frame_ring;
#[cfg(target_arch = "wasm32")]
mod module_memory;
#[cfg(target_arch = "wasm32")]
pub mod qemu;
pub mod qemu_build;
pub mod qemu_channel;
pub mod qemu_display;
pub mod qemu_jit;
pub mod qemu_net;
pub mod qmp;
pub mod text_screen;
#[cfg(target_arch = "wasm32")]
pub mod v86;
#[cfg(target_arch = "wasm32")]
pub mod v86_net;
pub mod vga_graphics;

/// The message of a JS exception or value.
#[cfg(target_arch = "wasm32")]
pub(crate) fn js_text(v: &wasm_bindgen::JsValue) -> String {
    use wasm_bindgen::JsCast;
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

/// Sets `obj[key] = value` on a plain object (which cannot fail).
#[cfg(target_arch = "wasm32")]
pub(crate) fn set(obj: &js_sys::Object, key: &str, value: &wasm_bindgen::JsValue) {
    let _ = js_sys::Reflect::set(obj, &wasm_bindgen::JsValue::from_str(key), value);
}

/// The engines this build can run.
pub const AVAILABLE_ENGINES: [EngineKind; 2] = [EngineKind::V86, EngineKind::Qemu];

/// Where an engine sends what happens: serial output, state changes, logs. The worker
/// forwards every event to the page.
pub trait EngineHost {
    /// Sends `event` to the page.
    fn emit(&self, event: Event);
}

/// A running emulator.
#[async_trait(?Send)]
pub trait Engine {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;

    /// Queues `data` for the guest's first serial port.
    fn send_serial(&self, data: &[u8]) -> Result<()>;

    /// Hands keyboard and pointer events (already checked with
    /// [`check_events`](crate::input::check_events)) to the guest's input devices.
    fn send_input(&self, events: &[crate::input::InputEvent]) -> Result<()>;

    /// Reboots the guest; disks keep their content.
    async fn reset(&self) -> Result<()>;

    /// Hands every write the guest made to the disks' storage stacks (it is then durable
    /// after the stacks' own `sync`).
    async fn flush(&self) -> Result<()>;

    /// Stops the guest and releases the emulator. With `force`, pending writes are
    /// dropped instead of flushed.
    async fn stop(&self, force: bool) -> Result<()>;

    /// Pauses the guest (for a snapshot): no instruction runs and no disk write starts
    /// until [`unpause`](Self::unpause). The default refuses (an engine without
    /// snapshots). v86 pauses its emulator; QEMU is told `stop` through its QMP monitor
    /// ([`qmp`]).
    async fn pause(&self) -> Result<()> {
        Err(crate::RuntimeError::Unsupported(format!(
            "the {} engine cannot save snapshots",
            self.kind().as_str()
        )))
    }

    /// Lets a paused guest run on.
    async fn unpause(&self) -> Result<()> {
        Ok(())
    }

    /// The paused guest's whole machine state (CPU, memory, devices); the disks' state
    /// is the caller's (flushed with [`flush`](Self::flush), then pinned).
    #[cfg(target_arch = "wasm32")]
    async fn save_state(&self) -> Result<SavedState> {
        Err(crate::RuntimeError::Unsupported(format!(
            "the {} engine cannot save snapshots",
            self.kind().as_str()
        )))
    }
}

/// A machine state an engine saved.
#[cfg(target_arch = "wasm32")]
pub struct SavedState {
    /// The bytes, in pieces (v86: one; QEMU: the chunks its worker handed over). Every
    /// piece but the last is a multiple of
    /// [`DEFAULT_CHUNK_BYTES`](qemuweb_storage::snapshot::DEFAULT_CHUNK_BYTES) long, so the
    /// pieces are stored without being joined.
    pub pieces: Vec<js_sys::Uint8Array>,
    /// How they are encoded.
    pub encoding: qemuweb_storage::snapshot::StateEncoding,
}

/// The most guest RAM a plan may ask of the QEMU engine: 16 GiB, the largest WebAssembly
/// Memory64 memory browsers give. The module at hand says how much it really addresses
/// (`maxGuestRamMib` of its `qemu-build.json`), checked before it is fetched.
pub const QEMU_PLAN_MAX_MEMORY_MIB: u32 = 16 * 1024;

/// The browser target the QEMU engine runs: the wasm64 build of `qemuweb-wasm-build`
/// ([`BrowserTarget::qemu_wasm64`]): x86_64 (also for i386 guests) and aarch64, Memory64,
/// with the RAM limit left to the module's manifest ([`QEMU_PLAN_MAX_MEMORY_MIB`]).
pub fn qemu_target() -> BrowserTarget {
    BrowserTarget::qemu_wasm64().with_max_memory_mib(QEMU_PLAN_MAX_MEMORY_MIB)
}

/// Picks the engine for `profile` (and `requested`, if the page asked for one).
///
/// Without a request, 32-bit x86 profiles with IDE disks run on v86; everything else
/// (i386 with virtio or SCSI disks, x86_64 and aarch64) on QEMU, whose wasm64 build
/// ([`qemu_target`]) has `qemu-system-x86_64` and `qemu-system-aarch64`. v86 runs only
/// i386 guests with IDE disks.
///
/// ```
/// use qemuweb_runtime::{engine::select_engine, EngineKind, ErrorCode};
/// let i386 = qemuweb_config::profile_by_id("linux-i386-pc-nographic").unwrap();
/// assert_eq!(select_engine(&i386, None, None).unwrap(), EngineKind::V86);
/// assert_eq!(select_engine(&i386, None, Some(EngineKind::Qemu)).unwrap(), EngineKind::Qemu);
/// let x64 = qemuweb_config::profile_by_id("linux-x86_64-pc-nographic").unwrap();
/// assert_eq!(select_engine(&x64, None, None).unwrap(), EngineKind::Qemu);
/// let err = select_engine(&x64, None, Some(EngineKind::V86)).unwrap_err();
/// assert_eq!(err.code(), ErrorCode::Unsupported);
/// assert!(err.to_string().contains("QEMU engine"));
/// ```
///
/// # Errors
///
/// [`ErrorCode::InvalidProfile`](crate::ErrorCode::InvalidProfile) for a malformed profile;
/// [`ErrorCode::Unsupported`](crate::ErrorCode::Unsupported) when no available engine can
/// run it.
pub fn select_engine(
    profile: &VmProfile,
    overrides: Option<&VmOverrides>,
    requested: Option<EngineKind>,
) -> Result<EngineKind> {
    validate_profile(profile).map_err(|e| RuntimeError::InvalidProfile(e.to_string()))?;
    if !qemu_target().archs.contains(&profile.arch) {
        return Err(RuntimeError::Unsupported(format!(
            "profile {:?} is for {} guests, which no engine of this runtime runs",
            profile.id, profile.arch
        )));
    }
    if profile.arch != Arch::I386 {
        return match requested {
            Some(EngineKind::V86) => Err(RuntimeError::Unsupported(format!(
                "profile {:?} is for {arch} guests: the v86 engine runs only 32-bit x86 (i386) \
                 guests; the QEMU engine runs {arch}",
                profile.id,
                arch = profile.arch
            ))),
            _ => Ok(EngineKind::Qemu),
        };
    }
    let interface = overrides
        .and_then(|o| o.disk_interface)
        .unwrap_or(profile.devices.disk_interface);
    match requested {
        Some(EngineKind::Qemu) => Ok(EngineKind::Qemu),
        Some(EngineKind::V86) if interface != DiskInterface::Ide => {
            Err(RuntimeError::Unsupported(format!(
                "profile {:?} attaches disks as {}: the v86 engine emulates IDE disks only \
                 (the QEMU engine can run it)",
                profile.id,
                interface.as_str()
            )))
        }
        Some(EngineKind::V86) => Ok(EngineKind::V86),
        None if interface == DiskInterface::Ide => Ok(EngineKind::V86),
        None => Ok(EngineKind::Qemu),
    }
}

/// The browser target v86 stands for when inputs are checked with
/// [`build_qemu_args`]: i386 only, up to 2 GiB of guest RAM, a VGA display, no slirp.
pub fn v86_target() -> BrowserTarget {
    BrowserTarget {
        archs: vec![Arch::I386],
        max_memory_mib: 2048,
        user_net: false,
        // v86's NIC is connected to the page's virtual network (`crate::network`).
        netdev: true,
        display: true,
        mount_dir: "/mnt".into(),
        firmware_dir: None,
        memory64: false,
    }
}

/// What an engine boots, resolved from a profile, inputs and overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnginePlan {
    /// The engine.
    pub engine: EngineKind,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// Whether the guest has a display.
    pub graphics: bool,
    /// The disks, boot disk first, each with its id (`disk0`, `disk1`, ...).
    pub disks: Vec<PlannedDisk>,
    /// A kernel for direct boot.
    pub kernel: Option<ImageSource>,
    /// Its initial ramdisk.
    pub initrd: Option<ImageSource>,
    /// Its command line.
    pub cmdline: Option<String>,
    /// Warnings to log.
    pub warnings: Vec<String>,
    /// Details to log at `debug` level (what the profile has that the engine leaves out
    /// without being asked in this start).
    pub notes: Vec<String>,
    /// The block size of the disks' storage (HTTP chunks), from the profile.
    pub block_size: u32,
    /// For the QEMU engine: its arguments and where it sees its files.
    pub qemu: Option<QemuPlan>,
}

/// What the QEMU engine runs: `build_qemu_args` for [`qemu_target`], with every disk
/// given to QEMU as a raw file (the storage stack below it decodes qcow2 and keeps the
/// guest's writes in the copy-on-write overlay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuPlan {
    /// The guest arch, which picks the module ([`qemu_build::QemuBuild::module_for`]).
    pub arch: Arch,
    /// QEMU's arguments (without the program name).
    pub args: Vec<String>,
    /// The directory of the module's filesystem given with `-L`, where the firmware goes.
    pub firmware_dir: String,
    /// The firmware files QEMU loads for this plan, by name (`bios-256k.bin`, ...).
    pub firmware: Vec<&'static str>,
    /// The path of each disk of [`EnginePlan::disks`], in the same order.
    pub disk_paths: Vec<String>,
    /// The path of the kernel (`-kernel`).
    pub kernel_path: Option<String>,
    /// The path of the initrd (`-initrd`).
    pub initrd_path: Option<String>,
}

/// SeaBIOS, read by every x86 machine but `microvm`.
pub const FIRMWARE_BIOS: &str = "bios-256k.bin";
/// SeaBIOS for the `microvm` machine.
pub const FIRMWARE_BIOS_MICROVM: &str = "bios-microvm.bin";
/// The UEFI firmware of an aarch64 guest booted from its disk.
pub const FIRMWARE_AARCH64_EFI: &str = qemuweb_config::AARCH64_EFI_FIRMWARE;
/// The VGA BIOS of the standard VGA card (graphics profiles).
pub const FIRMWARE_VGA_BIOS: &str = "vgabios-stdvga.bin";
/// QEMU's x86 TPR-patching option ROM (`qemu-system-data`); without it QEMU warns.
pub const FIRMWARE_KVMVAPIC: &str = "kvmvapic.bin";
/// The option ROM that boots a `-kernel` through fw_cfg DMA (`qemu-system-data`).
pub const FIRMWARE_LINUXBOOT_DMA: &str = "linuxboot_dma.bin";

/// One disk of an [`EnginePlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDisk {
    /// `disk0` for the boot disk, then `disk1`, ...
    pub id: String,
    /// Where the image is.
    pub source: ImageSource,
    /// Whether writes are refused.
    pub read_only: bool,
}

/// Checks `profile`, `inputs` and `overrides` (with the same rules as the QEMU argument
/// builder) and resolves what the engine boots.
///
/// ```
/// use qemuweb_config::{profile_by_id, DiskInput, ImageSource, VmInputs};
/// let profile = profile_by_id("linux-i386-pc-nographic").unwrap();
/// let inputs = VmInputs {
///     disk: Some(DiskInput { source: ImageSource::url("http://h/x.qcow2"), format: None, read_only: false }),
///     ..VmInputs::default()
/// };
/// let plan = qemuweb_runtime::engine::plan(&profile, &inputs, None, None).unwrap();
/// assert_eq!(plan.disks[0].id, "disk0");
/// assert_eq!(plan.memory_bytes, 256 << 20);
/// ```
///
/// # Errors
///
/// As [`select_engine`], and [`ErrorCode::InvalidInputs`](crate::ErrorCode::InvalidInputs)
/// for inputs that cannot boot (nothing to boot, initrd without kernel, too many disks,
/// too much memory, ...).
pub fn plan(
    profile: &VmProfile,
    inputs: &VmInputs,
    overrides: Option<&VmOverrides>,
    requested: Option<EngineKind>,
) -> Result<EnginePlan> {
    let engine = select_engine(profile, overrides, requested)?;
    // A NIC the engine cannot have is refused before anything starts.
    crate::network::plan_nics("vm", profile, overrides, engine)?;
    let (target, qemu_inputs) = match engine {
        EngineKind::V86 => (v86_target(), inputs.clone()),
        EngineKind::Qemu => (qemu_target(), raw_disks(inputs)),
    };
    let result = build_qemu_args(profile, &qemu_inputs, overrides, &Target::Browser(target));
    if !result.errors.is_empty() {
        let profile_error = result.errors.iter().all(|i| {
            matches!(
                i.code,
                IssueCode::InvalidProfile | IssueCode::InvalidOverride
            )
        });
        let message = result
            .errors
            .iter()
            .map(|i| i.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(if profile_error {
            RuntimeError::InvalidProfile(message)
        } else {
            RuntimeError::InvalidInputs(message)
        });
    }
    let mut disks = Vec::new();
    for (i, d) in inputs
        .disk
        .iter()
        .chain(inputs.additional_disks.iter())
        .enumerate()
    {
        disks.push(PlannedDisk {
            id: format!("disk{i}"),
            source: d.source.clone(),
            read_only: d.read_only,
        });
    }
    if engine == EngineKind::V86 && disks.len() > 2 {
        return Err(RuntimeError::InvalidInputs(format!(
            "{} disks given: the v86 engine attaches at most two hard disks",
            disks.len()
        )));
    }
    let memory_mib = overrides
        .and_then(|o| o.memory_mib)
        .unwrap_or(profile.memory_mib);
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    for w in &result.warnings {
        if w.code != IssueCode::UserNetUnavailable {
            warnings.push(w.message.clone());
        } else if overrides.and_then(|o| o.net).is_some() {
            // Asked for in this start: say what is missing.
            warnings.push(format!(
                "networking (net \"user\") was asked for, but the {} engine of this runtime \
                 has no network device yet: the guest runs without a network",
                engine.as_str()
            ));
        } else {
            // The profile's default (its native QEMU gets a NIC): not worth a warning.
            notes.push(format!(
                "profile {:?} has a network (net \"user\") for native QEMU; the {} engine has \
                 none yet, so the guest runs without one",
                profile.id,
                engine.as_str()
            ));
        }
    }
    let smp = overrides.and_then(|o| o.smp).unwrap_or(profile.smp);
    if smp > 1 && engine == EngineKind::V86 {
        warnings.push(format!(
            "{smp} vCPUs asked for: the v86 engine emulates one"
        ));
    }
    let graphics = overrides
        .and_then(|o| o.graphics)
        .unwrap_or(profile.supports_graphics);
    let qemu = (engine == EngineKind::Qemu).then(|| {
        let path = |role: MountRole, index: u32| {
            result
                .files_to_mount
                .iter()
                .find(|f| f.role == role && f.index == index)
                .map(|f| f.path.clone())
        };
        let machine = overrides
            .and_then(|o| o.machine.as_deref())
            .unwrap_or(&profile.machine);
        QemuPlan {
            arch: profile.arch,
            firmware_dir: qemu_target()
                .firmware_dir
                .unwrap_or_else(|| "/firmware".into()),
            firmware: qemu_firmware(profile.arch, machine, graphics, inputs.kernel.is_some()),
            disk_paths: (0..disks.len() as u32)
                .filter_map(|i| path(MountRole::Disk, i))
                .collect(),
            kernel_path: path(MountRole::Kernel, 0),
            initrd_path: path(MountRole::Initrd, 0),
            args: result.args.clone(),
        }
    });
    Ok(EnginePlan {
        engine,
        memory_bytes: u64::from(memory_mib) << 20,
        graphics,
        disks,
        kernel: inputs.kernel.clone(),
        initrd: inputs.initrd.clone(),
        cmdline: overrides
            .and_then(|o| o.kernel_cmdline.clone())
            .or_else(|| inputs.kernel_cmdline.clone()),
        warnings,
        notes,
        block_size: profile
            .block_size_bytes
            .unwrap_or(qemuweb_config::DEFAULT_BLOCK_SIZE_BYTES),
        qemu,
    })
}

/// The firmware files QEMU reads for a guest of `arch` on `machine`: SeaBIOS
/// (`bios-microvm.bin` on `microvm`) and the TPR option ROM for x86, the VGA BIOS with a
/// display, `linuxboot_dma.bin` for an x86 kernel; for aarch64 the UEFI firmware unless a
/// kernel is booted directly.
///
/// ```
/// use qemuweb_config::Arch;
/// use qemuweb_runtime::engine::qemu_firmware;
/// assert_eq!(qemu_firmware(Arch::X86_64, "microvm", false, false), ["bios-microvm.bin"]);
/// assert_eq!(qemu_firmware(Arch::Aarch64, "virt", false, false), ["QEMU_EFI.fd"]);
/// assert!(qemu_firmware(Arch::Aarch64, "virt", true, true).is_empty());
/// ```
pub fn qemu_firmware(arch: Arch, machine: &str, graphics: bool, kernel: bool) -> Vec<&'static str> {
    if arch == Arch::Aarch64 {
        return if kernel {
            Vec::new()
        } else {
            vec![FIRMWARE_AARCH64_EFI]
        };
    }
    let mut firmware = if machine == "microvm" || machine.starts_with("microvm,") {
        vec![FIRMWARE_BIOS_MICROVM]
    } else {
        vec![FIRMWARE_BIOS, FIRMWARE_KVMVAPIC]
    };
    if graphics {
        firmware.push(FIRMWARE_VGA_BIOS);
    }
    if kernel {
        firmware.push(FIRMWARE_LINUXBOOT_DMA);
    }
    firmware
}

/// Whether a line QEMU wrote to stderr is a fatal error (`qemu-system-i386: -drive ...:
/// Could not open ...`) rather than a warning or a note. QEMU's `exit()` is not observable
/// in the Emscripten build (the runtime is kept alive), so such a line is the report.
///
/// ```
/// use qemuweb_runtime::engine::qemu_stderr_is_fatal as is_fatal;
/// assert!(is_fatal("qemu-system-i386: -m 99999: ram size too large"));
/// assert!(!is_fatal("qemu-system-i386: warning: TCG doesn't support requested feature"));
/// assert!(!is_fatal("VNC server running on ::1:5900"));
/// ```
pub fn qemu_stderr_is_fatal(line: &str) -> bool {
    line.starts_with("qemu-system-") && !line.contains(": warning: ") && !line.contains(": info: ")
}

/// The inputs QEMU is given: every disk raw and writable, because the storage stack under
/// it presents the guest-visible bytes (qcow2 decoded) and keeps a read-only disk's writes
/// in a memory overlay that is dropped at stop.
fn raw_disks(inputs: &VmInputs) -> VmInputs {
    let mut inputs = inputs.clone();
    for d in inputs
        .disk
        .iter_mut()
        .chain(inputs.additional_disks.iter_mut())
    {
        d.format = Some(DiskFormat::Raw);
        d.read_only = false;
    }
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use qemuweb_config::{profile_by_id, DiskFormat, DiskInput};

    fn i386() -> VmProfile {
        profile_by_id("linux-i386-pc-nographic").unwrap()
    }

    fn disk(url: &str) -> DiskInput {
        DiskInput::new(ImageSource::url(url), DiskFormat::Qcow2)
    }

    #[test]
    fn profiles_pick_their_engine() {
        for p in qemuweb_config::default_profiles() {
            let r = select_engine(&p, None, None);
            if p.arch == Arch::I386 {
                assert_eq!(r.unwrap(), EngineKind::V86, "{}", p.id);
                assert_eq!(
                    select_engine(&p, None, Some(EngineKind::Qemu)).unwrap(),
                    EngineKind::Qemu
                );
            } else {
                for requested in [None, Some(EngineKind::Qemu)] {
                    assert_eq!(
                        select_engine(&p, None, requested).unwrap(),
                        EngineKind::Qemu
                    );
                }
                let e = select_engine(&p, None, Some(EngineKind::V86)).unwrap_err();
                assert_eq!(e.code(), ErrorCode::Unsupported, "{}", p.id);
                assert!(e.to_string().contains(p.arch.as_str()), "{e}");
            }
        }
        // Disks v86 cannot attach: QEMU runs the profile; v86 on request is refused.
        let over = VmOverrides {
            disk_interface: Some(DiskInterface::VirtioBlk),
            ..Default::default()
        };
        assert_eq!(
            select_engine(&i386(), Some(&over), None).unwrap(),
            EngineKind::Qemu
        );
        let e = select_engine(&i386(), Some(&over), Some(EngineKind::V86)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unsupported);
        assert!(e.to_string().contains("IDE"), "{e}");
    }

    #[test]
    fn a_vm_on_a_network_gets_the_qemuweb_netdev_on_qemu() {
        let inputs = VmInputs {
            disk: Some(disk("http://h/x.qcow2")),
            ..VmInputs::default()
        };
        let over = VmOverrides {
            networks: Some(vec![qemuweb_config::NetworkAttachment {
                mac: Some("52:54:00:00:00:07".into()),
                ..qemuweb_config::NetworkAttachment::on("default")
            }]),
            ..Default::default()
        };
        let p = plan(&i386(), &inputs, Some(&over), Some(EngineKind::Qemu)).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let args = p.qemu.unwrap().args.join(" ");
        assert!(
            args.contains(
                "-netdev qemuweb,id=net0 -device e1000,netdev=net0,mac=52:54:00:00:00:07,romfile="
            ),
            "{args}"
        );
        let x64 = profile_by_id("linux-x86_64-pc-nographic").unwrap();
        let args = plan(&x64, &inputs, Some(&over), None)
            .unwrap()
            .qemu
            .unwrap()
            .args;
        assert!(
            args.join(" ")
                .contains("-device virtio-net-pci,netdev=net0,"),
            "{args:?}"
        );
        let p = plan(&i386(), &inputs, Some(&over), None).unwrap();
        assert_eq!(p.engine, EngineKind::V86);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // Two NICs: one channel to the page's switch.
        let two = VmOverrides {
            networks: Some(vec![
                qemuweb_config::NetworkAttachment::on("default"),
                qemuweb_config::NetworkAttachment::on("isolated"),
            ]),
            ..Default::default()
        };
        let e = plan(&x64, &inputs, Some(&two), None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidInputs, "{e}");
    }

    #[test]
    fn the_network_warning_comes_only_when_a_start_asks_for_it() {
        let inputs = VmInputs {
            disk: Some(disk("http://h/x.qcow2")),
            ..VmInputs::default()
        };
        for engine in [EngineKind::V86, EngineKind::Qemu] {
            // The recommended profile has `net: user` for native QEMU: a debug note only.
            let p = plan(&i386(), &inputs, None, Some(engine)).unwrap();
            assert!(p.warnings.is_empty(), "{:?}", p.warnings);
            assert!(
                p.notes.iter().any(|n| n.contains("network")),
                "{:?}",
                p.notes
            );
            // Asked for in the start: a warning naming the engine and what it lacks.
            let over = VmOverrides {
                net: Some(qemuweb_config::NetMode::User),
                ..Default::default()
            };
            let p = plan(&i386(), &inputs, Some(&over), Some(engine)).unwrap();
            assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
            assert!(p.warnings[0].contains(engine.as_str()), "{}", p.warnings[0]);
            assert!(
                p.warnings[0].contains("no network device"),
                "{}",
                p.warnings[0]
            );
        }
    }

    fn qemu_plan(inputs: &VmInputs, over: Option<&VmOverrides>) -> Result<EnginePlan> {
        plan(&i386(), inputs, over, Some(EngineKind::Qemu))
    }

    #[test]
    fn a_qemu_plan_gives_raw_disks_and_firmware() {
        let inputs = VmInputs {
            disk: Some(disk("http://h/a.qcow2")),
            additional_disks: vec![
                DiskInput {
                    read_only: true,
                    ..disk("http://h/b.qcow2")
                },
                disk("http://h/c.img"),
            ],
            ..Default::default()
        };
        let p = qemu_plan(&inputs, None).unwrap();
        assert_eq!(p.engine, EngineKind::Qemu);
        assert_eq!(p.disks.len(), 3, "QEMU's pc machine has 4 IDE ports");
        assert!(p.disks[1].read_only);
        let q = p.qemu.unwrap();
        assert_eq!(
            q.disk_paths,
            ["/mnt/disk0.raw", "/mnt/disk1.raw", "/mnt/disk2.raw"]
        );
        let args = q.args.join(" ");
        assert!(args.starts_with("-L /firmware -nodefaults"), "{args}");
        for want in [
            "-accel tcg",
            "-m 256",
            "-display none",
            "-serial stdio",
            "-drive file=/mnt/disk0.raw,format=raw,if=ide,index=0,media=disk",
            // Read-only: the stack drops the writes, so no snapshot file in MEMFS.
            "-drive file=/mnt/disk1.raw,format=raw,if=ide,index=1,media=disk -drive",
        ] {
            assert!(args.contains(want), "{want:?} not in {args}");
        }
        assert!(
            !args.contains("qcow2") && !args.contains("snapshot"),
            "{args}"
        );
        assert_eq!(q.firmware_dir, "/firmware");
        assert_eq!(q.firmware, [FIRMWARE_BIOS, FIRMWARE_KVMVAPIC]);
        assert_eq!(q.arch, Arch::I386);
        assert!(q.kernel_path.is_none());
        // v86 plans carry no QEMU part, and refuse the third disk.
        let e = plan(&i386(), &inputs, None, None).unwrap_err();
        assert!(e.to_string().contains("two"), "{e}");
    }

    #[test]
    fn qemu_plans_check_the_wasm_build_limits() {
        let inputs = VmInputs {
            disk: Some(disk("http://h/a.qcow2")),
            ..Default::default()
        };
        // The module's own limit is checked from its manifest; the plan stops at what
        // Memory64 can give at all. v86 allows 2048.
        let mut roomy = i386();
        roomy.max_memory_mib = None;
        let over = |mib| VmOverrides {
            memory_mib: Some(mib),
            ..Default::default()
        };
        assert!(plan(&roomy, &inputs, Some(&over(1536)), Some(EngineKind::Qemu)).is_ok());
        let e = plan(&roomy, &inputs, Some(&over(20_000)), Some(EngineKind::Qemu)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidInputs, "{e}");
        assert!(e.to_string().contains("16384"), "{e}");
        assert!(plan(&roomy, &inputs, Some(&over(1536)), None).is_ok());
        // Several vCPUs: no v86 warning (QEMU emulates them, one thread in TCI).
        let over = VmOverrides {
            smp: Some(2),
            disk_interface: Some(DiskInterface::VirtioBlk),
            ..Default::default()
        };
        let p = plan(&i386(), &inputs, Some(&over), None).unwrap();
        assert_eq!(p.engine, EngineKind::Qemu);
        assert!(
            !p.warnings.iter().any(|w| w.contains("v86")),
            "{:?}",
            p.warnings
        );
        let args = p.qemu.unwrap().args.join(" ");
        assert!(
            args.contains("file=/mnt/disk0.raw,format=raw,if=none,id=disk0")
                && args.contains("virtio-blk-pci,drive=disk0,bootindex=0"),
            "{args}"
        );
        // A direct kernel boot loads linuxboot_dma.bin.
        let inputs = VmInputs {
            kernel: Some(ImageSource::url("http://h/bzImage")),
            initrd: Some(ImageSource::url("http://h/initrd")),
            kernel_cmdline: Some("console=ttyS0".into()),
            ..Default::default()
        };
        let q = qemu_plan(&inputs, None).unwrap().qemu.unwrap();
        assert_eq!(q.kernel_path.as_deref(), Some("/mnt/kernel"));
        assert_eq!(q.initrd_path.as_deref(), Some("/mnt/initrd"));
        assert!(q.firmware.contains(&FIRMWARE_LINUXBOOT_DMA));
        assert!(q.args.join(" ").contains("-append console=ttyS0"));
    }

    #[test]
    fn every_default_profile_plans_on_qemu_with_its_firmware() {
        let disk_only = VmInputs {
            disk: Some(disk("http://h/a.qcow2")),
            ..Default::default()
        };
        for p in qemuweb_config::default_profiles() {
            let plan = plan(&p, &disk_only, None, Some(EngineKind::Qemu)).unwrap();
            let q = plan.qemu.clone().unwrap();
            assert_eq!(q.arch, p.arch, "{}", p.id);
            let expected = qemu_firmware(p.arch, &p.machine, p.supports_graphics, false);
            assert_eq!(q.firmware, expected, "{}", p.id);
            let args = q.args.join(" ");
            assert!(
                args.contains("-drive file=/mnt/disk0.raw,format=raw"),
                "{args}"
            );
            if p.arch == Arch::Aarch64 {
                assert!(args.contains("-bios QEMU_EFI.fd"), "{args}");
            }
            // Graphics profiles show their screen through QemuWeb's display backend.
            let display = if p.supports_graphics {
                "-display qemuweb"
            } else {
                "-display none"
            };
            assert!(args.contains(display), "{}: {args}", p.id);
            assert!(
                !plan.warnings.iter().any(|w| w.contains("display")),
                "{}: {:?}",
                p.id,
                plan.warnings
            );
        }
        let minimal = qemuweb_config::profile_by_id("minimal-x86_64").unwrap();
        let q = plan(&minimal, &disk_only, None, None)
            .unwrap()
            .qemu
            .unwrap();
        assert_eq!(q.firmware, [FIRMWARE_BIOS_MICROVM]);
        assert!(q.args.join(" ").contains("virtio-blk-device,drive=disk0"));
        let graphics = qemuweb_config::profile_by_id("linux-x86_64-pc-graphics").unwrap();
        let q = plan(&graphics, &disk_only, None, None)
            .unwrap()
            .qemu
            .unwrap();
        assert_eq!(
            q.firmware,
            [FIRMWARE_BIOS, FIRMWARE_KVMVAPIC, FIRMWARE_VGA_BIOS]
        );
    }

    #[test]
    fn a_bad_profile_is_invalid_profile() {
        let mut p = i386();
        p.memory_mib = 0;
        assert_eq!(
            select_engine(&p, None, None).unwrap_err().code(),
            ErrorCode::InvalidProfile
        );
        p = i386();
        p.id = "Bad Id!".into();
        assert_eq!(
            plan(&p, &VmInputs::default(), None, None)
                .unwrap_err()
                .code(),
            ErrorCode::InvalidProfile
        );
    }

    #[test]
    fn plans_check_inputs() {
        let p = i386();
        let e = plan(&p, &VmInputs::default(), None, None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidInputs, "{e}");
        let inputs = VmInputs {
            initrd: Some(ImageSource::url("http://h/initrd")),
            disk: Some(disk("http://h/a.qcow2")),
            ..Default::default()
        };
        assert_eq!(
            plan(&p, &inputs, None, None).unwrap_err().code(),
            ErrorCode::InvalidInputs
        );
        let inputs = VmInputs {
            disk: Some(disk("http://h/a.qcow2")),
            additional_disks: vec![disk("http://h/b.qcow2"), disk("http://h/c.qcow2")],
            ..Default::default()
        };
        let e = plan(&p, &inputs, None, None).unwrap_err();
        assert!(e.to_string().contains("two"), "{e}");
        let over = VmOverrides {
            memory_mib: Some(4096),
            ..Default::default()
        };
        let inputs = VmInputs {
            disk: Some(disk("http://h/a.qcow2")),
            ..Default::default()
        };
        assert_eq!(
            plan(&p, &inputs, Some(&over), None).unwrap_err().code(),
            ErrorCode::InvalidInputs
        );
    }

    #[test]
    fn a_kernel_plan() {
        let inputs = VmInputs {
            kernel: Some(ImageSource::url("http://h/bzImage")),
            initrd: Some(ImageSource::url("http://h/initrd")),
            kernel_cmdline: Some("console=ttyS0".into()),
            ..Default::default()
        };
        let over = VmOverrides {
            memory_mib: Some(128),
            kernel_cmdline: Some("console=ttyS0 quiet".into()),
            ..Default::default()
        };
        let plan = plan(&i386(), &inputs, Some(&over), None).unwrap();
        assert_eq!(plan.memory_bytes, 128 << 20);
        assert!(plan.disks.is_empty());
        assert_eq!(plan.cmdline.as_deref(), Some("console=ttyS0 quiet"));
        assert_eq!(plan.engine, EngineKind::V86);
        assert!(!plan.graphics);
    }
}
