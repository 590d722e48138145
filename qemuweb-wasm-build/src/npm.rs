//! A build's output as the npm package `@qemuweb/qemu-wasm`: the modules, the firmware and
//! `qemu-build.json` under `dist/` (what the runtime's `assets.qemuDir` names), our patch
//! series under `patches/`, and `SOURCES.md`, which lists every source the build was made
//! from (Debian pool URLs with SHA-256) as QEMU's GPL asks of a binary distribution.
//! `npm pack` on the directory makes the tarball.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::output::{Manifest, MANIFEST};
use crate::patches::PatchSource;

/// The package's name.
pub const PACKAGE: &str = "@qemuweb/qemu-wasm";

/// Writes the package for the finished build in `out_dir` into `dest` (replaced), with
/// `version` (the workspace version), and returns `dest`.
///
/// ```no_run
/// let dir = qemuweb_wasm_build::npm::write_package(
///     "/root/.cache/qemuweb/wasm-build/out/qemu-10.2.2-0123".as_ref(),
///     "target/npm/qemu-wasm".as_ref(),
///     "0.1.0",
///     &qemuweb_wasm_build::PatchSource::embedded(),
/// )?;
/// # Ok::<(), qemuweb_wasm_build::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::NotBuilt`] when `out_dir` holds no manifest; [`Error::InvalidPatch`] when
/// the patches are not the build's; I/O errors.
pub fn write_package(
    out_dir: &Path,
    dest: &Path,
    version: &str,
    patches: &PatchSource,
) -> Result<PathBuf> {
    let manifest_path = out_dir.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|_| Error::NotBuilt(out_dir.to_path_buf()))?;
    let manifest: Manifest = serde_json::from_str(&text)?;
    let series = &manifest.plan.qemu.patches;
    patches.check(series)?;
    match std::fs::remove_dir_all(dest) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(dest, e)),
        _ => {}
    }
    let dist = dest.join("dist");
    std::fs::create_dir_all(&dist).map_err(|e| Error::io(&dist, e))?;
    for name in manifest
        .files
        .iter()
        .map(|f| f.name.as_str())
        .chain([MANIFEST])
    {
        let from = out_dir.join(name);
        std::fs::copy(&from, dist.join(name)).map_err(|e| Error::io(&from, e))?;
    }
    let patch_dir = dest.join("patches").join(&series.name);
    std::fs::create_dir_all(&patch_dir).map_err(|e| Error::io(&patch_dir, e))?;
    for file in series
        .patches
        .iter()
        .map(|p| p.file.as_str())
        .chain([crate::patches::SERIES_FILE])
    {
        let bytes = patches.bytes(&series.name, file).unwrap_or_default();
        let to = patch_dir.join(file);
        std::fs::write(&to, bytes).map_err(|e| Error::io(&to, e))?;
    }
    write(dest, "package.json", &package_json(&manifest, version))?;
    write(dest, "README.md", &readme(&manifest))?;
    write(dest, "SOURCES.md", &sources(&manifest))?;
    Ok(dest.to_path_buf())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

/// The package's `package.json`.
pub fn package_json(m: &Manifest, version: &str) -> String {
    let programs: Vec<String> = m
        .modules
        .iter()
        .map(|m| m.js.trim_end_matches(".js").to_string())
        .collect();
    let cpu = match m.wasm_cpu {
        crate::WasmCpu::Wasm32 => "wasm32",
        crate::WasmCpu::Wasm64 => "wasm64",
    };
    let value = serde_json::json!({
        "name": PACKAGE,
        "version": version,
        "description": format!(
            "QEMU {} built to WebAssembly ({cpu}, TCG {}): {} with firmware, for the QEMU \
             engine of @qemuweb/runtime (assets.qemuDir)",
            m.qemu_version,
            m.tcg.as_str(),
            programs.join(" and ")
        ),
        "license": "GPL-2.0-only AND LGPL-3.0-only AND BSD-2-Clause-Patent",
        "keywords": ["qemu", "webassembly", "wasm64", "emulator", "virtual-machine"],
        "files": ["dist", "patches", "README.md", "SOURCES.md"],
        "exports": {
            "./dist/*": "./dist/*",
            "./package.json": "./package.json"
        },
        "sideEffects": false,
        "qemuweb": {
            "qemuVersion": m.qemu_version,
            "outputKey": m.output_key,
            "requirements": m.requirements,
        }
    });
    let mut s = serde_json::to_string_pretty(&value).expect("JSON");
    s.push('\n');
    s
}

