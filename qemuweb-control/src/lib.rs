//! The control API of QemuWeb's headless runner, for automation (what QEMU's monitor
//! `sendkey` and `screendump` are to a native VM): `qemuweb boot --browser --control
//! 127.0.0.1:PORT` and the runtime's `headless` example serve JSON commands on loopback.
//!
//! - [`ControlCommand`]: the commands (`type`, `keys`, `move`, `click`, `screenshot`,
//!   `serialIn`, `serialOut`, `stop`), parsed and checked before anything happens
//!   ([`ControlCommand::parse`]).
//! - [`ControlChannel`]: what the runner shares with the page that runs the VM: the
//!   commands the page executes (it long-polls them through the runner's site and posts
//!   each result back) and the guest's serial output with a cursor.
//! - [`ControlServer`]: the HTTP endpoint (`POST /v1/command`), built from
//!   `qemuweb-http`'s layers: the `Host` must be the bound loopback address, and every
//!   request must carry the run's random token (`X-QemuWeb-Token`) and come from no
//!   other origin; anything else is refused before the command is read.
//! - [`ControlError`]: typed errors with a [`kind`](ControlError::kind) and the HTTP
//!   status they answer with.
//!
//! ```no_run
//! use qemuweb_control::{ControlChannel, ControlServer, Hooks};
//! let channel = ControlChannel::new();
//! let hooks = Hooks::new(|bytes| println!("to the guest: {bytes:?}"), || println!("stop"));
//! let server = ControlServer::start("127.0.0.1:0".parse()?, channel.clone(), hooks)?;
//! eprintln!("control: {} token {}", server.url(), server.token());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg(not(target_arch = "wasm32"))]
#![warn(missing_docs)]

mod channel;
mod command;
mod error;
mod server;

pub use channel::{ControlChannel, PageResult, SerialRead, SERIAL_LOG_BYTES};
pub use command::{ControlCommand, PageOp, MAX_COORD, MAX_KEYS, MAX_TEXT};
pub use error::{ControlError, ErrorKind, Result};
pub use server::{ControlServer, Hooks, PAGE_TIMEOUT};
