//! Walks of the provenance graph, each linear in the records plus their parent links.
//!
//! An Atlas bundle's index may carry up to 64 MiB of provenance records, all of them
//! untrusted: a walk of the graph per record (or an ordering that places one record per
//! pass) is quadratic, and hundreds of thousands of records would hang an import. Here the
//! graph is walked once: [`parents_first`] orders records with Kahn's algorithm (and finds
//! a cycle when it cannot place them all), [`children_first_from`] is one depth-first walk.
//!
//! Every record visited and every parent link followed is one [`step`]; the crate's tests
//! hold a 100,000-record import to a linear number of steps.

use super::types::ProvenanceRecord;
use crate::error::{Result, StorageError};
use std::collections::{HashMap, VecDeque};

/// Counts one step of a walk (a record visited or a parent link followed). Free outside
/// the crate's tests, where it enforces a budget.
#[inline]
pub(crate) fn step() {
    #[cfg(test)]
    budget::count();
}

fn cycle_error(a: &str, b: &str) -> StorageError {
    StorageError::Integrity(format!(
        "provenance records form a cycle through {a:?} and {b:?}"
    ))
}

/// `records` ordered so that each comes after every one of its parents that is also in
/// `records` (parents outside `records` are ignored: the caller checks them). Records
/// without such an order between them keep their relative order from `records`.
///
/// Fails with [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) when the records form
/// a cycle, or when two records share an id.
pub(crate) fn parents_first<'a>(
    records: &[&'a ProvenanceRecord],
) -> Result<Vec<&'a ProvenanceRecord>> {
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        step();
        if at.insert(r.id.as_str(), i).is_some() {
            return Err(StorageError::Integrity(format!(
                "provenance record {:?} is listed twice",
                r.id
            )));
        }
    }
    // Links inside the set, as (parent, child) in compressed rows: children of `p` are
    // `child[first[p]..first[p + 1]]`.
    let mut waiting = vec![0usize; records.len()];
    let mut first = vec![0usize; records.len() + 1];
    for (i, r) in records.iter().enumerate() {
        for p in &r.parents {
            step();
            if let Some(&j) = at.get(p.as_str()) {
                waiting[i] += 1;
                first[j + 1] += 1;
            }
        }
    }
    for j in 0..records.len() {
        first[j + 1] += first[j];
    }
    let mut fill = first.clone();
    let mut child = vec![0usize; first[records.len()]];
    for (i, r) in records.iter().enumerate() {
        for p in &r.parents {
            step();
            if let Some(&j) = at.get(p.as_str()) {
                child[fill[j]] = i;
                fill[j] += 1;
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..records.len()).filter(|&i| waiting[i] == 0).collect();
    let mut out = Vec::with_capacity(records.len());
    while let Some(j) = ready.pop_front() {
        step();
        out.push(records[j]);
        for &i in &child[first[j]..first[j + 1]] {
            step();
            waiting[i] -= 1;
            if waiting[i] == 0 {
                ready.push_back(i);
            }
        }
    }
    if out.len() == records.len() {
        return Ok(out);
    }
    // The records left all wait on a parent that is left too: following such parents
    // from any of them must come back to a record already seen, which is on a cycle.
    let mut seen = vec![false; records.len()];
    let mut i = (0..records.len())
        .find(|&i| waiting[i] > 0)
        .expect("a record is left");
    loop {
        step();
        seen[i] = true;
        let next = records[i]
            .parents
            .iter()
            .filter_map(|p| at.get(p.as_str()).copied())
            .find(|&j| waiting[j] > 0)
            .expect("a record left waits on a parent left");
        if seen[next] {
            return Err(cycle_error(&records[next].id, &records[i].id));
        }
        i = next;
    }
}

/// The records reachable from `start` in `records`, each before its parents (the reverse
/// post-order of one depth-first walk). Parents absent from `records` are skipped (the
/// caller checks they exist elsewhere); a cycle is an error.
pub(crate) fn children_first_from(
    start: &str,
    records: &HashMap<String, ProvenanceRecord>,
) -> Result<Vec<ProvenanceRecord>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    let mut post: Vec<&ProvenanceRecord> = Vec::new();
    let Some(first) = records.get(start) else {
        return Err(StorageError::NotFound(format!(
            "provenance record {start:?}"
        )));
    };
    // An explicit stack of (record, index of the next parent to visit): no recursion, so
    // a long hostile chain cannot overflow the call stack.
    let mut stack: Vec<(&ProvenanceRecord, usize)> = vec![(first, 0)];
    marks.insert(first.id.as_str(), Mark::OnPath);
    while let Some(top) = stack.last_mut() {
        step();
        let (rec, i) = (top.0, top.1);
        if i < rec.parents.len() {
            top.1 += 1;
            let p = rec.parents[i].as_str();
            match marks.get(p) {
                Some(Mark::OnPath) => return Err(cycle_error(p, &rec.id)),
                Some(Mark::Done) => {}
                None => {
                    if let Some(parent) = records.get(p) {
                        marks.insert(p, Mark::OnPath);
                        stack.push((parent, 0));
                    }
                }
            }
        } else {
            marks.insert(rec.id.as_str(), Mark::Done);
            post.push(rec);
            stack.pop();
        }
    }
    Ok(post.into_iter().rev().cloned().collect())
}

