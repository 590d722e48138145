//! A small HTTP/1.1 file server on 127.0.0.1 for testing HTTP block devices.
//!
//! It serves the files under one root directory with what a disk-image client relies on:
//! single byte ranges (`206`, `416`), a strong `ETag`, `Last-Modified`, `If-Range`, `HEAD`,
//! CORS (so a test page from another origin can read it) and the COOP/COEP/CORP headers.
//! Every request is logged in memory ([`TestServer::log`], or `GET /__log` as text) so
//! tests can prove how much was fetched.
//!
//! # Scripted misbehaviour
//!
//! A path `/__mis/<token>/<mode>/<file>` serves `<file>` with the behaviour `<mode>`. The
//! request counter behind each mode is kept per `<token>/<mode>` pair, so tests that use
//! different tokens do not interfere. Only `GET` requests are counted (not CORS
//! preflights or `HEAD`). Modes:
//!
//! | mode | behaviour |
//! |------|-----------|
//! | `plain` | well-behaved (a private log prefix for one test) |
//! | `ignore-range` | always `200` with the whole file |
//! | `truncate-N` | the first `N` GETs promise the full `Content-Length` but close after half the body |
//! | `short-N` | the first `N` GETs send a `206` whose body and `Content-Length` are shorter than its `Content-Range` |
//! | `status-C-N` | the first `N` GETs answer status `C` |
//! | `status-C` | every GET answers status `C` |
//! | `swap-K` | after `K` GETs the file's content (every byte XOR `0x5a`), `ETag` and `Last-Modified` change |
//! | `wrong-range` | `206` answers carry the bytes and `Content-Range` one byte later than asked |
//! | `weak-etag` | a weak `ETag` (`W/"…"`) instead of a strong one |
//! | `after-K-<mode>` | the first `K` GETs are served plainly, then `<mode>` starts counting |
//!
//! `GET /__log` answers the log as text, one request a line:
//! `METHOD<TAB>PATH<TAB>RANGE<TAB>STATUS<TAB>BODY-BYTES` (`-` for no range); with
//! `?prefix=/some/path` only the lines whose path starts with it.
//!
//! ```no_run
//! use qemuweb_testkit::server::TestServer;
//! let server = TestServer::start("/tmp/images").unwrap();
//! println!("serving at {}", server.url());
//! let disk_url = server.url_for("disk.img");
//! # let _ = disk_url;
//! ```

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most log entries kept; older ones are dropped first.
const MAX_LOG: usize = 200_000;
/// How long a kept-alive connection may stay idle.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head accepted.
const MAX_HEAD: usize = 32 * 1024;

/// One request as the server saw and answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The request method (`GET`, `HEAD`, `OPTIONS`, ...).
    pub method: String,
    /// The request path, as sent (without the query string).
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `If-Range` header, if any.
    pub if_range: Option<String>,
    /// The status answered.
    pub status: u16,
    /// The number of body bytes actually written.
    pub bytes: u64,
}

impl LogEntry {
    /// The entry as one line of `GET /__log` (without the newline).
    pub fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}",
            self.method,
            self.path,
            self.range.as_deref().unwrap_or("-"),
            self.status,
            self.bytes
        )
    }
}

#[derive(Default)]
struct State {
    /// The log, each entry with its id (for correcting its byte count).
    log: Mutex<Vec<(u64, LogEntry)>>,
    next_id: std::sync::atomic::AtomicU64,
    /// GET counters per `token/mode`.
    counters: Mutex<HashMap<String, u64>>,
}

impl State {
    fn lock_log(&self) -> std::sync::MutexGuard<'_, Vec<(u64, LogEntry)>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs an entry and returns its id.
    fn push(&self, entry: LogEntry) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut log = self.lock_log();
        if log.len() >= MAX_LOG {
            log.drain(..MAX_LOG / 10);
        }
        log.push((id, entry));
        id
    }

    /// Corrects the byte count of entry `id` (when a client hung up early).
    fn set_bytes(&self, id: u64, bytes: u64) {
        let mut log = self.lock_log();
        if let Some((_, e)) = log.iter_mut().rev().find(|(i, _)| *i == id) {
            e.bytes = bytes;
        }
    }

    /// Counts one GET for `key` and returns how many came before it.
    fn count(&self, key: &str) -> u64 {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.entry(key.to_string()).or_insert(0);
        let before = *n;
        *n += 1;
        before
    }
}

