//! The messages between a page ([`QemuClient`](crate#the-page-side-qemuclient)) and a VM
//! worker, and their validation.
//!
//! Every message is a plain object (structured-cloned by `postMessage`), tagged by `type`:
//!
//! - page to worker: a [`Request`] `{id, command: {type, ...}}`; the [`Command`]s are
//!   `hello`, `start`, `stop`, `reset`, `serialIn`, `input`, `syncOverlay`,
//!   `exportOverlay` and `queryState`;
//! - worker to page: an [`Event`]: `ready`, `capabilities`, `started`, `stopped`,
//!   `serialOut`, `phase`, `progress`, `log`, `error` and `done` (the answer to a request
//!   `id`).
//!
//! **Handshake.** A new worker sends `ready` with its [`PROTOCOL_VERSION`]; the page
//! answers `hello` with its own. A worker refuses every other command before `hello`,
//! and a `hello` with another version gets an error event with code
//! [`ErrorCode::VersionMismatch`].
//!
//! **Untrusted input.** The worker decodes every message with [`decode_request_json`]
//! (or the same steps on a JS value), checks it with [`Request::validate`] and its order
//! with [`Session::check`]. A malformed, unknown or out-of-order message gets an
//! [`Event::Error`] carrying the request id when one could be read; nothing panics and
//! the worker keeps running.
//!
//! ```
//! use qemuweb_runtime::protocol::*;
//! let mut session = Session::new();
//! let hello = decode_request_json(r#"{"id":1,"command":{"type":"hello","version":1}}"#).unwrap();
//! session.check(&hello.command).unwrap();
//! let bad = decode_request_json(r#"{"id":2,"command":{"type":"fly"}}"#).unwrap_err();
//! assert_eq!(bad.request_id, Some(2));
//! assert_eq!(bad.error.code(), ErrorCode::UnknownCommand);
//! ```

use crate::capabilities::RuntimeCapabilities;
use crate::error::RuntimeError;
use crate::input::{check_events, InputEvent};
pub use crate::snapshot::{
    check_snapshot_name, Resume, SnapshotDiskInfo, SnapshotInfo, SnapshotOperation,
    MAX_SNAPSHOT_NAME,
};
use qemuweb_config::{VmInputs, VmOverrides, VmProfile};
use serde::{Deserialize, Serialize};
use tsify::Tsify;

/// The version of this protocol; the page and the worker must agree on it.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest VM or disk id accepted.
pub const MAX_ID_LEN: usize = 64;

/// The most serial bytes one `serialIn` command may carry.
pub const MAX_SERIAL_IN: usize = 64 * 1024;

/// The block size of every disk's copy-on-write overlay (in IndexedDB or in memory): small,
/// so a guest's sector write stores little. It does not depend on the profile's
/// `blockSizeBytes`, which is the size of the HTTP Range reads of the disk images.
pub const OVERLAY_BLOCK_SIZE: u32 = 4096;

/// The `type` of every command, in protocol order.
pub const COMMAND_TYPES: [&str; 10] = [
    "hello",
    "start",
    "stop",
    "reset",
    "serialIn",
    "input",
    "syncOverlay",
    "exportOverlay",
    "queryState",
    "saveSnapshot",
];

/// Serde glue for byte fields: bytes out (a `Uint8Array` in JavaScript), and bytes or an
/// array of numbers in.
pub(crate) mod bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes (a Uint8Array or an array of numbers 0-255)")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// The emulators a worker can run a guest on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// [v86](https://github.com/copy/v86): 32-bit x86, JIT to wasm.
    V86,
    /// QEMU compiled to wasm64 (`qemu-system-x86_64` and `qemu-system-aarch64`, TCG
    /// interpreter), from a `qemuweb-wasm-build` output directory (`assets.qemuDir`).
    Qemu,
}

impl EngineKind {
    /// The serialized name: `v86` or `qemu`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::V86 => "v86",
            EngineKind::Qemu => "qemu",
        }
    }
}

/// Where an asset (a BIOS image) comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AssetSource {
    /// Fetched from a URL (relative URLs resolve against the worker script).
    Url {
        /// The URL.
        url: String,
    },
    /// The bytes themselves.
    Bytes {
        /// The content.
        #[serde(with = "bytes")]
        #[tsify(type = "Uint8Array")]
        data: Vec<u8>,
    },
}

/// The files an engine needs that are not the guest's: the emulator itself and firmware.
/// The embedder provides them; none is bundled.
///
/// - v86: `v86Module` (+ `v86Wasm`), `bios`, optionally `vgaBios`.
/// - QEMU: `qemuDir`, a QEMU build directory (a `qemuweb-wasm-build` output directory or
///   the `dist/` of `@qemuweb/qemu-wasm`) holding `qemu-build.json`, the modules and the
///   firmware. The QEMU worker script (`qemu-worker.js`) is found beside the runtime's own
///   worker script unless `qemuWorker` names it. The page must be cross-origin isolated
///   (COOP/COEP) and the browser must have WebAssembly Memory64.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct EngineAssets {
    /// URL of v86's ES module (`libv86.mjs` of the `v86` npm package).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub v86_module: Option<String>,
    /// URL of v86's wasm (`v86.wasm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub v86_wasm: Option<String>,
    /// The system BIOS (e.g. SeaBIOS `bios-256k.bin`). Required by v86.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub bios: Option<AssetSource>,
    /// The VGA BIOS (e.g. `vgabios-stdvga.bin`); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub vga_bios: Option<AssetSource>,
    /// URL of a QEMU build directory, for the QEMU engine: the output directory of
    /// `qemuweb-wasm-build` (`scripts/build-qemu`) or the `dist/` directory of the npm
    /// package `@qemuweb/qemu-wasm`, served as it is. The engine reads its
    /// `qemu-build.json` (which module runs the guest's arch, what it needs from the
    /// browser, how much guest RAM it can address), then loads the module and the firmware
    /// the guest needs (SeaBIOS, option ROMs, the aarch64 UEFI firmware) from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub qemu_dir: Option<String>,
    /// URL of the runtime's QEMU worker script (`web/qemu-worker.js` of the bundle,
    /// `qemu-worker.js` of `@qemuweb/runtime`); default: `qemu-worker.js` beside the VM
    /// worker script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub qemu_worker: Option<String>,
}

