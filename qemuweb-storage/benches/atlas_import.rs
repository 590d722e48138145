//! Atlas bundle import time against the number of provenance records, up to 100,000.
//!
//! Each bundle carries one small file and a chain of N provenance records (the file names
//! the newest), once listed parents first (as an export writes it) and once children
//! first (a hostile order); each is imported into an empty in-memory store. Two references
//! are measured in the same run: decoding the same bundle (`bundle::decode`: reading and
//! checking its index and chunks, linear in its size by construction), and the time per
//! record of the smallest bundle. A linear import keeps both ratios near constant as N
//! grows (the walk per record it replaced made them grow with N).
//!
//! Run with `cargo bench -p qemuweb-storage --bench atlas_import`. `ATLAS_BENCH_MAX` sets
//! the largest N (default 100000) and `ATLAS_BENCH_REPS` the repetitions (default 3; the
//! best is reported).

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    native::main();
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use futures::executor::block_on;
    use qemuweb_storage::atlas::bundle::{self, BundleChunk, BundleIndex, BundleManifest};
    use qemuweb_storage::atlas::{
        Actor, AtlasStore, ContentHash, FileMetadata, MemoryAtlasBackend, ProvenanceRecord,
        ProvenanceType, StoreOptions,
    };
    use std::time::{Duration, Instant};

    fn env_usize(name: &str, default: usize) -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// A bundle of one file whose provenance is a chain of `n` records.
    fn bundle(n: usize, children_first: bool) -> Vec<u8> {
        let data = b"one small file".to_vec();
        let store = AtlasStore::new(MemoryAtlasBackend::new());
        let meta = block_on(store.store_file("f", &data, StoreOptions::default())).unwrap();
        let manifest = block_on(store.get_manifest(&meta.manifest_hash)).unwrap();
        let content = ContentHash::of(&data);
        let mut records: Vec<ProvenanceRecord> = (0..n)
            .map(|i| {
                let r = ProvenanceRecord::new(
                    format!("rec-{i}"),
                    content,
                    ProvenanceType::Modify,
                    Actor::System,
                );
                if i == 0 {
                    r
                } else {
                    r.with_parent(format!("rec-{}", i - 1))
                }
            })
            .collect();
        if children_first {
            records.reverse();
        }
        let index = BundleIndex {
            format: bundle::BUNDLE_FORMAT_NAME.into(),
            version: bundle::BUNDLE_VERSION,
            chunks: manifest
                .chunks
                .iter()
                .map(|c| BundleChunk {
                    hash: c.hash,
                    size: c.size,
                })
                .collect(),
            manifests: vec![BundleManifest {
                hash: meta.manifest_hash,
                manifest,
            }],
            files: vec![FileMetadata {
                provenance_id: Some(format!("rec-{}", n - 1)),
                ..meta
            }],
            provenance: records,
        };
        bundle::encode(&index, |_| Ok(data.clone())).unwrap()
    }

    /// The reference: decoding the bundle (index parsed and checked, chunks hashed).
    fn decode(bytes: &[u8], n: usize) -> Duration {
        let started = Instant::now();
        let decoded = bundle::decode(bytes).unwrap();
        let took = started.elapsed();
        assert_eq!(decoded.index.provenance.len(), n);
        took
    }

    fn import(bytes: &[u8], n: usize) -> Duration {
        let store = AtlasStore::new(MemoryAtlasBackend::new());
        let started = Instant::now();
        let result = block_on(store.import_bundle(bytes)).unwrap();
        let took = started.elapsed();
        assert_eq!(result.new_provenance, n);
        took
    }

    pub fn main() {
        let max = env_usize("ATLAS_BENCH_MAX", 100_000);
        let reps = env_usize("ATLAS_BENCH_REPS", 3).max(1);
        let sizes: Vec<usize> = [1_000, 3_000, 10_000, 30_000, 100_000, 300_000]
            .into_iter()
            .filter(|&n| n <= max)
            .collect();
        println!("Atlas bundle import, a chain of N provenance records, best of {reps}");
        println!(
            "{:>8} {:>12} {:>10} {:>10} {:>10} {:>10} {:>14} {:>10}",
            "N",
            "order",
            "index MiB",
            "decode ms",
            "import ms",
            "us/record",
            "import/decode",
            "per-rec x"
        );
        for children_first in [false, true] {
            let order = if children_first {
                "children 1st"
            } else {
                "parents 1st"
            };
            let mut reference = None;
            for &n in &sizes {
                let bytes = bundle(n, children_first);
                let base = (0..reps).map(|_| decode(&bytes, n)).min().unwrap();
                let best = (0..reps).map(|_| import(&bytes, n)).min().unwrap();
                let per = best.as_secs_f64() * 1e6 / n as f64;
                let reference = *reference.get_or_insert(per);
                println!(
                    "{n:>8} {order:>12} {:>10.1} {:>10.1} {:>10.1} {per:>10.2} {:>14.2} {:>10.2}",
                    bytes.len() as f64 / (1024.0 * 1024.0),
                    base.as_secs_f64() * 1e3,
                    best.as_secs_f64() * 1e3,
                    best.as_secs_f64() / base.as_secs_f64(),
                    per / reference
                );
            }
        }
        println!(
            "import/decode: import time against decoding the same bundle; per-rec x: time per record against the {}-record bundle's",
            sizes[0]
        );
    }
}
