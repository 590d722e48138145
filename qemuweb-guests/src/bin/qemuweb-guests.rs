//! Writes the embedded test guests to a directory: `qemuweb-guests DIR`.
//!
//! Produces `x86-bios.raw`, `x86-bios.qcow2` (via `qemu-img convert`),
//! `aarch64-virt.img`, `x86-insn.img` and `aarch64-insn.img`, and prints their paths.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: qemuweb-guests DIR");
        return ExitCode::from(2);
    };
    match qemuweb_guests::write_guest_images(&PathBuf::from(dir), None) {
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