/// The tests' step budget: [`step`] panics once a test's budget is spent, so a walk that
/// is not linear fails at once instead of running for hours.
#[cfg(test)]
pub(crate) mod budget {
    use std::cell::Cell;

    thread_local! {
        static STEPS: Cell<u64> = const { Cell::new(0) };
        static LIMIT: Cell<u64> = const { Cell::new(u64::MAX) };
    }

    pub(crate) fn count() {
        let n = STEPS.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        let limit = LIMIT.with(Cell::get);
        assert!(n <= limit, "a provenance walk took more than {limit} steps");
    }

    /// Runs `f` with at most `limit` steps on this thread; returns its result and the
    /// steps it took.
    pub(crate) fn within<T>(limit: u64, f: impl FnOnce() -> T) -> (T, u64) {
        STEPS.with(|s| s.set(0));
        LIMIT.with(|l| l.set(limit));
        let out = f();
        LIMIT.with(|l| l.set(u64::MAX));
        (out, STEPS.with(Cell::get))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atlas::bundle::{self, BundleChunk, BundleIndex, BundleManifest};
    use crate::atlas::{
        Actor, AtlasStore, ContentHash, FileManifest, FileMetadata, MemoryAtlasBackend,
        ProvenanceType, StoreOptions,
    };
    use futures::executor::block_on;

    fn rec(id: &str, parents: &[&str]) -> ProvenanceRecord {
        let mut r = ProvenanceRecord::new(
            id,
            ContentHash::of(b"content"),
            ProvenanceType::Derive,
            Actor::System,
        );
        r.parents = parents.iter().map(|p| p.to_string()).collect();
        r
    }

    fn ids(v: &[&ProvenanceRecord]) -> Vec<String> {
        v.iter().map(|r| r.id.clone()).collect()
    }

    #[test]
    fn parents_come_first_and_unrelated_records_keep_their_order() {
        // A diamond listed children first, an unrelated record, a parent outside the set.
        let recs = [
            rec("d", &["b", "c"]),
            rec("x", &["outside"]),
            rec("b", &["a"]),
            rec("c", &["a"]),
            rec("a", &[]),
        ];
        let refs: Vec<_> = recs.iter().collect();
        assert_eq!(
            ids(&parents_first(&refs).unwrap()),
            ["x", "a", "b", "c", "d"]
        );
    }

    #[test]
    fn cycles_and_duplicates_are_integrity_errors() {
        for (recs, names) in [
            (vec![rec("p", &["q"]), rec("q", &["p"])], ["p", "q"]),
            // A cycle reached only through a side branch.
            (
                vec![
                    rec("top", &["a"]),
                    rec("a", &["b"]),
                    rec("b", &["c"]),
                    rec("c", &["b"]),
                ],
                ["b", "c"],
            ),
        ] {
            let refs: Vec<_> = recs.iter().collect();
            let e = parents_first(&refs).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Integrity);
            let text = e.to_string();
            assert!(text.contains("cycle"), "{text}");
            for n in names {
                assert!(text.contains(&format!("{n:?}")), "{text}");
            }
        }
        let recs = [rec("p", &[]), rec("p", &[])];
        let refs: Vec<_> = recs.iter().collect();
        let e = parents_first(&refs).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
    }

