//! With the feature `embed-bundle`: the runtime's web bundle (wasm-bindgen output and the
//! runtime's `web/` files), embedded so an installed runner needs no source checkout.
//!
//! The bundle is `$QEMUWEB_WEB_BUNDLE` when set (a `scripts/build-web qemuweb-runtime`
//! output), else built here by `scripts/build-web` of the checkout this crate is built
//! from, into `OUT_DIR` with a cargo target directory of its own (the outer build holds the
//! lock of its own). That needs the `wasm32-unknown-unknown` target and `wasm-bindgen-cli`
//! at the version the workspace pins (`scripts/setup` installs both).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=QEMUWEB_WEB_BUNDLE");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_EMBED_BUNDLE").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let bundle = match std::env::var_os("QEMUWEB_WEB_BUNDLE").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => build_bundle(&out),
    };
    if !bundle.join("qemuweb_runtime.js").is_file() {
        panic!(
            "{}: no qemuweb_runtime.js (not a runtime web bundle)",
            bundle.display()
        );
    }
    let mut files = Vec::new();
    collect(&bundle, &bundle, &mut files);
    files.sort();
    let mut code = String::from(
        "/// The embedded bundle: (path inside it, content).\npub(crate) static FILES: &[(&str, &[u8])] = &[\n",
    );
    for (rel, abs) in &files {
        code.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            abs.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("bundle.rs"), code).expect("write bundle.rs");
}

/// Runs the checkout's `scripts/build-web qemuweb-runtime` into `out/bundle`.
fn build_bundle(out: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf();
    let script = repo.join("scripts/build-web");
    if !script.is_file() {
        panic!(
            "embed-bundle: {} is missing; build from a QemuWeb checkout or set QEMUWEB_WEB_BUNDLE",
            script.display()
        );
    }
    for dir in [
        "qemuweb-runtime/src",
        "qemuweb-runtime/web",
        "qemuweb-runtime/Cargo.toml",
        "qemuweb-config/src",
        "qemuweb-storage/src",
        "qemuweb-sidecar/src",
        "scripts/build-web",
    ] {
        println!("cargo:rerun-if-changed={}", repo.join(dir).display());
    }
    let bundle = out.join("bundle");
    let mut cmd = Command::new(&script);
    cmd.arg("qemuweb-runtime")
        .arg(&bundle)
        .current_dir(&repo)
        .env("CARGO_TARGET_DIR", out.join("wasm-target"));
    // The outer build's settings are for the host, not for wasm32.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("embed-bundle: cannot run {}: {e}", script.display()));
    if !status.success() {
        panic!("embed-bundle: scripts/build-web qemuweb-runtime failed ({status}); it needs the wasm32-unknown-unknown target and wasm-bindgen-cli (scripts/setup)");
    }
    bundle
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).expect("read the bundle").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let rel = path
                .strip_prefix(root)
                .expect("inside")
                .to_string_lossy()
                .into_owned();
            files.push((rel, path));
        }
    }
}
