//! `qemuweb assets`: what `boot --browser` needs besides this binary, and where it is.
//!
//! - The runtime's web bundle is built into the binary (feature `embed-bundle`, on by
//!   default: `cargo install --path qemuweb-cli` builds it with `scripts/build-web`).
//! - v86 comes from the npm registry at the version the runtime is tested with, its
//!   SHA-512 checked against the pinned one, into the data directory
//!   (`qemuweb_headless::assets`); `boot --browser` fetches it on first use.
//! - The BIOS is Debian's SeaBIOS (`apt-get install seabios`), or `--bios FILE`.
//! - The browser is Debian's Chromium (`apt-get install chromium`).

use std::path::Path;
use std::process::ExitCode;

use qemuweb_headless::assets;

use crate::error::Result;

/// What `qemuweb assets` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Download v86 into the data directory (again if `force`).
    Fetch {
        /// Replace a copy already there.
        force: bool,
    },
    /// Print where each asset is found; exit status 3 when one is missing.
    Status,
}

/// Runs `action`, printing what it did.
///
/// # Errors
///
/// [`crate::CliError::Browser`] when v86 cannot be fetched or checked.
pub fn run(action: Action) -> Result<ExitCode> {
    match action {
        Action::Fetch { force } => {
            let dir = match assets::v86_dir() {
                Some(d) if force => assets::fetch_v86(&d)?,
                _ => assets::ensure_v86()?,
            };
            println!("v86 {}: {}", assets::V86_VERSION, dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Action::Status => {
            let mut missing = false;
            let mut line = |what: &str, found: bool, place: String, fix: &str| {
                missing |= !found;
                let state = if found { "ok" } else { "MISSING" };
                let fix = if found {
                    String::new()
                } else {
                    format!(" ({fix})")
                };
                println!("{what:12} {state:8} {place}{fix}");
            };
            let files = assets::embedded_bundle_files();
            line(
                "web bundle",
                files > 0,
                format!("built into this binary ({files} files)"),
                "a build without embed-bundle: pass --bundle DIR",
            );
            let v86 = assets::v86_dir();
            line(
                &format!("v86 {}", assets::V86_VERSION),
                v86.as_deref().is_some_and(assets::has_v86),
                v86.map(|d| d.display().to_string()).unwrap_or_default(),
                "qemuweb assets fetch",
            );
            for (what, file, fix) in [
                (
                    "BIOS",
                    "/usr/share/seabios/bios-256k.bin",
                    "apt-get install seabios",
                ),
                ("Chromium", "/usr/bin/chromium", "apt-get install chromium"),
            ] {
                line(what, Path::new(file).is_file(), file.into(), fix);
            }
            Ok(ExitCode::from(if missing { 3 } else { 0 }))
        }
    }
}
