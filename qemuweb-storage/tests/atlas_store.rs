//! Atlas store: chunking, deduplication, manifests, listing, devices, gc — over the
//! memory and directory backends alike.
#![cfg(not(target_arch = "wasm32"))]

mod atlas_common;

use atlas_common::{Rng, TempDir};
use futures::executor::block_on;
use qemuweb_storage::atlas::*;
use qemuweb_storage::{BlockDevice, ErrorKind, MemoryBlockDevice};

/// Runs `f` against a memory-backed and a directory-backed store.
fn both(chunk: u64, f: impl Fn(&dyn Fn() -> StoreKind)) {
    f(&|| {
        StoreKind::Memory(
            AtlasStore::new(MemoryAtlasBackend::new())
                .with_chunk_size(chunk)
                .unwrap(),
        )
    });
    let dir = TempDir::new("store");
    let n = std::cell::Cell::new(0);
    f(&|| {
        n.set(n.get() + 1);
        let root = dir.0.join(n.get().to_string());
        StoreKind::Dir(
            AtlasStore::new(DirAtlasBackend::open(root).unwrap())
                .with_chunk_size(chunk)
                .unwrap(),
        )
    });
}

enum StoreKind {
    Memory(AtlasStore<MemoryAtlasBackend>),
    Dir(AtlasStore<DirAtlasBackend>),
}

macro_rules! with_store {
    ($kind:expr, |$s:ident| $body:expr) => {
        match $kind {
            StoreKind::Memory($s) => $body,
            StoreKind::Dir($s) => $body,
        }
    };
}

#[test]
fn shared_chunks_are_stored_once() {
    both(1024, |new: &dyn Fn() -> StoreKind| {
        with_store!(new(), |store| block_on(async {
            let mut rng = Rng(1);
            let shared = rng.bytes(1024);
            let a_tail = rng.bytes(1024);
            let b_tail = rng.bytes(700);
            let a = [shared.clone(), a_tail.clone(), shared.clone()].concat();
            let b = [shared.clone(), b_tail.clone()].concat();
            store
                .store_file("a", &a, StoreOptions::default())
                .await
                .unwrap();
            // a = shared, a_tail, shared: two distinct chunks.
            assert_eq!(store.blob_count().await.unwrap(), 2);
            store
                .store_file("b", &b, StoreOptions::default())
                .await
                .unwrap();
            // b adds only b_tail.
            assert_eq!(store.blob_count().await.unwrap(), 3);
            // Storing the same content again under a new name adds no blob.
            store
                .store_file("a-copy", &a, StoreOptions::default())
                .await
                .unwrap();
            assert_eq!(store.blob_count().await.unwrap(), 3);
            let ma = store.file("a").await.unwrap().unwrap();
            let mc = store.file("a-copy").await.unwrap().unwrap();
            assert_eq!(ma.manifest_hash, mc.manifest_hash);
            assert_eq!(store.read_file("a").await.unwrap(), a);
            assert_eq!(store.read_file("b").await.unwrap(), b);
            let m = store.get_manifest(&ma.manifest_hash).await.unwrap();
            assert_eq!(m.chunks.len(), 3);
            assert_eq!(m.chunks[0].hash, m.chunks[2].hash);
            assert_eq!(m.chunks[0].hash, ContentHash::of(&shared));
        }))
    });
}

#[test]
fn chunking_edges_round_trip() {
    both(1000, |new: &dyn Fn() -> StoreKind| {
        with_store!(new(), |store| block_on(async {
            let mut rng = Rng(2);
            for len in [0usize, 1, 999, 1000, 1001, 2000, 3456] {
                let data = rng.bytes(len);
                let name = format!("f{len}");
                let meta = store
                    .store_file(&name, &data, StoreOptions::default())
                    .await
                    .unwrap();
                assert_eq!(meta.size, len as u64);
                let m = store.get_manifest(&meta.manifest_hash).await.unwrap();
                assert_eq!(m.chunks.len(), len.div_ceil(1000));
                assert!(m.chunks.iter().all(|c| c.size <= 1000 && c.size > 0));
                assert_eq!(store.read_file(&name).await.unwrap(), data);
                let report = store.verify_file(&name).await.unwrap();
                assert_eq!(report.bytes, len as u64);
                assert_eq!(report.chunks, m.chunks.len());
            }
        }))
    });
}

