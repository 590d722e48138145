//! The output directory: the QEMU module, the firmware and `qemu-build.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::env::EnvKind;
use crate::error::{Error, Result};
use crate::fetch::sha256_file;
use crate::plan::{hex, BuildPlan, TcgBackend, WasmCpu};
use crate::steps::{build_steps, configure_args};

/// The manifest's file name.
pub const MANIFEST: &str = "qemu-build.json";

/// The key of a plan's output: the plan's hash and the fingerprints of its steps, so a
/// changed recipe gives a new output directory even when the plan's data is the same.
///
/// ```
/// let plan = qemuweb_wasm_build::BuildPlan::wasm64();
/// let key = qemuweb_wasm_build::output::output_key(&plan).unwrap();
/// assert_eq!(key.len(), 64);
/// ```
pub fn output_key(plan: &BuildPlan) -> Result<String> {
    let cpu = plan.validate()?;
    let mut h = Sha256::new();
    h.update(plan.hash().as_bytes());
    for step in build_steps(plan, cpu, "/work") {
        h.update(step.fingerprint().as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// Where the plan's output goes under the cache directory `cache`.
///
/// ```
/// let plan = qemuweb_wasm_build::BuildPlan::wasm64();
/// let dir = qemuweb_wasm_build::output::default_output_dir(&plan, "/c".as_ref()).unwrap();
/// assert!(dir.to_string_lossy().starts_with("/c/out/qemu-10.2.2-"));
/// ```
pub fn default_output_dir(plan: &BuildPlan, cache: &Path) -> Result<PathBuf> {
    let key = output_key(plan)?;
    Ok(cache
        .join("out")
        .join(format!("qemu-{}-{}", plan.qemu.version, &key[..16])))
}

/// One file of the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Its name in the output directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// How one step went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step.
    pub name: String,
    /// How long it took when it ran (for a cached step: when it last ran).
    pub seconds: f64,
    /// Whether this run reused it from the cache.
    pub cached: bool,
}

/// The environment a build ran in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentInfo {
    /// Which kind.
    pub kind: EnvKind,
    /// Details (build root path, runtime and image, emcc path).
    pub description: String,
    /// `emcc --version`'s first line as the build saw it.
    pub emcc: String,
}

/// A module's linear memory, read from its `.wasm` (the memory import, or its own memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmMemory {
    /// 64-bit addresses (the Memory64 proposal): needs Chrome/Edge 133+ or Firefox 134+.
    pub memory64: bool,
    /// Shared between threads (a `SharedArrayBuffer`): needs a cross-origin isolated page.
    pub shared: bool,
    /// The memory's initial size in bytes.
    pub initial_bytes: u64,
    /// Its maximum size in bytes, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_bytes: Option<u64>,
}

impl WasmMemory {
    /// The most bytes the module can ever address: its maximum, else its initial size.
    pub fn limit_bytes(&self) -> u64 {
        self.maximum_bytes.unwrap_or(self.initial_bytes)
    }
}

/// What a browser must offer to run the output, derived from the modules' memories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    /// WebAssembly Memory64 (Chrome/Edge 133+, Firefox 134+; not Safari as of 2026).
    pub memory64: bool,
    /// WebAssembly threads (shared memory and atomics; QEMU's pthreads are Workers).
    pub threads: bool,
    /// `SharedArrayBuffer`, which needs a cross-origin isolated page (COOP/COEP).
    pub shared_array_buffer: bool,
}

/// How much of a module's memory QEMU itself needs beside the guest's RAM: the TCG
/// translation buffer (an eighth of the memory), QEMU's own state and the heap's slack.
pub const QEMU_RESERVE_MIB: u64 = 768;

/// One QEMU emulator of the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleInfo {
    /// The QEMU target, e.g. `x86_64-softmmu`.
    pub target: String,
    /// The guest architecture, e.g. `x86_64`.
    pub arch: String,
    /// The ES6 factory (also the script of the module's pthread workers).
    pub js: String,
    /// The wasm.
    pub wasm: String,
    /// Its linear memory.
    pub memory: WasmMemory,
    /// The most guest RAM it can give: its memory limit less [`QEMU_RESERVE_MIB`].
    pub max_guest_ram_mib: u64,
}

