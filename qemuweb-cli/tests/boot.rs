//! `qemuweb boot` run for real on the x86 test guest (TCG: the nested KVM here is slow):
//! the banner and an echo come through the CLI's stdout, Ctrl-C exits cleanly, and no
//! QEMU outlives the CLI.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use qemuweb_testkit::watchdog::{watch, Watched};
use std::process::Command;
use std::time::{Duration, Instant};

/// The most one `qemuweb boot` may run, enforced from outside it.
const LIMIT: Duration = Duration::from_secs(120);

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

/// `qemuweb boot ARGS` under the watchdog, in a process group of its own (as a shell
/// starts it from a terminal).
fn boot(args: &[&str], image: Option<&std::path::Path>) -> Watched {
    let mut cmd = Command::new(QEMUWEB);
    cmd.arg("boot").args(args);
    if let Some(image) = image {
        cmd.arg(image);
    }
    watch("qemuweb boot", &mut cmd, LIMIT)
}

fn start(image: &std::path::Path, extra: &[&str]) -> Watched {
    let mut args = vec!["--accel", "tcg", "--timeout", "60"];
    args.extend(extra);
    boot(&args, Some(image))
}

#[test]
fn boots_the_guest_with_the_serial_console_on_stdio_and_exits_cleanly_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let mut cli = start(&guests.x86_qcow2, &[]);
    cli.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(30));
    let console = cli.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(10));
    assert!(console.starts_with(qemuweb_guests::X86_BANNER) || console.contains("\n"));
    let stderr = cli.wait_for_stderr_line("(pid ", Duration::from_secs(5));
    assert!(stderr.contains("-accel tcg"), "{stderr}");
    assert!(stderr.contains("-serial stdio"), "{stderr}");
    let qemu = qemu_pid(&stderr);
    assert!(alive(qemu));

    cli.send("echo through the cli\r");
    cli.wait_for("through the cli\r\n", Duration::from_secs(10));
    cli.send("info\r");
    cli.wait_for("DISK SECTORS 8192", Duration::from_secs(10));

    // Ctrl-C on a terminal: SIGINT to the whole process group.
    cli.signal(libc::SIGINT);
    let done = cli.finish();
    assert!(done.status.success(), "{:?}", done.status);
    wait_gone(qemu);
    let stderr = done.stderr_text();
    assert!(stderr.contains("terminating on signal 2"), "{stderr}");
}

#[test]
fn qemu_dies_with_the_cli_and_the_time_limit_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();

    // The CLI killed outright (not its group): QEMU goes too.
    let mut cli = start(&guests.x86_raw, &[]);
    cli.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(30));
    let qemu = qemu_pid(&cli.wait_for_stderr_line("(pid ", Duration::from_secs(5)));
    cli.kill_program();
    wait_gone(qemu);
    drop(cli);

    // The time limit: exit status 124, QEMU gone.
    let mut cli = boot(&["--accel", "tcg", "--timeout", "2"], Some(&guests.x86_raw));
    cli.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(30));
    let qemu = qemu_pid(&cli.wait_for_stderr_line("(pid ", Duration::from_secs(5)));
    // Its stdin stays open: only the time limit ends the run.
    let status = cli
        .wait_exit(Duration::from_secs(30))
        .expect("the time limit ended it");
    assert_eq!(status.code(), Some(124));
    wait_gone(qemu);
    assert!(cli.stderr_text().contains("time limit"));
}

#[test]
fn snapshot_discards_writes_and_plain_boot_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let lba = 100u64;
    for (extra, kept) in [(&["--snapshot"][..], false), (&[][..], true)] {
        let mut cli = start(&guests.x86_raw, extra);
        cli.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(30));
        cli.send(&format!("write {lba} AB\r"));
        cli.wait_for(
            &qemuweb_guests::write_reply(lba, 0xab),
            Duration::from_secs(10),
        );
        cli.signal(libc::SIGINT);
        assert!(cli.finish().status.success());
        let disk = std::fs::read(&guests.x86_raw).unwrap();
        let sector = &disk[lba as usize * 512..(lba as usize + 1) * 512];
        assert_eq!(sector.iter().all(|&b| b == 0xab), kept, "{extra:?}");
    }
}

#[test]
fn boots_the_aarch64_kernel_directly() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let kernel = guests.aarch64_kernel.to_str().unwrap();
    let mut cli = boot(
        &[
            "--accel",
            "tcg",
            "--timeout",
            "60",
            "--profile",
            qemuweb_config::LINUX_AARCH64_VIRT_NOGRAPHIC,
            "--kernel",
            kernel,
        ],
        None,
    );
    cli.wait_for(qemuweb_guests::AARCH64_BANNER, Duration::from_secs(30));
    let stderr = cli.wait_for_stderr_line("(pid ", Duration::from_secs(5));
    assert!(stderr.contains("qemu-system-aarch64"), "{stderr}");
    assert!(stderr.contains("-machine virt"), "{stderr}");
    let qemu = qemu_pid(&stderr);
    cli.send("echo arm64 says hi\r");
    cli.wait_for("arm64 says hi\r\n", Duration::from_secs(10));
    cli.signal(libc::SIGINT);
    assert!(cli.finish().status.success());
    wait_gone(qemu);
}

