//! Atlas tamper detection on read: corrupted, truncated, swapped or missing blobs and
//! records in the directory backend fail with `ErrorKind::Integrity`, never return data.
#![cfg(not(target_arch = "wasm32"))]

mod atlas_common;

use atlas_common::{Rng, TempDir};
use futures::executor::block_on;
use qemuweb_storage::atlas::*;
use qemuweb_storage::{BlockDevice, ErrorKind};

const CHUNK: u64 = 4096;

async fn setup(dir: &TempDir) -> (AtlasStore<DirAtlasBackend>, Vec<u8>, FileManifest) {
    let store = AtlasStore::new(DirAtlasBackend::open(&dir.0).unwrap())
        .with_chunk_size(CHUNK)
        .unwrap();
    let data = Rng(11).bytes(3 * CHUNK as usize + 123);
    store
        .store_file(
            "disk.img",
            &data,
            StoreOptions::new(ManifestType::Raw, FileOrigin::Downloaded),
        )
        .await
        .unwrap();
    let manifest = store.file_manifest("disk.img").await.unwrap();
    assert_eq!(manifest.chunks.len(), 4);
    (store, data, manifest)
}

#[test]
fn a_flipped_bit_in_a_blob_file_fails_reads_and_verification() {
    block_on(async {
        let dir = TempDir::new("flip");
        let (store, data, manifest) = setup(&dir).await;
        let victim = &manifest.chunks[1];
        let path = store.backend().blob_path(&victim.hash);
        let dev = store.open_device("disk.img").await.unwrap();
        // Reading chunk 0 first works and is cached.
        assert_eq!(dev.read_vec(0, 100).await.unwrap(), &data[..100]);

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[17] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();

        let e = store.read_file("disk.img").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        assert!(e.to_string().contains(&victim.hash.to_string()), "{e}");
        assert_eq!(
            store.verify_file("disk.img").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        assert_eq!(
            store.get_blob(&victim.hash).await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        // The device fails exactly the reads that touch the bad chunk.
        let e = dev.read_vec(CHUNK + 5, 10).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        let e = dev.read_vec(CHUNK - 10, 20).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert_eq!(dev.read_vec(10, 10).await.unwrap(), &data[10..20]);
        let c2 = 2 * CHUNK as usize;
        assert_eq!(
            dev.read_vec(c2 as u64, 50).await.unwrap(),
            &data[c2..c2 + 50]
        );
        // A freshly opened device does too.
        let fresh = store.open_device("disk.img").await.unwrap();
        assert_eq!(
            fresh.read_vec(CHUNK, 1).await.unwrap_err().kind(),
            ErrorKind::Integrity
        );

        // Restoring the byte heals it: nothing bad was cached.
        bytes[17] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            dev.read_vec(CHUNK + 5, 10).await.unwrap(),
            &data[CHUNK as usize + 5..CHUNK as usize + 15]
        );
        assert_eq!(store.read_file("disk.img").await.unwrap(), data);
    });
}

#[test]
fn truncated_swapped_and_missing_blobs_are_integrity_errors() {
    block_on(async {
        let dir = TempDir::new("trunc");
        let (store, _data, manifest) = setup(&dir).await;
        let p0 = store.backend().blob_path(&manifest.chunks[0].hash);
        let p3 = store.backend().blob_path(&manifest.chunks[3].hash);
        let original0 = std::fs::read(&p0).unwrap();

        // Truncated.
        std::fs::write(&p0, &original0[..100]).unwrap();
        assert_eq!(
            store.read_file("disk.img").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        // Same length, other content: a blob swapped for another chunk's bytes.
        let mut swapped = std::fs::read(&p3).unwrap();
        swapped.resize(original0.len(), 0);
        std::fs::write(&p0, &swapped).unwrap();
        assert_eq!(
            store.read_file("disk.img").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        let dev = store.open_device("disk.img").await.unwrap();
        assert_eq!(
            dev.read_vec(0, 1).await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        // Missing.
        std::fs::remove_file(&p0).unwrap();
        let e = store.read_file("disk.img").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(e.to_string().contains("missing"), "{e}");
        assert_eq!(
            dev.read_vec(0, 1).await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        // Putting the original bytes back heals it.
        std::fs::write(&p0, &original0).unwrap();
        store.verify_file("disk.img").await.unwrap();
    });
}

#[test]
fn tampered_manifest_and_file_records_are_integrity_errors() {
    block_on(async {
        let dir = TempDir::new("records");
        let (store, _data, manifest) = setup(&dir).await;
        let backend = store.backend().clone();
        let meta = store.file("disk.img").await.unwrap().unwrap();
        let key = meta.manifest_hash.to_string();

        // A manifest edited to point one chunk elsewhere no longer matches its hash.
        let mut edited = manifest.clone();
        edited.chunks[0].hash = manifest.chunks[1].hash;
        let json = String::from_utf8(edited.to_json()).unwrap();
        backend
            .put_record(RecordTable::Manifests, &key, &json)
            .await
            .unwrap();
        let e = store.read_file("disk.img").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        assert_eq!(
            store.open_device("disk.img").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        // Garbage where the manifest was.
        backend
            .put_record(RecordTable::Manifests, &key, "]]")
            .await
            .unwrap();
        assert_eq!(
            store.read_file("disk.img").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        // Restore it; then break the file record instead.
        let good = String::from_utf8(manifest.to_json()).unwrap();
        backend
            .put_record(RecordTable::Manifests, &key, &good)
            .await
            .unwrap();
        store.verify_file("disk.img").await.unwrap();

        let mut lying = meta.clone();
        lying.size += 1;
        backend
            .put_record(
                RecordTable::Files,
                "disk.img",
                &serde_json::to_string(&lying).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            store.read_file("disk.img").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        let mut renamed = meta.clone();
        renamed.name = "other.img".into();
        backend
            .put_record(
                RecordTable::Files,
                "disk.img",
                &serde_json::to_string(&renamed).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            store.file("disk.img").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        backend
            .put_record(RecordTable::Files, "disk.img", "{}")
            .await
            .unwrap();
        assert_eq!(
            store
                .list_files(&FileFilter::default())
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Integrity
        );

        // The directory backend's record envelope is checked too.
        let files_dir = dir.0.join("files");
        let entry = std::fs::read_dir(&files_dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        std::fs::write(entry.path(), b"not an envelope").unwrap();
        assert_eq!(
            store.file("disk.img").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
    });
}

#[test]
fn a_corrupted_blob_in_the_memory_backend_is_caught_too() {
    block_on(async {
        let backend = MemoryAtlasBackend::new();
        let store = AtlasStore::new(backend.clone()).with_chunk_size(8).unwrap();
        store
            .store_file("f", b"0123456789abcdef", StoreOptions::default())
            .await
            .unwrap();
        let m = store.file_manifest("f").await.unwrap();
        backend
            .put_blob(&m.chunks[1].hash, b"89abcdeF")
            .await
            .unwrap();
        assert_eq!(
            store.read_file("f").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        let dev = store.open_device("f").await.unwrap();
        assert_eq!(dev.read_vec(0, 8).await.unwrap(), b"01234567");
        assert_eq!(
            dev.read_vec(7, 2).await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
    });
}