/// `qemu-build.json`: what was built, from what, how, and the files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// This tool and its version.
    pub tool: String,
    /// [`output_key`] of the plan.
    pub output_key: String,
    /// [`BuildPlan::hash`].
    pub plan_hash: String,
    /// QEMU's version.
    pub qemu_version: String,
    /// The QEMU targets built.
    pub targets: Vec<String>,
    /// The WebAssembly memory model.
    pub wasm_cpu: WasmCpu,
    /// The TCG backend.
    pub tcg: TcgBackend,
    /// The emulators, one per target.
    pub modules: Vec<ModuleInfo>,
    /// What the browser must offer.
    pub requirements: Requirements,
    /// QEMU's configure arguments.
    pub configure_args: Vec<String>,
    /// The environment.
    pub environment: EnvironmentInfo,
    /// Every file of the output directory except this manifest.
    pub files: Vec<OutputFile>,
    /// Every step, in order.
    pub steps: Vec<StepReport>,
    /// The sum of the steps' times (what a build from scratch took).
    pub build_seconds: f64,
    /// How long the run that wrote this manifest took.
    pub run_seconds: f64,
    /// The full plan (versions, sources and checksums, flags).
    pub plan: BuildPlan,
}

/// Reads the manifest of `dir`, if it is a finished build of the plan with `key`.
pub fn finished_build(dir: &Path, key: &str) -> Option<Manifest> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
    let manifest: Manifest = serde_json::from_str(&text).ok()?;
    (manifest.output_key == key).then_some(manifest)
}

/// What [`collect`] needs besides the plan.
#[derive(Debug, Clone)]
pub struct CollectInput<'a> {
    /// The work directory (host view) with `build/qemu` and `firmware`.
    pub work: &'a Path,
    /// The environment.
    pub environment: EnvironmentInfo,
    /// The steps.
    pub steps: Vec<StepReport>,
    /// How long this run took so far.
    pub run_seconds: f64,
}

/// Copies the module and firmware from the work directory into `out` and writes the
/// manifest last (its presence means the output is complete).
pub fn collect(plan: &BuildPlan, out: &Path, input: CollectInput<'_>) -> Result<Manifest> {
    let cpu = plan.validate()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let manifest_path = out.join(MANIFEST);
    match std::fs::remove_file(&manifest_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(&manifest_path, e))
        }
        _ => {}
    }
    let mut sources: Vec<(PathBuf, String)> = Vec::new();
    let mut modules = Vec::new();
    for (bin, target) in plan.binaries().into_iter().zip(&plan.targets) {
        for ext in ["js", "wasm"] {
            let name = format!("{bin}.{ext}");
            sources.push((input.work.join("build/qemu").join(&name), name));
        }
        let wasm_path = input.work.join("build/qemu").join(format!("{bin}.wasm"));
        let bytes = std::fs::read(&wasm_path).map_err(|e| Error::io(&wasm_path, e))?;
        let memory = wasm_memory(&bytes).map_err(|reason| {
            Error::io(
                &wasm_path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
            )
        })?;
        modules.push(ModuleInfo {
            target: target.clone(),
            arch: target.trim_end_matches("-softmmu").to_string(),
            js: format!("{bin}.js"),
            wasm: format!("{bin}.wasm"),
            max_guest_ram_mib: (memory.limit_bytes() >> 20).saturating_sub(QEMU_RESERVE_MIB),
            memory,
        });
    }
    let requirements = Requirements {
        memory64: modules.iter().any(|m| m.memory.memory64),
        threads: modules.iter().any(|m| m.memory.shared),
        shared_array_buffer: modules.iter().any(|m| m.memory.shared),
    };
    for pkg in &plan.firmware {
        for f in &pkg.files {
            sources.push((input.work.join("firmware").join(&f.name), f.name.clone()));
        }
    }
    let mut files = Vec::new();
    for (from, name) in sources {
        let to = out.join(&name);
        std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
        let size = to.metadata().map_err(|e| Error::io(&to, e))?.len();
        files.push(OutputFile {
            name,
            size,
            sha256: sha256_file(&to)?,
        });
    }
    let manifest = Manifest {
        tool: format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        output_key: output_key(plan)?,
        plan_hash: plan.hash(),
        qemu_version: plan.qemu.version.clone(),
        targets: plan.targets.clone(),
        wasm_cpu: cpu,
        tcg: plan.tcg,
        modules,
        requirements,
        configure_args: configure_args(plan, cpu),
        environment: input.environment,
        files,
        build_seconds: input.steps.iter().map(|s| s.seconds).sum(),
        steps: input.steps,
        run_seconds: input.run_seconds,
        plan: plan.clone(),
    };
    let json = serde_json::to_string_pretty(&manifest)?;
    std::fs::write(&manifest_path, json).map_err(|e| Error::io(&manifest_path, e))?;
    Ok(manifest)
}

