//! The crate's one error type, [`StorageError`], and the [`ErrorKind`] a caller matches on.

/// Result alias used throughout the crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What kind of failure a [`StorageError`] is, for callers that branch on it.
///
/// ```
/// use qemuweb_storage::{BlockDevice, ErrorKind, MemoryBlockDevice};
/// # futures::executor::block_on(async {
/// let dev = MemoryBlockDevice::new(1024);
/// let mut buf = [0u8; 16];
/// let err = dev.read_at(1020, &mut buf).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::OutOfRange);
/// # });
/// ```
///
/// Serialized (the `code` of the `Disk` API's errors) in kebab case: `out-of-range`,
/// `quota-exceeded`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// An access beyond the end of the device.
    OutOfRange,
    /// A write to a read-only device.
    ReadOnly,
    /// A malformed request: misaligned block access, bad option, bad URL.
    InvalidArgument,
    /// A local I/O error (file system, browser Blob).
    Io,
    /// An HTTP server answered with an error status.
    HttpStatus,
    /// The network failed (connection refused, reset, truncated body) after retries.
    Network,
    /// The HTTP server does not honour Range requests.
    RangeNotSupported,
    /// The HTTP server answered with a malformed or inconsistent response.
    BadResponse,
    /// The HTTP server redirected to another origin (or, in a browser, redirected at all:
    /// `fetch` does not show a script where a redirect leads), or redirected too often.
    RedirectRefused,
    /// The remote image was replaced while it was being read, or a persistent overlay
    /// was made over a different base image than the one given now.
    ImageChanged,
    /// A valid image uses a feature this crate does not implement.
    Unsupported,
    /// An encrypted image.
    Encrypted,
    /// The image's metadata is invalid.
    Corrupt,
    /// An image named a backing or data file that the embedder's resolver refused.
    ImplicitOpenDenied,
    /// A backing chain is deeper than the configured limit.
    ChainTooDeep,
    /// The device was closed.
    Closed,
    /// Persistent storage refused a write for lack of quota.
    QuotaExceeded,
    /// Another holder has exclusive access.
    Locked,
    /// A named object does not exist.
    NotFound,
    /// Stored data does not match its checksum or hash.
    Integrity,
    /// Saved state (a snapshot) does not fit what it is applied to: another engine,
    /// machine, base image or disk geometry.
    Mismatch,
    /// A browser API failed in a way not covered above.
    Browser,
}

/// The error of every fallible operation in this crate.
///
/// Each variant carries the context a person needs to act on it; [`StorageError::kind`]
/// gives the matchable [`ErrorKind`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// See [`ErrorKind::OutOfRange`].
    #[error("out of range: {len} bytes at offset {offset} on a device of {size} bytes")]
    OutOfRange {
        /// First byte of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Size of the device.
        size: u64,
    },
    /// See [`ErrorKind::ReadOnly`].
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// See [`ErrorKind::InvalidArgument`].
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// See [`ErrorKind::Io`].
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// See [`ErrorKind::HttpStatus`].
    #[error("HTTP status {status} for {url}")]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The status the server answered.
        status: u16,
    },
    /// See [`ErrorKind::Network`].
    #[error("network error for {url}: {message}")]
    Network {
        /// The URL requested.
        url: String,
        /// What failed.
        message: String,
    },
    /// See [`ErrorKind::RangeNotSupported`].
    #[error("the server does not honour Range requests for {url} (it answered {status}); serve the image from a server with byte-range support")]
    RangeNotSupported {
        /// The URL requested.
        url: String,
        /// The status the server answered instead of 206.
        status: u16,
    },
    /// See [`ErrorKind::BadResponse`].
    #[error("bad HTTP response for {url}: {reason}")]
    BadResponse {
        /// The URL requested.
        url: String,
        /// What was wrong with the response.
        reason: String,
    },
    /// See [`ErrorKind::RedirectRefused`].
    #[error("refused the redirect of {url}{}: {reason}", location.as_deref().map(|l| format!(" to {l}")).unwrap_or_default())]
    RedirectRefused {
        /// The URL that answered with the redirect.
        url: String,
        /// Where it led, when that is known.
        location: Option<String>,
        /// Why it was refused.
        reason: String,
    },
    /// See [`ErrorKind::ImageChanged`].
    #[error("the image at {url} changed while it was being read: {reason}")]
    ImageChanged {
        /// The URL requested.
        url: String,
        /// How the change was detected.
        reason: String,
    },
    /// A persistent overlay was made over a different base image than the one given now
    /// (kind [`ErrorKind::ImageChanged`]); its blocks would corrupt the new image.
    #[error("disk {disk_id:?} of VM {vm_id:?} holds changes made over base image ({stored}), but the base image is now ({given}); delete the VM's stored disks (IndexedDbOverlay::delete_vm) or use another vmId")]
    // Box<str> keeps the enum no larger than its other variants.
    BaseChanged {
        /// The VM.
        vm_id: Box<str>,
        /// The disk of that VM.
        disk_id: Box<str>,
        /// The identity the overlay was made over.
        stored: Box<str>,
        /// The identity given now.
        given: Box<str>,
    },
    /// See [`ErrorKind::Unsupported`].
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// See [`ErrorKind::Encrypted`].
    #[error("encrypted image ({0}): encryption is not supported")]
    Encrypted(String),
    /// See [`ErrorKind::Corrupt`].
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// See [`ErrorKind::ImplicitOpenDenied`].
    #[error("refused to open the {what} {name:?} named inside the image: {reason}")]
    ImplicitOpenDenied {
        /// "backing file" or "external data file".
        what: &'static str,
        /// The name the image gave.
        name: String,
        /// Why the resolver refused it.
        reason: String,
    },
    /// See [`ErrorKind::ChainTooDeep`].
    #[error("backing chain is deeper than the limit of {limit}")]
    ChainTooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// See [`ErrorKind::Closed`].
    #[error("the device is closed")]
    Closed,
    /// See [`ErrorKind::QuotaExceeded`].
    #[error("storage quota exceeded: {0}")]
    QuotaExceeded(String),
    /// See [`ErrorKind::Locked`].
    #[error("locked: {0}")]
    Locked(String),
    /// See [`ErrorKind::NotFound`].
    #[error("not found: {0}")]
    NotFound(String),
    /// See [`ErrorKind::Integrity`].
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// See [`ErrorKind::Browser`].
    #[error("browser API error: {0}")]
    Browser(String),
    /// See [`ErrorKind::Mismatch`].
    #[error("{subject} was saved for {what} ({saved}), but this is ({given})")]
    // Box<str> keeps the enum no larger than its other variants.
    Mismatch {
        /// What was saved, e.g. `snapshot "boot" of VM "vm1"`.
        subject: Box<str>,
        /// What differs: `engine`, `machine`, `the base image of disk0`, ...
        what: Box<str>,
        /// The value the saved state records.
        saved: Box<str>,
        /// The value given now.
        given: Box<str>,
    },
}

