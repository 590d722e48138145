//! The built QEMU modules under Node: `-version` of each, the x86 test guest booting to its
//! serial banner and answering `echo` (on `qemu-system-x86_64` of a wasm64 build,
//! `qemu-system-i386` of a wasm32 one), the aarch64 test kernel on `qemu-system-aarch64`;
//! and (no Node) that the wasm64 modules keep QEMU's function names.
//! Uses `$QEMUWEB_QEMU_DIR`, else the default plan's output in the cache.
//!
//! The tests are `#[ignore]`d: they need a QEMU build, which `scripts/test` makes and then
//! runs them by name (`cargo test -p qemuweb-wasm-build --test node_smoke -- --ignored`),
//! or lists them as SKIPPED in its summary when the build failed. Run without a build they
//! fail, never pass. A build without a module for a test's guest (e.g. the wasm32 build has
//! no aarch64 module) fails that test too: `scripts/test` runs only the tests that apply to
//! the build it made (it reads the build's `modules`) and says which do not.
//!
//! The wasm64 modules run under the build root's Node 24 (the Node of the Emscripten that
//! built them), through `qemuweb-wasm-build node`; wasm32 modules run on the host's. Every run is bounded from outside by
//! the shared watchdog (`qemuweb_testkit::watchdog`), which kills the whole process group
//! and fails with the tail of the output: Node's own `--timeout` lives on its main thread,
//! which is the one that can spin.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use qemuweb_testkit::watchdog::watch;
use qemuweb_wasm_build::{built_output, BuildOptions, BuildPlan};

/// The most one run may take, from outside.
const LIMIT: Duration = Duration::from_secs(240);

fn qemu_dir(test: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("QEMUWEB_QEMU_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    match built_output(&BuildPlan::default(), &BuildOptions::new()) {
        Ok(dir) => Some(dir),
        Err(e) => panic!(
            "{test}: no QEMU wasm build ({e}); run scripts/build-qemu or set QEMUWEB_QEMU_DIR \
             (scripts/test skips this test, and says so, when the build failed)"
        ),
    }
}

/// The first of `wanted` the build in `dir` has a module for; a build without one fails
/// the test (it does not apply to that build, and `scripts/test` does not run it there).
fn arch_of(dir: &Path, test: &str, wanted: &[&str]) -> String {
    let archs = common::build_of(dir).archs;
    match wanted.iter().find(|w| archs.iter().any(|a| a == *w)) {
        Some(a) => a.to_string(),
        None => panic!(
            "{test}: the QEMU build in {} has no {} module (it has {}); this test does not \
             apply to it",
            dir.display(),
            wanted.join(" or "),
            archs.join(", ")
        ),
    }
}

/// Runs the smoke runner on `dir` under the watchdog; returns (success, stdout, stderr).
fn run_node(
    dir: &Path,
    binds: &[&Path],
    options: &[&str],
    qemu_args: &[&str],
) -> (bool, String, String) {
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("smoke");
    let mut cmd = common::node_for(dir, &[&[smoke.as_path()], binds].concat());
    cmd.arg(smoke.join("run-node.mjs"))
        .arg(dir)
        .args(options)
        .arg("--")
        .args(qemu_args);
    let done = watch("node run-node.mjs", &mut cmd, LIMIT).finish();
    (
        done.status.success(),
        done.stdout_text(),
        done.stderr_text(),
    )
}

