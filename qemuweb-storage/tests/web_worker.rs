//! `HttpBlockDevice` in a dedicated worker of headless Chromium (fetch through `WorkerGlobalScope`), against the real test server.
//! Run with `scripts/browser-tests.sh`.
#![cfg(target_arch = "wasm32")]

mod web_support;

use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

http_case_tests!();

#[wasm_bindgen_test]
fn really_runs_in_a_worker() {
    use wasm_bindgen::JsCast;
    assert!(js_sys::global()
        .dyn_ref::<web_sys::WorkerGlobalScope>()
        .is_some());
}
