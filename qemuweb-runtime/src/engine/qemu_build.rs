//! What the QEMU engine knows about a QEMU build before it downloads it: the build's
//! `qemu-build.json` (written by `qemuweb-wasm-build` beside the modules, a few KB), read
//! for the module of the guest's arch, what the module needs from the browser and how much
//! guest RAM it can address.
//!
//! The engine checks, in this order and before fetching any module or disk byte:
//!
//! 1. that the browser has WebAssembly Memory64 when the build needs it
//!    ([`check_memory64`]; the check needs no download at all);
//! 2. that the build has a module for the profile's arch ([`QemuBuild::module_for`]);
//! 3. that the guest's RAM fits the module's memory ([`QemuModule::check_ram`]).
//!
//! ```
//! use qemuweb_config::Arch;
//! use qemuweb_runtime::engine::qemu_build::QemuBuild;
//! let json = r#"{"qemu_version": "10.2.2",
//!   "requirements": {"memory64": true, "threads": true, "sharedArrayBuffer": true},
//!   "modules": [{"target": "x86_64-softmmu", "arch": "x86_64", "js": "qemu-system-x86_64.js",
//!     "wasm": "qemu-system-x86_64.wasm", "maxGuestRamMib": 1280,
//!     "memory": {"memory64": true, "shared": true, "initialBytes": 2147483648}}],
//!   "files": [{"name": "bios-256k.bin", "size": 262144, "sha256": "00"}]}"#;
//! let build = QemuBuild::from_json(json).unwrap();
//! // i386 guests run on qemu-system-x86_64.
//! let module = build.module_for(Arch::I386).unwrap();
//! assert_eq!(module.js, "qemu-system-x86_64.js");
//! assert!(module.check_ram(1280 << 20).is_ok());
//! assert!(module.check_ram(1281 << 20).is_err());
//! ```

use crate::error::{Result, RuntimeError};
use qemuweb_config::Arch;
use serde::Deserialize;

/// The browsers that run WebAssembly Memory64, for the error that asks for one.
pub const MEMORY64_BROWSERS: &str = "Chrome or Edge 133 or later, or Firefox 134 or later";

/// The name of a build's manifest.
pub const MANIFEST: &str = "qemu-build.json";

/// What a build needs from the browser (`requirements` of `qemu-build.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    /// WebAssembly Memory64.
    #[serde(default)]
    pub memory64: bool,
    /// WebAssembly threads.
    #[serde(default)]
    pub threads: bool,
    /// `SharedArrayBuffer` (a cross-origin isolated page).
    #[serde(default)]
    pub shared_array_buffer: bool,
}

/// A module's linear memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleMemory {
    /// 64-bit addresses.
    #[serde(default)]
    pub memory64: bool,
    /// Shared between threads.
    #[serde(default)]
    pub shared: bool,
    /// Initial size in bytes.
    pub initial_bytes: u64,
    /// Maximum size in bytes, if any.
    #[serde(default)]
    pub maximum_bytes: Option<u64>,
}

/// One emulator of a build.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QemuModule {
    /// The QEMU target, e.g. `x86_64-softmmu`.
    pub target: String,
    /// The guest arch, e.g. `x86_64`.
    pub arch: String,
    /// The ES6 factory's file name, beside the manifest.
    pub js: String,
    /// The wasm's file name.
    pub wasm: String,
    /// Its linear memory.
    pub memory: ModuleMemory,
    /// The most guest RAM it can give, in MiB.
    pub max_guest_ram_mib: u64,
}

impl QemuModule {
    /// Checks that `bytes` of guest RAM fit this module.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unsupported`] naming the module, its memory and the limit.
    pub fn check_ram(&self, bytes: u64) -> Result<()> {
        let mib = bytes.div_ceil(1 << 20);
        if mib <= self.max_guest_ram_mib {
            return Ok(());
        }
        let memory_mib = self
            .memory
            .maximum_bytes
            .unwrap_or(self.memory.initial_bytes)
            >> 20;
        Err(RuntimeError::Unsupported(format!(
            "{mib} MiB of guest RAM is more than the QEMU module {} can address: its \
             WebAssembly memory is {memory_mib} MiB and QEMU keeps part of it, so guests get at \
             most {} MiB (give the VM less memory)",
            self.wasm, self.max_guest_ram_mib
        )))
    }
}

