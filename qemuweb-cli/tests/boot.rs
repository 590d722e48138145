//! `qemuweb boot` run for real on the x86 test guest (TCG: the nested KVM here is slow):
//! the banner and an echo come through the CLI's stdout, Ctrl-C exits cleanly, and no
//! QEMU outlives the CLI.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use qemuweb_testkit::watchdog::{watch, Watched};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The CLI's output so far, read on a thread.
struct Output {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Output {
    fn new(mut r: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Output {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits until the output contains `text`.
    fn wait_for(&mut self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let s = String::from_utf8_lossy(&self.seen).into_owned();
            if s.contains(text) {
                return s;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(bytes) => self.seen.extend(bytes),
                Err(_) => panic!("no {text:?} in {s:?}"),
            }
        }
    }

    /// Waits for a whole line containing `text`, and returns the output so far.
    fn wait_for_line(&mut self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.wait_for(text, deadline.saturating_duration_since(Instant::now()));
            let at = s.find(text).unwrap();
            if s[at..].contains('\n') {
                return s;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(bytes) => self.seen.extend(bytes),
                Err(_) => panic!("no whole line with {text:?} in {s:?}"),
            }
        }
    }

    /// Everything until the writer closes.
    fn rest(mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(bytes) => self.seen.extend(bytes),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("output still open"),
            }
        }
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "QEMU pid {pid} is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The QEMU pid from the CLI's "started ... (pid N)" line.
fn qemu_pid(stderr: &str) -> u32 {
    let at = stderr.find("(pid ").expect("a pid line") + 5;
    stderr[at..].split(')').next().unwrap().parse().unwrap()
}

fn start(image: &std::path::Path, extra: &[&str]) -> (Killed, Output, Output) {
    let mut child = Command::new(QEMUWEB)
        .arg("boot")
        .args(["--accel", "tcg", "--timeout", "60"])
        .args(extra)
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let out = Output::new(child.stdout.take().unwrap());
    let err = Output::new(child.stderr.take().unwrap());
    (Killed(child), out, err)
}

#[test]
fn boots_the_guest_with_the_serial_console_on_stdio_and_exits_cleanly_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let (mut cli, mut out, mut err) = start(&guests.x86_qcow2, &[]);
    out.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(30));
    let console = out.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(10));
    assert!(console.starts_with(qemuweb_guests::X86_BANNER) || console.contains("\n"));
    let stderr = err.wait_for_line("(pid ", Duration::from_secs(5));
    assert!(stderr.contains("-accel tcg"), "{stderr}");
    assert!(stderr.contains("-serial stdio"), "{stderr}");
    let qemu = qemu_pid(&stderr);
    assert!(alive(qemu));

    let stdin = cli.0.stdin.as_mut().unwrap();
    stdin.write_all(b"echo through the cli\r").unwrap();
    stdin.flush().unwrap();
    out.wait_for("through the cli\r\n", Duration::from_secs(10));
    stdin.write_all(b"info\r").unwrap();
    stdin.flush().unwrap();
    out.wait_for("DISK SECTORS 8192", Duration::from_secs(10));

    // Ctrl-C on a terminal: SIGINT to the whole process group.
    let pgid = cli.0.id() as i32;
    // SAFETY: sends a signal to the group the test created for the CLI.
    assert_eq!(unsafe { libc::kill(-pgid, libc::SIGINT) }, 0);
    let status = cli.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    wait_gone(qemu);
    let stderr = err.rest(Duration::from_secs(5));
    assert!(stderr.contains("terminating on signal 2"), "{stderr}");
}

#[test]
fn qemu_dies_with_the_cli_and_the_time_limit_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();

    // The CLI killed outright: QEMU goes too.
    let (mut cli, mut out, mut err) = start(&guests.x86_raw, &[]);
    out.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(30));
    let qemu = qemu_pid(&err.wait_for_line("(pid ", Duration::from_secs(5)));
    cli.0.kill().unwrap();
    cli.0.wait().unwrap();
    wait_gone(qemu);

    // The time limit: exit status 124, QEMU gone.
    let mut child = Command::new(QEMUWEB)
        .args(["boot", "--accel", "tcg", "--timeout", "2"])
        .arg(&guests.x86_raw)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Output::new(child.stdout.take().unwrap());
    let mut err = Output::new(child.stderr.take().unwrap());
    let mut guard = Killed(child);
    out.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(30));
    let qemu = qemu_pid(&err.wait_for_line("(pid ", Duration::from_secs(5)));
    let status = guard.0.wait().unwrap();
    assert_eq!(status.code(), Some(124));
    wait_gone(qemu);
    assert!(err.rest(Duration::from_secs(5)).contains("time limit"));
}

