//! Overlays exported as qcow2 are checked and converted by the real `qemu-img`.
#![cfg(not(target_arch = "wasm32"))]

use futures::executor::block_on;
use qemuweb_storage::export::qcow2::{export, BackingFile, Qcow2ExportOptions};
use qemuweb_storage::{BlockDevice, CowBlockDevice, FileBlockDevice, MemoryOverlay};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qemuweb-export-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img must be installed (scripts/setup installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "qemu-img {args:?} failed: {text}");
    text
}

/// Deterministic bytes that are not all zero.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// A VM disk over `base` with a spread of writes: aligned, unaligned, crossing cluster
/// and L2-table boundaries, and touching the partial last block.
fn write_pattern(disk: &CowBlockDevice) {
    block_on(async {
        let size = disk.size();
        let writes: [(u64, usize); 6] = [
            (0, 512),
            (4096 * 3 + 17, 9000),
            (1 << 20, 4096),
            ((2 << 20) - 100, 300),
            (size / 2 + 1, 70_000),
            (size - 700, 700),
        ];
        for (i, (off, len)) in writes.into_iter().enumerate() {
            disk.write_at(off, &noise(len, i as u64 + 99))
                .await
                .unwrap();
        }
    })
}

fn export_to(disk: &CowBlockDevice, options: &Qcow2ExportOptions, path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    block_on(export(disk, options, &mut f))
        .unwrap()
        .data_clusters
}

fn check_and_convert(dir: &Path, image: &str) -> Vec<u8> {
    let path = dir.join(image);
    let report = qemu_img(&["check", path.to_str().unwrap()]);
    assert!(report.contains("No errors were found"), "{report}");
    let raw = dir.join("converted.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        path.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    std::fs::read(raw).unwrap()
}

#[test]
fn overlay_over_a_raw_base_converts_to_what_the_guest_saw() {
    for (cluster, block) in [
        (None, 4096u32),
        (Some(65536), 4096),
        (Some(4096), 512),
        (None, 131072),
    ] {
        let dir = workdir(&format!("raw-{cluster:?}-{block}"));
        // An odd size: the last cluster is partial.
        let size = (5 << 20) + 1536;
        std::fs::write(dir.join("base.raw"), noise(size, 7)).unwrap();
        let base = FileBlockDevice::open(dir.join("base.raw"), true).unwrap();
        let disk =
            CowBlockDevice::new(Box::new(base), Box::new(MemoryOverlay::new(block).unwrap()))
                .unwrap();
        write_pattern(&disk);
        let options = Qcow2ExportOptions {
            backing: Some(BackingFile {
                name: "base.raw".into(),
                format: "raw".into(),
            }),
            cluster_size: cluster,
        };
        let n = export_to(&disk, &options, &dir.join("overlay.qcow2"));
        assert!(n > 0);
        let info = qemu_img(&["info", dir.join("overlay.qcow2").to_str().unwrap()]);
        assert!(info.contains("backing file: base.raw"), "{info}");
        assert!(info.contains("backing file format: raw"), "{info}");
        let guest = block_on(disk.read_vec(0, size)).unwrap();
        assert!(
            check_and_convert(&dir, "overlay.qcow2") == guest,
            "cluster {cluster:?} block {block}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn standalone_export_holds_the_whole_disk_and_skips_zero_clusters() {
    let dir = workdir("standalone");
    let size = 3 << 20;
    let mut base_bytes = vec![0u8; size];
    base_bytes[100_000..200_000].copy_from_slice(&noise(100_000, 3));
    std::fs::write(dir.join("base.raw"), &base_bytes).unwrap();
    let base = FileBlockDevice::open(dir.join("base.raw"), true).unwrap();
    let disk =
        CowBlockDevice::new(Box::new(base), Box::new(MemoryOverlay::new(4096).unwrap())).unwrap();
    write_pattern(&disk);
    let n = export_to(
        &disk,
        &Qcow2ExportOptions::default(),
        &dir.join("full.qcow2"),
    );
    // Far fewer clusters than the disk has: the zero ones are left out.
    assert!(n < (size / 4096) as u64 / 4, "{n} clusters");
    let guest = block_on(disk.read_vec(0, size)).unwrap();
    assert!(check_and_convert(&dir, "full.qcow2") == guest);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unchanged_disk_exports_an_empty_overlay() {
    let dir = workdir("empty");
    std::fs::write(dir.join("base.raw"), noise(1 << 20, 1)).unwrap();
    let base = FileBlockDevice::open(dir.join("base.raw"), true).unwrap();
    let disk =
        CowBlockDevice::new(Box::new(base), Box::new(MemoryOverlay::new(4096).unwrap())).unwrap();
    let options = Qcow2ExportOptions {
        backing: Some(BackingFile {
            name: "base.raw".into(),
            format: "raw".into(),
        }),
        cluster_size: None,
    };
    assert_eq!(export_to(&disk, &options, &dir.join("o.qcow2")), 0);
    assert_eq!(check_and_convert(&dir, "o.qcow2"), noise(1 << 20, 1));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_options_are_refused() {
    let disk = CowBlockDevice::new(
        Box::new(qemuweb_storage::MemoryBlockDevice::new(1 << 16)),
        Box::new(MemoryOverlay::new(4096).unwrap()),
    )
    .unwrap();
    for options in [
        Qcow2ExportOptions {
            backing: None,
            cluster_size: Some(2048),
        },
        Qcow2ExportOptions {
            backing: None,
            cluster_size: Some(3 << 20),
        },
        Qcow2ExportOptions {
            backing: Some(BackingFile {
                name: "x".repeat(1024),
                format: "raw".into(),
            }),
            cluster_size: None,
        },
    ] {
        let e = block_on(export(&disk, &options, &mut Vec::new())).unwrap_err();
        assert_eq!(
            e.kind(),
            qemuweb_storage::ErrorKind::InvalidArgument,
            "{options:?}"
        );
    }
}