/// Bounds on what a VM's untrusted inputs may make the worker hold in memory at once.
/// A kernel or initrd is read whole (the engines take it as one buffer), so its size,
/// which a server or a file claims, is checked against these before anything is read.
///
/// ```
/// use qemuweb_runtime::protocol::Limits;
/// let limits = Limits::default();
/// assert_eq!(limits.max_kernel_bytes, 128 << 20);
/// assert_eq!(Limits::whole_len("kernel", 5 << 20, limits.max_kernel_bytes).unwrap(), 5 << 20);
/// let e = Limits::whole_len("initrd", 5 << 30, limits.max_initrd_bytes).unwrap_err();
/// assert_eq!(e.code(), qemuweb_runtime::ErrorCode::TooLarge);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", default)]
pub struct Limits {
    /// The largest kernel read, in bytes (default 128 MiB).
    pub max_kernel_bytes: u64,
    /// The largest initrd read, in bytes (default 512 MiB).
    pub max_initrd_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_kernel_bytes: 128 << 20,
            max_initrd_bytes: 512 << 20,
        }
    }
}

impl Limits {
    /// The length of a buffer holding all `size` bytes of `what`, if `size` is within
    /// `limit` and the address space (a `usize`: 4 GiB on wasm32).
    ///
    /// # Errors
    ///
    /// [`ErrorCode::TooLarge`] otherwise.
    pub fn whole_len(what: &str, size: u64, limit: u64) -> Result<usize, RuntimeError> {
        match usize::try_from(size) {
            Ok(len) if size <= limit => Ok(len),
            _ => Err(RuntimeError::TooLarge {
                what: what.to_string(),
                size,
                limit: limit.min(usize::MAX as u64),
            }),
        }
    }
}

/// The format of an exported overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// QemuWeb's checksummed archive of the overlay's blocks.
    #[default]
    Compact,
    /// A qcow2 image holding the changed clusters (no backing file name).
    Qcow2,
}

/// A page-to-worker command.
// A command is decoded once and moved into its handler: boxing `start` would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Tsify)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Command {
    /// The handshake: the page's protocol version.
    Hello {
        /// [`PROTOCOL_VERSION`] of the page.
        version: u32,
    },
    /// Start VM `vm_id`. The answer (`done`) comes once the guest runs.
    ///
    /// Files the inputs name as `{kind: "file", path}` are passed beside the command in
    /// a `files` object mapping each path to a `Blob`/`File`.
    ///
    /// A display ring (a `SharedArrayBuffer` made by `CanvasDisplay.createRing`, as
    /// `QemuClient.attachDisplay` does) may be passed beside the command as `display`:
    /// the engine then sends the guest's screen into it. Anything else there is refused
    /// with [`ErrorCode::Unsupported`] (the page is not cross-origin isolated).
    #[serde(rename_all = "camelCase")]
    Start {
        /// The VM's id: also the key of its persistent overlays.
        vm_id: String,
        /// The machine.
        profile: VmProfile,
        /// What to boot.
        inputs: VmInputs,
        /// Per-run changes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        overrides: Option<VmOverrides>,
        /// The engine to use; `None` picks the one for the profile.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        engine: Option<EngineKind>,
        /// The engine's own files.
        #[serde(default)]
        assets: EngineAssets,
        /// Where the disks' writes go.
        #[serde(default)]
        persistence: Persistence,
        /// Bounds on the inputs' sizes (defaults when absent).
        #[serde(default)]
        #[tsify(optional)]
        limits: Limits,
        /// Resume a saved state instead of booting (see [`Resume`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        resume: Option<Resume>,
        /// The persistent cache of the images' fetched chunks.
        #[serde(default)]
        read_cache: ReadCacheOptions,
        /// Options of the QEMU engine.
        #[serde(default)]
        #[tsify(optional)]
        qemu: QemuOptions,
    },
    /// Stop the VM; `force` skips the final overlay sync.
    #[serde(rename_all = "camelCase")]
    Stop {
        /// The VM.
        vm_id: String,
        /// Stop at once, without syncing.
        #[serde(default)]
        force: bool,
    },
    /// Reboot the guest (its disks keep their content).
    #[serde(rename_all = "camelCase")]
    Reset {
        /// The VM.
        vm_id: String,
    },
    /// Bytes for the guest's first serial port.
    #[serde(rename_all = "camelCase")]
    SerialIn {
        /// The VM.
        vm_id: String,
        /// The bytes (at most [`MAX_SERIAL_IN`]).
        #[serde(with = "bytes")]
        #[tsify(type = "Uint8Array")]
        data: Vec<u8>,
    },
    /// Keyboard and pointer events for the guest, in order (at most
    /// [`MAX_INPUT_EVENTS`](crate::input::MAX_INPUT_EVENTS)); see [`crate::input`].
    #[serde(rename_all = "camelCase")]
    Input {
        /// The VM.
        vm_id: String,
        /// The events.
        events: Vec<InputEvent>,
    },
    /// Make every write of the guest durable in the persistent overlays.
    #[serde(rename_all = "camelCase")]
    SyncOverlay {
        /// The VM.
        vm_id: String,
    },
    /// Export a disk's overlay (after syncing it).
    #[serde(rename_all = "camelCase")]
    ExportOverlay {
        /// The VM.
        vm_id: String,
        /// The disk (`disk0` is the boot disk).
        disk_id: String,
        /// The export format.
        #[serde(default)]
        format: ExportFormat,
    },
    /// Ask for the VM's state.
    #[serde(rename_all = "camelCase")]
    QueryState {
        /// The VM.
        vm_id: String,
    },
    /// Save the running VM's whole state with its disks' overlay points as snapshot
    /// `snapshot_id`; answered with [`Reply::Snapshot`].
    #[serde(rename_all = "camelCase")]
    SaveSnapshot {
        /// The VM.
        vm_id: String,
        /// The new snapshot's id (unique per VM).
        snapshot_id: String,
        /// A name for people (at most [`MAX_SNAPSHOT_NAME`] bytes).
        #[serde(default)]
        name: String,
    },
}

