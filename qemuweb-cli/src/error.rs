//! The CLI's one error type.

use std::path::PathBuf;

/// What kind of [`CliError`] happened, for matching without the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A command-line value is malformed or out of range.
    InvalidArgument,
    /// A file or directory could not be read or written.
    Io,
    /// An external program (`qemu-img`, `mkfs.ext4`, `qemu-system-*`) is missing or failed.
    Tool,
    /// `qemuweb-config` refused the VM configuration.
    Config,
    /// The VM ran longer than the requested time limit.
    Timeout,
    /// The headless browser runner could not start the VM.
    Browser,
    /// The storage stack (e.g. the Atlas store) failed.
    Storage,
}

/// An error of the `qemuweb` command line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A command-line value is malformed or out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// An I/O operation on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory (or address, for sockets).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external program could not be run or reported failure.
    #[error("{program}: {message}")]
    Tool {
        /// The program, e.g. `mkfs.ext4`.
        program: String,
        /// What went wrong, with the program's own output when it has any.
        message: String,
    },
    /// The VM configuration was rejected.
    #[error(transparent)]
    Config(#[from] qemuweb_config::ConfigError),
    /// The headless browser runner could not start the VM (`boot --browser`).
    #[error(transparent)]
    Browser(#[from] qemuweb_headless::HeadlessError),
    /// The storage stack failed (`prepare --atlas`).
    #[error(transparent)]
    Storage(#[from] qemuweb_storage::StorageError),
    /// The VM did not finish within the time limit and was stopped.
    #[error("the VM was stopped after the {seconds} s time limit")]
    Timeout {
        /// The limit.
        seconds: u64,
    },
}

impl CliError {
    /// The kind of error.
    ///
    /// ```
    /// let err = qemuweb_cli::CliError::InvalidArgument("bad size".into());
    /// assert_eq!(err.kind(), qemuweb_cli::ErrorKind::InvalidArgument);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            CliError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            CliError::Io { .. } => ErrorKind::Io,
            CliError::Tool { .. } => ErrorKind::Tool,
            CliError::Config(_) => ErrorKind::Config,
            CliError::Timeout { .. } => ErrorKind::Timeout,
            CliError::Browser(_) => ErrorKind::Browser,
            CliError::Storage(_) => ErrorKind::Storage,
        }
    }

    /// An [`CliError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, CliError>;
