//! A guest in native QEMU with its serial console on stdio, under the shared watchdog
//! (`qemuweb_testkit::watchdog`: its own process group, killed as a whole on a hang or when
//! dropped), for the tests that use real `qemu-system-*` as the oracle: booting the x86
//! guest in `qemu-system-i386` (VGA, an HMP monitor on a Unix socket), talking to its
//! serial port, monitor commands and screendumps.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use qemuweb_testkit::watchdog::{watch, Stream, Watched};

/// How long one guest may run in a test at most.
const LIMIT: Duration = Duration::from_secs(120);
/// How long one reply may take.
const REPLY: Duration = Duration::from_secs(20);

/// A running QEMU whose serial port is this process's pipe.
pub struct Qemu {
    qemu: Watched,
    /// Bytes of output already matched: every wait looks after them.
    seen: usize,
    monitor_path: PathBuf,
}

impl Qemu {
    /// Starts `cmd` (a `qemu-system-*` with `-serial stdio`); `package` names the Debian
    /// package it comes from, for the failure when it is missing.
    pub fn spawn(mut cmd: Command, package: &str) -> Self {
        let name = format!("{} ({package})", cmd.get_program().to_string_lossy());
        Qemu {
            qemu: watch(&name, &mut cmd, LIMIT),
            seen: 0,
            monitor_path: PathBuf::new(),
        }
    }

    /// Waits until the serial output after the last match contains `text`.
    pub fn until(&mut self, text: &str) {
        let from = self.seen;
        let all = self
            .qemu
            .wait_until(Stream::Stdout, REPLY, &format!("{text:?}"), |s| {
                s.get(from..).is_some_and(|rest| rest.contains(text))
            });
        let at = all[from..].find(text).unwrap_or(0);
        self.seen = from + at + text.len();
    }

    /// Types `line` and waits for `reply`, with no prompt after it (a mode of its own).
    pub fn command_no_prompt(&mut self, line: &str, reply: &str) {
        self.qemu.send(&format!("{line}\r"));
        self.until(reply);
    }

    /// Types `line` and waits for `reply`, then the prompt.
    pub fn command(&mut self, line: &str, reply: &str) {
        self.qemu.send(&format!("{line}\r"));
        self.until(&format!("{reply}\r\n"));
        self.until(qemuweb_guests::PROMPT);
    }

