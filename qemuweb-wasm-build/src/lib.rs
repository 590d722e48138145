//! Builds QEMU to WebAssembly with Emscripten, from a pinned plan, with cached steps.
//!
//! - [`plan`]: the pinned, versioned [`BuildPlan`] (QEMU, library and firmware sources
//!   with SHA-256, our patch series, Emscripten version, targets, TCG backend, device
//!   sets, configure options, flags, link `-O` level), serialisable to JSON, whose hash
//!   names the output: [`BuildPlan::wasm64`] (the default: `x86_64-softmmu` and
//!   `aarch64-softmmu`) and [`BuildPlan::wasm32`] (`i386-softmmu`, no longer built by CI).
//!   64-bit targets are refused up front unless the plan's QEMU has the wasm64 host.
//! - [`patches`]: the patch series under `patches/` ([`PatchSource`], [`PatchSeries`]):
//!   headers checked, bytes hashed into the plan.
//! - [`steps`]: the plan as [`Step`]s: the meson cross file, the library builds, the
//!   patched source, QEMU's configure, build and optimised relink, and the firmware, as
//!   bash scripts.
//! - [`env`]: where the scripts run ([`HostEnv`], [`ContainerEnv`], [`DebootstrapEnv`]) and
//!   [`detect`], which picks one or says what it checked.
//! - [`fetch`]: downloads verified by SHA-256.
//! - [`cache`]: the cache directory, per-step stamps with chained keys.
//! - [`runner`]: [`run_steps`] (stamps, logs, durations, log tails on failure) and
//!   [`build`], the whole thing.
//! - [`output`]: the output directory and its `qemu-build.json` [`Manifest`].
//! - [`npm`]: an output as the npm package `@qemuweb/qemu-wasm`.
//! - [`error`]: the one [`Error`] type and its [`ErrorKind`].
//!
//! ```no_run
//! use qemuweb_wasm_build::{build, BuildOptions, BuildPlan};
//! let plan = BuildPlan::wasm64(); // QEMU 10.2.2 + patches, wasm64, emcc 6.0.5
//! let outcome = build(&plan, &BuildOptions::new(), &mut std::io::stderr())?;
//! println!("{}", outcome.out_dir.display()); // qemu-system-{x86_64,aarch64}.{js,wasm}, firmware, qemu-build.json
//! # Ok::<(), qemuweb_wasm_build::Error>(())
//! ```
#![warn(missing_docs)]
#![cfg(not(target_arch = "wasm32"))]

pub mod cache;
pub mod env;
pub mod error;
pub mod fetch;
pub mod npm;
pub mod output;
pub mod patches;
pub mod plan;
pub mod runner;
pub mod steps;

pub use cache::default_cache_dir;
pub use env::{
    detect, BuildEnv, ContainerEnv, DebootstrapEnv, EnvCheck, EnvChoice, EnvKind, HostEnv, Probe,
};
pub use error::{Error, ErrorKind, Result};
pub use output::{Manifest, MANIFEST};
pub use patches::{PatchSeries, PatchSource};
pub use plan::{BuildPlan, DeviceConfig, SourceFile, TcgBackend, WasmCpu};
pub use runner::{build, built_output, run_steps, BuildOptions, BuildOutcome};
pub use steps::{Place, Step};
