//! `qemuweb prepare` run for real: the output is checked with `qemu-img` (`info`,
//! `compare`, `check`), read back byte-exact through our storage crate's qcow2 reader and
//! its Atlas store, and its manifest's SHA-256s recomputed.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use futures::executor::block_on;
use qemuweb_storage::atlas::{AtlasStore, DirAtlasBackend};
use qemuweb_storage::format::{open_image, OpenOptions};
use qemuweb_storage::{BlockDevice, FileBlockDevice};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

/// A 6 MiB raw disk: text (compresses well), pseudo-random bytes (does not), and zeros.
fn source(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let mut data = Vec::with_capacity(6 << 20);
    while data.len() < 2 << 20 {
        data.extend_from_slice(format!("line {} of a text file\n", data.len()).as_bytes());
    }
    data.truncate(2 << 20);
    let mut x = 0x9e37_79b9u32;
    for _ in 0..(2 << 20) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push(x as u8);
    }
    data.resize(6 << 20, 0);
    let path = dir.join("source.img");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn prepare(args: &[&str], image: &Path, out: &Path) -> std::process::Output {
    Command::new(QEMUWEB)
        .arg("prepare")
        .arg(image)
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn info(image: &Path) -> serde_json::Value {
    serde_json::from_slice(&run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(image)))
    .unwrap()
}

fn read_image(dev: Box<dyn BlockDevice>) -> Vec<u8> {
    block_on(async {
        let image = open_image(dev, &OpenOptions::default()).await.unwrap();
        image.read_vec(0, image.size() as usize).await.unwrap()
    })
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn compressed_qcow2_with_the_http_block_size_and_an_atlas_store() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = source(tmp.path());
    let out = tmp.path().join("site");
    let o = prepare(&["--atlas"], &src, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let disk = out.join("disk.qcow2");

    // qemu-img: a qcow2 with 64 KiB clusters, the same guest-visible bytes, consistent.
    let i = info(&disk);
    assert_eq!(i["format"], "qcow2");
    assert_eq!(i["cluster-size"], 65536);
    assert_eq!(i["virtual-size"], 6 << 20);
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&src)
        .arg(&disk));
    run(Command::new("qemu-img").arg("check").arg(&disk));
    // Compressed: the text and the zeros shrink, the random third does not.
    let size = std::fs::metadata(&disk).unwrap().len();
    assert!(size < 3 << 20, "{size} bytes");

    // Our qcow2 reader gives back every byte.
    let dev = FileBlockDevice::open(&disk, true).unwrap();
    assert!(read_image(Box::new(dev)) == data);

    // The Atlas store holds the qcow2 file byte-exact, and boots it as a device.
    let store = AtlasStore::new(DirAtlasBackend::open(out.join("atlas")).unwrap());
    let stored = block_on(store.read_file("disk.qcow2")).unwrap();
    assert!(stored == std::fs::read(&disk).unwrap());
    let dev = block_on(store.open_device("disk.qcow2")).unwrap();
    assert!(read_image(Box::new(dev)) == data);

    // manifest.json: sizes and SHA-256s of what is on disk, the Atlas manifest hash.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["image"]["clusterSize"], 65536);
    assert_eq!(manifest["image"]["virtualSize"], 6 << 20);
    assert_eq!(manifest["image"]["compressed"], true);
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    for f in files {
        let bytes = std::fs::read(out.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["size"], bytes.len());
        assert_eq!(f["sha256"], sha256(&bytes));
    }
    let meta = block_on(store.file("disk.qcow2")).unwrap().unwrap();
    assert_eq!(
        manifest["atlas"]["manifestHash"],
        meta.manifest_hash.to_string()
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(files[0]["sha256"].as_str().unwrap()),
        "{stdout}"
    );

    // vm.json names the disk relative to the page; _headers isolates the site.
    let vm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("vm.json")).unwrap()).unwrap();
    assert_eq!(vm["profile"]["id"], qemuweb_config::LINUX_I386_PC_NOGRAPHIC);
    assert_eq!(vm["inputs"]["disk"]["source"]["url"], "disk.qcow2");
    assert_eq!(vm["inputs"]["disk"]["format"], "qcow2");
    let headers = std::fs::read_to_string(out.join("_headers")).unwrap();
    assert!(headers.contains("Cross-Origin-Opener-Policy: same-origin"));
    assert!(headers.contains("Cross-Origin-Embedder-Policy: require-corp"));
}

#[test]
fn uncompressed_cluster_sizes_and_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, data) = source(tmp.path());

    let plain = tmp.path().join("plain");
    let o = prepare(&["--no-compress", "--cluster-size", "4K"], &src, &plain);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let disk = plain.join("disk.qcow2");
    assert_eq!(info(&disk)["cluster-size"], 4096);
    let dev = FileBlockDevice::open(&disk, true).unwrap();
    assert!(read_image(Box::new(dev)) == data);
    // Uncompressed, the text and random data are stored as they are.
    assert!(std::fs::metadata(&disk).unwrap().len() >= 4 << 20);

    let raw = tmp.path().join("raw");
    let o = prepare(&["--format", "raw", "--memory", "64"], &src, &raw);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(raw.join("disk.img")).unwrap() == data);
    let vm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(raw.join("vm.json")).unwrap()).unwrap();
    assert_eq!(vm["inputs"]["disk"]["format"], "raw");
    assert_eq!(vm["overrides"]["memoryMiB"], 64);
}

#[test]
fn refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, _) = source(tmp.path());
    let out = tmp.path().join("out");
    // A cluster size qcow2 cannot have; a missing image; an unknown profile.
    for args in [&["--cluster-size", "3000"][..], &["--cluster-size", "4M"]] {
        assert_eq!(prepare(args, &src, &out).status.code(), Some(2), "{args:?}");
    }
    assert_eq!(
        prepare(&[], &tmp.path().join("missing.img"), &out)
            .status
            .code(),
        Some(2)
    );
    // --app needs a built app (its index.html).
    let o = prepare(&["--app", tmp.path().to_str().unwrap()], &src, &out);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("index.html"));
    let o = prepare(&["--profile", "no-such-profile"], &src, &out);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-profile"));
    assert!(!o.status.success());
    // A non-empty directory is written into only with --force.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let o = prepare(&[], &src, &out);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
    assert!(!out.join("disk.qcow2").exists());
    assert!(prepare(&["--force"], &src, &out).status.success());
    assert!(out.join("disk.qcow2").exists() && out.join("keep.txt").exists());
}
