//! The browser transport: `fetch` with `cache: no-store` and `redirect: "manual"` (see the
//! parent module on redirects), in a window or a worker. Bodies are read as streams, and
//! never more than one byte past the range, with or without `Content-Length`.

use super::{FetchError, RangeRequest, RawResponse};
use crate::error::{Result, StorageError};
use futures::future::{select, Either};
use gloo_timers::future::TimeoutFuture;
use js_sys::{Promise, Uint8Array};
use std::time::Duration;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AbortController, Headers, ReadableStreamDefaultReader, ReadableStreamReadResult, Request,
    RequestCache, RequestInit, RequestMode, RequestRedirect, Response, ResponseType, Window,
    WorkerGlobalScope,
};

pub(crate) struct Transport;

/// Aborts the fetch when the request ends early (timeout, dropped future); after a
/// completed fetch aborting does nothing.
struct AbortOnDrop(AbortController);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn describe(v: &JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

fn browser(what: &str, v: JsValue) -> FetchError {
    FetchError::Fatal(StorageError::Browser(format!("{what}: {}", describe(&v))))
}

/// `fetch` on whatever global this code runs in.
pub(crate) fn global_fetch(request: &Request) -> std::result::Result<Promise, StorageError> {
    let global = js_sys::global();
    if let Some(w) = global.dyn_ref::<Window>() {
        Ok(w.fetch_with_request(request))
    } else if let Some(w) = global.dyn_ref::<WorkerGlobalScope>() {
        Ok(w.fetch_with_request(request))
    } else {
        Err(StorageError::Browser(
            "fetch is only available in a window or a worker".into(),
        ))
    }
}

impl Transport {
    pub(crate) fn new(_timeout: Duration) -> Result<Self> {
        Ok(Self)
    }

    pub(crate) async fn get(
        &self,
        req: &RangeRequest<'_>,
    ) -> std::result::Result<RawResponse, FetchError> {
        let controller = AbortController::new().map_err(|e| browser("AbortController", e))?;
        let _abort = AbortOnDrop(controller.clone());
        let headers = Headers::new().map_err(|e| browser("Headers", e))?;
        headers
            .set("Range", &format!("bytes={}-{}", req.start, req.end))
            .map_err(|e| browser("Range header", e))?;
        if let Some(v) = req.if_range {
            headers.set("If-Range", v).map_err(|e| {
                FetchError::Fatal(StorageError::BadResponse {
                    url: req.url.to_string(),
                    reason: format!("unusable validator {v:?}: {}", describe(&e)),
                })
            })?;
        }
        let init = RequestInit::new();
        init.set_method("GET");
        init.set_cache(RequestCache::NoStore);
        init.set_mode(RequestMode::Cors);
        init.set_redirect(RequestRedirect::Manual);
        init.set_headers(&headers);
        init.set_signal(Some(&controller.signal()));
        let request = Request::new_with_str_and_init(req.url, &init).map_err(|e| {
            FetchError::Fatal(StorageError::InvalidArgument(format!(
                "bad URL {:?}: {}",
                req.url,
                describe(&e)
            )))
        })?;
        let promise = global_fetch(&request).map_err(FetchError::Fatal)?;
        let max_body = req.max_body;
        let work = Box::pin(async move {
            let response: Response = JsFuture::from(promise)
                .await
                .map_err(|e| {
                    FetchError::Transient(format!(
                        "{} (a network failure, or a cross-origin server that does not allow \
                         this origin with CORS)",
                        describe(&e)
                    ))
                })?
                .dyn_into()
                .map_err(|e| browser("fetch result", e))?;
            if response.type_() == ResponseType::Opaqueredirect {
                return Ok(RawResponse {
                    opaque_redirect: true,
                    ..RawResponse::default()
                });
            }
            let h = response.headers();
            let header = |name: &str| h.get(name).ok().flatten();
            let mut raw = RawResponse::head(response.status(), header);
            if raw.wants_body(max_body) {
                raw.body = read_body(&response, max_body).await?;
            }
            Ok(raw)
        });
        let ms = u32::try_from(req.timeout.as_millis()).unwrap_or(u32::MAX);
        match select(work, TimeoutFuture::new(ms)).await {
            Either::Left((result, _)) => result,
            Either::Right(_) => Err(FetchError::Transient(format!(
                "no complete answer within {ms} ms"
            ))),
        }
    }
}

/// Reads `response`'s body as a stream, stopping (and cancelling the stream) after
/// `max_body + 1` bytes: enough to see that a body is longer than its range, however much
/// the server would send.
async fn read_body(response: &Response, max_body: u64) -> std::result::Result<Vec<u8>, FetchError> {
    let Some(stream) = response.body() else {
        return Ok(Vec::new());
    };
    let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let limit = max_body.saturating_add(1);
    let mut body = Vec::new();
    while (body.len() as u64) < limit {
        let step: ReadableStreamReadResult = JsFuture::from(reader.read())
            .await
            .map_err(|e| FetchError::Transient(format!("reading the body: {}", describe(&e))))?
            .unchecked_into();
        if step.get_done().unwrap_or(true) {
            return Ok(body);
        }
        let chunk: Uint8Array = step.get_value().unchecked_into();
        let room = limit - body.len() as u64;
        let n = u64::from(chunk.length()).min(room) as u32;
        let at = body.len();
        body.resize(at + n as usize, 0);
        chunk.subarray(0, n).copy_to(&mut body[at..]);
    }
    // More than the range: the caller rejects it; the rest is never read.
    let _ = reader.cancel();
    Ok(body)
}

/// Waits for `d` on the browser's timer.
pub(crate) async fn sleep(d: Duration) {
    TimeoutFuture::new(u32::try_from(d.as_millis()).unwrap_or(u32::MAX)).await;
}
