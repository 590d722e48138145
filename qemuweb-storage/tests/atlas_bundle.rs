//! Atlas bundles: export/import round trips, and rejection of tampered, truncated,
//! forged or conflicting bundles with the store left exactly as it was.
#![cfg(not(target_arch = "wasm32"))]

mod atlas_common;

use async_trait::async_trait;
use atlas_common::{snapshot, Rng, TempDir};
use futures::executor::block_on;
use qemuweb_storage::atlas::bundle::{self, BundleChunk, BundleIndex, BundleManifest};
use qemuweb_storage::atlas::*;
use qemuweb_storage::{BlockDevice, ErrorKind, MemoryBlockDevice, Result, StorageError};
use std::cell::Cell;

const CHUNK: u64 = 256;

/// A source store with two files sharing chunks, one with a two-record provenance chain.
async fn source() -> (AtlasStore<MemoryAtlasBackend>, Vec<u8>, Vec<u8>) {
    let store = AtlasStore::new(MemoryAtlasBackend::new())
        .with_chunk_size(CHUNK)
        .unwrap();
    let mut rng = Rng(21);
    let shared = rng.bytes(CHUNK as usize * 2);
    let a = [shared.clone(), rng.bytes(300)].concat();
    let b = [shared, rng.bytes(CHUNK as usize)].concat();
    let ma = store
        .store_file(
            "a.qcow2",
            &a,
            StoreOptions::new(ManifestType::Qcow2, FileOrigin::Downloaded),
        )
        .await
        .unwrap();
    let mut dl = ProvenanceRecord::new(
        "dl",
        ma.manifest_hash,
        ProvenanceType::Download,
        Actor::User,
    );
    dl.source = Some("https://example.invalid/a.qcow2".into());
    store.add_provenance(dl).await.unwrap();
    let tmp = store
        .store_file(
            "tmp",
            &b,
            StoreOptions::new(ManifestType::Raw, FileOrigin::Derived),
        )
        .await
        .unwrap();
    store
        .add_provenance(
            ProvenanceRecord::new(
                "derive",
                tmp.manifest_hash,
                ProvenanceType::Derive,
                Actor::Assistant,
            )
            .with_parent("dl"),
        )
        .await
        .unwrap();
    let mut o = StoreOptions::new(ManifestType::Raw, FileOrigin::Derived).tag("snapshot");
    o.provenance_id = Some("derive".into());
    store.store_file("b.raw", &b, o).await.unwrap();
    store.delete_file("tmp").await.unwrap();
    (store, a, b)
}

/// A target store that already holds unrelated content.
async fn target() -> AtlasStore<MemoryAtlasBackend> {
    let store = AtlasStore::new(MemoryAtlasBackend::new())
        .with_chunk_size(CHUNK)
        .unwrap();
    store
        .store_file("mine.txt", b"already here", StoreOptions::default())
        .await
        .unwrap();
    store
        .add_provenance(ProvenanceRecord::new(
            "mine",
            ContentHash::of(b"x"),
            ProvenanceType::Create,
            Actor::User,
        ))
        .await
        .unwrap();
    store
}

