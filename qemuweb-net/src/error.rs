//! The crate's error type.

use crate::Mac;

/// What kind of error a [`NetError`] is, for callers to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A network plan cannot be served (or its id is taken).
    InvalidNetwork,
    /// No network has the id.
    UnknownNetwork,
    /// A NIC cannot be attached as described.
    InvalidNic,
    /// The port is not attached (any more).
    UnknownPort,
    /// The network has its largest number of ports.
    TooManyPorts,
}

/// An error from the switch's API. Frames themselves never cause an error: what the switch
/// does not forward is a [`DropReason`](crate::DropReason), counted on the port.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A network plan cannot be served.
    #[error("network '{id}' cannot be served: {reason}")]
    InvalidNetwork {
        /// The network's id.
        id: String,
        /// Why.
        reason: String,
    },
    /// No network has this id.
    #[error("no network '{id}' is on this switch")]
    UnknownNetwork {
        /// The id asked for.
        id: String,
    },
    /// A NIC cannot be attached.
    #[error("NIC '{vm}' ({}) cannot join network '{network}': {reason}", crate::frame::format_mac(*mac))]
    InvalidNic {
        /// The NIC's VM.
        vm: String,
        /// The NIC's MAC address.
        mac: Mac,
        /// The network.
        network: String,
        /// Why.
        reason: String,
    },
    /// The port is not attached.
    #[error("port {0} is not attached to this switch")]
    UnknownPort(u64),
    /// The network has no room for another port.
    #[error("network '{network}' already has {max} ports")]
    TooManyPorts {
        /// The network.
        network: String,
        /// Its largest number of ports.
        max: usize,
    },
}

impl NetError {
    /// What kind of error this is.
    ///
    /// ```
    /// use qemuweb_net::{ErrorKind, Switch, Nic};
    /// let err = Switch::new().attach("lan", Nic::new("vm", [2, 0, 0, 0, 0, 1])).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::UnknownNetwork);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            NetError::InvalidNetwork { .. } => ErrorKind::InvalidNetwork,
            NetError::UnknownNetwork { .. } => ErrorKind::UnknownNetwork,
            NetError::InvalidNic { .. } => ErrorKind::InvalidNic,
            NetError::UnknownPort(_) => ErrorKind::UnknownPort,
            NetError::TooManyPorts { .. } => ErrorKind::TooManyPorts,
        }
    }
}
