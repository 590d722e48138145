//! `qemuweb emulator` run for real on the x86 test guest (TCG): start, status over QMP
//! with a port forward, stop leaving no process, persistence, reset, stale PID files.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use qemuweb_testkit::watchdog::{watch, Finished};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Stops the emulator of a state directory when dropped (QEMU runs daemonized).
struct Stopper(PathBuf);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = emu(&self.0, &["stop", "--grace", "0"]);
    }
}

/// `qemuweb emulator --state-dir STATE ARGS`, under the watchdog (QEMU itself runs
/// daemonized, outside it: `Stopper` ends it).
fn emu(state: &Path, args: &[&str]) -> Finished {
    let mut cmd = Command::new(QEMUWEB);
    cmd.arg("emulator")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("QEMUWEB_EMULATOR_CPUS")
        .env("QEMUWEB_EMULATOR_MEMORY_MIB", "256");
    let mut w = watch("qemuweb emulator", &mut cmd, Duration::from_secs(120));
    w.close_stdin();
    w.finish()
}

fn text(o: &Finished) -> String {
    format!("{}{}", o.stdout_text(), o.stderr_text())
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

/// A newc cpio archive (what the kernel unpacks as an initramfs) of `(path, mode, data)`.
fn newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let pad = |out: &mut Vec<u8>| out.resize(out.len().div_ceil(4) * 4, 0);
    let trailer: (&str, u32, &[u8]) = ("TRAILER!!!", 0, b"");
    for (ino, (name, mode, data)) in entries.iter().chain([&trailer]).enumerate() {
        let fields = [
            ino as u32 + 1,
            *mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(format!("{:08X}{:08X}", name.len() + 1, 0).as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(data);
        pad(&mut out);
    }
    out
}

/// The guest's side of the connection: it reads a line and answers with it and its kernel.
const ANSWER: &str = "#!/bin/sh\nread line\necho \"guest got: $line on $(uname -r)\"\n";

/// The Linux guest's /init with networking: the e1000 driver, QEMU's user network
/// addresses, and busybox `nc` serving `answer` on port 7 for every connection.
const NET_INIT: &str = "#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
insmod /lib/e1000.ko
ifconfig lo 127.0.0.1 up
ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
route add default gw 10.0.2.2
nc -ll -p 7 -e /bin/answer &
echo QEMUWEB-NET-READY
exec sh
";

/// `emulator start --forward` carries a TCP connection from the host to a listener in
/// Debian's i386 Linux (scripts/linux-guest: its kernel, and its busybox initramfs with a
/// second archive appended that loads the kernel's own e1000 module and runs `nc`).
/// It needs the cached guest, which `scripts/e2e-linux.sh` builds; scripts/test runs it
/// after that step: `cargo test -p qemuweb-cli --test emulator -- --ignored`.
#[test]
#[ignore = "needs scripts/linux-guest's cache (run by scripts/test after the Linux e2e step)"]
fn a_port_forward_reaches_a_listener_in_the_linux_guest() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut linux_guest = Command::new(repo.join("scripts/linux-guest"));
    if let Some(cache) = std::env::var_os("QEMUWEB_LINUX_CACHE") {
        linux_guest.arg(cache);
    }
    let paths = String::from_utf8(run(&mut linux_guest)).unwrap();
    let mut lines = paths.lines();
    let kernel = PathBuf::from(lines.next().expect("the kernel path"));
    let initrd = PathBuf::from(lines.next().expect("the initrd path"));
    let cache = kernel.parent().unwrap().parent().unwrap();
    let modules = std::fs::read_dir(cache.join("extract/lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let e1000 =
        std::fs::read(modules.join("kernel/drivers/net/ethernet/intel/e1000/e1000.ko")).unwrap();

    // The initramfs, then a second archive whose /init replaces the first one's.
    let tmp = tempfile::tempdir().unwrap();
    let mut initramfs = std::fs::read(&initrd).unwrap();
    // The kernel takes an uncompressed archive only at a 4-byte boundary; zeros between
    // archives are skipped.
    initramfs.resize(initramfs.len().div_ceil(4) * 4, 0);
    initramfs.extend(newc(&[
        ("lib", 0o040755, b""),
        ("lib/e1000.ko", 0o100644, &e1000),
        ("bin/answer", 0o100755, ANSWER.as_bytes()),
        ("init", 0o100755, NET_INIT.as_bytes()),
    ]));
    let net_initrd = tmp.path().join("initrd-net.img");
    std::fs::write(&net_initrd, initramfs).unwrap();
    let data = tmp.path().join("data.img");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();

    let state = tmp.path().join("state");
    let _stopper = Stopper(state.clone());
    let port = free_port();
    let o = emu(
        &state,
        &[
            "start",
            // TCG: the nested KVM here boots Linux far slower than TCG does.
            "--accel",
            "tcg",
            "--profile",
            qemuweb_config::LINUX_I386_PC_NOGRAPHIC,
            "--image",
            data.to_str().unwrap(),
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            net_initrd.to_str().unwrap(),
            "--append",
            "console=ttyS0 quiet",
            "--forward",
            &format!("{port}:7"),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let serial = state.join("serial.log");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let log = std::fs::read_to_string(&serial).unwrap_or_default();
        if log.contains("QEMUWEB-NET-READY") {
            break;
        }
        assert!(Instant::now() < deadline, "no READY line; serial: {log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = text(&emu(&state, &["status"]));
    assert!(status.contains("HOST_FORWARD"), "{status}");

    // The guest's nc may need a moment after the READY line: retry until it answers.
    let answer = loop {
        let mut reply = String::new();
        if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            conn.write_all(b"hello through the forward\n").unwrap();
            let _ = conn.read_to_string(&mut reply);
        }
        if reply.contains("guest got") || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        answer.starts_with("guest got: hello through the forward on 6."),
        "{answer:?}"
    );
    assert!(answer.trim_end().ends_with("-686"), "{answer:?}");
    assert!(emu(&state, &["stop", "--grace", "0"]).status.success());
}
