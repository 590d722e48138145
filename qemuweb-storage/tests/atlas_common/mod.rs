//! Helpers shared by the native Atlas tests.
#![allow(dead_code)]

use qemuweb_storage::atlas::{AtlasBackend, RecordTable};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything a backend holds: blobs (hash -> bytes) and records (table, key -> JSON).
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub records: BTreeMap<(RecordTable, String), String>,
}

pub async fn snapshot(b: &impl AtlasBackend) -> Snapshot {
    let mut blobs = BTreeMap::new();
    for h in b.list_blobs().await.unwrap() {
        blobs.insert(h.to_string(), b.get_blob(&h).await.unwrap().unwrap());
    }
    let mut records = BTreeMap::new();
    for t in RecordTable::ALL {
        for k in b.list_records(t).await.unwrap() {
            let v = b.get_record(t, &k).await.unwrap().unwrap();
            records.insert((t, k), v);
        }
    }
    Snapshot { blobs, records }
}

/// A small deterministic PRNG (splitmix64), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A fresh, private, empty directory under the system temp dir; removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = tempfile::Builder::new()
            .prefix(&format!("qemuweb-atlas-{tag}-"))
            .tempdir()
            .unwrap()
            .keep();
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
