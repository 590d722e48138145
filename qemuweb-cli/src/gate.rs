//! The gate for disk images the host tools hand to `qemu-img` and QEMU.
//!
//! A disk image is untrusted input, and QEMU opens what an image names: a qcow2 backing
//! file (`/home/me/.ssh/id_rsa`, or a `json:{...}` filename that can name any file or
//! network block driver), an external data file. Handed `qemu-img convert IMAGE` or
//! `-drive file=IMAGE`, QEMU would copy such a file into a published disk or show it to
//! the guest. So the host tools never let QEMU find files on its own:
//!
//! 1. [`vet_image`] reads the image with our own reader (`qemuweb-storage`), which knows raw
//!    and qcow2 only: the format is the one the user stated, or the one its magic shows;
//!    another format's magic is refused.
//! 2. A backing or data file the image names is refused, unless the user passed a
//!    directory (`--backing-dir DIR`): then only plain relative names are accepted, and
//!    they are resolved inside DIR, links followed and checked to stay there (the
//!    storage crate's [`DirResolver`], as `cat --backing-dir` does). A `json:` name, an
//!    absolute path or `..` is never accepted. The whole chain is checked this way, up to
//!    [`DEFAULT_MAX_CHAIN_DEPTH`] deep.
//! 3. QEMU gets the chain spelled out as a `json:` block node tree
//!    ([`VettedImage::qemu_filename`]): every layer's driver (the format, always stated),
//!    its file, its data file and its backing node, and `"backing": null` under the last
//!    layer, so QEMU opens exactly the files vetted here and nothing an image names.

use crate::error::{CliError, Result};
use async_trait::async_trait;
use qemuweb_storage::format::{
    detect_format, ImageFormat, OpenOptions, Qcow2Device, DEFAULT_MAX_CHAIN_DEPTH,
};
use qemuweb_storage::resolver::{DirResolver, ImageResolver, ImplicitKind, ImplicitOpen};
use qemuweb_storage::{BlockDevice, FileBlockDevice, StorageError};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// One file of a vetted backing chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The file, absolute, links followed.
    pub path: PathBuf,
    /// Its format.
    pub format: ImageFormat,
    /// The external data file it names (qcow2), absolute.
    pub data_file: Option<PathBuf>,
}

/// An image whose every file is known: the top image first, then its backing files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VettedImage {
    layers: Vec<Layer>,
    virtual_size: u64,
}

impl VettedImage {
    /// The layers, the image itself first, then each backing file in turn.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The format of the image itself.
    pub fn format(&self) -> ImageFormat {
        self.layers[0].format
    }

    /// The guest-visible size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// The chain as a QEMU block node tree (a `blockdev-add` argument): every layer's
    /// driver and file stated, `"backing": null` under the last qcow2 layer.
    ///
    /// ```
    /// use qemuweb_cli::gate::vet_image;
    /// let dir = tempfile::tempdir().unwrap();
    /// let raw = dir.path().join("disk.img");
    /// std::fs::write(&raw, vec![0u8; 4096]).unwrap();
    /// let image = vet_image(&raw, None, None).unwrap();
    /// let node = image.blockdev();
    /// assert_eq!(node["driver"], "raw");
    /// assert_eq!(node["file"]["driver"], "file");
    /// assert_eq!(image.virtual_size(), 4096);
    /// ```
    pub fn blockdev(&self) -> Value {
        node(&self.layers)
    }

    /// [`blockdev`](Self::blockdev) as a `json:` pseudo-filename, for `qemu-img` and
    /// `-drive file=` (which then also needs its commas doubled).
    pub fn qemu_filename(&self) -> String {
        format!("json:{}", self.blockdev())
    }

    /// The `json:` filename of a qcow2 `overlay` (made by this program) over this image:
    /// the overlay's backing node is this chain, whatever name its header stores.
    pub fn overlay_filename(&self, overlay: &Path) -> String {
        let overlay = json!({
            "driver": "qcow2",
            "file": file_node(overlay),
            "backing": self.blockdev(),
        });
        format!("json:{overlay}")
    }
}

fn file_node(path: &Path) -> Value {
    json!({ "driver": "file", "filename": path.to_string_lossy() })
}

fn node(layers: &[Layer]) -> Value {
    let (layer, below) = layers.split_first().expect("a chain has a layer");
    let mut n = json!({ "driver": layer.format.name(), "file": file_node(&layer.path) });
    if layer.format == ImageFormat::Qcow2 {
        n["backing"] = if below.is_empty() {
            Value::Null
        } else {
            node(below)
        };
        if let Some(data) = &layer.data_file {
            n["data-file"] = file_node(data);
        }
    }
    n
}

/// Resolves (or refuses) the files an image names, remembering the paths it gave.
struct Gate {
    dir: Option<DirResolver>,
    opened: RefCell<Vec<PathBuf>>,
}

impl Gate {
    fn resolve(&self, request: &ImplicitOpen) -> qemuweb_storage::Result<PathBuf> {
        match &self.dir {
            None => Err(request.deny(
                "the image names it, and files an image names are refused: pass \
                 --backing-dir DIR to allow plain relative names inside DIR",
            )),
            Some(dir) => dir.resolve_path(request),
        }
    }
}