#[test]
fn snapshot_discards_writes_and_plain_boot_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let lba = 100u64;
    for (extra, kept) in [(&["--snapshot"][..], false), (&[][..], true)] {
        let (mut cli, mut out, _err) = start(&guests.x86_raw, extra);
        out.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(30));
        let stdin = cli.0.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("write {lba} AB\r").as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        out.wait_for(
            &qemuweb_guests::write_reply(lba, 0xab),
            Duration::from_secs(10),
        );
        // SAFETY: signals the CLI's own process group.
        unsafe { libc::kill(-(cli.0.id() as i32), libc::SIGINT) };
        assert!(cli.0.wait().unwrap().success());
        let disk = std::fs::read(&guests.x86_raw).unwrap();
        let sector = &disk[lba as usize * 512..(lba as usize + 1) * 512];
        assert_eq!(sector.iter().all(|&b| b == 0xab), kept, "{extra:?}");
    }
}

#[test]
fn boots_the_aarch64_kernel_directly() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let mut child = Command::new(QEMUWEB)
        .args(["boot", "--accel", "tcg", "--timeout", "60"])
        .args([
            "--profile",
            qemuweb_config::LINUX_AARCH64_VIRT_NOGRAPHIC,
            "--kernel",
        ])
        .arg(&guests.aarch64_kernel)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut out = Output::new(child.stdout.take().unwrap());
    let mut err = Output::new(child.stderr.take().unwrap());
    let mut cli = Killed(child);
    out.wait_for(qemuweb_guests::AARCH64_BANNER, Duration::from_secs(30));
    let stderr = err.wait_for_line("(pid ", Duration::from_secs(5));
    assert!(stderr.contains("qemu-system-aarch64"), "{stderr}");
    assert!(stderr.contains("-machine virt"), "{stderr}");
    let qemu = qemu_pid(&stderr);
    let stdin = cli.0.stdin.as_mut().unwrap();
    stdin.write_all(b"echo arm64 says hi\r").unwrap();
    stdin.flush().unwrap();
    out.wait_for("arm64 says hi\r\n", Duration::from_secs(10));
    // SAFETY: signals the CLI's own process group.
    unsafe { libc::kill(-(cli.0.id() as i32), libc::SIGINT) };
    assert!(cli.0.wait().unwrap().success());
    wait_gone(qemu);
}