/// One file of a build (`files` of `qemu-build.json`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BuildFile {
    /// Its name beside the manifest.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The parts of `qemu-build.json` the engine uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QemuBuild {
    /// QEMU's version.
    pub qemu_version: String,
    /// What the browser must offer.
    #[serde(default)]
    pub requirements: Requirements,
    /// The emulators.
    #[serde(default)]
    pub modules: Vec<QemuModule>,
    /// Every file beside the manifest.
    #[serde(default)]
    pub files: Vec<BuildFile>,
    /// The TCG backend the build has: `jit` (our WebAssembly JIT over the interpreter) or
    /// `interpreter` (TCI only; also a manifest from before the JIT existed).
    #[serde(default)]
    pub tcg: Tcg,
    /// The plan it was built from (its patch series: [`QemuBuild::has_patch`]).
    #[serde(default)]
    pub plan: BuildPlan,
}

/// The part of `plan` of `qemu-build.json` the engine reads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct BuildPlan {
    /// QEMU's source and patches.
    #[serde(default)]
    pub qemu: PlanQemu,
}

/// `plan.qemu` of `qemu-build.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct PlanQemu {
    /// The patch series.
    #[serde(default)]
    pub patches: PatchSeries,
}

/// `plan.qemu.patches` of `qemu-build.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct PatchSeries {
    /// The patches applied, in order.
    #[serde(default)]
    pub patches: Vec<PatchFile>,
}

/// One patch of the series.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PatchFile {
    /// Its file name (`0030-qemuweb-netdev.patch`).
    pub file: String,
}

/// The patch that gives QEMU QemuWeb's netdev (`-netdev qemuweb`).
pub const NETDEV_PATCH: &str = "0030-qemuweb-netdev.patch";

/// `tcg` of `qemu-build.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tcg {
    /// TCI, QEMU's TCG interpreter, only.
    #[default]
    Interpreter,
    /// The WebAssembly JIT (patches 0010-0014), with TCI for cold blocks and as the
    /// fallback (`-accel tcg,wasm-jit=off`).
    Jit,
}

impl QemuBuild {
    /// Reads a manifest.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::InvalidInputs`] when it is not a `qemu-build.json` this runtime reads
    /// (a build from before the modules were listed included).
    pub fn from_json(json: &str) -> Result<Self> {
        let build: QemuBuild = serde_json::from_str(json).map_err(|e| {
            RuntimeError::InvalidInputs(format!(
                "{MANIFEST} of the QEMU build cannot be read ({e}): is assets.qemuDir the \
                 output directory of qemuweb-wasm-build or the dist/ of @qemuweb/qemu-wasm?"
            ))
        })?;
        if build.modules.is_empty() {
            return Err(RuntimeError::InvalidInputs(format!(
                "{MANIFEST} of the QEMU build lists no modules: rebuild it with this \
                 qemuweb-wasm-build (scripts/build-qemu)"
            )));
        }
        Ok(build)
    }

