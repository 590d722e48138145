//! The runner's site on 127.0.0.1, built from `qemuweb-http`: the page, its
//! configuration, the bundle and the VM's files (Range, ETags), and the serial bridge and
//! event channel the page talks to.
//!
//! Safe by default: the `Host` must be the bound address (DNS rebinding), nothing is
//! readable from other origins (no CORS, `Cross-Origin-Resource-Policy: same-origin`), and
//! the bridge (`GET /serial/in`, `POST /serial/out`, `POST /event`, `POST /snapshot`)
//! answers only requests
//! with the run's random token (`X-QemuWeb-Token`, handed to the page in `config.json`)
//! from the page's own origin; a refused request changes nothing. With the control API
//! (`qemuweb-control`), the page also long-polls its commands (`GET /control/next`) and
//! answers them (`POST /control/answer`) behind the same guard.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use qemuweb_control::ControlChannel;
use qemuweb_http::{
    empty, full, isolation, serve_file, text, ActionGuard, AllowedHosts, Body, Check, Corp,
    HostCheckLayer, RequestBody, Server, ServerConfig, Token,
};
use tokio::sync::Notify;
use tower::ServiceBuilder;

use crate::Outcome;

/// The largest `POST` the page sends (it splits serial output into pieces of 1 MiB).
const MAX_POST: usize = 4 << 20;
/// How long `GET /serial/in` waits for input before answering `204`.
const POLL: Duration = Duration::from_secs(20);

/// What the server answers for each path.
pub(crate) struct Site {
    /// URL path -> file.
    pub(crate) files: HashMap<String, PathBuf>,
    /// URL path -> generated content and its type.
    pub(crate) generated: HashMap<String, (Bytes, &'static str)>,
    pub(crate) bridge: Arc<Bridge>,
    /// The control API's commands for the page, when it is served.
    pub(crate) control: Option<Arc<ControlChannel>>,
}

/// The serial bridge and event channel between the page and the runner.
pub(crate) struct Bridge {
    pub(crate) input: Mutex<Input>,
    pub(crate) wake: Notify,
    /// Where the guest's serial output goes.
    pub(crate) output: Mutex<Box<dyn Write + Send>>,
    pub(crate) exits: mpsc::Sender<Outcome>,
    pub(crate) verbose: bool,
    /// Where a saved state goes (`POST /snapshot?at=OFFSET`), when the run saves one.
    pub(crate) snapshot: Mutex<Option<crate::save::SnapshotSink>>,
}

/// Serial input waiting for the page's next poll.
#[derive(Default)]
pub(crate) struct Input {
    pub(crate) bytes: Vec<u8>,
    pub(crate) closed: bool,
}

impl Bridge {
    /// Queues input for the guest, or marks the input closed (`bytes` empty).
    pub(crate) fn push_input(&self, bytes: &[u8]) {
        let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        if bytes.is_empty() {
            input.closed = true;
        } else {
            input.bytes.extend_from_slice(bytes);
        }
        drop(input);
        self.wake.notify_waiters();
    }

