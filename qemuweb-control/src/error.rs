//! The control API's errors.

use http::StatusCode;

/// What went wrong, for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is not a valid command.
    Malformed,
    /// The page could not do it (its runtime's error code is in the message).
    Page,
    /// The page did not answer in time.
    Timeout,
    /// The VM is stopping or stopped.
    Stopped,
    /// `--control` named an address that is not loopback.
    NotLoopback,
    /// The server could not start.
    Http,
}

/// An error of the control API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The request is not a valid command.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// The page refused or failed the command.
    #[error("the page could not do it ({code}): {message}")]
    Page {
        /// The runtime's error code (`out-of-order`, `malformed`, ...).
        code: String,
        /// What it said.
        message: String,
    },
    /// The page did not answer within the time allowed.
    #[error("the page did not answer within {0} s")]
    Timeout(u64),
    /// The VM is stopping or stopped: nothing runs the command.
    #[error("the VM is stopping or stopped")]
    Stopped,
    /// The control address is not loopback.
    #[error(
        "--control {0}: the control API listens on loopback only (127.0.0.1:PORT or [::1]:PORT)"
    )]
    NotLoopback(String),
    /// The HTTP server failed.
    #[error("control server: {0}")]
    Http(#[from] qemuweb_http::HttpError),
}

/// The result type of this crate.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;

impl ControlError {
    /// What kind of error this is.
    ///
    /// ```
    /// let e = qemuweb_control::ControlError::Malformed("x".into());
    /// assert_eq!(e.kind(), qemuweb_control::ErrorKind::Malformed);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            ControlError::Malformed(_) => ErrorKind::Malformed,
            ControlError::Page { .. } => ErrorKind::Page,
            ControlError::Timeout(_) => ErrorKind::Timeout,
            ControlError::Stopped => ErrorKind::Stopped,
            ControlError::NotLoopback(_) => ErrorKind::NotLoopback,
            ControlError::Http(_) => ErrorKind::Http,
        }
    }

    /// The code in the JSON error answer (`malformed`, `page`, `timeout`, `stopped`, ...).
    pub fn code(&self) -> &'static str {
        match self.kind() {
            ErrorKind::Malformed => "malformed",
            ErrorKind::Page => "page",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Stopped => "stopped",
            ErrorKind::NotLoopback => "not-loopback",
            ErrorKind::Http => "http",
        }
    }

    /// The HTTP status the error answers with.
    pub fn status(&self) -> StatusCode {
        match self.kind() {
            ErrorKind::Malformed => StatusCode::BAD_REQUEST,
            ErrorKind::Page => StatusCode::CONFLICT,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Stopped => StatusCode::GONE,
            ErrorKind::NotLoopback | ErrorKind::Http => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
