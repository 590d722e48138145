//! Builds QEMU to WebAssembly with Emscripten, from a pinned plan, with cached steps.
//!
//! - [`plan`]: the pinned, versioned [`BuildPlan`] (QEMU, library and firmware sources
//!   with SHA-256, Emscripten version, targets, configure options, flags, link `-O`
//!   level), serialisable to JSON, whose hash names the output. 64-bit targets are
//!   refused up front unless the plan's QEMU has the wasm64 host.
//! - [`steps`]: the plan as [`Step`]s: the meson cross file, the library builds, QEMU's
//!   configure, build and optimised relink, and the firmware, as bash scripts.
//! - [`env`]: where the scripts run ([`HostEnv`], [`ContainerEnv`], [`DebootstrapEnv`]) and
//!   [`detect`], which picks one or says what it checked.
//! - [`fetch`]: downloads verified by SHA-256.
//! - [`cache`]: the cache directory, per-step stamps with chained keys.
//! - [`runner`]: [`run_steps`] (stamps, logs, durations, log tails on failure) and
//!   [`build`], the whole thing.
//! - [`output`]: the output directory and its `qemu-build.json` [`Manifest`].
//! - [`error`]: the one [`Error`] type and its [`ErrorKind`].
//!
//! ```no_run
//! use qemuweb_wasm_build::{build, BuildOptions, BuildPlan};
//! let plan = BuildPlan::default(); // QEMU 10.2.2, qemu-system-i386, emcc 3.1.69
//! let outcome = build(&plan, &BuildOptions::new(), &mut std::io::stderr())?;
//! println!("{}", outcome.out_dir.display()); // qemu-system-i386.{js,wasm}, firmware, qemu-build.json
//! # Ok::<(), qemuweb_wasm_build::Error>(())
//! ```
#![warn(missing_docs)]
#![cfg(not(target_arch = "wasm32"))]

pub mod cache;
pub mod env;
pub mod error;
pub mod fetch;
pub mod output;
pub mod plan;
pub mod runner;
pub mod steps;

pub use cache::default_cache_dir;
pub use env::{
    detect, BuildEnv, ContainerEnv, DebootstrapEnv, EnvCheck, EnvChoice, EnvKind, HostEnv, Probe,
};
pub use error::{Error, ErrorKind, Result};
pub use output::{Manifest, MANIFEST};
pub use plan::{BuildPlan, SourceFile, WasmCpu};
pub use runner::{build, built_output, run_steps, BuildOptions, BuildOutcome};
pub use steps::{Place, Step};
