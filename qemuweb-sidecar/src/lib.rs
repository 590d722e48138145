//! The guest's screen for QemuWeb: frames and how they travel from the emulator to the
//! page.
//!
//! A [`Frame`] is the whole screen plus [`FrameMetadata`] (the reference design's
//! sequence, timestamp, size, [`PixelFormat`] and keyframe flag, plus
//! [`DirtyRect`]s saying what changed), so transports move only the changes and an
//! unchanged screen costs nothing. The types derive `serde` (camelCase names) and
//! `tsify`, so TypeScript gets the same shapes.
//!
//! The [`ring`] module is the local transport's core: a single-producer single-consumer
//! ring of frames in shared memory ([`SharedWords`]; natively `SharedMemory`, in the
//! browser a `SharedArrayBuffer`) between the emulator's worker and the page. Its
//! producer never blocks; stale frames are dropped. See the module for the policy.
//!
//! [`FrameTransport`] is how emulators and displays use a transport (`connect`, `send`,
//! `receive`); [`LocalTransport`] implements it over the ring, its receiving end
//! waiting with `Atomics.waitAsync` on the page.
//!
//! [`RemoteTransport`] implements it over a WebSocket for a display on another machine
//! (the [`remote`] module: handshake, back-pressure, reconnects; the [`wire`] module:
//! the versioned binary format). Natively it is built on `tungstenite` and the
//! `frame-server` binary serves frames with it; in the browser it uses `WebSocket`, and
//! `RemoteDisplay` draws a remote screen on a canvas.
//!
//! On the page, `CanvasPresenter` (wasm32) draws received frames on a `<canvas>`:
//! keyframes whole, deltas only their dirty rectangles; `CanvasDisplay` and
//! `FrameSender` are the JavaScript classes for the page and a JavaScript worker.
//! `CanvasDisplay.forward(url)` also sends what the page draws to a remote viewer
//! (`DisplayForward`), checking its acknowledgements against the page's screen.
//!
//! ```
//! use qemuweb_sidecar::*;
//!
//! let layout = RingLayout::for_screen(3, 720, 400, PixelFormat::Rgba)?;
//! let memory = SharedMemory::new(layout.len_words());
//! layout.init(&memory)?;
//! let mut producer = RingProducer::attach(memory.clone())?;
//! let mut consumer = RingConsumer::attach(memory)?;
//!
//! let screen = vec![7u8; 720 * 400 * 4];
//! producer.send(&Frame {
//!     metadata: FrameMetadata::keyframe(1, 0.0, 720, 400, PixelFormat::Rgba),
//!     data: screen.clone(),
//! })?;
//! let got = consumer.receive_timeout(std::time::Duration::from_secs(1))?.unwrap();
//! assert!(got.keyframe);
//! assert_eq!(consumer.data(), &screen[..]);
//! # Ok::<(), SidecarError>(())
//! ```
#![warn(missing_docs)]

mod convert;
mod error;
#[cfg(target_arch = "wasm32")]
mod forward;
mod frame;
mod memory;
#[cfg(target_arch = "wasm32")]
mod present;
pub mod remote;
pub mod ring;
pub mod synthetic;
mod transport;
pub mod wire;

pub use convert::rect_to_rgba;
pub use error::{ErrorKind, SidecarError};
#[cfg(target_arch = "wasm32")]
pub use forward::DisplayForward;
pub use frame::{DirtyRect, Frame, FrameMetadata, PixelFormat, MAX_DIMENSION, MAX_DIRTY_RECTS};
#[cfg(target_arch = "wasm32")]
pub use memory::SabMemory;
#[cfg(not(target_arch = "wasm32"))]
pub use memory::SharedMemory;
pub use memory::{SharedWords, WaitOutcome};
#[cfg(target_arch = "wasm32")]
pub use present::{CanvasDisplay, CanvasPresenter, FrameSender};
#[cfg(target_arch = "wasm32")]
pub use remote::RemoteDisplay;
pub use remote::{RemoteOptions, RemoteStats, RemoteTransport};
pub use ring::{RingConsumer, RingLayout, RingProducer, RingStats, SendReport};
pub use transport::{FrameTransport, LocalTransport, RingMemory};
