//! Files: the [`StaticFiles`] service for a directory, and [`serve_file`] for one file.

use std::convert::Infallible;
use std::future::Future;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::TryStreamExt;
use http::{header, request::Parts, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::body::{empty, text, Body};
use crate::error::{HttpError, Result};
use crate::etag::{etag_for, list_matches};
use crate::mime::mime_type;
use crate::range::{decide, RangeDecision};

/// The methods a file answers.
const ALLOW: &str = "GET, HEAD, OPTIONS";
/// Bytes read from a file per body chunk.
const CHUNK: usize = 64 * 1024;

/// A [`tower::Service`] serving the files under one directory: `GET`/`HEAD` with the
/// behaviour of [`serve_file`], `OPTIONS` with `204` and `Allow`, other methods `405`.
/// A directory is answered with its `index.html` (and a redirect to the path with a
/// trailing slash first). A path with a `..` segment is refused with `403`, and so is one
/// that leaves the root through a symbolic link (files and directories may be links whose
/// target is inside the root).
///
/// ```
/// use qemuweb_http::StaticFiles;
/// let dir = tempfile::tempdir()?;
/// let files = StaticFiles::new(dir.path())?;
/// assert_eq!(files.root(), dir.path().canonicalize()?);
/// assert!(StaticFiles::new(dir.path().join("missing")).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct StaticFiles {
    root: Arc<PathBuf>,
}

impl StaticFiles {
    /// Serves the directory `root`.
    ///
    /// # Errors
    ///
    /// [`HttpError::Root`] when `root` does not exist or is not a directory.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let given = root.as_ref();
        let root_err = |reason: String| HttpError::Root {
            path: given.to_path_buf(),
            reason,
        };
        let root = given.canonicalize().map_err(|e| root_err(e.to_string()))?;
        if !root.is_dir() {
            return Err(root_err("not a directory".into()));
        }
        Ok(StaticFiles {
            root: Arc::new(root),
        })
    }

    /// The directory served (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn answer(root: Arc<PathBuf>, parts: Parts) -> Response<Body> {
        match parts.method {
            Method::GET | Method::HEAD => {}
            Method::OPTIONS => {
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
                return r;
            }
            _ => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
                return r;
            }
        }
        match resolve(&root, parts.uri.path()) {
            Ok(Resolved::File(path)) => serve_file(&parts, &path).await,
            Ok(Resolved::Redirect(location)) => {
                let mut r = text(StatusCode::MOVED_PERMANENTLY, "moved permanently");
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
            Err(status) => text(status, status.canonical_reason().unwrap_or("error")),
        }
    }
}

impl<B> tower::Service<Request<B>> for StaticFiles {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, _) = req.into_parts();
        let root = self.root.clone();
        Box::pin(async move { Ok(Self::answer(root, parts).await) })
    }
}

enum Resolved {
    File(PathBuf),
    Redirect(String),
}

/// Maps a URL path to a file under `root`, or the status to refuse it with.
fn resolve(root: &Path, url_path: &str) -> std::result::Result<Resolved, StatusCode> {
    let decoded = percent_encoding::percent_decode_str(url_path)
        .decode_utf8()
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    if !decoded.starts_with('/') {
        return Err(StatusCode::BAD_REQUEST);
    }
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(StatusCode::FORBIDDEN),
            s if s.contains(['\0', '\\']) => return Err(StatusCode::BAD_REQUEST),
            s => segments.push(s),
        }
    }
    let inside = |p: PathBuf| -> std::result::Result<PathBuf, StatusCode> {
        match p.canonicalize() {
            // Symbolic links may point anywhere; only targets inside the root are served.
            Ok(c) if c.starts_with(root) => Ok(c),
            Ok(_) => Err(StatusCode::FORBIDDEN),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(StatusCode::FORBIDDEN)
            }
            Err(_) => Err(StatusCode::NOT_FOUND),
        }
    };
    let path = inside(segments.iter().fold(root.to_path_buf(), |p, s| p.join(s)))?;
    if !path.is_dir() {
        return Ok(Resolved::File(path));
    }
    if !decoded.ends_with('/') {
        // Rebuilt from the clean segments: `//host/` would send the client elsewhere.
        let mut location = String::new();
        for s in &segments {
            location.push('/');
            location.extend(percent_encoding::utf8_percent_encode(s, SEGMENT));
        }
        location.push('/');
        return Ok(Resolved::Redirect(location));
    }
    inside(path.join("index.html")).map(Resolved::File)
}

