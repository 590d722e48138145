//! Runs QemuWeb virtual machines in a web page: a page calls [`QemuClient`](#the-page-side-qemuclient),
//! each VM runs in its own module worker, and the guest's disks are QemuWeb storage
//! stacks (HTTP Range or a local file, qcow2 or raw, copy-on-write over a persistent
//! IndexedDB overlay).
//!
//! - [`protocol`]: the page-worker messages (serde-tagged, with TypeScript types from
//!   tsify), the version handshake and the validation of untrusted messages.
//! - [`capabilities`]: what the browser offers ([`RuntimeCapabilities`]).
//! - [`devtools`]: the DevTools hook's messages (`new QemuClient({devtools: true})`).
//! - [`snapshot`]: saving a running VM's whole state with its disks' overlay points and
//!   resuming it (v86 `save_state`/`restore_state`), published boot states.
//! - [`engine`]: the [`Engine`](engine::Engine) trait, engine selection and boot plans;
//!   `engine::v86` runs guests on [v86](https://github.com/copy/v86).
//! - [`network`]: the page's virtual network (the switch that connects the VMs of a page,
//!   the NICs a VM gets from its configuration).
//! - [`input`]: keyboard and pointer events for the guest (`KeyboardEvent.code` names to
//!   scan codes and evdev codes, text to key strokes).
//! - `storage_stack` (wasm32): input to device stack.
//! - `worker` (wasm32): the worker-side runtime, started by `web/worker.js`.
//! - `client` (wasm32): `QemuClient`, the page-side API.
//!
//! # The page side: QemuClient
//!
//! ```js
//! import init, { QemuClient } from "./qemuweb_runtime.js";
//! await init();
//! const client = new QemuClient({
//!   workerUrl: "./worker.js",
//!   assets: { v86Module: "./v86/libv86.mjs", v86Wasm: "./v86/v86.wasm",
//!             bios: { kind: "url", url: "./bios/bios-256k.bin" } },
//! });
//! const caps = await client.init();
//! client.on("serialOut", (e) => console.log(new TextDecoder().decode(e.data)));
//! await client.startVm("vm1", profile, { disk: { source: { kind: "url", url: "/x.qcow2" } } },
//!                      { overrides: { memoryMiB: 128 } });
//! client.sendSerialIn("vm1", "echo hi\r");
//! ```
//!
//! Everything that can run natively (the protocol, capability rules, engine selection and
//! plans) is unit-tested natively; the rest is tested in headless Chromium by `e2e/runtime`.
#![warn(missing_docs)]

pub mod capabilities;
pub mod devtools;
pub mod engine;
mod error;
pub mod input;
pub mod network;
pub mod protocol;
pub mod snapshot;

#[cfg(target_arch = "wasm32")]
mod canvas_input;
#[cfg(target_arch = "wasm32")]
mod client;
#[cfg(target_arch = "wasm32")]
pub mod storage_stack;
#[cfg(target_arch = "wasm32")]
mod worker;

pub use capabilities::{CapabilityIssue, RuntimeCapabilities};
pub use error::{Result, RuntimeError};
pub use protocol::{EngineKind, ErrorCode, Event, PROTOCOL_VERSION};

#[cfg(target_arch = "wasm32")]
pub use client::QemuClient;
#[cfg(target_arch = "wasm32")]
pub use worker::worker_main;
