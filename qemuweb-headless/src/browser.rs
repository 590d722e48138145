//! Chromium and the runtime's web bundle: where they are, how Chromium is started, and
//! the guard that kills it and removes its temporary profile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::error::{HeadlessError, Result};

/// Debian's Chromium.
pub(crate) const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium's flags for an unattended, isolated run (the project's standard set); a
/// fresh `--user-data-dir` goes with them.
pub const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// Starts `chromium` headless on `profile`, opening `url`.
pub(crate) fn launch(chromium: &Path, profile: &Path, url: &str, verbose: bool) -> Result<Child> {
    Command::new(chromium)
        .args(CHROMIUM_FLAGS)
        // Keeps the headless browser running with its page, as a window would.
        .arg("--remote-debugging-port=0")
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if verbose {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .map_err(|e| HeadlessError::io(format!("cannot start {}", chromium.display()), e))
}

/// Chromium, and its profile directory when it is a temporary one; both go away on drop.
pub(crate) struct Cleanup {
    pub(crate) profile: PathBuf,
    pub(crate) remove_profile: bool,
    pub(crate) chromium: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.chromium.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.remove_profile {
            return;
        }
        // Chromium's helpers may still be writing for a moment after the browser died.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The source checkout this crate was built from (for the bundle, v86 and build scripts).
pub(crate) fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The runtime's wasm bundle: `explicit`, or `$CARGO_TARGET_DIR/web/qemuweb-runtime`,
/// built by `scripts/build-web qemuweb-runtime` when missing.
pub(crate) fn find_bundle(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(b) = explicit {
        return if b.join("qemuweb_runtime.js").is_file() {
            Ok(b.to_path_buf())
        } else {
            Err(HeadlessError::Bundle(format!(
                "--bundle {}: no qemuweb_runtime.js there",
                b.display()
            )))
        };
    }
    let repo = repo_dir();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    let bundle = target.join("web").join("qemuweb-runtime");
    if !bundle.join("qemuweb_runtime.js").is_file() {
        eprintln!("headless: building the web bundle (scripts/build-web qemuweb-runtime)");
        let status = Command::new(repo.join("scripts").join("build-web"))
            .arg("qemuweb-runtime")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| HeadlessError::Bundle(format!("cannot run scripts/build-web: {e}")))?;
        if !status.success() || !bundle.join("qemuweb_runtime.js").is_file() {
            return Err(HeadlessError::Bundle(
                "scripts/build-web qemuweb-runtime failed".into(),
            ));
        }
    }
    Ok(bundle)
}
