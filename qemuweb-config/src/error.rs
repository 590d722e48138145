//! The crate's one error type.

use crate::types::Issue;

/// What kind of [`ConfigError`] happened, for matching without the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No profile has the requested id.
    UnknownProfile,
    /// A profile is malformed.
    InvalidProfile,
    /// A profile with the same id is already registered.
    DuplicateProfile,
    /// JSON could not be parsed into the expected type.
    Json,
    /// [`build_qemu_args`](crate::build_qemu_args) reported errors.
    Rejected,
    /// A port forward's text form is malformed.
    InvalidPortForward,
    /// A virtual network's definition is invalid.
    InvalidNetwork,
    /// No built-in network has the requested id.
    UnknownNetwork,
}

/// An error from this crate's API. The builder's own findings are
/// [`Issue`]s in [`QemuArgsResult`](crate::QemuArgsResult); [`ConfigError::Rejected`]
/// carries them when a caller wants a `Result`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No profile has this id.
    #[error("unknown VM profile '{id}'")]
    UnknownProfile {
        /// The id looked up.
        id: String,
    },
    /// A profile is malformed.
    #[error("invalid VM profile '{id}': {reason}")]
    InvalidProfile {
        /// The profile's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A profile with this id is already registered.
    #[error("a VM profile with id '{id}' already exists")]
    DuplicateProfile {
        /// The id.
        id: String,
    },
    /// JSON input could not be parsed.
    #[error("invalid {what} JSON: {source}")]
    Json {
        /// What was being parsed.
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The argument builder reported errors.
    #[error("QEMU arguments rejected: {}", join(errors))]
    Rejected {
        /// The errors, as in [`QemuArgsResult::errors`](crate::QemuArgsResult::errors).
        errors: Vec<Issue>,
    },
    /// A port forward is not `[tcp:|udp:]HOST_PORT:GUEST_PORT` with ports from 1 to 65535.
    #[error("invalid port forward '{text}' (expected [tcp:|udp:]HOST_PORT:GUEST_PORT)")]
    InvalidPortForward {
        /// The text given.
        text: String,
    },
    /// A virtual network (or a NIC's attachment to it) is invalid.
    #[error("invalid network '{id}': {reason}")]
    InvalidNetwork {
        /// The network's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// No built-in network has this id.
    #[error("unknown network '{id}' (the built-in ones are 'default' and 'isolated')")]
    UnknownNetwork {
        /// The id looked up.
        id: String,
    },
}

fn join(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| i.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// The kind of error.
    ///
    /// ```
    /// let err = qemuweb_config::profile_by_id("nope").unwrap_err();
    /// assert_eq!(err.kind(), qemuweb_config::ErrorKind::UnknownProfile);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConfigError::UnknownProfile { .. } => ErrorKind::UnknownProfile,
            ConfigError::InvalidProfile { .. } => ErrorKind::InvalidProfile,
            ConfigError::DuplicateProfile { .. } => ErrorKind::DuplicateProfile,
            ConfigError::Json { .. } => ErrorKind::Json,
            ConfigError::Rejected { .. } => ErrorKind::Rejected,
            ConfigError::InvalidPortForward { .. } => ErrorKind::InvalidPortForward,
            ConfigError::InvalidNetwork { .. } => ErrorKind::InvalidNetwork,
            ConfigError::UnknownNetwork { .. } => ErrorKind::UnknownNetwork,
        }
    }
}
