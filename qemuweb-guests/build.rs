//! Assembles the test guests into `OUT_DIR`.
//!
//! - `guests/x86-bios.asm` and `guests/x86-insn.asm` with `nasm -f bin` into
//!   `x86-bios.bin` and `x86-insn.bin` (boot sector + code).
//! - `guests/aarch64-virt.s` and `guests/aarch64-insn.s` with `aarch64-linux-gnu-as`, `-ld`
//!   and `-objcopy -O binary` into `aarch64-virt.img` and `aarch64-insn.img` (arm64 Linux
//!   `Image`s).
//!
//! The tools can be overridden with the `NASM`, `AARCH64_AS`, `AARCH64_LD` and
//! `AARCH64_OBJCOPY` environment variables. A missing tool is a build error that says
//! which Debian package provides it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tool(var: &str, default: &str) -> String {
    println!("cargo:rerun-if-env-changed={var}");
    env::var(var).unwrap_or_else(|_| default.to_string())
}

fn run(program: &str, package: &str, args: &[&Path]) {
    let output = match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "qemuweb-guests: `{program}` was not found; it assembles the test guests. \
             Install it with `apt-get install {package}` (or point the build at it with \
             the environment variable documented in build.rs)."
        ),
        Err(err) => panic!("qemuweb-guests: could not run `{program}`: {err}"),
    };
    if !output.status.success() {
        panic!(
            "qemuweb-guests: `{program} {}` failed ({}):\n{}{}",
            args.iter()
                .map(|a| a.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    let nasm = tool("NASM", "nasm");
    for name in ["x86-bios", "x86-insn"] {
        let src = manifest.join(format!("guests/{name}.asm"));
        println!("cargo:rerun-if-changed={}", src.display());
        let bin = out.join(format!("{name}.bin"));
        run(
            &nasm,
            "nasm",
            &[
                Path::new("-w+all"),
                Path::new("-w+error"),
                Path::new("-f"),
                Path::new("bin"),
                Path::new("-o"),
                &bin,
                &src,
            ],
        );
    }
    for name in ["aarch64-virt", "aarch64-insn"] {
        aarch64_image(&manifest, &out, name);
    }
}

/// Assembles `guests/NAME.s` into the arm64 `Image` `NAME.img`.
fn aarch64_image(manifest: &Path, out: &Path, name: &str) {
    let arm_src = manifest.join(format!("guests/{name}.s"));
    println!("cargo:rerun-if-changed={}", arm_src.display());
    let as_ = tool("AARCH64_AS", "aarch64-linux-gnu-as");
    let ld = tool("AARCH64_LD", "aarch64-linux-gnu-ld");
    let objcopy = tool("AARCH64_OBJCOPY", "aarch64-linux-gnu-objcopy");
    let package = "binutils-aarch64-linux-gnu";
    let obj = out.join(format!("{name}.o"));
    let elf = out.join(format!("{name}.elf"));
    let img = out.join(format!("{name}.img"));
    run(&as_, package, &[Path::new("-o"), &obj, &arm_src]);
    run(
        &ld,
        package,
        &[
            Path::new("-nostdlib"),
            Path::new("--build-id=none"),
            Path::new("-Ttext=0x40080000"),
            Path::new("-e"),
            Path::new("_start"),
            Path::new("-o"),
            &elf,
            &obj,
        ],
    );
    run(
        &objcopy,
        package,
        &[Path::new("-O"), Path::new("binary"), &elf, &img],
    );
}
