//! The QEMU-in-wasm engine's files: a `qemuweb-wasm-build` output directory turned into
//! engine assets and the local files that serve them.

use std::path::{Path, PathBuf};

use crate::{Engine, ExtraFile, HeadlessError, Result, RunnerOptions};

/// The environment variable naming the default QEMU directory (`--qemu-dir`).
pub const QEMU_DIR_ENV: &str = "QEMUWEB_QEMU_DIR";

/// The files of a QEMU build directory: (file name, asset key, required). The BIOS is
/// required only when no `bios` was given.
const QEMU_FILES: [(&str, &str, bool); 6] = [
    ("qemu-system-i386.js", "qemuModule", true),
    ("qemu-system-i386.wasm", "qemuWasm", true),
    ("bios-256k.bin", "bios", true),
    ("kvmvapic.bin", "kvmvapic", false),
    ("vgabios-stdvga.bin", "vgaBios", false),
    ("linuxboot_dma.bin", "linuxbootDma", false),
];

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
    /// Selects the QEMU engine with its module and firmware from `dir`, a
    /// `qemuweb-wasm-build` output directory (`scripts/build-qemu`): `qemu-system-i386.js`
    /// and `.wasm` are served under `/qemu/` and named in [`assets`](Self::assets), with
    /// the build's `bios-256k.bin` (unless [`bios`](Self::bios) is already set; so set it
    /// first) and, when present, `kvmvapic.bin`, `vgabios-stdvga.bin` and
    /// `linuxboot_dma.bin`.
    ///
    /// ```
    /// use qemuweb_headless::{ErrorKind, RunnerOptions};
    /// let mut opts = RunnerOptions::new("linux-i386-pc-nographic");
    /// let err = opts.use_qemu_dir("/nonexistent").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::QemuAssets);
    /// assert!(opts.extra_files.is_empty());
    /// ```
    ///
    /// # Errors
    ///
    /// [`HeadlessError::QemuAssets`] when the module, its wasm or (without `bios`) the
    /// BIOS is missing; the options are then unchanged.
    pub fn use_qemu_dir(&mut self, dir: impl AsRef<Path>) -> Result<&mut Self> {
        let dir = dir.as_ref();
        let mut found = Vec::new();
        for (name, key, required) in QEMU_FILES {
            if key == "bios" && self.bios.is_some() {
                continue;
            }
            let file = dir.join(name);
            if file.is_file() {
                found.push((name, key, file));
            } else if required {
                return Err(HeadlessError::QemuAssets {
                    dir: dir.to_path_buf(),
                    missing: name.to_string(),
                });
            }
        }
        self.engine = Engine::Qemu;
        for (name, key, file) in found {
            let url = format!("/qemu/{name}");
            let value = match key {
                "qemuModule" | "qemuWasm" => serde_json::Value::from(url.clone()),
                _ => serde_json::json!({"kind": "url", "url": url}),
            };
            self.assets.insert(key.into(), value);
            self.extra_files.push(ExtraFile {
                url_path: url,
                file,
            });
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_directory_becomes_assets_and_files() {
        let dir = tempfile::Builder::new()
            .prefix("qemuweb-headless-qemu-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "qemu-system-i386.js",
            "qemu-system-i386.wasm",
            "bios-256k.bin",
            "kvmvapic.bin",
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let mut opts = RunnerOptions::new("linux-i386-pc-nographic");
        opts.use_qemu_dir(&dir).unwrap();
        assert_eq!(opts.engine, Engine::Qemu);
        assert_eq!(opts.assets["qemuModule"], "/qemu/qemu-system-i386.js");
        assert_eq!(opts.assets["bios"]["url"], "/qemu/bios-256k.bin");
        assert!(!opts.assets.contains_key("vgaBios"));
        assert_eq!(opts.extra_files.len(), 4);

        // A given BIOS wins and need not be in the directory.
        std::fs::remove_file(dir.join("bios-256k.bin")).unwrap();
        let mut opts = RunnerOptions::new("linux-i386-pc-nographic");
        assert_eq!(
            opts.use_qemu_dir(&dir).unwrap_err().to_string(),
            format!(
                "--qemu-dir {}: bios-256k.bin is missing (build the module: scripts/build-qemu)",
                dir.display()
            )
        );
        opts.bios = Some("/some/bios.bin".into());
        opts.use_qemu_dir(&dir).unwrap();
        assert!(!opts.assets.contains_key("bios"));

        std::fs::remove_file(dir.join("qemu-system-i386.wasm")).unwrap();
        let err = RunnerOptions::new("x").use_qemu_dir(&dir).unwrap_err();
        assert!(
            matches!(err, HeadlessError::QemuAssets { ref missing, .. } if missing == "qemu-system-i386.wasm")
        );
        assert_eq!(err.exit_code(), 2);
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