#[test]
fn export_import_round_trip_keeps_content_metadata_and_provenance() {
    block_on(async {
        let (src, a, b) = source().await;
        let bytes = src
            .export_bundle(&["a.qcow2", "b.raw", "a.qcow2"])
            .await
            .unwrap();
        assert_eq!(&bytes[..8], b"QWATLAS\0");
        assert_eq!(&bytes[bytes.len() - 8..], b"QWATEND\0");

        let decoded = bundle::decode(&bytes).unwrap();
        // a = s0 s1 a2 a3 ; b = s0 s1 b2 : five distinct chunks travel once each.
        assert_eq!(decoded.index.chunks.len(), 5);
        assert_eq!(decoded.index.files.len(), 2);
        assert_eq!(decoded.index.manifests.len(), 2);
        let prov: Vec<&str> = decoded
            .index
            .provenance
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(prov, ["dl", "derive"], "parents first");

        for dst in [target().await] {
            let before = dst.blob_count().await.unwrap();
            let result = dst.import_bundle(&bytes).await.unwrap();
            assert_eq!(result.new_blobs, 5);
            assert_eq!(result.existing_blobs, 0);
            assert_eq!(result.new_provenance, 2);
            assert_eq!(result.files.len(), 2);
            assert_eq!(dst.blob_count().await.unwrap(), before + 5);
            assert_eq!(dst.read_file("a.qcow2").await.unwrap(), a);
            assert_eq!(dst.read_file("b.raw").await.unwrap(), b);
            assert_eq!(
                dst.file("b.raw").await.unwrap(),
                src.file("b.raw").await.unwrap()
            );
            let chain = dst.provenance_chain("derive").await.unwrap();
            assert_eq!(chain, src.provenance_chain("derive").await.unwrap());
            let dev = dst.open_device("a.qcow2").await.unwrap();
            assert_eq!(dev.read_vec(500, 100).await.unwrap(), &a[500..600]);
            assert_eq!(dst.read_file("mine.txt").await.unwrap(), b"already here");

            // Importing again changes nothing and reports the chunks as present.
            let snap = snapshot(dst.backend()).await;
            let again = dst.import_bundle(&bytes).await.unwrap();
            assert_eq!(again.new_blobs, 0);
            assert_eq!(again.existing_blobs, 5);
            assert_eq!(again.new_provenance, 0);
            assert_eq!(snapshot(dst.backend()).await, snap);
        }

        // Into a directory store, and back out again byte for byte.
        let dir = TempDir::new("bundle");
        let ddst = AtlasStore::new(DirAtlasBackend::open(&dir.0).unwrap());
        ddst.import_bundle(&bytes).await.unwrap();
        assert_eq!(ddst.read_file("b.raw").await.unwrap(), b);
        assert_eq!(
            ddst.export_bundle(&["a.qcow2", "b.raw"]).await.unwrap(),
            bytes
        );

        assert_eq!(
            src.export_bundle(&["missing"]).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let empty = src.export_bundle(&[]).await.unwrap();
        let r = ddst.import_bundle(&empty).await.unwrap();
        assert!(r.files.is_empty());
    });
}

/// Imports `bytes` into `dst` and checks it fails with `kind` leaving `dst` unchanged.
async fn rejected(
    dst: &AtlasStore<MemoryAtlasBackend>,
    bytes: &[u8],
    kind: ErrorKind,
) -> StorageError {
    let before = snapshot(dst.backend()).await;
    let e = dst.import_bundle(bytes).await.unwrap_err();
    assert_eq!(e.kind(), kind, "{e}");
    assert_eq!(
        snapshot(dst.backend()).await,
        before,
        "store changed by a rejected import"
    );
    e
}

#[test]
fn tampering_anywhere_rejects_the_whole_bundle() {
    block_on(async {
        let (src, _, _) = source().await;
        let bytes = src.export_bundle(&["a.qcow2", "b.raw"]).await.unwrap();
        let dst = target().await;
        let index_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        let data_start = 56 + index_len;
        // One byte in each region: magic, version, flags, index length, index hash, index
        // JSON (start, middle, end), every chunk (first and last byte), end magic.
        let mut spots = vec![
            0,
            8,
            12,
            16,
            23,
            24,
            55,
            56,
            56 + index_len / 2,
            data_start - 1,
        ];
        let decoded = bundle::decode(&bytes).unwrap();
        let mut pos = data_start;
        for c in &decoded.index.chunks {
            spots.push(pos);
            spots.push(pos + c.size as usize - 1);
            pos += c.size as usize;
        }
        spots.extend([bytes.len() - 8, bytes.len() - 1]);
        assert_eq!(pos, bytes.len() - 8);
        for at in spots {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            let e = rejected(&dst, &bad, ErrorKind::Integrity).await;
            assert!(e.to_string().contains("bundle rejected"), "{at}: {e}");
        }
        // Truncated at every region boundary, and extended.
        for len in [
            0,
            7,
            55,
            56,
            data_start,
            data_start + 1,
            bytes.len() - 9,
            bytes.len() - 1,
        ] {
            rejected(&dst, &bytes[..len], ErrorKind::Integrity).await;
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"QWATEND\0");
        rejected(&dst, &longer, ErrorKind::Integrity).await;
        // The intact bundle still imports.
        dst.import_bundle(&bytes).await.unwrap();
    });
}

#[test]
fn seeded_random_damage_never_panics_and_never_partially_imports() {
    block_on(async {
        let (src, _, _) = source().await;
        let bytes = src.export_bundle(&["a.qcow2", "b.raw"]).await.unwrap();
        let dst = target().await;
        let before = snapshot(dst.backend()).await;
        let mut rng = Rng(0x5eed);
        for round in 0..400 {
            let mut bad = bytes.clone();
            match rng.below(5) {
                0 => {
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(bad.len());
                        bad[at] ^= 1 + rng.below(255) as u8;
                    }
                }
                1 => bad.truncate(rng.below(bytes.len())),
                2 => {
                    let at = rng.below(bad.len());
                    let n = 1 + rng.below(64);
                    let junk = rng.bytes(n);
                    bad.splice(at..at, junk);
                }
                3 => {
                    let at = rng.below(bad.len());
                    let n = 1 + rng.below(64.min(bad.len() - at));
                    bad.drain(at..at + n);
                }
                _ => {
                    // Overwrite a run with a copy of another part of the bundle.
                    let n = 1 + rng.below(32);
                    let from = rng.below(bad.len() - n);
                    let to = rng.below(bad.len() - n);
                    let piece = bytes[from..from + n].to_vec();
                    bad[to..to + n].copy_from_slice(&piece);
                    if bad == bytes {
                        continue;
                    }
                }
            }
            let e = dst.import_bundle(&bad).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "round {round}: {e}");
        }
        assert_eq!(snapshot(dst.backend()).await, before);
    });
}

