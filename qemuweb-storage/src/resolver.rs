//! The gate for files an image names: backing files and external data files.
//!
//! A disk image is untrusted input. A qcow2 image can name another file (its backing file,
//! or an external data file) and a naive reader would open whatever path or URL the image
//! chose. Here every such open goes through an [`ImageResolver`] the embedder supplies;
//! the default, [`DenyResolver`], refuses them all.

use crate::device::BlockDevice;
use crate::error::{Result, StorageError};
use async_trait::async_trait;

/// What kind of file an image names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImplicitKind {
    /// The image's backing file: unallocated clusters read through to it.
    BackingFile,
    /// A qcow2 external data file holding the guest data clusters.
    DataFile,
}

impl ImplicitKind {
    /// A human-readable name, as used in error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::BackingFile => "backing file",
            Self::DataFile => "external data file",
        }
    }
}

/// A request, made by an image, to open a file it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImplicitOpen {
    /// Backing file or data file.
    pub kind: ImplicitKind,
    /// The name exactly as the image stores it.
    pub name: String,
    /// The format the image declares for it (`"qcow2"`, `"raw"`), if any.
    pub format: Option<String>,
    /// How deep in the backing chain the naming image is (0 for the top image).
    pub depth: usize,
}

impl ImplicitOpen {
    /// The [`StorageError::ImplicitOpenDenied`] refusing this request for `reason`.
    pub fn deny(&self, reason: impl Into<String>) -> StorageError {
        StorageError::ImplicitOpenDenied {
            what: self.kind.describe(),
            name: self.name.clone(),
            reason: reason.into(),
        }
    }
}

/// Opens (or refuses) the files an image names.
///
/// ```
/// use qemuweb_storage::resolver::{DenyResolver, ImageResolver, ImplicitKind, ImplicitOpen};
/// use qemuweb_storage::ErrorKind;
/// # futures::executor::block_on(async {
/// let req = ImplicitOpen {
///     kind: ImplicitKind::BackingFile,
///     name: "/etc/shadow".into(),
///     format: None,
///     depth: 0,
/// };
/// let err = DenyResolver.open(&req).await.err().unwrap();
/// assert_eq!(err.kind(), ErrorKind::ImplicitOpenDenied);
/// # });
/// ```
#[async_trait(?Send)]
pub trait ImageResolver {
    /// Opens the file `request` names, or refuses with
    /// [`ErrorKind::ImplicitOpenDenied`](crate::ErrorKind::ImplicitOpenDenied).
    async fn open(&self, request: &ImplicitOpen) -> Result<Box<dyn BlockDevice>>;
}

/// Refuses every file an image names: the safe default for untrusted images.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyResolver;

#[async_trait(?Send)]
impl ImageResolver for DenyResolver {
    async fn open(&self, request: &ImplicitOpen) -> Result<Box<dyn BlockDevice>> {
        Err(request.deny("no resolver was configured for files named inside images"))
    }
}

/// Checks that `name` is a plain relative path that cannot leave the directory it is
/// resolved in: no absolute path, no `..`, no URL scheme, no NUL, no backslash.
///
/// ```
/// use qemuweb_storage::resolver::check_relative_name;
/// assert!(check_relative_name("base.qcow2").is_ok());
/// assert!(check_relative_name("images/base.qcow2").is_ok());
/// assert!(check_relative_name("../secret").is_err());
/// assert!(check_relative_name("/etc/passwd").is_err());
/// assert!(check_relative_name("http://evil/x").is_err());
/// ```
pub fn check_relative_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.contains('\0') || name.contains('\\') {
        return Err("the name contains a NUL or backslash");
    }
    if name.starts_with('/') {
        return Err("absolute paths are not allowed");
    }
    if name.contains("://") || name.split('/').next().is_some_and(|s| s.contains(':')) {
        return Err("URLs and drive or protocol prefixes are not allowed");
    }
    if name
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err("the name must not contain '..', '.' or empty path components");
    }
    Ok(())
}

#[cfg(not(target_arch = "wasm32"))]
pub use dir::DirResolver;