fn readme(m: &Manifest) -> String {
    let mut s = format!(
        "# {PACKAGE}\n\n\
         QEMU {} built to WebAssembly by `qemuweb-wasm-build` for the QEMU engine of \
         `@qemuweb/runtime`. Serve `dist/` as it is (with \
         `Cross-Origin-Opener-Policy: same-origin` and \
         `Cross-Origin-Embedder-Policy: require-corp`, like the page) and give its URL to the \
         runtime as `assets.qemuDir`:\n\n\
         ```js\n\
         const client = new QemuClient({{ assets: {{ qemuDir: '/qemu/' }} }});\n\
         ```\n\n\
         With Vite, copy `node_modules/{PACKAGE}/dist` to `public/qemu` (or serve it from \
         there). The runtime reads `dist/qemu-build.json` first: which module runs which \
         guest, what the browser must offer and how much guest RAM a module can address.\n\n\
         | file | what |\n| --- | --- |\n",
        m.qemu_version
    );
    for module in &m.modules {
        let _ = writeln!(
            s,
            "| `{}`, `{}` | `{}` guests ({} MiB of guest RAM at most) |",
            module.js, module.wasm, module.arch, module.max_guest_ram_mib
        );
    }
    for f in m
        .files
        .iter()
        .filter(|f| !f.name.ends_with(".js") && !f.name.ends_with(".wasm"))
    {
        let _ = writeln!(s, "| `{}` | firmware ({} bytes) |", f.name, f.size);
    }
    let r = m.requirements;
    let _ = write!(
        s,
        "\nThe browser needs WebAssembly Memory64: {} (Chrome/Edge 133+, Firefox 134+); \
         threads and SharedArrayBuffer: {} (a cross-origin isolated page).\n\n\
         The sources (Debian's, checksummed) and our patches are listed in `SOURCES.md`; the \
         patches are in `patches/`.\n\n\
         Licenses: QEMU GPL-2.0-only; SeaBIOS LGPL-3.0-only; edk2 (QEMU_EFI.fd) \
         BSD-2-Clause-Patent.\n",
        if r.memory64 { "yes" } else { "no" },
        if r.threads { "yes" } else { "no" },
    );
    s
}

fn sources(m: &Manifest) -> String {
    let p = &m.plan;
    let mut s = format!(
        "# Sources of {PACKAGE}\n\n\
         Built by qemuweb-wasm-build (plan hash `{}`) with Emscripten {} in a Debian {} \
         build root. Every file was downloaded from Debian's archive and checked against \
         the SHA-256 below.\n\n| what | version | file | sha256 |\n| --- | --- | --- | --- |\n",
        m.plan_hash, p.emscripten.version, p.build_root.suite
    );
    let _ = writeln!(
        s,
        "| QEMU | {} | [{}]({}) | `{}` |",
        p.qemu.version, p.qemu.source.file, p.qemu.source.url, p.qemu.source.sha256
    );
    for d in &p.dependencies {
        let _ = writeln!(
            s,
            "| {} | {} | [{}]({}) | `{}` |",
            d.name, d.version, d.source.file, d.source.url, d.source.sha256
        );
    }
    for f in &p.firmware {
        let _ = writeln!(
            s,
            "| {} (firmware) | {} | [{}]({}) | `{}` |",
            f.package, f.version, f.source.file, f.source.url, f.source.sha256
        );
    }
    let _ = write!(
        s,
        "\nPatches applied to QEMU, in order (`patches/{}/`):\n\n",
        p.qemu.patches.name
    );
    for patch in &p.qemu.patches.patches {
        let _ = writeln!(
            s,
            "- `{}`: {} (sha256 `{}`)",
            patch.file, patch.subject, patch.sha256
        );
    }
    let _ = write!(s, "\nConfigure: `{}`\n", m.configure_args.join(" "));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn a_build_becomes_a_package_with_its_sources_and_patches() {
        let dir = tempfile::tempdir().unwrap();
        let (plan, out, m) = crate::output::testing::wasm32_output(dir.path());
        let dest = dir.path().join("pkg");
        std::fs::create_dir_all(dest.join("stale")).unwrap();
        write_package(&out, &dest, "0.1.0", &PatchSource::embedded()).unwrap();
        assert!(!dest.join("stale").exists());
        for f in &m.files {
            assert_eq!(
                std::fs::read(dest.join("dist").join(&f.name)).unwrap(),
                std::fs::read(out.join(&f.name)).unwrap()
            );
        }
        assert!(dest.join("dist/qemu-build.json").is_file());
        let pkg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dest.join("package.json")).unwrap())
                .unwrap();
        assert_eq!(pkg["name"], PACKAGE);
        assert_eq!(pkg["version"], "0.1.0");
        assert_eq!(pkg["exports"]["./dist/*"], "./dist/*");
        assert!(pkg["description"]
            .as_str()
            .unwrap()
            .contains("qemu-system-i386"));
        let sources = std::fs::read_to_string(dest.join("SOURCES.md")).unwrap();
        assert!(
            sources.contains(&plan.qemu.source.url) && sources.contains(&plan.qemu.source.sha256)
        );
        for p in &plan.qemu.patches.patches {
            assert!(sources.contains(&p.sha256), "{}", p.file);
            let copied = std::fs::read(
                dest.join("patches")
                    .join(&plan.qemu.patches.name)
                    .join(&p.file),
            )
            .unwrap();
            assert_eq!(crate::plan::hex(&sha2::Sha256::digest(&copied)), p.sha256);
        }
        let readme = std::fs::read_to_string(dest.join("README.md")).unwrap();
        assert!(readme.contains("assets.qemuDir") && readme.contains("qemu-system-i386.wasm"));
        // Not a build: a typed error.
        let err = write_package(dir.path(), &dest, "0.1.0", &PatchSource::embedded()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotBuilt);
    }
}
