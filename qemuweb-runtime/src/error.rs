//! The crate's one error type, [`RuntimeError`], and the [`ErrorCode`] carried in error
//! events.

use crate::protocol::ErrorCode;
use qemuweb_storage::ErrorKind as StorageKind;

/// Result alias used throughout the crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Every failure of the runtime: protocol violations, bad profiles and inputs, storage and
/// engine errors. [`RuntimeError::code`] gives the [`ErrorCode`] sent to the page.
///
/// ```
/// use qemuweb_runtime::{ErrorCode, RuntimeError};
/// let err = RuntimeError::MissingBios;
/// assert_eq!(err.code(), ErrorCode::MissingBios);
/// assert!(err.to_string().contains("BIOS"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A message was not an object of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message named a command this runtime does not know.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A command arrived when it cannot apply (before the handshake, for a VM that is not
    /// running, a second start, ...).
    #[error("out of order: {0}")]
    OutOfOrder(String),
    /// The page and the worker speak different protocol versions.
    #[error(
        "protocol version mismatch: the page speaks version {page}, the worker version {worker}; \
         serve the page and the worker from the same build"
    )]
    VersionMismatch {
        /// The page's (client's) version.
        page: u32,
        /// The worker's version.
        worker: u32,
    },
    /// The profile is invalid or cannot run with these inputs.
    #[error("invalid profile: {0}")]
    InvalidProfile(String),
    /// The inputs are invalid (no disk or kernel, a file name the page did not provide, ...).
    #[error("invalid inputs: {0}")]
    InvalidInputs(String),
    /// No engine can run this profile here.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The engine needs a BIOS image and none was given.
    #[error(
        "no BIOS image was given: the v86 and QEMU engines need one (for example SeaBIOS, \
         /usr/share/seabios/bios-256k.bin from Debian's seabios package); pass it as \
         `bios` (a URL or bytes) in the engine assets"
    )]
    MissingBios,
    /// An asset (BIOS, kernel, initrd, the engine's own files) could not be fetched.
    #[error("could not fetch {what} from {url}: {reason}")]
    Fetch {
        /// What was being fetched.
        what: String,
        /// From where.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The storage stack of a disk failed.
    #[error("disk {disk}: {source}")]
    Storage {
        /// The disk id (`disk0`, ...).
        disk: String,
        /// The storage error.
        #[source]
        source: qemuweb_storage::StorageError,
    },
    /// The emulator failed.
    #[error("engine error: {0}")]
    Engine(String),
    /// A browser API failed.
    #[error("browser error: {0}")]
    Browser(String),
    /// The worker died or was terminated.
    #[error("worker error: {0}")]
    Worker(String),
    /// The page cancelled the command.
    #[error("aborted: {0}")]
    Aborted(String),
    /// An input is larger than its limit ([`Limits`](crate::protocol::Limits)), or than
    /// this address space can hold at once.
    #[error("{what} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// What was too large (`kernel`, `initrd`).
        what: String,
        /// Its size, as its source claims.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A snapshot could not be saved, found, read or resumed; the code follows the
    /// storage error's kind (mismatch, damage, absence; otherwise `storage`).
    #[error("snapshot: {0}")]
    Snapshot(#[source] qemuweb_storage::StorageError),
    /// QEMU's QMP monitor answered a command (or the job it started ended) with an error;
    /// code `engine`. The QEMU engine saves and resumes snapshots through QMP.
    #[error("QEMU's monitor failed {command}: {message} ({class})")]
    Qmp {
        /// The QMP command (`snapshot-save`, `cont`, ...).
        command: String,
        /// QEMU's error class (`GenericError`, ...), or `JobFailed` for a job's error.
        class: String,
        /// QEMU's message.
        message: String,
    },
    /// The VM is attached to a virtual network that its engine cannot connect (a QEMU
    /// build without QemuWeb's netdev); code `unsupported`.
    #[error(
        "networking on the {engine} engine is not available: the VM is attached to network \
         '{network}', but {reason}"
    )]
    NetworkUnavailable {
        /// The engine (`qemu`).
        engine: &'static str,
        /// The first network the VM is attached to.
        network: String,
        /// What is missing.
        reason: String,
    },
    /// The network block a QEMU announced (`-netdev qemuweb`, patch 0030) is not one this
    /// runtime reads; code `engine`.
    #[error("QEMU network block: {0}")]
    NetBlock(crate::engine::qemu_net::NetBlockFault),
}

impl RuntimeError {
    /// The code sent to the page in an error event.
    pub fn code(&self) -> ErrorCode {
        match self {
            RuntimeError::Malformed(_) => ErrorCode::Malformed,
            RuntimeError::UnknownCommand(_) => ErrorCode::UnknownCommand,
            RuntimeError::OutOfOrder(_) => ErrorCode::OutOfOrder,
            RuntimeError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            RuntimeError::InvalidProfile(_) => ErrorCode::InvalidProfile,
            RuntimeError::InvalidInputs(_) => ErrorCode::InvalidInputs,
            RuntimeError::Unsupported(_) => ErrorCode::Unsupported,
            RuntimeError::MissingBios => ErrorCode::MissingBios,
            RuntimeError::Fetch { .. } => ErrorCode::Fetch,
            RuntimeError::Storage { .. } => ErrorCode::Storage,
            RuntimeError::Engine(_) => ErrorCode::Engine,
            RuntimeError::Browser(_) => ErrorCode::Browser,
            RuntimeError::Worker(_) => ErrorCode::Worker,
            RuntimeError::Aborted(_) => ErrorCode::Aborted,
            RuntimeError::TooLarge { .. } => ErrorCode::TooLarge,
            RuntimeError::NetworkUnavailable { .. } => ErrorCode::Unsupported,
            RuntimeError::Qmp { .. } => ErrorCode::Engine,
            RuntimeError::NetBlock(_) => ErrorCode::Engine,
            RuntimeError::Snapshot(e) => match e.kind() {
                StorageKind::Mismatch | StorageKind::ImageChanged => ErrorCode::SnapshotMismatch,
                StorageKind::Corrupt | StorageKind::Integrity | StorageKind::Unsupported => {
                    ErrorCode::SnapshotCorrupt
                }
                StorageKind::NotFound => ErrorCode::SnapshotNotFound,
                _ => ErrorCode::Storage,
            },
        }
    }

    /// A storage error of disk `disk`.
    pub fn storage(disk: &str, source: qemuweb_storage::StorageError) -> Self {
        RuntimeError::Storage {
            disk: disk.to_string(),
            source,
        }
    }
}
