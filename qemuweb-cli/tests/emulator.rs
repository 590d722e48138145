//! `qemuweb emulator` run for real on the x86 test guest (TCG): start, status over QMP
//! with a port forward, stop leaving no process, persistence, reset, stale PID files.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Stops the emulator of a state directory when dropped (QEMU runs daemonized).
struct Stopper(PathBuf);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = emu(&self.0, &["stop", "--grace", "0"]);
    }
}

fn emu(state: &Path, args: &[&str]) -> Output {
    Command::new(QEMUWEB)
        .arg("emulator")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("QEMUWEB_EMULATOR_CPUS")
        .env("QEMUWEB_EMULATOR_MEMORY_MIB", "256")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pid_in(out: &str) -> u32 {
    let at = out.find("(pid ").expect("a pid") + 5;
    out[at..].split(')').next().unwrap().parse().unwrap()
}

/// Whether `pid` runs; a zombie (exited, waiting for its reparented parent to reap it)
/// does not.
fn exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn start_status_stop_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(&tmp.path().join("g"), None).unwrap();
    let state = tmp.path().join("state");
    let _stopper = Stopper(state.clone());
    let port = free_port();
    let fwd = format!("{port}:80");

    // Not started yet.
    assert_eq!(emu(&state, &["status"]).status.code(), Some(3));

    let image = guests.x86_qcow2.to_str().unwrap();
    let o = emu(
        &state,
        &[
            "start",
            "--image",
            image,
            "--accel",
            "tcg",
            "--forward",
            &fwd,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let pid = pid_in(&text(&o));
    assert!(exists(pid));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("-m 256"),
        "memory from the environment: {cmdline}"
    );
    assert!(cmdline.contains("-accel tcg"), "{cmdline}");

    // A second start is refused.
    let o = emu(&state, &["start", "--accel", "tcg"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already running"), "{}", text(&o));

    // Status reads QMP, and the forward is in `info usernet`.
    let o = emu(&state, &["status"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains(&format!("running (pid {pid})")), "{out}");
    assert!(out.contains("vm: running"), "{out}");
    let fwd_line = out
        .lines()
        .find(|l| l.contains("HOST_FORWARD"))
        .unwrap_or_else(|| panic!("no forward in {out}"));
    assert!(
        fwd_line.contains(&format!("127.0.0.1 {port}")),
        "{fwd_line}"
    );
    assert!(fwd_line.contains("10.0.2.15    80"), "{fwd_line}");
    // QEMU listens on the host port.
    TcpStream::connect(("127.0.0.1", port)).expect("the forward listens");

    // The serial console goes to the log.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(state.join("serial.log"))
        .unwrap_or_default()
        .contains(qemuweb_guests::X86_BANNER)
    {
        assert!(Instant::now() < deadline, "no banner in serial.log");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Stop: nothing left behind.
    let o = emu(&state, &["stop", "--grace", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!exists(pid), "QEMU {pid} still exists");
    assert!(!state.join("qemu.pid").exists());
    assert!(!state.join("qmp.sock").exists());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(emu(&state, &["status"]).status.code(), Some(3));
    assert!(text(&emu(&state, &["stop"])).contains("not running"));

    // Writes land in the overlay and survive a restart; reset brings back the base.
    let base = qemu_img_raw(&guests.x86_qcow2, tmp.path());
    let overlay = state.join("disk.qcow2");
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0xab 51200 512"])
        .arg(&overlay));
    let o = emu(&state, &["start", "--accel", "tcg"]);
    assert!(o.status.success(), "{}", text(&o));
    let pid = pid_in(&text(&o));
    let o = emu(&state, &["reset"]);
    assert!(!o.status.success(), "reset while running is refused");
    assert!(emu(&state, &["stop", "--grace", "0"]).status.success());
    assert!(!exists(pid));
    let dirty = qemu_img_raw(&overlay, tmp.path());
    assert!(dirty[51200..51712].iter().all(|&b| b == 0xab));
    assert!(
        qemu_img_raw(&guests.x86_qcow2, tmp.path()) == base,
        "the base never changes"
    );

    let o = emu(&state, &["reset"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(qemu_img_raw(&overlay, tmp.path()) == base);
}

#[test]
fn stale_pid_files_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // A pid that no longer exists, and one that exists but is not QEMU (this test).
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    for pid in [gone.id(), std::process::id()] {
        std::fs::write(state.join("qemu.pid"), format!("{pid}\n")).unwrap();
        let o = emu(&state, &["status"]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(
            text(&o).contains(&format!("stale PID file (pid {pid})")),
            "{}",
            text(&o)
        );
        assert!(!state.join("qemu.pid").exists());
    }
    // No base image known: start says so.
    let o = emu(&state, &["start", "--accel", "tcg"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--image"), "{}", text(&o));
    // Bad forwards are refused by the parser.
    let o = emu(&state, &["start", "--forward", "80"]);
    assert_eq!(o.status.code(), Some(2));
}
