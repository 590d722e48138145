//! The WebAssembly module behind the `@qemuweb/config` npm package.
//!
//! It re-exports the wasm-bindgen exports of [`qemuweb_config`] (`buildQemuArgs`,
//! `defaultProfiles`, `defaultNetworks`, and the TypeScript types of the profiles); `wasm-bindgen --target web`
//! turns the `wasm32-unknown-unknown` build of this crate into the package's JS and wasm.
#![warn(missing_docs)]

#[cfg(target_arch = "wasm32")]
pub use qemuweb_config::{build_qemu_args_js, default_networks_js, default_profiles_js};
