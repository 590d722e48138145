//! Hostile images against the host tools: a qcow2 that names a host file as its backing
//! file (an absolute path, a relative name, a `json:` filename) or as its external data
//! file is refused by `prepare`, `boot` and `emulator start`, and no byte of that file
//! reaches any output: not the published files, not the guest's console, not QEMU's open
//! files. With `--backing-dir DIR` a chain of plain relative names inside DIR works.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use qemuweb_testkit::watchdog::{watch, Finished};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Every line of the host file carries this, so any piece of it is recognisable.
const MARKER: &[u8] = b"HOST-SECRET";
/// The sector the guest reads: past the guest's own (allocated) first cluster, so in a
/// hostile image it reads through to the backing file.
const PROBE_LBA: u64 = 200;

/// The secret host file: 1 MiB of numbered lines, each with [`MARKER`].
fn write_secret(path: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    let mut n = 0;
    while data.len() < 1 << 20 {
        data.extend_from_slice(format!("HOST-SECRET line {n:08}\n").as_bytes());
        n += 1;
    }
    data.truncate(1 << 20);
    std::fs::write(path, &data).unwrap();
    data
}

fn qemu_img(args: &[&str]) {
    run(Command::new("qemu-img").args(args));
}

/// The hostile images of one directory.
struct Hostile {
    dir: PathBuf,
    secret: Vec<u8>,
    /// (what, image): each names the secret file in its own way.
    images: Vec<(&'static str, PathBuf)>,
}

/// A qcow2 holding the x86 guest's code in its first cluster (the rest unallocated),
/// then one image per way of naming `secret.bin`.
fn hostile(dir: &Path) -> Hostile {
    std::fs::create_dir_all(dir).unwrap();
    let secret_path = dir.join("secret.bin");
    let secret = write_secret(&secret_path);
    let secret_abs = secret_path.to_str().unwrap().to_string();
    let mut code = qemuweb_guests::x86_bios_disk();
    for b in &mut code[qemuweb_guests::X86_DATA_START_LBA as usize * 512..] {
        *b = 0;
    }
    let code_raw = dir.join("code.raw");
    std::fs::write(&code_raw, &code).unwrap();
    let mut images = Vec::new();
    let json =
        format!(r#"json:{{"driver":"raw","file":{{"driver":"file","filename":"{secret_abs}"}}}}"#);
    for (what, name, backing) in [
        (
            "an absolute backing path",
            "evil-abs.qcow2",
            secret_abs.clone(),
        ),
        (
            "a relative backing name",
            "evil-rel.qcow2",
            "secret.bin".to_string(),
        ),
        ("a json: backing filename", "evil-json.qcow2", json),
    ] {
        let image = dir.join(name);
        qemu_img(&[
            "convert",
            "-q",
            "-O",
            "qcow2",
            code_raw.to_str().unwrap(),
            image.to_str().unwrap(),
        ]);
        qemu_img(&[
            "rebase",
            "-q",
            "-u",
            "-F",
            "raw",
            "-b",
            &backing,
            image.to_str().unwrap(),
        ]);
        images.push((what, image));
    }
    // An external data file: made with a same-length stand-in name (qemu-img create would
    // truncate the real file), then the name patched to the secret's.
    let image = dir.join("evil-data.qcow2");
    let stand_in = dir.join("secreX.bin");
    let opts = format!("data_file={},data_file_raw=on", stand_in.display());
    let name = image.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", &opts, name, "1M"]);
    let mut bytes = std::fs::read(&image).unwrap();
    let at = bytes
        .windows(b"secreX.bin".len())
        .position(|w| w == b"secreX.bin")
        .expect("the data file name in the header");
    bytes[at..at + 10].copy_from_slice(b"secret.bin");
    std::fs::write(&image, bytes).unwrap();
    std::fs::remove_file(&stand_in).unwrap();
    images.push(("an external data file", image));
    Hostile {
        dir: dir.to_path_buf(),
        secret,
        images,
    }
}

/// A real chain in `dir`: `base.qcow2` (the x86 guest) under `top.qcow2`, which names it
/// by that relative name and holds sector 100 filled with 0x5a. Returns the top.
fn guest_chain(dir: &Path) -> PathBuf {
    let guests = qemuweb_guests::write_guest_images(dir, None).unwrap();
    std::fs::rename(&guests.x86_qcow2, dir.join("base.qcow2")).unwrap();
    let top = dir.join("top.qcow2");
    let top_name = top.to_str().unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "base.qcow2",
        top_name,
    ]);
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 51200 512"])
        .arg(&top));
    top
}

