//! The `qemuweb` command line: tools for people who build browser VMs and work on the
//! host too.
//!
//! - `qemuweb serve DIR`: a static server with the cross-origin isolation headers,
//!   Range/206/416, strong ETags and MIME types that the browser runtime needs
//!   ([`serve`]).
//! - `qemuweb create --from-dir DIR OUT.qcow2`: an ext4 disk image from a directory,
//!   without root or loop mounts ([`create`]).
//! - `qemuweb boot IMAGE`: boot an image with native QEMU, using the arguments
//!   `qemuweb-config` builds for the host, serial console on the terminal; with
//!   `--browser`, through `QemuClient` in headless Chromium ([`boot`]).
//! - `qemuweb emulator start|stop|reset|status`: a long-running local VM over a base
//!   image plus an overlay, with port forwards and QMP ([`emulator`]).
//!
//! The crate is a host tool; on wasm32 it is empty.
#![cfg(not(target_arch = "wasm32"))]
#![warn(missing_docs)]

pub mod boot;
pub mod create;
pub mod emulator;
mod error;
pub mod serve;

pub use error::{CliError, ErrorKind, Result};

use std::process::Command;

/// Runs a helper program to completion, turning a missing program or a failure into
/// [`CliError::Tool`] (naming the Debian `package` that provides it, and its stderr).
pub(crate) fn run_tool(cmd: &mut Command, program: &str, package: &str) -> Result<()> {
    let output = cmd.output().map_err(|e| CliError::Tool {
        program: program.to_string(),
        message: format!("cannot run it (Debian package {package}): {e}"),
    })?;
    if !output.status.success() {
        let mut message = format!("failed ({})", output.status);
        for stream in [&output.stderr, &output.stdout] {
            let text = String::from_utf8_lossy(stream);
            if !text.trim().is_empty() {
                message.push_str(": ");
                message.push_str(text.trim());
            }
        }
        return Err(CliError::Tool {
            program: program.to_string(),
            message,
        });
    }
    Ok(())
}