    /// Takes what is queued: `Some(bytes)`, `Some(empty)` once the input closed, `None`
    /// while nothing is there.
    fn take_input(&self) -> Option<Vec<u8>> {
        let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        if !input.bytes.is_empty() {
            Some(std::mem::take(&mut input.bytes))
        } else if input.closed {
            Some(Vec::new())
        } else {
            None
        }
    }
}

/// Starts serving `site` on `listener`; the bridge needs `token`.
pub(crate) fn start(
    listener: TcpListener,
    site: Site,
    token: Token,
) -> qemuweb_http::Result<Server> {
    let addr = listener
        .local_addr()
        .map_err(|e| qemuweb_http::HttpError::Io {
            what: "listener".into(),
            source: e,
        })?;
    let hosts = AllowedHosts::for_addr(addr);
    let guard = ActionGuard::new(token, &hosts);
    let site = Arc::new(site);
    let routes = tower::service_fn(move |req: Request<RequestBody>| {
        let (site, guard) = (site.clone(), guard.clone());
        async move { Ok::<_, Infallible>(route(&site, &guard, req).await) }
    });
    let service = ServiceBuilder::new()
        .layer(HostCheckLayer::new(hosts))
        .layer(isolation(Corp::SameOrigin))
        .service(routes);
    let config = ServerConfig {
        max_body: MAX_POST,
        ..ServerConfig::default()
    };
    Server::start(listener, config, service)
}

async fn route(site: &Site, guard: &ActionGuard, req: Request<RequestBody>) -> Response<Body> {
    let path = match req.uri().path() {
        "/" => "/page.html",
        p => p,
    }
    .to_string();
    let bridge = &site.bridge;
    match (req.method(), path.as_str()) {
        (_, "/control/next" | "/control/answer") => {
            if let Some(refusal) = guard.check(&req) {
                return refusal;
            }
            let Some(control) = &site.control else {
                return text(StatusCode::NOT_FOUND, "no control API in this run");
            };
            control_route(control, req).await
        }
        (_, "/serial/in" | "/serial/out" | "/event" | "/snapshot") => {
            if let Some(refusal) = guard.check(&req) {
                return refusal;
            }
            // Never from a cache: a kept profile keeps its port (its origin), and Chromium
            // would otherwise answer the next run's first poll with this run's final `410`.
            let mut r = match (req.method().clone(), path.as_str()) {
                (Method::GET, "/serial/in") => serial_in(bridge).await,
                (Method::POST, p) if p != "/serial/in" => {
                    let query = req.uri().query().map(str::to_string);
                    let body = match req.into_body().collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "too large"),
                    };
                    if p == "/snapshot" {
                        return bridge.snapshot_piece(query.as_deref(), &body);
                    }
                    if p == "/serial/out" {
                        let mut out = bridge.output.lock().unwrap_or_else(|e| e.into_inner());
                        let _ = out.write_all(&body).and_then(|()| out.flush());
                    } else {
                        on_event(bridge, &body);
                    }
                    no_content()
                }
                _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            };
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        (&Method::GET | &Method::HEAD, p) => {
            if let Some((content, content_type)) = site.generated.get(p) {
                let mut r = Response::new(if req.method() == Method::HEAD {
                    empty()
                } else {
                    full(content.clone())
                });
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(content.len()));
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            } else if let Some(file) = site.files.get(p) {
                let (parts, _) = req.into_parts();
                serve_file(&parts, file).await
            } else {
                text(StatusCode::NOT_FOUND, "not found")
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The page's side of the control API: `GET /control/next` answers the next command
/// (`200`, JSON), `204` after [`POLL`] without one, `410` once the VM stops;
/// `POST /control/answer` takes the page's answer to one.
async fn control_route(control: &ControlChannel, req: Request<RequestBody>) -> Response<Body> {
    match *req.method() {
        Method::GET if req.uri().path() == "/control/next" => {
            match control.next_for_page(POLL).await {
                Some(command) => {
                    let mut r = Response::new(full(command));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
                None if control.is_closed() => text(StatusCode::GONE, "the VM stopped"),
                None => no_content(),
            }
        }
        Method::POST if req.uri().path() == "/control/answer" => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "too large"),
            };
            match control.page_answer(&body) {
                Ok(()) => no_content(),
                Err(e) => text(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

fn no_content() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// `GET /serial/in`: the queued input (`200`), `410` once the input closed, or `204`
/// after [`POLL`] without input.
async fn serial_in(bridge: &Bridge) -> Response<Body> {
    let deadline = tokio::time::Instant::now() + POLL;
    loop {
        let notified = bridge.wake.notified();
        tokio::pin!(notified);
        // Registered before looking, so a push in between is not missed.
        notified.as_mut().enable();
        match bridge.take_input() {
            Some(bytes) if bytes.is_empty() => return text(StatusCode::GONE, "input closed"),
            Some(bytes) => {
                let mut r = Response::new(full(bytes));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                return r;
            }
            None => {}
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline) => return no_content(),
        }
    }
}

fn on_event(bridge: &Bridge, body: &[u8]) {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let text = |k: &str| {
        event
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    match text("type").as_str() {
        "error" => {
            let message = format!("{}: {}", text("code"), text("message"));
            if event
                .get("fatal")
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
            {
                // Printed once, on the way out.
                let _ = bridge.exits.send(Outcome::PageError(message));
            } else {
                eprintln!("headless: error: {message}");
            }
        }
        "log" => eprintln!("headless: {}: {}", text("level"), text("message")),
        "started" if bridge.verbose => eprintln!("headless: the guest runs"),
        "stopped" if bridge.verbose => {
            eprintln!("headless: the guest stopped ({})", text("reason"))
        }
        "progress" if bridge.verbose => eprintln!(
            "headless: {} {} / {} bytes",
            text("what"),
            event
                .get("bytesFetched")
                .unwrap_or(&serde_json::Value::Null),
            event.get("total").unwrap_or(&serde_json::Value::Null)
        ),
        "saved" => bridge.snapshot_done(event.get("bytes").and_then(|b| b.as_u64()).unwrap_or(0)),
        "exited" => {
            let _ = bridge.exits.send(Outcome::InputClosed);
        }
        _ => {}
    }
}