#[cfg(not(target_arch = "wasm32"))]
mod dir {
    use super::*;
    use crate::FileBlockDevice;
    use std::path::{Path, PathBuf};

    /// Resolves names to files inside one directory (natively), read-only.
    ///
    /// Names must be relative (see [`check_relative_name`]), and the resolved file,
    /// after following symbolic links, must still lie inside the directory.
    #[derive(Debug, Clone)]
    pub struct DirResolver {
        root: PathBuf,
    }

    impl DirResolver {
        /// A resolver confined to `root`, which must exist.
        pub fn new(root: impl AsRef<Path>) -> Result<Self> {
            let root = root.as_ref();
            let root = root
                .canonicalize()
                .map_err(|e| StorageError::io(format!("resolving {}", root.display()), e))?;
            Ok(Self { root })
        }

        /// The directory names are resolved in.
        pub fn root(&self) -> &Path {
            &self.root
        }

        /// The file `request` names, with links followed, or why it is refused: for a
        /// caller that hands the path to another program (such as QEMU) rather than
        /// opening it here.
        ///
        /// ```
        /// use qemuweb_storage::resolver::{DirResolver, ImplicitKind, ImplicitOpen};
        /// let dir = std::env::temp_dir();
        /// let r = DirResolver::new(&dir).unwrap();
        /// let req = ImplicitOpen {
        ///     kind: ImplicitKind::BackingFile,
        ///     name: "../etc/passwd".into(),
        ///     format: None,
        ///     depth: 0,
        /// };
        /// assert!(r.resolve_path(&req).is_err());
        /// ```
        ///
        /// # Errors
        ///
        /// [`ErrorKind::ImplicitOpenDenied`](crate::ErrorKind::ImplicitOpenDenied) for a
        /// name that is not plain and relative, a missing file, or one that lies outside
        /// the directory through a link.
        pub fn resolve_path(&self, request: &ImplicitOpen) -> Result<PathBuf> {
            check_relative_name(&request.name).map_err(|r| request.deny(r))?;
            let path = self.root.join(&request.name);
            let real = path
                .canonicalize()
                .map_err(|e| request.deny(format!("{}: {e}", path.display())))?;
            if !real.starts_with(&self.root) {
                return Err(request.deny(format!(
                    "it resolves outside {} (through a link)",
                    self.root.display()
                )));
            }
            Ok(real)
        }
    }

    #[async_trait(?Send)]
    impl ImageResolver for DirResolver {
        async fn open(&self, request: &ImplicitOpen) -> Result<Box<dyn BlockDevice>> {
            Ok(Box::new(FileBlockDevice::open(
                self.resolve_path(request)?,
                true,
            )?))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::ErrorKind;
        use futures::executor::block_on;

        #[test]
        fn confines_names_to_the_directory() {
            block_on(async {
                let base = tempfile::Builder::new()
                    .prefix("qemuweb-dirres-")
                    .tempdir()
                    .unwrap()
                    .keep();
                let inner = base.join("inner");
                std::fs::create_dir_all(&inner).unwrap();
                std::fs::write(inner.join("ok.img"), [5u8; 512]).unwrap();
                std::fs::write(base.join("outside.img"), [6u8; 512]).unwrap();
                #[cfg(unix)]
                std::os::unix::fs::symlink(base.join("outside.img"), inner.join("link.img"))
                    .unwrap();
                let r = DirResolver::new(&inner).unwrap();
                let req = |name: &str| ImplicitOpen {
                    kind: ImplicitKind::BackingFile,
                    name: name.into(),
                    format: None,
                    depth: 0,
                };
                let dev = r.open(&req("ok.img")).await.unwrap();
                assert_eq!(dev.read_vec(0, 1).await.unwrap(), [5]);
                assert!(dev.read_only());
                for bad in ["../outside.img", "/etc/passwd", "missing.img", "link.img"] {
                    if bad == "link.img" && cfg!(not(unix)) {
                        continue;
                    }
                    let e = r.open(&req(bad)).await.err().unwrap();
                    assert_eq!(e.kind(), ErrorKind::ImplicitOpenDenied, "{bad}: {e}");
                }
                std::fs::remove_dir_all(&base).unwrap();
            });
        }
    }
}