#[test]
fn default_chunk_size_is_four_mib() {
    block_on(async {
        let store = AtlasStore::new(MemoryAtlasBackend::new());
        assert_eq!(store.chunk_size(), 4 * 1024 * 1024);
        let data = vec![7u8; 4 * 1024 * 1024 + 5];
        let meta = store
            .store_file("big", &data, StoreOptions::default())
            .await
            .unwrap();
        let m = store.get_manifest(&meta.manifest_hash).await.unwrap();
        let sizes: Vec<u64> = m.chunks.iter().map(|c| c.size).collect();
        assert_eq!(sizes, [4 * 1024 * 1024, 5]);
        assert!(AtlasStore::new(MemoryAtlasBackend::new())
            .with_chunk_size(0)
            .is_err());
        assert!(AtlasStore::new(MemoryAtlasBackend::new())
            .with_chunk_size(MAX_CHUNK_SIZE + 1)
            .is_err());
    });
}

#[test]
fn metadata_filters_and_replacement() {
    both(64, |new: &dyn Fn() -> StoreKind| {
        with_store!(new(), |store| block_on(async {
            let qcow = StoreOptions::new(ManifestType::Qcow2, FileOrigin::Downloaded).tag("boot");
            let mut kernel = StoreOptions::new(ManifestType::Kernel, FileOrigin::Built)
                .tag("boot")
                .tag("x86");
            kernel.mime_type = Some("application/octet-stream".into());
            kernel.shared_with_assistant = true;
            store
                .store_file("img/alpine.qcow2", b"QFI\xfbdata", qcow)
                .await
                .unwrap();
            let k = store
                .store_file("kernels/bzImage", b"kernel", kernel)
                .await
                .unwrap();
            assert_eq!(k.file_type, ManifestType::Kernel);
            assert_eq!(k.mime_type.as_deref(), Some("application/octet-stream"));
            assert!(k.shared_with_assistant);
            store
                .store_file("notes.txt", b"hi", StoreOptions::default())
                .await
                .unwrap();

            let names = |v: Vec<FileMetadata>| v.into_iter().map(|f| f.name).collect::<Vec<_>>();
            assert_eq!(
                names(store.list_files(&FileFilter::default()).await.unwrap()),
                ["img/alpine.qcow2", "kernels/bzImage", "notes.txt"]
            );
            let f = FileFilter {
                tags: vec!["boot".into()],
                ..Default::default()
            };
            assert_eq!(
                names(store.list_files(&f).await.unwrap()),
                ["img/alpine.qcow2", "kernels/bzImage"]
            );
            let f = FileFilter {
                tags: vec!["boot".into(), "x86".into()],
                ..Default::default()
            };
            assert_eq!(
                names(store.list_files(&f).await.unwrap()),
                ["kernels/bzImage"]
            );
            let f = FileFilter {
                file_type: Some(ManifestType::Qcow2),
                ..Default::default()
            };
            assert_eq!(
                names(store.list_files(&f).await.unwrap()),
                ["img/alpine.qcow2"]
            );
            let f = FileFilter {
                origin: Some(FileOrigin::Uploaded),
                ..Default::default()
            };
            assert_eq!(names(store.list_files(&f).await.unwrap()), ["notes.txt"]);
            let f = FileFilter {
                name_prefix: Some("kernels/".into()),
                ..Default::default()
            };
            assert_eq!(
                names(store.list_files(&f).await.unwrap()),
                ["kernels/bzImage"]
            );

            // Storing under an existing name replaces the file.
            store
                .store_file("notes.txt", b"changed", StoreOptions::default())
                .await
                .unwrap();
            assert_eq!(store.read_file("notes.txt").await.unwrap(), b"changed");
            assert_eq!(
                store
                    .list_files(&FileFilter::default())
                    .await
                    .unwrap()
                    .len(),
                3
            );

            // register_file gives an existing manifest a second name.
            let again = store
                .register_file(
                    "alias",
                    &k.manifest_hash,
                    StoreOptions::new(ManifestType::Other, FileOrigin::Derived),
                )
                .await
                .unwrap();
            assert_eq!(
                again.file_type,
                ManifestType::Kernel,
                "type comes from the manifest"
            );
            assert_eq!(store.read_file("alias").await.unwrap(), b"kernel");

            // Missing things.
            assert_eq!(
                store.read_file("nope").await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
            assert!(store.file("nope").await.unwrap().is_none());
            let missing = ContentHash::of(b"no such manifest");
            let e = store
                .register_file("x", &missing, StoreOptions::default())
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound);
            let o = StoreOptions {
                provenance_id: Some("no-such-record".into()),
                ..StoreOptions::default()
            };
            let e = store.store_file("y", b"y", o).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound);
            assert!(store.file("y").await.unwrap().is_none());
        }))
    });
}

