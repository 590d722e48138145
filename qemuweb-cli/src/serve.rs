//! `qemuweb serve`: a static file server for browser VMs.
//!
//! Every answer carries the headers a cross-origin-isolated page needs
//! (`Cross-Origin-Opener-Policy: same-origin`, `Cross-Origin-Embedder-Policy:
//! require-corp`, `Cross-Origin-Resource-Policy: cross-origin`) and CORS headers, so the
//! QEMU worker can use `SharedArrayBuffer` and disks can be read from other origins.
//! Disk images are read with HTTP Range requests: single byte ranges get `206 Partial
//! Content`, unsatisfiable ones `416`, several ranges the whole file (`200`, as RFC 9110
//! allows). Strong `ETag`s (inode, size and modification time) drive `If-None-Match`,
//! `If-Match` and `If-Range`. Paths that leave the root, also through symbolic links, are
//! refused with `403`.

use crate::error::{CliError, Result};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The longest request head (request line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
/// How long an idle connection is kept open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound server, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    root: Arc<PathBuf>,
    quiet: bool,
}

impl Server {
    /// Binds `addr` to serve the directory `root`.
    ///
    /// # Errors
    ///
    /// [`CliError::Io`] when `root` is not a readable directory or `addr` cannot be bound.
    pub fn bind(root: &Path, addr: SocketAddr, quiet: bool) -> Result<Server> {
        let root = root.canonicalize().map_err(|e| CliError::io(root, e))?;
        if !root.is_dir() {
            return Err(CliError::io(
                &root,
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        let listener = TcpListener::bind(addr).map_err(|e| CliError::io(addr.to_string(), e))?;
        Ok(Server {
            listener,
            root: Arc::new(root),
            quiet,
        })
    }

    /// The address the server listens on (with the real port when bound to port 0).
    ///
    /// # Errors
    ///
    /// [`CliError::Io`] if the socket cannot tell.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| CliError::io("listener", e))
    }

    /// Serves connections until the process ends, one thread per connection.
    pub fn run(self) -> Result<()> {
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else { continue };
            let root = Arc::clone(&self.root);
            let quiet = self.quiet;
            let _ = std::thread::Builder::new()
                .name("qemuweb-serve".into())
                .spawn(move || {
                    let _ = handle_connection(stream, &root, quiet);
                });
        }
        Ok(())
    }
}

/// One parsed request head.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    http10: bool,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase);
        match conn.as_deref() {
            Some(c) if c.split(',').any(|t| t.trim() == "close") => false,
            Some(c) if c.split(',').any(|t| t.trim() == "keep-alive") => true,
            _ => !self.http10,
        }
    }
}

fn handle_connection(stream: TcpStream, root: &Path, quiet: bool) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(64 * 1024, stream);
    loop {
        let request = match read_head(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(HeadError::Io(e)) => return Err(e),
            Err(HeadError::Bad(reason)) => {
                let mut resp = Response::new(400, "Bad Request");
                resp.text(reason);
                resp.close = true;
                resp.write(&mut writer, false)?;
                writer.flush()?;
                return Ok(());
            }
        };
        let keep_alive = request.keep_alive();
        let has_body = request
            .header("content-length")
            .is_some_and(|v| v.trim() != "0")
            || request.header("transfer-encoding").is_some();
        let mut resp = respond(&request, root);
        // A request body is never read, so the connection cannot be reused after one.
        resp.close = resp.close || !keep_alive || has_body;
        let head_only = request.method == "HEAD";
        if !quiet {
            eprintln!(
                "{} {} {}{}",
                request.method,
                request.target,
                resp.status,
                request
                    .header("range")
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
        let close = resp.close;
        resp.write(&mut writer, head_only)?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

enum HeadError {
    Io(io::Error),
    Bad(&'static str),
}

/// Reads one request head; `None` at a clean end of the connection.
fn read_head(reader: &mut impl BufRead) -> std::result::Result<Option<Request>, HeadError> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take((MAX_HEAD - total + 1) as u64)
            .read_until(b'\n', &mut line)
            .map_err(HeadError::Io)?;
        if n == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()))
            };
        }
        total += n;
        if total > MAX_HEAD {
            return Err(HeadError::Bad("request head too large"));
        }
        if !line.ends_with(b"\n") {
            return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let text =
            String::from_utf8(line).map_err(|_| HeadError::Bad("request head is not UTF-8"))?;
        let text = text.trim_end_matches(['\r', '\n']).to_string();
        if text.is_empty() {
            if lines.is_empty() {
                continue; // Tolerate blank lines before a request (RFC 9112 2.2).
            }
            break;
        }
        lines.push(text);
    }
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Bad("malformed request line"));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(HeadError::Bad("unsupported HTTP version")),
    };
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HeadError::Bad("malformed header"));
        };
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(HeadError::Bad("malformed header"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        http10,
        headers,
    }))
}

