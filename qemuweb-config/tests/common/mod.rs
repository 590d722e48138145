//! Runs real QEMU for the boot tests, under the shared watchdog
//! (`qemuweb_testkit::watchdog`): stdio piped (`-serial stdio`), deadlines on every wait,
//! the whole process group killed at the time limit (failing with the output's tail) and
//! on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qemuweb_config::QemuArgsResult;
use qemuweb_testkit::watchdog::{watch, Stream, Watched};

/// How long a guest may take to print its banner (TCG on a busy two-core machine).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one command may take to answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most one QEMU may run, enforced from outside it.
pub const QEMU_LIMIT: Duration = Duration::from_secs(180);

/// A running QEMU.
pub struct Qemu {
    qemu: Watched,
    cursor: usize,
}

impl Qemu {
    /// Starts `result.binary` with `result.args`.
    pub fn spawn(result: &QemuArgsResult) -> Qemu {
        assert!(result.is_ok(), "builder errors: {:?}", result.errors);
        let name = format!("{} {}", result.binary, result.args.join(" "));
        let mut cmd = Command::new(&result.binary);
        cmd.args(&result.args);
        Qemu {
            qemu: watch(&name, &mut cmd, QEMU_LIMIT),
            cursor: 0,
        }
    }

    /// Waits until `needle` appears after the cursor; moves the cursor past it and returns
    /// the text between the old cursor and the match.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let from = self.cursor;
        let find = |out: &[u8]| {
            out.get(from..).and_then(|hay| {
                hay.windows(needle.len())
                    .position(|w| w == needle.as_bytes())
            })
        };
        let out =
            self.qemu
                .wait_until_bytes(Stream::Stdout, timeout, &format!("{needle:?}"), |out| {
                    find(out).is_some()
                });
        let pos = find(&out).expect("found");
        self.cursor = from + pos + needle.len();
        String::from_utf8_lossy(&out[from..from + pos]).into_owned()
    }

    /// Waits for the banner and the first prompt.
    pub fn expect_banner(&mut self, banner: &str) {
        self.expect(banner, BOOT_TIMEOUT);
        self.expect("\r\n> ", REPLY_TIMEOUT);
    }

    /// Sends `line` and a CR, waits for the next prompt, returns the reply line.
    pub fn command(&mut self, line: &str) -> String {
        self.qemu.send(&format!("{line}\r"));
        let reply = self.expect("\r\n> ", REPLY_TIMEOUT);
        reply.trim_end_matches(['\r', '\n']).to_string()
    }

    /// Stops QEMU with SIGTERM (it flushes its disks and exits); fails after 10 s.
    pub fn shutdown(mut self) {
        self.qemu.signal(libc::SIGTERM);
        if self.qemu.wait_exit(Duration::from_secs(10)).is_none() {
            self.qemu.fail_with("QEMU did not exit on SIGTERM");
        }
    }
}

/// A fresh directory for one test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("qemuweb-config-{name}-"))
            .tempdir()
            .unwrap()
            .keep();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the raw x86 guest disk to `path`.
pub fn write_x86_raw(path: &Path) {
    std::fs::write(path, qemuweb_guests::x86_bios_disk()).unwrap();
}

/// Writes the x86 guest disk as qcow2 to `path` (via a raw file next to it).
pub fn write_x86_qcow2(path: &Path) {
    let raw = path.with_extension("src.raw");
    write_x86_raw(&raw);
    qemuweb_guests::convert_to_qcow2(&raw, path, None).unwrap();
    std::fs::remove_file(raw).unwrap();
}

/// Sector `lba` of the disk image at `path` (any format), read with `qemu-img convert`.
pub fn read_sector(path: &Path, format: &str, lba: u64) -> Vec<u8> {
    let bytes = if format == "raw" {
        std::fs::read(path).unwrap()
    } else {
        let raw = path.with_extension(format!("{}.check.raw", std::process::id()));
        let status = Command::new("qemu-img")
            .args(["convert", "-U", "-f", format, "-O", "raw"])
            .arg(path)
            .arg(&raw)
            .status()
            .expect("qemu-img (qemu-utils)");
        assert!(status.success(), "qemu-img convert failed");
        let bytes = std::fs::read(&raw).unwrap();
        std::fs::remove_file(raw).unwrap();
        bytes
    };
    let start = lba as usize * 512;
    bytes[start..start + 512].to_vec()
}
