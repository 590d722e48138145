//! Atlas provenance: records, chains over a DAG, and detection of missing parents,
//! cycles and forged records.
#![cfg(not(target_arch = "wasm32"))]

mod atlas_common;

use futures::executor::block_on;
use qemuweb_storage::atlas::*;
use qemuweb_storage::ErrorKind;

fn ids(chain: &[ProvenanceRecord]) -> Vec<&str> {
    chain.iter().map(|r| r.id.as_str()).collect()
}

async fn store_with_file() -> (AtlasStore<MemoryAtlasBackend>, ContentHash) {
    let store = AtlasStore::new(MemoryAtlasBackend::new());
    let m = store
        .store_file("base.qcow2", b"base image", StoreOptions::default())
        .await
        .unwrap();
    (store, m.manifest_hash)
}

#[test]
fn linear_chain_reads_newest_to_oldest() {
    block_on(async {
        let (store, m) = store_with_file().await;
        let mut dl = ProvenanceRecord::new("download", m, ProvenanceType::Download, Actor::User);
        dl.source = Some("https://example.invalid/alpine.qcow2".into());
        dl.timestamp_ms = Some(1_700_000_000_000);
        store.add_provenance(dl.clone()).await.unwrap();
        let conv = ProvenanceRecord::new("convert", m, ProvenanceType::Derive, Actor::System)
            .with_parent("download");
        store.add_provenance(conv).await.unwrap();
        let mut build = ProvenanceRecord::new("build", m, ProvenanceType::Build, Actor::Build)
            .with_parent("convert");
        build.build_info = Some(BuildInfo {
            tool: "mkimage 1.0".into(),
            command: Some("mkimage -o out".into()),
            inputs: vec![m],
        });
        store.add_provenance(build.clone()).await.unwrap();

        let chain = store.provenance_chain("build").await.unwrap();
        assert_eq!(ids(&chain), ["build", "convert", "download"]);
        assert_eq!(chain[0], build);
        assert_eq!(chain[2], dl);
        assert_eq!(
            ids(&store.provenance_chain("download").await.unwrap()),
            ["download"]
        );
        assert_eq!(
            store.provenance_chain("nope").await.unwrap_err().kind(),
            ErrorKind::NotFound
        );

        // A file can point at its record; the JSON uses the web app's field names.
        let mut o = StoreOptions::new(ManifestType::Qcow2, FileOrigin::Built);
        o.provenance_id = Some("build".into());
        let f = store
            .store_file("built.qcow2", b"base image", o)
            .await
            .unwrap();
        assert_eq!(f.provenance_id.as_deref(), Some("build"));
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["manifestHash"], f.manifest_hash.to_string());
        assert_ne!(f.manifest_hash, m, "the type is part of the manifest");
        assert_eq!(json["type"], "qcow2");
        assert_eq!(json["provenanceId"], "build");
        assert_eq!(json["sharedWithAssistant"], false);
        let json = serde_json::to_value(&build).unwrap();
        assert_eq!(json["type"], "build");
        assert_eq!(json["actor"], "build");
        assert_eq!(json["buildInfo"]["tool"], "mkimage 1.0");
    });
}

#[test]
fn dag_chain_lists_each_ancestor_once_children_before_parents() {
    block_on(async {
        let (store, m) = store_with_file().await;
        let rec = |id: &str, parents: &[&str]| {
            let mut r = ProvenanceRecord::new(id, m, ProvenanceType::Derive, Actor::Assistant);
            r.parents = parents.iter().map(|s| s.to_string()).collect();
            r
        };
        //      root
        //     /    \
        //   left  right
        //     \    /
        //      merge
        //        |
        //       top
        for r in [
            rec("root", &[]),
            rec("left", &["root"]),
            rec("right", &["root"]),
            rec("merge", &["left", "right"]),
            rec("top", &["merge"]),
        ] {
            store.add_provenance(r).await.unwrap();
        }
        let chain = store.provenance_chain("top").await.unwrap();
        let order = ids(&chain);
        assert_eq!(order.len(), 5, "{order:?}");
        assert_eq!(order[0], "top");
        assert_eq!(order[1], "merge");
        assert_eq!(*order.last().unwrap(), "root");
        for r in &chain {
            let me = order.iter().position(|x| *x == r.id).unwrap();
            for p in &r.parents {
                let parent = order.iter().position(|x| x == p).unwrap();
                assert!(me < parent, "{} must come before its parent {p}", r.id);
            }
        }
    });
}

