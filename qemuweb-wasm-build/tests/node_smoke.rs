//! The built QEMU module under Node: `-version`, and the x86 test guest booting to its
//! serial banner and answering `echo`. Uses `$QEMUWEB_QEMU_DIR`, else the default plan's
//! output in the cache; when neither exists it prints a loud SKIPPED line and returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use qemuweb_wasm_build::{built_output, BuildOptions, BuildPlan};

fn qemu_dir(test: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("QEMUWEB_QEMU_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    match built_output(&BuildPlan::default(), &BuildOptions::new()) {
        Ok(dir) => Some(dir),
        Err(e) => {
            // Written to stderr directly, not through eprintln!, so that the test harness
            // does not capture it: a skipped test must be visible.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: no QEMU wasm build ({e}); run scripts/build-qemu or set \
                 QEMUWEB_QEMU_DIR ***\n"
            );
            None
        }
    }
}

/// Runs the smoke runner and returns (success, stdout, stderr).
fn run_node(dir: &Path, options: &[&str], qemu_args: &[&str]) -> (bool, String, String) {
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("smoke/run-node.mjs");
    let out = Command::new("node")
        .arg(runner)
        .arg(dir)
        .args(options)
        .arg("--")
        .args(qemu_args)
        .output()
        .expect("node must be installed to test the QEMU module");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_module_reports_its_qemu_version() {
    let Some(dir) = qemu_dir("the_module_reports_its_qemu_version") else {
        return;
    };
    let (ok, stdout, stderr) = run_node(
        &dir,
        &[
            "--timeout",
            "120",
            "--expect",
            "QEMU emulator version 10.2.2",
        ],
        &["-version"],
    );
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("QEMU emulator version 10.2.2"), "{stdout}");
}

#[test]
fn the_x86_test_guest_boots_to_its_banner_and_echoes() {
    let Some(dir) = qemu_dir("the_x86_test_guest_boots_to_its_banner_and_echoes") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("boot.img");
    std::fs::write(&disk, qemuweb_guests::x86_bios_disk()).unwrap();
    let file = format!("boot.img={}", disk.display());
    let (ok, stdout, stderr) = run_node(
        &dir,
        &[
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
            "-net",
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