#[async_trait(?Send)]
impl ImageResolver for Gate {
    async fn open(&self, request: &ImplicitOpen) -> qemuweb_storage::Result<Box<dyn BlockDevice>> {
        let path = self.resolve(request)?;
        let dev = FileBlockDevice::open(&path, true)?;
        self.opened.borrow_mut().push(path);
        Ok(Box::new(dev))
    }
}

/// Reads `image` with our own reader and returns its whole chain (see the module
/// documentation). `format` is the format the user stated (`None`: by magic);
/// `backing_dir` the directory backing and data files may come from (`None`: none).
///
/// # Errors
///
/// [`CliError::Io`] for a missing image; [`CliError::InvalidArgument`] for a path that is
/// not UTF-8 or a `backing_dir` that does not exist; [`CliError::Storage`] with
/// [`ErrorKind::ImplicitOpenDenied`](qemuweb_storage::ErrorKind::ImplicitOpenDenied) for
/// a named file that is not allowed, [`Unsupported`](qemuweb_storage::ErrorKind::Unsupported)
/// for a format other than raw and qcow2, [`Corrupt`](qemuweb_storage::ErrorKind::Corrupt)
/// for bad qcow2 metadata and [`ChainTooDeep`](qemuweb_storage::ErrorKind::ChainTooDeep).
pub fn vet_image(
    image: &Path,
    format: Option<ImageFormat>,
    backing_dir: Option<&Path>,
) -> Result<VettedImage> {
    let dir = backing_dir
        .map(|d| {
            DirResolver::new(d).map_err(|e| {
                CliError::InvalidArgument(format!("--backing-dir {}: {e}", d.display()))
            })
        })
        .transpose()?;
    let gate = Rc::new(Gate {
        dir,
        opened: RefCell::new(Vec::new()),
    });
    let mut path = image.canonicalize().map_err(|e| CliError::io(image, e))?;
    let mut format = format;
    let mut layers = Vec::new();
    let mut virtual_size = None;
    for depth in 0.. {
        if path.to_str().is_none() {
            return Err(CliError::InvalidArgument(format!(
                "{}: QEMU is given paths as JSON text, which needs UTF-8 names",
                path.display()
            )));
        }
        let dev = FileBlockDevice::open(&path, true)?;
        let found = futures::executor::block_on(async {
            let f = match format {
                Some(f) => f,
                None => detect_format(&dev).await?,
            };
            if f == ImageFormat::Raw {
                let size = dev.size();
                return Ok::<_, StorageError>((f, size, None, None));
            }
            let options = OpenOptions {
                resolver: gate.clone(),
                open_backing: false,
                format: Some(f),
                ..OpenOptions::default()
            };
            let q = Qcow2Device::open(Box::new(dev), &options).await?;
            let info = q.info().clone();
            q.close().await?;
            Ok((f, info.virtual_size, info.backing_file, info.backing_format))
        })?;
        let (f, size, backing, backing_format) = found;
        virtual_size.get_or_insert(size);
        layers.push(Layer {
            path,
            format: f,
            data_file: gate.opened.borrow_mut().pop(),
        });
        let Some(name) = backing else {
            break;
        };
        if depth >= DEFAULT_MAX_CHAIN_DEPTH {
            return Err(StorageError::ChainTooDeep {
                limit: DEFAULT_MAX_CHAIN_DEPTH,
            }
            .into());
        }
        let request = ImplicitOpen {
            kind: ImplicitKind::BackingFile,
            name,
            format: backing_format.clone(),
            depth,
        };
        path = gate.resolve(&request)?;
        format = match backing_format {
            None => None,
            Some(f) => Some(ImageFormat::from_name(&f).ok_or_else(|| {
                StorageError::unsupported(format!(
                    "the backing file {:?} is in the {f} format; raw and qcow2 are read",
                    request.name
                ))
            })?),
        };
    }
    Ok(VettedImage {
        layers,
        virtual_size: virtual_size.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(path: &str, format: ImageFormat, data: Option<&str>) -> Layer {
        Layer {
            path: path.into(),
            format,
            data_file: data.map(PathBuf::from),
        }
    }

    #[test]
    fn the_node_tree_states_every_file_and_ends_the_chain() {
        let image = VettedImage {
            layers: vec![
                layer("/d/top.qcow2", ImageFormat::Qcow2, Some("/d/top.data")),
                layer("/d/mid.qcow2", ImageFormat::Qcow2, None),
            ],
            virtual_size: 1 << 20,
        };
        assert_eq!(
            image.blockdev(),
            json!({
                "driver": "qcow2",
                "file": {"driver": "file", "filename": "/d/top.qcow2"},
                "data-file": {"driver": "file", "filename": "/d/top.data"},
                "backing": {
                    "driver": "qcow2",
                    "file": {"driver": "file", "filename": "/d/mid.qcow2"},
                    "backing": null,
                },
            })
        );
        let overlay: Value = serde_json::from_str(
            image
                .overlay_filename(Path::new("/s/disk.qcow2"))
                .strip_prefix("json:")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(overlay["backing"], image.blockdev());
        assert_eq!(overlay["file"]["filename"], "/s/disk.qcow2");
        let raw = VettedImage {
            layers: vec![layer("/d/x,y.img", ImageFormat::Raw, None)],
            virtual_size: 512,
        };
        assert_eq!(
            raw.qemu_filename(),
            r#"json:{"driver":"raw","file":{"driver":"file","filename":"/d/x,y.img"}}"#
        );
    }
}
