//! Chromium and the runtime's web bundle: where they are, how Chromium is started, and
//! the guard that kills it and removes its temporary profile.

use qemuweb_proc::{die_with_parent, in_own_group, ProcessGroup};
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

/// How long Chromium's processes get to be gone after `SIGKILL`.
const GONE_WAIT: Duration = Duration::from_secs(20);
/// The most [`dump_dom`]'s Chromium may run.
const DUMP_DOM_LIMIT: Duration = Duration::from_secs(60);

/// Starts `chromium` headless on `profile`, opening `url`, as the leader of a process
/// group of its own: its zygote, renderers and utility processes share that group, so
/// [`Cleanup`] can end them all. It is killed when this process dies (its helpers follow
/// it), so a runner killed from outside leaves no browser behind.
pub(crate) fn launch(chromium: &Path, profile: &Path, url: &str, verbose: bool) -> Result<Child> {
    die_with_parent(in_own_group(&mut Command::new(chromium)))
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

/// Opens `url` in headless Debian Chromium ([`CHROMIUM_FLAGS`], a fresh private profile),
/// lets the page run for `budget` of virtual time and returns the DOM it ends with
/// (`--dump-dom`). Chromium runs in a process group of its own, killed if it has not
/// finished 60 s after starting (an error); every process of the group is gone before the
/// profile is removed. For tests that need a page's verdict, e.g. what another origin can
/// reach.
///
/// ```no_run
/// let dom = qemuweb_headless::dump_dom("http://127.0.0.1:18000/", std::time::Duration::from_secs(5))?;
/// assert!(dom.contains("<body"));
/// # Ok::<(), qemuweb_headless::HeadlessError>(())
/// ```
///
/// # Errors
///
/// [`HeadlessError::Io`] when Chromium cannot start or does not finish in time.
pub fn dump_dom(url: &str, budget: Duration) -> Result<String> {
    let profile = tempfile::Builder::new()
        .prefix("qemuweb-dump-dom-")
        .tempdir()
        .map_err(|e| HeadlessError::io("a temporary profile directory", e))?;
    let mut child = die_with_parent(in_own_group(&mut Command::new(DEFAULT_CHROMIUM)))
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| HeadlessError::io(format!("cannot start {DEFAULT_CHROMIUM}"), e))?;
    let group = ProcessGroup::of(&child);
    let mut stdout = child.stdout.take().expect("piped");
    let reader = thread::spawn(move || {
        let mut dom = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut dom);
        dom
    });
    let deadline = std::time::Instant::now() + DUMP_DOM_LIMIT;
    let finished = loop {
        match child.try_wait() {
            Ok(Some(_)) => break true,
            Ok(None) if std::time::Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(50))
            }
            _ => break false,
        }
    };
    // Chromium's helpers (its group) may outlive the browser and still write into the
    // profile: they are gone before the profile is removed (when `profile` drops).
    let gone = group.kill_and_wait(&mut child, GONE_WAIT);
    if !finished {
        return Err(HeadlessError::io(
            format!("Chromium --dump-dom {url}"),
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("did not finish in {DUMP_DOM_LIMIT:?}"),
            ),
        ));
    }
    if !gone {
        return Err(HeadlessError::io(
            format!("Chromium --dump-dom {url}"),
            std::io::Error::other(format!(
                "its processes (group {}) still run {GONE_WAIT:?} after SIGKILL",
                group.id()
            )),
        ));
    }
    Ok(reader.join().unwrap_or_default())
}