impl Command {
    /// The `type` tag of this command.
    pub fn type_name(&self) -> &'static str {
        match self {
            Command::Hello { .. } => "hello",
            Command::Start { .. } => "start",
            Command::Stop { .. } => "stop",
            Command::Reset { .. } => "reset",
            Command::SerialIn { .. } => "serialIn",
            Command::Input { .. } => "input",
            Command::SyncOverlay { .. } => "syncOverlay",
            Command::ExportOverlay { .. } => "exportOverlay",
            Command::QueryState { .. } => "queryState",
            Command::SaveSnapshot { .. } => "saveSnapshot",
        }
    }

    /// The VM the command is for (`None` for `hello`).
    pub fn vm_id(&self) -> Option<&str> {
        match self {
            Command::Hello { .. } => None,
            Command::Start { vm_id, .. }
            | Command::Stop { vm_id, .. }
            | Command::Reset { vm_id }
            | Command::SerialIn { vm_id, .. }
            | Command::Input { vm_id, .. }
            | Command::SyncOverlay { vm_id }
            | Command::ExportOverlay { vm_id, .. }
            | Command::QueryState { vm_id }
            | Command::SaveSnapshot { vm_id, .. } => Some(vm_id),
        }
    }
}

/// A command with the id its answer (`done` or `error`) will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Tsify)]
pub struct Request {
    /// Chosen by the page; unique among its requests to one worker.
    pub id: u64,
    /// What to do.
    pub command: Command,
}

impl Request {
    /// Checks the values of the fields: ids (1 to [`MAX_ID_LEN`] characters of ASCII
    /// letters, digits, `-`, `_` and `.`) and the size of serial input.
    ///
    /// ```
    /// use qemuweb_runtime::protocol::*;
    /// let r = Request { id: 1, command: Command::Reset { vm_id: "../etc".into() } };
    /// assert_eq!(r.validate().unwrap_err().code(), ErrorCode::Malformed);
    /// ```
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if let Some(vm_id) = self.command.vm_id() {
            check_id("vmId", vm_id)?;
        }
        match &self.command {
            Command::SerialIn { data, .. } if data.len() > MAX_SERIAL_IN => {
                Err(RuntimeError::Malformed(format!(
                    "serialIn carries {} bytes, more than the {MAX_SERIAL_IN} allowed in one message",
                    data.len()
                )))
            }
            Command::ExportOverlay { disk_id, .. } => check_id("diskId", disk_id),
            Command::Input { events, .. } => check_events(events),
            Command::SaveSnapshot {
                snapshot_id, name, ..
            } => {
                check_id("snapshotId", snapshot_id)?;
                check_snapshot_name(name)
            }
            Command::Start {
                resume: Some(Resume::Snapshot { id }),
                ..
            } => check_id("resume.id", id),
            _ => Ok(()),
        }
    }
}

/// Checks an id: 1 to [`MAX_ID_LEN`] ASCII letters, digits, `-`, `_`, `.`, not starting
/// with `.`.
///
/// ```
/// assert!(qemuweb_runtime::protocol::check_id("vmId", "vm-1").is_ok());
/// assert!(qemuweb_runtime::protocol::check_id("vmId", "").is_err());
/// ```
pub fn check_id(what: &str, id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Malformed(format!(
            "{what} {id:?} must be 1 to {MAX_ID_LEN} ASCII letters, digits, '-', '_' or '.', \
             not starting with '.'"
        )))
    }
}

/// A request that could not be decoded, with its id if one was readable.
#[derive(Debug)]
pub struct DecodeError {
    /// The request's `id`, if it had a valid one.
    pub request_id: Option<u64>,
    /// What is wrong.
    pub error: RuntimeError,
}

/// Reads a request id: a non-negative integer no larger than 2^53 - 1.
pub fn request_id_from_f64(id: f64) -> Option<u64> {
    (id.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&id)).then_some(id as u64)
}

/// The first check of a message, from what can be read of it without decoding: whether
/// it is an object (`is_object`), its `command` is an object with a string `type`
/// (`command_type`), and that type is known.
///
/// ```
/// use qemuweb_runtime::protocol::*;
/// assert_eq!(classify(true, Some("hello")).unwrap(), ());
/// assert_eq!(classify(true, Some("dance")).unwrap_err().code(), ErrorCode::UnknownCommand);
/// assert_eq!(classify(true, None).unwrap_err().code(), ErrorCode::Malformed);
/// assert_eq!(classify(false, None).unwrap_err().code(), ErrorCode::Malformed);
/// ```
pub fn classify(is_object: bool, command_type: Option<&str>) -> Result<(), RuntimeError> {
    if !is_object {
        return Err(RuntimeError::Malformed(
            "a request must be an object {id, command}".into(),
        ));
    }
    match command_type {
        None => Err(RuntimeError::Malformed(
            "the request has no command object with a string `type`".into(),
        )),
        Some(t) if COMMAND_TYPES.contains(&t) => Ok(()),
        Some(t) => Err(RuntimeError::UnknownCommand(t.chars().take(64).collect())),
    }
}

/// Decodes and validates a request from JSON text (the native twin of what the worker
/// does with a JS value).
///
/// # Errors
///
/// [`ErrorCode::Malformed`] for anything that is not a well-formed, valid request;
/// [`ErrorCode::UnknownCommand`] for a well-formed request with an unknown `type`.
pub fn decode_request_json(text: &str) -> Result<Request, DecodeError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DecodeError {
        request_id: None,
        error: RuntimeError::Malformed(format!("not JSON: {e}")),
    })?;
    decode_request_value(value)
}

/// Decodes and validates a request from a JSON value.
///
/// # Errors
///
/// As [`decode_request_json`].
pub fn decode_request_value(value: serde_json::Value) -> Result<Request, DecodeError> {
    let request_id = value
        .get("id")
        .and_then(|v| v.as_f64())
        .and_then(request_id_from_f64);
    let command_type = value
        .get("command")
        .and_then(|c| c.get("type"))
        .and_then(|t| t.as_str());
    let fail = |error| DecodeError { request_id, error };
    classify(value.is_object(), command_type).map_err(fail)?;
    let request: Request = serde_json::from_value(value)
        .map_err(|e| fail(RuntimeError::Malformed(format!("bad request: {e}"))))?;
    request.validate().map_err(fail)?;
    Ok(request)
}

