//! The control endpoint: `POST /v1/command` on loopback, behind `qemuweb-http`'s host
//! check and action guard (the run's token, no other origin).

use crate::channel::{ControlChannel, PageResult};
use crate::command::ControlCommand;
use crate::error::{ControlError, Result};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use qemuweb_http::{
    full, text, ActionGuard, ActionGuardLayer, AllowedHosts, Body, HostCheckLayer, RequestBody,
    Server, ServerConfig, Token,
};
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;

/// How long a command may wait for the page (typing a long text takes a while).
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest request body.
const MAX_BODY: usize = 256 << 10;

/// Takes bytes for the guest's serial port.
type SerialIn = Arc<dyn Fn(&[u8]) + Send + Sync>;
/// Stops the VM.
type Stop = Arc<dyn Fn() + Send + Sync>;

/// What the runner does for the commands it handles itself.
#[derive(Clone)]
pub struct Hooks {
    serial_in: SerialIn,
    stop: Stop,
}

impl Hooks {
    /// `serial_in` queues bytes for the guest's serial port; `stop` stops the VM (with a
    /// final sync) and ends the run.
    pub fn new(
        serial_in: impl Fn(&[u8]) + Send + Sync + 'static,
        stop: impl Fn() + Send + Sync + 'static,
    ) -> Hooks {
        Hooks {
            serial_in: Arc::new(serial_in),
            stop: Arc::new(stop),
        }
    }
}

/// The control API's HTTP server; stops when dropped.
pub struct ControlServer {
    server: Server,
    token: Token,
}

impl ControlServer {
    /// Serves the control API on `addr` (a loopback address; port 0 picks one).
    ///
    /// # Errors
    ///
    /// [`ControlError::NotLoopback`] for any other address; [`ControlError::Http`] if it
    /// cannot be bound or served.
    pub fn start(
        addr: SocketAddr,
        channel: Arc<ControlChannel>,
        hooks: Hooks,
    ) -> Result<ControlServer> {
        if !addr.ip().is_loopback() {
            return Err(ControlError::NotLoopback(addr.to_string()));
        }
        let listener = TcpListener::bind(addr).map_err(|e| {
            ControlError::Http(qemuweb_http::HttpError::Io {
                what: format!("binding {addr}"),
                source: e,
            })
        })?;
        let bound = listener.local_addr().map_err(|e| {
            ControlError::Http(qemuweb_http::HttpError::Io {
                what: "the control listener".into(),
                source: e,
            })
        })?;
        let hosts = AllowedHosts::for_addr(bound);
        let token = Token::generate()?;
        let endpoint = tower::service_fn(move |req: Request<RequestBody>| {
            let (channel, hooks) = (channel.clone(), hooks.clone());
            async move { Ok::<_, Infallible>(route(&channel, &hooks, req).await) }
        });
        let service = ServiceBuilder::new()
            .layer(HostCheckLayer::new(hosts.clone()))
            .layer(ActionGuardLayer::new(ActionGuard::new(
                token.clone(),
                &hosts,
            )))
            .service(endpoint);
        let config = ServerConfig {
            max_body: MAX_BODY,
            ..ServerConfig::default()
        };
        let server = Server::start(listener, config, service)?;
        Ok(ControlServer { server, token })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The run's token: every request must send it as `X-QemuWeb-Token`.
    pub fn token(&self) -> &str {
        self.token.as_str()
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn failure(e: &ControlError) -> Response<Body> {
    json(
        e.status(),
        serde_json::json!({"ok": false, "error": {"code": e.code(), "message": e.to_string()}}),
    )
}

async fn route(
    channel: &ControlChannel,
    hooks: &Hooks,
    req: Request<RequestBody>,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/command") => {}
        (_, "/v1/command") => return text(StatusCode::METHOD_NOT_ALLOWED, "POST a JSON command"),
        _ => return text(StatusCode::NOT_FOUND, "not found: POST /v1/command"),
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return failure(&ControlError::Malformed(format!(
                "the request body is over {MAX_BODY} bytes"
            )))
        }
    };
    match run(channel, hooks, &body).await {
        Ok(r) => r,
        Err(e) => failure(&e),
    }
}

async fn run(channel: &ControlChannel, hooks: &Hooks, body: &[u8]) -> Result<Response<Body>> {
    let command = ControlCommand::parse(body)?;
    let ok = || json(StatusCode::OK, serde_json::json!({"ok": true}));
    if let Some(op) = command.page_op() {
        return Ok(match channel.ask_page(&op, PAGE_TIMEOUT).await? {
            PageResult::Done => ok(),
            PageResult::Png(png) => {
                let mut r = Response::new(full(png));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
                r
            }
        });
    }
    Ok(match command {
        ControlCommand::SerialIn { data } => {
            (hooks.serial_in)(data.as_bytes());
            ok()
        }
        ControlCommand::SerialOut { since } => {
            let read = channel.serial_since(since);
            json(
                StatusCode::OK,
                serde_json::json!({"ok": true, "data": read.data, "cursor": read.cursor, "lost": read.lost}),
            )
        }
        ControlCommand::Stop => {
            (hooks.stop)();
            channel.close();
            ok()
        }
        // The page's commands returned above.
        _ => ok(),
    })
}
