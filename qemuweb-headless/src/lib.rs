//! Boots a QemuWeb VM through `QemuClient` in headless Chromium from a native program,
//! with the guest's serial console bridged to a reader and a writer.
//!
//! - [`RunnerOptions`]: what to boot (profile, disk, kernel, engine, assets) and how
//!   (time limit, browser, profile directory).
//! - [`run`]: serves the page, the runtime's wasm bundle, the engine's assets and the VM's
//!   files on 127.0.0.1 with COOP/COEP and Range support, starts Chromium headless on a
//!   fresh profile (the project's standard flags), copies serial output to the
//!   [`Console`]'s writer and its reader's bytes to the guest, and returns an
//!   [`Outcome`].
//! - [`HeadlessError`]: errors before the VM runs, each with a [`kind`](HeadlessError::kind)
//!   and an [`exit_code`](HeadlessError::exit_code).
//!
//! Engine assets are a JSON object the page hands to `QemuClient` (`v86Module`, `bios`,
//! ...): [`RunnerOptions::assets`] adds or replaces entries and
//! [`RunnerOptions::extra_files`] serves the local files they name.
//! [`RunnerOptions::use_qemu_dir`] fills both from a QEMU-in-wasm build directory
//! (the `--qemu-dir DIR` of the runners, default [`qemu_dir_or_env`]'s
//! `$QEMUWEB_QEMU_DIR`).
//!
//! [`RunnerOptions::control`] also serves the control API (`qemuweb-control`) on a
//! loopback address: the page then shows the guest's screen on a canvas, and automation
//! types, clicks, takes screenshots and reads the serial console through JSON commands
//! carrying the run's token, printed on stderr at start.
//!
//! Used by the `qemuweb-runtime` example `headless` (and so `scripts/demo`) and by
//! `qemuweb boot --browser`. Native only: on wasm32 the crate is empty.
#![cfg(not(target_arch = "wasm32"))]
#![warn(missing_docs)]

pub mod assets;
mod browser;
mod error;
mod qemu;
mod save;
mod site;

pub use browser::{dump_dom, CHROMIUM_FLAGS};
pub use error::{ErrorKind, HeadlessError, Result};
pub use qemu::{qemu_dir_or_env, QEMU_DIR_ENV};

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use qemuweb_config::{profile_by_id, DiskInput, ImageSource, VmInputs, VmOverrides};
use qemuweb_control::{ControlChannel, ControlServer, Hooks};
use qemuweb_runtime::engine::plan;
use qemuweb_runtime::EngineKind;

use browser::Cleanup;
use bytes::Bytes;
use qemuweb_http::Token;
use save::SnapshotSink;
use site::{Bridge, Input, Site};
use tokio::sync::Notify;

/// How long a quitting page may take to save its state and send it.
const SAVE_GRACE: Duration = Duration::from_secs(600);

const PAGE: &str = include_str!("page.html");

/// The engine the page asks `QemuClient` for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Engine {
    /// v86 (32-bit x86), served from [`RunnerOptions::v86_dir`].
    #[default]
    V86,
    /// QEMU compiled to wasm; its module and firmware come through
    /// [`RunnerOptions::assets`] and [`RunnerOptions::extra_files`] (see
    /// [`RunnerOptions::use_qemu_dir`]).
    Qemu,
}

impl Engine {
    /// The runtime's engine kind.
    pub fn kind(self) -> EngineKind {
        match self {
            Engine::V86 => EngineKind::V86,
            Engine::Qemu => EngineKind::Qemu,
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = HeadlessError;

    /// `v86` or `qemu`.
    ///
    /// ```
    /// use qemuweb_headless::Engine;
    /// assert_eq!("qemu".parse::<Engine>().unwrap(), Engine::Qemu);
    /// assert!("bochs".parse::<Engine>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "v86" => Ok(Engine::V86),
            "qemu" => Ok(Engine::Qemu),
            other => Err(HeadlessError::InvalidOptions(format!(
                "--engine {other}: the engines are v86 and qemu"
            ))),
        }
    }
}

/// A local file served to the page at a URL path (e.g. an engine's wasm module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// The absolute URL path, e.g. `/qemu/qemu-system-x86_64.wasm`.
    pub url_path: String,
    /// The file.
    pub file: PathBuf,
}

