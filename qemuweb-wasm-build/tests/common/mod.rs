//! What the integration tests that run a QEMU build under Node share: reading the build's
//! `qemu-build.json` and the Node that runs its modules (the host's for a wasm32 build; the
//! build root's Node 24 through `qemuweb-wasm-build node` for a wasm64 one, the Node of the
//! Emscripten that built it).

#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;

/// The parts of a build's `qemu-build.json` the tests look at.
pub struct Build {
    /// The guest archs it has a module for.
    pub archs: Vec<String>,
    /// Whether its modules need Memory64 (the wasm64 plan).
    pub memory64: bool,
    /// Whether QEMU was built for wasm64 (64-bit pointers; the wasm64 plan lowers them to a
    /// 32-bit memory, so its modules need no Memory64).
    pub wasm64: bool,
    /// `"jit"` or `"interpreter"`.
    pub tcg: String,
}

/// Reads `dir/qemu-build.json`.
pub fn build_of(dir: &Path) -> Build {
    let path = dir.join("qemu-build.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (not a QEMU wasm build)", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let archs = json["modules"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["arch"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Build {
        archs,
        memory64: json["requirements"]["memory64"] == true,
        wasm64: json["wasm_cpu"] == "wasm64",
        tcg: json["tcg"].as_str().unwrap_or("interpreter").to_string(),
    }
}

/// The cache the output directory `dir` was built in (`<cache>/out/qemu-...`), whose
/// build root has the Node that runs it; else the default cache.
fn cache_of(dir: &Path) -> PathBuf {
    dir.parent()
        .and_then(Path::parent)
        .filter(|c| c.join("debootstrap-wasm64/root/usr/bin/node").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(qemuweb_wasm_build::default_cache_dir)
}

/// A command running Node for the modules of the build in `dir`, with `binds` (and `dir`)
/// visible at the same paths when Node runs in the build root; its first argument comes
/// next (the script).
pub fn node_for(dir: &Path, binds: &[&Path]) -> Command {
    if build_of(dir).memory64 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qemuweb-wasm-build"));
        cmd.arg("node").arg("--cache").arg(cache_of(dir));
        for b in std::iter::once(&dir).chain(binds) {
            cmd.arg("--bind").arg(b);
        }
        cmd.arg("--");
        cmd
    } else {
        Command::new("node")
    }
}
