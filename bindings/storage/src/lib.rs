//! The WebAssembly module behind the `@qemuweb/storage` npm package.
//!
//! It re-exports [`qemuweb_storage::js`] (the `Disk` class); `wasm-bindgen --target web`
//! turns the `wasm32-unknown-unknown` build of this crate into the package's JS and wasm.
#![warn(missing_docs)]

#[cfg(target_arch = "wasm32")]
pub use qemuweb_storage::js::*;
