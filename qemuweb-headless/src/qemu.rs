//! The QEMU-in-wasm engine's files: a `qemuweb-wasm-build` output directory turned into
//! engine assets and the local files that serve them.

use std::path::{Path, PathBuf};

use crate::{Engine, ExtraFile, HeadlessError, Result, RunnerOptions};

/// The environment variable naming the default QEMU directory (`--qemu-dir`).
pub const QEMU_DIR_ENV: &str = "QEMUWEB_QEMU_DIR";

/// The manifest every QEMU build directory has.
const MANIFEST: &str = "qemu-build.json";

/// `dir` if given, else `$QEMUWEB_QEMU_DIR` if set and not empty.
///
/// ```
/// use std::path::PathBuf;
/// let dir = qemuweb_headless::qemu_dir_or_env(Some(PathBuf::from("/opt/qemu")));
/// assert_eq!(dir, Some(PathBuf::from("/opt/qemu")));
/// ```
pub fn qemu_dir_or_env(dir: Option<PathBuf>) -> Option<PathBuf> {
    dir.or_else(|| {
        std::env::var_os(QEMU_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

impl RunnerOptions {
    /// Selects the QEMU engine with the build in `dir`, a `qemuweb-wasm-build` output
    /// directory (`scripts/build-qemu`) or the `dist/` of `@qemuweb/qemu-wasm`: every file
    /// of it (`qemu-build.json`, the modules, the firmware) is served under `/qemu/`, and
    /// [`assets`](Self::assets) gets `qemuDir: "/qemu/"`. The engine reads the manifest in
    /// the page and loads what the guest needs.
    ///
    /// ```
    /// use qemuweb_headless::{ErrorKind, RunnerOptions};
    /// let mut opts = RunnerOptions::new("linux-x86_64-pc-nographic");
    /// let err = opts.use_qemu_dir("/nonexistent").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::QemuAssets);
    /// assert!(opts.extra_files.is_empty());
    /// ```
    ///
    /// # Errors
    ///
    /// [`HeadlessError::QemuAssets`] when `dir` has no `qemu-build.json` or cannot be
    /// read; the options are then unchanged.
    pub fn use_qemu_dir(&mut self, dir: impl AsRef<Path>) -> Result<&mut Self> {
        let dir = dir.as_ref();
        let missing = |what: &str| HeadlessError::QemuAssets {
            dir: dir.to_path_buf(),
            missing: what.to_string(),
        };
        if !dir.join(MANIFEST).is_file() {
            return Err(missing(MANIFEST));
        }
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|_| missing(MANIFEST))? {
            let path = entry.map_err(|_| missing(MANIFEST))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if path.is_file() && !name.starts_with('.') {
                files.push(ExtraFile {
                    url_path: format!("/qemu/{name}"),
                    file: path.clone(),
                });
            }
        }
        files.sort_by(|a, b| a.url_path.cmp(&b.url_path));
        self.engine = Engine::Qemu;
        self.assets
            .insert("qemuDir".into(), serde_json::Value::from("/qemu/"));
        self.extra_files.extend(files);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_directory_is_served_whole_as_qemu_dir() {
        let dir = tempfile::Builder::new()
            .prefix("qemuweb-headless-qemu-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "qemu-system-x86_64.js",
            "qemu-system-x86_64.wasm",
            "bios-256k.bin",
            "QEMU_EFI.fd",
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let mut opts = RunnerOptions::new("linux-x86_64-pc-nographic");
        let err = opts.use_qemu_dir(&dir).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "--qemu-dir {}: qemu-build.json is missing (build the module: scripts/build-qemu)",
                dir.display()
            )
        );
        assert_eq!(err.exit_code(), 2);
        std::fs::write(dir.join("qemu-build.json"), b"{}").unwrap();
        opts.use_qemu_dir(&dir).unwrap();
        assert_eq!(opts.engine, Engine::Qemu);
        assert_eq!(opts.assets["qemuDir"], "/qemu/");
        let served: Vec<&str> = opts
            .extra_files
            .iter()
            .map(|f| f.url_path.as_str())
            .collect();
        assert_eq!(
            served,
            [
                "/qemu/QEMU_EFI.fd",
                "/qemu/bios-256k.bin",
                "/qemu/qemu-build.json",
                "/qemu/qemu-system-x86_64.js",
                "/qemu/qemu-system-x86_64.wasm"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_explicit_dir_beats_the_environment() {
        assert_eq!(
            qemu_dir_or_env(Some("/a".into())),
            Some(PathBuf::from("/a"))
        );
    }
}
