//! Assembles the test guests into `OUT_DIR`.
//!
//! - `guests/x86-bios.asm` with `nasm -f bin` into `x86-bios.bin` (boot sector + code).
//! - `guests/aarch64-virt.s` with `aarch64-linux-gnu-as`, `-ld` and `-objcopy -O binary`
//!   into `aarch64-virt.img` (an arm64 Linux `Image`).
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

    let x86_src = manifest.join("guests/x86-bios.asm");
    let arm_src = manifest.join("guests/aarch64-virt.s");
    println!("cargo:rerun-if-changed={}", x86_src.display());
    println!("cargo:rerun-if-changed={}", arm_src.display());

    let nasm = tool("NASM", "nasm");
    let x86_bin = out.join("x86-bios.bin");
    run(
        &nasm,
        "nasm",
        &[
            Path::new("-w+all"),
            Path::new("-w+error"),
            Path::new("-f"),
            Path::new("bin"),
            Path::new("-o"),
            &x86_bin,
            &x86_src,
        ],
    );

    let as_ = tool("AARCH64_AS", "aarch64-linux-gnu-as");
    let ld = tool("AARCH64_LD", "aarch64-linux-gnu-ld");
    let objcopy = tool("AARCH64_OBJCOPY", "aarch64-linux-gnu-objcopy");
    let package = "binutils-aarch64-linux-gnu";
    let obj = out.join("aarch64-virt.o");
    let elf = out.join("aarch64-virt.elf");
    let img = out.join("aarch64-virt.img");
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
