//! Disk image formats: detection by magic and opening images as [`BlockDevice`]s.
//!
//! Two formats are read: raw (the device is the disk) and qcow2 ([`Qcow2Device`], read-only).
//! Other well-known formats are recognised by their magic so that a caller gets a clear
//! [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) instead of a raw view of the
//! container.
//!
//! Files an image names (qcow2 backing files and external data files) are opened only through
//! [`OpenOptions::resolver`]; the default refuses them.
//!
//! ```
//! use qemuweb_storage::format::{open_image, ImageFormat, OpenOptions};
//! use qemuweb_storage::{BlockDevice, MemoryBlockDevice};
//! # futures::executor::block_on(async {
//! let dev = Box::new(MemoryBlockDevice::from_vec(vec![7u8; 4096]));
//! let disk = open_image(dev, &OpenOptions::default()).await.unwrap();
//! assert_eq!(disk.size(), 4096);
//! assert_eq!(disk.read_vec(0, 2).await.unwrap(), [7, 7]);
//! # });
//! ```

mod detect;
pub mod qcow2;

pub use detect::{detect_format, ImageFormat};
pub use qcow2::{Compression, Qcow2Device, Qcow2Info};

use crate::device::BlockDevice;
use crate::error::Result;
use crate::resolver::{DenyResolver, ImageResolver};
use futures::future::LocalBoxFuture;
use std::rc::Rc;

/// The default limit on the depth of a backing chain.
pub const DEFAULT_MAX_CHAIN_DEPTH: usize = 8;

/// How [`open_image`] and [`Qcow2Device::open`] open an image.
///
/// ```
/// use qemuweb_storage::format::{ImageFormat, OpenOptions};
/// let opts = OpenOptions { format: Some(ImageFormat::Qcow2), ..OpenOptions::default() };
/// assert_eq!(opts.max_chain_depth, 8);
/// ```
#[derive(Clone)]
pub struct OpenOptions {
    /// Opens (or refuses) the backing and data files an image names. The default,
    /// [`DenyResolver`], refuses them all.
    pub resolver: Rc<dyn ImageResolver>,
    /// How many backing files deep a chain may go below the top image (default 8); a deeper
    /// chain fails with [`ErrorKind::ChainTooDeep`](crate::ErrorKind::ChainTooDeep).
    pub max_chain_depth: usize,
    /// The format of the top image; `None` detects it with [`detect_format`].
    pub format: Option<ImageFormat>,
    /// Whether to open the backing file a qcow2 image names (default `true`). With
    /// `false` the image is read on its own: what it does not allocate reads as zeros, and
    /// the resolver is never asked for a backing file.
    pub open_backing: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            resolver: Rc::new(DenyResolver),
            max_chain_depth: DEFAULT_MAX_CHAIN_DEPTH,
            format: None,
            open_backing: true,
        }
    }
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("resolver", &"dyn ImageResolver")
            .field("max_chain_depth", &self.max_chain_depth)
            .field("format", &self.format)
            .field("open_backing", &self.open_backing)
            .finish()
    }
}

/// Opens `dev` as a disk image: a raw image is returned as it is, a qcow2 image as a
/// [`Qcow2Device`]. The format is `options.format`, or detected by magic when `None`.
///
/// ```
/// use qemuweb_storage::format::{open_image, OpenOptions};
/// use qemuweb_storage::{ErrorKind, MemoryBlockDevice};
/// # futures::executor::block_on(async {
/// let mut vhdx = vec![0u8; 4096];
/// vhdx[..8].copy_from_slice(b"vhdxfile");
/// let err = open_image(Box::new(MemoryBlockDevice::from_vec(vhdx)), &OpenOptions::default())
///     .await
///     .err()
///     .unwrap();
/// assert_eq!(err.kind(), ErrorKind::Unsupported);
/// # });
/// ```
pub async fn open_image(
    dev: Box<dyn BlockDevice>,
    options: &OpenOptions,
) -> Result<Box<dyn BlockDevice>> {
    open_image_at(dev, options, options.format, 0).await
}

/// [`open_image`] for an image `depth` levels down a backing chain, with an explicit format.
pub(crate) fn open_image_at<'a>(
    dev: Box<dyn BlockDevice>,
    options: &'a OpenOptions,
    format: Option<ImageFormat>,
    depth: usize,
) -> LocalBoxFuture<'a, Result<Box<dyn BlockDevice>>> {
    Box::pin(async move {
        let format = match format {
            Some(f) => f,
            None => detect_format(dev.as_ref()).await?,
        };
        match format {
            ImageFormat::Raw => Ok(dev),
            ImageFormat::Qcow2 => {
                let q = Qcow2Device::open_at(dev, options, depth).await?;
                Ok(Box::new(q) as Box<dyn BlockDevice>)
            }
        }
    })
}