    /// A bundle of one small file whose provenance is `records`, the file naming `last`.
    fn bundle_with(records: Vec<ProvenanceRecord>, last: &str) -> Vec<u8> {
        let data = b"the file".to_vec();
        let store = AtlasStore::new(MemoryAtlasBackend::new());
        let meta: FileMetadata =
            block_on(store.store_file("f", &data, StoreOptions::default())).unwrap();
        let manifest: FileManifest = block_on(store.get_manifest(&meta.manifest_hash)).unwrap();
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
                provenance_id: Some(last.into()),
                ..meta
            }],
            provenance: records,
        };
        bundle::encode(&index, |_| Ok(data.clone())).unwrap()
    }

    /// Imports `bytes` into an empty store within `limit` walk steps.
    fn import_within(bytes: &[u8], limit: u64) -> (usize, u64) {
        let store = AtlasStore::new(MemoryAtlasBackend::new());
        let (result, steps) = budget::within(limit, || block_on(store.import_bundle(bytes)));
        let result = result.unwrap();
        assert_eq!(result.files.len(), 1);
        (result.new_provenance, steps)
    }

    /// Issue 13: the import walked the whole graph once per provenance record (and
    /// ordered records one per pass), quadratic in the records: a 64 MiB index could hang
    /// it. A 100,000-record bundle now imports in a number of walk steps linear in the
    /// records and links, in the shapes that were worst: one long chain, listed parents
    /// first (as an export writes it) and children first, and records with many parents.
    #[test]
    fn a_100000_record_bundle_imports_in_linear_steps() {
        const N: usize = 100_000;
        let id = |i: usize| format!("r{i}");
        let chain: Vec<ProvenanceRecord> = (0..N)
            .map(|i| {
                let mut r = rec(&id(i), &[]);
                if i > 0 {
                    r.parents.push(id(i - 1));
                }
                r
            })
            .collect();
        let links = N - 1;
        // A linear walk visits each record and link a few times; 16 is a generous constant,
        // far below the N * N / 2 steps of a walk per record.
        let limit = 16 * (N + links) as u64;
        let (new, steps) = import_within(&bundle_with(chain.clone(), &id(N - 1)), limit);
        assert_eq!(new, N);
        println!("chain, parents first: {steps} steps for {N} records");
        let mut reversed = chain;
        reversed.reverse();
        let (new, steps) = import_within(&bundle_with(reversed, &id(N - 1)), limit);
        assert_eq!(new, N);
        println!("chain, children first: {steps} steps for {N} records");

        // Layers of 1,000 records, each naming 10 records of the layer before.
        let width = 1_000;
        let mut links = 0;
        let layered: Vec<ProvenanceRecord> = (0..N)
            .map(|i| {
                let mut r = rec(&id(i), &[]);
                if i >= width {
                    let base = (i / width - 1) * width;
                    for k in 0..10 {
                        r.parents.push(id(base + (i + k * 97) % width));
                    }
                    links += 10;
                }
                r
            })
            .rev()
            .collect();
        let limit = 16 * (N + links) as u64;
        let (new, steps) = import_within(&bundle_with(layered, &id(N - 1)), limit);
        assert_eq!(new, N);
        println!("layered: {steps} steps for {N} records and {links} links");

        // One record naming every other one as a parent.
        let mut star: Vec<ProvenanceRecord> = (0..N - 1).map(|i| rec(&id(i), &[])).collect();
        star.push(rec(&id(N - 1), &[]));
        star[N - 1].parents = (0..N - 1).map(id).collect();
        let limit = 16 * (N + N - 1) as u64;
        let (new, steps) = import_within(&bundle_with(star, &id(N - 1)), limit);
        assert_eq!(new, N);
        println!("star: {steps} steps for {N} records");
    }

    /// Imports `bytes` into an empty store within `limit` walk steps, expecting it refused:
    /// returns the error, after checking that nothing of the bundle was stored.
    fn refused_within(bytes: &[u8], limit: u64, probe: &str) -> StorageError {
        let store = AtlasStore::new(MemoryAtlasBackend::new());
        let (result, _) = budget::within(limit, || block_on(store.import_bundle(bytes)));
        let e = result.unwrap_err();
        assert!(
            block_on(store.provenance(probe)).unwrap().is_none(),
            "{probe} was stored"
        );
        assert!(block_on(store.list_files(&Default::default()))
            .unwrap()
            .is_empty());
        e
    }

    /// Issue 13: a hostile deep graph is refused with a typed error, in linear steps too: a
    /// 100,000-record chain whose oldest record names the newest (one cycle through every
    /// record), and a wide graph of 100,000 records where one record deep inside names a
    /// parent that is nowhere.
    #[test]
    fn a_deep_cycle_or_a_dangling_parent_is_a_typed_error_in_linear_steps() {
        const N: usize = 100_000;
        let id = |i: usize| format!("r{i}");
        // Record i names i - 1, and r0 names the newest.
        let cycle: Vec<ProvenanceRecord> = (0..N)
            .map(|i| rec(&id(i), &[&id((i + N - 1) % N)]))
            .collect();
        let e = refused_within(&bundle_with(cycle, &id(N - 1)), 16 * 2 * N as u64, &id(0));
        assert_eq!(e.kind(), crate::ErrorKind::Integrity);
        assert!(e.to_string().contains("cycle"), "{e}");

        // Layers of 1,000 records, each naming 3 of the layer before; one record in the
        // middle layer also names "nowhere".
        let width = 1_000;
        let mut wide: Vec<ProvenanceRecord> = (0..N)
            .map(|i| {
                let mut r = rec(&id(i), &[]);
                if i >= width {
                    let base = (i / width - 1) * width;
                    for k in 0..3 {
                        r.parents.push(id(base + (i + k * 331) % width));
                    }
                }
                r
            })
            .collect();
        wide[N / 2 + 17].parents.push("nowhere".into());
        let e = refused_within(&bundle_with(wide, &id(N - 1)), 16 * 5 * N as u64, &id(0));
        assert_eq!(e.kind(), crate::ErrorKind::Integrity);
        let text = e.to_string();
        assert!(text.contains("\"nowhere\""), "{text}");
        assert!(text.contains(&format!("{:?}", id(N / 2 + 17))), "{text}");
    }

    #[test]
    fn the_budget_stops_a_walk_that_is_too_long() {
        let recs: Vec<_> = (0..100).map(|i| rec(&format!("r{i}"), &[])).collect();
        let refs: Vec<_> = recs.iter().collect();
        let r = std::panic::catch_unwind(|| {
            budget::within(10, || parents_first(&refs).map(|v| v.len()))
        });
        assert!(r.is_err());
        let (n, steps) = budget::within(1_000, || parents_first(&refs).unwrap().len());
        assert_eq!(n, 100);
        assert!(steps <= 1_000);
    }

    #[test]
    fn a_long_chain_walks_without_recursion() {
        let n = 200_000;
        let records: HashMap<String, ProvenanceRecord> = (0..n)
            .map(|i| {
                let parents: &[&str] = &[];
                let mut r = rec(&format!("r{i}"), parents);
                if i > 0 {
                    r.parents.push(format!("r{}", i - 1));
                }
                (r.id.clone(), r)
            })
            .collect();
        let (out, steps) = budget::within(4 * 2 * n as u64, || {
            children_first_from(&format!("r{}", n - 1), &records).unwrap()
        });
        assert_eq!(out.len(), n);
        assert_eq!(out[0].id, format!("r{}", n - 1));
        assert!(steps <= 4 * n as u64, "{steps}");
    }
}
