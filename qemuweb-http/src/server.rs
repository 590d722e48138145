//! The server: hyper's HTTP/1.1 on a tokio runtime of its own thread, bounded.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::oneshot;
use tower::util::BoxCloneService;
use tower::ServiceBuilder;
use tower_http::limit::{RequestBodyLimitLayer, ResponseBody};

use crate::body::{Body, BoxError};
use crate::error::{HttpError, Result};

/// The request body services get: hyper's, limited to [`ServerConfig::max_body`] bytes
/// (a larger `Content-Length` is answered `413` before the service runs; a longer body
/// fails when read).
pub type RequestBody = tower_http::body::Limited<hyper::body::Incoming>;

/// The most header fields a request may have.
pub const MAX_HEADERS: usize = 100;

/// Limits for every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// The largest request body, in bytes (default 1 MiB).
    pub max_body: usize,
    /// The read buffer for a request head, in bytes (default 64 KiB; at least 8 KiB): a
    /// head still incomplete when it is full is refused (`431`), as is one of more than
    /// [`MAX_HEADERS`] header fields.
    pub max_head: usize,
    /// How long a client may take to send a request head, also between requests on a
    /// kept-alive connection (default 30 s).
    pub header_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body: 1 << 20,
            max_head: 64 << 10,
            header_timeout: Duration::from_secs(30),
        }
    }
}

/// Binds `127.0.0.1:port` (0 for a free port).
///
/// ```
/// let l = qemuweb_http::bind_loopback(0)?;
/// assert!(l.local_addr()?.ip().is_loopback());
/// # Ok::<(), qemuweb_http::HttpError>(())
/// ```
///
/// # Errors
///
/// [`HttpError::Io`] when the port cannot be bound.
pub fn bind_loopback(port: u16) -> Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| HttpError::io(format!("cannot listen on 127.0.0.1:{port}"), e))
}

/// A running server; it stops when dropped (or by [`stop`](Server::stop)).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `service` on `listener` from a thread of its own (a single-threaded tokio
    /// runtime; file reads go to tokio's blocking pool), one task per connection,
    /// HTTP/1.1 with keep-alive, within `config`'s limits.
    ///
    /// # Errors
    ///
    /// [`HttpError::Io`] when the listener or the runtime cannot be set up.
    pub fn start<S, B>(listener: TcpListener, config: ServerConfig, service: S) -> Result<Server>
    where
        S: tower::Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let addr = listener
            .local_addr()
            .map_err(|e| HttpError::io("listener", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| HttpError::io("listener", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HttpError::io("tokio runtime", e))?;
        // One concrete service type for the connections: body limit, boxed body.
        let service = BoxCloneService::new(
            ServiceBuilder::new()
                .map_response(|r: Response<ResponseBody<B>>| {
                    r.map(|b| b.map_err(Into::into).boxed_unsync())
                })
                .layer(RequestBodyLimitLayer::new(config.max_body))
                .service(service),
        );
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("qemuweb-http-{}", addr.port()))
            .spawn(move || runtime.block_on(accept_loop(listener, config, service, stop_rx)))
            .map_err(|e| HttpError::io("server thread", e))?;
        Ok(Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address listened on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://ADDR` (no trailing slash).
    ///
    /// ```no_run
    /// # fn f(server: qemuweb_http::Server) {
    /// assert!(server.url().starts_with("http://127.0.0.1:"));
    /// # }
    /// ```
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Blocks until the server ends (it does not end by itself: for a foreground server).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops accepting, drops every connection and waits for the server's thread.
    pub fn stop(self) {
        drop(self)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What every connection runs.
type Connection = BoxCloneService<Request<hyper::body::Incoming>, Response<Body>, Infallible>;

async fn accept_loop(
    listener: TcpListener,
    config: ServerConfig,
    service: Connection,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors and the like: wait a little rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            .max_headers(MAX_HEADERS)
            .max_buf_size(config.max_head.max(8192));
        connections.spawn(async move {
            // With upgrades: a service may answer `101` and take the connection over
            // (the relay's WebSocket, `hyper::upgrade::on`).
            let _ = http
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
        // Forget finished connections as we go.
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

#[cfg(test)]
mod tests {
    use crate::body::full;
    use crate::testing::{request, serve};
    use http::{Request, Response};
    use http_body_util::BodyExt;
    use std::convert::Infallible;

    #[test]
    fn request_sizes_are_bounded() {
        let server = serve(|_| {
            tower::service_fn(|req: Request<crate::RequestBody>| async move {
                let n = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes().len().to_string(),
                    Err(_) => "too long".into(),
                };
                Ok::<_, Infallible>(Response::new(full(n)))
            })
        });
        let addr = server.local_addr();
        let a = request(addr, "POST", "/", &[("Content-Length", "2000000")]);
        assert_eq!(a.status, 413);
        let names: Vec<String> = (0..150).map(|i| format!("X-H{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        let a = request(addr, "GET", "/", &many);
        assert_eq!(a.status, 431);
        let a = request(addr, "POST", "/", &[("Content-Length", "0")]);
        assert_eq!((a.status, a.body.as_slice()), (200, b"0".as_slice()));
    }
}