/// What a path segment keeps unescaped in a `Location`.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Answers a `GET` or `HEAD` request (`parts`) with the file at `path`: `ETag` (strong,
/// [`etag_for`]), `Last-Modified`, `Accept-Ranges: bytes`, `Cache-Control: no-cache`, the
/// MIME type by extension; `If-Match` (`412`), `If-None-Match` and `If-Modified-Since`
/// (`304`); one `Range` with `If-Range` ([`crate::range::decide`]): `206` or `416`. `HEAD`
/// gets the same headers without a body. A missing file is `404`, an unreadable one `403`.
///
/// The caller decides which path a URL names (the headless runner serves a fixed map of
/// files with it).
pub async fn serve_file(parts: &Parts, path: &Path) -> Response<Body> {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return text(StatusCode::FORBIDDEN, "forbidden")
        }
        Err(_) => return text(StatusCode::NOT_FOUND, "not found"),
    };
    let meta = match file.metadata().await {
        Ok(m) if m.is_file() => m,
        _ => return text(StatusCode::NOT_FOUND, "not found"),
    };
    let size = meta.len();
    let modified = meta.modified().ok();
    let etag = etag_for(&meta);
    let mut headers = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(header::ETAG, &etag);
    set(header::ACCEPT_RANGES, "bytes");
    set(header::CACHE_CONTROL, "no-cache");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(m) = modified {
        set(header::LAST_MODIFIED, &httpdate::fmt_http_date(m));
    }
    let req = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());

    if let Some(im) = req(header::IF_MATCH) {
        if !list_matches(im, &etag, true) {
            return with(
                text(StatusCode::PRECONDITION_FAILED, "precondition failed"),
                headers,
            );
        }
    }
    let not_modified = match req(header::IF_NONE_MATCH) {
        Some(inm) => list_matches(inm, &etag, false),
        None => match (
            req(header::IF_MODIFIED_SINCE).map(httpdate::parse_http_date),
            modified,
        ) {
            // Compared to the second, as the header carries it.
            (Some(Ok(since)), Some(m)) => {
                httpdate::HttpDate::from(m) <= httpdate::HttpDate::from(since)
            }
            _ => false,
        },
    };
    if not_modified {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return with(r, headers);
    }

    let decision = decide(
        req(header::RANGE),
        req(header::IF_RANGE),
        size,
        &etag,
        modified,
    );
    let (status, first, len) = match decision {
        RangeDecision::Full => (StatusCode::OK, 0, size),
        RangeDecision::Partial { first, last } => {
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {first}-{last}/{size}")).expect("ascii"),
            );
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
        RangeDecision::Unsatisfiable => {
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            let r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            return with(r, headers);
        }
    };
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(mime_type(path)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let body = if parts.method == Method::HEAD {
        empty()
    } else {
        match file_body(file, first, len).await {
            Ok(b) => b,
            Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "read error"),
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    with(r, headers)
}

/// `r` with `headers` added (replacing its own of the same name).
fn with(mut r: Response<Body>, headers: HeaderMap) -> Response<Body> {
    for (name, value) in &headers {
        r.headers_mut().insert(name.clone(), value.clone());
    }
    r
}

/// `len` bytes of `file` from `first`, streamed; an error if the file shrinks meanwhile
/// (the client must not trust a short body).
async fn file_body(mut file: tokio::fs::File, first: u64, len: u64) -> std::io::Result<Body> {
    file.seek(SeekFrom::Start(first)).await?;
    // A file that shrank ends the stream early: hyper sees fewer bytes than promised and
    // closes the connection instead of reusing it.
    let stream = ReaderStream::with_capacity(file.take(len), CHUNK)
        .map_ok(Frame::data)
        .map_err(crate::body::BoxError::from);
    Ok(StreamBody::new(stream).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{get, request, serve, site};

    fn files_server() -> (tempfile::TempDir, crate::Server, Vec<u8>) {
        let (tmp, root, data) = site();
        let server = serve(|_| StaticFiles::new(&root).unwrap());
        (tmp, server, data)
    }

    #[test]
    fn ranges_206_416_and_head() {
        let (_tmp, server, data) = files_server();
        let addr = server.local_addr();
        let a = get(addr, "/sub/f.bin", &[("Range", "bytes=10-19")]);
        assert_eq!((a.status, a.body.as_slice()), (206, &data[10..20]));
        assert_eq!(a.header("content-range"), Some("bytes 10-19/5000"));
        assert_eq!(a.header("content-length"), Some("10"));
        assert_eq!(a.header("accept-ranges"), Some("bytes"));
        let a = get(addr, "/sub/f.bin", &[("Range", "bytes=-10")]);
        assert_eq!((a.status, a.body.as_slice()), (206, &data[4990..]));
        let a = get(addr, "/sub/f.bin", &[("Range", "bytes=4990-99999")]);
        assert_eq!((a.status, a.body.as_slice()), (206, &data[4990..]));
        let a = get(addr, "/sub/f.bin", &[("Range", "bytes=5000-")]);
        assert_eq!(a.status, 416);
        assert_eq!(a.header("content-range"), Some("bytes */5000"));
        // Several ranges: the whole file.
        let a = get(addr, "/sub/f.bin", &[("Range", "bytes=0-1,5-6")]);
        assert_eq!((a.status, a.body.len()), (200, 5000));
        let a = get(addr, "/sub/f.bin", &[]);
        assert_eq!((a.status, a.body.as_slice()), (200, data.as_slice()));
        assert_eq!(a.header("content-type"), Some("application/octet-stream"));
        let a = request(addr, "HEAD", "/sub/f.bin", &[("Range", "bytes=0-9")]);
        assert_eq!((a.status, a.body.len()), (206, 0));
        assert_eq!(a.header("content-length"), Some("10"));
        let a = request(addr, "HEAD", "/sub/f.bin", &[]);
        assert_eq!((a.status, a.body.len()), (200, 0));
        assert_eq!(a.header("content-length"), Some("5000"));
    }

    #[test]
    fn etags_and_conditional_requests() {
        let (_tmp, server, _) = files_server();
        let addr = server.local_addr();
        let a = get(addr, "/sub/f.bin", &[]);
        let etag = a.header("etag").unwrap().to_string();
        let lm = a.header("last-modified").unwrap().to_string();
        assert!(etag.starts_with('"'), "a strong tag: {etag}");
        // If-Range: the range only for the current version.
        let ranged = |if_range: &str| {
            get(
                addr,
                "/sub/f.bin",
                &[("Range", "bytes=0-3"), ("If-Range", if_range)],
            )
        };
        assert_eq!((ranged(&etag).status, ranged(&etag).body.len()), (206, 4));
        assert_eq!(ranged(&lm).status, 206);
        assert_eq!(
            (ranged("\"other\"").status, ranged("\"other\"").body.len()),
            (200, 5000)
        );
        assert_eq!(ranged(&format!("W/{etag}")).status, 200);
        // If-None-Match (weak comparison) and If-Modified-Since: 304 without a body.
        let a = get(
            addr,
            "/sub/f.bin",
            &[("If-None-Match", &format!("\"x\", W/{etag}"))],
        );
        assert_eq!((a.status, a.body.len()), (304, 0));
        assert_eq!(a.header("etag"), Some(etag.as_str()));
        assert_eq!(
            get(addr, "/sub/f.bin", &[("If-None-Match", "\"x\"")]).status,
            200
        );
        assert_eq!(
            get(addr, "/sub/f.bin", &[("If-Modified-Since", &lm)]).status,
            304
        );
        let old = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(
            get(addr, "/sub/f.bin", &[("If-Modified-Since", old)]).status,
            200
        );
        // If-Match (strong comparison): 412 otherwise.
        assert_eq!(get(addr, "/sub/f.bin", &[("If-Match", &etag)]).status, 200);
        assert_eq!(get(addr, "/sub/f.bin", &[("If-Match", "*")]).status, 200);
        assert_eq!(
            get(addr, "/sub/f.bin", &[("If-Match", &format!("W/{etag}"))]).status,
            412
        );
        assert_eq!(
            get(addr, "/sub/f.bin", &[("If-Match", "\"x\"")]).status,
            412
        );
    }

    #[test]
    fn a_rewritten_file_gets_a_new_etag() {
        let (tmp, server, _) = files_server();
        let addr = server.local_addr();
        let before = get(addr, "/sub/f.bin", &[])
            .header("etag")
            .unwrap()
            .to_string();
        let f = tmp.path().join("site/sub/f.bin");
        std::fs::write(f.with_extension("new"), b"other").unwrap();
        std::fs::rename(f.with_extension("new"), &f).unwrap();
        let after = get(addr, "/sub/f.bin", &[]);
        assert_eq!(after.body, b"other");
        assert_ne!(after.header("etag").unwrap(), before);
    }

    #[test]
    fn methods_directories_and_mime() {
        let (_tmp, server, _) = files_server();
        let addr = server.local_addr();
        let a = request(addr, "OPTIONS", "/sub/f.bin", &[]);
        assert_eq!(
            (a.status, a.header("allow")),
            (204, Some("GET, HEAD, OPTIONS"))
        );
        let a = request(addr, "POST", "/sub/f.bin", &[("Content-Length", "0")]);
        assert_eq!(a.status, 405);
        let a = request(addr, "DELETE", "/sub/f.bin", &[]);
        assert_eq!(a.status, 405);
        let a = get(addr, "/", &[]);
        assert_eq!(
            (a.status, a.body.as_slice()),
            (200, b"<p>hi</p>\n".as_slice())
        );
        assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
        let a = get(addr, "/sub", &[]);
        assert_eq!((a.status, a.header("location")), (301, Some("/sub/")));
        assert_eq!(get(addr, "/sub/", &[]).body, b"sub index\n");
        let a = get(addr, "/a.wasm", &[]);
        assert_eq!(a.header("content-type"), Some("application/wasm"));
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(get(addr, "/missing", &[]).status, 404);
        assert_eq!(get(addr, "/sub/f.bin?x=1", &[]).status, 200);
    }

    #[test]
    fn traversal_is_refused_symlinks_too() {
        let (_tmp, server, data) = files_server();
        let addr = server.local_addr();
        for path in [
            "/../secret.txt",
            "/sub/../../secret.txt",
            "/sub/%2e%2e/%2e%2e/secret.txt",
            "/%2E%2E/secret.txt",
            "/out.txt",
            "/outdir/secret.txt",
            "/outdir/",
        ] {
            let a = get(addr, path, &[]);
            assert!(a.status == 403 || a.status == 400, "{path}: {}", a.status);
            assert!(
                !String::from_utf8_lossy(&a.body).contains("secret"),
                "{path}"
            );
        }
        for path in ["/sub\\..\\..\\secret.txt", "/a%00b", "/%ff"] {
            assert_eq!(get(addr, path, &[]).status, 400, "{path}");
        }
        // A link whose target stays inside the root is served.
        let a = get(addr, "/in.bin", &[]);
        assert_eq!((a.status, a.body.as_slice()), (200, data.as_slice()));
        // `//host` in a redirect would leave the server.
        let a = get(addr, "//sub", &[]);
        assert_eq!(a.header("location"), Some("/sub/"));
    }
}
