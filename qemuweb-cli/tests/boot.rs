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

/// Boot states, on one engine: `qemuweb boot --browser` with the same arguments each time,
/// and the x86 guest's sector 8000 (`write 8000 AB` changes it).
struct StateRuns {
    /// The arguments of every `boot --browser` (engine, profile, memory, time limit).
    args: Vec<String>,
}

impl StateRuns {
    fn boot(&self, extra: &[&str], image: &std::path::Path) -> Watched {
        let mut cmd = Command::new(QEMUWEB);
        cmd.args(["boot", "--browser"])
            .args(&self.args)
            .args(extra)
            .arg(image);
        watch("qemuweb boot --browser", &mut cmd, Duration::from_secs(300))
    }

    fn ends_cleanly(mut run: Watched) -> qemuweb_testkit::watchdog::Finished {
        run.close_stdin();
        let done = run.finish();
        assert_eq!(done.status.code(), Some(0), "{}", done.stderr_text());
        done
    }

    /// A cold boot: the banner, the prompt, then `command` answered by `reply`.
    fn cold(run: Watched, command: &str, reply: &str) -> qemuweb_testkit::watchdog::Finished {
        let mut run = run;
        run.wait_for(qemuweb_guests::X86_BANNER, Duration::from_secs(180));
        run.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(30));
        run.send(command);
        run.wait_for(reply, Duration::from_secs(30));
        Self::ends_cleanly(run)
    }

    /// A resumed run of `image`: no banner (the guest was not booted), the stderr says
    /// so, and `command` is answered by `reply`.
    fn resumed(&self, image: &std::path::Path, command: &str, reply: &str) {
        let mut run = self.boot(&[], image);
        run.send(command);
        run.wait_for(reply, Duration::from_secs(120));
        let done = Self::ends_cleanly(run);
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
    }

    /// `--save` after a cold boot that writes sector 8000, a resume (the write is there),
    /// `--cold` (the image's own sector). Returns the state's directory.
    fn save_resume_cold(&self, image: &std::path::Path, engine: &str) -> std::path::PathBuf {
        Self::cold(
            self.boot(&["--save"], image),
            "write 8000 AB\n",
            "WROTE SECTOR 8000 FILL AB",
        );
        let state_dir = qemuweb_cli::boot_state::state_dir_for(image);
        let manifest = json(&state_dir.join("boot-state.json"));
        assert_eq!(manifest["engine"], engine);
        assert!(!manifest["parts"].as_array().unwrap().is_empty());
        // Resumed: no banner, and the write made before the save is there.
        self.resumed(image, "read 8000\n", &sector(0xab));
        // Cold: the banner, and the image's own sector (the state's disk point is not used).
        Self::cold(
            self.boot(&["--cold"], image),
            "read 8000\n",
            &initial_sector(),
        );
        state_dir
    }
}

/// The x86 guest's `read 8000` answer for a sector filled with `fill`.
fn sector(fill: u8) -> String {
    format!("SECTOR 8000 CRC32 {:08X}", crc32(&[fill; 512]))
}