/// The state of a VM as the worker (and the client) see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// `start` received; disks and the engine are being set up.
    Starting,
    /// The guest runs.
    Running,
    /// A `stop` is in progress.
    Stopping,
    /// The guest is stopped.
    Stopped,
    /// Start failed or the engine died.
    Failed,
}

/// Why a VM stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// `stop` without `force`: the overlays were synced first.
    Requested,
    /// `stop` with `force`: unsynced writes may be lost.
    Forced,
    /// The engine or the storage failed.
    Error,
}

/// The code of an error event, for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// A message was not a well-formed request.
    Malformed,
    /// The command `type` is unknown.
    UnknownCommand,
    /// The command does not apply now.
    OutOfOrder,
    /// The page and the worker speak different protocol versions.
    VersionMismatch,
    /// The profile is invalid.
    InvalidProfile,
    /// The inputs are invalid.
    InvalidInputs,
    /// No engine can run this here.
    Unsupported,
    /// The engine needs a BIOS and none was given.
    MissingBios,
    /// An asset could not be fetched.
    Fetch,
    /// A disk's storage failed (unreachable URL, corrupt image, quota, lock, ...).
    Storage,
    /// The emulator failed.
    Engine,
    /// A browser API failed.
    Browser,
    /// The worker died.
    Worker,
    /// The page cancelled the command (the `signal` of `startVm` was aborted).
    Aborted,
    /// An input is larger than its limit ([`Limits`]).
    TooLarge,
    /// A snapshot does not fit: saved by another engine, for another machine (profile and
    /// overrides) or over other base images.
    SnapshotMismatch,
    /// A snapshot (stored, a file or a published state) is damaged or truncated.
    SnapshotCorrupt,
    /// There is no such snapshot.
    SnapshotNotFound,
}

/// The steps of starting a VM, in order (see [`Event::Phase`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum StartPhase {
    /// Fetching firmware (BIOS, VGA BIOS, option ROMs) and reading a kernel and initrd.
    Assets,
    /// Opening the disks: their images (headers, qcow2 tables) and persistent overlays.
    Disks,
    /// Loading the emulator (its module and wasm) and starting the guest.
    Engine,
}

/// What the `total` of a [`Event::Progress`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum ProgressTotal {
    /// The size of the file as stored or sent: an asset's length, a disk image's file size
    /// (for a qcow2 image the file, which is not the guest-visible disk size).
    FileSize,
}

/// Options of the QEMU engine (the v86 engine ignores them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QemuOptions {
    /// Run guest code on the build's WebAssembly JIT (`true`; the default when the build
    /// has one: `"tcg": "jit"` in its `qemu-build.json`) or on QEMU's interpreter, TCI
    /// (`false`; the same module with `-accel tcg,wasm-jit=off`). `true` with a build
    /// without the JIT is refused with `unsupported` before anything is downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub jit: Option<bool>,
    /// Whether the host CPU keeps plain memory accesses in x86's order (TSO), so the JIT
    /// leaves out the barrier it otherwise puts before every memory access of an x86 guest
    /// (`-accel tcg,wasm-jit-tso=1`; about 1.7x faster x86 Linux boots on x86 hosts). The
    /// default asks the browser (`navigator.userAgentData`: an `"x86"` architecture); where
    /// it does not say, every barrier stays. `true` on a weakly ordered host (Arm) lets
    /// QEMU's I/O threads see an x86 guest's accesses out of order. A JIT build's interpreter
    /// (`jit: false`) keeps the same rule; a build without the JIT ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub host_tso: Option<bool>,
}

/// How the QEMU engine runs guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionMode {
    /// QEMU's TCG interpreter (TCI): every guest block is interpreted.
    Interpreter,
    /// Our WebAssembly JIT backend for TCG: blocks run on the interpreter until they are
    /// hot, then as compiled WebAssembly.
    Jit,
}

/// What the QEMU engine's `execution` events report: its mode and, with the JIT, what it
/// compiled so far (the JIT's own counters, read from the module's memory).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionStats {
    /// Interpreter or JIT.
    pub mode: ExecutionMode,
    /// Guest blocks compiled to WebAssembly (every vCPU).
    pub blocks_compiled: u64,
    /// WebAssembly modules instantiated (blocks are compiled in batches).
    pub modules: u64,
    /// Blocks the translator refused (they stay on the interpreter).
    pub refused: u64,
    /// Bytes of WebAssembly generated.
    pub wasm_bytes: u64,
    /// Milliseconds spent translating bytecode to WebAssembly.
    pub translate_ms: f64,
    /// Milliseconds spent compiling it (`WebAssembly.Module`).
    pub compile_ms: f64,
    /// Milliseconds spent instantiating it.
    pub instantiate_ms: f64,
    /// Times QEMU flushed its translated code (every compiled block dropped).
    pub flushes: u64,
    /// Runs of a block on the interpreter before it is compiled (0 with the interpreter).
    pub hot_threshold: u64,
}

/// The persistent read cache of URL images (disks, kernels, initrds): the chunks fetched
/// are kept in IndexedDB (database `qemuweb-read-cache`), keyed and checked by each
/// image's validator, so a later start fetches only what it never read and an image seen
/// before opens offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct ReadCacheOptions {
    /// Whether to use it (default `true`).
    #[serde(default = "default_true")]
    #[tsify(optional)]
    pub enabled: bool,
    /// Its byte budget, shared by the origin's images; the least recently used chunks go
    /// first (default 512 MiB).
    #[serde(default = "default_read_cache_bytes")]
    #[tsify(optional)]
    pub max_bytes: u64,
}

fn default_true() -> bool {
    true
}

fn default_read_cache_bytes() -> u64 {
    qemuweb_storage::read_cache::DEFAULT_MAX_BYTES
}

impl Default for ReadCacheOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: default_read_cache_bytes(),
        }
    }
}