    /// Runs an HMP monitor command and waits for its prompt.
    pub fn monitor(&self, line: &str) {
        let mut m = UnixStream::connect(&self.monitor_path).unwrap();
        m.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        writeln!(m, "{line}").unwrap();
        // The greeting's prompt, then the command's: wait for the second.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        while seen.matches("(qemu)").count() < 2 {
            assert!(
                Instant::now() < deadline,
                "monitor: no prompt after {line:?}: {seen:?}"
            );
            if let Ok(n) = m.read(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    }
}

/// A binary PPM (P6) screendump: (width, height, RGB bytes).
pub fn read_ppm(path: &Path) -> (usize, usize, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8_lossy(&bytes[..20.min(bytes.len())]).to_string();
    let mut fields = text.split_ascii_whitespace();
    assert_eq!(fields.next(), Some("P6"));
    let w: usize = fields.next().unwrap().parse().unwrap();
    let h: usize = fields.next().unwrap().parse().unwrap();
    let data = bytes[bytes.len() - w * h * 3..].to_vec();
    (w, h, data)
}

pub fn screendump(monitor: &Path, out: &Path) -> (usize, usize, Vec<u8>) {
    let _ = std::fs::remove_file(out);
    let mut m = UnixStream::connect(monitor).unwrap();
    m.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    writeln!(m, "screendump {}", out.display()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    loop {
        let _ = m.read(&mut buf);
        if out.exists() && std::fs::metadata(out).unwrap().len() > 0 {
            // QEMU writes the file at once: wait until its size settles.
            std::thread::sleep(Duration::from_millis(200));
            return read_ppm(out);
        }
        assert!(
            Instant::now() < deadline,
            "no screendump at {}",
            out.display()
        );
    }
}

/// `redraw N` on the guest at `qemu` (in graphics mode): the reply, then a screendump
/// (`dir/redraw-N.ppm`, through the monitor at `monitor`) all in the colour of the last fill.
pub fn assert_redraw(qemu: &mut Qemu, monitor: &Path, dir: &Path, n: u32) {
    qemu.command(&format!("redraw {n}"), &format!("REDRAW {n}"));
    let (w, h, rgb) = screendump(monitor, &dir.join(format!("redraw-{n}.ppm")));
    let want = qemuweb_guests::x86_gfx_colour(qemuweb_guests::x86_redraw_index(n));
    let bad = rgb.chunks(3).filter(|px| *px != want).count();
    assert_eq!(bad, 0, "redraw {n}: the whole {w}x{h} screen in {want:?}");
}

/// A new private directory `qemuweb-guests-NAME-*` under the temporary directory, kept
/// (the test removes it).
fn private_dir(name: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("qemuweb-guests-{name}-"))
        .tempdir()
        .unwrap()
        .keep()
}

/// The x86 guest booted on native QEMU, at its first prompt; its files are in `dir` (a
/// private directory), the monitor at `dir/mon.sock`.
pub fn boot(name: &str) -> (Qemu, PathBuf) {
    boot_on(name, "qemu-system-i386", &["-vga", "std"])
}

/// [`boot`] on `program` (a `qemu-system-*` of Debian's qemu-system-x86) with the devices
/// `devices` (QEMU arguments) instead of the default machine's VGA.
pub fn boot_on(name: &str, program: &str, devices: &[&str]) -> (Qemu, PathBuf) {
    let dir = private_dir(name);
    let disk = dir.join("x86.raw");
    std::fs::write(&disk, qemuweb_guests::x86_bios_disk()).unwrap();
    let monitor = dir.join("mon.sock");
    let mut cmd = Command::new(program);
    cmd.args(["-display", "none", "-nic", "none", "-serial", "stdio"])
        .args(devices)
        .arg("-drive")
        .arg(format!("file={},format=raw", disk.display()))
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", monitor.display()));
    let mut qemu = Qemu::spawn(cmd, "qemu-system-x86");
    qemu.until(qemuweb_guests::X86_BANNER);
    qemu.until(qemuweb_guests::PROMPT);
    qemu.monitor_path = monitor;
    (qemu, dir)
}

/// An xHCI controller with a USB tablet and keyboard (QEMU arguments), as the graphics
/// profiles attach them.
pub const XHCI_TABLET_KEYBOARD: [&str; 6] = [
    "-device",
    "qemu-xhci,id=usb0",
    "-device",
    "usb-tablet,bus=usb0.0",
    "-device",
    "usb-kbd,bus=usb0.0",
];

/// The aarch64 guest booted on native `qemu-system-aarch64` (Debian's qemu-system-arm,
/// `-M virt -cpu cortex-a57`) with `memory` MiB of RAM (512 as the
/// `linux-aarch64-virt-graphics` profile) and the devices `devices` (QEMU arguments), at
/// its first prompt; its files are in `dir` (a private directory), the monitor at
/// `dir/mon.sock`.
pub fn boot_aarch64(name: &str, memory: u32, devices: &[&str]) -> (Qemu, PathBuf) {
    let dir = private_dir(name);
    let kernel = dir.join("aarch64-virt.img");
    std::fs::write(&kernel, qemuweb_guests::aarch64_virt_kernel()).unwrap();
    let monitor = dir.join("mon.sock");
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args([
        "-M",
        "virt",
        "-cpu",
        "cortex-a57",
        "-m",
        &memory.to_string(),
        "-accel",
        "tcg",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
    ])
    .args(devices)
    .arg("-kernel")
    .arg(&kernel)
    .arg("-monitor")
    .arg(format!("unix:{},server=on,wait=off", monitor.display()));
    let mut qemu = Qemu::spawn(cmd, "qemu-system-arm");
    qemu.until(qemuweb_guests::AARCH64_BANNER);
    qemu.until(qemuweb_guests::PROMPT);
    qemu.monitor_path = monitor;
    (qemu, dir)
}
