//! Every qemu-img fixture, opened over HTTP in a browser window through
//! `format::open_image` (backing and data files through `HttpResolver`), compared byte for
//! byte with its `.raw` oracle. `scripts/browser-tests.sh` generates the fixtures into
//! `fixtures/` of the served directory.
#![cfg(target_arch = "wasm32")]

mod web_support;

use qemuweb_storage::format::{open_image, OpenOptions};
use qemuweb_storage::{BlockDevice, HttpBlockDevice, HttpOptions, HttpResolver};
use std::rc::Rc;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_support::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn every_fixture_reads_like_its_raw_oracle() {
    let tsv = String::from_utf8(fetch_bytes(&url("fixtures/fixtures.tsv")).await).unwrap();
    let mut count = 0;
    for line in tsv.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 3, "bad fixtures.tsv line {line:?}");
        let (name, image, raw) = (f[0], f[1], f[2]);
        let image_url = url(&format!("fixtures/{image}"));
        let want = fetch_bytes(&url(&format!("fixtures/{raw}"))).await;
        let options = HttpOptions::default();
        let dev = HttpBlockDevice::open(&image_url, options.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let open = OpenOptions {
            resolver: Rc::new(HttpResolver::new(&image_url, options).unwrap()),
            ..OpenOptions::default()
        };
        let disk = open_image(Box::new(dev), &open)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(disk.size(), want.len() as u64, "{name}");
        // Whole reads in uneven pieces, so reads cross cluster and chunk boundaries.
        let mut off = 0usize;
        let mut step = 1usize;
        while off < want.len() {
            let len = (step * 7919 % 300_000 + 1).min(want.len() - off);
            let got = disk
                .read_vec(off as u64, len)
                .await
                .unwrap_or_else(|e| panic!("{name}: {len} bytes at {off}: {e}"));
            assert!(got == want[off..off + len], "{name}: {len} bytes at {off}");
            off += len;
            step += 1;
        }
        count += 1;
    }
    assert!(count > 0, "fixtures.tsv lists no fixtures");
}