/// What to boot in the browser, and how.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunnerOptions {
    /// The VM profile id (see `qemuweb_config::default_profiles`).
    pub profile: String,
    /// The engine.
    pub engine: Engine,
    /// The disk: a local file (served with Range support) or an http(s) URL.
    pub disk: Option<String>,
    /// A kernel for direct boot: a local file or a URL.
    pub kernel: Option<String>,
    /// An initial ramdisk: a local file or a URL.
    pub initrd: Option<String>,
    /// The kernel command line.
    pub append: Option<String>,
    /// Guest RAM in MiB, overriding the profile.
    pub memory_mib: Option<u32>,
    /// The VM id (default `headless-PROFILE`); it names the guest's IndexedDB overlay.
    pub vm_id: Option<String>,
    /// Stop after this long ([`Outcome::Timeout`]).
    pub timeout: Option<Duration>,
    /// The BIOS (default Debian's SeaBIOS, `/usr/share/seabios/bios-256k.bin`).
    pub bios: Option<PathBuf>,
    /// The VGA BIOS (default Debian's `vgabios-stdvga.bin` when the BIOS is the default).
    pub vga_bios: Option<PathBuf>,
    /// The directory with v86's `libv86.mjs` and `v86.wasm` (default
    /// [`assets::v86_dir`] when [`assets::fetch_v86`] filled it; in a build without
    /// `embed-bundle`, else the checkout's `e2e/node_modules/v86/build`).
    pub v86_dir: Option<PathBuf>,
    /// The runtime's wasm bundle directory (default: the bundle embedded with the feature
    /// `embed-bundle`; without it `$CARGO_TARGET_DIR/web/qemuweb-runtime` of the checkout,
    /// built when missing).
    pub bundle: Option<PathBuf>,
    /// The Chromium program (default `/usr/bin/chromium`).
    pub chromium: Option<PathBuf>,
    /// A browser profile to keep (with the port, so the origin and the guest's IndexedDB
    /// writes persist across runs); default a temporary one, removed afterwards.
    pub user_data_dir: Option<PathBuf>,
    /// Engine asset entries added to (or replacing) the defaults the page passes to
    /// `QemuClient`, e.g. `{"qemuDir": "/qemu/"}`.
    pub assets: serde_json::Map<String, serde_json::Value>,
    /// Local files served to the page, for the URLs in [`assets`](Self::assets).
    pub extra_files: Vec<ExtraFile>,
    /// Turn Ctrl-C into [`Outcome::Interrupted`] (installs a process-wide handler once).
    pub handle_interrupt: bool,
    /// Report the page's progress and Chromium's own output on stderr.
    pub verbose: bool,
    /// Resume a published boot state instead of booting: the `boot-state.json` of
    /// `qemuweb prepare --boot-state` (or `boot --save`), its parts beside it.
    pub resume_published: Option<PathBuf>,
    /// When the run ends by its input closing or the time limit, save the VM's whole state
    /// and write it to this file as a snapshot file (the runtime's `exportSnapshot`). A
    /// save that fails makes the run an [`Outcome::PageError`].
    pub save_snapshot: Option<PathBuf>,
    /// Serve the control API (`qemuweb-control`: `POST /v1/command`) on this loopback
    /// address (port 0 picks one). The page then attaches a display canvas (the profile's
    /// screen, keyboard and pointer) and the run ends with the `stop` command, the time
    /// limit or Ctrl-C: the end of the console's input no longer stops the VM. Its URL and
    /// token are printed on stderr: `headless: control API on http://127.0.0.1:PORT token
    /// TOKEN`.
    pub control: Option<SocketAddr>,
}

impl RunnerOptions {
    /// Options for `profile` with every default: v86, no inputs, no limit.
    ///
    /// ```
    /// let opts = qemuweb_headless::RunnerOptions::new("linux-i386-pc-nographic");
    /// assert_eq!(opts.engine, qemuweb_headless::Engine::V86);
    /// assert!(opts.disk.is_none() && opts.handle_interrupt);
    /// ```
    pub fn new(profile: impl Into<String>) -> Self {
        RunnerOptions {
            profile: profile.into(),
            engine: Engine::V86,
            disk: None,
            kernel: None,
            initrd: None,
            append: None,
            memory_mib: None,
            vm_id: None,
            timeout: None,
            bios: None,
            vga_bios: None,
            v86_dir: None,
            bundle: None,
            chromium: None,
            user_data_dir: None,
            assets: serde_json::Map::new(),
            extra_files: Vec::new(),
            handle_interrupt: true,
            verbose: false,
            resume_published: None,
            save_snapshot: None,
            control: None,
        }
    }
}

