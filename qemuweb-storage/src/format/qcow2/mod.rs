//! qcow2 images, read-only: [`Qcow2Device`] and what it reports about an image,
//! [`Qcow2Info`].
//!
//! Versions 2 and 3 are read, with every cluster size from 512 B to 2 MiB, zero clusters,
//! zlib- and zstd-compressed clusters, extended L2 entries (subclusters), backing chains
//! and external data files. Internal snapshots and persistent bitmaps are ignored: the
//! active L1 table is what is read.
//!
//! The modules, one per concern: `header` (fixed header fields and checks), `extensions`
//! (header extensions), `mapping` (L1/L2 entries and the L2 cache), `compressed`
//! (decoding compressed clusters) and `device` (the read path).

mod compressed;
mod device;
mod extensions;
mod header;
mod mapping;

pub use device::Qcow2Device;
pub use header::Compression;

/// What a qcow2 image's header says about it.
///
/// ```
/// use qemuweb_storage::format::{Compression, Qcow2Info};
/// fn describe(info: &Qcow2Info) -> String {
///     format!(
///         "qcow2 v{} {} bytes, {}-byte clusters, {}{}",
///         info.version,
///         info.virtual_size,
///         info.cluster_size,
///         info.compression,
///         if info.dirty { ", dirty" } else { "" }
///     )
/// }
/// # let _ = describe;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Qcow2Info {
    /// Format version, 2 or 3.
    pub version: u32,
    /// Cluster size in bytes (512 B to 2 MiB).
    pub cluster_size: u64,
    /// Size of the virtual disk in bytes: the header's size rounded down to whole
    /// 512-byte sectors, as QEMU does.
    pub virtual_size: u64,
    /// The backing file the image names, if any.
    pub backing_file: Option<String>,
    /// The backing file's format, from the backing-format header extension.
    pub backing_format: Option<String>,
    /// The external data file the image names, if it uses one.
    pub data_file: Option<String>,
    /// Whether the external data file is a consistent raw image on its own
    /// (autoclear bit 1).
    pub data_file_raw: bool,
    /// How compressed clusters are compressed.
    pub compression: Compression,
    /// Whether L2 entries are extended (32 subclusters per cluster).
    pub extended_l2: bool,
    /// The dirty bit: refcounts may be stale (the image was not closed cleanly).
    pub dirty: bool,
    /// The corrupt bit: QEMU found the metadata inconsistent; opened read-only.
    pub corrupt: bool,
    /// Whether lazy refcounts are enabled (compatible bit 0).
    pub lazy_refcounts: bool,
    /// Width of a refcount entry in bits.
    pub refcount_bits: u32,
    /// Number of internal snapshots (ignored when reading).
    pub snapshot_count: u32,
    /// Whether the image has a bitmaps extension (ignored when reading).
    pub has_bitmaps: bool,
    /// The raw incompatible feature bits.
    pub incompatible_features: u64,
    /// The raw compatible feature bits.
    pub compatible_features: u64,
    /// The raw autoclear feature bits.
    pub autoclear_features: u64,
}
