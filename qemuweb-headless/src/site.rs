//! The runner's HTTP server on 127.0.0.1: the page, its configuration, the bundle and
//! the VM's files (with single-range support), plus the serial bridge and the page's
//! event channel. Every answer carries COOP/COEP, CORP and CORS headers.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::Outcome;

/// What the server answers for each path.
pub(crate) struct Site {
    /// URL path -> file.
    pub(crate) files: HashMap<String, PathBuf>,
    /// URL path -> generated content.
    pub(crate) generated: HashMap<String, (Vec<u8>, &'static str)>,
    pub(crate) bridge: std::sync::Arc<Bridge>,
}

/// The serial bridge and event channel between the page and the runner.
pub(crate) struct Bridge {
    pub(crate) input: Mutex<Input>,
    pub(crate) wake: Condvar,
    /// Where the guest's serial output goes.
    pub(crate) output: Mutex<Box<dyn Write + Send>>,
    pub(crate) exits: mpsc::Sender<Outcome>,
    pub(crate) verbose: bool,
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
        self.wake.notify_all();
    }
}

fn mime(path: &str) -> &'static str {
    match Path::new(path).extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra: &[(&str, String)],
    body: &[u8],
) -> io::Result<()> {
    respond_len(stream, status, content_type, extra, body, body.len())
}

/// As [`respond`], announcing `length` bytes (for HEAD, where no body follows).
fn respond_len(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra: &[(&str, String)],
    body: &[u8],
    length: usize,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        404 => "Not Found",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Embedder-Policy: require-corp\r\n\
         Cross-Origin-Resource-Policy: cross-origin\r\nAccess-Control-Allow-Origin: *\r\n\
         Access-Control-Expose-Headers: Content-Range, Content-Length, ETag, Accept-Ranges\r\n\
         Cache-Control: no-store\r\n",
        length
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Serves a file, honouring a single `bytes=a-b` range.
fn serve_file(
    stream: &mut TcpStream,
    file: &Path,
    range: Option<&str>,
    head: bool,
) -> io::Result<()> {
    let mut f = std::fs::File::open(file)?;
    let meta = f.metadata()?;
    let size = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let etag = format!("\"{size:x}-{mtime:x}\"");
    let mut headers = vec![("Accept-Ranges", "bytes".to_string()), ("ETag", etag)];
    let span = match range.and_then(|r| r.strip_prefix("bytes=")) {
        None => None,
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let parsed = match (a.trim().parse::<u64>(), b.trim()) {
                (Ok(start), "") => Some((start, size.saturating_sub(1))),
                (Ok(start), end) => end
                    .parse::<u64>()
                    .ok()
                    .map(|e| (start, e.min(size.saturating_sub(1)))),
                (Err(_), end) => end
                    .parse::<u64>()
                    .ok()
                    .map(|n| (size.saturating_sub(n), size.saturating_sub(1))),
            };
            match parsed {
                Some((s, e)) if s <= e && s < size => Some((s, e)),
                _ => {
                    headers.push(("Content-Range", format!("bytes */{size}")));
                    return respond(stream, 416, "text/plain", &headers, b"");
                }
            }
        }
    };
    let (status, start, len) = match span {
        Some((s, e)) => {
            headers.push(("Content-Range", format!("bytes {s}-{e}/{size}")));
            (206, s, e - s + 1)
        }
        None => (200, 0, size),
    };
    let mut body = vec![0u8; if head { 0 } else { len as usize }];
    if !head {
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut body)?;
    }
    let ct = mime(&file.to_string_lossy());
    respond_len(stream, status, ct, &headers, &body, len as usize)
}

/// Answers the requests of one connection until it closes.
pub(crate) fn handle(mut stream: TcpStream, site: &Site) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if length > 64 << 20 {
            return respond(&mut stream, 413, "text/plain", &[], b"too large\n");
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let path = target.split('?').next().unwrap_or("/");
        let path = if path == "/" { "/page.html" } else { path };
        match (method.as_str(), path) {
            ("OPTIONS", _) => respond(
                &mut stream,
                204,
                "text/plain",
                &[
                    (
                        "Access-Control-Allow-Methods",
                        "GET, HEAD, POST, OPTIONS".into(),
                    ),
                    (
                        "Access-Control-Allow-Headers",
                        "Range, If-Range, Content-Type".into(),
                    ),
                ],
                b"",
            )?,
            ("POST", "/serial/out") => {
                {
                    let mut out = site.bridge.output.lock().unwrap_or_else(|e| e.into_inner());
                    out.write_all(&body)?;
                    out.flush()?;
                }
                respond(&mut stream, 204, "text/plain", &[], b"")?;
            }
            ("GET", "/serial/in") => {
                let bridge = &site.bridge;
                let mut input = bridge.input.lock().unwrap_or_else(|e| e.into_inner());
                let deadline = Instant::now() + Duration::from_secs(20);
                while input.bytes.is_empty() && !input.closed && Instant::now() < deadline {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    input = bridge
                        .wake
                        .wait_timeout(input, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                if !input.bytes.is_empty() {
                    let bytes = std::mem::take(&mut input.bytes);
                    drop(input);
                    respond(&mut stream, 200, "application/octet-stream", &[], &bytes)?;
                } else if input.closed {
                    drop(input);
                    respond(&mut stream, 410, "text/plain", &[], b"")?;
                } else {
                    drop(input);
                    respond(&mut stream, 204, "text/plain", &[], b"")?;
                }
            }
            ("POST", "/event") => {
                on_event(&site.bridge, &body);
                respond(&mut stream, 204, "text/plain", &[], b"")?;
            }
            ("GET", p) | ("HEAD", p) => {
                let head = method == "HEAD";
                if let Some((content, ct)) = site.generated.get(p) {
                    let body: &[u8] = if head { b"" } else { content };
                    respond_len(&mut stream, 200, ct, &[], body, content.len())?;
                } else if let Some(file) = site.files.get(p) {
                    serve_file(
                        &mut stream,
                        file,
                        headers.get("range").map(String::as_str),
                        head,
                    )?;
                } else {
                    respond(&mut stream, 404, "text/plain", &[], b"not found\n")?;
                }
            }
            _ => respond(&mut stream, 404, "text/plain", &[], b"not found\n")?,
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
        "exited" => {
            let _ = bridge.exits.send(Outcome::InputClosed);
        }
        _ => {}
    }
}
