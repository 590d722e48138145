//! Headless mode: boots a disk image through `QemuClient` in headless Chromium and bridges the
//! guest's serial console to this process's standard input and output.
//!
//! ```text
//! cargo run -p qemuweb-runtime --example headless -- --profile linux-i386-pc-nographic \
//!     --disk x86-bios.qcow2 [--bios FILE] [--engine v86] [--timeout SECS]
//! ```
//!
//! It serves everything the page needs on 127.0.0.1 (the runner page, the wasm bundle built
//! by `scripts/build-web`, v86 from `e2e/node_modules/v86/build`, the BIOS, and the disk,
//! kernel and initrd when they are local files, with Range support), starts Chromium on a
//! temporary profile, copies serial output to stdout and stdin to the guest. It exits when
//! stdin closes (after a final overlay sync; status 0), when `--timeout` passes (124), on
//! Ctrl-C (130), or when the page reports a fatal error (1); usage errors exit 2. Chromium
//! is killed and temporary files are removed in every case.
//!
//! The browser profile is temporary unless `--user-data-dir DIR` is given: then it is kept,
//! with the port the runner served on, so the next run has the same origin and the guest's
//! disk writes (its IndexedDB overlays) are there again.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use qemuweb_config::{profile_by_id, DiskInput, ImageSource, VmInputs, VmOverrides};
use qemuweb_runtime::engine::plan;
use qemuweb_runtime::EngineKind;

const PAGE: &str = include_str!("page.html");
const USAGE: &str =
    "usage: headless --profile ID --disk PATH_OR_URL [--bios FILE] [--vga-bios FILE] \
[--engine v86] [--kernel PATH_OR_URL] [--initrd PATH_OR_URL] [--append CMDLINE] [--memory MIB] \
[--vm-id ID] [--timeout SECS] [--v86-dir DIR] [--bundle DIR] [--chromium PATH] \
[--user-data-dir DIR] [--verbose]";

/// Why the runner stops.
#[derive(Debug)]
enum Exit {
    StdinClosed,
    Timeout,
    Interrupted,
    PageError(String),
    BrowserExited(String),
}

#[derive(Default)]
struct Args {
    profile: Option<String>,
    disk: Option<String>,
    bios: Option<PathBuf>,
    vga_bios: Option<PathBuf>,
    engine: Option<String>,
    kernel: Option<String>,
    initrd: Option<String>,
    append: Option<String>,
    memory: Option<u32>,
    vm_id: Option<String>,
    timeout: Option<f64>,
    v86_dir: Option<PathBuf>,
    bundle: Option<PathBuf>,
    chromium: Option<PathBuf>,
    user_data_dir: Option<PathBuf>,
    verbose: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--profile" => a.profile = Some(value()?),
            "--disk" => a.disk = Some(value()?),
            "--bios" => a.bios = Some(value()?.into()),
            "--vga-bios" => a.vga_bios = Some(value()?.into()),
            "--engine" => a.engine = Some(value()?),
            "--kernel" => a.kernel = Some(value()?),
            "--initrd" => a.initrd = Some(value()?),
            "--append" => a.append = Some(value()?),
            "--memory" => {
                let v = value()?;
                a.memory = Some(
                    v.parse()
                        .map_err(|_| format!("--memory {v}: not a number of MiB"))?,
                );
            }
            "--vm-id" => a.vm_id = Some(value()?),
            "--timeout" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--timeout {v}: not a number of seconds"))?;
                if !(secs > 0.0 && secs.is_finite()) {
                    return Err(format!(
                        "--timeout {v}: must be a positive number of seconds"
                    ));
                }
                a.timeout = Some(secs);
            }
            "--v86-dir" => a.v86_dir = Some(value()?.into()),
            "--bundle" => a.bundle = Some(value()?.into()),
            "--chromium" => a.chromium = Some(value()?.into()),
            "--user-data-dir" => a.user_data_dir = Some(value()?.into()),
            "--verbose" => a.verbose = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// What the server answers for each path.
