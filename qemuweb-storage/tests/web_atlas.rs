//! The Atlas store over the real IndexedDB of headless Chromium.
#![cfg(target_arch = "wasm32")]

use qemuweb_storage::atlas::*;
use qemuweb_storage::{BlockDevice, ErrorKind};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A database name no other test (or earlier run) uses.
fn fresh_db(tag: &str) -> String {
    format!(
        "qemuweb-atlas-test-{tag}-{}",
        (js_sys::Math::random() * 1e12) as u64
    )
}

fn bytes(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn open(name: &str, chunk: u64) -> AtlasStore<IndexedDbAtlasBackend> {
    AtlasStore::new(IndexedDbAtlasBackend::open(name).await.unwrap())
        .with_chunk_size(chunk)
        .unwrap()
}

async fn drop_db(store: AtlasStore<IndexedDbAtlasBackend>) {
    let name = store.backend().database_name().to_owned();
    store.backend().close();
    IndexedDbAtlasBackend::delete_database(&name).await.unwrap();
}

/// Every blob and record, for before/after comparisons.
async fn everything(b: &IndexedDbAtlasBackend) -> (Vec<(String, Vec<u8>)>, Vec<(String, String)>) {
    let mut blobs = Vec::new();
    for h in b.list_blobs().await.unwrap() {
        blobs.push((h.to_string(), b.get_blob(&h).await.unwrap().unwrap()));
    }
    blobs.sort();
    let mut records = Vec::new();
    for t in RecordTable::ALL {
        for k in b.list_records(t).await.unwrap() {
            let v = b.get_record(t, &k).await.unwrap().unwrap();
            records.push((format!("{}/{k}", t.name()), v));
        }
    }
    records.sort();
    (blobs, records)
}

#[wasm_bindgen_test]
async fn dedups_persists_across_connections_and_serves_a_device() {
    let name = fresh_db("dedup");
    let shared = bytes(1, 4096);
    let a = [
        shared.clone(),
        bytes(2, 4096),
        shared.clone(),
        bytes(3, 100),
    ]
    .concat();
    let b = [shared.clone(), bytes(4, 4096)].concat();
    {
        let store = open(&name, 4096).await;
        let fa = store
            .store_file(
                "a.img",
                &a,
                StoreOptions::new(ManifestType::Raw, FileOrigin::Downloaded).tag("boot"),
            )
            .await
            .unwrap();
        assert_eq!(fa.size, a.len() as u64);
        // shared, a2, a4: the repeated chunk once.
        assert_eq!(store.blob_count().await.unwrap(), 3);
        store
            .store_file("b.img", &b, StoreOptions::default())
            .await
            .unwrap();
        assert_eq!(store.blob_count().await.unwrap(), 4);
        store.backend().close();
    }
    // A new connection sees everything.
    let store = open(&name, 4096).await;
    assert_eq!(store.blob_count().await.unwrap(), 4);
    assert_eq!(store.read_file("a.img").await.unwrap(), a);
    assert_eq!(store.read_file("b.img").await.unwrap(), b);
    let listed: Vec<String> = store
        .list_files(&FileFilter {
            tags: vec!["boot".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(listed, ["a.img"]);
    let dev = store.open_device("a.img").await.unwrap();
    assert_eq!(dev.size(), a.len() as u64);
    assert_eq!(dev.read_vec(4000, 5000).await.unwrap(), &a[4000..9000]);
    assert_eq!(
        dev.read_vec(a.len() as u64 - 50, 50).await.unwrap(),
        &a[a.len() - 50..]
    );
    assert_eq!(
        dev.write_at(0, b"x").await.unwrap_err().kind(),
        ErrorKind::ReadOnly
    );
    assert!(store.delete_file("b.img").await.unwrap());
    assert_eq!(store.gc().await.unwrap(), 1);
    assert_eq!(store.blob_count().await.unwrap(), 3);
    assert_eq!(
        store.read_file("b.img").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    drop_db(store).await;
}

#[wasm_bindgen_test]
async fn four_mib_chunks_round_trip() {
    let name = fresh_db("big");
    let store = AtlasStore::new(IndexedDbAtlasBackend::open(&name).await.unwrap());
    assert_eq!(store.chunk_size(), 4 * 1024 * 1024);
    let data = bytes(9, 9 * 1024 * 1024 + 7);
    let meta = store
        .store_file(
            "big.qcow2",
            &data,
            StoreOptions::new(ManifestType::Qcow2, FileOrigin::Uploaded),
        )
        .await
        .unwrap();
    let m = store.get_manifest(&meta.manifest_hash).await.unwrap();
    assert_eq!(m.chunks.len(), 3);
    assert_eq!(store.blob_count().await.unwrap(), 3);
    let report = store.verify_file("big.qcow2").await.unwrap();
    assert_eq!(report.bytes, data.len() as u64);
    let dev = store.open_device("big.qcow2").await.unwrap();
    let off = 4 * 1024 * 1024 - 10;
    assert_eq!(
        dev.read_vec(off as u64, 20).await.unwrap(),
        &data[off..off + 20]
    );
    drop_db(store).await;
}

#[wasm_bindgen_test]
async fn tampered_blobs_and_records_fail_with_integrity() {
    let name = fresh_db("tamper");
    let store = open(&name, 1024).await;
    let data = bytes(5, 3000);
    store
        .store_file("f", &data, StoreOptions::default())
        .await
        .unwrap();
    let m = store.file_manifest("f").await.unwrap();
    let dev = store.open_device("f").await.unwrap();
    assert_eq!(dev.read_vec(0, 10).await.unwrap(), &data[..10]);

    let mut bad = data[1024..2048].to_vec();
    bad[3] ^= 0x80;
    store
        .backend()
        .put_blob(&m.chunks[1].hash, &bad)
        .await
        .unwrap();
    assert_eq!(
        store.read_file("f").await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
    assert_eq!(
        store.verify_file("f").await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
    assert_eq!(
        dev.read_vec(1500, 10).await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
    assert_eq!(dev.read_vec(0, 10).await.unwrap(), &data[..10]);
    store
        .backend()
        .delete_blob(&m.chunks[1].hash)
        .await
        .unwrap();
    assert_eq!(
        dev.read_vec(1500, 10).await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
    // Storing the content again repairs it.
    store
        .store_file("f", &data, StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(dev.read_vec(1500, 10).await.unwrap(), &data[1500..1510]);

    let key = store
        .file("f")
        .await
        .unwrap()
        .unwrap()
        .manifest_hash
        .to_string();
    store
        .backend()
        .put_record(RecordTable::Manifests, &key, "{\"version\":1}")
        .await
        .unwrap();
    assert_eq!(
        store.read_file("f").await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
    drop_db(store).await;
}

#[wasm_bindgen_test]
async fn bundles_import_whole_or_not_at_all() {
    // Made in memory, imported into IndexedDB.
    let src = AtlasStore::new(MemoryAtlasBackend::new())
        .with_chunk_size(512)
        .unwrap();
    let data = bytes(7, 2000);
    let meta = src
        .store_file(
            "img",
            &data,
            StoreOptions::new(ManifestType::Raw, FileOrigin::Built),
        )
        .await
        .unwrap();
    src.add_provenance(ProvenanceRecord::new(
        "root",
        meta.manifest_hash,
        ProvenanceType::Build,
        Actor::Build,
    ))
    .await
    .unwrap();
    src.add_provenance(
        ProvenanceRecord::new(
            "tip",
            meta.manifest_hash,
            ProvenanceType::Modify,
            Actor::User,
        )
        .with_parent("root"),
    )
    .await
    .unwrap();
    let mut o = StoreOptions::new(ManifestType::Raw, FileOrigin::Built);
    o.provenance_id = Some("tip".into());
    src.store_file("img", &data, o).await.unwrap();
    let bundle = src.export_bundle(&["img"]).await.unwrap();

    let name = fresh_db("bundle");
    let dst = open(&name, 512).await;
    dst.store_file("own", b"own data", StoreOptions::default())
        .await
        .unwrap();
    let before = everything(dst.backend()).await;
    for at in [
        3usize,
        30,
        60,
        bundle.len() / 2,
        bundle.len() - 20,
        bundle.len() - 1,
    ] {
        let mut bad = bundle.clone();
        bad[at] ^= 1;
        let e = dst.import_bundle(&bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{at}: {e}");
    }
    let e = dst
        .import_bundle(&bundle[..bundle.len() - 100])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert_eq!(
        everything(dst.backend()).await,
        before,
        "a rejected bundle changed the store"
    );

    let r = dst.import_bundle(&bundle).await.unwrap();
    assert_eq!(r.new_blobs, 4);
    assert_eq!(r.new_provenance, 2);
    assert_eq!(dst.read_file("img").await.unwrap(), data);
    let chain: Vec<String> = dst
        .provenance_chain("tip")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(chain, ["tip", "root"]);
    assert_eq!(dst.export_bundle(&["img"]).await.unwrap(), bundle);
    drop_db(dst).await;
}

#[wasm_bindgen_test]
async fn backend_contract() {
    let name = fresh_db("contract");
    let b = IndexedDbAtlasBackend::open(&name).await.unwrap();
    let h = ContentHash::of(b"blob");
    assert!(!b.has_blob(&h).await.unwrap());
    assert!(b.get_blob(&h).await.unwrap().is_none());
    b.delete_blob(&h).await.unwrap();
    b.put_blob(&h, b"blob").await.unwrap();
    assert!(b.has_blob(&h).await.unwrap());
    assert_eq!(b.list_blobs().await.unwrap(), [h]);
    for t in RecordTable::ALL {
        assert!(b.list_records(t).await.unwrap().is_empty());
        b.put_record(t, "k1", "{\"a\":1}").await.unwrap();
        b.put_record(t, "k2", "\"x\"").await.unwrap();
        b.put_record(t, "k1", "{\"a\":2}").await.unwrap();
        assert_eq!(
            b.get_record(t, "k1").await.unwrap().as_deref(),
            Some("{\"a\":2}")
        );
        let mut keys = b.list_records(t).await.unwrap();
        keys.sort();
        assert_eq!(keys, ["k1", "k2"]);
        b.delete_record(t, "k2").await.unwrap();
        b.delete_record(t, "missing").await.unwrap();
        assert!(b.get_record(t, "k2").await.unwrap().is_none());
    }
    b.delete_blob(&h).await.unwrap();
    assert!(b.list_blobs().await.unwrap().is_empty());
    // Clones share the connection; after close, operations fail with a typed error.
    let clone = b.clone();
    b.close();
    assert_eq!(
        clone.has_blob(&h).await.unwrap_err().kind(),
        ErrorKind::Browser
    );
    IndexedDbAtlasBackend::delete_database(&name).await.unwrap();
    // Deleted: a new open starts empty.
    let again = IndexedDbAtlasBackend::open(&name).await.unwrap();
    assert!(again.list_blobs().await.unwrap().is_empty());
    again.close();
    IndexedDbAtlasBackend::delete_database(&name).await.unwrap();
}

fn blob_of_parts(parts: &[Vec<u8>]) -> web_sys::Blob {
    let array = js_sys::Array::new();
    for p in parts {
        array.push(&js_sys::Uint8Array::from(p.as_slice()));
    }
    web_sys::Blob::new_with_u8_array_sequence(&array).unwrap()
}

#[wasm_bindgen_test]
async fn a_bundle_streams_into_a_blob_and_back_from_it() {
    let name = fresh_db("blob-src");
    let src = open(&name, 4096).await;
    let data = bytes(8, 20_000);
    src.store_file(
        "disk.raw",
        &data,
        StoreOptions::new(ManifestType::Raw, FileOrigin::Uploaded),
    )
    .await
    .unwrap();
    // Export piece by piece into a browser Blob, as a page saving a download would.
    let mut parts = Vec::new();
    let len = src
        .export_bundle_to(&["disk.raw"], &mut |p| {
            parts.push(p.to_vec());
            Ok(())
        })
        .await
        .unwrap();
    let blob = blob_of_parts(&parts);
    assert_eq!(blob.size() as u64, len);
    drop_db(src).await;

    let name = fresh_db("blob-dst");
    let dst = open(&name, 4096).await;
    let before = everything(dst.backend()).await;
    // A damaged copy of the Blob is rejected whole.
    let mut damaged = parts.concat();
    let at = damaged.len() - 5000;
    damaged[at] ^= 0x10;
    let bad = qemuweb_storage::BlobBlockDevice::new(blob_of_parts(&[damaged]));
    let e = dst.import_bundle_from(&bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(everything(dst.backend()).await, before);
    // The real one imports, and the stored file boots as a device.
    let good = qemuweb_storage::BlobBlockDevice::new(blob);
    let r = dst.import_bundle_from(&good).await.unwrap();
    assert_eq!(r.new_blobs, 5);
    let dev = dst.open_device("disk.raw").await.unwrap();
    assert_eq!(
        dev.read_vec(12_000, 3000).await.unwrap(),
        &data[12_000..15_000]
    );
    drop_db(dst).await;
}

#[wasm_bindgen_test]
async fn deleting_the_database_elsewhere_closes_this_connection() {
    let name = fresh_db("versionchange");
    let store = open(&name, 1024).await;
    store
        .store_file("f", b"data", StoreOptions::default())
        .await
        .unwrap();
    // Not closed first: the open connection gives way instead of blocking the deletion.
    IndexedDbAtlasBackend::delete_database(&name).await.unwrap();
    let e = store.read_file("f").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Browser, "{e}");
    let again = open(&name, 1024).await;
    assert!(again
        .list_files(&FileFilter::default())
        .await
        .unwrap()
        .is_empty());
    drop_db(again).await;
}
