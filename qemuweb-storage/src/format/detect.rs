//! Format detection by magic bytes.

use crate::device::BlockDevice;
use crate::error::{Result, StorageError};

/// A disk image format this crate reads.
///
/// ```
/// use qemuweb_storage::format::ImageFormat;
/// assert_eq!(ImageFormat::Qcow2.to_string(), "qcow2");
/// assert_eq!(ImageFormat::from_name("raw"), Some(ImageFormat::Raw));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// The image is the disk, byte for byte.
    Raw,
    /// QEMU's copy-on-write format, versions 2 and 3.
    Qcow2,
}

impl ImageFormat {
    /// The format's name as QEMU spells it (`"raw"`, `"qcow2"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }

    /// The format QEMU calls `name`, if this crate reads it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "raw" => Some(Self::Raw),
            "qcow2" => Some(Self::Qcow2),
            _ => None,
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How many leading bytes detection looks at.
const PROBE_LEN: u64 = 512;

/// Magic strings of formats that are recognised but not read, with their names.
const FOREIGN_MAGIC: &[(usize, &[u8], &str)] = &[
    (0, b"QED\0", "QED"),
    (0, b"KDMV", "VMDK (sparse extent)"),
    (0, b"COWD", "VMDK (ESX sparse extent)"),
    (0, b"# Disk DescriptorFile", "VMDK (descriptor)"),
    (0, b"vhdxfile", "VHDX"),
    (0, b"conectix", "VPC/VHD"),
    (0x40, &[0x7f, 0x10, 0xda, 0xbe], "VDI"),
    (0, b"LUKS\xba\xbe", "LUKS"),
    (0, b"WithoutFreeSpace", "Parallels"),
    (0, b"WithouFreSpacExt", "Parallels"),
    (0, b"Bochs Virtual HD Image", "Bochs"),
];

/// Detects the format of the image on `dev` from its magic bytes.
///
/// qcow2 (versions 2 and up) gives [`ImageFormat::Qcow2`]; the magic of another known
/// format (qcow version 1, QED, VMDK, VHDX, VDI, VPC/VHD, LUKS, Parallels, Bochs) fails
/// with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) naming it; anything
/// else is [`ImageFormat::Raw`].
///
/// ```
/// use qemuweb_storage::format::{detect_format, ImageFormat};
/// use qemuweb_storage::MemoryBlockDevice;
/// # futures::executor::block_on(async {
/// let mut head = vec![0u8; 512];
/// head[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
/// let dev = MemoryBlockDevice::from_vec(head);
/// assert_eq!(detect_format(&dev).await.unwrap(), ImageFormat::Qcow2);
/// let dev = MemoryBlockDevice::new(100);
/// assert_eq!(detect_format(&dev).await.unwrap(), ImageFormat::Raw);
/// # });
/// ```
pub async fn detect_format(dev: &dyn BlockDevice) -> Result<ImageFormat> {
    let len = dev.size().min(PROBE_LEN) as usize;
    let head = dev.read_vec(0, len).await?;
    detect_from_head(&head)
}

/// Detection on the first bytes of an image (up to [`PROBE_LEN`]).
fn detect_from_head(head: &[u8]) -> Result<ImageFormat> {
    if head.starts_with(b"QFI\xfb") {
        if head.len() >= 8 && head[4..8] == [0, 0, 0, 1] {
            return Err(StorageError::unsupported(
                "the image is in the legacy qcow (version 1) format; convert it with \
                 `qemu-img convert -O qcow2`",
            ));
        }
        return Ok(ImageFormat::Qcow2);
    }
    for &(at, magic, name) in FOREIGN_MAGIC {
        if head.get(at..at + magic.len()) == Some(magic) {
            return Err(foreign_format(name));
        }
    }
    if head.starts_with(b"<<< ") && head.windows(20).any(|w| w == b"VirtualBox Disk Imag") {
        return Err(foreign_format("VDI"));
    }
    Ok(ImageFormat::Raw)
}

/// The error for an image in the known but unsupported format `name`.
fn foreign_format(name: &str) -> StorageError {
    StorageError::unsupported(format!(
        "the image is in the {name} format, which is not supported; convert it with \
         `qemu-img convert -O qcow2`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn with_magic(at: usize, magic: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 512];
        v[at..at + magic.len()].copy_from_slice(magic);
        v
    }

    #[test]
    fn known_magic() {
        assert_eq!(
            detect_from_head(&with_magic(0, b"QFI\xfb\0\0\0\x02")).unwrap(),
            ImageFormat::Qcow2
        );
        let foreign: &[(usize, &[u8], &str)] = &[
            (0, b"QFI\xfb\0\0\0\x01", "qcow (version 1)"),
            (0, b"QED\0", "QED"),
            (0, b"KDMV", "VMDK"),
            (0, b"vhdxfile", "VHDX"),
            (0, b"conectix", "VPC/VHD"),
            (0x40, &[0x7f, 0x10, 0xda, 0xbe], "VDI"),
            (0, b"<<< Oracle VM VirtualBox Disk Image >>>\n", "VDI"),
            (0, b"LUKS\xba\xbe\0\x01", "LUKS"),
        ];
        for &(at, magic, name) in foreign {
            let e = detect_from_head(&with_magic(at, magic)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{name}");
            assert!(e.to_string().contains(name), "{name}: {e}");
        }
        assert_eq!(detect_from_head(b"QF").unwrap(), ImageFormat::Raw);
        assert_eq!(detect_from_head(&[]).unwrap(), ImageFormat::Raw);
        assert_eq!(
            detect_from_head(&with_magic(1, b"QFI\xfb")).unwrap(),
            ImageFormat::Raw
        );
    }
}