#[test]
fn refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let run = |args: &[&str]| {
        let mut cli = boot(args, None);
        cli.close_stdin();
        cli.finish()
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

/// `qemuweb boot --browser EXTRA IMAGE` under the watchdog (Chromium in its group).
fn browser_boot(extra: &[&str], image: &std::path::Path) -> Watched {
    let mut args = vec!["--browser"];
    args.extend(extra);
    let mut cmd = Command::new(QEMUWEB);
    cmd.arg("boot").args(args).arg(image);
    watch("qemuweb boot --browser", &mut cmd, Duration::from_secs(300))
}

/// Types `command`, waits for `reply`, then ends stdin: the run must end with status 0.
fn type_then_close(mut cli: Watched, command: &str, reply: &str) {
    cli.send(command);
    cli.wait_for(reply, Duration::from_secs(30));
    let done = cli.finish();
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr_text());
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
    let cli = browser_boot(&["--profile", I386, "--timeout", "120"], &guests.x86_qcow2);
    let pid = cli.id();
    cli.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(60));
    cli.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(10));
    assert!(chromium_of(pid) > 0, "Chromium runs on the CLI's profile");
    type_then_close(cli, "echo through the browser\n", "through the browser\r\n");
    assert_eq!(chromium_of(pid), 0, "no Chromium left running");

    // `prepare`'s output, served by `qemuweb serve`, boots from its URL (HTTP Range reads).
    let site = tmp.path().join("site");
    run(Command::new(QEMUWEB)
        .arg("prepare")
        .arg(&guests.x86_raw)
        .arg(&site));
    // The runner's page has an origin of its own: the server must let it read (CORS).
    let (_server, base) = serve(&site, &["--cors-any"]);
    let url = std::path::PathBuf::from(format!("{base}disk.qcow2"));
    let cli = browser_boot(&["--profile", I386, "--timeout", "120"], &url);
    cli.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(60));
    type_then_close(cli, "info\n", "DISK SECTORS 8192");

    // The time limit: 124 with the same message as a native boot (stdin stays open).
    let mut cli = browser_boot(&["--profile", I386, "--timeout", "5"], &guests.x86_qcow2);
    cli.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(60));
    let status = cli
        .wait_exit(Duration::from_secs(60))
        .expect("the time limit ended it");
    assert_eq!(status.code(), Some(124));
    assert!(cli.stderr_text().contains("time limit"));

    // A 64-bit profile needs the QEMU engine: refused before a browser starts.
    let done = browser_boot(
        &["--profile", qemuweb_config::LINUX_X86_64_PC_NOGRAPHIC],
        &guests.x86_raw,
    )
    .finish();
    assert_eq!(done.status.code(), Some(1));
    assert!(done.stderr_text().contains("QEMU engine"));
}

/// `qemuweb boot --browser --engine qemu` boots the x86 test guest on the x86_64 profile and
/// the aarch64 test kernel on the aarch64 profile on QEMU compiled to wasm64 (or the x86
/// guest on the i386 profile on the wasm32 build), its modules and firmware from
/// `$QEMUWEB_QEMU_DIR` (a `scripts/build-qemu` output). Without that build it fails
/// (scripts/test skips it by name, and says so, when the build failed). A directory
/// without a build is refused (2).
#[test]
#[ignore = "needs the web bundle and a QEMU-in-wasm build (run by scripts/test after the e2e step)"]
fn browser_boot_on_the_qemu_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    // A directory without a build: refused before a browser starts, naming the file.
    let dir = tmp.path().to_str().unwrap();
    let args = [
        "--engine",
        "qemu",
        "--qemu-dir",
        dir,
        "--profile",
        qemuweb_config::LINUX_X86_64_PC_NOGRAPHIC,
    ];
    let mut cli = browser_boot(&args, &guests.x86_qcow2);
    cli.close_stdin();
    let done = cli.finish();
    assert_eq!(done.status.code(), Some(2));
    assert!(done.stderr_text().contains("qemu-build.json is missing"));

    // The x86 test guest on the x86_64 profile (wasm64 build) or the i386 one (wasm32
    // build); the aarch64 kernel when the build has qemu-system-aarch64.
    let dir = std::env::var_os("QEMUWEB_QEMU_DIR").map(std::path::PathBuf::from);
    let has = |module: &str| dir.as_ref().is_some_and(|d| d.join(module).is_file());
    let x86 = if has("qemu-system-x86_64.wasm") {
        qemuweb_config::LINUX_X86_64_PC_NOGRAPHIC
    } else if has("qemu-system-i386.wasm") {
        qemuweb_config::LINUX_I386_PC_NOGRAPHIC
    } else {
        panic!("QEMUWEB_QEMU_DIR={dir:?} has no QEMU build (build it: scripts/build-qemu)");
    };
    // The module directory comes from the inherited $QEMUWEB_QEMU_DIR (no --qemu-dir).
    let args = ["--engine", "qemu", "--timeout", "240", "--profile", x86];
    let cli = browser_boot(&args, &guests.x86_qcow2);
    cli.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(180));
    cli.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(30));
    type_then_close(cli, "echo on qemu in wasm\n", "on qemu in wasm\r\n");
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
    let cli = browser_boot(&args, &guests.x86_qcow2);
    cli.wait_for(qemuweb_guests::AARCH64_BANNER, Duration::from_secs(180));
    cli.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(30));
    type_then_close(cli, "info\n", "DISK SECTORS 8192");
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