#[test]
fn refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let run = |args: &[&str]| {
        Command::new(QEMUWEB)
            .arg("boot")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let image = guests.x86_qcow2.to_str().unwrap();
    let o = run(&["--profile", "no-such-profile", image]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-profile"));
    let o = run(&["--accel", "hvf", image]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("HVF"));
    let o = run(&["http://127.0.0.1:1/x.qcow2"]);
    assert_eq!(o.status.code(), Some(2));
    // Nothing to boot. (An aarch64 profile with a disk and no kernel is no refusal: UEFI
    // firmware boots the disk.)
    assert_eq!(run(&[]).status.code(), Some(2));
    let o = run(&[tmp.path().join("missing.qcow2").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.qcow2"));
    // Native-only settings with --browser, and browser-only settings without it.
    for args in [
        &["--browser", "--smp", "2", image][..],
        &["--browser", "--accel", "tcg", image],
        &["--engine", "qemu", image],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}

/// `qemuweb boot --browser EXTRA IMAGE` with its stdin, stdout and stderr piped.
fn browser_boot(extra: &[&str], image: &std::path::Path) -> (Killed, Output, Output) {
    let mut child = Command::new(QEMUWEB)
        .args(["boot", "--browser"])
        .args(extra)
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Output::new(child.stdout.take().unwrap());
    let err = Output::new(child.stderr.take().unwrap());
    (Killed(child), out, err)
}

/// Types `command`, waits for `reply`, then ends stdin: the run must end with status 0.
fn type_then_close(mut cli: Killed, mut out: Output, err: Output, command: &str, reply: &str) {
    let mut stdin = cli.0.stdin.take().unwrap();
    stdin.write_all(command.as_bytes()).unwrap();
    stdin.flush().unwrap();
    out.wait_for(reply, Duration::from_secs(30));
    drop(stdin);
    let status = cli.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        err.rest(Duration::from_secs(5))
    );
}

/// `qemuweb boot --browser` in headless Chromium. It needs the runtime's web bundle and v86
/// from `e2e/node_modules`, which `scripts/e2e-tests.sh` provides; scripts/test runs it
/// after that step: `cargo test -p qemuweb-cli --test boot -- --ignored`.
#[test]
#[ignore = "needs the web bundle and e2e/node_modules (run by scripts/test after the e2e step)"]
fn browser_boot_streams_the_serial_console_and_exits_by_the_input_or_the_time_limit() {
    const I386: &str = qemuweb_config::LINUX_I386_PC_NOGRAPHIC;
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let chromium_of = |pid: u32| {
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter(|l| l.contains(&format!("qemuweb-headless-{pid}-")))
            .count()
    };

    // The banner and an echo on stdout; stdin's end stops the VM: status 0, nothing left.
    let (cli, mut out, err) =
        browser_boot(&["--profile", I386, "--timeout", "120"], &guests.x86_qcow2);
    let pid = cli.0.id();
    out.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(60));
    out.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(10));
    assert!(chromium_of(pid) > 0, "Chromium runs on the CLI's profile");
    type_then_close(
        cli,
        out,
        err,
        "echo through the browser\n",
        "through the browser\r\n",
    );
    assert_eq!(chromium_of(pid), 0, "no Chromium left running");

    // `prepare`'s output, served by `qemuweb serve`, boots from its URL (HTTP Range reads).
    let site = tmp.path().join("site");
    let o = Command::new(QEMUWEB)
        .arg("prepare")
        .arg(&guests.x86_raw)
        .arg(&site)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The runner's page has an origin of its own: the server must let it read (CORS).
    let (_server, base) = serve(&site, &["--cors-any"]);
    let url = std::path::PathBuf::from(format!("{base}disk.qcow2"));
    let (cli, mut out, err) = browser_boot(&["--profile", I386, "--timeout", "120"], &url);
    out.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(60));
    type_then_close(cli, out, err, "info\n", "DISK SECTORS 8192");

    // The time limit: 124 with the same message as a native boot.
    let (mut cli, mut out, err) =
        browser_boot(&["--profile", I386, "--timeout", "5"], &guests.x86_qcow2);
    // Child::wait closes stdin, which would end the run: keep it open.
    let _stdin = cli.0.stdin.take();
    out.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(60));
    assert_eq!(cli.0.wait().unwrap().code(), Some(124));
    assert!(err.rest(Duration::from_secs(5)).contains("time limit"));

    // A 64-bit profile needs the QEMU engine: refused before a browser starts.
    let (mut cli, _out, err) = browser_boot(
        &["--profile", qemuweb_config::LINUX_X86_64_PC_NOGRAPHIC],
        &guests.x86_raw,
    );
    assert_eq!(cli.0.wait().unwrap().code(), Some(1));
    assert!(err.rest(Duration::from_secs(5)).contains("QEMU engine"));
}

