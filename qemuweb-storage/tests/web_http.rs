//! `HttpBlockDevice` in a browser window (headless Chromium), against the real test server.
//! Run with `scripts/browser-tests.sh`.
#![cfg(target_arch = "wasm32")]

mod web_support;

use wasm_bindgen_test::wasm_bindgen_test_configure;

wasm_bindgen_test_configure!(run_in_browser);

http_case_tests!();
