//! Runs real QEMU for the boot tests: a child with piped stdio (`-serial stdio`), a reader
//! thread collecting its output, deadlines on every wait, and a kill on drop.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use qemuweb_config::QemuArgsResult;

/// How long a guest may take to print its banner (TCG on a busy two-core machine).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one command may take to answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    closed: bool,
}

/// A running QEMU.
pub struct Qemu {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<(Mutex<Output>, Condvar)>,
    stderr: Arc<(Mutex<Output>, Condvar)>,
    readers: Vec<JoinHandle<()>>,
    cursor: usize,
    command_line: String,
}

fn collect(
    mut from: impl Read + Send + 'static,
    into: Arc<(Mutex<Output>, Condvar)>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            let (lock, cvar) = &*into;
            let mut out = lock.lock().unwrap();
            if n == 0 {
                out.closed = true;
                cvar.notify_all();
                return;
            }
            out.bytes.extend_from_slice(&buf[..n]);
            cvar.notify_all();
        }
    })
}

impl Qemu {
    /// Starts `result.binary` with `result.args`.
    pub fn spawn(result: &QemuArgsResult) -> Qemu {
        assert!(result.is_ok(), "builder errors: {:?}", result.errors);
        let command_line = format!("{} {}", result.binary, result.args.join(" "));
        let mut child = Command::new(&result.binary)
            .args(&result.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (install qemu-system-x86 and qemu-system-arm): {e}",
                    result.binary
                )
            });
        let stdout = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let stderr = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Qemu {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            readers,
            cursor: 0,
            command_line,
        }
    }

    fn text(out: &Arc<(Mutex<Output>, Condvar)>) -> String {
        String::from_utf8_lossy(&out.0.lock().unwrap().bytes).into_owned()
    }

    fn failure(&self, what: &str) -> String {
        format!(
            "{what}\ncommand: {}\nserial output so far: {:?}\nstderr: {}",
            self.command_line,
            Self::text(&self.stdout),
            Self::text(&self.stderr)
        )
    }

    /// Waits until `needle` appears after the cursor; moves the cursor past it and returns
    /// the text between the old cursor and the match.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.stdout;
        let mut out = lock.lock().unwrap();
        loop {
            let hay = &out.bytes[self.cursor..];
            if let Some(pos) = hay
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                let before = String::from_utf8_lossy(&hay[..pos]).into_owned();
                self.cursor += pos + needle.len();
                return before;
            }
            let now = Instant::now();
            if out.closed || now >= deadline {
                let why = if out.closed {
                    "QEMU exited"
                } else {
                    "timed out"
                };
                drop(out);
                panic!("{}", self.failure(&format!("{why} waiting for {needle:?}")));
            }
            out = cvar.wait_timeout(out, deadline - now).unwrap().0;
        }
    }

    /// Waits for the banner and the first prompt.
    pub fn expect_banner(&mut self, banner: &str) {
        self.expect(banner, BOOT_TIMEOUT);
        self.expect("\r\n> ", REPLY_TIMEOUT);
    }

    /// Sends `line` and a CR, waits for the next prompt, returns the reply line.
    pub fn command(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\r").unwrap();
        stdin.flush().unwrap();
        let reply = self.expect("\r\n> ", REPLY_TIMEOUT);
        reply.trim_end_matches(['\r', '\n']).to_string()
    }

    /// Stops QEMU with SIGTERM (it flushes its disks and exits), SIGKILL after 10 s.
    pub fn shutdown(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{}", self.failure("QEMU did not exit on SIGTERM"));
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin = None;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
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