/// A running test server; it stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    root: PathBuf,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .field("root", &self.root)
            .finish()
    }
}

impl TestServer {
    /// Starts serving `root` on an ephemeral port of 127.0.0.1.
    pub fn start(root: impl AsRef<Path>) -> io::Result<Self> {
        Self::start_on(root, 0)
    }

    /// Starts serving `root` on `port` of 127.0.0.1 (0 for an ephemeral port).
    pub fn start_on(root: impl AsRef<Path>, port: u16) -> io::Result<Self> {
        let root = root.as_ref().canonicalize()?;
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (root.clone(), state.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name("qemuweb-test-server".into())
            .spawn(move || accept_loop(listener, r, s, st))?;
        Ok(Self {
            addr,
            root,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// The base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
        self.addr
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A copy of the whole request log.
    pub fn log(&self) -> Vec<LogEntry> {
        self.state
            .lock_log()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
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
        self.state.lock_log().clear();
    }

    /// Blocks the calling thread while the server runs (for the binary).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop up.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, root: PathBuf, state: Arc<State>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        let (root, state) = (root.clone(), state.clone());
        let _ = thread::Builder::new()
            .name("qemuweb-test-conn".into())
            .spawn(move || {
                let _ = serve_connection(stream, &root, &state);
            });
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    close: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head; `Ok(None)` at a clean end of the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    let mut total = 0usize;
    // Skip empty lines between requests.
    loop {
        line.clear();
        let n = reader.by_ref().take(MAX_HEAD as u64).read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if !line.trim().is_empty() {
            break;
        }
        if total > MAX_HEAD {
            return Err(io::Error::other("request head too large"));
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(io::Error::other("malformed request line"));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut close = version == "HTTP/1.0";
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        let n = reader.by_ref().take(MAX_HEAD as u64).read_line(&mut h)?;
        total += n;
        if n == 0 || total > MAX_HEAD {
            return Err(io::Error::other("truncated or oversized request head"));
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method,
        target,
        headers,
        close: false,
    };
    if let Some(c) = req.header("connection") {
        let c = c.to_ascii_lowercase();
        if c.contains("close") {
            close = true;
        } else if c.contains("keep-alive") {
            close = false;
        }
    }
    req.close = close;
    // Discard a request body, if any (bounded).
    if let Some(len) = req
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > 1 << 20 {
            return Err(io::Error::other("request body too large"));
        }
        io::copy(&mut reader.by_ref().take(len), &mut io::sink())?;
    }
    Ok(Some(req))
}

fn serve_connection(stream: TcpStream, root: &Path, state: &State) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader)? {
        let keep = handle(&req, &mut writer, root, state)?;
        if !keep || req.close {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
    Ok(())
}

/// What a response looks like before it is written.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Write only this many body bytes, then close the connection.
    cut_after: Option<usize>,
}

impl Answer {
    fn simple(status: u16, text: &str) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: text.as_bytes().to_vec(),
            cut_after: None,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Answers one request; returns whether the connection may be kept.
fn handle(req: &Request, w: &mut TcpStream, root: &Path, state: &State) -> io::Result<bool> {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (req.target.clone(), String::new()),
    };
    let head = req.method == "HEAD";
    let answer = match req.method.as_str() {
        "OPTIONS" => Answer {
            status: 204,
            headers: vec![],
            body: vec![],
            cut_after: None,
        },
        "GET" | "HEAD" if path == "/__log" => {
            let prefix = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("prefix="))
                .map(percent_decode)
                .unwrap_or_default();
            let log = state.lock_log();
            let mut text = String::new();
            for (_, e) in log.iter().filter(|(_, e)| e.path.starts_with(&prefix)) {
                text.push_str(&e.to_line());
                text.push('\n');
            }
            Answer::simple(200, &text)
        }
        "GET" | "HEAD" => serve_file(req, &path, root, state),
        _ => Answer::simple(405, "method not allowed\n"),
    };
    // Log before answering, so a client that has its answer always finds it in the log.
    let planned = if head {
        0
    } else {
        answer
            .cut_after
            .unwrap_or(usize::MAX)
            .min(answer.body.len()) as u64
    };
    let id = (path != "/__log").then(|| {
        state.push(LogEntry {
            method: req.method.clone(),
            path,
            range: req.header("range").map(str::to_string),
            if_range: req.header("if-range").map(str::to_string),
            status: answer.status,
            bytes: planned,
        })
    });
    let result = write_answer(w, &answer, head);
    let written = *result.as_ref().unwrap_or(&0);
    if let Some(id) = id.filter(|_| written != planned) {
        state.set_bytes(id, written);
    }
    result?;
    Ok(answer.cut_after.is_none())
}

fn write_answer(w: &mut TcpStream, a: &Answer, head: bool) -> io::Result<u64> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", a.status, reason(a.status));
    let mut has_len = false;
    for (k, v) in &a.headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        out.push_str(&format!("Content-Length: {}\r\n", a.body.len()));
    }
    out.push_str(concat!(
        "Access-Control-Allow-Origin: *\r\n",
        "Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n",
        "Access-Control-Allow-Headers: Range, If-Range, Cache-Control, Pragma\r\n",
        "Access-Control-Expose-Headers: Content-Range, ETag, Content-Length, Last-Modified, Accept-Ranges\r\n",
        "Access-Control-Max-Age: 600\r\n",
        "Cross-Origin-Opener-Policy: same-origin\r\n",
        "Cross-Origin-Embedder-Policy: require-corp\r\n",
        "Cross-Origin-Resource-Policy: cross-origin\r\n",
        "Cache-Control: no-store\r\n",
    ));
    if a.cut_after.is_some() {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    w.write_all(out.as_bytes())?;
    if head {
        w.flush()?;
        return Ok(0);
    }
    let body = match a.cut_after {
        Some(n) => &a.body[..n.min(a.body.len())],
        None => &a.body[..],
    };
    // A client may hang up without reading a body it does not want; that is not an error
    // of the server.
    let written = match w.write_all(body) {
        Ok(()) => body.len() as u64,
        Err(_) => 0,
    };
    let _ = w.flush();
    if a.cut_after.is_some() {
        let _ = w.shutdown(Shutdown::Both);
    }
    Ok(written)
}

/// The misbehaviour a path asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    IgnoreRange,
    Truncate(u64),
    Short(u64),
    Status(u16, Option<u64>),
    Swap(u64),
    WrongRange,
    WeakEtag,
}

fn parse_mode(s: &str) -> Option<Mode> {
    let num = |p: &str| s.strip_prefix(p).and_then(|n| n.parse::<u64>().ok());
    Some(match s {
        "plain" => Mode::Plain,
        "ignore-range" => Mode::IgnoreRange,
        "wrong-range" => Mode::WrongRange,
        "weak-etag" => Mode::WeakEtag,
        _ => {
            if let Some(n) = num("truncate-") {
                Mode::Truncate(n)
            } else if let Some(n) = num("short-") {
                Mode::Short(n)
            } else if let Some(n) = num("swap-") {
                Mode::Swap(n)
            } else if let Some(rest) = s.strip_prefix("status-") {
                let mut it = rest.split('-');
                let code = it.next()?.parse::<u16>().ok()?;
                if !(100..=599).contains(&code) {
                    return None;
                }
                let n = match it.next() {
                    Some(n) => Some(n.parse::<u64>().ok()?),
                    None => None,
                };
                Mode::Status(code, n)
            } else {
                return None;
            }
        }
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = h {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Maps a URL path to a file under `root`, refusing anything that could leave it.
fn resolve(root: &Path, rel: &str) -> Result<PathBuf, Answer> {
    let decoded = percent_decode(rel);
    let mut path = root.to_path_buf();
    for comp in decoded.split('/') {
        if comp.is_empty() {
            continue;
        }
        if comp == ".." || comp == "." || comp.contains('\\') || comp.contains('\0') {
            return Err(Answer::simple(403, "forbidden path\n"));
        }
        path.push(comp);
    }
    let real = path
        .canonicalize()
        .map_err(|_| Answer::simple(404, "not found\n"))?;
    if !real.starts_with(root) {
        return Err(Answer::simple(403, "outside the root\n"));
    }
    if !real.is_file() {
        return Err(Answer::simple(404, "not a file\n"));
    }
    Ok(real)
}

/// A parsed single `Range` header.
enum RangeSpec {
    /// No usable range: serve the whole file.
    None,
    /// Inclusive byte range inside the file.
    Bytes(u64, u64),
    /// Cannot be satisfied.
    Unsatisfiable,
}

fn parse_range(header: Option<&str>, size: u64) -> RangeSpec {
    let Some(h) = header else {
        return RangeSpec::None;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeSpec::None;
    };
    if spec.contains(',') {
        // Several ranges: answering the whole file is allowed.
        return RangeSpec::None;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::None;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix range: the last n bytes.
        let Ok(n) = b.parse::<u64>() else {
            return RangeSpec::None;
        };
        if n == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Bytes(size.saturating_sub(n), size - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeSpec::None;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeSpec::None,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Bytes(start, end.min(size - 1))
}

fn serve_file(req: &Request, path: &str, root: &Path, state: &State) -> Answer {
    let rel = path.trim_start_matches('/');
    let (mode, file_rel, count) = match rel.strip_prefix("__mis/") {
        Some(rest) => {
            let mut it = rest.splitn(3, '/');
            let (Some(token), Some(mode_s), Some(file)) = (it.next(), it.next(), it.next()) else {
                return Answer::simple(400, "use /__mis/<token>/<mode>/<file>\n");
            };
            // `after-K-<mode>`: the first K GETs are served plainly, then `<mode>` starts.
            let (skip, inner) = match mode_s
                .strip_prefix("after-")
                .and_then(|r| r.split_once('-'))
            {
                Some((k, inner)) => match k.parse::<u64>() {
                    Ok(k) => (k, inner),
                    Err(_) => return Answer::simple(400, "bad after-K prefix\n"),
                },
                None => (0, mode_s),
            };
            let Some(mode) = parse_mode(inner) else {
                return Answer::simple(400, "unknown misbehaviour mode\n");
            };
            let count = if req.method == "GET" {
                state.count(&format!("{token}/{mode_s}"))
            } else {
                0
            };
            if count < skip {
                (Mode::Plain, file.to_string(), 0)
            } else {
                (mode, file.to_string(), count - skip)
            }
        }
        None => (Mode::Plain, rel.to_string(), 0),
    };
    let file = match resolve(root, &file_rel) {
        Ok(f) => f,
        Err(a) => return a,
    };
    let meta = match fs::metadata(&file) {
        Ok(m) => m,
        Err(e) => return Answer::simple(500, &format!("{e}\n")),
    };
    let size = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    let mut etag = format!("\"{size:x}-{:x}\"", mtime.as_nanos());
    let mut modified = mtime.as_secs();
    let mut swapped = false;
    match mode {
        Mode::Status(code, n) if n.is_none_or(|n| count < n) => {
            return Answer::simple(code, "scripted failure\n");
        }
        Mode::Swap(k) if count >= k => {
            swapped = true;
            etag = format!("\"{size:x}-{:x}-swapped\"", mtime.as_nanos());
            modified += 3600;
        }
        Mode::WeakEtag => etag = format!("W/{etag}"),
        _ => {}
    }
    let head = req.method == "HEAD";
    // Reads only the bytes answered (nothing for HEAD), so large images serve quickly.
    let read = |start: u64, len: u64| -> io::Result<Vec<u8>> {
        if head {
            return Ok(Vec::new());
        }
        let mut f = fs::File::open(&file)?;
        f.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf)?;
        if swapped {
            for b in &mut buf {
                *b ^= 0x5a;
            }
        }
        Ok(buf)
    };
    let last_modified = http_date(modified);
    let mut headers: Vec<(&'static str, String)> = vec![
        ("Content-Type", content_type(&file).into()),
        ("Accept-Ranges", "bytes".into()),
        ("ETag", etag.clone()),
        ("Last-Modified", last_modified.clone()),
    ];
    let mut range = parse_range(req.header("range"), size);
    if mode == Mode::IgnoreRange {
        range = RangeSpec::None;
    }
    if let (Some(ir), RangeSpec::Bytes(..)) = (req.header("if-range"), &range) {
        // A strong comparison: a weak ETag never matches.
        let matches = if ir.starts_with('"') || ir.starts_with("W/") {
            !etag.starts_with("W/") && ir == etag
        } else {
            ir == last_modified
        };
        if !matches {
            range = RangeSpec::None;
        }
    }
    let (status, start, len) = match range {
        RangeSpec::None => (200, 0, size),
        RangeSpec::Unsatisfiable => {
            headers.push(("Content-Range", format!("bytes */{size}")));
            (416, 0, 0)
        }
        RangeSpec::Bytes(mut start, mut end) => {
            if mode == Mode::WrongRange && end + 1 < size {
                start += 1;
                end += 1;
            }
            headers.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
            (206, start, end - start + 1)
        }
    };
    let body = match read(start, len) {
        Ok(b) => b,
        Err(e) => return Answer::simple(500, &format!("{e}\n")),
    };
    let mut answer = Answer {
        status,
        headers,
        body,
        cut_after: None,
    };
    let half = (len / 2) as usize;
    match mode {
        Mode::Truncate(n) if status == 206 && count < n => {
            // The promised length stays the full one.
            answer.headers.push(("Content-Length", len.to_string()));
            answer.cut_after = Some(half);
        }
        Mode::Short(n) if status == 206 && count < n => {
            answer.body.truncate(half);
            answer.headers.push(("Content-Length", half.to_string()));
        }
        _ => answer.headers.push(("Content-Length", len.to_string())),
    }
    answer
}

/// Formats seconds since the Unix epoch as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[(days % 7) as usize],
        d,
        MON[(month - 1) as usize],
        year,
        h,
        m,
        s
    )
}

/// The current time as an HTTP date (for logging and tests).
pub fn http_date_now() -> String {
    http_date(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    )
}

/// The MIME type a browser needs for `path`: pages, modules and wasm (for
/// `WebAssembly.instantiateStreaming`) by extension, anything else as bytes.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("css") => "text/css; charset=utf-8",
        Some("txt" | "tsv") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
        request(server, "GET", path, headers)
    }

    fn request(
        server: &TestServer,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(out[..split].to_vec()).unwrap();
        let status = head[9..12].parse().unwrap();
        (status, head, out[split + 4..].to_vec())
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn setup() -> (TestServer, PathBuf, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!(
            "qemuweb-server-test-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        fs::create_dir_all(dir.join("sub")).unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(dir.join("sub/f.bin"), &data).unwrap();
        (TestServer::start(&dir).unwrap(), dir, data)
    }

    #[test]
    fn ranges_validators_and_paths() {
        let (server, dir, data) = setup();
        let (st, head, body) = get(&server, "/sub/f.bin", &[("Range", "bytes=10-19")]);
        assert_eq!(st, 206);
        assert_eq!(body, &data[10..20]);
        assert_eq!(header(&head, "content-range"), Some("bytes 10-19/5000"));
        let etag = header(&head, "etag").unwrap().to_string();
        assert!(etag.starts_with('"'));
        let lm = header(&head, "last-modified").unwrap().to_string();
        let (st, _, body) = get(&server, "/sub/f.bin", &[("Range", "bytes=-10")]);
        assert_eq!((st, body.as_slice()), (206, &data[4990..]));
        let (st, head, _) = get(&server, "/sub/f.bin", &[("Range", "bytes=5000-")]);
        assert_eq!(st, 416);
        assert_eq!(header(&head, "content-range"), Some("bytes */5000"));
        let (st, _, body) = get(
            &server,
            "/sub/f.bin",
            &[("Range", "bytes=0-3"), ("If-Range", &etag)],
        );
        assert_eq!((st, body.len()), (206, 4));
        let (st, _, body) = get(
            &server,
            "/sub/f.bin",
            &[("Range", "bytes=0-3"), ("If-Range", &lm)],
        );
        assert_eq!((st, body.len()), (206, 4));
        let (st, _, body) = get(
            &server,
            "/sub/f.bin",
            &[("Range", "bytes=0-3"), ("If-Range", "\"other\"")],
        );
        assert_eq!((st, body.len()), (200, 5000));
        let (st, head, body) = request(&server, "HEAD", "/sub/f.bin", &[("Range", "bytes=0-9")]);
        assert_eq!((st, body.len()), (206, 0));
        assert_eq!(header(&head, "content-length"), Some("10"));
        let (st, head, body) = request(&server, "OPTIONS", "/sub/f.bin", &[]);
        assert_eq!((st, body.len()), (204, 0));
        assert!(header(&head, "access-control-allow-headers")
            .unwrap()
            .contains("If-Range"));
        assert!(header(&head, "access-control-expose-headers")
            .unwrap()
            .contains("Content-Range"));
        assert_eq!(
            header(&head, "cross-origin-resource-policy"),
            Some("cross-origin")
        );
        for bad in ["/../etc/passwd", "/sub/%2e%2e/%2e%2e/etc/passwd", "/sub/"] {
            let (st, _, _) = get(&server, bad, &[]);
            assert!(st == 403 || st == 404, "{bad}: {st}");
        }
        let (st, _, body) = get(&server, "/__log?prefix=/sub/f.bin", &[]);
        assert_eq!(st, 200);
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.starts_with("GET\t/sub/f.bin\tbytes=10-19\t206\t10\n"),
            "{text}"
        );
        assert_eq!(server.gets_for("/sub/f.bin").len(), 6);
        drop(server);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn misbehaviours() {
        let (server, dir, data) = setup();
        let r = [("Range", "bytes=0-99")];
        let (st, _, body) = get(&server, "/__mis/a/ignore-range/sub/f.bin", &r);
        assert_eq!((st, body.len()), (200, 5000));
        let (st, _, _) = get(&server, "/__mis/a/status-503-2/sub/f.bin", &r);
        assert_eq!(st, 503);
        let (st, _, _) = get(&server, "/__mis/a/status-503-2/sub/f.bin", &r);
        assert_eq!(st, 503);
        let (st, _, _) = get(&server, "/__mis/a/status-503-2/sub/f.bin", &r);
        assert_eq!(st, 206);
        // Another token has its own counter.
        let (st, _, _) = get(&server, "/__mis/b/status-503-2/sub/f.bin", &r);
        assert_eq!(st, 503);
        let (st, head, body) = get(&server, "/__mis/a/truncate-1/sub/f.bin", &r);
        assert_eq!((st, body.len()), (206, 50));
        assert_eq!(header(&head, "content-length"), Some("100"));
        let (_, _, body) = get(&server, "/__mis/a/truncate-1/sub/f.bin", &r);
        assert_eq!(body, &data[..100]);
        let (st, head, body) = get(&server, "/__mis/a/short-1/sub/f.bin", &r);
        assert_eq!((st, body.len()), (206, 50));
        assert_eq!(header(&head, "content-range"), Some("bytes 0-99/5000"));
        let (_, h1, b1) = get(&server, "/__mis/a/swap-1/sub/f.bin", &r);
        let (_, h2, b2) = get(&server, "/__mis/a/swap-1/sub/f.bin", &r);
        assert_eq!(b1, &data[..100]);
        assert_eq!(b2[0], data[0] ^ 0x5a);
        assert_ne!(header(&h1, "etag"), header(&h2, "etag"));
        let (st, head, body) = get(&server, "/__mis/a/wrong-range/sub/f.bin", &r);
        assert_eq!((st, body.as_slice()), (206, &data[1..101]));
        assert_eq!(header(&head, "content-range"), Some("bytes 1-100/5000"));
        let (st, _, _) = get(&server, "/__mis/a/after-1-status-500-1/sub/f.bin", &r);
        assert_eq!(st, 206);
        let (st, _, _) = get(&server, "/__mis/a/after-1-status-500-1/sub/f.bin", &r);
        assert_eq!(st, 500);
        let (st, _, _) = get(&server, "/__mis/a/after-1-status-500-1/sub/f.bin", &r);
        assert_eq!(st, 206);
        let (_, head, _) = get(&server, "/__mis/a/weak-etag/sub/f.bin", &r);
        assert!(header(&head, "etag").unwrap().starts_with("W/\""));
        drop(server);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
