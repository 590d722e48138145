//! Overlay generations and the snapshot store against the real IndexedDB and Web Locks of
//! headless Chromium: pins keep a disk's point while the guest writes on, resumes go
//! back to it, snapshots are saved, listed, exported, imported and deleted, and damaged,
//! truncated or mismatched files change nothing.
#![cfg(target_arch = "wasm32")]

use js_sys::Uint8Array;
use qemuweb_storage::snapshot::*;
use qemuweb_storage::{
    BlockDevice, CowBlockDevice, ErrorKind, IndexedDbOptions, IndexedDbOverlay, MemoryBlockDevice,
    Overlay, ResumePoint,
};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn fresh_vm(tag: &str) -> String {
    format!("snap-{tag}-{}", (js_sys::Math::random() * 1e12) as u64)
}

fn block(fill: u8) -> Vec<u8> {
    vec![fill; 4096]
}

const BASE: &str = "raw 1048576 bytes, test";

fn options(resume: Option<ResumePoint>) -> IndexedDbOptions {
    IndexedDbOptions {
        base: Some(BASE.into()),
        resume,
        ..IndexedDbOptions::default()
    }
}

async fn open(vm: &str, resume: Option<ResumePoint>) -> IndexedDbOverlay {
    IndexedDbOverlay::open(vm, "disk0", options(resume))
        .await
        .unwrap()
}

async fn read(o: &IndexedDbOverlay, index: u64) -> Option<u8> {
    let mut buf = block(0);
    o.read_block(index, &mut buf).await.unwrap().then(|| buf[0])
}

/// Saves snapshot `id` of `vm` with `state` (in `chunk`-byte chunks) and its disk pinned.
async fn save(
    store: &IndexedDbSnapshotStore,
    vm: &str,
    id: &str,
    overlay: &IndexedDbOverlay,
    state: &[u8],
    chunk: u32,
) -> SnapshotHeader {
    let mut s = store.begin_save(vm, id, chunk).await.unwrap();
    let point = overlay.pin(id).await.unwrap();
    for c in state.chunks(chunk as usize) {
        s.put_chunk(&Uint8Array::from(c)).await.unwrap();
    }
    let header = SnapshotHeader {
        format: HEADER_FORMAT,
        id: id.into(),
        vm_id: vm.into(),
        name: format!("saved {id}"),
        created_ms: js_sys::Date::now() as u64,
        engine: "v86".into(),
        machine: MachineRef {
            profile_id: "linux-i386-pc-nographic".into(),
            digest: sha256_tag(b"machine"),
        },
        state: s.state(StateEncoding::Raw),
        disks: vec![DiskPoint {
            id: "disk0".into(),
            base: BASE.into(),
            size: 1 << 20,
            block_size: 4096,
            point,
            blocks: overlay.block_indices().len() as u64,
        }],
    };
    s.commit(header).await.unwrap()
}

fn state(len: usize, seed: u8) -> Vec<u8> {
    // Non-zero chunks and a run of zeros in the middle.
    (0..len)
        .map(|i| {
            if (3000..9000).contains(&i) {
                0
            } else {
                (i as u8).wrapping_mul(7) ^ seed
            }
        })
        .collect()
}

async fn blob_bytes(blob: &web_sys::Blob) -> Vec<u8> {
    let buffer = wasm_bindgen_futures::JsFuture::from(blob.array_buffer())
        .await
        .unwrap();
    Uint8Array::new(&buffer).to_vec()
}

fn blob_of(bytes: &[u8]) -> web_sys::Blob {
    let parts = js_sys::Array::of1(&Uint8Array::from(bytes));
    web_sys::Blob::new_with_u8_array_sequence(&parts).unwrap()
}

async fn disk_bytes(vm: &str, resume: Option<ResumePoint>) -> Vec<u8> {
    let o = open(vm, resume).await;
    o.settle_resume(true).await.unwrap();
    let disk = CowBlockDevice::new(
        Box::new(MemoryBlockDevice::read_only(vec![0xEE; 1 << 20])),
        Box::new(o),
    )
    .unwrap();
    let bytes = disk.read_vec(0, 1 << 20).await.unwrap();
    disk.close().await.unwrap();
    bytes
}