/// Replaces a bundle's index and recomputes the index hash, as a forger would.
fn resign(bytes: &[u8], index_json: &[u8]) -> Vec<u8> {
    let old_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let mut header = bytes[..24].to_vec();
    header[16..24].copy_from_slice(&(index_json.len() as u64).to_le_bytes());
    let hash = ContentHash::of(&[header.as_slice(), index_json].concat());
    [
        header.as_slice(),
        hash.as_bytes(),
        index_json,
        &bytes[56 + old_len..],
    ]
    .concat()
}

#[test]
fn seeded_damage_to_a_resigned_index_is_checked_semantically() {
    block_on(async {
        let (src, _, _) = source().await;
        let bytes = src.export_bundle(&["a.qcow2", "b.raw"]).await.unwrap();
        let index = bundle::decode(&bytes).unwrap().index;
        let json = serde_json::to_vec(&index).unwrap();
        assert_eq!(
            resign(&bytes, &json),
            bytes,
            "resign reproduces the original"
        );
        let mut rng = Rng(77);
        let mut accepted = 0;
        for _ in 0..300 {
            let dst = target().await;
            let before = snapshot(dst.backend()).await;
            let mut j = json.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(j.len());
                j[at] = b" 0123456789abcdef\"{}[],:-xyz"[rng.below(28)];
            }
            match dst.import_bundle(&resign(&bytes, &j)).await {
                // A harmless edit (say, a character of a tag) is a different but valid
                // bundle; it must then import completely.
                Ok(r) => {
                    accepted += 1;
                    for f in &r.files {
                        dst.verify_file(&f.name).await.unwrap();
                    }
                }
                Err(e) => {
                    assert!(
                        matches!(e.kind(), ErrorKind::Integrity | ErrorKind::InvalidArgument),
                        "{e}"
                    );
                    assert_eq!(snapshot(dst.backend()).await, before);
                }
            }
        }
        assert!(
            accepted < 150,
            "most edits to hashes and sizes must be caught: {accepted}"
        );
    });
}