struct Site {
    /// URL path -> file.
    files: HashMap<String, PathBuf>,
    /// URL path -> generated content.
    generated: HashMap<String, (Vec<u8>, &'static str)>,
    bridge: Arc<Bridge>,
}

/// The serial bridge and event channel between the page and the runner.
struct Bridge {
    input: Mutex<Input>,
    wake: Condvar,
    exits: mpsc::Sender<Exit>,
    verbose: bool,
}

#[derive(Default)]
struct Input {
    bytes: Vec<u8>,
    closed: bool,
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

fn handle(mut stream: TcpStream, site: &Site) -> io::Result<()> {
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
                let mut out = io::stdout().lock();
                out.write_all(&body)?;
                out.flush()?;
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
                let _ = bridge.exits.send(Exit::PageError(message));
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
            let _ = bridge.exits.send(Exit::StdinClosed);
        }
        _ => {}
    }
}

/// Chromium, and its profile directory when it is a temporary one; both go away on drop.
struct Cleanup {
    profile: PathBuf,
    remove_profile: bool,
    chromium: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.chromium.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.remove_profile {
            return;
        }
        // Chromium's helpers may still be writing for a moment after the browser died.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn find_bundle(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(b) = explicit {
        return if b.join("qemuweb_runtime.js").is_file() {
            Ok(b)
        } else {
            Err(format!(
                "--bundle {}: no qemuweb_runtime.js there",
                b.display()
            ))
        };
    }
    let repo = repo_dir();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    let bundle = target.join("web").join("qemuweb-runtime");
    if !bundle.join("qemuweb_runtime.js").is_file() {
        eprintln!("headless: building the web bundle (scripts/build-web qemuweb-runtime)");
        let status = Command::new(repo.join("scripts").join("build-web"))
            .arg("qemuweb-runtime")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run scripts/build-web: {e}"))?;
        if !status.success() || !bundle.join("qemuweb_runtime.js").is_file() {
            return Err("scripts/build-web qemuweb-runtime failed".into());
        }
    }
    Ok(bundle)
}