/// Whether `haystack` holds any piece of the secret: the marker, or 64 bytes in a row of
/// it anywhere.
fn leaks(haystack: &[u8], secret: &[u8]) -> bool {
    if haystack.windows(MARKER.len()).any(|w| w == MARKER) {
        return true;
    }
    haystack.len() >= 64
        && secret
            .chunks(4096)
            .any(|piece| haystack.windows(64).any(|w| w == &piece[..64]))
}

fn qemuweb(name: &str, args: &[&str], limit: Duration) -> Finished {
    let mut cmd = Command::new(QEMUWEB);
    cmd.args(args);
    let mut w = watch(name, &mut cmd, limit);
    w.close_stdin();
    w.finish()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Asserts that nothing under `out` holds a piece of the secret, as bytes or (for disk
/// images) as guest-visible bytes.
fn assert_no_leak(out: &Path, secret: &[u8], what: &str) {
    for f in files_under(out) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !leaks(&bytes, secret),
            "{what}: {} holds the host file's bytes",
            f.display()
        );
        let name = f.file_name().unwrap().to_string_lossy();
        if name.starts_with("disk.") {
            let format = if name.ends_with(".qcow2") {
                "qcow2"
            } else {
                "raw"
            };
            // Our own output: its format is known, and -f keeps qemu-img from probing.
            let raw = out.join("guest-view.raw");
            run(Command::new("qemu-img")
                .args(["convert", "-q", "-f", format, "-O", "raw"])
                .arg(&f)
                .arg(&raw));
            let view = std::fs::read(&raw).unwrap();
            std::fs::remove_file(&raw).unwrap();
            assert!(
                !leaks(&view, secret),
                "{what}: the guest-visible bytes of {} hold the host file",
                f.display()
            );
        }
    }
}

fn assert_refused(done: &Finished, what: &str) {
    let err = done.stderr_text();
    assert!(
        !done.status.success(),
        "{what}: accepted (status {:?}); stderr: {err}",
        done.status
    );
    assert!(
        err.contains("backing file") || err.contains("data file"),
        "{what}: refused for another reason: {err}"
    );
    assert!(
        !leaks(&done.stdout, &[]) && !leaks(&done.stderr, &[]),
        "{what}: the output names the secret"
    );
}

#[test]
fn prepare_refuses_images_that_name_host_files_and_publishes_nothing_of_them() {
    let tmp = tempfile::tempdir().unwrap();
    let h = hostile(&tmp.path().join("in"));
    for (i, (what, image)) in h.images.iter().enumerate() {
        for extra in [&[][..], &["--no-compress"], &["--format", "raw"]] {
            let out = tmp.path().join(format!("out-{i}-{}", extra.len()));
            let mut args = vec!["prepare", image.to_str().unwrap(), out.to_str().unwrap()];
            args.extend(extra);
            let done = qemuweb("qemuweb prepare", &args, Duration::from_secs(120));
            assert_no_leak(
                &out,
                &h.secret,
                &format!("prepare of an image with {what} {extra:?}"),
            );
            assert_refused(&done, &format!("prepare of an image with {what} {extra:?}"));
            assert!(!leaks(&done.stdout, &h.secret) && !leaks(&done.stderr, &h.secret));
        }
    }
}