fn crafted(index: &BundleIndex, chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut it = chunks.iter().cloned();
    bundle::encode(index, |_| Ok(it.next().unwrap())).unwrap()
}

fn manifest_of(chunks: &[&[u8]]) -> FileManifest {
    let mut offset = 0;
    let chunks: Vec<BlobChunk> = chunks
        .iter()
        .map(|c| {
            let b = BlobChunk {
                hash: ContentHash::of(c),
                offset,
                size: c.len() as u64,
            };
            offset += c.len() as u64;
            b
        })
        .collect();
    FileManifest {
        version: MANIFEST_VERSION,
        file_type: ManifestType::Raw,
        total_size: offset,
        chunks,
        mime_type: None,
    }
}

fn file_of(name: &str, m: &FileManifest) -> FileMetadata {
    FileMetadata {
        name: name.into(),
        manifest_hash: m.hash(),
        file_type: m.file_type,
        size: m.total_size,
        mime_type: None,
        origin: FileOrigin::Imported,
        tags: vec![],
        shared_with_assistant: false,
        provenance_id: None,
    }
}

fn base_index() -> (BundleIndex, Vec<Vec<u8>>) {
    let c1 = b"first chunk".to_vec();
    let c2 = b"second".to_vec();
    let m = manifest_of(&[&c1, &c2]);
    let index = BundleIndex {
        format: bundle::BUNDLE_FORMAT_NAME.into(),
        version: bundle::BUNDLE_VERSION,
        chunks: vec![
            BundleChunk {
                hash: ContentHash::of(&c1),
                size: c1.len() as u64,
            },
            BundleChunk {
                hash: ContentHash::of(&c2),
                size: c2.len() as u64,
            },
        ],
        manifests: vec![BundleManifest {
            hash: m.hash(),
            manifest: m.clone(),
        }],
        files: vec![file_of("f", &m)],
        provenance: vec![],
    };
    (index, vec![c1, c2])
}

fn prov(id: &str, m: ContentHash, parents: &[&str]) -> ProvenanceRecord {
    let mut r = ProvenanceRecord::new(id, m, ProvenanceType::Derive, Actor::User);
    r.parents = parents.iter().map(|p| p.to_string()).collect();
    r
}

