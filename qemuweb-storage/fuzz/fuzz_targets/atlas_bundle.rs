//! Imports arbitrary bytes as an Atlas bundle (`AtlasStore::import_bundle`) into a memory
//! store that already holds a file with a provenance record. A failed import must be a
//! typed error and leave every blob and record of the store as it was; after a successful
//! one every imported file must read back whole and verify. The first input byte picks
//! whether the harness seals the header and index (see `qemuweb_storage_fuzz`).
#![no_main]

use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use qemuweb_storage::ErrorKind;
use qemuweb_storage_fuzz::atlas_bundle::{bundle, snapshot, store};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bundle = bundle(mode, rest);
    let store = store();
    let before = snapshot(store.backend());
    match block_on(store.import_bundle(&bundle)) {
        Err(e) => {
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::Integrity | ErrorKind::Unsupported | ErrorKind::InvalidArgument
                ),
                "untyped failure: {e:?}"
            );
            assert!(
                snapshot(store.backend()) == before,
                "a failed import changed the store: {e}"
            );
        }
        Ok(result) => block_on(async {
            for f in &result.files {
                let meta = store
                    .file(&f.name)
                    .await
                    .unwrap()
                    .expect("an imported file");
                assert_eq!(&meta, f);
                let bytes = store.read_file(&f.name).await.unwrap();
                assert_eq!(bytes.len() as u64, f.size);
                store.verify_file(&f.name).await.unwrap();
                if let Some(id) = &f.provenance_id {
                    store.provenance_chain(id).await.unwrap();
                }
            }
        }),
    }
});
