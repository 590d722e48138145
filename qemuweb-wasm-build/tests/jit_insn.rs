//! The instruction test guests of `qemuweb-guests` on the JIT build of QEMU for WebAssembly
//! (plan `tcg: jit`, patches 0010-0012), compared line by line with native QEMU (TCG):
//! with the JIT's defaults, with every block compiled on its first run
//! (`wasm-jit-hot=1`), and with the JIT off (TCI) on the same module.
//!
//! Needs `QEMUWEB_QEMU_JIT_DIR` (a directory with `qemu-system-x86_64.js`/`.wasm`, and
//! `qemu-system-aarch64.js`/`.wasm` for the aarch64 guest, plus the x86 firmware `*.bin`)
//! and a Node that runs wasm64 output (22 or newer; `QEMUWEB_NODE`, default `node`).
//! The tests are `#[ignore]`d because they need that build: `scripts/test-wasm64` runs them
//! (`--ignored`) when the build it tests has the JIT. Run without the directory they fail,
//! never pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MODES: &[(&str, &str)] = &[
    ("jit", "tcg"),
    ("jit-hot-1", "tcg,wasm-jit-hot=1,wasm-jit-batch=8"),
    ("interpreter", "tcg,wasm-jit=off"),
];

fn jit_dir(test: &str) -> PathBuf {
    match std::env::var_os("QEMUWEB_QEMU_JIT_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "{test}: QEMUWEB_QEMU_JIT_DIR is not set (a QEMU wasm64 build with tcg: jit; \
             scripts/test-wasm64 sets it for a JIT build)"
        ),
    }
}

fn native(qemu: &str, args: Vec<String>, banner: &str) -> Vec<String> {
    let mut cmd = Command::new(qemu);
    cmd.args(args);
    let log = qemuweb_guests::run_insn_guest(cmd, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{qemu}: {e}"));
    qemuweb_guests::insn_results(&log, banner).unwrap_or_else(|e| panic!("{qemu}: {e}"))
}

/// The guest on the wasm build: `args` are QEMU's arguments after `-accel ACCEL`, with
/// the guest file at /pack/`name`.
fn wasm(js: &Path, file: (&str, &Path), accel: &str, args: &[String], banner: &str) -> Vec<String> {
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/insn-runner.mjs");
    let node = std::env::var("QEMUWEB_NODE").unwrap_or_else(|_| "node".into());
    let mut cmd = Command::new(node);
    cmd.arg(runner)
        .arg(js)
        .arg("900")
        .arg(format!("{}={}", file.0, file.1.display()))
        .arg("--")
        .args(["-L", "/pack", "-accel", accel])
        .args(args);
    let log = qemuweb_guests::run_insn_guest(cmd, Duration::from_secs(960))
        .unwrap_or_else(|e| panic!("{} {accel}: {e}", js.display()));
    qemuweb_guests::insn_results(&log, banner)
        .unwrap_or_else(|e| panic!("{} {accel}: {e}\n{log}", js.display()))
}

fn compare(reference: &[String], mode: &str, got: &[String]) {
    let bad = qemuweb_guests::insn_mismatches(reference, got);
    assert!(
        bad.is_empty(),
        "{mode}: {} lines differ from native QEMU (native, wasm):\n{bad:#?}",
        bad.len()
    );
}

#[test]
#[ignore = "needs a QEMU wasm64 JIT build (QEMUWEB_QEMU_JIT_DIR); scripts/test-wasm64 runs it"]
fn x86_64_instructions_on_the_jit_match_native_qemu() {
    let dir = jit_dir("x86_64_instructions_on_the_jit_match_native_qemu");
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("x86-insn.img");
    std::fs::write(&disk, qemuweb_guests::x86_insn_disk()).unwrap();
    let reference = native(
        "qemu-system-x86_64",
        qemuweb_guests::x86_insn_qemu_args(&disk),
        qemuweb_guests::X86_INSN_BANNER,
    );
    let args = qemuweb_guests::x86_insn_qemu_args(Path::new("/pack/x86-insn.img"));
    for (mode, accel) in MODES {
        let got = wasm(
            &dir.join("qemu-system-x86_64.js"),
            ("x86-insn.img", &disk),
            accel,
            &args,
            qemuweb_guests::X86_INSN_BANNER,
        );
        compare(&reference, mode, &got);
    }
}

#[test]
#[ignore = "needs a QEMU wasm64 JIT build (QEMUWEB_QEMU_JIT_DIR); scripts/test-wasm64 runs it"]
fn aarch64_instructions_on_the_jit_match_native_qemu() {
    let dir = jit_dir("aarch64_instructions_on_the_jit_match_native_qemu");
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("aarch64-insn.img");
    std::fs::write(&kernel, qemuweb_guests::aarch64_insn_kernel()).unwrap();
    let reference = native(
        "qemu-system-aarch64",
        qemuweb_guests::aarch64_insn_qemu_args(&kernel),
        qemuweb_guests::AARCH64_INSN_BANNER,
    );
    let args = qemuweb_guests::aarch64_insn_qemu_args(Path::new("/pack/aarch64-insn.img"));
    for (mode, accel) in MODES {
        let got = wasm(
            &dir.join("qemu-system-aarch64.js"),
            ("aarch64-insn.img", &kernel),
            accel,
            &args,
            qemuweb_guests::AARCH64_INSN_BANNER,
        );
        compare(&reference, mode, &got);
    }
}
