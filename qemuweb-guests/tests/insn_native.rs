//! The instruction test guests on native QEMU (Debian's qemu-system-x86 and
//! qemu-system-arm, TCG): they run to the end, print every test once, and the values the
//! architecture fixes come out right (exception vectors and error codes, syndromes, the
//! CRC-32 of the hot loop computed again here). These native runs are the reference the
//! WebAssembly builds are compared with.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn run(qemu: &str, args: Vec<String>, banner: &str) -> Vec<String> {
    let mut cmd = Command::new(qemu);
    cmd.args(args);
    let log = qemuweb_guests::run_insn_guest(cmd, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{qemu}: {e}"));
    qemuweb_guests::insn_results(&log, banner).unwrap_or_else(|e| panic!("{qemu}: {e}\n{log}"))
}

fn value(lines: &[String], name: &str) -> Vec<String> {
    let line = lines
        .iter()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in {lines:#?}"));
    line.split(' ').skip(1).map(str::to_string).collect()
}

fn hex(v: u64) -> String {
    format!("{v:016x}")
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = tempfile::Builder::new()
        .prefix(&format!("qemuweb-insn-{name}-"))
        .tempdir()
        .unwrap()
        .keep();
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn x86_insn_guest_on_native_qemu() {
    let d = dir("x86");
    let disk = d.join("x86-insn.img");
    std::fs::write(&disk, qemuweb_guests::x86_insn_disk()).unwrap();
    let lines = run(
        "qemu-system-x86_64",
        qemuweb_guests::x86_insn_qemu_args(Path::new(&disk)),
        qemuweb_guests::X86_INSN_BANNER,
    );
    assert_eq!(lines.len(), 122, "{lines:#?}");
    let names: std::collections::HashSet<_> =
        lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(names.len(), lines.len(), "every test prints once");
    // vector, error code, CR2
    assert_eq!(value(&lines, "exc_de"), [hex(0), hex(0), hex(0)]);
    assert_eq!(value(&lines, "exc_ud"), [hex(6), hex(0), hex(0)]);
    assert_eq!(value(&lines, "exc_bp"), [hex(3), hex(0), hex(0)]);
    assert_eq!(value(&lines, "exc_int80"), [hex(0x80), hex(0), hex(0)]);
    assert_eq!(value(&lines, "exc_gp"), [hex(13), hex(0), hex(0)]);
    assert_eq!(value(&lines, "pf_read"), [hex(14), hex(0), hex(0x40123)]);
    assert_eq!(value(&lines, "pf_write"), [hex(14), hex(2), hex(0x40ff8)]);
    assert_eq!(
        value(&lines, "pf_write_ro"),
        [hex(14), hex(3), hex(0x41010)]
    );
    assert_eq!(value(&lines, "pf_fetch"), [hex(14), hex(0), hex(0x40040)]);
    assert_eq!(value(&lines, "pf_xpage"), [hex(14), hex(0), hex(0x40000)]);
    assert_eq!(value(&lines, "exc_count"), [hex(10)]);
    assert_eq!(value(&lines, "irq0"), [hex(3)]);
    assert_eq!(
        value(&lines, "crc32"),
        [hex(qemuweb_guests::insn_crc32().into())]
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn aarch64_insn_guest_on_native_qemu() {
    let d = dir("aarch64");
    let kernel = d.join("aarch64-insn.img");
    std::fs::write(&kernel, qemuweb_guests::aarch64_insn_kernel()).unwrap();
    let lines = run(
        "qemu-system-aarch64",
        qemuweb_guests::aarch64_insn_qemu_args(Path::new(&kernel)),
        qemuweb_guests::AARCH64_INSN_BANNER,
    );
    assert_eq!(lines.len(), 74, "{lines:#?}");
    // ESR (EC << 26 | IL | ISS) and FAR
    assert_eq!(value(&lines, "svc"), [hex(0x5600_0042), hex(0)]);
    assert_eq!(value(&lines, "brk"), [hex(0xf200_0007), hex(0)]);
    assert_eq!(value(&lines, "udf"), [hex(0x0200_0000), hex(0)]);
    assert_eq!(
        value(&lines, "dabort_read"),
        [hex(0x9600_0007), hex(0x4012_0123)]
    );
    assert_eq!(
        value(&lines, "dabort_write"),
        [hex(0x9600_0047), hex(0x4012_0ff8)]
    );
    assert_eq!(
        value(&lines, "perm_write"),
        [hex(0x9600_004f), hex(0x4012_1010)]
    );
    assert_eq!(
        value(&lines, "align_excl"),
        [hex(0x9600_0021), hex(0x4011_0803)]
    );
    assert_eq!(
        value(&lines, "iabort"),
        [hex(0x8600_0007), hex(0x4012_0040)]
    );
    assert_eq!(value(&lines, "exc_count"), [hex(10)]);
    assert_eq!(value(&lines, "irq_timer"), [hex(3)]);
    assert_eq!(
        value(&lines, "crc32"),
        [hex(qemuweb_guests::insn_crc32().into())]
    );
    let _ = std::fs::remove_dir_all(&d);
}
