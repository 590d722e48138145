//! Download once, boot offline: real qcow2 images made by qemu-img are fetched over HTTP
//! from the test server into an Atlas directory store, the server is stopped, and each
//! stored image opens through the qcow2 reader and reads byte for byte as its raw oracle.
//! A corrupted chunk then fails reads with `ErrorKind::Integrity`.
#![cfg(not(target_arch = "wasm32"))]

mod atlas_common;

use atlas_common::TempDir;
use futures::executor::block_on;
use qemuweb_storage::atlas::*;
use qemuweb_storage::format::{open_image, OpenOptions};
use qemuweb_storage::{BlockDevice, ErrorKind, HttpBlockDevice, HttpOptions};
use qemuweb_testkit::fixtures;
use qemuweb_testkit::server::TestServer;
use std::path::PathBuf;

const CHUNK: u64 = 64 * 1024;

async fn read_all(dev: &dyn BlockDevice) -> qemuweb_storage::Result<Vec<u8>> {
    let mut out = vec![0u8; dev.size() as usize];
    for (i, piece) in out.chunks_mut(32 * 1024).enumerate() {
        dev.read_at(i as u64 * 32 * 1024, piece).await?;
    }
    Ok(out)
}

#[test]
fn downloaded_qcow2_images_boot_from_atlas_offline() {
    let fixture_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("atlas-qcow2-fixtures");
    let _ = std::fs::remove_dir_all(&fixture_dir);
    let all = fixtures::generate_small(&fixture_dir)
        .expect("generating fixtures with qemu-img (is QEMU installed?)");
    let images: Vec<_> = all
        .iter()
        .filter(|f| f.format == "qcow2" && !f.needs_resolver)
        .collect();
    assert!(images.len() >= 3, "too few self-contained qcow2 fixtures");

    let dir = TempDir::new("qcow2");
    block_on(async {
        let store = AtlasStore::new(DirAtlasBackend::open(&dir.0).unwrap())
            .with_chunk_size(CHUNK)
            .unwrap();
        {
            let server = TestServer::start(&fixture_dir).unwrap();
            for f in &images {
                let file = f.image.file_name().unwrap().to_str().unwrap();
                let http = HttpBlockDevice::open(&server.url_for(file), HttpOptions::default())
                    .await
                    .unwrap();
                let meta = store
                    .store_device(
                        &f.name,
                        &http,
                        StoreOptions::new(ManifestType::Qcow2, FileOrigin::Downloaded),
                    )
                    .await
                    .unwrap();
                assert_eq!(meta.size, std::fs::metadata(&f.image).unwrap().len());
            }
        } // The server is gone from here on.

        for f in &images {
            let dev = store.open_device(&f.name).await.unwrap();
            let disk = open_image(Box::new(dev), &OpenOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", f.name));
            assert_eq!(disk.size(), f.virtual_size, "{}", f.name);
            let raw = std::fs::read(&f.raw).unwrap();
            assert!(
                read_all(disk.as_ref()).await.unwrap() == raw,
                "{} differs from its oracle",
                f.name
            );
        }

        // Corrupt one chunk (past the header) of every multi-chunk image: reading the whole
        // disk through the qcow2 reader now fails with an integrity error instead of
        // returning bad data.
        let mut corrupted = 0;
        for f in &images {
            let manifest = store.file_manifest(&f.name).await.unwrap();
            let Some(victim) = manifest.chunks.get(1) else {
                continue;
            };
            let path = store.backend().blob_path(&victim.hash);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[100] ^= 0x55;
            std::fs::write(&path, &bytes).unwrap();
            corrupted += 1;
            // The header chunk is intact, so the image still opens.
            let dev = store.open_device(&f.name).await.unwrap();
            let disk = open_image(Box::new(dev), &OpenOptions::default()).await;
            let e = match disk {
                Ok(disk) => read_all(disk.as_ref()).await.unwrap_err(),
                Err(e) => e,
            };
            assert_eq!(e.kind(), ErrorKind::Integrity, "{}: {e}", f.name);
            bytes[100] ^= 0x55;
            std::fs::write(&path, &bytes).unwrap();
        }
        assert!(corrupted >= 1, "no fixture spans two chunks");
        eprintln!(
            "atlas_qcow2: {} images verified, {corrupted} corrupted",
            images.len()
        );
    });
}