/// Reads an unsigned LEB128 number at `*at`.
fn leb(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or("the module ends inside a number")?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a number longer than 64 bits".into())
}

/// Reads a length-prefixed name at `*at`.
fn name<'a>(bytes: &'a [u8], at: &mut usize) -> Result<&'a [u8], String> {
    let len = leb(bytes, at)? as usize;
    let start = *at;
    *at = at
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or("a name runs past the end")?;
    Ok(&bytes[start..*at])
}

/// The sections of the wasm module `bytes` (version 1), each as its id and payload.
fn sections(bytes: &[u8]) -> Result<impl Iterator<Item = Result<(u8, &[u8]), String>>, String> {
    if bytes.get(..8) != Some(b"\0asm\x01\0\0\0") {
        return Err("not a WebAssembly module (version 1)".into());
    }
    let mut at = 8;
    Ok(std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let id = bytes[at];
        at += 1;
        let section = leb(bytes, &mut at).and_then(|size| {
            let end = at
                .checked_add(size as usize)
                .filter(|&e| e <= bytes.len())
                .ok_or("a section runs past the end")?;
            Ok((id, &bytes[std::mem::replace(&mut at, end)..end]))
        });
        if section.is_err() {
            at = bytes.len();
        }
        Some(section)
    }))
}

/// Reads limits (flags: bit 0 a maximum, bit 1 shared, bit 2 64-bit) at `*at`.
fn limits(bytes: &[u8], at: &mut usize) -> Result<(u8, u64, Option<u64>), String> {
    let flags = *bytes.get(*at).ok_or("the module ends inside limits")?;
    *at += 1;
    let min = leb(bytes, at)?;
    let max = if flags & 1 != 0 {
        Some(leb(bytes, at)?)
    } else {
        None
    };
    Ok((flags, min, max))
}

/// The linear memory of a wasm module: its memory import (QEMU's, which Emscripten makes
/// shared for pthreads) or else the first memory it defines.
///
/// ```
/// // A module importing a shared Memory64 memory of 2 pages, at most 4: "env"."memory".
/// let mut m = b"\0asm\x01\0\0\0".to_vec();
/// m.extend([2, 16, 1, 3, b'e', b'n', b'v', 6, b'm', b'e', b'm', b'o', b'r', b'y', 2, 0x07, 2, 4]);
/// let mem = qemuweb_wasm_build::output::wasm_memory(&m).unwrap();
/// assert!(mem.memory64 && mem.shared);
/// assert_eq!((mem.initial_bytes, mem.maximum_bytes), (2 << 16, Some(4 << 16)));
/// assert!(qemuweb_wasm_build::output::wasm_memory(b"\0asm\x01\0\0\0").is_err());
/// ```
///
/// # Errors
///
/// A message when the bytes are not a wasm module or it has no memory.
pub fn wasm_memory(bytes: &[u8]) -> Result<WasmMemory, String> {
    let memory = |(flags, min, max): (u8, u64, Option<u64>)| WasmMemory {
        memory64: flags & 4 != 0,
        shared: flags & 2 != 0,
        initial_bytes: min << 16,
        maximum_bytes: max.map(|m| m << 16),
    };
    for section in sections(bytes)? {
        let (id, bytes) = section?;
        let mut p = 0;
        match id {
            2 => {
                for _ in 0..leb(bytes, &mut p)? {
                    name(bytes, &mut p)?;
                    name(bytes, &mut p)?;
                    let kind = *bytes.get(p).ok_or("the module ends inside an import")?;
                    p += 1;
                    match kind {
                        0 => {
                            leb(bytes, &mut p)?;
                        }
                        1 => {
                            p += 1; // the table's element type
                            limits(bytes, &mut p)?;
                        }
                        2 => return Ok(memory(limits(bytes, &mut p)?)),
                        3 => p += 2, // value type, mutability
                        4 => {
                            p += 1; // tag attribute
                            leb(bytes, &mut p)?;
                        }
                        other => return Err(format!("unknown import kind {other}")),
                    }
                }
            }
            5 if leb(bytes, &mut p)? > 0 => return Ok(memory(limits(bytes, &mut p)?)),
            _ => {}
        }
    }
    Err("the module has no memory".into())
}