/// `qemuweb boot --browser --engine qemu` boots the x86 test guest on the x86_64 profile and
/// the aarch64 test kernel on the aarch64 profile on QEMU compiled to wasm64 (or the x86
/// guest on the i386 profile on the wasm32 build), its modules and firmware from
/// `$QEMUWEB_QEMU_DIR` (a `scripts/build-qemu` output). Without that build
/// it says SKIPPED on stderr. A directory without a build is refused (2).
#[test]
#[ignore = "needs the web bundle and a QEMU-in-wasm build (run by scripts/test after the e2e step)"]
fn browser_boot_on_the_qemu_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    // A directory without a build: refused before a browser starts, naming the file.
    let o = Command::new(QEMUWEB)
        .args(["boot", "--browser", "--engine", "qemu", "--qemu-dir"])
        .arg(tmp.path())
        .args(["--profile", qemuweb_config::LINUX_X86_64_PC_NOGRAPHIC])
        .arg(&guests.x86_qcow2)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("qemu-build.json is missing"));

    // The x86 test guest on the x86_64 profile (wasm64 build) or the i386 one (wasm32
    // build); the aarch64 kernel when the build has qemu-system-aarch64.
    let dir = std::env::var_os("QEMUWEB_QEMU_DIR").map(std::path::PathBuf::from);
    let has = |module: &str| dir.as_ref().is_some_and(|d| d.join(module).is_file());
    let x86 = if has("qemu-system-x86_64.wasm") {
        qemuweb_config::LINUX_X86_64_PC_NOGRAPHIC
    } else if has("qemu-system-i386.wasm") {
        qemuweb_config::LINUX_I386_PC_NOGRAPHIC
    } else {
        // Straight to the stderr handle: libtest captures eprintln! of passing tests.
        writeln!(
            std::io::stderr(),
            "\n*** SKIPPED browser_boot_on_the_qemu_engine: QEMUWEB_QEMU_DIR={dir:?} has no \
             QEMU build (build it: scripts/build-qemu) ***\n"
        )
        .unwrap();
        return;
    };
    let profile = ["--profile", x86];
    // The module directory comes from the inherited $QEMUWEB_QEMU_DIR (no --qemu-dir).
    let mut args = vec!["--engine", "qemu", "--timeout", "240"];
    args.extend(profile);
    let (cli, mut out, err) = browser_boot(&args, &guests.x86_qcow2);
    out.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(180));
    out.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(30));
    type_then_close(
        cli,
        out,
        err,
        "echo on qemu in wasm\n",
        "on qemu in wasm\r\n",
    );
    if !has("qemu-system-aarch64.wasm") {
        return;
    }
    // aarch64: the test kernel, with the image as its virtio disk.
    let kernel = guests.aarch64_kernel.to_str().unwrap().to_string();
    let args = [
        "--engine",
        "qemu",
        "--timeout",
        "240",
        "--profile",
        qemuweb_config::LINUX_AARCH64_VIRT_NOGRAPHIC,
        "--kernel",
        &kernel,
    ];
    let (cli, mut out, err) = browser_boot(&args, &guests.x86_qcow2);
    out.wait_for(qemuweb_guests::AARCH64_BANNER, Duration::from_secs(180));
    out.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(30));
    type_then_close(cli, out, err, "info\n", "DISK SECTORS 8192");
}

