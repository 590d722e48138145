//! The crate's one error type.

use std::path::PathBuf;

use crate::env::EnvCheck;

/// What kind of [`Error`] happened, for matching without the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A requested target is one the plan's QEMU cannot build for WebAssembly.
    TargetRefused,
    /// A requested target is not a QEMU target this tool knows.
    UnknownTarget,
    /// The plan is inconsistent (no targets, a malformed checksum, ...).
    InvalidPlan,
    /// No build environment (Emscripten, container runtime, debootstrap) is usable.
    NoEnvironment,
    /// The environment asked for by name is not usable.
    EnvUnavailable,
    /// A downloaded file does not have the SHA-256 the plan pins.
    ChecksumMismatch,
    /// A download failed.
    Download,
    /// A build step failed.
    StepFailed,
    /// Mounting or unmounting a file system in the build root failed.
    Mount,
    /// The plan's output has not been built.
    NotBuilt,
    /// A file or directory could not be read or written.
    Io,
    /// JSON (a plan or a build manifest) could not be read or written.
    Json,
    /// The build was stopped by SIGINT or SIGTERM.
    Interrupted,
    /// A patch of the series is malformed, missing or not the one the plan records.
    InvalidPatch,
    /// A patch of the series does not apply to the QEMU source.
    PatchFailed,
}

impl ErrorKind {
    /// The kind as a kebab-case word, e.g. `no-environment`.
    ///
    /// ```
    /// assert_eq!(qemuweb_wasm_build::ErrorKind::TargetRefused.as_str(), "target-refused");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::TargetRefused => "target-refused",
            ErrorKind::UnknownTarget => "unknown-target",
            ErrorKind::InvalidPlan => "invalid-plan",
            ErrorKind::NoEnvironment => "no-environment",
            ErrorKind::EnvUnavailable => "environment-unavailable",
            ErrorKind::ChecksumMismatch => "checksum-mismatch",
            ErrorKind::Download => "download",
            ErrorKind::StepFailed => "step-failed",
            ErrorKind::Mount => "mount",
            ErrorKind::NotBuilt => "not-built",
            ErrorKind::Io => "io",
            ErrorKind::Json => "json",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::InvalidPatch => "invalid-patch",
            ErrorKind::PatchFailed => "patch-failed",
        }
    }
}

/// An error of `qemuweb-wasm-build`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target cannot be built for WebAssembly with the plan's QEMU.
    #[error("target {target} refused: {reason}")]
    TargetRefused {
        /// The QEMU target, e.g. `x86_64-softmmu`.
        target: String,
        /// Why, naming the QEMU version.
        reason: String,
    },
    /// The target is not one this tool knows.
    #[error("unknown target {target:?} (known: {known})")]
    UnknownTarget {
        /// The requested name.
        target: String,
        /// The known targets, comma separated.
        known: String,
    },
    /// The plan is inconsistent.
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    /// No environment is usable; every check and its result is listed.
    #[error("no build environment found; checked:\n{}", format_checks(.checked))]
    NoEnvironment {
        /// Each environment checked, in order, with why it is not usable.
        checked: Vec<EnvCheck>,
    },
    /// The environment requested by name is not usable.
    #[error("environment {env} is not usable: {reason}")]
    EnvUnavailable {
        /// The environment's name (`host`, `container`, `debootstrap`).
        env: String,
        /// Why.
        reason: String,
    },
    /// A file's SHA-256 differs from the pinned one.
    #[error("checksum mismatch for {}: expected sha256 {expected}, got {actual}", path.display())]
    ChecksumMismatch {
        /// The file checked.
        path: PathBuf,
        /// The pinned checksum (hex).
        expected: String,
        /// The file's checksum (hex).
        actual: String,
    },
    /// A download failed.
    #[error("download of {url} failed: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A build step failed; the tail of its log is included.
    #[error("step {step} failed ({status}); log {}:\n{tail}", log.display())]
    StepFailed {
        /// The step's name, e.g. `glib`.
        step: String,
        /// How it ended, e.g. `exit status: 2`.
        status: String,
        /// The step's full log.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// Mounting or unmounting in the build root failed.
    #[error("{action} {}: {reason}", path.display())]
    Mount {
        /// `mount` or `umount`.
        action: &'static str,
        /// The mount point.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The plan's output directory holds no finished build.
    #[error("not built: {} has no qemu-build.json for this plan", .0.display())]
    NotBuilt(PathBuf),
    /// An I/O operation on `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// JSON could not be read or written.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A patch of the series is malformed, missing, unlisted or differs from the plan.
    #[error("patch {patch} of series {series}: {reason}")]
    InvalidPatch {
        /// The series, e.g. `qemu-10.2.2`.
        series: String,
        /// The patch file (or `series` for the series file).
        patch: String,
        /// What is wrong.
        reason: String,
    },
    /// A patch does not apply to the QEMU source (it was made for another version, or an
    /// earlier patch changed the same lines).
    #[error("patch {patch} of series {series} does not apply to the QEMU source; log {}:\n{output}", log.display())]
    PatchFailed {
        /// The series.
        series: String,
        /// The patch file that failed.
        patch: String,
        /// The step's log.
        log: PathBuf,
        /// What `patch` said.
        output: String,
    },
    /// A signal stopped the build before step `before`.
    #[error("interrupted by a signal before step {before}")]
    Interrupted {
        /// The step that did not start.
        before: String,
    },
}

fn format_checks(checks: &[EnvCheck]) -> String {
    let lines: Vec<String> = checks.iter().map(|c| format!("  {c}")).collect();
    lines.join("\n")
}

impl Error {
    /// The kind of error.
    ///
    /// ```
    /// use qemuweb_wasm_build::{Error, ErrorKind};
    /// let err = Error::InvalidPlan("no targets".into());
    /// assert_eq!(err.kind(), ErrorKind::InvalidPlan);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::TargetRefused { .. } => ErrorKind::TargetRefused,
            Error::UnknownTarget { .. } => ErrorKind::UnknownTarget,
            Error::InvalidPlan(_) => ErrorKind::InvalidPlan,
            Error::NoEnvironment { .. } => ErrorKind::NoEnvironment,
            Error::EnvUnavailable { .. } => ErrorKind::EnvUnavailable,
            Error::ChecksumMismatch { .. } => ErrorKind::ChecksumMismatch,
            Error::Download { .. } => ErrorKind::Download,
            Error::StepFailed { .. } => ErrorKind::StepFailed,
            Error::Mount { .. } => ErrorKind::Mount,
            Error::NotBuilt(_) => ErrorKind::NotBuilt,
            Error::Io { .. } => ErrorKind::Io,
            Error::Json(_) => ErrorKind::Json,
            Error::Interrupted { .. } => ErrorKind::Interrupted,
            Error::InvalidPatch { .. } => ErrorKind::InvalidPatch,
            Error::PatchFailed { .. } => ErrorKind::PatchFailed,
        }
    }

    /// A short word for the failure, for the CLI's last output line
    /// (`FAILED <word>`): the step's name for a failed step, otherwise the kind.
    ///
    /// ```
    /// use qemuweb_wasm_build::Error;
    /// let err = Error::StepFailed {
    ///     step: "glib".into(),
    ///     status: "exit status: 1".into(),
    ///     log: "/tmp/glib.log".into(),
    ///     tail: String::new(),
    /// };
    /// assert_eq!(err.failure_label(), "glib");
    /// ```
    pub fn failure_label(&self) -> String {
        match self {
            Error::StepFailed { step, .. } => step.clone(),
            Error::PatchFailed { patch, .. } => format!("patch {patch}"),
            other => other.kind().as_str().to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
