//! Headless mode: boots a disk image through `QemuClient` in headless Chromium and bridges
//! the guest's serial console to standard input and output. See `runner.rs`.
//!
//! ```text
//! cargo run -p qemuweb-runtime --example headless -- --profile linux-i386-pc-nographic \
//!     --disk x86-bios.qcow2 [--bios FILE] [--engine v86] [--timeout SECS]
//! ```

#[cfg(not(target_arch = "wasm32"))]
mod runner;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    runner::main()
}

/// The runner drives a native Chromium; there is nothing for it to do inside a browser.
#[cfg(target_arch = "wasm32")]
fn main() {}