impl StorageError {
    /// The matchable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::OutOfRange { .. } => ErrorKind::OutOfRange,
            Self::ReadOnly(_) => ErrorKind::ReadOnly,
            Self::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Self::Io { .. } => ErrorKind::Io,
            Self::HttpStatus { .. } => ErrorKind::HttpStatus,
            Self::Network { .. } => ErrorKind::Network,
            Self::RangeNotSupported { .. } => ErrorKind::RangeNotSupported,
            Self::BadResponse { .. } => ErrorKind::BadResponse,
            Self::ImageChanged { .. } | Self::BaseChanged { .. } => ErrorKind::ImageChanged,
            Self::Unsupported(_) => ErrorKind::Unsupported,
            Self::Encrypted(_) => ErrorKind::Encrypted,
            Self::Corrupt(_) => ErrorKind::Corrupt,
            Self::ImplicitOpenDenied { .. } => ErrorKind::ImplicitOpenDenied,
            Self::RedirectRefused { .. } => ErrorKind::RedirectRefused,
            Self::ChainTooDeep { .. } => ErrorKind::ChainTooDeep,
            Self::Closed => ErrorKind::Closed,
            Self::QuotaExceeded(_) => ErrorKind::QuotaExceeded,
            Self::Locked(_) => ErrorKind::Locked,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Integrity(_) => ErrorKind::Integrity,
            Self::Browser(_) => ErrorKind::Browser,
            Self::Mismatch { .. } => ErrorKind::Mismatch,
        }
    }

    /// Builds an [`StorageError::Io`] with the context of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds a [`StorageError::Corrupt`].
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::Corrupt(message.into())
    }

    /// Builds a [`StorageError::Mismatch`].
    pub fn mismatch(
        subject: impl Into<String>,
        what: impl Into<String>,
        saved: impl Into<String>,
        given: impl Into<String>,
    ) -> Self {
        Self::Mismatch {
            subject: subject.into().into(),
            what: what.into().into(),
            saved: saved.into().into(),
            given: given.into().into(),
        }
    }

    /// Builds a [`StorageError::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::Unsupported(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_messages() {
        let e = StorageError::OutOfRange {
            offset: 10,
            len: 4,
            size: 12,
        };
        assert_eq!(e.kind(), ErrorKind::OutOfRange);
        assert_eq!(
            e.to_string(),
            "out of range: 4 bytes at offset 10 on a device of 12 bytes"
        );
        let e = StorageError::io("reading disk.img", std::io::Error::other("boom"));
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.to_string(), "I/O error while reading disk.img: boom");
        assert_eq!(StorageError::corrupt("x").kind(), ErrorKind::Corrupt);
        assert_eq!(
            StorageError::unsupported("x").kind(),
            ErrorKind::Unsupported
        );
    }
}
