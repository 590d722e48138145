//! Where an installed runner finds what the page needs, away from any source checkout:
//!
//! - the runtime's web bundle: embedded in the binary at build time (feature
//!   `embed-bundle`, see `build.rs`), or a directory given as `--bundle`;
//! - v86 (`libv86.mjs`, `v86.wasm`): the `v86` package of the npm registry at a pinned
//!   version, downloaded by [`fetch_v86`] (`qemuweb assets fetch`) into
//!   [`v86_dir`] after its SHA-512 was checked against the one pinned here (the npm
//!   lockfile's `integrity`); or a directory given as `--v86-dir`;
//! - the BIOS: Debian's `seabios` package (`/usr/share/seabios`), or `--bios`.
//!
//! The data directory is `$QEMUWEB_DATA_DIR`, else `$XDG_DATA_HOME/qemuweb`, else
//! `~/.local/share/qemuweb`.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};

use crate::error::{HeadlessError, Result};

/// The v86 version the runtime is tested with (as `e2e/package-lock.json` pins it).
pub const V86_VERSION: &str = "0.5.462";
/// The SHA-512 of `v86-0.5.462.tgz` (the npm lockfile's `integrity`, in hex).
const V86_SHA512: &str = "68a3d7ec3773a8028546fda898392a4a3bb4b84ce53b1ce8f8823cd89e544fbfad64db1ba00ea4c9a36af4d2809f1be8f61ce927c7508fbbdcbdccf427b23640";
/// Where the npm registry serves that tarball.
const V86_URL: &str = "https://registry.npmjs.org/v86/-/v86-0.5.462.tgz";
/// The largest tarball accepted (it is about 3 MiB).
const MAX_TARBALL: u64 = 64 << 20;
/// The files kept from the tarball: (path in it, name in the directory).
const V86_FILES: [(&str, &str); 3] = [
    ("package/build/libv86.mjs", "libv86.mjs"),
    ("package/build/v86.wasm", "v86.wasm"),
    ("package/LICENSE", "LICENSE"),
];

/// How many files of the runtime's web bundle this binary carries (0 without the feature
/// `embed-bundle`).
pub fn embedded_bundle_files() -> usize {
    crate::browser::embedded_files()
}

/// The environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "QEMUWEB_DATA_DIR";

/// The data directory (see the [module documentation](self)); `None` without `HOME`.
pub fn data_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var(DATA_DIR_ENV)
        .or_else(|| var("XDG_DATA_HOME").map(|d| d.join("qemuweb")))
        .or_else(|| var("HOME").map(|h| h.join(".local/share/qemuweb")))
}

/// Where [`fetch_v86`] puts v86: `DATA_DIR/v86-VERSION`.
pub fn v86_dir() -> Option<PathBuf> {
    data_dir().map(|d| d.join(format!("v86-{V86_VERSION}")))
}

/// Whether `dir` holds what the page loads of v86.
pub fn has_v86(dir: &Path) -> bool {
    dir.join("libv86.mjs").is_file() && dir.join("v86.wasm").is_file()
}

/// v86 in the data directory ([`v86_dir`]), fetched first by [`fetch_v86`] (saying so
/// on stderr) when it is not there yet.
///
/// # Errors
///
/// [`HeadlessError::Assets`] when there is no data directory or the fetch fails.
pub fn ensure_v86() -> Result<PathBuf> {
    let dir = v86_dir().ok_or_else(|| {
        HeadlessError::Assets(format!("no data directory: set {DATA_DIR_ENV} or HOME"))
    })?;
    if has_v86(&dir) {
        return Ok(dir);
    }
    eprintln!(
        "qemuweb: fetching v86 {V86_VERSION} from the npm registry into {} (once)",
        dir.display()
    );
    fetch_v86(&dir)
}

/// Downloads v86 [`V86_VERSION`] from the npm registry into `dir` (created; replaced
/// whole, never left half written), after checking the tarball's SHA-512 against the
/// pinned one. Returns `dir`.
///
/// # Errors
///
/// [`HeadlessError::Assets`] when the download fails, is larger than 64 MiB, its hash
/// differs or the tarball lacks a file.
pub fn fetch_v86(dir: &Path) -> Result<PathBuf> {
    let fail = |what: String| HeadlessError::Assets(format!("v86 {V86_VERSION}: {what}"));
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_global(Some(std::time::Duration::from_secs(300)))
            .build(),
    );
    let response = agent
        .get(V86_URL)
        .call()
        .map_err(|e| fail(format!("cannot download {V86_URL}: {e}")))?;
    let mut tarball = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(MAX_TARBALL + 1)
        .read_to_end(&mut tarball)
        .map_err(|e| fail(format!("cannot download {V86_URL}: {e}")))?;
    if tarball.len() as u64 > MAX_TARBALL {
        return Err(fail(format!(
            "{V86_URL} is larger than {MAX_TARBALL} bytes"
        )));
    }
    let digest: String = Sha512::digest(&tarball)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if digest != V86_SHA512 {
        return Err(fail(format!(
            "{V86_URL} has SHA-512 {digest}, not the pinned {V86_SHA512}"
        )));
    }
    install_tarball(&tarball, dir).map_err(fail)?;
    Ok(dir.to_path_buf())
}

/// Unpacks the kept files of a checked tarball into `dir` through a private temporary
/// directory beside it.
fn install_tarball(tarball: &[u8], dir: &Path) -> std::result::Result<(), String> {
    let parent = dir.parent().ok_or("no parent directory")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".v86-")
        .tempdir_in(parent)
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let mut found = 0;
    for entry in archive.entries().map_err(|e| format!("bad tarball: {e}"))? {
        let mut entry = entry.map_err(|e| format!("bad tarball: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("bad tarball: {e}"))?
            .to_string_lossy()
            .into_owned();
        if let Some((_, name)) = V86_FILES.iter().find(|(p, _)| *p == path) {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format!("bad tarball: {e}"))?;
            std::fs::write(staging.path().join(name), bytes)
                .map_err(|e| format!("{}: {e}", staging.path().display()))?;
            found += 1;
        }
    }
    if found != V86_FILES.len() {
        return Err("the tarball lacks build/libv86.mjs, build/v86.wasm or LICENSE".into());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, dir).map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_follows_the_environment() {
        // Only reads: the variables are whatever the test process has.
        if let Some(d) = v86_dir() {
            assert!(d.ends_with(format!("v86-{V86_VERSION}")));
        }
        assert!(!has_v86(Path::new("/nonexistent")));
    }

    #[test]
    fn a_tarball_without_the_files_is_refused() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_cksum();
        tar.append_data(&mut header, "package/build/libv86.mjs", &b"x"[..])
            .unwrap();
        let raw = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        let tgz = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("v86");
        let err = install_tarball(&tgz, &target).unwrap_err();
        assert!(err.contains("lacks"), "{err}");
        assert!(!target.exists());
    }
}
