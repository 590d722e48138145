//! The instruction test guests of `qemuweb-guests` on the JIT build of QEMU for WebAssembly
//! (plan `tcg: jit`, patches 0010-0014), compared line by line with native QEMU (TCG):
//! with the JIT's defaults, with every block compiled on its first run
//! (`wasm-jit-hot=1`), the same with the barriers a TSO host keeps for free left out
//! (`wasm-jit-tso=1`, what the runtime runs on x86 hosts), and with the JIT off (TCI) on
//! the same module, with every barrier and with the TSO rule (the interpreter keeps the
//! compiled code's rule).
//!
//! Needs a JIT build: `QEMUWEB_QEMU_DIR` (or `QEMUWEB_QEMU_JIT_DIR`), a directory with
//! `qemu-build.json` saying `"tcg": "jit"`, `qemu-system-x86_64.js`/`.wasm`,
//! `qemu-system-aarch64.js`/`.wasm` and the x86 firmware `*.bin`. Its modules run under the
//! build root's Node 24 (`qemuweb-wasm-build node`, the Node of the Emscripten that built it).
//! The tests are `#[ignore]`d because they need that build: `scripts/test` and
//! `scripts/test-wasm64` run them (`--ignored`). Run without a JIT build they fail, never
//! pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MODES: &[(&str, &str)] = &[
    ("jit", "tcg"),
    ("jit-hot-1", "tcg,wasm-jit-hot=1,wasm-jit-batch=8"),
    // What the runtime runs on x86 hosts: the barriers TSO keeps for free left out.
    (
        "jit-hot-1-tso",
        "tcg,wasm-jit-hot=1,wasm-jit-batch=8,wasm-jit-tso=1",
    ),
    ("interpreter", "tcg,wasm-jit=off"),
    ("interpreter-tso", "tcg,wasm-jit=off,wasm-jit-tso=1"),
];

fn jit_dir(test: &str) -> PathBuf {
    let dir = ["QEMUWEB_QEMU_JIT_DIR", "QEMUWEB_QEMU_DIR"]
        .iter()
        .find_map(|v| std::env::var_os(v).filter(|d| !d.is_empty()))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{test}: neither QEMUWEB_QEMU_JIT_DIR nor QEMUWEB_QEMU_DIR is set (a QEMU \
                 wasm64 build with tcg: jit; scripts/test sets it)"
            )
        });
    let tcg = common::build_of(&dir).tcg;
    assert_eq!(
        tcg,
        "jit",
        "{test}: the build in {} has no JIT",
        dir.display()
    );
    dir
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
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let dir = js.parent().unwrap();
    let mut cmd = common::node_for(dir, &[&tests, file.1.parent().unwrap()]);
    // boot-runner.mjs stops at the guest's last line: "ALL DONE", or an "UNEXPECTED" report.
    cmd.arg(tests.join("boot-runner.mjs"))
        .arg(js)
        .arg("900")
        .arg(r"^\s*ALL DONE\s*$|^UNEXPECTED")
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