/// Where the writes of a VM's disks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum Persistence {
    /// Kept in IndexedDB, keyed by the VM id and the disk id (`disk0`, ...): the next
    /// start of the same VM id finds them (read-only disks keep theirs in memory).
    #[default]
    Indexeddb,
    /// Kept in memory and dropped when the VM stops; stored overlays are neither read
    /// nor changed.
    Memory,
}

/// How important a log event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Details.
    Debug,
    /// Normal progress.
    Info,
    /// Something doubtful that did not stop the VM.
    Warn,
}

/// The result carried by a `done` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Tsify)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Reply {
    /// The command completed with nothing to return.
    Ok,
    /// The answer to `queryState`.
    State {
        /// The state.
        state: VmState,
    },
    /// The answer to `saveSnapshot`.
    Snapshot {
        /// The snapshot saved.
        snapshot: SnapshotInfo,
    },
    /// The answer to `exportOverlay`.
    Exported {
        /// The exported bytes.
        #[serde(with = "bytes")]
        #[tsify(type = "Uint8Array")]
        data: Vec<u8>,
    },
}

/// A worker-to-page event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Tsify)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// Sent once when the worker is ready for `hello`.
    Ready {
        /// The worker's [`PROTOCOL_VERSION`].
        version: u32,
        /// The engines this worker has.
        engines: Vec<EngineKind>,
    },
    /// The worker's capabilities, sent after a successful `hello`.
    Capabilities {
        /// What the worker's environment offers.
        capabilities: RuntimeCapabilities,
    },
    /// The guest runs.
    #[serde(rename_all = "camelCase")]
    Started {
        /// The VM.
        vm_id: String,
        /// The engine running it.
        engine: EngineKind,
    },
    /// The guest stopped.
    #[serde(rename_all = "camelCase")]
    Stopped {
        /// The VM.
        vm_id: String,
        /// Why.
        reason: StopReason,
    },
    /// Bytes the guest wrote to its first serial port.
    #[serde(rename_all = "camelCase")]
    SerialOut {
        /// The VM.
        vm_id: String,
        /// The bytes.
        #[serde(with = "bytes")]
        #[tsify(type = "Uint8Array")]
        data: Vec<u8>,
    },
    /// A step of starting the VM began (`step` of `steps`, counting from 1); the
    /// `started` event ends the sequence.
    #[serde(rename_all = "camelCase")]
    Phase {
        /// The VM.
        vm_id: String,
        /// The step.
        phase: StartPhase,
        /// Its number, from 1.
        step: u32,
        /// How many steps this start has.
        steps: u32,
    },
    /// Bytes of a file read so far: an asset or the engine downloaded while the VM starts,
    /// a kernel or initrd read whole, and a disk image read as the guest needs it (over
    /// HTTP or from a page's `Blob`/`File`, so a disk's count grows while the VM runs and
    /// stays below `total` for the parts the guest never reads).
    #[serde(rename_all = "camelCase")]
    Progress {
        /// The VM.
        vm_id: String,
        /// What is read: a disk id (`disk0`), or an asset, the engine or a boot file:
        /// `bios`, `vgaBios`, `kvmvapic`, `linuxbootDma`, `v86Wasm`, `kernel`, `initrd`.
        #[tsify(
            type = "`disk${number}` | \"bios\" | \"vgaBios\" | \"kvmvapic\" | \"linuxbootDma\" | \"v86Wasm\" | \"kernel\" | \"initrd\""
        )]
        what: String,
        /// Bytes read so far.
        loaded: u64,
        /// The size of what is read, when known; [`totalOf`](ProgressTotal) says what it
        /// counts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        total: Option<u64>,
        /// What `total` counts.
        total_of: ProgressTotal,
    },
    /// How far saving, restoring, exporting, importing or fetching a snapshot has got.
    #[serde(rename_all = "camelCase")]
    SnapshotProgress {
        /// The VM.
        vm_id: String,
        /// The snapshot (empty while an import has not read its header yet).
        snapshot_id: String,
        /// What is being done.
        operation: SnapshotOperation,
        /// Bytes done so far.
        loaded: u64,
        /// Bytes in all, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        total: Option<u64>,
    },
    /// How the QEMU engine runs guest code: sent once QEMU is up, then again when the JIT
    /// compiled more (at most every few seconds); each also logged as a `log` event.
    #[serde(rename_all = "camelCase")]
    Execution {
        /// The VM.
        vm_id: String,
        /// Mode and counters.
        stats: ExecutionStats,
    },
    /// A message for people.
    #[serde(rename_all = "camelCase")]
    Log {
        /// The VM, if the message is about one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        vm_id: Option<String>,
        /// How important.
        level: LogLevel,
        /// The message.
        message: String,
    },
    /// A failure: the answer to a request, or something that went wrong on its own.
    #[serde(rename_all = "camelCase")]
    Error {
        /// The request this answers, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        request_id: Option<u64>,
        /// The VM, if the error is about one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        vm_id: Option<String>,
        /// What kind of failure.
        code: ErrorCode,
        /// What to tell the user.
        message: String,
    },
    /// A request completed.
    #[serde(rename_all = "camelCase")]
    Done {
        /// The request.
        request_id: u64,
        /// Its result.
        result: Reply,
    },
}

impl Event {
    /// The error event for `error`, answering `request_id` about `vm_id`.
    ///
    /// ```
    /// use qemuweb_runtime::{protocol::*, RuntimeError};
    /// let e = Event::error(Some(3), None, &RuntimeError::MissingBios);
    /// let json = serde_json::to_value(&e).unwrap();
    /// assert_eq!(json["type"], "error");
    /// assert_eq!(json["code"], "missing-bios");
    /// assert_eq!(json["requestId"], 3);
    /// ```
    pub fn error(request_id: Option<u64>, vm_id: Option<&str>, error: &RuntimeError) -> Self {
        Event::Error {
            request_id,
            vm_id: vm_id.map(str::to_string),
            code: error.code(),
            message: error.to_string(),
        }
    }

