//! The way out of a QemuWeb page's virtual network: `qemuweb network`.
//!
//! The page's switch ([`qemuweb_net`]) answers DHCP, DNS, ARP and ping itself; what its
//! guests send beyond the network (to the gateway's MAC address) goes to its uplink. This
//! crate is the other end of that uplink, on the user's machine: a user-mode TCP/IP stack
//! ([`Stack`], smoltcp's interface with AnyIP) behind the network's gateway that
//! terminates the guests' TCP connections on host sockets, and forwards host ports to
//! guests. The page and the relay exchange Ethernet frames over one WebSocket
//! ([`Relay`]), one binary message per frame.
//!
//! - The endpoint listens on 127.0.0.1 only, through [`qemuweb_http`]'s layers: the
//!   `Host` check against DNS rebinding, an `Origin` check (loopback pages and named
//!   origins), and a random token printed at start and required on the upgrade
//!   (`ws://127.0.0.1:PORT/network?token=TOKEN`). One page at a time.
//! - Frames are checked ([`qemuweb_net::validate_frame`], at most [`MAX_FRAME`] bytes,
//!   for the gateway, from a guest of the network) and dropped with a counted reason; the
//!   WebSocket's messages are bounded, frames are read one at a time and every
//!   connection's bytes in flight are bounded, so a flood cannot grow memory.
//! - Destinations are checked by a [`Policy`]: the host's loopback and private ranges are
//!   refused (a TCP reset, a counted [`Refusal`], a log line) unless allowed; as in QEMU's
//!   user networking, the gateway's address (`10.0.2.2` on the default network) is the
//!   host's `127.0.0.1`, with `--allow-loopback` only.
//! - A forward (`8080:vm1:80`) listens on `127.0.0.1:8080` and connects into the VM's
//!   port; the VM's address comes from the page's DNS (asked over the network).
//! - UDP beyond the network goes out from a host UDP socket per guest flow (bounded in
//!   number, ended when idle), the answers come back: a guest's DNS questions to an
//!   outside resolver, say. ICMP echo goes out through an ICMP datagram socket when the
//!   host allows the relay's group (`net.ipv4.ping_group_range`), and is refused
//!   (`unsupported`) otherwise; ping to the gateway is the page's to answer.
//!
//! ```no_run
//! use qemuweb_relay::{Policy, Relay, RelayConfig};
//! let plan = qemuweb_config::network_by_id("default").unwrap().plan().unwrap();
//! let mut config = RelayConfig::new(plan, 8765);
//! config.policy = Policy { allow_loopback: true, allow_private: false };
//! config.forwards = vec!["8080:vm1:80".parse().unwrap()];
//! let relay = Relay::start(config)?;
//! println!("{}?token={}", relay.url(), relay.token().as_str());
//! relay.wait();
//! # Ok::<(), qemuweb_relay::RelayError>(())
//! ```
//!
//! Native only: on wasm32 the crate is empty.
#![cfg(not(target_arch = "wasm32"))]
#![warn(missing_docs)]

pub mod device;
mod error;
mod policy;
mod server;
pub mod stack;

pub use error::{ErrorKind, RelayError};
pub use policy::{Policy, Refusal};
pub use server::{Relay, RelayConfig, PATH};
pub use stack::{Protocol, RelayStats, Stack, StackLimits, MAX_DATAGRAM, MAX_FRAME};