#[test]
fn forged_but_consistently_hashed_bundles_are_rejected() {
    block_on(async {
        let dst = target().await;
        let (good, chunks) = base_index();
        let mh = good.manifests[0].hash;
        // The baseline imports (into a copy of the target).
        target()
            .await
            .import_bundle(&crafted(&good, &chunks))
            .await
            .unwrap();

        let mut cases: Vec<(&str, BundleIndex, Vec<Vec<u8>>)> = Vec::new();
        let mut i = good.clone();
        i.provenance = vec![prov("p", mh, &["q"]), prov("q", mh, &["p"])];
        cases.push(("provenance cycle", i, chunks.clone()));
        let mut i = good.clone();
        i.provenance = vec![prov("p", mh, &["nowhere"])];
        cases.push(("missing parent", i, chunks.clone()));
        let mut i = good.clone();
        i.files[0].provenance_id = Some("nowhere".into());
        cases.push(("file names a missing provenance record", i, chunks.clone()));
        let mut i = good.clone();
        let extra = b"unused".to_vec();
        i.chunks.push(BundleChunk {
            hash: ContentHash::of(&extra),
            size: 6,
        });
        let mut ch = chunks.clone();
        ch.push(extra);
        cases.push(("unreferenced chunk", i, ch));
        let mut i = good.clone();
        i.chunks.pop();
        cases.push((
            "manifest chunk missing from the bundle",
            i,
            chunks[..1].to_vec(),
        ));
        let mut i = good.clone();
        i.files[0].size += 1;
        cases.push(("file size disagrees with manifest", i, chunks.clone()));
        let mut i = good.clone();
        i.files[0].file_type = ManifestType::Qcow2;
        cases.push(("file type disagrees with manifest", i, chunks.clone()));
        let mut i = good.clone();
        i.files.push(i.files[0].clone());
        cases.push(("duplicate file", i, chunks.clone()));
        let mut i = good.clone();
        i.manifests[0].hash = ContentHash::of(b"another");
        cases.push(("manifest hash mismatch", i, chunks.clone()));
        let mut i = good.clone();
        i.manifests[0].manifest.chunks[1].size = 5;
        i.manifests[0].manifest.total_size -= 1;
        i.manifests[0].hash = i.manifests[0].manifest.hash();
        i.files[0] = file_of("f", &i.manifests[0].manifest);
        cases.push(("manifest gives a chunk another size", i, chunks.clone()));
        let mut i = good.clone();
        i.manifests[0].manifest.chunks[1].offset += 1;
        i.manifests[0].manifest.total_size += 1;
        i.manifests[0].hash = i.manifests[0].manifest.hash();
        i.files[0] = file_of("f", &i.manifests[0].manifest);
        cases.push(("manifest with a gap", i, chunks.clone()));
        let mut i = good.clone();
        i.files[0].name = "bad\nname".into();
        cases.push(("control character in a name", i, chunks.clone()));
        let mut i = good.clone();
        i.format = "something-else".into();
        cases.push(("wrong format name", i, chunks.clone()));
        let mut i = good.clone();
        i.chunks.push(i.chunks[0].clone());
        let mut ch = chunks.clone();
        ch.push(chunks[0].clone());
        cases.push(("duplicate chunk", i, ch));
        let mut i = good.clone();
        i.provenance = vec![prov("p", mh, &[]), prov("p", mh, &[])];
        cases.push(("duplicate provenance id", i, chunks.clone()));

        for (what, index, ch) in cases {
            let bytes = crafted(&index, &ch);
            let e = rejected(&dst, &bytes, ErrorKind::Integrity).await;
            println!("{what}: {e}");
        }
    });
}

#[test]
fn a_cycle_through_stored_records_is_rejected() {
    block_on(async {
        let dst = target().await;
        // The store holds "s" whose parent "x" is missing (a damaged store); a bundle
        // supplying "x" with parent "s" would close a cycle.
        let rec = prov("s", ContentHash::of(b"s"), &["x"]);
        dst.backend()
            .put_record(
                RecordTable::Provenance,
                "s",
                &serde_json::to_string(&rec).unwrap(),
            )
            .await
            .unwrap();
        let (mut index, chunks) = base_index();
        index.provenance = vec![prov("x", index.manifests[0].hash, &["s"])];
        let e = rejected(&dst, &crafted(&index, &chunks), ErrorKind::Integrity).await;
        assert!(e.to_string().contains("cycle"), "{e}");
        // Parents may live in the store rather than the bundle.
        index.provenance = vec![prov("y", index.manifests[0].hash, &["mine"])];
        dst.import_bundle(&crafted(&index, &chunks)).await.unwrap();
        let chain = dst.provenance_chain("y").await.unwrap();
        assert_eq!(chain.len(), 2);
    });
}

#[test]
fn conflicts_with_the_store_reject_the_whole_bundle() {
    block_on(async {
        let (index, chunks) = base_index();
        let bytes = crafted(&index, &chunks);
        let dst = target().await;
        dst.store_file("f", b"something else", StoreOptions::default())
            .await
            .unwrap();
        let e = rejected(&dst, &bytes, ErrorKind::InvalidArgument).await;
        assert!(e.to_string().contains("\"f\""), "{e}");

        let dst = target().await;
        dst.add_provenance(prov("p", ContentHash::of(b"1"), &[]))
            .await
            .unwrap();
        let mut i = index.clone();
        i.provenance = vec![prov("p", ContentHash::of(b"2"), &[])];
        rejected(&dst, &crafted(&i, &chunks), ErrorKind::InvalidArgument).await;
    });
}

