//! The virtual network core of QemuWeb: what connects the NICs of the VMs of a page.
//!
//! - [`Switch`]: an Ethernet switch for any number of isolated networks (one per
//!   [`NetworkPlan`](qemuweb_config::NetworkPlan)). It learns MAC addresses, floods broadcast
//!   and unknown destinations within the sender's network only, and gives each port a bounded
//!   egress queue shared fairly between senders, so a flood is dropped and counted at its
//!   source and cannot starve the other ports.
//! - [`frame`]: what the switch accepts ([`validate_frame`]); everything else is dropped
//!   with a typed [`DropReason`].
//! - [`services`]: what a guest expects from the gateway of a NAT network: DHCP leases from
//!   the network's range (stable per MAC), ARP and ping answers for the gateway, and DNS
//!   answers for the VMs' names.
//!
//! Pure Rust with no I/O and no clock of its own (callers pass milliseconds), so it runs the
//! same in a browser worker (wasm32) and natively. Packets are parsed and emitted with
//! [`smoltcp::wire`].
//!
//! ```
//! use qemuweb_config::network_by_id;
//! use qemuweb_net::{Nic, Switch};
//! let mut switch = Switch::new();
//! switch.add_network(network_by_id("default")?.plan()?)?;
//! let a = switch.attach("default", Nic::new("vm1", [0x52, 0x54, 0, 0, 0, 1]))?;
//! let b = switch.attach("default", Nic::new("vm2", [0x52, 0x54, 0, 0, 0, 2]))?;
//! let mut frame = vec![0xff; 6]; // broadcast
//! frame.extend([0x52, 0x54, 0, 0, 0, 1, 0x88, 0xb5]); // from vm1, a local EtherType
//! frame.extend([0u8; 46]);
//! switch.send(a, &frame, 0)?;
//! assert_eq!(switch.recv(b).as_deref(), Some(&frame[..]));
//! assert_eq!(switch.recv(a), None); // never back to the sender
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod error;
pub mod frame;
mod limiter;
pub mod packet;
mod queue;
pub mod services;
mod switch;

pub use error::{ErrorKind, NetError};
pub use frame::{validate_frame, DropReason, MAX_FRAME_BYTES, MIN_FRAME_BYTES};
pub use switch::{Nic, PortId, PortStats, SendOutcome, Switch, SwitchLimits};

/// A MAC address, as six bytes.
pub type Mac = [u8; 6];