    /// The `type` tag of this event.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Ready { .. } => "ready",
            Event::Capabilities { .. } => "capabilities",
            Event::Started { .. } => "started",
            Event::Stopped { .. } => "stopped",
            Event::SerialOut { .. } => "serialOut",
            Event::Phase { .. } => "phase",
            Event::Progress { .. } => "progress",
            Event::SnapshotProgress { .. } => "snapshotProgress",
            Event::Execution { .. } => "execution",
            Event::Log { .. } => "log",
            Event::Error { .. } => "error",
            Event::Done { .. } => "done",
        }
    }
}

/// The worker's view of the conversation: whether the handshake happened and the state
/// of its VM. [`check`](Self::check) rejects commands that do not fit.
///
/// A worker hosts at most one VM (the client starts one worker per VM); it may start it
/// again after it stopped or failed.
///
/// ```
/// use qemuweb_runtime::protocol::*;
/// let mut s = Session::new();
/// let reset = Command::Reset { vm_id: "a".into() };
/// assert_eq!(s.check(&reset).unwrap_err().code(), ErrorCode::OutOfOrder);
/// s.check(&Command::Hello { version: PROTOCOL_VERSION }).unwrap();
/// assert_eq!(s.check(&reset).unwrap_err().code(), ErrorCode::OutOfOrder); // no VM yet
/// ```
#[derive(Debug, Clone, Default)]
pub struct Session {
    greeted: bool,
    vm: Option<(String, VmState)>,
}

impl Session {
    /// A session before the handshake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `hello` was accepted.
    pub fn greeted(&self) -> bool {
        self.greeted
    }

    /// The VM of this worker and its state.
    pub fn vm(&self) -> Option<(&str, VmState)> {
        self.vm.as_ref().map(|(id, s)| (id.as_str(), *s))
    }

    /// Records the state of VM `vm_id` (the worker calls this as the VM moves on).
    pub fn set_state(&mut self, vm_id: &str, state: VmState) {
        self.vm = Some((vm_id.to_string(), state));
    }

