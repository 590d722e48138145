//! Writes seed inputs for the `overlay_archive` and `atlas_bundle` targets into
//! `corpus/<target>/`: real archives made by `export::compact::export` and
//! `AtlasStore::export_bundle`, each both as it is (an even mode byte) and unsealed for the
//! harness to seal (an odd one). Run from the fuzz directory:
//!
//! ```sh
//! cargo +nightly run --example seeds
//! ```

use futures::executor::block_on;
use qemuweb_storage::atlas::{
    Actor, AtlasStore, FileOrigin, ManifestType, MemoryAtlasBackend, ProvenanceRecord,
    ProvenanceType, StoreOptions,
};
use qemuweb_storage::export::compact;
use qemuweb_storage::BlockDevice;
use qemuweb_storage_fuzz::{atlas_bundle, overlay_archive};
use std::fs;
use std::path::Path;

fn write_seed(target: &str, name: &str, mode: u8, rest: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    let mut input = vec![mode];
    input.extend_from_slice(rest);
    fs::write(dir.join(format!("seed-{name}-mode{mode}")), input).unwrap();
}

fn overlay_seeds() -> usize {
    let mut n = 0;
    for code in 0..4u8 {
        let bs = overlay_archive::block_size(code << 1);
        // Writes of various shapes: none (only the preset block), one sector, a run across
        // blocks, and the disk's last (partial) block.
        let writes: [&[(u64, usize)]; 4] = [
            &[],
            &[(0, 512)],
            &[(700, 3000), (9000, 100)],
            &[(overlay_archive::DISK_SIZE as u64 - 10, 10)],
        ];
        for (i, w) in writes.iter().enumerate() {
            let disk = overlay_archive::disk(bs);
            block_on(async {
                for &(at, len) in *w {
                    disk.write_at(at, &vec![i as u8 + 1; len]).await.unwrap();
                }
            });
            let mut archive = Vec::new();
            block_on(compact::export(&disk, &mut archive)).unwrap();
            let name = format!("bs{bs}-w{i}");
            write_seed("overlay_archive", &name, code << 1, &archive);
            write_seed(
                "overlay_archive",
                &name,
                (code << 1) | 1,
                &archive[..archive.len() - 32],
            );
            n += 2;
        }
    }
    n
}

fn bundle_seeds() -> usize {
    // A store like the target's, plus a derived file that shares chunks with the preset
    // one and names the preset record as its parent, and an unrelated file.
    let src = atlas_bundle::store();
    block_on(async {
        let mut derived = atlas_bundle::preset_bytes();
        derived.extend_from_slice(b"and a little more");
        let meta = src
            .store_file(
                "derived.qcow2",
                &derived,
                StoreOptions::new(ManifestType::Qcow2, FileOrigin::Built),
            )
            .await
            .unwrap();
        src.add_provenance(
            ProvenanceRecord::new(
                "derive-1",
                meta.manifest_hash,
                ProvenanceType::Derive,
                Actor::Build,
            )
            .with_parent(atlas_bundle::PRESET_RECORD),
        )
        .await
        .unwrap();
        let mut options = StoreOptions::new(ManifestType::Qcow2, FileOrigin::Built).tag("seed");
        options.provenance_id = Some("derive-1".into());
        src.store_file("derived.qcow2", &derived, options)
            .await
            .unwrap();
        src.store_file(
            "other.iso",
            &(0..300u32).map(|i| (i % 13) as u8).collect::<Vec<_>>(),
            StoreOptions::new(ManifestType::Iso, FileOrigin::Uploaded),
        )
        .await
        .unwrap();
    });
    // A store whose file of the preset's name differs (an import conflict).
    let conflicting = AtlasStore::new(MemoryAtlasBackend::new())
        .with_chunk_size(atlas_bundle::CHUNK_SIZE)
        .unwrap();
    block_on(conflicting.store_file(
        atlas_bundle::PRESET_FILE,
        b"not the preset",
        StoreOptions::default(),
    ))
    .unwrap();

    let bundles = [
        (
            "preset",
            block_on(src.export_bundle(&[atlas_bundle::PRESET_FILE])),
        ),
        ("derived", block_on(src.export_bundle(&["derived.qcow2"]))),
        (
            "all",
            block_on(src.export_bundle(&["derived.qcow2", "other.iso", atlas_bundle::PRESET_FILE])),
        ),
        (
            "conflict",
            block_on(conflicting.export_bundle(&[atlas_bundle::PRESET_FILE])),
        ),
        ("empty", block_on(src.export_bundle(&[]))),
    ];
    let mut n = 0;
    for (name, bundle) in bundles {
        let bundle = bundle.unwrap();
        write_seed("atlas_bundle", name, 0, &bundle);
        write_seed("atlas_bundle", name, 1, &atlas_bundle::unseal(&bundle));
        n += 2;
    }
    n
}

fn main() {
    let a = overlay_seeds();
    let b = bundle_seeds();
    println!("wrote {a} overlay_archive seeds and {b} atlas_bundle seeds under corpus/");
}