#[test]
fn newer_versions_and_hostile_lengths() {
    block_on(async {
        let (index, chunks) = base_index();
        let bytes = crafted(&index, &chunks);
        let dst = target().await;
        // A genuine (hash-consistent) bundle of a future version is Unsupported.
        let mut v2 = bytes.clone();
        v2[8] = 2;
        let index_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        let v2 = resign(&v2, &bytes[56..56 + index_len]);
        rejected(&dst, &v2, ErrorKind::Unsupported).await;
        // Index lengths past the limit or the bundle are refused before any allocation.
        for len in [u64::MAX, bundle::MAX_INDEX_LEN + 1, bytes.len() as u64] {
            let mut bad = bytes.clone();
            bad[16..24].copy_from_slice(&len.to_le_bytes());
            rejected(&dst, &bad, ErrorKind::Integrity).await;
        }
        // A chunk declared larger than the limit.
        let mut i = index.clone();
        i.chunks[0].size = MAX_CHUNK_SIZE + 1;
        let json = serde_json::to_vec(&i).unwrap();
        rejected(&dst, &resign(&bytes, &json), ErrorKind::Integrity).await;
        // Deeply nested JSON in the index.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        rejected(&dst, &resign(&bytes, deep.as_bytes()), ErrorKind::Integrity).await;
    });
}

/// A backend that fails every write after the first `budget` with a quota error.
#[derive(Clone)]
struct FailingBackend {
    inner: MemoryAtlasBackend,
    budget: std::rc::Rc<Cell<usize>>,
}

impl FailingBackend {
    fn spend(&self) -> Result<()> {
        let left = self.budget.get();
        if left == 0 {
            return Err(StorageError::QuotaExceeded("test quota".into()));
        }
        self.budget.set(left - 1);
        Ok(())
    }
}

#[async_trait(?Send)]
impl AtlasBackend for FailingBackend {
    async fn put_blob(&self, hash: &ContentHash, data: &[u8]) -> Result<()> {
        self.spend()?;
        self.inner.put_blob(hash, data).await
    }
    async fn get_blob(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>> {
        self.inner.get_blob(hash).await
    }
    async fn has_blob(&self, hash: &ContentHash) -> Result<bool> {
        self.inner.has_blob(hash).await
    }
    async fn delete_blob(&self, hash: &ContentHash) -> Result<()> {
        self.inner.delete_blob(hash).await
    }
    async fn list_blobs(&self) -> Result<Vec<ContentHash>> {
        self.inner.list_blobs().await
    }
    async fn put_record(&self, table: RecordTable, key: &str, json: &str) -> Result<()> {
        self.spend()?;
        self.inner.put_record(table, key, json).await
    }
    async fn get_record(&self, table: RecordTable, key: &str) -> Result<Option<String>> {
        self.inner.get_record(table, key).await
    }
    async fn list_records(&self, table: RecordTable) -> Result<Vec<String>> {
        self.inner.list_records(table).await
    }
    async fn delete_record(&self, table: RecordTable, key: &str) -> Result<()> {
        self.inner.delete_record(table, key).await
    }
}

#[test]
fn a_write_failure_mid_import_is_rolled_back() {
    block_on(async {
        let (src, _, _) = source().await;
        let bytes = src.export_bundle(&["a.qcow2", "b.raw"]).await.unwrap();
        // 5 chunks + 2 manifests + 2 provenance records + 2 files = 11 writes.
        for budget in 0..11 {
            let inner = MemoryAtlasBackend::new();
            let seed = AtlasStore::new(inner.clone());
            seed.store_file("mine.txt", b"already here", StoreOptions::default())
                .await
                .unwrap();
            let backend = FailingBackend {
                inner: inner.clone(),
                budget: std::rc::Rc::new(Cell::new(budget)),
            };
            let store = AtlasStore::new(backend);
            let before = snapshot(&inner).await;
            let e = store.import_bundle(&bytes).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "budget {budget}");
            assert_eq!(snapshot(&inner).await, before, "budget {budget}");
        }
        let inner = MemoryAtlasBackend::new();
        let store = AtlasStore::new(FailingBackend {
            inner,
            budget: std::rc::Rc::new(Cell::new(11)),
        });
        store.import_bundle(&bytes).await.unwrap();
    });
}