/// A response: status, headers and an optional body (bytes or a range of a file).
struct Response {
    status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Body,
    close: bool,
}

enum Body {
    Empty,
    Bytes(Vec<u8>),
    File { file: File, start: u64, len: u64 },
}

impl Response {
    fn new(status: u16, reason: &'static str) -> Self {
        Response {
            status,
            reason,
            headers: Vec::new(),
            body: Body::Empty,
            close: false,
        }
    }

    fn header(&mut self, name: &'static str, value: impl Into<String>) {
        self.headers.push((name, value.into()));
    }

    fn text(&mut self, text: &str) {
        self.header("Content-Type", "text/plain; charset=utf-8");
        self.body = Body::Bytes(format!("{text}\n").into_bytes());
    }

    fn write(self, w: &mut impl Write, head_only: bool) -> io::Result<()> {
        write!(w, "HTTP/1.1 {} {}\r\n", self.status, self.reason)?;
        write!(
            w,
            "Date: {}\r\n",
            httpdate::fmt_http_date(SystemTime::now())
        )?;
        w.write_all(
            b"Server: qemuweb\r\n\
              Cross-Origin-Opener-Policy: same-origin\r\n\
              Cross-Origin-Embedder-Policy: require-corp\r\n\
              Cross-Origin-Resource-Policy: cross-origin\r\n\
              Access-Control-Allow-Origin: *\r\n\
              Access-Control-Expose-Headers: Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified\r\n\
              X-Content-Type-Options: nosniff\r\n",
        )?;
        for (name, value) in &self.headers {
            write!(w, "{name}: {value}\r\n")?;
        }
        let len = match &self.body {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        };
        if self.status != 304 && !self.headers.iter().any(|(n, _)| *n == "Content-Length") {
            write!(w, "Content-Length: {len}\r\n")?;
        }
        if self.close {
            w.write_all(b"Connection: close\r\n")?;
        }
        w.write_all(b"\r\n")?;
        if head_only {
            return Ok(());
        }
        match self.body {
            Body::Empty => {}
            Body::Bytes(b) => w.write_all(&b)?,
            Body::File {
                mut file,
                start,
                len,
            } => {
                use std::io::Seek;
                file.seek(io::SeekFrom::Start(start))?;
                let copied = io::copy(&mut file.take(len), w)?;
                if copied != len {
                    // The file shrank while being sent: the client must not trust the body.
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        Ok(())
    }
}

fn error(status: u16, reason: &'static str) -> Response {
    let mut r = Response::new(status, reason);
    r.text(&format!("{status} {reason}"));
    r
}

/// Answers one request.
fn respond(req: &Request, root: &Path) -> Response {
    match req.method.as_str() {
        "GET" | "HEAD" => {}
        "OPTIONS" => {
            let mut r = Response::new(204, "No Content");
            r.header("Allow", "GET, HEAD, OPTIONS");
            r.header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS");
            r.header(
                "Access-Control-Allow-Headers",
                "Range, If-Range, If-None-Match, If-Match",
            );
            r.header("Access-Control-Max-Age", "600");
            return r;
        }
        _ => {
            let mut r = error(405, "Method Not Allowed");
            r.header("Allow", "GET, HEAD, OPTIONS");
            return r;
        }
    }
    let path_part = req.target.split(['?', '#']).next().unwrap_or("");
    if !path_part.starts_with('/') {
        return error(400, "Bad Request");
    }
    let Some(decoded) = percent_decode(path_part) else {
        return error(400, "Bad Request");
    };
    let mut rel = PathBuf::new();
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return error(403, "Forbidden"),
            s if s.contains('\0') || s.contains('\\') => return error(400, "Bad Request"),
            s => {
                rel.push(s);
                segments.push(s);
            }
        }
    }
    let joined = root.join(&rel);
    let path = match joined.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return error(404, "Not Found"),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return error(403, "Forbidden"),
        Err(_) => return error(404, "Not Found"),
    };
    // Symbolic links may point anywhere; only targets inside the root are served.
    if !path.starts_with(root) {
        return error(403, "Forbidden");
    }
    let mut path = path;
    if path.is_dir() {
        if !decoded.ends_with('/') {
            let mut r = error(301, "Moved Permanently");
            // Rebuilt from the clean segments: `//host/` would send the client elsewhere.
            let mut location = String::new();
            for s in &segments {
                location.push('/');
                location.push_str(&percent_encode(s));
            }
            location.push('/');
            r.header("Location", location);
            return r;
        }
        path = path.join("index.html");
        match path.canonicalize() {
            Ok(p) if p.starts_with(root) => path = p,
            Ok(_) => return error(403, "Forbidden"),
            Err(_) => return error(404, "Not Found"),
        }
    }
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return error(403, "Forbidden"),
        Err(_) => return error(404, "Not Found"),
    };
    let meta = match file.metadata() {
        Ok(m) if m.is_file() => m,
        _ => return error(404, "Not Found"),
    };
    let size = meta.len();
    let mtime = meta.modified().ok();
    let etag = etag(&meta);
    let last_modified = mtime.map(httpdate::fmt_http_date);

    let mut resp_headers: Vec<(&'static str, String)> = vec![
        ("ETag", etag.clone()),
        ("Accept-Ranges", "bytes".into()),
        ("Cache-Control", "no-cache".into()),
        ("Content-Type", mime_type(&path).into()),
    ];
    if let Some(lm) = &last_modified {
        resp_headers.push(("Last-Modified", lm.clone()));
    }
    let with_headers = |mut r: Response, headers: &[(&'static str, String)]| {
        for (n, v) in headers {
            r.header(n, v.clone());
        }
        r
    };

    if let Some(im) = req.header("if-match") {
        if !etag_list_matches(im, &etag, true) {
            return error(412, "Precondition Failed");
        }
    }
    if let Some(inm) = req.header("if-none-match") {
        if etag_list_matches(inm, &etag, false) {
            let mut r = Response::new(304, "Not Modified");
            for (n, v) in &resp_headers {
                if *n != "Content-Type" {
                    r.header(n, v.clone());
                }
            }
            return r;
        }
    }

    let range = req.header("range").filter(|_| {
        // If-Range: use the range only if the client's copy is the current one.
        match req.header("if-range") {
            None => true,
            Some(v) if v.starts_with('"') => v == etag,
            Some(v) if v.starts_with("W/") => false,
            Some(v) => match (httpdate::parse_http_date(v), mtime) {
                (Ok(date), Some(m)) => httpdate::fmt_http_date(date) == httpdate::fmt_http_date(m),
                _ => false,
            },
        }
    });
    match range.map(|r| parse_range(r, size)) {
        Some(RangeSpec::Satisfiable(start, end)) => {
            let mut r = with_headers(Response::new(206, "Partial Content"), &resp_headers);
            r.header("Content-Range", format!("bytes {start}-{end}/{size}"));
            r.body = Body::File {
                file,
                start,
                len: end - start + 1,
            };
            r
        }
        Some(RangeSpec::Unsatisfiable) => {
            let mut r = error(416, "Range Not Satisfiable");
            r.header("Content-Range", format!("bytes */{size}"));
            r.header("ETag", etag);
            r
        }
        Some(RangeSpec::Ignore) | None => {
            let mut r = with_headers(Response::new(200, "OK"), &resp_headers);
            r.body = Body::File {
                file,
                start: 0,
                len: size,
            };
            r
        }
    }
}