    /// QEMU's arguments `args` with the accelerator a start asked for: `jit` `None` keeps
    /// the build's default (the JIT when it has one), `Some(false)` turns a JIT build's JIT
    /// off (`-accel tcg,wasm-jit=off`), `Some(true)` needs a JIT build. On a JIT build with
    /// `host_tso` (the host keeps plain accesses in x86 order), the JIT and its interpreter
    /// leave out the barriers x86 guests need only on weakly ordered hosts
    /// (`wasm-jit-tso=1`).
    ///
    /// ```
    /// use qemuweb_runtime::engine::qemu_build::QemuBuild;
    /// let json = r#"{"qemu_version": "10.2.2", "tcg": "jit", "modules": [{"target":
    ///   "x86_64-softmmu", "arch": "x86_64", "js": "q.js", "wasm": "q.wasm", "maxGuestRamMib": 64,
    ///   "memory": {"memory64": true, "shared": true, "initialBytes": 0}}]}"#;
    /// let build = QemuBuild::from_json(json).unwrap();
    /// let args: Vec<String> = ["-accel", "tcg", "-m", "64"].map(String::from).into();
    /// assert_eq!(build.accel_args(&args, Some(false), false).unwrap()[1], "tcg,wasm-jit=off");
    /// assert_eq!(build.accel_args(&args, None, true).unwrap()[1], "tcg,wasm-jit-tso=1");
    /// assert_eq!(build.accel_args(&args, None, false).unwrap(), args);
    /// ```
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unsupported`] for `Some(true)` on a build without the JIT.
    pub fn accel_args(
        &self,
        args: &[String],
        jit: Option<bool>,
        host_tso: bool,
    ) -> Result<Vec<String>> {
        let accel =
            match (self.tcg, jit) {
                (Tcg::Interpreter, Some(true)) => return Err(RuntimeError::Unsupported(
                    "this QEMU build has no WebAssembly JIT (its qemu-build.json says \"tcg\": \
                     \"interpreter\"): build the plan with --tcg jit, or start without qemu.jit"
                        .into(),
                )),
                (Tcg::Jit, Some(false)) if host_tso => "tcg,wasm-jit=off,wasm-jit-tso=1",
                (Tcg::Jit, Some(false)) => "tcg,wasm-jit=off",
                (Tcg::Jit, _) if host_tso => "tcg,wasm-jit-tso=1",
                _ => return Ok(args.to_vec()),
            };
        let mut out = args.to_vec();
        for i in 1..out.len() {
            if out[i - 1] == "-accel" && out[i] == "tcg" {
                out[i] = accel.into();
            }
        }
        Ok(out)
    }

    /// The module that runs `arch` guests: its own, or for i386 the x86_64 one.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unsupported`] naming the archs the build has.
    pub fn module_for(&self, arch: Arch) -> Result<&QemuModule> {
        let wanted: &[&str] = match arch {
            Arch::I386 => &["i386", "x86_64"],
            Arch::X86_64 => &["x86_64"],
            Arch::Aarch64 => &["aarch64"],
        };
        wanted
            .iter()
            .find_map(|w| self.modules.iter().find(|m| m.arch == *w))
            .ok_or_else(|| {
                let has: Vec<&str> = self.modules.iter().map(|m| m.arch.as_str()).collect();
                RuntimeError::Unsupported(format!(
                    "this QEMU build has no emulator for {arch} guests (it has {})",
                    has.join(", ")
                ))
            })
    }

    /// Whether the build applied patch `file` of its series.
    pub fn has_patch(&self, file: &str) -> bool {
        self.plan
            .qemu
            .patches
            .patches
            .iter()
            .any(|p| p.file == file)
    }

    /// Checks that the build can put a NIC on the page's network `network`: it has
    /// QemuWeb's netdev ([`NETDEV_PATCH`]).
    ///
    /// ```
    /// use qemuweb_runtime::engine::qemu_build::QemuBuild;
    /// let json = r#"{"qemu_version": "10.2.2", "modules": [{"target": "x86_64-softmmu",
    ///   "arch": "x86_64", "js": "q.js", "wasm": "q.wasm", "maxGuestRamMib": 64,
    ///   "memory": {"memory64": true, "shared": true, "initialBytes": 0}}],
    ///   "plan": {"qemu": {"patches": {"patches": [{"file": "0030-qemuweb-netdev.patch"}]}}}}"#;
    /// assert!(QemuBuild::from_json(json).unwrap().check_netdev("lan").is_ok());
    /// let old = json.replace("0030", "0020");
    /// let e = QemuBuild::from_json(&old).unwrap().check_netdev("lan").unwrap_err();
    /// assert_eq!(e.code(), qemuweb_runtime::ErrorCode::Unsupported);
    /// assert!(e.to_string().contains("'lan'"), "{e}");
    /// ```
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NetworkUnavailable`] for a build without it.
    pub fn check_netdev(&self, network: &str) -> Result<()> {
        if self.has_patch(NETDEV_PATCH) {
            return Ok(());
        }
        Err(RuntimeError::NetworkUnavailable {
            engine: "qemu",
            network: network.to_string(),
            reason: format!(
                "this QEMU build has no network backend for the page (it was built without \
                 {NETDEV_PATCH}): rebuild it with this qemuweb-wasm-build (scripts/build-qemu)"
            ),
        })
    }

    /// Whether the build has a file called `name` (firmware).
    pub fn has_file(&self, name: &str) -> bool {
        self.files.iter().any(|f| f.name == name)
    }
}

/// Checks that a browser that reports `memory64` can run a build that `needs` it.
///
/// ```
/// use qemuweb_runtime::engine::qemu_build::check_memory64;
/// assert!(check_memory64(true, true).is_ok());
/// let e = check_memory64(true, false).unwrap_err();
/// assert_eq!(e.code(), qemuweb_runtime::ErrorCode::Unsupported);
/// assert!(e.to_string().contains("Memory64") && e.to_string().contains("Firefox 134"));
/// ```
///
/// # Errors
///
/// [`RuntimeError::Unsupported`] naming the missing feature and the browsers that have it.
pub fn check_memory64(needs: bool, memory64: bool) -> Result<()> {
    if !needs || memory64 {
        return Ok(());
    }
    Err(RuntimeError::Unsupported(format!(
        "this QEMU build needs WebAssembly Memory64 (a wasm64 build linked without lowering \
         its memory to 32 bits), which this browser does not have: use {MEMORY64_BROWSERS}, \
         or QemuWeb's own build (`qemuweb-wasm-build --plan wasm64`), which needs no \
         Memory64"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn build() -> QemuBuild {
        QemuBuild::from_json(
            r#"{"qemu_version": "10.2.2", "output_key": "ignored",
               "requirements": {"memory64": true, "threads": true, "sharedArrayBuffer": true},
               "modules": [
                 {"target": "x86_64-softmmu", "arch": "x86_64", "js": "qemu-system-x86_64.js",
                  "wasm": "qemu-system-x86_64.wasm", "maxGuestRamMib": 1280,
                  "memory": {"memory64": true, "shared": true, "initialBytes": 2147483648,
                             "maximumBytes": 2147483648}},
                 {"target": "aarch64-softmmu", "arch": "aarch64", "js": "qemu-system-aarch64.js",
                  "wasm": "qemu-system-aarch64.wasm", "maxGuestRamMib": 1280,
                  "memory": {"memory64": true, "shared": true, "initialBytes": 2147483648}}],
               "files": [{"name": "QEMU_EFI.fd", "size": 3145728, "sha256": "x"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn modules_are_found_by_arch() {
        let b = build();
        assert_eq!(b.module_for(Arch::X86_64).unwrap().arch, "x86_64");
        assert_eq!(b.module_for(Arch::I386).unwrap().arch, "x86_64");
        assert_eq!(
            b.module_for(Arch::Aarch64).unwrap().js,
            "qemu-system-aarch64.js"
        );
        assert!(b.requirements.memory64 && b.requirements.shared_array_buffer);
        assert!(b.has_file("QEMU_EFI.fd") && !b.has_file("bios.bin"));
        let mut only_x86 = b.clone();
        only_x86.modules.retain(|m| m.arch == "x86_64");
        let e = only_x86.module_for(Arch::Aarch64).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unsupported);
        assert!(
            e.to_string().contains("aarch64") && e.to_string().contains("x86_64"),
            "{e}"
        );
    }

    #[test]
    fn the_jit_is_turned_off_or_required_by_the_start() {
        let args: Vec<String> = ["-L", "/firmware", "-accel", "tcg", "-m", "64"]
            .map(String::from)
            .into();
        let mut b = build();
        assert_eq!(b.tcg, Tcg::Interpreter, "a manifest without tcg");
        for tso in [false, true] {
            assert_eq!(b.accel_args(&args, None, tso).unwrap(), args);
            assert_eq!(b.accel_args(&args, Some(false), tso).unwrap(), args);
            let e = b.accel_args(&args, Some(true), tso).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Unsupported);
            assert!(e.to_string().contains("--tcg jit"), "{e}");
        }
        b.tcg = Tcg::Jit;
        assert_eq!(b.accel_args(&args, None, false).unwrap(), args);
        assert_eq!(b.accel_args(&args, Some(true), false).unwrap(), args);
        for (tso, accel) in [
            (false, "tcg,wasm-jit=off"),
            // The interpreter of a JIT build keeps the compiled code's barrier rule.
            (true, "tcg,wasm-jit=off,wasm-jit-tso=1"),
        ] {
            let off = b.accel_args(&args, Some(false), tso).unwrap();
            assert_eq!(off[3], accel);
            assert_eq!(off.len(), args.len());
        }
        for jit in [None, Some(true)] {
            let tso = b.accel_args(&args, jit, true).unwrap();
            assert_eq!(tso[3], "tcg,wasm-jit-tso=1");
            assert_eq!(tso.len(), args.len());
        }
        let json = r#"{"qemu_version": "10.2.2", "tcg": "jit", "modules": [{"target": "x",
            "arch": "x86_64", "js": "a.js", "wasm": "a.wasm", "maxGuestRamMib": 64,
            "memory": {"memory64": true, "shared": true, "initialBytes": 0}}]}"#;
        assert_eq!(QemuBuild::from_json(json).unwrap().tcg, Tcg::Jit);
    }

    #[test]
    fn guest_ram_above_the_module_limit_is_unsupported() {
        let b = build();
        let m = b.module_for(Arch::X86_64).unwrap();
        assert!(m.check_ram(512 << 20).is_ok());
        assert!(m.check_ram(1280 << 20).is_ok());
        let e = m.check_ram(2048 << 20).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unsupported);
        let msg = e.to_string();
        assert!(
            msg.contains("2048 MiB")
                && msg.contains("1280 MiB")
                && msg.contains("qemu-system-x86_64.wasm"),
            "{msg}"
        );
    }

    #[test]
    fn manifests_that_cannot_serve_are_invalid_inputs() {
        for json in [
            "",
            "{}",
            r#"{"qemu_version": "10.2.2"}"#,
            r#"{"qemu_version": 5}"#,
        ] {
            let e = QemuBuild::from_json(json).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidInputs, "{json}: {e}");
        }
    }
}