fn run() -> Result<Exit, (u8, String)> {
    let usage = |m: String| (2u8, m);
    let args = parse_args().map_err(|m| {
        usage(if m.is_empty() {
            USAGE.into()
        } else {
            format!("{m}\n{USAGE}")
        })
    })?;
    let profile_id = args
        .profile
        .clone()
        .ok_or_else(|| usage(format!("--profile is required\n{USAGE}")))?;
    let profile = profile_by_id(&profile_id).map_err(|e| usage(e.to_string()))?;
    let engine = match args.engine.as_deref() {
        None | Some("v86") => EngineKind::V86,
        Some("qemu") => EngineKind::Qemu,
        Some(other) => {
            return Err(usage(format!(
                "--engine {other}: the engines are v86 and qemu"
            )))
        }
    };
    if args.disk.is_none() && args.kernel.is_none() {
        return Err(usage(format!("give --disk or --kernel\n{USAGE}")));
    }
    let bios = match args.bios.clone() {
        Some(b) => b,
        None => {
            let debian = PathBuf::from("/usr/share/seabios/bios-256k.bin");
            if debian.is_file() {
                debian
            } else {
                return Err(usage(
                    "no BIOS: pass --bios FILE (SeaBIOS: apt-get install seabios, then \
                     /usr/share/seabios/bios-256k.bin)"
                        .into(),
                ));
            }
        }
    };
    if !bios.is_file() {
        return Err(usage(format!("--bios {}: no such file", bios.display())));
    }
    let vga_bios = args.vga_bios.clone().or_else(|| {
        let p = PathBuf::from("/usr/share/seabios/vgabios-stdvga.bin");
        (args.bios.is_none() && p.is_file()).then_some(p)
    });
    let v86_dir = args
        .v86_dir
        .clone()
        .unwrap_or_else(|| repo_dir().join("e2e/node_modules/v86/build"));
    if !v86_dir.join("libv86.mjs").is_file() || !v86_dir.join("v86.wasm").is_file() {
        return Err(usage(format!(
            "v86 not found in {} (run `npm ci` in e2e/, or pass --v86-dir with libv86.mjs and v86.wasm)",
            v86_dir.display()
        )));
    }

    // Local files get a URL path on our server; URLs are passed on.
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    let mut source = |what: &str, location: &str| -> Result<ImageSource, (u8, String)> {
        if is_url(location) {
            return Ok(ImageSource::url(location));
        }
        let p = PathBuf::from(location);
        if !p.is_file() {
            return Err(usage(format!("--{what} {location}: no such file")));
        }
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("image")
            .to_string();
        let url_path = format!("/files/{what}/{name}");
        files.insert(url_path.clone(), p);
        Ok(ImageSource::url(url_path))
    };
    let inputs = VmInputs {
        disk: match &args.disk {
            Some(d) => Some(DiskInput {
                source: source("disk", d)?,
                format: None,
                read_only: false,
            }),
            None => None,
        },
        kernel: args
            .kernel
            .as_deref()
            .map(|k| source("kernel", k))
            .transpose()?,
        initrd: args
            .initrd
            .as_deref()
            .map(|i| source("initrd", i))
            .transpose()?,
        kernel_cmdline: args.append.clone(),
        additional_disks: vec![],
    };
    let overrides = VmOverrides {
        memory_mib: args.memory,
        ..VmOverrides::default()
    };
    // The same checks the worker makes, before starting a browser.
    plan(&profile, &inputs, Some(&overrides), Some(engine)).map_err(|e| (1u8, e.to_string()))?;
    let bundle = find_bundle(args.bundle.clone()).map_err(|e| (1u8, e))?;

    for entry in std::fs::read_dir(&bundle)
        .map_err(|e| (1u8, format!("{}: {e}", bundle.display())))?
        .flatten()
    {
        if entry.path().is_file() {
            files.insert(
                format!("/pkg/{}", entry.file_name().to_string_lossy()),
                entry.path(),
            );
        }
    }
    add_tree(&mut files, &bundle.join("snippets"), "/pkg/snippets");
    files.insert("/v86/libv86.mjs".into(), v86_dir.join("libv86.mjs"));
    files.insert("/v86/v86.wasm".into(), v86_dir.join("v86.wasm"));
    files.insert("/bios/bios.bin".into(), bios);
    if let Some(v) = &vga_bios {
        files.insert("/bios/vgabios.bin".into(), v.clone());
    }
    let vm_id = args
        .vm_id
        .clone()
        .unwrap_or_else(|| format!("headless-{}", profile.id));
    let mut assets = serde_json::json!({
        "v86Module": "/v86/libv86.mjs",
        "v86Wasm": "/v86/v86.wasm",
        "bios": {"kind": "url", "url": "/bios/bios.bin"},
    });
    if vga_bios.is_some() {
        assets["vgaBios"] = serde_json::json!({"kind": "url", "url": "/bios/vgabios.bin"});
    }
    let config = serde_json::json!({
        "vmId": vm_id,
        "profile": profile,
        "inputs": inputs,
        "overrides": overrides,
        "engine": engine,
        "assets": assets,
        "drainMs": 500,
    });

    let (exits_tx, exits) = mpsc::channel();
    let bridge = Arc::new(Bridge {
        input: Mutex::new(Input::default()),
        wake: Condvar::new(),
        exits: exits_tx.clone(),
        verbose: args.verbose,
    });
    let mut generated = HashMap::new();
    generated.insert(
        "/page.html".to_string(),
        (PAGE.as_bytes().to_vec(), "text/html; charset=utf-8"),
    );
    generated.insert(
        "/config.json".to_string(),
        (config.to_string().into_bytes(), "application/json"),
    );
    let site = Arc::new(Site {
        files,
        generated,
        bridge: bridge.clone(),
    });
    // A kept profile keeps its origin (and so its IndexedDB disks): the same port each run.
    let port_file = args
        .user_data_dir
        .as_ref()
        .map(|d| d.join("qemuweb-headless-port"));
    let port: u16 = port_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| (1u8, format!("cannot listen on 127.0.0.1: {e}")))?;
    let addr = listener.local_addr().map_err(|e| (1u8, e.to_string()))?;
    {
        let site = site.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let site = site.clone();
                thread::spawn(move || {
                    let _ = handle(stream, &site);
                });
            }
        });
    }

    // Standard input -> the page.
    {
        let bridge = bridge.clone();
        thread::spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                let n = stdin.read(&mut buf).unwrap_or(0);
                let mut input = bridge.input.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    input.closed = true;
                } else {
                    input.bytes.extend_from_slice(&buf[..n]);
                }
                bridge.wake.notify_all();
                if n == 0 {
                    break;
                }
            }
        });
    }
    {
        let tx = exits_tx.clone();
        // A second handler cannot be installed; that only matters to embedders.
        let _ = ctrlc::set_handler(move || {
            let _ = tx.send(Exit::Interrupted);
        });
    }

    let profile_dir = args.user_data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "qemuweb-headless-{}-{}",
            std::process::id(),
            addr.port()
        ))
    });
    std::fs::create_dir_all(&profile_dir)
        .map_err(|e| (1u8, format!("{}: {e}", profile_dir.display())))?;
    if let Some(f) = &port_file {
        std::fs::write(f, format!("{}\n", addr.port()))
            .map_err(|e| (1u8, format!("{}: {e}", f.display())))?;
    }
    let mut cleanup = Cleanup {
        profile: profile_dir.clone(),
        remove_profile: args.user_data_dir.is_none(),
        chromium: None,
    };
    let chromium_bin = args
        .chromium
        .clone()
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let url = format!("http://{addr}/page.html");
    let child = Command::new(&chromium_bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if args.verbose {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .map_err(|e| (1u8, format!("cannot start {}: {e}", chromium_bin.display())))?;
    cleanup.chromium = Some(child);

    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let mut quitting: Option<(Instant, Exit)> = None;
    loop {
        if let Some(c) = cleanup.chromium.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                cleanup.chromium = None;
                return Ok(Exit::BrowserExited(format!("Chromium exited ({status})")));
            }
        }
        if let Some((since, _)) = &quitting {
            // The page had its chance to stop the VM with a final sync.
            if since.elapsed() > Duration::from_secs(10) {
                let (_, why) = quitting.take().expect("checked");
                return Ok(why);
            }
        }
        if let Some(d) = deadline {
            if Instant::now() >= d && quitting.is_none() {
                quitting = Some((Instant::now(), Exit::Timeout));
                close_input(&bridge);
            }
        }
        match exits.recv_timeout(Duration::from_millis(100)) {
            Ok(Exit::StdinClosed) => {
                return Ok(match quitting {
                    Some((_, why)) => why,
                    None => Exit::StdinClosed,
                })
            }
            Ok(Exit::Interrupted) => return Ok(Exit::Interrupted),
            Ok(other) => return Ok(other),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(Exit::Interrupted),
        }
    }
}

fn close_input(bridge: &Bridge) {
    let mut input = bridge.input.lock().unwrap_or_else(|e| e.into_inner());
    input.closed = true;
    bridge.wake.notify_all();
}

fn add_tree(files: &mut HashMap<String, PathBuf>, dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let path = e.path();
        if path.is_dir() {
            add_tree(files, &path, &format!("{prefix}/{name}"));
        } else {
            files.insert(format!("{prefix}/{name}"), path);
        }
    }
}

pub fn main() -> ExitCode {
    match run() {
        Ok(Exit::StdinClosed) => ExitCode::SUCCESS,
        Ok(Exit::Timeout) => {
            eprintln!("headless: timeout");
            ExitCode::from(124)
        }
        Ok(Exit::Interrupted) => {
            eprintln!("headless: interrupted");
            ExitCode::from(130)
        }
        Ok(Exit::PageError(m)) => {
            eprintln!("headless: stopped by an error: {m}");
            ExitCode::from(1)
        }
        Ok(Exit::BrowserExited(m)) => {
            eprintln!("headless: {m}");
            ExitCode::from(1)
        }
        Err((code, message)) => {
            eprintln!("headless: {message}");
            ExitCode::from(code)
        }
    }
}
