//! The engine interface: what the worker runtime needs from an emulator, so that more than
//! one can sit behind the same protocol.
//!
//! The worker picks an engine with [`select_engine`], turns the profile, inputs and
//! overrides into an [`EnginePlan`] with [`plan`], builds the disks' storage stacks,
//! fetches the assets, and starts the engine; from then on it talks to it through the
//! [`Engine`] trait. The engine reports what the guest does through an [`EngineHost`].
//!
//! Engines: [`EngineKind::V86`] (module `v86`, wasm32 only). QEMU-in-wasm is the next
//! one; profiles only it could run are refused with [`ErrorCode::Unsupported`](crate::ErrorCode::Unsupported).

use crate::error::{Result, RuntimeError};
use crate::protocol::{EngineKind, Event};
use async_trait::async_trait;
use qemuweb_config::{
    build_qemu_args, validate_profile, Arch, BrowserTarget, DiskInterface, ImageSource, IssueCode,
    Target, VmInputs, VmOverrides, VmProfile,
};

pub mod text_screen;
#[cfg(target_arch = "wasm32")]
pub mod v86;

/// The engines this build can run.
pub const AVAILABLE_ENGINES: [EngineKind; 1] = [EngineKind::V86];

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

    /// Reboots the guest; disks keep their content.
    async fn reset(&self) -> Result<()>;

    /// Hands every write the guest made to the disks' storage stacks (it is then durable
    /// after the stacks' own `sync`).
    async fn flush(&self) -> Result<()>;

    /// Stops the guest and releases the emulator. With `force`, pending writes are
    /// dropped instead of flushed.
    async fn stop(&self, force: bool) -> Result<()>;
}

/// Picks the engine for `profile` (and `requested`, if the page asked for one).
///
/// ```
/// use qemuweb_runtime::{engine::select_engine, EngineKind, ErrorCode};
/// let i386 = qemuweb_config::profile_by_id("linux-i386-pc-nographic").unwrap();
/// assert_eq!(select_engine(&i386, None, None).unwrap(), EngineKind::V86);
/// let x64 = qemuweb_config::profile_by_id("linux-x86_64-pc-nographic").unwrap();
/// let err = select_engine(&x64, None, None).unwrap_err();
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
    if requested == Some(EngineKind::Qemu) {
        return Err(RuntimeError::Unsupported(
            "the QEMU engine is not available yet; i386 profiles run on the v86 engine".into(),
        ));
    }
    if profile.arch != Arch::I386 {
        return Err(RuntimeError::Unsupported(format!(
            "profile {:?} is for {} guests: the v86 engine runs only 32-bit x86 (i386) guests, \
             and {} needs the QEMU engine, which is not available yet",
            profile.id, profile.arch, profile.arch
        )));
    }
    let interface = overrides
        .and_then(|o| o.disk_interface)
        .unwrap_or(profile.devices.disk_interface);
    if interface != DiskInterface::Ide {
        return Err(RuntimeError::Unsupported(format!(
            "profile {:?} attaches disks as {}: the v86 engine emulates IDE disks only",
            profile.id,
            interface.as_str()
        )));
    }
    Ok(EngineKind::V86)
}

/// The browser target v86 stands for when inputs are checked with
/// [`build_qemu_args`]: i386 only, up to 2 GiB of guest RAM, a VGA display, no slirp.
pub fn v86_target() -> BrowserTarget {
    BrowserTarget {
        archs: vec![Arch::I386],
        max_memory_mib: 2048,
        user_net: false,
        display: true,
        mount_dir: "/mnt".into(),
        firmware_dir: None,
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
    /// The block size of the disks' storage (HTTP chunks), from the profile.
    pub block_size: u32,
}

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
    let target = Target::Browser(v86_target());
    let result = build_qemu_args(profile, inputs, overrides, &target);
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
    if disks.len() > 2 {
        return Err(RuntimeError::InvalidInputs(format!(
            "{} disks given: the v86 engine attaches at most two hard disks",
            disks.len()
        )));
    }
    let memory_mib = overrides
        .and_then(|o| o.memory_mib)
        .unwrap_or(profile.memory_mib);
    let mut warnings: Vec<String> = result.warnings.iter().map(|w| w.message.clone()).collect();
    let smp = overrides.and_then(|o| o.smp).unwrap_or(profile.smp);
    if smp > 1 {
        warnings.push(format!(
            "{smp} vCPUs asked for: the v86 engine emulates one"
        ));
    }
    let graphics = overrides
        .and_then(|o| o.graphics)
        .unwrap_or(profile.supports_graphics);
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
        block_size: profile
            .block_size_bytes
            .unwrap_or(qemuweb_config::DEFAULT_BLOCK_SIZE_BYTES),
    })
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
            } else {
                let e = r.unwrap_err();
                assert_eq!(e.code(), ErrorCode::Unsupported, "{}", p.id);
                assert!(e.to_string().contains(p.arch.as_str()), "{e}");
            }
        }
        let e = select_engine(&i386(), None, Some(EngineKind::Qemu)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unsupported);
        let over = VmOverrides {
            disk_interface: Some(DiskInterface::VirtioBlk),
            ..Default::default()
        };
        let e = select_engine(&i386(), Some(&over), None).unwrap_err();
        assert!(e.to_string().contains("IDE"), "{e}");
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
