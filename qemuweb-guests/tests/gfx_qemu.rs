//! The x86 guest's `gfx` and `hline` commands on real hardware emulation: native
//! `qemu-system-i386` (Debian's qemu-system-x86) boots the guest, the commands go in over
//! its serial port, and QEMU's own `screendump` of the VGA screen must show
//! `x86_gfx_pixel` everywhere (row 100 red after `hline 100 04`); after `text`, `hline`
//! is refused.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

struct Qemu {
    child: Child,
    stdin: ChildStdin,
    out: Receiver<u8>,
    seen: String,
}

impl Qemu {
    /// Reads serial output until it contains `text` (20 s at most).
    fn until(&mut self, text: &str) {
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

    fn command(&mut self, line: &str, reply: &str) {
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
fn read_ppm(path: &Path) -> (usize, usize, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8_lossy(&bytes[..20.min(bytes.len())]).to_string();
    let mut fields = text.split_ascii_whitespace();
    assert_eq!(fields.next(), Some("P6"));
    let w: usize = fields.next().unwrap().parse().unwrap();
    let h: usize = fields.next().unwrap().parse().unwrap();
    let data = bytes[bytes.len() - w * h * 3..].to_vec();
    (w, h, data)
}

fn screendump(monitor: &Path, out: &Path) -> (usize, usize, Vec<u8>) {
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

/// Counts the pixels of a screendump that differ from the pattern (scaled to the dump's
/// size), `red_row` being all colour 4.
fn mismatches(w: usize, h: usize, rgb: &[u8], red_row: Option<u32>) -> usize {
    let (sx, sy) = (w / 320, h / 200);
    assert!(
        sx >= 1 && sy >= 1 && w == 320 * sx && h == 200 * sy,
        "{w}x{h}"
    );
    let mut bad = 0;
    for y in 0..h {
        for x in 0..w {
            let (gx, gy) = ((x / sx) as u32, (y / sy) as u32);
            let want = match red_row {
                Some(r) if r == gy => qemuweb_guests::x86_gfx_colour(4),
                _ => qemuweb_guests::x86_gfx_pixel(gx, gy),
            };
            if rgb[(y * w + x) * 3..][..3] != want {
                bad += 1;
            }
        }
    }
    bad
}

#[test]
fn gfx_pattern_on_qemu_vga() {
    let dir = std::env::temp_dir().join(format!("qemuweb-guests-gfx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("x86.raw");
    std::fs::write(&disk, qemuweb_guests::x86_bios_disk()).unwrap();
    let monitor = dir.join("mon.sock");
    let mut child = Command::new("qemu-system-i386")
        .args([
            "-display", "none", "-vga", "std", "-serial", "stdio", "-drive",
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
    };
    qemu.until(qemuweb_guests::X86_BANNER);
    qemu.until("> ");
    qemu.command("gfx", "GFX 320x200");
    let (w, h, rgb) = screendump(&monitor, &dir.join("gfx.ppm"));
    assert_eq!(mismatches(w, h, &rgb, None), 0, "the gfx pattern ({w}x{h})");
    qemu.command("hline 100 04", "HLINE 100 FILL 04");
    let (w, h, rgb) = screendump(&monitor, &dir.join("hline.ppm"));
    assert_eq!(mismatches(w, h, &rgb, Some(100)), 0, "row 100 red");
    // The comparison sees the change: against the plain pattern, row 100 differs where
    // it was not red already (index ((x >> 4) ^ 12) & 7 is 4 for x >> 4 = 0, 8, 16: 48
    // pixels), at QEMU's scale.
    assert_eq!(
        mismatches(w, h, &rgb, None),
        (320 - 48) * (w / 320) * (h / 200)
    );
    qemu.command("text", "TEXT 80x25");
    qemu.command("hline 100 04", "ERR not in graphics mode");
    drop(qemu);
    std::fs::remove_dir_all(&dir).unwrap();
}
