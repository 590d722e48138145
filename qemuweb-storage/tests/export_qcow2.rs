//! Overlays exported as qcow2 are checked and converted by the real `qemu-img`.
#![cfg(not(target_arch = "wasm32"))]

use futures::executor::block_on;
use qemuweb_storage::export::qcow2::{export, BackingFile, Qcow2ExportOptions};
use qemuweb_storage::{BlockDevice, CowBlockDevice, FileBlockDevice, MemoryOverlay};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workdir(name: &str) -> PathBuf {
    let d = tempfile::Builder::new()
        .prefix(&format!("qemuweb-export-{name}-"))
        .tempdir()
        .unwrap()
        .keep();
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

/// A VM disk over the read-only file `base`, writes going to a memory overlay of `block`-byte
/// blocks.
fn cow_over(base: &Path, block: u32) -> CowBlockDevice {
    let base = FileBlockDevice::open(base, true).unwrap();
    CowBlockDevice::new(Box::new(base), Box::new(MemoryOverlay::new(block).unwrap())).unwrap()
}

/// Export options naming `base.raw` (raw) as the backing file.
fn over_base_raw(cluster_size: Option<u32>) -> Qcow2ExportOptions {
    Qcow2ExportOptions {
        backing: Some(BackingFile {
            name: "base.raw".into(),
            format: "raw".into(),
        }),
        cluster_size,
    }
}

/// Makes `ov` with the real qemu-img: a qcow2 overlay (`-o opts`) over `base.raw` beside it.
fn qemu_img_overlay(ov: &Path, opts: &str) {
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        opts,
        "-b",
        "base.raw",
        "-F",
        "raw",
        ov.to_str().unwrap(),
    ]);
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
        let disk = cow_over(&dir.join("base.raw"), block);
        write_pattern(&disk);
        let options = over_base_raw(cluster);
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
    let disk = cow_over(&dir.join("base.raw"), 4096);
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
    let disk = cow_over(&dir.join("base.raw"), 4096);
    let options = over_base_raw(None);
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