#[test]
fn add_refuses_missing_parents_self_parents_and_conflicting_ids() {
    block_on(async {
        let (store, m) = store_with_file().await;
        let orphan = ProvenanceRecord::new("orphan", m, ProvenanceType::Derive, Actor::User)
            .with_parent("ghost");
        assert_eq!(
            store.add_provenance(orphan).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(store.provenance("orphan").await.unwrap().is_none());

        let selfish =
            ProvenanceRecord::new("me", m, ProvenanceType::Derive, Actor::User).with_parent("me");
        assert_eq!(
            store.add_provenance(selfish).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );

        let a = ProvenanceRecord::new("a", m, ProvenanceType::Create, Actor::User);
        store.add_provenance(a.clone()).await.unwrap();
        // Adding the identical record again is fine; a different one under the id is not.
        store.add_provenance(a.clone()).await.unwrap();
        let mut other = a.clone();
        other.actor = Actor::Assistant;
        assert_eq!(
            store.add_provenance(other).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let twice = ProvenanceRecord::new("b", m, ProvenanceType::Derive, Actor::User)
            .with_parent("a")
            .with_parent("a");
        assert_eq!(
            store.add_provenance(twice).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            store
                .add_provenance(ProvenanceRecord::new(
                    "",
                    m,
                    ProvenanceType::Create,
                    Actor::User
                ))
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
        // History may describe content the store does not hold.
        let elsewhere = ProvenanceRecord::new(
            "elsewhere",
            ContentHash::of(b"not here"),
            ProvenanceType::Download,
            Actor::User,
        );
        store.add_provenance(elsewhere).await.unwrap();
    });
}

/// A user's record `id` of content `m`, derived from `parent`.
fn derived(id: &str, m: ContentHash, parent: &str) -> ProvenanceRecord {
    ProvenanceRecord::new(id, m, ProvenanceType::Derive, Actor::User).with_parent(parent)
}

/// A store over a backend the test can also write to directly, holding the chain `ids`
/// (oldest first) of content `m`: a user's created record, then each derived from the one
/// before.
async fn store_with_chain(
    ids: &[&str],
) -> (
    MemoryAtlasBackend,
    AtlasStore<MemoryAtlasBackend>,
    ContentHash,
) {
    let backend = MemoryAtlasBackend::new();
    let store = AtlasStore::new(backend.clone());
    let m = ContentHash::of(b"m");
    for (i, id) in ids.iter().enumerate() {
        let rec = match i {
            0 => ProvenanceRecord::new(*id, m, ProvenanceType::Create, Actor::User),
            _ => derived(id, m, ids[i - 1]),
        };
        store.add_provenance(rec).await.unwrap();
    }
    (backend, store, m)
}

/// Writes a record straight into the backend, as corruption or a buggy writer could.
async fn raw_put(backend: &MemoryAtlasBackend, rec: &ProvenanceRecord) {
    backend
        .put_record(
            RecordTable::Provenance,
            &rec.id,
            &serde_json::to_string(rec).unwrap(),
        )
        .await
        .unwrap();
}

#[test]
fn chain_detects_cycles_in_stored_records() {
    block_on(async {
        let (backend, store, m) = store_with_chain(&["start", "x", "y"]).await;
        assert_eq!(
            ids(&store.provenance_chain("y").await.unwrap()),
            ["y", "x", "start"]
        );
        // Rewrite "start" so that it descends from "y": start -> y -> x -> start.
        raw_put(
            &backend,
            &ProvenanceRecord::new("start", m, ProvenanceType::Create, Actor::User)
                .with_parent("y"),
        )
        .await;
        for id in ["y", "x", "start"] {
            let e = store.provenance_chain(id).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "{id}: {e}");
            assert!(e.to_string().contains("cycle"), "{e}");
        }
        // A two-node cycle, and a cycle reached only through a side branch.
        raw_put(&backend, &derived("p", m, "q")).await;
        raw_put(&backend, &derived("q", m, "p")).await;
        raw_put(&backend, &derived("side", m, "p")).await;
        assert_eq!(
            store.provenance_chain("side").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
    });
}

#[test]
fn chain_detects_missing_parents_and_forged_records() {
    block_on(async {
        let (backend, store, m) = store_with_chain(&["root", "child"]).await;
        backend
            .delete_record(RecordTable::Provenance, "root")
            .await
            .unwrap();
        let e = store.provenance_chain("child").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(e.to_string().contains("missing parent"), "{e}");

        // A record filed under another id, and one that is not JSON.
        raw_put(
            &backend,
            &ProvenanceRecord::new("root", m, ProvenanceType::Create, Actor::User),
        )
        .await;
        let forged = ProvenanceRecord::new("imposter", m, ProvenanceType::Create, Actor::User);
        backend
            .put_record(
                RecordTable::Provenance,
                "root",
                &serde_json::to_string(&forged).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            store.provenance_chain("child").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        backend
            .put_record(RecordTable::Provenance, "root", "{not json")
            .await
            .unwrap();
        assert_eq!(
            store.provenance("root").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
        backend
            .put_record(
                RecordTable::Provenance,
                "root",
                r#"{"id":"root","manifestHash":"sha256:zz","type":"create","actor":"user"}"#,
            )
            .await
            .unwrap();
        assert_eq!(
            store.provenance("root").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
    });
}

#[test]
fn long_chains_do_not_overflow_the_stack() {
    block_on(async {
        let store = AtlasStore::new(MemoryAtlasBackend::new());
        let m = ContentHash::of(b"m");
        let n = 5000;
        store
            .add_provenance(ProvenanceRecord::new(
                "r0",
                m,
                ProvenanceType::Create,
                Actor::System,
            ))
            .await
            .unwrap();
        for i in 1..n {
            store
                .add_provenance(
                    ProvenanceRecord::new(
                        format!("r{i}"),
                        m,
                        ProvenanceType::Modify,
                        Actor::System,
                    )
                    .with_parent(format!("r{}", i - 1)),
                )
                .await
                .unwrap();
        }
        let chain = store
            .provenance_chain(&format!("r{}", n - 1))
            .await
            .unwrap();
        assert_eq!(chain.len(), n);
        assert_eq!(chain[n - 1].id, "r0");
    });
}