#[test]
fn streaming_export_and_import_from_a_file() {
    block_on(async {
        let (src, a, _) = source().await;
        let whole = src.export_bundle(&["a.qcow2", "b.raw"]).await.unwrap();
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        let len = src
            .export_bundle_to(&["a.qcow2", "b.raw"], &mut |p| {
                pieces.push(p.to_vec());
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(len, whole.len() as u64);
        // Head, five chunks, end marker.
        assert_eq!(pieces.len(), 7);
        assert!(pieces[1..6].iter().all(|p| p.len() <= CHUNK as usize));
        assert_eq!(pieces.concat(), whole);
        // A failing sink stops the export with its error.
        let e = src
            .export_bundle_to(&["a.qcow2"], &mut |_| {
                Err(StorageError::QuotaExceeded("full".into()))
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded);

        let dir = TempDir::new("stream");
        let path = dir.0.join("bundle.qwatlas");
        std::fs::write(&path, &whole).unwrap();
        let file = qemuweb_storage::FileBlockDevice::open(&path, true).unwrap();
        let dst = target().await;
        let r = dst.import_bundle_from(&file).await.unwrap();
        assert_eq!(r.new_blobs, 5);
        assert_eq!(dst.read_file("a.qcow2").await.unwrap(), a);

        // Damage in the file is caught just the same.
        let dst = target().await;
        for at in [20, 100, whole.len() - 300, whole.len() - 3] {
            let mut bad = whole.clone();
            bad[at] ^= 4;
            std::fs::write(&path, &bad).unwrap();
            let file = qemuweb_storage::FileBlockDevice::open(&path, true).unwrap();
            let before = snapshot(dst.backend()).await;
            let e = dst.import_bundle_from(&file).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "{at}: {e}");
            assert_eq!(snapshot(dst.backend()).await, before);
        }
        let mut rng = Rng(99);
        for _ in 0..100 {
            let mut bad = whole.clone();
            if rng.below(2) == 0 {
                bad.truncate(rng.below(whole.len()));
            } else {
                let at = rng.below(bad.len());
                bad[at] ^= 1 + rng.below(255) as u8;
            }
            let dev = MemoryBlockDevice::read_only(bad);
            let e = dst.import_bundle_from(&dev).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        }
        assert_eq!(
            snapshot(dst.backend()).await,
            snapshot(target().await.backend()).await
        );
    });
}

/// A source that serves the true bundle on the checking pass and then damages the last
/// chunk: what a file being rewritten during an import looks like.
struct ChangingSource {
    inner: MemoryBlockDevice,
    reads: Cell<usize>,
    damage_after: usize,
    at: u64,
}

#[async_trait(?Send)]
impl BlockDevice for ChangingSource {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        true
    }
    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.reads.set(self.reads.get() + 1);
        self.inner.read_at(offset, buf).await?;
        let end = offset + buf.len() as u64;
        if self.reads.get() > self.damage_after && (offset..end).contains(&self.at) {
            buf[(self.at - offset) as usize] ^= 0xff;
        }
        Ok(())
    }
    async fn write_at(&self, _: u64, _: &[u8]) -> Result<()> {
        unreachable!()
    }
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

#[test]
fn a_source_that_changes_between_passes_is_undone() {
    block_on(async {
        let (src, _, _) = source().await;
        let whole = src.export_bundle(&["a.qcow2", "b.raw"]).await.unwrap();
        // Header, index and end marker (3 reads), then 5 chunks: the check pass is 8 reads.
        let changing = ChangingSource {
            inner: MemoryBlockDevice::read_only(whole.clone()),
            reads: Cell::new(0),
            damage_after: 8,
            at: whole.len() as u64 - 10,
        };
        let dst = target().await;
        let before = snapshot(dst.backend()).await;
        let e = dst.import_bundle_from(&changing).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        assert!(
            changing.reads.get() > 8,
            "the damage came on the second pass"
        );
        assert_eq!(snapshot(dst.backend()).await, before);
    });
}
