//! The crate's one error type.

/// What kind of [`HttpError`] happened, for matching without the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A directory to serve is missing or not a directory.
    Root,
    /// An origin given for CORS is not `scheme://host[:port]`.
    InvalidOrigin,
    /// Binding, the runtime or another I/O operation failed.
    Io,
}

/// An error while setting a server up (requests never fail with it: they get a status).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The directory to serve cannot be used.
    #[error("{}: {reason}", path.display())]
    Root {
        /// The directory given.
        path: std::path::PathBuf,
        /// Why it cannot be served.
        reason: String,
    },
    /// A CORS origin is malformed.
    #[error("{origin:?} is not an origin (scheme://host[:port], e.g. http://127.0.0.1:8080)")]
    InvalidOrigin {
        /// The value given.
        origin: String,
    },
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl HttpError {
    /// The kind of error.
    ///
    /// ```
    /// use qemuweb_http::{CorsPolicy, ErrorKind};
    /// let err = CorsPolicy::origins(["not an origin"]).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidOrigin);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            HttpError::Root { .. } => ErrorKind::Root,
            HttpError::InvalidOrigin { .. } => ErrorKind::InvalidOrigin,
            HttpError::Io { .. } => ErrorKind::Io,
        }
    }

    pub(crate) fn io(what: impl std::fmt::Display, source: std::io::Error) -> Self {
        HttpError::Io {
            what: what.to_string(),
            source,
        }
    }
}

impl From<std::io::Error> for HttpError {
    fn from(source: std::io::Error) -> Self {
        HttpError::io("I/O", source)
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, HttpError>;
