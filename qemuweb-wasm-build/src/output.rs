//! The output directory: the QEMU module, the firmware and `qemu-build.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::env::EnvKind;
use crate::error::{Error, Result};
use crate::fetch::sha256_file;
use crate::plan::{hex, BuildPlan, WasmCpu};
use crate::steps::{build_steps, configure_args};

/// The manifest's file name.
pub const MANIFEST: &str = "qemu-build.json";

/// The key of a plan's output: the plan's hash and the fingerprints of its steps, so a
/// changed recipe gives a new output directory even when the plan's data is the same.
///
/// ```
/// let plan = qemuweb_wasm_build::BuildPlan::default();
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
/// let plan = qemuweb_wasm_build::BuildPlan::default();
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
    for bin in plan.binaries() {
        for ext in ["js", "wasm"] {
            let name = format!("{bin}.{ext}");
            sources.push((input.work.join("build/qemu").join(&name), name));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collect_copies_hashes_and_marks_the_output_finished() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("build/qemu")).unwrap();
        std::fs::create_dir_all(work.join("firmware")).unwrap();
        std::fs::write(work.join("build/qemu/qemu-system-i386.js"), b"js").unwrap();
        std::fs::write(work.join("build/qemu/qemu-system-i386.wasm"), b"\0asm").unwrap();
        for f in [
            "bios-256k.bin",
            "vgabios-stdvga.bin",
            "kvmvapic.bin",
            "linuxboot_dma.bin",
        ] {
            std::fs::write(work.join("firmware").join(f), f.as_bytes()).unwrap();
        }
        let plan = BuildPlan::default();
        let out = dir.path().join("out");
        let key = output_key(&plan).unwrap();
        assert!(finished_build(&out, &key).is_none());
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
        assert_eq!(m.files.len(), 6);
        let js = &m.files[0];
        assert_eq!((js.name.as_str(), js.size), ("qemu-system-i386.js", 2));
        assert_eq!(js.sha256, hex(&Sha256::digest(b"js")));
        assert_eq!(finished_build(&out, &key), Some(m));
        assert!(finished_build(&out, "other").is_none());
    }

    #[test]
    fn collect_fails_on_a_missing_file_without_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let plan = BuildPlan::default();
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
