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
//! - `qemuweb prepare IMAGE OUT_DIR`: the image as a qcow2 with the HTTP device's block
//!   size as cluster size (or raw), `vm.json`, `_headers` and a SHA-256 manifest, and
//!   optionally an Atlas content-addressed store and a boot state ([`prepare`]).
//! - Boot states ([`boot_state`]): a disk booted once in headless Chromium, its VM saved
//!   and published beside it (`prepare --boot-state`, `boot --browser --save`), so pages
//!   resume at the prompt (`boot --browser` resumes one unless `--cold`).
//! - `qemuweb assets fetch|status`: v86 from the npm registry (pinned SHA-512) into the
//!   data directory, and where every asset `boot --browser` needs is found ([`assets`]).
//! - `qemuweb emulator start|stop|reset|status`: a long-running local VM over a base
//!   image plus an overlay, with port forwards and QMP ([`emulator`]).
//!
//! Images are untrusted: `boot`, `prepare` and `emulator` read them with our own reader
//! first and hand QEMU the vetted chain with every file and format stated; backing and
//! data files an image names are refused unless `--backing-dir DIR` allows names inside
//! DIR ([`gate`]).
//!
//! The crate is a host tool; on wasm32 it is empty.
#![cfg(not(target_arch = "wasm32"))]
#![warn(missing_docs)]

pub mod assets;
pub mod boot;
pub mod boot_state;
pub mod create;
pub mod emulator;
mod error;
pub mod gate;
pub mod prepare;
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

/// `qemu-img info --output=json -f FORMAT` of `path` (an image this program wrote, so its
/// format is known and stated), parsed.
pub(crate) fn qemu_img_info(path: &std::path::Path, format: &str) -> Result<serde_json::Value> {
    let tool = |message: String| CliError::Tool {
        program: "qemu-img".into(),
        message,
    };
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", format])
        .arg(path)
        .output()
        .map_err(|e| tool(format!("cannot run it (Debian package qemu-utils): {e}")))?;
    if !out.status.success() {
        return Err(tool(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| tool(format!("unreadable info: {e}")))
}
