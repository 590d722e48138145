//! QemuWeb's one HTTP server: files and small endpoints on loopback, safely.
//!
//! Every local server of the project (`qemuweb serve`, the test kit's server, the headless
//! runner's site and the e2e tests' pages) is this crate: a hyper 1.x server ([`Server`])
//! running a [`tower`] service made of small layers, each with one job.
//!
//! | piece | job |
//! | --- | --- |
//! | [`StaticFiles`], [`serve_file`] | files: single `Range` (206/416), `If-Range`, strong `ETag`s, `If-None-Match`/`If-Match`/`If-Modified-Since`, `HEAD`, `OPTIONS`, MIME types ([`mime_type`]); paths that leave the root (also by symbolic link) refused |
//! | [`range`] | the one `Range`/`If-Range` decision ([`range::decide`]) |
//! | [`isolation`] | `Cross-Origin-Opener-Policy`/`-Embedder-Policy`/`-Resource-Policy` ([`Corp`]) |
//! | [`CorsPolicy`] | CORS: off unless origins are named, a wildcard only by [`CorsPolicy::Any`] |
//! | [`HostCheckLayer`] | refuses a `Host` that is not the bound address (DNS rebinding) |
//! | [`ActionGuardLayer`] | for endpoints that act: a per-run [`Token`] and a same-origin check |
//! | [`RequestLogLayer`] | a request log ([`RequestLog`], optionally printed) |
//! | `Misbehave` (feature `misbehave`) | the test kit's scripted misbehaviour modes |
//! | [`ServerConfig`] | request size limits and timeouts, applied by [`Server`] |
//!
//! A typical stack, as `qemuweb serve` builds it:
//!
//! ```no_run
//! use qemuweb_http::{isolation, AllowedHosts, CorsPolicy, Corp, HostCheckLayer, RequestLog,
//!     RequestLogLayer, Server, ServerConfig, StaticFiles};
//! use tower::ServiceBuilder;
//!
//! let listener = qemuweb_http::bind_loopback(0)?;
//! let addr = listener.local_addr()?;
//! let service = ServiceBuilder::new()
//!     .layer(RequestLogLayer::new(RequestLog::new()).print(true))
//!     .layer(HostCheckLayer::new(AllowedHosts::for_addr(addr)))
//!     .layer(isolation(Corp::SameOrigin))
//!     .option_layer(CorsPolicy::Off.layer())
//!     .service(StaticFiles::new("site")?);
//! let server = Server::start(listener, ServerConfig::default(), service)?;
//! println!("http://{}/", server.local_addr());
//! server.wait();
//! # Ok::<(), qemuweb_http::HttpError>(())
//! ```
//!
//! Native only: on wasm32 the crate is empty.
#![cfg(not(target_arch = "wasm32"))]
#![warn(missing_docs)]

mod body;
mod cors;
mod error;
mod etag;
mod files;
mod guard;
mod host;
mod isolation;
mod log;
mod mime;
#[cfg(feature = "misbehave")]
mod misbehave;
pub mod range;
mod server;
#[cfg(test)]
mod testing;

pub use body::{empty, full, text, Body, BoxError};
pub use cors::CorsPolicy;
pub use error::{ErrorKind, HttpError, Result};
pub use etag::{etag_for, list_matches};
pub use files::{serve_file, StaticFiles};
pub use guard::{ActionGuard, ActionGuardLayer, Check, Gate, GateLayer, Token, TOKEN_HEADER};
pub use host::{AllowedHosts, HostCheck, HostCheckLayer};
pub use isolation::{isolation, Corp, IsolationLayer};
pub use log::{LogEntry, RequestLog, RequestLogLayer, RequestLogService};
pub use mime::mime_type;
#[cfg(feature = "misbehave")]
pub use misbehave::{Misbehave, MisbehaveLayer};
pub use server::{bind_loopback, RequestBody, Server, ServerConfig, MAX_HEADERS};
