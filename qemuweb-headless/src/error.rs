//! The crate's one error type.

/// What kind of [`HeadlessError`] happened, for matching without the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The options are unusable: an unknown profile, a missing file, nothing to boot.
    InvalidOptions,
    /// A QEMU directory lacks the module, its wasm or the firmware.
    QemuAssets,
    /// The runtime refused the VM before a browser was started (e.g. no engine for it).
    Refused,
    /// The runtime's web bundle is missing and could not be built.
    Bundle,
    /// An engine asset (v86) is missing and could not be fetched.
    Assets,
    /// Listening, a profile directory or starting Chromium failed.
    Io,
}

/// An error of the headless runner, raised before the VM runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadlessError {
    /// The options are unusable.
    #[error("{0}")]
    InvalidOptions(String),
    /// A QEMU directory (`--qemu-dir`) lacks a file the QEMU engine needs.
    #[error("--qemu-dir {}: {missing} is missing (build the module: scripts/build-qemu)", dir.display())]
    QemuAssets {
        /// The directory.
        dir: std::path::PathBuf,
        /// The missing file's name, e.g. `qemu-build.json`.
        missing: String,
    },
    /// The runtime's checks refused the VM (the same checks its worker makes).
    #[error("{0}")]
    Refused(String),
    /// The web bundle is missing and could not be built.
    #[error("{0}")]
    Bundle(String),
    /// An engine asset is missing or could not be fetched and checked.
    #[error("{0}")]
    Assets(String),
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, e.g. the directory being created.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl HeadlessError {
    /// The kind of error.
    ///
    /// ```
    /// use qemuweb_headless::{ErrorKind, HeadlessError};
    /// let err = HeadlessError::InvalidOptions("--bios x: no such file".into());
    /// assert_eq!(err.kind(), ErrorKind::InvalidOptions);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            HeadlessError::InvalidOptions(_) => ErrorKind::InvalidOptions,
            HeadlessError::QemuAssets { .. } => ErrorKind::QemuAssets,
            HeadlessError::Refused(_) => ErrorKind::Refused,
            HeadlessError::Bundle(_) => ErrorKind::Bundle,
            HeadlessError::Assets(_) => ErrorKind::Assets,
            HeadlessError::Io { .. } => ErrorKind::Io,
        }
    }

    /// The conventional process exit status: 2 for unusable options (and a QEMU
    /// directory without the engine's files), else 1.
    ///
    /// ```
    /// use qemuweb_headless::HeadlessError;
    /// assert_eq!(HeadlessError::InvalidOptions("x".into()).exit_code(), 2);
    /// assert_eq!(HeadlessError::Refused("x".into()).exit_code(), 1);
    /// ```
    pub fn exit_code(&self) -> u8 {
        match self.kind() {
            ErrorKind::InvalidOptions | ErrorKind::QemuAssets => 2,
            _ => 1,
        }
    }

    pub(crate) fn io(what: impl std::fmt::Display, source: std::io::Error) -> Self {
        HeadlessError::Io {
            what: what.to_string(),
            source,
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, HeadlessError>;
