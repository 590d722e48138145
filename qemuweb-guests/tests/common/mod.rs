//! What the native-QEMU tests of the x86 guest share: booting it in `qemu-system-i386`
//! (VGA, serial on a pipe, an HMP monitor on a Unix socket), talking to its serial port,
//! monitor commands and screendumps.
#![allow(dead_code)]

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub struct Qemu {
    child: Child,
    stdin: ChildStdin,
    out: Receiver<u8>,
    seen: String,
    monitor_path: std::path::PathBuf,
}

impl Qemu {
    /// Reads serial output until it contains `text` (20 s at most).
    pub fn until(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(b) => self.seen.push(b as char),
                Err(_) => panic!("no {text:?} from the guest; got {:?}", self.seen),
            }
        }
        self.seen.clear();
    }

    /// Sends `line` and waits for `reply`, with no prompt after it (a mode of its own).
    pub fn command_no_prompt(&mut self, line: &str, reply: &str) {
        self.stdin
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
        self.until(reply);
    }

    pub fn command(&mut self, line: &str, reply: &str) {
        self.stdin
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
        self.until(reply);
        self.until("> ");
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// The guest booted on native QEMU, at its first prompt; its files are in `dir` (made
/// fresh), the monitor at `dir/mon.sock`.
pub fn boot(name: &str) -> (Qemu, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("qemuweb-guests-{name}-"))
        .tempdir()
        .unwrap()
        .keep();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("x86.raw");
    std::fs::write(&disk, qemuweb_guests::x86_bios_disk()).unwrap();
    let monitor = dir.join("mon.sock");
    let mut child = Command::new("qemu-system-i386")
        .args([
            "-display", "none", "-vga", "std", "-nic", "none", "-serial", "stdio", "-drive",
        ])
        .arg(format!("file={},format=raw", disk.display()))
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", monitor.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-i386 (Debian package qemu-system-x86)");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, out) = channel();
    std::thread::spawn(move || {
        for b in BufReader::new(stdout).bytes() {
            let Ok(b) = b else { break };
            if tx.send(b).is_err() {
                break;
            }
        }
    });
    let mut qemu = Qemu {
        child,
        stdin,
        out,
        seen: String::new(),
        monitor_path: std::path::PathBuf::new(),
    };
    qemu.until(qemuweb_guests::X86_BANNER);
    qemu.until("> ");
    qemu.monitor_path = monitor;
    (qemu, dir)
}

impl Qemu {
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