/// A strong validator from the inode, size and modification time: any rewrite of the
/// file (in place or by rename) changes it.
fn etag(meta: &std::fs::Metadata) -> String {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let ino = 0u64;
    let nanos = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("\"{ino:x}-{:x}-{nanos:x}\"", meta.len())
}

/// Whether the `If-Match`/`If-None-Match` value `list` matches `etag`: `*`, or a listed
/// tag by strong comparison (`strong`) or weak comparison.
fn etag_list_matches(list: &str, etag: &str, strong: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    list.split(',').map(str::trim).any(|tag| {
        if strong {
            tag == etag
        } else {
            tag.strip_prefix("W/").unwrap_or(tag) == etag
        }
    })
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// First and last byte, inclusive.
    Satisfiable(u64, u64),
    Unsatisfiable,
    /// Not a single byte range we answer with 206: send the whole file.
    Ignore,
}

/// Parses a `Range` header for a file of `size` bytes (RFC 9110 14.1.2).
fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // A suffix: the last N bytes.
        if !digits(last) {
            return RangeSpec::Ignore;
        }
        let n: u64 = last.parse().unwrap_or(u64::MAX);
        if n == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Satisfiable(size - n.min(size), size - 1);
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return RangeSpec::Ignore;
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeSpec::Unsatisfiable;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        last.parse::<u64>().unwrap_or(u64::MAX)
    };
    if end < start {
        return RangeSpec::Ignore;
    }
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Satisfiable(start, end.min(size - 1))
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Escapes everything but unreserved characters and a few safe ones in a path segment.
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Content-Type` for a file, by extension.
pub fn mime_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" | "cjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "css" => "text/css; charset=utf-8",
        "txt" | "md" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "gz" => "application/gzip",
        "zst" => "application/zstd",
        "tar" => "application/x-tar",
        "iso" => "application/x-iso9660-image",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Satisfiable(0, 99));
        assert_eq!(parse_range("bytes=990-2000", 1000), Satisfiable(990, 999));
        assert_eq!(parse_range("bytes=10-", 1000), Satisfiable(10, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Satisfiable(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Satisfiable(0, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ignore);
        assert_eq!(parse_range("items=0-1", 1000), Ignore);
        assert_eq!(parse_range("bytes=a-b", 1000), Ignore);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 1000),
            Unsatisfiable
        );
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("/%2e%2E/x").as_deref(), Some("/../x"));
        assert_eq!(percent_decode("/%zz"), None);
        assert_eq!(percent_decode("/%4"), None);
        assert_eq!(percent_decode("/%ff"), None);
        assert_eq!(percent_encode("a b/%?é"), "a%20b%2F%25%3F%C3%A9");
    }

    #[test]
    fn etag_lists() {
        assert!(etag_list_matches("\"a\", \"b\"", "\"b\"", true));
        assert!(etag_list_matches("W/\"b\"", "\"b\"", false));
        assert!(!etag_list_matches("W/\"b\"", "\"b\"", true));
        assert!(etag_list_matches("*", "\"b\"", true));
        assert!(!etag_list_matches("\"c\"", "\"b\"", false));
    }
}