/// Boot states: `boot --browser --save` keeps the VM's state beside the image when stdin
/// ends, the next `boot --browser` resumes it (no banner: the guest was not booted, and a
/// sector it wrote before the save reads back), `--cold` boots without it; a state that
/// belongs to another image (same format and sizes) or whose part is damaged is refused
/// with a typed error (the CLI's SHA-256 check; the page's `snapshot-corrupt`) and the VM
/// boots cold, saying so; `prepare --boot-state --boot-until PROMPT` publishes one in
/// `boot-state/` (manifest, parts, vm.json's `bootState`), and waiting for a prompt that
/// never comes is the time limit (124). Every run is under the test kit's watchdog. Needs
/// what `browser_boot_streams_the_serial_console_and_exits_by_the_input_or_the_time_limit`
/// does.
#[test]
#[ignore = "needs the web bundle and e2e/node_modules (run by scripts/test after the e2e step)"]
fn browser_boot_saves_and_resumes_its_state() {
    const I386: &str = qemuweb_config::LINUX_I386_PC_NOGRAPHIC;
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let image = &guests.x86_raw;
    let sector = |fill: &str| {
        let data = vec![u8::from_str_radix(fill, 16).unwrap(); 512];
        format!("SECTOR 8000 CRC32 {:08X}", crc32(&data))
    };
    let initial = {
        let mut s = vec![0u8; 512];
        s[..8].copy_from_slice(&8000u64.to_le_bytes());
        for (i, b) in s.iter_mut().enumerate().skip(8) {
            *b = ((i + 31 * 8000) & 0xff) as u8;
        }
        format!("SECTOR 8000 CRC32 {:08X}", crc32(&s))
    };
    let args = ["--profile", I386, "--memory", "64", "--timeout", "120"];
    let boot = |extra: &[&str], image: &std::path::Path| {
        let mut cmd = Command::new(QEMUWEB);
        cmd.args(["boot", "--browser"])
            .args(args)
            .args(extra)
            .arg(image);
        watch("qemuweb boot --browser", &mut cmd, Duration::from_secs(180))
    };
    let ends_cleanly = |mut run: Watched| {
        run.close_stdin();
        let done = run.finish();
        assert_eq!(done.status.code(), Some(0), "{}", done.stderr_text());
        done
    };
    // A cold boot: the banner, the prompt, then `command` answered by `reply`.
    let cold = |run: Watched, command: &str, reply: &str| {
        run.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(60));
        run.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(10));
        let mut run = run;
        run.send(command);
        run.wait_for(reply, Duration::from_secs(30));
        ends_cleanly(run)
    };

    // A cold boot that writes a sector and saves at the end of its input.
    cold(
        boot(&["--save"], image),
        "write 8000 AB\n",
        "WROTE SECTOR 8000 FILL AB",
    );
    let state_dir = qemuweb_cli::boot_state::state_dir_for(image);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("boot-state.json")).unwrap()).unwrap();
    assert_eq!(manifest["engine"], "v86");
    assert!(!manifest["parts"].as_array().unwrap().is_empty());

    // Resumed: no banner, and the write made before the save is there.
    let mut run = boot(&[], image);
    run.send("read 8000\n");
    run.wait_for(&sector("AB"), Duration::from_secs(60));
    let done = ends_cleanly(run);
    assert!(
        done.stderr_text().contains("resuming the state saved in"),
        "{}",
        done.stderr_text()
    );
    assert!(
        !done.stdout_text().contains(qemuweb_guests::X86_BANNER),
        "{}",
        done.stdout_text()
    );

    // Cold: the banner, and the image's own sector (the state's disk point is not used).
    cold(boot(&["--cold"], image), "read 8000\n", &initial);

    // The state beside another image of the same format and sizes: refused (its SHA-256),
    // and the other image boots cold.
    let other = tmp.path().join("other.raw");
    let mut bytes = std::fs::read(image).unwrap();
    bytes[8000 * 512 + 100] ^= 0xff;
    std::fs::write(&other, bytes).unwrap();
    let other_state = qemuweb_cli::boot_state::state_dir_for(&other);
    std::fs::create_dir_all(&other_state).unwrap();
    for entry in std::fs::read_dir(&state_dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), other_state.join(entry.file_name())).unwrap();
    }
    let done = cold(boot(&[], &other), "info\n", "DISK SECTORS 8192");
    let said = done.stderr_text();
    assert!(
        said.contains("cannot be resumed") && said.contains("booting cold"),
        "{said}"
    );
    assert!(said.contains("was saved for the image"), "{said}");

    // A damaged part: the page refuses it (snapshot-corrupt) and boots cold.
    let part = state_dir.join("state.000");
    let mut bytes = std::fs::read(&part).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&part, bytes).unwrap();
    let done = cold(boot(&[], image), "read 8000\n", &initial);
    let said = done.stderr_text();
    assert!(
        said.contains("the saved state cannot be resumed (snapshot-corrupt")
            && said.contains("booting cold"),
        "{said}"
    );

    // prepare --boot-state: the published state beside the prepared disk.
    let site = tmp.path().join("site");
    let mut cmd = Command::new(QEMUWEB);
    cmd.arg("prepare")
        .args([
            "--memory",
            "64",
            "--boot-state",
            "--boot-until",
            qemuweb_guests::PROMPT,
            "--boot-timeout",
            "120",
        ])
        .arg(image)
        .arg(&site);
    let o = watch("qemuweb prepare", &mut cmd, Duration::from_secs(180)).finish();
    assert!(o.status.success(), "{}", o.stderr_text());
    let vm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join("vm.json")).unwrap()).unwrap();
    assert_eq!(vm["bootState"], "boot-state/boot-state.json");
    let listed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join("manifest.json")).unwrap()).unwrap();
    let files: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"boot-state/boot-state.json"), "{files:?}");
    assert!(files.contains(&"boot-state/state.000"), "{files:?}");
    assert!(
        !files.iter().any(|f| f.contains("/.")),
        "no temporary files: {files:?}"
    );

    // A prompt that never comes: the time limit.
    let mut cmd = Command::new(QEMUWEB);
    cmd.arg("prepare")
        .args([
            "--boot-state",
            "--boot-until",
            "no such prompt",
            "--boot-timeout",
            "15",
        ])
        .arg(image)
        .arg(tmp.path().join("never"));
    let o = watch("qemuweb prepare", &mut cmd, Duration::from_secs(120)).finish();
    assert_eq!(o.status.code(), Some(124), "{}", o.stderr_text());
}

/// CRC-32 (zlib's), as the x86 guest's `read` prints it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