#[test]
fn bad_names_are_refused() {
    block_on(async {
        let store = AtlasStore::new(MemoryAtlasBackend::new());
        for bad in ["", "a\nb", "tab\there", &"x".repeat(MAX_NAME_LEN + 1)] {
            let e = store
                .store_file(bad, b"x", StoreOptions::default())
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        let e = store
            .store_file("ok", b"x", StoreOptions::default().tag("bad\u{7}tag"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        // Names that would be dangerous as paths are fine: the dir backend hashes keys.
        let dir = TempDir::new("names");
        let dstore = AtlasStore::new(DirAtlasBackend::open(&dir.0).unwrap());
        for odd in ["../../etc/passwd", "/abs", "a/b/c", "con", "ünï code ✓"] {
            dstore
                .store_file(odd, odd.as_bytes(), StoreOptions::default())
                .await
                .unwrap();
            assert_eq!(dstore.read_file(odd).await.unwrap(), odd.as_bytes());
        }
        assert_eq!(
            dstore
                .list_files(&FileFilter::default())
                .await
                .unwrap()
                .len(),
            5
        );
    });
}

#[test]
fn manifests_are_validated_and_content_addressed() {
    block_on(async {
        let store = AtlasStore::new(MemoryAtlasBackend::new());
        let h1 = store.put_blob(b"abcd").await.unwrap();
        let h2 = store.put_blob(b"ef").await.unwrap();
        assert_eq!(store.put_blob(b"abcd").await.unwrap(), h1);
        assert_eq!(store.get_blob(&h1).await.unwrap().unwrap(), b"abcd");
        assert!(store
            .get_blob(&ContentHash::of(b"zz"))
            .await
            .unwrap()
            .is_none());
        let good = FileManifest {
            version: MANIFEST_VERSION,
            file_type: ManifestType::Raw,
            total_size: 6,
            chunks: vec![
                BlobChunk {
                    hash: h1,
                    offset: 0,
                    size: 4,
                },
                BlobChunk {
                    hash: h2,
                    offset: 4,
                    size: 2,
                },
            ],
            mime_type: None,
        };
        let mh = store.put_manifest(&good).await.unwrap();
        assert_eq!(mh, good.hash());
        assert_eq!(mh, ContentHash::of(&good.to_json()));
        assert_eq!(store.get_manifest(&mh).await.unwrap(), good);

        let mut gap = good.clone();
        gap.chunks[1].offset = 5;
        gap.total_size = 7;
        let mut wrong_total = good.clone();
        wrong_total.total_size = 9;
        let mut version = good.clone();
        version.version = 2;
        let mut empty_chunk = good.clone();
        empty_chunk.chunks[1].size = 0;
        for bad in [gap, wrong_total, version, empty_chunk] {
            let e = store.put_manifest(&bad).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        let mut missing = good.clone();
        missing.chunks[1].hash = ContentHash::of(b"not stored");
        assert_eq!(
            store.put_manifest(&missing).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        // A chunk listed with the wrong size is caught on read.
        let mut resized = good.clone();
        resized.chunks[1].size = 1;
        resized.total_size = 5;
        let rh = store.put_manifest(&resized).await.unwrap();
        store
            .register_file("resized", &rh, StoreOptions::default())
            .await
            .unwrap();
        assert_eq!(
            store.read_file("resized").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        assert_eq!(good.chunk_index(0), Some(0));
        assert_eq!(good.chunk_index(3), Some(0));
        assert_eq!(good.chunk_index(4), Some(1));
        assert_eq!(good.chunk_index(5), Some(1));
        assert_eq!(good.chunk_index(6), None);
    });
}

#[test]
fn block_device_reads_only_what_it_needs_and_caches() {
    both(512, |new: &dyn Fn() -> StoreKind| {
        with_store!(new(), |store| block_on(async {
            let mut rng = Rng(3);
            let data = rng.bytes(512 * 9 + 100);
            store
                .store_file(
                    "disk.img",
                    &data,
                    StoreOptions::new(ManifestType::Raw, FileOrigin::Uploaded),
                )
                .await
                .unwrap();
            let dev = store
                .open_device("disk.img")
                .await
                .unwrap()
                .with_cached_chunks(2);
            assert_eq!(dev.size(), data.len() as u64);
            assert!(dev.read_only());
            assert_eq!(dev.name(), "disk.img");
            assert_eq!(dev.cached_chunks(), 0);
            // One byte touches one chunk.
            assert_eq!(dev.read_vec(700, 1).await.unwrap(), [data[700]]);
            assert_eq!(dev.cached_chunks(), 1);
            // A read spanning three chunks; the cache keeps the last two.
            assert_eq!(dev.read_vec(1000, 1100).await.unwrap(), &data[1000..2100]);
            assert_eq!(dev.cached_chunks(), 2);
            // Random reads agree with the data, including the short last chunk.
            for _ in 0..200 {
                let off = rng.below(data.len());
                let len = rng.below(data.len() - off + 1).min(3000);
                assert_eq!(
                    dev.read_vec(off as u64, len).await.unwrap(),
                    &data[off..off + len]
                );
            }
            let mut sector = vec![0u8; 512];
            dev.read_blocks(9, &mut sector[..512]).await.unwrap_err(); // past the end (100-byte tail)
            dev.read_blocks(8, &mut sector).await.unwrap();
            assert_eq!(sector, &data[4096..4608]);
            assert_eq!(
                dev.read_vec(data.len() as u64 - 1, 2)
                    .await
                    .unwrap_err()
                    .kind(),
                ErrorKind::OutOfRange
            );
            assert_eq!(
                dev.write_at(0, b"x").await.unwrap_err().kind(),
                ErrorKind::ReadOnly
            );
            dev.sync().await.unwrap();
            // The device was opened on a manifest: replacing the file does not change it.
            store
                .store_file("disk.img", b"other", StoreOptions::default())
                .await
                .unwrap();
            assert_eq!(dev.read_vec(0, 16).await.unwrap(), &data[..16]);
            dev.close().await.unwrap();
            assert_eq!(
                dev.read_vec(0, 1).await.unwrap_err().kind(),
                ErrorKind::Closed
            );
            assert_eq!(
                store.open_device("missing").await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
        }))
    });
}

#[test]
fn store_device_copies_a_block_device_chunk_by_chunk() {
    block_on(async {
        let mut rng = Rng(4);
        let data = rng.bytes(10_000);
        let source = MemoryBlockDevice::read_only(data.clone());
        let store = AtlasStore::new(MemoryAtlasBackend::new())
            .with_chunk_size(4096)
            .unwrap();
        let meta = store
            .store_device(
                "from-http.img",
                &source,
                StoreOptions::new(ManifestType::Raw, FileOrigin::Downloaded),
            )
            .await
            .unwrap();
        assert_eq!(meta.size, 10_000);
        assert_eq!(meta.origin, FileOrigin::Downloaded);
        assert_eq!(store.blob_count().await.unwrap(), 3);
        // Same manifest as storing the bytes directly.
        let direct = store
            .store_file(
                "direct",
                &data,
                StoreOptions::new(ManifestType::Raw, FileOrigin::Uploaded),
            )
            .await
            .unwrap();
        assert_eq!(direct.manifest_hash, meta.manifest_hash);
        let dev = store.open_device("from-http.img").await.unwrap();
        assert_eq!(dev.read_vec(4000, 200).await.unwrap(), &data[4000..4200]);
    });
}

#[test]
fn delete_and_gc_keep_what_is_referenced() {
    block_on(async {
        let store = AtlasStore::new(MemoryAtlasBackend::new())
            .with_chunk_size(4)
            .unwrap();
        store
            .store_file("a", b"AAAABBBB", StoreOptions::default())
            .await
            .unwrap();
        let b = store
            .store_file("b", b"AAAACCCC", StoreOptions::default())
            .await
            .unwrap();
        store
            .store_file("c", b"DDDD", StoreOptions::default())
            .await
            .unwrap();
        // A provenance record keeps its manifest (and chunks) alive.
        store
            .add_provenance(ProvenanceRecord::new(
                "p",
                b.manifest_hash,
                ProvenanceType::Create,
                Actor::User,
            ))
            .await
            .unwrap();
        assert_eq!(store.blob_count().await.unwrap(), 4);
        assert_eq!(store.gc().await.unwrap(), 0);
        assert!(store.delete_file("a").await.unwrap());
        assert!(!store.delete_file("a").await.unwrap());
        assert!(store.delete_file("b").await.unwrap());
        // BBBB goes; AAAA and CCCC stay for the provenance record's manifest; DDDD for c.
        assert_eq!(store.gc().await.unwrap(), 1);
        assert_eq!(store.blob_count().await.unwrap(), 3);
        assert_eq!(store.read_file("c").await.unwrap(), b"DDDD");
        assert_eq!(
            store
                .get_manifest(&b.manifest_hash)
                .await
                .unwrap()
                .total_size,
            8
        );
        assert_eq!(
            store.read_file("a").await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
    });
}

#[test]
fn dir_backend_persists_and_leaves_no_temporaries() {
    block_on(async {
        let dir = TempDir::new("persist");
        let data = Rng(5).bytes(5000);
        {
            let store = AtlasStore::new(DirAtlasBackend::open(&dir.0).unwrap())
                .with_chunk_size(2048)
                .unwrap();
            store
                .store_file(
                    "keep.img",
                    &data,
                    StoreOptions::new(ManifestType::Raw, FileOrigin::Uploaded).tag("t"),
                )
                .await
                .unwrap();
        }
        let backend = DirAtlasBackend::open(&dir.0).unwrap();
        let store = AtlasStore::new(backend.clone());
        assert_eq!(store.read_file("keep.img").await.unwrap(), data);
        assert_eq!(store.file("keep.img").await.unwrap().unwrap().tags, ["t"]);
        assert_eq!(std::fs::read_dir(dir.0.join("tmp")).unwrap().count(), 0);
        let blobs: Vec<_> = std::fs::read_dir(dir.0.join("blobs")).unwrap().collect();
        assert_eq!(blobs.len(), 3);
        // Each blob file is named by the hash of its content.
        for e in blobs {
            let e = e.unwrap();
            let content = std::fs::read(e.path()).unwrap();
            assert_eq!(
                ContentHash::of(&content).hex(),
                e.file_name().to_str().unwrap()
            );
        }
        // Stray files in the blob directory are ignored when listing.
        std::fs::write(dir.0.join("blobs").join("README"), b"x").unwrap();
        assert_eq!(backend.list_blobs().await.unwrap().len(), 3);
    });
}