/// The x86 guest's `read 8000` answer for the image's own sector 8000.
fn initial_sector() -> String {
    let mut s = vec![0u8; 512];
    s[..8].copy_from_slice(&8000u64.to_le_bytes());
    for (i, b) in s.iter_mut().enumerate().skip(8) {
        *b = ((i + 31 * 8000) & 0xff) as u8;
    }
    format!("SECTOR 8000 CRC32 {:08X}", crc32(&s))
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `qemuweb prepare ARGS --boot-state --boot-until PROMPT IMAGE SITE`: the published
/// state in `boot-state/` (manifest, parts, vm.json's `bootState`, no temporary files).
/// Returns vm.json.
fn prepare_with_boot_state(
    args: &[&str],
    image: &std::path::Path,
    site: &std::path::Path,
) -> serde_json::Value {
    let mut cmd = Command::new(QEMUWEB);
    cmd.arg("prepare")
        .args(args)
        .args([
            "--boot-state",
            "--boot-until",
            qemuweb_guests::PROMPT,
            "--boot-timeout",
            "240",
        ])
        .arg(image)
        .arg(site);
    let o = watch("qemuweb prepare", &mut cmd, Duration::from_secs(300)).finish();
    assert!(o.status.success(), "{}", o.stderr_text());
    let vm = json(&site.join("vm.json"));
    assert_eq!(vm["bootState"], "boot-state/boot-state.json");
    let listed = json(&site.join("manifest.json"));
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
    vm
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
/// does. The QEMU engine's case is
/// `browser_boot_on_the_qemu_engine_saves_resumes_and_publishes_its_state`.
#[test]
#[ignore = "needs the web bundle and e2e/node_modules (run by scripts/test after the e2e step)"]
fn browser_boot_saves_and_resumes_its_state() {
    const I386: &str = qemuweb_config::LINUX_I386_PC_NOGRAPHIC;
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let image = &guests.x86_raw;
    let runs = StateRuns {
        args: ["--profile", I386, "--memory", "64", "--timeout", "120"]
            .map(String::from)
            .to_vec(),
    };
    let state_dir = runs.save_resume_cold(image, "v86");

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
    let done = StateRuns::cold(runs.boot(&[], &other), "info\n", "DISK SECTORS 8192");
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
    let done = StateRuns::cold(runs.boot(&[], image), "read 8000\n", &initial_sector());
    let said = done.stderr_text();
    assert!(
        said.contains("the saved state cannot be resumed (snapshot-corrupt")
            && said.contains("booting cold"),
        "{said}"
    );

    // prepare --boot-state: the published state beside the prepared disk.
    let vm = prepare_with_boot_state(&["--memory", "64"], image, &tmp.path().join("site"));
    assert_eq!(vm.get("engine"), None, "v86 is the default: {vm}");

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

/// Boot states on the QEMU engine (the x86 guest on the x86_64 profile, its modules from
/// `$QEMUWEB_QEMU_DIR`), with the same commands and files as v86
/// (`browser_boot_saves_and_resumes_its_state`, whose engine-independent checks are not
/// repeated): `boot --browser --engine qemu --save`, a resume, `--cold`; then
/// `prepare --engine qemu --boot-state` publishes the prepared disk's state, which
/// `boot --browser` of the site's disk resumes at the prompt in a fresh browser profile
/// (the published, zstd-compressed state, decoded and `snapshot-load`ed), and which a v86
/// page refuses before fetching its parts (`snapshot-mismatch`, the engine), booting cold.
/// Skipped by scripts/test with `browser_boot_on_the_qemu_engine` when there is no build.
#[test]
#[ignore = "needs the web bundle and a QEMU-in-wasm build (run by scripts/test after the e2e step)"]
fn browser_boot_on_the_qemu_engine_saves_resumes_and_publishes_its_state() {
    const X86_64: &str = qemuweb_config::LINUX_X86_64_PC_NOGRAPHIC;
    let dir = std::env::var_os("QEMUWEB_QEMU_DIR").map(std::path::PathBuf::from);
    assert!(
        dir.as_ref()
            .is_some_and(|d| d.join("qemu-system-x86_64.wasm").is_file()),
        "QEMUWEB_QEMU_DIR={dir:?} has no wasm64 QEMU build (build it: scripts/build-qemu)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let image = &guests.x86_raw;
    let qemu = ["--engine", "qemu", "--profile", X86_64, "--memory", "64"];
    let runs = StateRuns {
        args: qemu
            .iter()
            .chain(&["--timeout", "240"])
            .map(|s| s.to_string())
            .collect(),
    };
    runs.save_resume_cold(image, "qemu");

    // The published state of a prepared disk, saved on QEMU.
    let site = tmp.path().join("site");
    let vm = prepare_with_boot_state(&qemu, image, &site);
    assert_eq!(vm["engine"], "qemu");
    let published = json(&site.join("boot-state/boot-state.json"));
    assert_eq!(published["engine"], "qemu");
    let disk = site.join("disk.qcow2");
    // Resumed from the site's state (a fresh browser profile, as every run's).
    runs.resumed(&disk, "echo resumed\n", "resumed\r\n");

    // A v86 page refuses the QEMU state (the engine the manifest names) and boots cold.
    let v86 = StateRuns {
        args: [
            "--profile",
            qemuweb_config::LINUX_I386_PC_NOGRAPHIC,
            "--memory",
            "64",
            "--timeout",
            "120",
        ]
        .map(String::from)
        .to_vec(),
    };
    let done = StateRuns::cold(v86.boot(&[], &disk), "info\n", "DISK SECTORS");
    let said = done.stderr_text();
    assert!(
        said.contains("the saved state cannot be resumed (snapshot-mismatch")
            && said.contains("engine")
            && said.contains("booting cold"),
        "{said}"
    );
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