/// The payload of the custom section `wanted` of a wasm module (after its name), if it has
/// one: e.g. `name`, the function names the wasm64 link keeps (`--profiling-funcs`).
///
/// ```
/// let mut m = b"\0asm\x01\0\0\0".to_vec();
/// m.extend([0, 7, 4, b'n', b'a', b'm', b'e', 0xab, 0xcd]); // custom section "name"
/// let custom = qemuweb_wasm_build::output::wasm_custom_section;
/// assert_eq!(custom(&m, "name").unwrap(), Some(&[0xab, 0xcd][..]));
/// assert_eq!(custom(&m, "other").unwrap(), None);
/// assert!(custom(b"\0asm\x01\0\0\0\0\x09", "name").is_err()); // runs past the end
/// ```
///
/// # Errors
///
/// A message when the bytes are not a wasm module or a section is cut short.
pub fn wasm_custom_section<'a>(bytes: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>, String> {
    for section in sections(bytes)? {
        let (id, payload) = section?;
        if id == 0 {
            let mut at = 0;
            if name(payload, &mut at)? == wanted.as_bytes() {
                return Ok(Some(&payload[at..]));
            }
        }
    }
    Ok(None)
}

/// A finished (tiny, fake) wasm32 output for tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Writes a work directory with a tiny i386 module and the four firmware files under
    /// `dir`, collects it into `dir/out` and returns the plan, the output and its manifest.
    pub(crate) fn wasm32_output(dir: &Path) -> (BuildPlan, PathBuf, Manifest) {
        let work = dir.join("work");
        std::fs::create_dir_all(work.join("build/qemu")).unwrap();
        std::fs::create_dir_all(work.join("firmware")).unwrap();
        std::fs::write(work.join("build/qemu/qemu-system-i386.js"), b"js").unwrap();
        // A shared 32-bit memory of 2 GiB, as Emscripten's pthread builds import it.
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend([
            2, 20, 1, 3, b'e', b'n', b'v', 6, b'm', b'e', b'm', b'o', b'r', b'y', 2, 3,
        ]);
        wasm.extend([0x80, 0x80, 0x02, 0x80, 0x80, 0x02]); // 32768 pages, twice
        std::fs::write(work.join("build/qemu/qemu-system-i386.wasm"), &wasm).unwrap();
        for f in [
            "bios-256k.bin",
            "vgabios-stdvga.bin",
            "kvmvapic.bin",
            "linuxboot_dma.bin",
        ] {
            std::fs::write(work.join("firmware").join(f), f.as_bytes()).unwrap();
        }
        let plan = BuildPlan::wasm32();
        let out = dir.join("out");
        assert!(finished_build(&out, &output_key(&plan).unwrap()).is_none());
        let m = collect(
            &plan,
            &out,
            CollectInput {
                work: &work,
                environment: EnvironmentInfo {
                    kind: EnvKind::Host,
                    description: "test".into(),
                    emcc: "emcc 3.1.69".into(),
                },
                steps: vec![StepReport {
                    name: "a".into(),
                    seconds: 2.0,
                    cached: false,
                }],
                run_seconds: 2.5,
            },
        )
        .unwrap();
        (plan, out, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collect_copies_hashes_and_marks_the_output_finished() {
        let dir = tempfile::tempdir().unwrap();
        let (plan, out, m) = testing::wasm32_output(dir.path());
        let key = output_key(&plan).unwrap();
        assert_eq!(m.files.len(), 6);
        let module = &m.modules[0];
        assert_eq!(
            (module.arch.as_str(), module.js.as_str()),
            ("i386", "qemu-system-i386.js")
        );
        assert_eq!(module.memory.limit_bytes(), 2 << 30);
        assert_eq!(module.max_guest_ram_mib, 2048 - QEMU_RESERVE_MIB);
        assert!(m.requirements.threads && m.requirements.shared_array_buffer);
        assert!(!m.requirements.memory64);
        let js = &m.files[0];
        assert_eq!((js.name.as_str(), js.size), ("qemu-system-i386.js", 2));
        assert_eq!(js.sha256, hex(&Sha256::digest(b"js")));
        assert_eq!(finished_build(&out, &key), Some(m));
        assert!(finished_build(&out, "other").is_none());
    }

    #[test]
    fn collect_fails_on_a_missing_file_without_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let plan = BuildPlan::wasm32();
        let out = dir.path().join("out");
        let err = collect(
            &plan,
            &out,
            CollectInput {
                work: dir.path(),
                environment: EnvironmentInfo {
                    kind: EnvKind::Host,
                    description: String::new(),
                    emcc: String::new(),
                },
                steps: vec![],
                run_seconds: 0.0,
            },
        )
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Io);
        assert!(!out.join(MANIFEST).exists());
    }
}
