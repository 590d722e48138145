//! IndexedDbOverlay against the real IndexedDB and Web Locks of headless Chromium.
#![cfg(target_arch = "wasm32")]

use qemuweb_storage::{
    BlockDevice, CowBlockDevice, ErrorKind, IndexedDbOptions, IndexedDbOverlay, LockPolicy,
    MemoryBlockDevice, Overlay,
};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A VM id no other test (or earlier run) uses.
fn fresh_vm(tag: &str) -> String {
    format!("test-{tag}-{}", (js_sys::Math::random() * 1e12) as u64)
}

fn block(fill: u8) -> Vec<u8> {
    vec![fill; 4096]
}

async fn open(vm: &str, disk: &str) -> IndexedDbOverlay {
    IndexedDbOverlay::open(vm, disk, IndexedDbOptions::default())
        .await
        .unwrap()
}

#[wasm_bindgen_test]
async fn survives_dropping_every_handle() {
    let vm = fresh_vm("reopen");
    let o = open(&vm, "disk0").await;
    o.write_block(0, &block(1)).await.unwrap();
    o.write_block(1000, &block(2)).await.unwrap();
    // Visible before it is durable.
    let mut buf = block(0);
    assert!(o.read_block(1000, &mut buf).await.unwrap());
    assert_eq!(buf, block(2));
    o.sync().await.unwrap();
    o.write_block(1000, &block(3)).await.unwrap();
    o.close().await.unwrap();
    drop(o);

    let o = open(&vm, "disk0").await;
    assert_eq!(o.block_indices(), [0, 1000]);
    assert!(o.read_block(1000, &mut buf).await.unwrap());
    assert_eq!(buf, block(3), "close() commits pending writes");
    assert!(!o.read_block(5, &mut buf).await.unwrap());
    o.close().await.unwrap();
    IndexedDbOverlay::delete_vm(&vm).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_cow_disk_round_trips_through_indexeddb() {
    let vm = fresh_vm("cow");
    let base: Vec<u8> = (0..256 * 1024).map(|i| (i % 253) as u8).collect();
    let options = IndexedDbOptions {
        // Small, so writes commit in several batches on their own.
        flush_bytes: 16 * 1024,
        ..IndexedDbOptions::default()
    };
    let overlay = IndexedDbOverlay::open(&vm, "disk0", options.clone())
        .await
        .unwrap();
    let disk = CowBlockDevice::new(
        Box::new(MemoryBlockDevice::read_only(base.clone())),
        Box::new(overlay),
    )
    .unwrap();
    let mut model = base.clone();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..60u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let off = (seed % (model.len() as u64 - 20_000)) as usize;
        let len = 1 + (seed >> 40) as usize % 20_000;
        let data: Vec<u8> = (0..len).map(|i| (i as u64 * 7 + round) as u8).collect();
        disk.write_at(off as u64, &data).await.unwrap();
        model[off..off + len].copy_from_slice(&data);
    }
    // Before sync: some blocks are committed (the small flush threshold), some pending;
    // whole-disk reads take runs of both at once.
    assert!(disk.read_vec(0, model.len()).await.unwrap() == model);
    disk.sync().await.unwrap();
    disk.close().await.unwrap();
    drop(disk);

    let overlay = IndexedDbOverlay::open(&vm, "disk0", options).await.unwrap();
    let disk = CowBlockDevice::new(
        Box::new(MemoryBlockDevice::read_only(base)),
        Box::new(overlay),
    )
    .unwrap();
    assert!(disk.read_vec(0, model.len()).await.unwrap() == model);
    disk.close().await.unwrap();
    IndexedDbOverlay::delete_vm(&vm).await.unwrap();
}

