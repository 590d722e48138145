//! The files `write_guest_images` and the `qemuweb-guests` binary write: the qcow2 form
//! must hold exactly the raw disk (checked with `qemu-img`, Debian's qemu-utils).

use std::path::PathBuf;
use std::process::Command;

fn temp(name: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(&format!("qemuweb-guests-{name}-"))
        .tempdir()
        .unwrap()
        .keep();
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn qemu_img(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn writes_raw_qcow2_and_kernel() {
    let dir = temp("lib");
    let paths = qemuweb_guests::write_guest_images(&dir, None).unwrap();
    assert_eq!(
        std::fs::read(&paths.x86_raw).unwrap(),
        qemuweb_guests::x86_bios_disk()
    );
    assert_eq!(
        std::fs::read(&paths.aarch64_kernel).unwrap(),
        qemuweb_guests::aarch64_virt_kernel()
    );
    let info = qemu_img(&[
        "info".as_ref(),
        "--output=json".as_ref(),
        paths.x86_qcow2.as_os_str(),
    ]);
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 8192 * 512)),
        "{info}"
    );
    let back = dir.join("back.raw");
    qemu_img(&[
        "convert".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-O".as_ref(),
        "raw".as_ref(),
        paths.x86_qcow2.as_os_str(),
        back.as_os_str(),
    ]);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        qemuweb_guests::x86_bios_disk()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_qemu_img_is_a_clear_error() {
    let dir = temp("missing");
    let err = qemuweb_guests::write_guest_images(&dir, Some("/nonexistent/qemu-img".as_ref()))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(
        err.to_string()
            .starts_with("could not run /nonexistent/qemu-img (Debian package qemu-utils): "),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn binary_writes_the_images() {
    let dir = temp("bin");
    let out = Command::new(env!("CARGO_BIN_EXE_qemuweb-guests"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let expected: Vec<String> = [
        "x86-bios.raw",
        "x86-bios.qcow2",
        "aarch64-virt.img",
        "x86-insn.img",
        "aarch64-insn.img",
    ]
    .iter()
    .map(|n| dir.join(n).display().to_string())
    .collect();
    assert_eq!(listed, expected);
    assert_eq!(
        std::fs::read(dir.join("x86-insn.img")).unwrap(),
        qemuweb_guests::x86_insn_disk()
    );
    let usage = Command::new(env!("CARGO_BIN_EXE_qemuweb-guests"))
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let usage = String::from_utf8_lossy(&usage.stderr);
    assert!(usage.contains("Usage: qemuweb-guests <DIR>"), "{usage}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The embedded x86 guest is what `nasm` makes of the source today: the build is
/// reproducible.
#[test]
fn x86_guest_is_reproducible() {
    let dir = temp("nasm");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("x86.bin");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/x86-bios.asm");
    let status = Command::new("nasm")
        .args(["-f", "bin", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .expect("nasm");
    assert!(status.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        qemuweb_guests::x86_boot_code()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
