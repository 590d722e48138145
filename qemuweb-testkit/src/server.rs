//! The test kit's HTTP server: `qemuweb-http`'s file server on 127.0.0.1 as an image host
//! for tests, with a request log and scripted misbehaviour.
//!
//! It serves the files under one root directory with what a disk-image client relies on
//! (single byte ranges, strong `ETag`s, `If-Range`, `HEAD`; see `qemuweb_http::StaticFiles`)
//! and the COOP/COEP headers, so test pages served by it are cross-origin isolated. As a
//! stand-in for a public image host it lets **every** origin read its files
//! (`Access-Control-Allow-Origin: *`, `Cross-Origin-Resource-Policy: cross-origin`): an
//! explicit opt-in that only this test server makes. Like every server of the project it
//! refuses requests whose `Host` is not its own address.
//!
//! Every request is logged in memory ([`TestServer::log`], or `GET /__log` as text) so
//! tests can prove how much was fetched: `GET /__log` answers one request a line,
//! `METHOD<TAB>PATH<TAB>RANGE<TAB>STATUS<TAB>BODY-BYTES` (`-` for no range); with
//! `?prefix=/some/path` only the lines whose path starts with it.
//!
//! # Scripted misbehaviour
//!
//! A path `/__mis/<token>/<mode>/<file>` serves `<file>` with the behaviour `<mode>`
//! (`qemuweb_http::MisbehaveLayer`): `plain`, `ignore-range`, `truncate-N`, `short-N`,
//! `status-C-N`, `status-C`, `swap-K`, `wrong-range`, `weak-etag`, `no-isolation`,
//! `redirect-same`, `redirect-cross`, `claim-size-N`, `no-length`, `no-length-flood` and
//! `after-K-<mode>`; counters are kept per `<token>/<mode>`.
//!
//! ```no_run
//! use qemuweb_testkit::server::TestServer;
//! let server = TestServer::start("images").unwrap();
//! println!("serving at {}", server.url());
//! let disk_url = server.url_for("disk.img");
//! # let _ = disk_url;
//! ```

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::{Method, Request, Response, StatusCode};
use qemuweb_http::{
    isolation, text, AllowedHosts, Body, Check, CorsPolicy, GateLayer, HostCheckLayer,
    MisbehaveLayer, RequestLog, RequestLogLayer, Server, ServerConfig, StaticFiles,
};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceBuilder};

pub use qemuweb_http::LogEntry;

/// A running test server; it stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    server: Server,
    root: PathBuf,
    log: RequestLog,
}

impl TestServer {
    /// Starts serving `root` on an ephemeral port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// When `root` is not a directory or no port can be bound.
    pub fn start(root: impl AsRef<Path>) -> io::Result<Self> {
        Self::start_on(root, 0)
    }

    /// Starts serving `root` on `port` of 127.0.0.1 (0 for an ephemeral port).
    ///
    /// # Errors
    ///
    /// When `root` is not a directory or the port cannot be bound.
    pub fn start_on(root: impl AsRef<Path>, port: u16) -> io::Result<Self> {
        let other = |e: qemuweb_http::HttpError| io::Error::other(e.to_string());
        let files = StaticFiles::new(root.as_ref()).map_err(other)?;
        let root = files.root().to_path_buf();
        let listener = qemuweb_http::bind_loopback(port).map_err(other)?;
        let addr = listener.local_addr()?;
        let log = RequestLog::new();
        let cors = CorsPolicy::Any;
        let files: BoxCloneService<Request<qemuweb_http::RequestBody>, Response<Body>, Infallible> =
            BoxCloneService::new(
                ServiceBuilder::new()
                    .layer(RequestLogLayer::new(log.clone()))
                    .layer(HostCheckLayer::new(AllowedHosts::for_addr(addr)))
                    .option_layer(cors.layer())
                    .layer(MisbehaveLayer::new())
                    .layer(isolation(cors.corp()))
                    .service(files),
            );
        let service = GateLayer::new(LogEndpoint(log.clone())).layer(files);
        let server = Server::start(listener, ServerConfig::default(), service).map_err(other)?;
        Ok(Self { server, root, log })
    }

    /// The base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The URL of `path` (relative to the root, no leading slash needed).
    pub fn url_for(&self, path: &str) -> String {
        format!("{}/{}", self.url(), path.trim_start_matches('/'))
    }

    /// The URL of `file` served with the misbehaviour `mode` under `token`
    /// (see the [module documentation](self)).
    pub fn misbehaving_url(&self, token: &str, mode: &str, file: &str) -> String {
        self.url_for(&format!(
            "__mis/{token}/{mode}/{}",
            file.trim_start_matches('/')
        ))
    }

    /// The address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A copy of the whole request log.
    pub fn log(&self) -> Vec<LogEntry> {
        self.log.entries()
    }

    /// The GET requests whose path starts with `prefix` (a path such as `/disk.img`).
    pub fn gets_for(&self, prefix: &str) -> Vec<LogEntry> {
        self.log()
            .into_iter()
            .filter(|e| e.method == "GET" && e.path.starts_with(prefix))
            .collect()
    }

    /// Empties the request log.
    pub fn clear_log(&self) {
        self.log.clear();
    }

    /// Blocks the calling thread while the server runs (for the binary).
    pub fn wait(self) {
        self.server.wait()
    }
}

/// `GET /__log[?prefix=P]`: the log as text (not itself logged), answered in front of
/// the file server.
#[derive(Clone)]
struct LogEndpoint(RequestLog);

impl Check for LogEndpoint {
    fn check<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        if req.uri().path() != "/__log" || req.method() != Method::GET {
            return None;
        }
        let prefix = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("prefix="))
            .map(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        let mut answer = text(StatusCode::OK, "");
        *answer.body_mut() = qemuweb_http::full(self.0.text(&prefix));
        // Readable from every origin, as the files are: browser tests (wasm-bindgen-test
        // pages on another origin) read the log to prove what was fetched.
        answer.headers_mut().insert(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            http::HeaderValue::from_static("*"),
        );
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            server.addr()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(out[..split].to_vec()).unwrap();
        (
            head[9..12].parse().unwrap(),
            head,
            out[split + 4..].to_vec(),
        )
    }

    /// What the test kit adds to `qemuweb-http`: the composition (CORS for every origin
    /// even on scripted failures, isolation, the log and its endpoint).
    #[test]
    fn an_image_host_with_a_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.bin"), vec![7u8; 5000]).unwrap();
        let server = TestServer::start(dir.path()).unwrap();
        let origin = [("Origin", "http://127.0.0.1:1"), ("Range", "bytes=10-19")];
        let (st, head, body) = get(&server, "/f.bin", &origin);
        assert_eq!((st, body.len()), (206, 10));
        assert!(head.contains("access-control-allow-origin: *"), "{head}");
        assert!(
            head.contains("cross-origin-embedder-policy: require-corp"),
            "{head}"
        );
        let (st, head, _) = get(&server, "/__mis/t/status-503/f.bin", &origin);
        assert_eq!(st, 503);
        assert!(head.contains("access-control-allow-origin: *"), "{head}");
        let (_, head, _) = get(&server, "/__mis/t/no-isolation/f.bin", &[]);
        assert!(!head.contains("cross-origin-embedder-policy"), "{head}");
        let (st, _, body) = get(&server, "/__log?prefix=/f.bin", &[]);
        assert_eq!(st, 200);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "GET\t/f.bin\tbytes=10-19\t206\t10\n"
        );
        assert_eq!(server.gets_for("/__mis/").len(), 2);
        server.clear_log();
        assert!(server.log().is_empty());
    }
}