#[wasm_bindgen_test]
async fn one_writer_per_disk() {
    let vm = fresh_vm("lock");
    let writer = open(&vm, "disk0").await;
    writer.write_block(7, &block(7)).await.unwrap();
    writer.sync().await.unwrap();

    let e = IndexedDbOverlay::open(&vm, "disk0", IndexedDbOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");

    let reader = IndexedDbOverlay::open(
        &vm,
        "disk0",
        IndexedDbOptions {
            lock: LockPolicy::ReadOnlyIfLocked,
            ..IndexedDbOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(reader.read_only());
    let mut buf = block(0);
    assert!(reader.read_block(7, &mut buf).await.unwrap());
    assert_eq!(buf, block(7));
    let e = reader.write_block(8, &block(8)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly);
    // The reader also sees blocks the writer commits after it opened.
    writer.write_block(9, &block(9)).await.unwrap();
    writer.sync().await.unwrap();
    assert!(reader.read_block(9, &mut buf).await.unwrap());
    assert_eq!(buf, block(9));
    // A different disk of the same VM is not locked.
    let other = open(&vm, "disk1").await;
    other.close().await.unwrap();

    writer.close().await.unwrap();
    drop(writer);
    // Released: now the disk can be opened for writing again.
    let again = open(&vm, "disk0").await;
    again.close().await.unwrap();
    reader.close().await.unwrap();
    IndexedDbOverlay::delete_vm(&vm).await.unwrap();
}

#[wasm_bindgen_test]
async fn deleting_one_vm_leaves_the_others() {
    let (a, b) = (fresh_vm("del-a"), fresh_vm("del-b"));
    for vm in [&a, &b] {
        for disk in ["disk0", "disk1"] {
            let o = open(vm, disk).await;
            o.write_block(3, &block(3)).await.unwrap();
            o.close().await.unwrap();
        }
    }
    let open_disk = open(&a, "disk0").await;
    let e = IndexedDbOverlay::delete_vm(&a).await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Locked,
        "a VM with an open disk is not deleted"
    );
    open_disk.close().await.unwrap();
    drop(open_disk);

    IndexedDbOverlay::delete_vm(&a).await.unwrap();
    for disk in ["disk0", "disk1"] {
        let o = open(&a, disk).await;
        assert!(o.block_indices().is_empty());
        o.close().await.unwrap();
        let o = open(&b, disk).await;
        assert_eq!(o.block_indices(), [3]);
        o.close().await.unwrap();
    }
    IndexedDbOverlay::delete_vm(&a).await.unwrap();
    IndexedDbOverlay::delete_vm(&b).await.unwrap();
}

#[wasm_bindgen_test]
async fn geometry_and_arguments_are_checked() {
    let vm = fresh_vm("geom");
    let o = open(&vm, "disk0").await;
    let e = o.write_block(0, &[0u8; 100]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    o.close().await.unwrap();
    drop(o);
    let e = IndexedDbOverlay::open(
        &vm,
        "disk0",
        IndexedDbOptions {
            block_size: 512,
            ..IndexedDbOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("4096-byte blocks"), "{e}");
    let o = open(&vm, "disk0").await;
    o.write_block(1, &block(1)).await.unwrap();
    o.clear().await.unwrap();
    assert!(o.block_indices().is_empty());
    o.close().await.unwrap();
    drop(o);
    let o = open(&vm, "disk0").await;
    assert!(o.block_indices().is_empty(), "clear() is durable");
    o.close().await.unwrap();
    IndexedDbOverlay::delete_vm(&vm).await.unwrap();
}

async fn open_over(vm: &str, base: Option<&str>) -> qemuweb_storage::Result<IndexedDbOverlay> {
    let options = IndexedDbOptions {
        base: base.map(str::to_string),
        ..IndexedDbOptions::default()
    };
    IndexedDbOverlay::open(vm, "disk0", options).await
}

async fn read(o: &IndexedDbOverlay, index: u64) -> Option<Vec<u8>> {
    let mut buf = block(0);
    o.read_block(index, &mut buf).await.unwrap().then_some(buf)
}

/// Opens `vm` over `base` and checks block `index` holds `block(index)`.
async fn reads_back(vm: &str, base: Option<&str>, index: u64) {
    let o = open_over(vm, base).await.unwrap();
    assert_eq!(read(&o, index).await, Some(block(index as u8)), "{base:?}");
    o.close().await.unwrap();
}

/// Opening `vm` over `base` fails as a changed image; returns the message.
async fn refused(vm: &str, base: &str) -> String {
    let e = open_over(vm, Some(base)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ImageChanged, "{e}");
    e.to_string()
}

#[wasm_bindgen_test]
async fn an_overlay_is_refused_over_a_different_base_image() {
    let vm = fresh_vm("base");
    let a = r#"raw 1048576 bytes, validator "a""#;
    let o = open_over(&vm, Some(a)).await.unwrap();
    o.write_block(3, &block(3)).await.unwrap();
    o.close().await.unwrap();
    // The same identity reopens with the data intact.
    reads_back(&vm, Some(a), 3).await;

    // A different identity is refused, naming the disk, both identities and the fix ...
    let b = r#"raw 1048576 bytes, validator "b""#;
    let message = refused(&vm, b).await;
    for part in [vm.as_str(), "disk0", a, b, "delete_vm"] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    // ... and leaves the stored blocks (and the lock) as they were.
    reads_back(&vm, Some(a), 3).await;
    // No identity checks nothing.
    reads_back(&vm, None, 3).await;
    IndexedDbOverlay::delete_vm(&vm).await.unwrap();
}

#[wasm_bindgen_test]
async fn an_overlay_without_a_base_identity_adopts_one() {
    let vm = fresh_vm("legacy");
    // Stored as before base identities existed.
    let writer = open_over(&vm, None).await.unwrap();
    writer.write_block(1, &block(1)).await.unwrap();
    writer.sync().await.unwrap();

    // A read-only view (the disk is locked) must not record its identity.
    let options = IndexedDbOptions {
        lock: LockPolicy::ReadOnlyIfLocked,
        base: Some("A".into()),
        ..IndexedDbOptions::default()
    };
    let reader = IndexedDbOverlay::open(&vm, "disk0", options).await.unwrap();
    assert!(reader.read_only());
    assert_eq!(read(&reader, 1).await, Some(block(1)));
    reader.close().await.unwrap();
    writer.close().await.unwrap();

    // So the first writer with an identity adopts its own, "B", and keeps the blocks ...
    reads_back(&vm, Some("B"), 1).await;
    // ... and from then on another identity is refused.
    refused(&vm, "A").await;
    IndexedDbOverlay::delete_vm(&vm).await.unwrap();
}