/// Chromium, and its profile directory when it is a temporary one; both go away on drop.
///
/// Every process of Chromium's group is killed and gone before this returns: none of
/// them writes into the profile afterwards, whether it is removed here or kept for the
/// next run (`--user-data-dir`), which a caller may then remove or reuse at once.
pub(crate) struct Cleanup {
    pub(crate) profile: PathBuf,
    pub(crate) remove_profile: bool,
    pub(crate) chromium: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.chromium.take() {
            let group = ProcessGroup::of(&c);
            if !group.kill_and_wait(&mut c, GONE_WAIT) {
                eprintln!(
                    "headless: Chromium's processes (group {}) still run {GONE_WAIT:?} after SIGKILL",
                    group.id()
                );
            }
        }
        if self.remove_profile {
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}

/// Where the runtime's web bundle comes from.
pub(crate) enum Bundle {
    /// A `scripts/build-web` output directory.
    Dir(PathBuf),
    /// The files embedded at build time (feature `embed-bundle`).
    #[cfg_attr(not(feature = "embed-bundle"), allow(dead_code))]
    Embedded(&'static [(&'static str, &'static [u8])]),
}

#[cfg(feature = "embed-bundle")]
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/bundle.rs"));
}

/// How many bundle files are embedded.
pub(crate) fn embedded_files() -> usize {
    #[cfg(feature = "embed-bundle")]
    {
        embedded::FILES.len()
    }
    #[cfg(not(feature = "embed-bundle"))]
    {
        0
    }
}

/// The runtime's wasm bundle: `explicit`, else the embedded one (feature
/// `embed-bundle`), else (a development build) the checkout's
/// `$CARGO_TARGET_DIR/web/qemuweb-runtime`, built by `scripts/build-web` when missing.
pub(crate) fn find_bundle(explicit: Option<&Path>) -> Result<Bundle> {
    if let Some(b) = explicit {
        return if b.join("qemuweb_runtime.js").is_file() {
            Ok(Bundle::Dir(b.to_path_buf()))
        } else {
            Err(HeadlessError::Bundle(format!(
                "--bundle {}: no qemuweb_runtime.js there",
                b.display()
            )))
        };
    }
    #[cfg(feature = "embed-bundle")]
    {
        Ok(Bundle::Embedded(embedded::FILES))
    }
    #[cfg(not(feature = "embed-bundle"))]
    {
        checkout::bundle().map(Bundle::Dir)
    }
}

/// v86 when none was given: the data directory's ([`crate::assets::fetch_v86`]), else in
/// a development build the checkout's `e2e/node_modules/v86/build`.
pub(crate) fn default_v86_dir() -> Result<PathBuf> {
    let installed = crate::assets::v86_dir();
    if let Some(d) = installed.as_ref().filter(|d| crate::assets::has_v86(d)) {
        return Ok(d.clone());
    }
    #[cfg(not(feature = "embed-bundle"))]
    {
        let dev = checkout::dir().join("e2e/node_modules/v86/build");
        if crate::assets::has_v86(&dev) {
            return Ok(dev);
        }
    }
    Err(HeadlessError::Assets(format!(
        "v86 is not installed{}: run `qemuweb assets fetch` (v86 {} from the npm registry, SHA-512 checked) or pass --v86-dir",
        installed
            .map(|d| format!(" in {}", d.display()))
            .unwrap_or_default(),
        crate::assets::V86_VERSION
    )))
}

/// A development build's source checkout (never consulted by an `embed-bundle` build, so
/// an installed runner does not depend on where it was built).
#[cfg(not(feature = "embed-bundle"))]
mod checkout {
    use super::*;

    /// The checkout this crate was built from.
    pub(super) fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// `$CARGO_TARGET_DIR/web/qemuweb-runtime`, built by `scripts/build-web` when missing.
    pub(super) fn bundle() -> Result<PathBuf> {
        let repo = dir();
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The pids of the live (not zombie) processes whose command line names `profile`.
    fn users_of(profile: &Path) -> Vec<u32> {
        let needle = profile.to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let zombie = stat
                    .rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
                !zombie && String::from_utf8_lossy(&cmdline).contains(&needle)
            })
            .collect()
    }

    /// Issue 13: the profile was removed (or handed to the next run) while Chromium's
    /// helpers still wrote into it. When the guard is dropped, none of them runs.
    #[test]
    fn no_chromium_process_outlives_the_cleanup() {
        let chromium = Path::new(DEFAULT_CHROMIUM);
        if !chromium.exists() {
            panic!("{DEFAULT_CHROMIUM} is missing (scripts/setup installs chromium)");
        }
        let profile = std::env::temp_dir().join(format!(
            "qemuweb-headless-cleanup-test-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let cleanup = Cleanup {
            profile: profile.clone(),
            remove_profile: false,
            chromium: Some(launch(chromium, &profile, "about:blank", false).unwrap()),
        };
        // Wait until Chromium has started its helpers (zygote, renderer, utilities).
        let deadline = Instant::now() + Duration::from_secs(60);
        while users_of(&profile).len() < 3 {
            assert!(
                Instant::now() < deadline,
                "Chromium did not start its helpers"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A kept profile (`--user-data-dir`): the caller may remove or reuse it at once.
        drop(cleanup);
        let left: Vec<String> = users_of(&profile)
            .into_iter()
            .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
            .collect();
        std::fs::remove_dir_all(&profile).unwrap();
        assert!(
            left.is_empty(),
            "Chromium processes still use the profile: {left:?}"
        );
    }
}