/// Where the guest's serial console goes: bytes read from `input` are typed into the
/// guest (its end stops the VM with a final sync), its output is written to `output`.
pub struct Console {
    /// What the guest receives.
    pub input: Box<dyn Read + Send>,
    /// What the guest prints.
    pub output: Box<dyn Write + Send>,
}

impl Console {
    /// This process's standard input and output.
    pub fn stdio() -> Self {
        Console {
            input: Box::new(io::stdin()),
            output: Box::new(io::stdout()),
        }
    }
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The input ended and the page stopped the VM (after a final overlay sync).
    InputClosed,
    /// The time limit passed.
    Timeout,
    /// Ctrl-C.
    Interrupted,
    /// The page reported a fatal error (`code: message`).
    PageError(String),
    /// Chromium exited by itself.
    BrowserExited(String),
    /// The control API's `stop` command stopped the VM (after a final overlay sync).
    Stopped,
}

impl Outcome {
    /// The conventional exit status: 0, 124 (timeout), 130 (Ctrl-C) or 1.
    ///
    /// ```
    /// use qemuweb_headless::Outcome;
    /// assert_eq!(Outcome::InputClosed.exit_code(), 0);
    /// assert_eq!(Outcome::Timeout.exit_code(), 124);
    /// assert_eq!(Outcome::PageError("x".into()).exit_code(), 1);
    /// ```
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::InputClosed | Outcome::Stopped => 0,
            Outcome::Timeout => 124,
            Outcome::Interrupted => 130,
            Outcome::PageError(_) | Outcome::BrowserExited(_) => 1,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::InputClosed => f.write_str("the input ended; the VM stopped"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::Interrupted => f.write_str("interrupted"),
            Outcome::PageError(m) => write!(f, "stopped by an error: {m}"),
            Outcome::BrowserExited(m) => f.write_str(m),
            Outcome::Stopped => f.write_str("stopped by the control API"),
        }
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The files, assets and page configuration of one run.
struct Prepared {
    files: HashMap<String, PathBuf>,
    /// URL path -> a file of the embedded bundle.
    embedded: HashMap<String, &'static [u8]>,
    config: serde_json::Value,
}

fn prepare(opts: &RunnerOptions) -> Result<Prepared> {
    let invalid = HeadlessError::InvalidOptions;
    let profile = profile_by_id(&opts.profile).map_err(|e| invalid(e.to_string()))?;
    if opts.disk.is_none() && opts.kernel.is_none() {
        return Err(invalid("give --disk or --kernel".into()));
    }
    if let Some(addr) = opts.control.filter(|a| !a.ip().is_loopback()) {
        return Err(invalid(
            qemuweb_control::ControlError::NotLoopback(addr.to_string()).to_string(),
        ));
    }
    let bios = match opts.bios.clone() {
        Some(b) => b,
        None => {
            let debian = PathBuf::from("/usr/share/seabios/bios-256k.bin");
            if !debian.is_file() {
                return Err(invalid(
                    "no BIOS: pass --bios FILE (SeaBIOS: apt-get install seabios, then \
                     /usr/share/seabios/bios-256k.bin)"
                        .into(),
                ));
            }
            debian
        }
    };
    if !bios.is_file() {
        return Err(invalid(format!("--bios {}: no such file", bios.display())));
    }
    let vga_bios = opts.vga_bios.clone().or_else(|| {
        let p = PathBuf::from("/usr/share/seabios/vgabios-stdvga.bin");
        (opts.bios.is_none() && p.is_file()).then_some(p)
    });
    let v86_dir = match &opts.v86_dir {
        Some(d) => d.clone(),
        None => browser::default_v86_dir()?,
    };
    if opts.engine == Engine::V86 && !assets::has_v86(&v86_dir) {
        return Err(invalid(format!(
            "v86 not found in {}: pass --v86-dir with libv86.mjs and v86.wasm, or run `qemuweb assets fetch`",
            v86_dir.display()
        )));
    }

    // Local files get a URL path on our server; URLs are passed on.
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    let mut source = |what: &str, location: &str| -> Result<ImageSource> {
        if is_url(location) {
            return Ok(ImageSource::url(location));
        }
        let p = PathBuf::from(location);
        if !p.is_file() {
            return Err(invalid(format!("--{what} {location}: no such file")));
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
        disk: match &opts.disk {
            Some(d) => Some(DiskInput {
                source: source("disk", d)?,
                format: None,
                read_only: false,
            }),
            None => None,
        },
        kernel: opts
            .kernel
            .as_deref()
            .map(|k| source("kernel", k))
            .transpose()?,
        initrd: opts
            .initrd
            .as_deref()
            .map(|i| source("initrd", i))
            .transpose()?,
        kernel_cmdline: opts.append.clone(),
        additional_disks: vec![],
    };
    let overrides = VmOverrides {
        memory_mib: opts.memory_mib,
        ..VmOverrides::default()
    };
    // The same checks the worker makes, before starting a browser.
    plan(
        &profile,
        &inputs,
        Some(&overrides),
        Some(opts.engine.kind()),
    )
    .map_err(|e| HeadlessError::Refused(e.to_string()))?;
    let mut embedded = HashMap::new();
    match browser::find_bundle(opts.bundle.as_deref())? {
        browser::Bundle::Dir(bundle) => add_tree(&mut files, &bundle, "/pkg"),
        browser::Bundle::Embedded(list) => {
            for (path, bytes) in list {
                embedded.insert(format!("/pkg/{path}"), *bytes);
            }
        }
    }
    let mut assets = serde_json::Map::new();
    if opts.engine == Engine::V86 {
        files.insert("/v86/libv86.mjs".into(), v86_dir.join("libv86.mjs"));
        files.insert("/v86/v86.wasm".into(), v86_dir.join("v86.wasm"));
        assets.insert("v86Module".into(), "/v86/libv86.mjs".into());
        assets.insert("v86Wasm".into(), "/v86/v86.wasm".into());
    }
    files.insert("/bios/bios.bin".into(), bios);
    assets.insert(
        "bios".into(),
        serde_json::json!({"kind": "url", "url": "/bios/bios.bin"}),
    );
    if let Some(v) = &vga_bios {
        files.insert("/bios/vgabios.bin".into(), v.clone());
        assets.insert(
            "vgaBios".into(),
            serde_json::json!({"kind": "url", "url": "/bios/vgabios.bin"}),
        );
    }
    for extra in &opts.extra_files {
        if !extra.file.is_file() {
            return Err(invalid(format!("{}: no such file", extra.file.display())));
        }
        files.insert(extra.url_path.clone(), extra.file.clone());
    }
    assets.extend(opts.assets.clone());
    let vm_id = opts
        .vm_id
        .clone()
        .unwrap_or_else(|| format!("headless-{}", profile.id));
    let mut config = serde_json::json!({
        "vmId": vm_id,
        "profile": profile,
        "inputs": inputs,
        "overrides": overrides,
        "engine": opts.engine.kind(),
        "assets": assets,
        "drainMs": 500,
        "saveSnapshot": opts.save_snapshot.is_some(),
        "control": opts.control.is_some(),
    });
    if let Some(manifest) = &opts.resume_published {
        config["resume"] = serve_boot_state(&mut files, manifest)?;
    }
    Ok(Prepared {
        files,
        embedded,
        config,
    })
}

/// Serves the published boot state of `manifest` (`boot-state.json` and its parts) under
/// `/boot-state/`; returns the `resume` option that names it.
fn serve_boot_state(
    files: &mut HashMap<String, PathBuf>,
    manifest: &Path,
) -> Result<serde_json::Value> {
    let invalid = |m: String| HeadlessError::InvalidOptions(m);
    let bytes =
        std::fs::read(manifest).map_err(|e| invalid(format!("{}: {e}", manifest.display())))?;
    let state = qemuweb_storage::snapshot::PublishedState::parse(&bytes)
        .map_err(|e| invalid(format!("{}: {e}", manifest.display())))?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    files.insert("/boot-state/boot-state.json".into(), manifest.to_path_buf());
    for part in &state.parts {
        let file = dir.join(&part.path);
        if !file.is_file() {
            return Err(invalid(format!("{}: no such file", file.display())));
        }
        files.insert(format!("/boot-state/{}", part.path), file);
    }
    Ok(serde_json::json!({"kind": "published", "url": "/boot-state/boot-state.json"}))
}

/// The guest's serial output to the console and to the control API's log.
struct Tee {
    out: Box<dyn Write + Send>,
    channel: Arc<ControlChannel>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.channel.serial_output(buf);
        // The control API keeps the output even when the console is gone.
        let _ = self.out.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.out.flush();
        Ok(())
    }
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

/// Boots the VM of `opts` in headless Chromium with its serial console on `console`, and
/// waits until the input ends (the page stops the VM with a final sync), the time limit
/// passes, Ctrl-C (with [`RunnerOptions::handle_interrupt`]), a fatal page error or
/// Chromium's exit. Chromium is killed and a temporary profile removed in every case.
///
/// Non-fatal page errors and warnings are printed on stderr, prefixed `headless:`.
///
/// ```no_run
/// use qemuweb_headless::{run, Console, RunnerOptions};
/// let mut opts = RunnerOptions::new("linux-i386-pc-nographic");
/// opts.disk = Some("x86-bios.qcow2".into());
/// let outcome = run(&opts, Console::stdio())?;
/// std::process::exit(outcome.exit_code().into());
/// # Ok::<(), qemuweb_headless::HeadlessError>(())
/// ```
///
/// # Errors
///
/// [`HeadlessError::InvalidOptions`] for an unknown profile, missing files or nothing to
/// boot; [`HeadlessError::Refused`] when the runtime cannot run the VM (e.g. a 64-bit
/// profile on v86); [`HeadlessError::Bundle`] when the wasm bundle is missing and cannot
/// be built; [`HeadlessError::Io`] when listening, the profile directory or Chromium
/// fails. Once Chromium runs, everything is an [`Outcome`].
pub fn run(opts: &RunnerOptions, console: Console) -> Result<Outcome> {
    let Prepared {
        files,
        embedded,
        mut config,
    } = prepare(opts)?;
    // The bridge's key for this run; only pages that can read config.json (same origin)
    // learn it.
    let token =
        Token::generate().map_err(|e| HeadlessError::io("random token", io::Error::other(e)))?;
    config["token"] = token.as_str().into();
    let (exits_tx, exits) = mpsc::channel();
    let snapshot = match &opts.save_snapshot {
        Some(path) => Some(SnapshotSink::create(path)?),
        None => None,
    };
    let control = opts.control.map(|_| ControlChannel::new());
    let output: Box<dyn Write + Send> = match &control {
        Some(channel) => Box::new(Tee {
            out: console.output,
            channel: channel.clone(),
        }),
        None => console.output,
    };
    let bridge = Arc::new(Bridge {
        input: Mutex::new(Input::default()),
        wake: Notify::new(),
        output: Mutex::new(output),
        exits: exits_tx.clone(),
        verbose: opts.verbose,
        snapshot: Mutex::new(snapshot),
    });
    // The control API's `stop` ends the page's input like the console's end does.
    let stopped_by_control = Arc::new(AtomicBool::new(false));
    let _control_server = match (opts.control, &control) {
        (Some(addr), Some(channel)) => {
            let (input, stop) = (bridge.clone(), bridge.clone());
            let flag = stopped_by_control.clone();
            let hooks = Hooks::new(
                move |bytes| {
                    if !bytes.is_empty() {
                        input.push_input(bytes);
                    }
                },
                move || {
                    flag.store(true, Ordering::SeqCst);
                    stop.push_input(&[]);
                },
            );
            let server = ControlServer::start(addr, channel.clone(), hooks)
                .map_err(|e| HeadlessError::io("the control API", io::Error::other(e)))?;
            eprintln!(
                "headless: control API on {} token {}",
                server.url(),
                server.token()
            );
            Some(server)
        }
        _ => None,
    };
    let mut generated = HashMap::new();
    for (path, bytes) in embedded {
        let content_type = qemuweb_http::mime_type(Path::new(&path));
        generated.insert(path, (Bytes::from_static(bytes), content_type));
    }
    generated.insert(
        "/page.html".to_string(),
        (
            Bytes::from_static(PAGE.as_bytes()),
            "text/html; charset=utf-8",
        ),
    );
    generated.insert(
        "/config.json".to_string(),
        (Bytes::from(config.to_string()), "application/json"),
    );
    let site = Site {
        files,
        generated,
        bridge: bridge.clone(),
        control,
    };
    // A kept profile keeps its origin (and so its IndexedDB disks): the same port each run.
    let port_file = opts
        .user_data_dir
        .as_ref()
        .map(|d| d.join("qemuweb-headless-port"));
    let port: u16 = port_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    let listener = qemuweb_http::bind_loopback(port)
        .map_err(|e| HeadlessError::io("cannot listen on 127.0.0.1", io::Error::other(e)))?;
    let server = site::start(listener, site, token)
        .map_err(|e| HeadlessError::io("cannot serve on 127.0.0.1", io::Error::other(e)))?;
    let addr = server.local_addr();

    // The console's input -> the page. With the control API its end is not the run's.
    {
        let bridge = bridge.clone();
        let mut input = console.input;
        let keep_running = opts.control.is_some();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = input.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    if !keep_running {
                        bridge.push_input(&[]);
                    }
                    break;
                }
                bridge.push_input(&buf[..n]);
            }
        });
    }
    if opts.handle_interrupt {
        let tx = exits_tx.clone();
        // A second handler cannot be installed; that only matters to embedders.
        let _ = ctrlc::set_handler(move || {
            let _ = tx.send(Outcome::Interrupted);
        });
    }

    let profile_dir = match &opts.user_data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| HeadlessError::io(dir.display(), e))?;
            dir.clone()
        }
        // A private directory (mode 0700, unpredictable name) under the temporary directory.
        None => tempfile::Builder::new()
            .prefix(&format!("qemuweb-headless-{}-", std::process::id()))
            .tempdir()
            .map_err(|e| HeadlessError::io("a temporary profile directory", e))?
            .keep(),
    };
    if let Some(f) = &port_file {
        std::fs::write(f, format!("{}\n", addr.port()))
            .map_err(|e| HeadlessError::io(f.display(), e))?;
    }
    let mut cleanup = Cleanup {
        profile: profile_dir.clone(),
        remove_profile: opts.user_data_dir.is_none(),
        chromium: None,
    };
    let chromium_bin = opts
        .chromium
        .clone()
        .unwrap_or_else(|| PathBuf::from(browser::DEFAULT_CHROMIUM));
    let url = format!("http://{addr}/page.html");
    cleanup.chromium = Some(browser::launch(
        &chromium_bin,
        &profile_dir,
        &url,
        opts.verbose,
    )?);

    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let mut quitting: Option<(Instant, Outcome)> = None;
    loop {
        if let Some(c) = cleanup.chromium.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                // Kept in `cleanup`: its helpers may outlive it, and go with its group.
                return Ok(Outcome::BrowserExited(format!(
                    "Chromium exited ({status})"
                )));
            }
        }
        if let Some((since, _)) = &quitting {
            // The page had its chance to stop the VM with a final sync (and to save and
            // send its state).
            let grace = if opts.save_snapshot.is_some() {
                SAVE_GRACE
            } else {
                Duration::from_secs(10)
            };
            if since.elapsed() > grace {
                let (_, why) = quitting.take().expect("checked");
                return Ok(why);
            }
        }
        if let Some(d) = deadline {
            if Instant::now() >= d && quitting.is_none() {
                quitting = Some((Instant::now(), Outcome::Timeout));
                bridge.push_input(&[]);
            }
        }
        match exits.recv_timeout(Duration::from_millis(100)) {
            Ok(Outcome::InputClosed) => {
                if opts.save_snapshot.is_some() && !bridge.snapshot_saved() {
                    return Ok(Outcome::PageError(
                        "the page stopped without sending the saved state".into(),
                    ));
                }
                return Ok(match quitting {
                    Some((_, why)) => why,
                    None if stopped_by_control.load(Ordering::SeqCst) => Outcome::Stopped,
                    None => Outcome::InputClosed,
                });
            }
            Ok(other) => return Ok(other),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(Outcome::Interrupted),
        }
    }
}
