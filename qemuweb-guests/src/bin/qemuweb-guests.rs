//! Writes the embedded test guests to a directory: `qemuweb-guests DIR`.
//!
//! Produces `x86-bios.raw`, `x86-bios.qcow2` (via `qemu-img convert`),
//! `aarch64-virt.img`, `x86-insn.img` and `aarch64-insn.img`, and prints their paths.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Writes QemuWeb's test guests (x86 BIOS disk as raw and qcow2, aarch64 kernel, the
/// instruction test guests) to DIR.
#[derive(Debug, Parser)]
#[command(name = "qemuweb-guests", version)]
struct Args {
    /// The directory to write into (created if missing).
    dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match qemuweb_guests::write_guest_images(&args.dir, None) {
        Ok(paths) => {
            for path in [
                &paths.x86_raw,
                &paths.x86_qcow2,
                &paths.aarch64_kernel,
                &paths.x86_insn,
                &paths.aarch64_insn,
            ] {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("qemuweb-guests: {err}");
            ExitCode::FAILURE
        }
    }
}
