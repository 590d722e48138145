//! Shared helpers of the browser tests: where the test server is, plain `fetch`, the
//! server's request log, and unique tokens.
#![allow(dead_code)]

#[path = "../device_common/mod.rs"]
mod device_common;
pub use device_common::*;

use js_sys::{Promise, Uint8Array};
use qemuweb_storage::HttpOptions;
use std::time::Duration;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestCache, RequestInit, Response, Window, WorkerGlobalScope};

/// The test server's base URL, baked in at compile time by `scripts/browser-tests.sh`.
pub fn server() -> &'static str {
    match option_env!("QEMUWEB_TEST_SERVER") {
        Some(url) => url.trim_end_matches('/'),
        None => panic!(
            "QEMUWEB_TEST_SERVER was not set when the browser tests were built; \
             run them with scripts/browser-tests.sh"
        ),
    }
}

/// The URL of `path` on the test server.
pub fn url(path: &str) -> String {
    format!("{}/{}", server(), path.trim_start_matches('/'))
}

/// The URL of `file` served with misbehaviour `mode` under `token`.
pub fn mis_url(token: &str, mode: &str, file: &str) -> String {
    url(&format!("__mis/{token}/{mode}/{file}"))
}

/// A token no other test (or earlier run against the same server) uses.
pub fn token(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        js_sys::Date::now() as u64,
        (js_sys::Math::random() * 1e9) as u64
    )
}

fn fetch(request: &Request) -> Promise {
    let global = js_sys::global();
    if let Some(w) = global.dyn_ref::<Window>() {
        w.fetch_with_request(request)
    } else {
        global
            .unchecked_into::<WorkerGlobalScope>()
            .fetch_with_request(request)
    }
}

/// Fetches the whole of `url` with a plain GET (no Range): the oracle for HTTP reads.
pub async fn fetch_response(url: &str) -> Response {
    let init = RequestInit::new();
    init.set_method("GET");
    init.set_cache(RequestCache::NoStore);
    let request = Request::new_with_str_and_init(url, &init).unwrap();
    let response: Response = JsFuture::from(fetch(&request))
        .await
        .unwrap()
        .dyn_into()
        .unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response
}

/// The whole body of `url`.
pub async fn fetch_bytes(url: &str) -> Vec<u8> {
    let response = fetch_response(url).await;
    let buffer = JsFuture::from(response.array_buffer().unwrap())
        .await
        .unwrap();
    Uint8Array::new(&buffer).to_vec()
}

/// One line of the server's request log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: String,
    pub status: u16,
    pub bytes: u64,
}

/// The GET requests the server logged for paths starting with `prefix`.
pub async fn gets(prefix: &str) -> Vec<Logged> {
    let text = fetch_bytes(&url(&format!("__log?prefix={prefix}"))).await;
    String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Logged {
                method: f[0].into(),
                path: f[1].into(),
                range: f[2].into(),
                status: f[3].parse().unwrap(),
                bytes: f[4].parse().unwrap(),
            }
        })
        .filter(|e| e.method == "GET")
        .collect()
}

/// The GETs logged for a misbehaviour token.
pub async fn gets_for_token(token: &str) -> Vec<Logged> {
    gets(&format!("/__mis/{token}/")).await
}

/// Small chunks and fast retries.
pub fn small_options() -> HttpOptions {
    small_chunks()
        .max_retries(3)
        .retry_base_delay(Duration::from_millis(5))
        .timeout(Duration::from_secs(20))
}

pub mod http_cases;