#[wasm_bindgen_test]
async fn snapshots_are_saved_listed_exported_imported_and_deleted() {
    let vm = fresh_vm("store");
    let store = IndexedDbSnapshotStore::open().await.unwrap();
    let o = open(&vm, None).await;
    o.write_block(4, &block(4)).await.unwrap();
    let s1 = save(&store, &vm, "s1", &o, &state(10_000, 1), 1024).await;
    assert_eq!(
        s1.state.chunks.iter().filter(|c| *c == ZERO_CHUNK).count(),
        5
    );
    o.write_block(4, &block(44)).await.unwrap();
    o.write_block(5, &block(5)).await.unwrap();
    let s2 = save(&store, &vm, "s2", &o, &state(5000, 2), 4096).await;
    o.close().await.unwrap();
    drop(o);

    let listed: Vec<String> = store
        .list(Some(&vm))
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(listed, ["s1", "s2"]);
    assert_eq!(store.get(&vm, "s2").await.unwrap(), s2);
    let st = store.read_state(&s1, &|_, _| {}).await.unwrap();
    assert_eq!(st.to_vec(), state(10_000, 1));
    let e = store.begin_save(&vm, "s1", 1024).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    // Export s1, import it as another VM: same state, the disk as it was at s1.
    let file = blob_bytes(&store.export(&vm, "s1", &|_, _| {}).await.unwrap()).await;
    let other = fresh_vm("imported");
    let imported = store
        .import_blob(&blob_of(&file), Some(&other), &|_, _| {})
        .await
        .unwrap();
    assert_eq!(imported.vm_id, other);
    assert_eq!(imported.state, s1.state);
    assert_eq!(
        store
            .read_state(&imported, &|_, _| {})
            .await
            .unwrap()
            .to_vec(),
        state(10_000, 1)
    );
    let point = imported.disks[0].point;
    let disk = disk_bytes(
        &other,
        Some(ResumePoint {
            snapshot: "s1".into(),
            point,
        }),
    )
    .await;
    assert_eq!(disk[4 * 4096], 4);
    assert_eq!(
        disk[5 * 4096],
        0xEE,
        "s1 was saved before block 5 was written"
    );
    // Importing it again under the same VM is refused.
    let e = store
        .import_blob(&blob_of(&file), Some(&other), &|_, _| {})
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    // Resuming s1 on the first VM, then deleting s2, leaves s1 whole.
    let d = disk_bytes(
        &vm,
        Some(ResumePoint {
            snapshot: "s1".into(),
            point: s1.disks[0].point,
        }),
    )
    .await;
    assert_eq!((d[4 * 4096], d[5 * 4096]), (4, 0xEE));
    store.delete(&vm, "s2").await.unwrap();
    assert_eq!(
        store.delete(&vm, "s2").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let d = disk_bytes(
        &vm,
        Some(ResumePoint {
            snapshot: "s1".into(),
            point: s1.disks[0].point,
        }),
    )
    .await;
    assert_eq!(d[4 * 4096], 4);
    assert_eq!(store.list(Some(&vm)).await.unwrap().len(), 1);

    IndexedDbOverlay::delete_vm(&vm).await.unwrap();
    IndexedDbOverlay::delete_vm(&other).await.unwrap();
    assert!(store.list(Some(&vm)).await.unwrap().is_empty());
}

#[wasm_bindgen_test]
async fn damaged_truncated_and_mismatched_files_change_nothing() {
    let vm = fresh_vm("bad");
    let store = IndexedDbSnapshotStore::open().await.unwrap();
    let o = open(&vm, None).await;
    o.write_block(7, &block(7)).await.unwrap();
    save(&store, &vm, "good", &o, &state(6000, 3), 1024).await;
    o.close().await.unwrap();
    drop(o);
    let file = blob_bytes(&store.export(&vm, "good", &|_, _| {}).await.unwrap()).await;

    let target = fresh_vm("target");
    // The target VM has a disk with content of its own and a snapshot.
    let t = open(&target, None).await;
    t.write_block(1, &block(1)).await.unwrap();
    save(&store, &target, "mine", &t, &state(2000, 4), 1024).await;
    t.close().await.unwrap();
    drop(t);
    let before = disk_bytes(&target, None).await;

    let mut flipped = file.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x20;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", file[..file.len() - 7].to_vec()),
        ("cut in the header", file[..40].to_vec()),
        ("a flipped byte", flipped),
        ("empty", Vec::new()),
        ("not a snapshot", b"hello, world".to_vec()),
    ];
    for (what, bytes) in cases {
        let e = store
            .import_blob(&blob_of(&bytes), Some(&target), &|_, _| {})
            .await
            .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Integrity),
            "{what}: {e}"
        );
        let ids: Vec<String> = store
            .list(Some(&target))
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(ids, ["mine"], "{what}");
        assert!(disk_bytes(&target, None).await == before, "{what}");
    }

    // A disk stored over another base image: a mismatch, nothing changed.
    let elsewhere = fresh_vm("elsewhere");
    let x = IndexedDbOverlay::open(
        &elsewhere,
        "disk0",
        IndexedDbOptions {
            base: Some("qcow2 7 bytes, other".into()),
            ..IndexedDbOptions::default()
        },
    )
    .await
    .unwrap();
    x.close().await.unwrap();
    drop(x);
    let e = store
        .import_blob(&blob_of(&file), Some(&elsewhere), &|_, _| {})
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Mismatch, "{e}");
    assert!(e.to_string().contains("base image of disk0"), "{e}");
    assert!(store.list(Some(&elsewhere)).await.unwrap().is_empty());

    for v in [&vm, &target, &elsewhere] {
        IndexedDbOverlay::delete_vm(v).await.unwrap();
    }
}