#[test]
#[ignore = "needs a QEMU build (scripts/build-qemu); scripts/test runs it"]
fn the_module_reports_its_qemu_version() {
    let Some(dir) = qemu_dir("the_module_reports_its_qemu_version") else {
        return;
    };
    for arch in common::build_of(&dir).archs {
        let arch = arch.as_str();
        let (ok, stdout, stderr) = run_node(
            &dir,
            &[],
            &[
                "--arch",
                arch,
                "--timeout",
                "120",
                "--expect",
                "QEMU emulator version 10.2.2",
            ],
            &["-version"],
        );
        assert!(ok, "{arch}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("QEMU emulator version 10.2.2"), "{stdout}");
    }
}

#[test]
#[ignore = "needs a QEMU build (scripts/build-qemu); scripts/test runs it"]
fn the_x86_test_guest_boots_to_its_banner_and_echoes() {
    let test = "the_x86_test_guest_boots_to_its_banner_and_echoes";
    let Some(dir) = qemu_dir(test) else {
        return;
    };
    let arch = arch_of(&dir, test, &["x86_64", "i386"]);
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("boot.img");
    std::fs::write(&disk, qemuweb_guests::x86_bios_disk()).unwrap();
    let file = format!("boot.img={}", disk.display());
    let (ok, stdout, stderr) = run_node(
        &dir,
        &[tmp.path()],
        &[
            "--arch",
            &arch,
            "--timeout",
            "180",
            "--file",
            &file,
            "--expect",
            qemuweb_guests::X86_BANNER,
            "--expect",
            qemuweb_guests::PROMPT,
            "--send",
            "echo hello-from-wasm\\r",
            "--expect",
            "hello-from-wasm\r\n",
        ],
        &[
            "-L",
            "/pack",
            "-M",
            "pc",
            "-m",
            "32",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-drive",
            "file=/pack/boot.img,format=raw,if=ide",
            "-nic",
            "none",
        ],
    );
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(qemuweb_guests::X86_BANNER), "{stdout}");
    eprintln!(
        "{}",
        stderr
            .lines()
            .filter(|l| l.starts_with("SMOKE"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
#[ignore = "needs a QEMU build (scripts/build-qemu); scripts/test runs it"]
fn the_aarch64_test_kernel_boots_and_reads_its_virtio_disk() {
    let test = "the_aarch64_test_kernel_boots_and_reads_its_virtio_disk";
    let Some(dir) = qemu_dir(test) else {
        return;
    };
    arch_of(&dir, test, &["aarch64"]);
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("kernel.img");
    std::fs::write(&kernel, qemuweb_guests::aarch64_virt_kernel()).unwrap();
    let disk = tmp.path().join("disk.img");
    let image = qemuweb_guests::x86_bios_disk();
    std::fs::write(&disk, &image).unwrap();
    let (k, d) = (
        format!("kernel.img={}", kernel.display()),
        format!("disk.img={}", disk.display()),
    );
    let read = qemuweb_guests::read_reply(100, &image[100 * 512..101 * 512]);
    let (ok, stdout, stderr) = run_node(
        &dir,
        &[tmp.path()],
        &[
            "--arch",
            "aarch64",
            "--timeout",
            "180",
            "--file",
            &k,
            "--file",
            &d,
            "--expect",
            qemuweb_guests::AARCH64_BANNER,
            "--expect",
            qemuweb_guests::PROMPT,
            "--send",
            "read 100\\r",
            "--expect",
            &format!("{read}\r\n"),
        ],
        &[
            "-M",
            "virt",
            "-cpu",
            "cortex-a57",
            "-m",
            "64",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-kernel",
            "/pack/kernel.img",
            "-drive",
            "id=d0,file=/pack/disk.img,format=raw,if=none",
            "-device",
            "virtio-blk-pci,drive=d0",
            "-nic",
            "none",
        ],
    );
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
}

#[test]
#[ignore = "needs a QEMU build (scripts/build-qemu); scripts/test runs it"]
fn the_wasm64_modules_name_qemus_functions() {
    // The wasm64 link keeps the name section (--profiling-funcs): a profile of the page
    // or a crash's stack trace names QEMU's functions.
    let test = "the_wasm64_modules_name_qemus_functions";
    let Some(dir) = qemu_dir(test) else {
        return;
    };
    let build = common::build_of(&dir);
    if !build.wasm64 {
        panic!(
            "{test}: {} is not a wasm64 build; this test does not apply to it",
            dir.display()
        );
    }
    for arch in build.archs {
        let wasm = std::fs::read(dir.join(format!("qemu-system-{arch}.wasm"))).unwrap();
        let names = qemuweb_wasm_build::output::wasm_custom_section(&wasm, "name")
            .unwrap_or_else(|e| panic!("qemu-system-{arch}.wasm: {e}"))
            .unwrap_or_else(|| panic!("qemu-system-{arch}.wasm has no name section"));
        for f in ["cpu_exec_loop", "tcg_gen_code", "helper_lookup_tb_ptr"] {
            assert!(
                names.windows(f.len()).any(|w| w == f.as_bytes()),
                "qemu-system-{arch}.wasm names no {f}"
            );
        }
    }
}