#[test]
fn backing_dir_allows_plain_names_inside_it_only() {
    let tmp = tempfile::tempdir().unwrap();
    let h = hostile(&tmp.path().join("in"));
    // The directory holds the secret: an absolute path or a json: name into it is still
    // refused (only plain relative names are), and a relative name is resolved in it.
    for (what, image) in &h.images {
        if *what == "a relative backing name" {
            continue;
        }
        let out = tmp.path().join("out");
        let done = qemuweb(
            "qemuweb prepare --backing-dir",
            &[
                "prepare",
                "--backing-dir",
                h.dir.to_str().unwrap(),
                image.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
            Duration::from_secs(120),
        );
        assert_no_leak(&out, &h.secret, &format!("prepare --backing-dir of {what}"));
        assert_refused(&done, &format!("prepare --backing-dir of {what}"));
        let _ = std::fs::remove_dir_all(&out);
    }

    let chain = tmp.path().join("chain");
    let top = guest_chain(&chain);
    let want = qemu_img_raw(&top, tmp.path());
    assert_eq!(want[100 * 512], 0x5a);

    // Without --backing-dir: refused, though the file lies beside the image.
    let out = tmp.path().join("chain-out");
    let done = qemuweb(
        "qemuweb prepare",
        &["prepare", top.to_str().unwrap(), out.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert_refused(&done, "prepare of a chain without --backing-dir");
    let _ = std::fs::remove_dir_all(&out);

    let done = qemuweb(
        "qemuweb prepare --backing-dir",
        &[
            "prepare",
            "--backing-dir",
            chain.to_str().unwrap(),
            top.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert!(done.status.success(), "{}", done.stderr_text());
    let got = qemu_img_raw(&out.join("disk.qcow2"), tmp.path());
    assert!(
        got == want,
        "the prepared disk is not the chain's guest-visible bytes"
    );
}

/// `qemuweb boot` of a hostile image: refused before QEMU starts. Should QEMU start (as it
/// did before the gate), the guest reads a sector from the backing file and the test
/// fails with what the guest saw.
#[test]
fn boot_refuses_images_that_name_host_files() {
    let tmp = tempfile::tempdir().unwrap();
    let h = hostile(&tmp.path().join("in"));
    let probe = &h.secret[PROBE_LBA as usize * 512..(PROBE_LBA as usize + 1) * 512];
    let leaked_reply = qemuweb_guests::read_reply(PROBE_LBA, probe);
    for (what, image) in &h.images {
        let mut cmd = Command::new(QEMUWEB);
        cmd.args(["boot", "--accel", "tcg", "--timeout", "60", "--profile"])
            .arg(qemuweb_config::LINUX_I386_PC_NOGRAPHIC)
            .arg(image);
        let mut cli = watch("qemuweb boot", &mut cmd, Duration::from_secs(90));
        match cli.wait_exit(Duration::from_secs(20)) {
            Some(status) => {
                let (out, err) = (cli.stdout_text(), cli.stderr_text());
                assert!(!status.success(), "{what}: {status:?}");
                assert!(!err.contains("(pid "), "{what}: QEMU was started: {err}");
                assert!(
                    err.contains("backing file") || err.contains("data file"),
                    "{what}: refused for another reason: {err}"
                );
                assert!(!leaks(out.as_bytes(), &h.secret) && !leaks(err.as_bytes(), &h.secret));
            }
            None => {
                // It booted: show what the guest can read of the host file.
                cli.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(30));
                cli.send(&format!("read {PROBE_LBA}\r"));
                let out =
                    cli.wait_for_line(&format!("SECTOR {PROBE_LBA} "), Duration::from_secs(10));
                panic!(
                    "{what}: QEMU booted the image; the guest read sector {PROBE_LBA} from the \
                     host file (the host file's sector gives {leaked_reply:?}): {out:?}"
                );
            }
        }
    }
}

/// With `--backing-dir` the chain boots, and the guest sees the top image's sector.
#[test]
fn boot_follows_a_chain_inside_the_backing_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let top = guest_chain(tmp.path());
    let mut cmd = Command::new(QEMUWEB);
    cmd.args([
        "boot",
        "--accel",
        "tcg",
        "--timeout",
        "60",
        "--snapshot",
        "--backing-dir",
    ])
    .arg(tmp.path())
    .arg("--profile")
    .arg(qemuweb_config::LINUX_I386_PC_NOGRAPHIC)
    .arg(&top);
    let mut cli = watch(
        "qemuweb boot --backing-dir",
        &mut cmd,
        Duration::from_secs(90),
    );
    cli.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(45));
    cli.send("read 100\r");
    cli.wait_for(
        &qemuweb_guests::read_reply(100, &[0x5a; 512]),
        Duration::from_secs(10),
    );
    let err = cli.stderr_text();
    assert!(
        err.contains(r#"\"backing\": null"#) || err.contains(r#""backing":null"#),
        "{err}"
    );
}

/// Whether process `pid` has `file` open.
fn has_open(pid: u32, file: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == file))
}

#[test]
fn emulator_start_refuses_images_that_name_host_files() {
    let tmp = tempfile::tempdir().unwrap();
    let h = hostile(&tmp.path().join("in"));
    let secret = h.dir.join("secret.bin").canonicalize().unwrap();
    for (i, (what, image)) in h.images.iter().enumerate() {
        let state = tmp.path().join(format!("state-{i}"));
        let emu = |args: &[&str]| {
            let mut full = vec!["emulator", "--state-dir", state.to_str().unwrap()];
            full.extend(args);
            qemuweb("qemuweb emulator", &full, Duration::from_secs(60))
        };
        let done = emu(&[
            "start",
            "--accel",
            "tcg",
            "--memory",
            "64",
            "--image",
            image.to_str().unwrap(),
        ]);
        if done.status.success() {
            let pid: Option<u32> = std::fs::read_to_string(state.join("qemu.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok());
            let open = pid.is_some_and(|p| has_open(p, &secret));
            let log = std::fs::read(state.join("serial.log")).unwrap_or_default();
            emu(&["stop", "--grace", "0"]);
            panic!(
                "{what}: the emulator started (QEMU pid {pid:?}; it has the host file open: \
                 {open}; serial log leaks: {})",
                leaks(&log, &h.secret)
            );
        }
        assert_refused(&done, &format!("emulator start of an image with {what}"));
        assert!(!state.join("qemu.pid").exists());
        assert_no_leak(&state, &h.secret, &format!("emulator start of {what}"));
    }
}

/// The emulator over a chain inside `--backing-dir`: it boots, the directory is remembered
/// for later starts and for `reset`.
#[test]
fn emulator_runs_a_chain_inside_the_backing_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = tmp.path().join("chain");
    let top = guest_chain(&chain);
    let state = tmp.path().join("state");
    let emu = |args: &[&str]| {
        let mut full = vec!["emulator", "--state-dir", state.to_str().unwrap()];
        full.extend(args);
        qemuweb("qemuweb emulator", &full, Duration::from_secs(60))
    };
    let banner = || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(state.join("serial.log"))
            .unwrap_or_default()
            .contains(qemuweb_guests::X86_BANNER)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no banner in serial.log"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let start = [
        "start",
        "--accel",
        "tcg",
        "--memory",
        "64",
        "--profile",
        qemuweb_config::LINUX_I386_PC_NOGRAPHIC,
    ];
    let mut first = start.to_vec();
    first.extend([
        "--backing-dir",
        chain.to_str().unwrap(),
        "--image",
        top.to_str().unwrap(),
    ]);
    let done = emu(&first);
    assert!(done.status.success(), "{}", done.stderr_text());
    banner();
    assert!(emu(&["stop", "--grace", "0"]).status.success());
    // The second start and the reset find the directory in emulator.json.
    std::fs::remove_file(state.join("serial.log")).unwrap();
    let done = emu(&start);
    assert!(done.status.success(), "{}", done.stderr_text());
    banner();
    assert!(emu(&["stop", "--grace", "0"]).status.success());
    let done = emu(&["reset"]);
    assert!(done.status.success(), "{}", done.stderr_text());
}