    /// Checks that `command` may run now, and records its effect on the session: `hello`
    /// completes the handshake, `start` makes the VM `starting`, `stop` makes it
    /// `stopping`.
    ///
    /// # Errors
    ///
    /// [`ErrorCode::VersionMismatch`] for a `hello` of another version;
    /// [`ErrorCode::OutOfOrder`] for anything else that does not fit.
    pub fn check(&mut self, command: &Command) -> Result<(), RuntimeError> {
        let out_of_order = |m: String| Err(RuntimeError::OutOfOrder(m));
        if let Command::Hello { version } = command {
            if self.greeted {
                return out_of_order("hello was already received".into());
            }
            if *version != PROTOCOL_VERSION {
                return Err(RuntimeError::VersionMismatch {
                    page: *version,
                    worker: PROTOCOL_VERSION,
                });
            }
            self.greeted = true;
            return Ok(());
        }
        if !self.greeted {
            return out_of_order(format!(
                "{} before the handshake: send hello first",
                command.type_name()
            ));
        }
        let vm_id = command.vm_id().unwrap_or_default();
        let current = self.vm.as_ref().map(|(id, s)| (id.as_str(), *s));
        if let Command::Start { .. } = command {
            return match current {
                Some((id, state))
                    if !matches!(state, VmState::Stopped | VmState::Failed) || id != vm_id =>
                {
                    out_of_order(format!(
                        "this worker already hosts VM {id:?} ({state:?}); start each VM in its own worker"
                    ))
                }
                _ => {
                    self.set_state(vm_id, VmState::Starting);
                    Ok(())
                }
            };
        }
        let state = match current {
            Some((id, state)) if id == vm_id => state,
            _ => return out_of_order(format!("no VM {vm_id:?} in this worker")),
        };
        match command {
            Command::QueryState { .. } => Ok(()),
            Command::Stop { .. } => match state {
                VmState::Running | VmState::Starting => {
                    self.set_state(vm_id, VmState::Stopping);
                    Ok(())
                }
                VmState::Stopping => out_of_order(format!("VM {vm_id:?} is already stopping")),
                VmState::Stopped | VmState::Failed => {
                    out_of_order(format!("VM {vm_id:?} is not running"))
                }
            },
            _ if state != VmState::Running => out_of_order(format!(
                "{} needs a running VM; VM {vm_id:?} is {}",
                command.type_name(),
                serde_json::to_value(state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn start_json(vm: &str) -> serde_json::Value {
        let profile = qemuweb_config::profile_by_id("linux-i386-pc-nographic").unwrap();
        json!({"id": 7, "command": {
            "type": "start", "vmId": vm, "profile": profile,
            "inputs": {"disk": {"source": {"kind": "url", "url": "http://127.0.0.1/x.qcow2"}}},
            "assets": {"bios": {"kind": "url", "url": "bios.bin"}}
        }})
    }

    fn greeted() -> Session {
        let mut s = Session::new();
        s.check(&Command::Hello {
            version: PROTOCOL_VERSION,
        })
        .unwrap();
        s
    }

    #[test]
    fn every_command_round_trips() {
        let profile = qemuweb_config::profile_by_id("linux-i386-pc-nographic").unwrap();
        let commands = vec![
            Command::Hello { version: 1 },
            Command::Start {
                vm_id: "vm".into(),
                profile,
                inputs: VmInputs::default(),
                overrides: Some(VmOverrides::default()),
                engine: Some(EngineKind::V86),
                assets: EngineAssets {
                    v86_module: Some("libv86.mjs".into()),
                    v86_wasm: None,
                    bios: Some(AssetSource::Bytes { data: vec![1, 2] }),
                    vga_bios: Some(AssetSource::Url {
                        url: "v.bin".into(),
                    }),
                    ..EngineAssets::default()
                },
                persistence: Persistence::Memory,
                limits: Limits {
                    max_kernel_bytes: 1,
                    max_initrd_bytes: 2,
                },
                resume: Some(Resume::Snapshot { id: "s1".into() }),
                read_cache: ReadCacheOptions {
                    enabled: false,
                    max_bytes: 1 << 20,
                },
                qemu: QemuOptions {
                    jit: Some(false),
                    host_tso: Some(true),
                },
            },
            Command::Stop {
                vm_id: "vm".into(),
                force: true,
            },
            Command::Reset { vm_id: "vm".into() },
            Command::SerialIn {
                vm_id: "vm".into(),
                data: b"echo hi\r".to_vec(),
            },
            Command::Input {
                vm_id: "vm".into(),
                events: crate::input::chord(&["ControlLeft", "AltLeft", "Delete"]),
            },
            Command::SyncOverlay { vm_id: "vm".into() },
            Command::ExportOverlay {
                vm_id: "vm".into(),
                disk_id: "disk0".into(),
                format: ExportFormat::Qcow2,
            },
            Command::QueryState { vm_id: "vm".into() },
            Command::SaveSnapshot {
                vm_id: "vm".into(),
                snapshot_id: "s1".into(),
                name: "at the prompt".into(),
            },
        ];
        let names: Vec<_> = commands.iter().map(|c| c.type_name()).collect();
        assert_eq!(names, COMMAND_TYPES);
        for (i, command) in commands.into_iter().enumerate() {
            let request = Request {
                id: i as u64,
                command,
            };
            let text = serde_json::to_string(&request).unwrap();
            let back = decode_request_json(&text).unwrap();
            assert_eq!(back, request, "{text}");
        }
    }

    #[test]
    fn input_commands_are_checked_before_they_reach_an_engine() {
        let ok = r#"{"id":5,"command":{"type":"input","vmId":"a","events":[
            {"type":"key","code":"KeyQ","down":true},{"type":"wheel","dx":0,"dy":2}]}}"#;
        assert!(decode_request_json(ok).is_ok());
        for bad in [
            r#"{"id":5,"command":{"type":"input","vmId":"a","events":[{"type":"key","code":"Q","down":true}]}}"#,
            r#"{"id":5,"command":{"type":"input","vmId":"a","events":[{"type":"move","x":40000,"y":0,"dx":0,"dy":0}]}}"#,
            r#"{"id":5,"command":{"type":"input","vmId":"a","events":[{"type":"jump"}]}}"#,
            r#"{"id":5,"command":{"type":"input","vmId":"a"}}"#,
        ] {
            let e = decode_request_json(bad).unwrap_err();
            assert_eq!(e.request_id, Some(5), "{bad}");
            assert_eq!(e.error.code(), ErrorCode::Malformed, "{bad}");
        }
    }

    #[test]
    fn qemu_assets_travel_in_camel_case() {
        let assets = EngineAssets {
            qemu_dir: Some("qemu/".into()),
            qemu_worker: Some("qemu-worker.js".into()),
            bios: Some(AssetSource::Url {
                url: "qemu/bios-256k.bin".into(),
            }),
            ..EngineAssets::default()
        };
        let json = serde_json::to_value(&assets).unwrap();
        for key in ["qemuDir", "qemuWorker", "bios"] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        let request = Request {
            id: 9,
            command: Command::Start {
                vm_id: "vm".into(),
                profile: qemuweb_config::profile_by_id("linux-i386-pc-nographic").unwrap(),
                inputs: VmInputs::default(),
                overrides: None,
                engine: Some(EngineKind::Qemu),
                assets,
                persistence: Persistence::default(),
                limits: Limits::default(),
                resume: None,
                read_cache: ReadCacheOptions::default(),
                qemu: QemuOptions::default(),
            },
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(text.contains(r#""engine":"qemu""#), "{text}");
        assert_eq!(decode_request_json(&text).unwrap(), request);
    }

    #[test]
    fn wire_names_are_camel_case() {
        let r = decode_request_json(
            r#"{"id":3,"command":{"type":"serialIn","vmId":"a","data":[104,105]}}"#,
        )
        .unwrap();
        assert_eq!(
            r.command,
            Command::SerialIn {
                vm_id: "a".into(),
                data: b"hi".to_vec()
            }
        );
        let e = serde_json::to_value(Event::Progress {
            vm_id: "a".into(),
            what: "disk0".into(),
            loaded: 10,
            total: Some(20),
            total_of: ProgressTotal::FileSize,
        })
        .unwrap();
        assert_eq!(
            e,
            json!({"type":"progress","vmId":"a","what":"disk0","loaded":10,"total":20,"totalOf":"file-size"})
        );
        let e = serde_json::to_value(Event::Phase {
            vm_id: "a".into(),
            phase: StartPhase::Disks,
            step: 2,
            steps: 3,
        })
        .unwrap();
        assert_eq!(
            e,
            json!({"type":"phase","vmId":"a","phase":"disks","step":2,"steps":3})
        );
        let e = serde_json::to_value(Event::Stopped {
            vm_id: "a".into(),
            reason: StopReason::Forced,
        })
        .unwrap();
        assert_eq!(e, json!({"type":"stopped","vmId":"a","reason":"forced"}));
    }

    #[test]
    fn start_decodes() {
        let r = decode_request_value(start_json("vm-1")).unwrap();
        assert_eq!(r.id, 7);
        match r.command {
            Command::Start { vm_id, assets, .. } => {
                assert_eq!(vm_id, "vm-1");
                assert_eq!(
                    assets.bios,
                    Some(AssetSource::Url {
                        url: "bios.bin".into()
                    })
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        let cases: &[(&str, Option<u64>, ErrorCode)] = &[
            ("", None, ErrorCode::Malformed),
            ("not json", None, ErrorCode::Malformed),
            ("42", None, ErrorCode::Malformed),
            ("[]", None, ErrorCode::Malformed),
            ("null", None, ErrorCode::Malformed),
            (r#"{"id":1}"#, Some(1), ErrorCode::Malformed),
            (
                r#"{"id":1,"command":"hello"}"#,
                Some(1),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":1,"command":{"type":7}}"#,
                Some(1),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":-1,"command":{"type":"hello","version":1}}"#,
                None,
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":1.5,"command":{"type":"hello","version":1}}"#,
                None,
                ErrorCode::Malformed,
            ),
            (
                r#"{"command":{"type":"hello","version":1}}"#,
                None,
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":2,"command":{"type":"hello"}}"#,
                Some(2),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":2,"command":{"type":"hello","version":"1"}}"#,
                Some(2),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":3,"command":{"type":"stop","vmId":5}}"#,
                Some(3),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":3,"command":{"type":"stop","vmId":""}}"#,
                Some(3),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":3,"command":{"type":"stop","vmId":"a/b"}}"#,
                Some(3),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":4,"command":{"type":"serialIn","vmId":"a","data":[300]}}"#,
                Some(4),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":4,"command":{"type":"serialIn","vmId":"a","data":"x"}}"#,
                Some(4),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":5,"command":{"type":"start","vmId":"a"}}"#,
                Some(5),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":6,"command":{"type":"exportOverlay","vmId":"a","diskId":"d","format":"zip"}}"#,
                Some(6),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":7,"command":{"type":"saveSnapshot","vmId":"a","snapshotId":"../x"}}"#,
                Some(7),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":7,"command":{"type":"saveSnapshot","vmId":"a","snapshotId":"s","name":"a\nb"}}"#,
                Some(7),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":7,"command":{"type":"saveSnapshot","vmId":"a"}}"#,
                Some(7),
                ErrorCode::Malformed,
            ),
            (
                r#"{"id":8,"command":{"type":"launchMissiles"}}"#,
                Some(8),
                ErrorCode::UnknownCommand,
            ),
            (
                r#"{"id":8,"command":{"type":"Hello","version":1}}"#,
                Some(8),
                ErrorCode::UnknownCommand,
            ),
        ];
        for (text, id, code) in cases {
            let err = decode_request_json(text).unwrap_err();
            assert_eq!(err.request_id, *id, "{text}");
            assert_eq!(err.error.code(), *code, "{text}: {}", err.error);
        }
        let big = json!({"id": 9, "command": {"type": "serialIn", "vmId": "a",
            "data": vec![65u8; MAX_SERIAL_IN + 1]}});
        let err = decode_request_value(big).unwrap_err();
        assert_eq!(err.error.code(), ErrorCode::Malformed);
        // A bad start profile is malformed too, and keeps its id.
        let mut start = start_json("a");
        start["command"]["profile"]["arch"] = json!("sparc");
        assert_eq!(decode_request_value(start).unwrap_err().request_id, Some(7));
    }

    #[test]
    fn handshake_and_version() {
        let mut s = Session::new();
        for cmd in [
            Command::QueryState { vm_id: "a".into() },
            Command::Stop {
                vm_id: "a".into(),
                force: false,
            },
        ] {
            assert_eq!(s.check(&cmd).unwrap_err().code(), ErrorCode::OutOfOrder);
        }
        let err = s.check(&Command::Hello { version: 99 }).unwrap_err();
        assert_eq!(err.code(), ErrorCode::VersionMismatch);
        assert!(err.to_string().contains("99"), "{err}");
        assert!(!s.greeted());
        s.check(&Command::Hello {
            version: PROTOCOL_VERSION,
        })
        .unwrap();
        let again = s.check(&Command::Hello {
            version: PROTOCOL_VERSION,
        });
        assert_eq!(again.unwrap_err().code(), ErrorCode::OutOfOrder);
    }

    #[test]
    fn commands_need_the_right_vm_state() {
        let mut s = greeted();
        let start = decode_request_value(start_json("a")).unwrap().command;
        let serial = Command::SerialIn {
            vm_id: "a".into(),
            data: vec![1],
        };
        let sync = Command::SyncOverlay { vm_id: "a".into() };
        let stop = Command::Stop {
            vm_id: "a".into(),
            force: false,
        };
        // Nothing before start.
        assert_eq!(s.check(&serial).unwrap_err().code(), ErrorCode::OutOfOrder);
        s.check(&start).unwrap();
        assert_eq!(s.vm(), Some(("a", VmState::Starting)));
        // Starting: only stop and query.
        assert_eq!(s.check(&serial).unwrap_err().code(), ErrorCode::OutOfOrder);
        assert_eq!(s.check(&start).unwrap_err().code(), ErrorCode::OutOfOrder);
        s.check(&Command::QueryState { vm_id: "a".into() }).unwrap();
        s.set_state("a", VmState::Running);
        s.check(&serial).unwrap();
        s.check(&sync).unwrap();
        // Another VM in the same worker.
        let other = decode_request_value(start_json("b")).unwrap().command;
        assert_eq!(s.check(&other).unwrap_err().code(), ErrorCode::OutOfOrder);
        let wrong_vm = Command::Reset { vm_id: "b".into() };
        assert_eq!(
            s.check(&wrong_vm).unwrap_err().code(),
            ErrorCode::OutOfOrder
        );
        s.check(&stop).unwrap();
        assert_eq!(s.vm(), Some(("a", VmState::Stopping)));
        assert_eq!(s.check(&stop).unwrap_err().code(), ErrorCode::OutOfOrder);
        assert_eq!(s.check(&sync).unwrap_err().code(), ErrorCode::OutOfOrder);
        s.set_state("a", VmState::Stopped);
        assert_eq!(s.check(&stop).unwrap_err().code(), ErrorCode::OutOfOrder);
        // The same VM may start again once stopped.
        s.check(&start).unwrap();
    }

    #[test]
    fn events_serialize_with_bytes_and_optional_fields() {
        let e = Event::SerialOut {
            vm_id: "a".into(),
            data: vec![0, 255],
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"type":"serialOut","vmId":"a","data":[0,255]})
        );
        let e = Event::Log {
            vm_id: None,
            level: LogLevel::Warn,
            message: "m".into(),
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"type":"log","level":"warn","message":"m"})
        );
        let e = Event::Done {
            request_id: 4,
            result: Reply::State {
                state: VmState::Running,
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({"type":"done","requestId":4,"result":{"kind":"state","state":"running"}})
        );
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.type_name(), "done");
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id_from_f64(0.0), Some(0));
        assert_eq!(
            request_id_from_f64(9_007_199_254_740_991.0),
            Some((1 << 53) - 1)
        );
        assert_eq!(request_id_from_f64(9_007_199_254_740_992.0), None);
        assert_eq!(request_id_from_f64(f64::NAN), None);
        assert_eq!(request_id_from_f64(-0.5), None);
    }
}