#[wasm_bindgen_test]
async fn an_abandoned_save_is_cleaned_up() {
    let vm = fresh_vm("crash");
    let store = IndexedDbSnapshotStore::open().await.unwrap();
    let o = open(&vm, None).await;
    o.write_block(2, &block(2)).await.unwrap();
    let mut s = store.begin_save(&vm, "half", 1024).await.unwrap();
    let point = o.pin("half").await.unwrap();
    s.put_chunk(&Uint8Array::from(&[9u8; 1024][..]))
        .await
        .unwrap();
    // Written past the pin.
    o.write_block(2, &block(22)).await.unwrap();
    o.sync().await.unwrap();
    // The page dies mid-save: the save's lock goes (as the browser lets a dead page's
    // locks go), its record stays `saving`.
    drop(s);
    gloo_timers::future::TimeoutFuture::new(50).await;
    assert!(store.list(Some(&vm)).await.unwrap().is_empty());
    o.close().await.unwrap();
    drop(o);
    // The next writable open drops the pin whose snapshot is gone; the point is unusable.
    let e = IndexedDbOverlay::open(
        &vm,
        "disk0",
        options(Some(ResumePoint {
            snapshot: "half".into(),
            point,
        })),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Locked),
        "{e}"
    );
    let o = open(&vm, None).await;
    assert_eq!(read(&o, 2).await, Some(22));
    o.close().await.unwrap();
    IndexedDbOverlay::delete_vm(&vm).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_pinned_point_survives_later_writes_and_resumes() {
    let vm = fresh_vm("pin");
    let store = IndexedDbSnapshotStore::open().await.unwrap();
    let o = open(&vm, None).await;
    o.write_block(1, &block(1)).await.unwrap();
    o.write_block(2, &block(2)).await.unwrap();
    let p1 = save(&store, &vm, "s1", &o, &[1], 512).await.disks[0].point;
    // Writes after the pin: an overwrite and a new block.
    o.write_block(1, &block(11)).await.unwrap();
    o.write_block(3, &block(3)).await.unwrap();
    assert_eq!(read(&o, 1).await, Some(11));
    let p2 = save(&store, &vm, "s2", &o, &[2], 512).await.disks[0].point;
    assert_ne!(p1, p2);
    // A second pin with no writes shares the point.
    assert_eq!(
        save(&store, &vm, "s2b", &o, &[3], 512).await.disks[0].point,
        p2
    );
    o.write_block(2, &block(22)).await.unwrap();
    o.close().await.unwrap();
    drop(o);

    // Back to s1: the disk as it was then.
    let o = open(
        &vm,
        Some(ResumePoint {
            snapshot: "s1".into(),
            point: p1,
        }),
    )
    .await;
    assert_eq!(o.block_indices(), [1, 2]);
    assert_eq!(
        (read(&o, 1).await, read(&o, 2).await, read(&o, 3).await),
        (Some(1), Some(2), None)
    );
    // The run reader takes blocks from the right generation.
    let mut run = vec![0u8; 2 * 4096];
    o.read_run(1, &mut run).await.unwrap();
    assert_eq!((run[0], run[4096]), (1, 2));
    o.settle_resume(true).await.unwrap();
    o.write_block(2, &block(99)).await.unwrap();
    o.close().await.unwrap();
    drop(o);

    // s2 still has its point (s1's blocks below, its own on top).
    let o = open(
        &vm,
        Some(ResumePoint {
            snapshot: "s2".into(),
            point: p2,
        }),
    )
    .await;
    assert_eq!(
        (read(&o, 1).await, read(&o, 2).await, read(&o, 3).await),
        (Some(11), Some(2), Some(3))
    );
    // A resume that does not run is undone: the writes after s1's resume come back.
    o.settle_resume(false).await.unwrap();
    assert_eq!((read(&o, 1).await, read(&o, 2).await), (Some(1), Some(99)));
    o.close().await.unwrap();
    drop(o);
    // Pins of snapshots that do not exist are dropped when a disk opens.
    let o = open(&vm, None).await;
    o.write_block(9, &block(9)).await.unwrap();
    let lost = o.pin("no-such-snapshot").await.unwrap();
    o.close().await.unwrap();
    drop(o);
    let e = IndexedDbOverlay::open(
        &vm,
        "disk0",
        options(Some(ResumePoint {
            snapshot: "no-such-snapshot".into(),
            point: lost,
        })),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // A point the snapshot does not pin is refused, and the disk is untouched.
    let e = IndexedDbOverlay::open(
        &vm,
        "disk0",
        options(Some(ResumePoint {
            snapshot: "nope".into(),
            point: p1,
        })),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let o = open(&vm, None).await;
    assert_eq!((read(&o, 2).await, read(&o, 9).await), (Some(99), Some(9)));
    o.close().await.unwrap();
    IndexedDbOverlay::delete_vm(&vm).await.unwrap();
}

/// Writes a version-1 disk (a record without a lineage, blocks in the old store) the way
/// the previous release stored it.
async fn write_version_1_disk(vm: &str, blocks: &[(u64, u8)]) {
    use idb::{Factory, TransactionMode};
    let db = Factory::new()
        .unwrap()
        .open("qemuweb-storage", None)
        .unwrap()
        .await
        .unwrap();
    let tx = db
        .transaction(&["disks", "blocks"], TransactionMode::ReadWrite)
        .unwrap();
    let set = |o: &js_sys::Object, k: &str, v: wasm_bindgen::JsValue| {
        js_sys::Reflect::set(o, &k.into(), &v).unwrap();
    };
    let record = js_sys::Object::new();
    set(&record, "vmId", vm.into());
    set(&record, "diskId", "disk0".into());
    set(&record, "blockSize", 4096.into());
    tx.object_store("disks")
        .unwrap()
        .put(&record.into(), None)
        .unwrap()
        .await
        .unwrap();
    for (index, fill) in blocks {
        let b = js_sys::Object::new();
        set(&b, "vmId", vm.into());
        set(&b, "diskId", "disk0".into());
        set(&b, "index", (*index as f64).into());
        set(&b, "data", Uint8Array::from(&block(*fill)[..]).into());
        tx.object_store("blocks")
            .unwrap()
            .put(&b.into(), None)
            .unwrap()
            .await
            .unwrap();
    }
    tx.await.unwrap();
    db.close();
}

#[wasm_bindgen_test]
async fn a_version_1_disk_is_moved_into_generations() {
    let vm = fresh_vm("v1");
    // More blocks than one migration batch.
    let blocks: Vec<(u64, u8)> = (0..150).map(|i| (i * 3, (i % 250) as u8 + 1)).collect();
    write_version_1_disk(&vm, &blocks).await;
    let o = open(&vm, None).await;
    assert_eq!(o.block_indices().len(), 150);
    for (index, fill) in &blocks {
        assert_eq!(read(&o, *index).await, Some(*fill), "block {index}");
    }
    assert_eq!(o.lineage().head(), 1);
    // The adopted base identity and the moved blocks stay across opens; snapshots work.
    let store = IndexedDbSnapshotStore::open().await.unwrap();
    let point = save(&store, &vm, "after", &o, &[5], 512).await.disks[0].point;
    assert_eq!(point, 1);
    o.close().await.unwrap();
    drop(o);
    let o = open(&vm, None).await;
    assert_eq!(o.block_indices().len(), 150);
    assert_eq!(read(&o, 447).await, Some(150));
    o.close().await.unwrap();
    IndexedDbOverlay::delete_vm(&vm).await.unwrap();
}

#[wasm_bindgen_test]
async fn deleting_a_disk_keeps_what_snapshots_pin() {
    let vm = fresh_vm("deldisk");
    let store = IndexedDbSnapshotStore::open().await.unwrap();
    let o = open(&vm, None).await;
    o.write_block(1, &block(1)).await.unwrap();
    let p = save(&store, &vm, "keep", &o, &[1], 512).await.disks[0].point;
    o.write_block(2, &block(2)).await.unwrap();
    o.close().await.unwrap();
    drop(o);
    let listed = IndexedDbOverlay::list_vm(&vm).await.unwrap();
    assert_eq!((listed.len(), listed[0].blocks), (1, 2));
    IndexedDbOverlay::delete_disk(&vm, "disk0").await.unwrap();
    assert_eq!(IndexedDbOverlay::list_vm(&vm).await.unwrap()[0].blocks, 0);
    let o = open(&vm, None).await;
    assert!(o.block_indices().is_empty(), "the disk reads as its base");
    o.close().await.unwrap();
    drop(o);
    let d = disk_bytes(
        &vm,
        Some(ResumePoint {
            snapshot: "keep".into(),
            point: p,
        }),
    )
    .await;
    assert_eq!(
        (d[4096], d[2 * 4096]),
        (1, 0xEE),
        "the snapshot still resumes"
    );
    // Without snapshots the record goes too.
    store.delete(&vm, "keep").await.unwrap();
    IndexedDbOverlay::delete_disk(&vm, "disk0").await.unwrap();
    assert!(IndexedDbOverlay::list_vm(&vm).await.unwrap().is_empty());
    IndexedDbOverlay::delete_vm(&vm).await.unwrap();
}
