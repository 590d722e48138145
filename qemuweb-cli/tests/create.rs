//! `qemuweb create` run for real: the image is checked with `qemu-img info`, its files
//! read back with e2fsprogs' `debugfs`, and its bytes through the storage crate.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use futures::executor::block_on;
use qemuweb_storage::format::{open_image, OpenOptions};
use qemuweb_storage::{BlockDevice, FileBlockDevice};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tree() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello from the host\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i ^ (i >> 9)) as u8).collect();
    std::fs::write(dir.join("sub/deeper/big.bin"), &big).unwrap();
    std::fs::write(dir.join("sub/empty"), "").unwrap();
    std::os::unix::fs::symlink("../hello.txt", dir.join("sub/link")).unwrap();
    (tmp, dir, big)
}

fn create(args: &[&str], from: &Path, out: &Path) -> std::process::Output {
    Command::new(QEMUWEB)
        .arg("create")
        .arg("--from-dir")
        .arg(from)
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn debugfs(raw: &Path, request: &str) -> Vec<u8> {
    run(Command::new("debugfs").arg("-R").arg(request).arg(raw))
}

fn info(image: &Path) -> String {
    String::from_utf8(run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(image)))
    .unwrap()
}

/// Checks the files of `tree()` in the ext4 file system in `raw`.
fn check_files(raw: &Path, big: &[u8]) {
    assert_eq!(debugfs(raw, "cat /hello.txt"), b"hello from the host\n");
    assert!(debugfs(raw, "cat /sub/deeper/big.bin") == big);
    assert_eq!(debugfs(raw, "cat /sub/empty"), b"");
    let stat = String::from_utf8(debugfs(raw, "stat /sub/link")).unwrap();
    assert!(stat.contains("Type: symlink"), "{stat}");
    assert!(stat.contains("../hello.txt"), "{stat}");
    // The file system is clean.
    run(Command::new("e2fsck").args(["-f", "-n"]).arg(raw));
}

fn read_all(path: &Path) -> Vec<u8> {
    block_on(async {
        let dev = FileBlockDevice::open(path, true).unwrap();
        let image = open_image(Box::new(dev), &OpenOptions::default())
            .await
            .unwrap();
        image.read_vec(0, image.size() as usize).await.unwrap()
    })
}

#[test]
fn qcow2_from_a_directory() {
    let (tmp, dir, big) = tree();
    let out = tmp.path().join("data.qcow2");
    let o = create(&["--size", "64M", "--label", "QWDATA"], &dir, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("data.qcow2"));

    let info = info(&out);
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    assert!(info.contains("\"virtual-size\": 67108864"), "{info}");
    assert!(info.contains("\"cluster-size\": 65536"), "{info}");
    // Compressed: much smaller than its 3 MB of (poorly compressible) data plus metadata.
    let file_size = std::fs::metadata(&out).unwrap().len();
    assert!(file_size < 3_500_000, "{file_size}");

    let raw = qemu_img_raw(&out, tmp.path());
    assert_eq!(raw.len(), 64 << 20);
    let raw_path = tmp.path().join("check.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    check_files(&raw_path, &big);
    let label = run(Command::new("e2label").arg(&raw_path));
    assert_eq!(String::from_utf8(label).unwrap().trim(), "QWDATA");

    // The storage crate reads the same bytes as QEMU.
    assert!(read_all(&out) == raw);
    // No temporary files are left next to the output.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn raw_with_a_default_size() {
    let (tmp, dir, big) = tree();
    let out = tmp.path().join("data.img");
    let o = create(&["--format", "raw"], &dir, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info = info(&out);
    assert!(info.contains("\"format\": \"raw\""), "{info}");
    let size = std::fs::metadata(&out).unwrap().len();
    assert_eq!(size % (1 << 20), 0);
    assert!((32 << 20..=64 << 20).contains(&size), "{size}");
    check_files(&out, &big);
    assert!(read_all(&out) == std::fs::read(&out).unwrap());
}

#[test]
fn refusals_leave_nothing_behind() {
    let (tmp, dir, _) = tree();
    let out = tmp.path().join("small.qcow2");
    // Too small for 3 MB of files: mkfs.ext4 says so, and no file is left.
    let o = create(&["--size", "1M"], &dir, &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("mkfs.ext4"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["tree"], "{left:?}");

    // An existing output needs --force.
    std::fs::write(&out, "keep me").unwrap();
    let o = create(&["--size", "32M"], &dir, &out);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let o = create(&["--size", "32M", "--force"], &dir, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(info(&out).contains("qcow2"));

    // Bad sizes, labels and sources.
    assert_eq!(
        create(&["--size", "12Q"], &dir, &out).status.code(),
        Some(2)
    );
    let long = "x".repeat(17);
    let o = create(&["--label", &long, "--force"], &dir, &out);
    assert_eq!(o.status.code(), Some(2));
    let o = create(
        &[],
        &tmp.path().join("missing"),
        &tmp.path().join("m.qcow2"),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(!tmp.path().join("m.qcow2").exists());
}
