//! `HttpBlockDevice` in a browser window (headless Chromium), against the real test server.
//! Run with `scripts/browser-tests.sh`.
#![cfg(target_arch = "wasm32")]

mod web_support;

use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_support::http_cases as cases;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn random_reads_are_byte_exact() {
    cases::random_reads_are_byte_exact().await;
}

#[wasm_bindgen_test]
async fn cache_read_ahead_and_merging_show_in_the_log() {
    cases::cache_read_ahead_and_merging_show_in_the_log().await;
}

#[wasm_bindgen_test]
async fn concurrent_reads_are_correct_and_shared() {
    cases::concurrent_reads_are_correct_and_shared().await;
}

#[wasm_bindgen_test]
async fn progress_is_reported() {
    cases::progress_is_reported().await;
}

#[wasm_bindgen_test]
async fn transient_failures_are_retried() {
    cases::transient_failures_are_retried().await;
}

#[wasm_bindgen_test]
async fn misbehaviours_give_typed_errors() {
    cases::misbehaviours_give_typed_errors().await;
}

#[wasm_bindgen_test]
async fn a_swapped_image_is_detected() {
    cases::a_swapped_image_is_detected().await;
}

#[wasm_bindgen_test]
async fn a_weak_etag_pins_last_modified() {
    cases::a_weak_etag_pins_last_modified().await;
}

#[wasm_bindgen_test]
async fn device_basics_and_resolver() {
    cases::device_basics_and_resolver().await;
}
