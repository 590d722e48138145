//! The crate's error type.

/// What kind of error a [`RelayError`] is, for callers to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A socket could not be bound or set up.
    Io,
    /// The arguments describe nothing the relay can serve (an unknown or isolated network,
    /// a bad forward).
    InvalidArgument,
    /// The HTTP layer refused to start.
    Http,
}

/// An error starting or running the relay. What the guests send never causes one: bad
/// frames are [`DropReason`](qemuweb_net::DropReason)s and refused connections
/// [`Refusal`](crate::Refusal)s, counted in [`RelayStats`](crate::RelayStats).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The arguments cannot be served.
    #[error("{0}")]
    InvalidArgument(String),
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] qemuweb_http::HttpError),
}

impl RelayError {
    /// What kind of error this is.
    ///
    /// ```
    /// let e = qemuweb_relay::RelayError::InvalidArgument("no network 'x'".into());
    /// assert_eq!(e.kind(), qemuweb_relay::ErrorKind::InvalidArgument);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            RelayError::Io { .. } => ErrorKind::Io,
            RelayError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            RelayError::Http(_) => ErrorKind::Http,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        RelayError::Io {
            what: what.into(),
            source,
        }
    }
}