fn qemu_io(image: &Path, fmt: &str, cmd: &str) {
    let out = Command::new("qemu-io")
        .args(["-f", fmt, "-c", cmd, image.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "qemu-io {cmd}: {out:?}");
}

#[test]
fn overlays_written_by_qemu_io_import_exactly() {
    use qemuweb_storage::export::qcow2::import;
    for (tag, opts) in [
        ("plain", "cluster_size=65536"),
        ("small", "cluster_size=4096"),
        ("subclusters", "cluster_size=65536,extended_l2=on"),
    ] {
        let dir = workdir(&format!("import-{tag}"));
        let size = 6 << 20;
        std::fs::write(dir.join("base.raw"), noise(size, 11)).unwrap();
        let ov = dir.join("ov.qcow2");
        qemu_img_overlay(&ov, opts);
        // Data, zeros over data, an unaligned write, a compressed cluster, a subcluster-sized
        // write, and a write crossing into the last cluster.
        qemu_io(&ov, "qcow2", "write -P 0x5a 65536 131072");
        qemu_io(&ov, "qcow2", "write -z 98304 8192");
        qemu_io(&ov, "qcow2", "write -P 0x33 1000 3000");
        qemu_io(&ov, "qcow2", "write -c -P 0x77 2097152 65536");
        qemu_io(&ov, "qcow2", "write -P 0x44 4196352 2048");
        qemu_io(&ov, "qcow2", &format!("write -P 0x66 {} 4096", size - 4096));
        let disk = cow_over(&dir.join("base.raw"), 4096);
        let image = FileBlockDevice::open(&ov, true).unwrap();
        let summary = block_on(import(Box::new(image), &disk)).unwrap();
        assert!(
            summary.bytes > 0 && summary.ranges > 0,
            "{tag}: {summary:?}"
        );
        let expected = check_and_convert(&dir, "ov.qcow2");
        assert!(
            block_on(disk.read_vec(0, size)).unwrap() == expected,
            "{tag}"
        );
        // The base file is untouched.
        assert_eq!(
            std::fs::read(dir.join("base.raw")).unwrap(),
            noise(size, 11)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn our_export_imports_back() {
    use qemuweb_storage::export::qcow2::import;
    let dir = workdir("roundtrip");
    let size = (3 << 20) + 512;
    std::fs::write(dir.join("base.raw"), noise(size, 5)).unwrap();
    let src = cow_over(&dir.join("base.raw"), 4096);
    write_pattern(&src);
    let options = over_base_raw(Some(65536));
    export_to(&src, &options, &dir.join("ov.qcow2"));
    let dst = cow_over(&dir.join("base.raw"), 4096);
    let image = FileBlockDevice::open(dir.join("ov.qcow2"), true).unwrap();
    block_on(import(Box::new(image), &dst)).unwrap();
    assert!(block_on(dst.read_vec(0, size)).unwrap() == block_on(src.read_vec(0, size)).unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_overlays_are_refused_and_change_nothing() {
    use qemuweb_storage::export::qcow2::import;
    use qemuweb_storage::ErrorKind;
    let dir = workdir("bad-import");
    let size = 2 << 20;
    std::fs::write(dir.join("base.raw"), noise(size, 2)).unwrap();
    // Another size than the disk.
    let other = dir.join("other.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", other.to_str().unwrap(), "4M"]);
    let disk = cow_over(&dir.join("base.raw"), 4096);
    let e = block_on(import(
        Box::new(FileBlockDevice::open(&other, true).unwrap()),
        &disk,
    ))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // Data clusters, then the second one's L2 entry pointing past the end of the file.
    let ov = dir.join("ov.qcow2");
    qemu_img_overlay(&ov, "cluster_size=65536");
    qemu_io(&ov, "qcow2", "write -P 0x5a 0 131072");
    let mut bytes = std::fs::read(&ov).unwrap();
    let l1_offset = u64::from_be_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let l2_offset = (u64::from_be_bytes(bytes[l1_offset..l1_offset + 8].try_into().unwrap())
        & 0x00ff_ffff_ffff_fe00) as usize;
    bytes[l2_offset + 8..l2_offset + 16].copy_from_slice(&((1u64 << 40) | (1 << 63)).to_be_bytes());
    let e = block_on(import(
        Box::new(qemuweb_storage::MemoryBlockDevice::read_only(bytes)),
        &disk,
    ))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(
        disk.overlay().block_indices().is_empty(),
        "nothing was written"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The same export and import on a file-backed overlay, across reopening the file.
#[test]
fn file_backed_overlays_export_and_import_across_reopen() {
    use qemuweb_storage::export::{compact, qcow2::import};
    use qemuweb_storage::FileOverlay;
    let dir = workdir("file-overlay");
    let size = (4 << 20) + 1024;
    std::fs::write(dir.join("base.raw"), noise(size, 21)).unwrap();
    let over_file = |name: &str, create: bool| {
        let base = FileBlockDevice::open(dir.join("base.raw"), true).unwrap();
        let path = dir.join(name);
        let overlay = if create {
            FileOverlay::create(&path, 4096).unwrap()
        } else {
            FileOverlay::open(&path).unwrap()
        };
        CowBlockDevice::new(Box::new(base), Box::new(overlay)).unwrap()
    };
    let disk = over_file("vm.ovl", true);
    write_pattern(&disk);
    block_on(disk.sync()).unwrap();
    let guest = block_on(disk.read_vec(0, size)).unwrap();
    drop(disk);

    // Reopened from its file, the disk is the same, and exports as qcow2 for qemu-img.
    let disk = over_file("vm.ovl", false);
    assert!(block_on(disk.read_vec(0, size)).unwrap() == guest);
    export_to(&disk, &over_base_raw(None), &dir.join("ov.qcow2"));
    assert!(check_and_convert(&dir, "ov.qcow2") == guest);

    // Compact archive into a second file overlay, and the qcow2 into a third.
    let mut archive = Vec::new();
    block_on(compact::export(&disk, &mut archive)).unwrap();
    let copy = over_file("copy.ovl", true);
    block_on(compact::import(&archive, &copy)).unwrap();
    let from_qcow2 = over_file("from-qcow2.ovl", true);
    let image = FileBlockDevice::open(dir.join("ov.qcow2"), true).unwrap();
    block_on(import(Box::new(image), &from_qcow2)).unwrap();
    for (name, d) in [("copy.ovl", copy), ("from-qcow2.ovl", from_qcow2)] {
        block_on(d.sync()).unwrap();
        drop(d);
        let again = over_file(name, false);
        assert!(
            block_on(again.read_vec(0, size)).unwrap() == guest,
            "{name}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
