//! VM profiles and QEMU command lines for QemuWeb.
//!
//! A [`VmProfile`] is the user's "what machine": arch, machine type, CPU, memory and
//! devices. [`build_qemu_args`] turns a profile, the [`VmInputs`] to boot (disks, kernel,
//! initrd; files or URLs) and optional [`VmOverrides`] into the arguments for real QEMU
//! on a [`Target`]: the QEMU-in-wasm build in a browser ([`BrowserTarget`]) or QEMU on
//! the host ([`NativeTarget`]). The result lists the files to mount and structured
//! [`Issue`]s: errors for combinations that cannot run, warnings for doubtful ones.
//!
//! The types derive `serde` (the reference design's camelCase field names) and `tsify`,
//! so TypeScript gets the same shapes; on wasm32 the crate exports `buildQemuArgs` and
//! `defaultProfiles` through wasm-bindgen.
//!
//! ```
//! use qemuweb_config::*;
//!
//! let profile = profile_by_id("linux-x86_64-pc-nographic")?;
//! let inputs = VmInputs {
//!     disk: Some(DiskInput::new(ImageSource::file("/images/debian.qcow2"), DiskFormat::Qcow2)),
//!     ..VmInputs::default()
//! };
//! let target = Target::Native(NativeTarget::new(Accelerator::Tcg, HostCaps::tcg_only()));
//! let result = build_qemu_args(&profile, &inputs, None, &target).into_result()?;
//! assert_eq!(result.binary, "qemu-system-x86_64");
//! assert!(result.args.windows(2).any(|w| w == ["-accel", "tcg"]));
//! # Ok::<(), ConfigError>(())
//! ```
#![warn(missing_docs)]

mod builder;
mod error;
mod network;
mod profiles;
mod target;
mod types;
#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "wasm32")]
pub use wasm::{build_qemu_args_js, default_networks_js, default_profiles_js};

pub use builder::{build_qemu_args, overlay_create_args, AARCH64_EFI_FIRMWARE};
pub use error::{ConfigError, ErrorKind};
pub use network::{
    default_mac, default_networks, effective_networks, format_mac, network_by_id, parse_cidr,
    parse_mac, DhcpConfig, DhcpPlan, DnsConfig, NetworkAttachment, NetworkMode, NetworkPlan,
    NetworkPortForward, NicModel, PortLimits, VirtualNetwork, DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_NETWORK, ISOLATED_NETWORK,
};
pub use profiles::{
    default_profiles, profile_by_id, validate_profile, ProfileSet, AARCH64_MACHINE,
    DEFAULT_BLOCK_SIZE_BYTES, LINUX_AARCH64_VIRT_GRAPHICS, LINUX_AARCH64_VIRT_NOGRAPHIC,
    LINUX_I386_PC_GRAPHICS, LINUX_I386_PC_NOGRAPHIC, LINUX_X86_64_PC_GRAPHICS,
    LINUX_X86_64_PC_NOGRAPHIC, MINIMAL_X86_64,
};
pub use target::{
    Accelerator, BrowserTarget, HostCaps, HostOs, NativeDisplay, NativeTarget, Target,
};
pub use types::{
    Arch, DiskFormat, DiskInput, DiskInterface, FileMountInfo, ForwardProtocol, ImageSource, Issue,
    IssueCode, MountRole, NetMode, PortForward, QemuArgsResult, SerialMode, Severity, VmDevices,
    VmInputs, VmOverrides, VmProfile,
};
