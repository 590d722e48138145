//! The qcow2 header: the fixed fields at the start of cluster 0 and their validation.

use super::extensions::Extensions;
use crate::error::{Result, StorageError};

/// The magic at offset 0 of every qcow2 image.
pub(crate) const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Length of a version 2 header (and of the version 3 fields up to `header_length`).
pub(crate) const V2_HEADER_LEN: usize = 72;
/// The smallest version 3 header.
pub(crate) const V3_MIN_HEADER_LEN: u32 = 104;
/// Smallest and largest `cluster_bits` QEMU accepts (512 B to 2 MiB clusters).
pub(crate) const MIN_CLUSTER_BITS: u32 = 9;
/// See [`MIN_CLUSTER_BITS`].
pub(crate) const MAX_CLUSTER_BITS: u32 = 21;
/// The smallest `cluster_bits` allowed with extended L2 entries.
pub(crate) const MIN_EXTENDED_L2_CLUSTER_BITS: u32 = 14;
/// QEMU's limit on the active L1 table, in bytes.
pub(crate) const MAX_L1_BYTES: u64 = 32 << 20;
/// QEMU's limit on the refcount table, in bytes.
pub(crate) const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;
/// The longest backing file name QEMU accepts.
pub(crate) const MAX_BACKING_NAME: u32 = 1023;

/// Incompatible feature bit: the refcounts may be stale.
pub(crate) const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit: the image was marked corrupt.
pub(crate) const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit: guest data lives in an external data file.
pub(crate) const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit: `compression_type` is not zlib.
pub(crate) const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit: L2 entries are 128 bits with subcluster bitmaps.
pub(crate) const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// Every incompatible feature bit this reader understands.
pub(crate) const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_DATA_FILE
    | INCOMPAT_COMPRESSION
    | INCOMPAT_EXTENDED_L2;
/// Compatible feature bit: lazy refcounts.
pub(crate) const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear feature bit: the external data file is a consistent raw image.
pub(crate) const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// The compression of compressed clusters.
///
/// ```
/// use qemuweb_storage::format::Compression;
/// assert_eq!(Compression::Zstd.to_string(), "zstd");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Raw deflate (RFC 1951), QEMU's default.
    Zlib,
    /// Zstandard (`compression_type` 1).
    Zstd,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Zlib => "zlib",
            Self::Zstd => "zstd",
        })
    }
}

/// The fixed header fields, as stored (big-endian decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: Compression,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl Header {
    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Checks the magic, version and cluster size at the start of `head` (at least the
    /// first 24 bytes of the file) and returns `cluster_bits`.
    pub fn probe(head: &[u8]) -> Result<u32> {
        if head.len() < 8 || head[..4] != MAGIC {
            return Err(StorageError::corrupt(
                "not a qcow2 image (the magic QFI\\xfb is missing)",
            ));
        }
        let version = be32(head, 4);
        if version != 2 && version != 3 {
            return Err(StorageError::unsupported(format!(
                "qcow2 version {version} (only versions 2 and 3 are read)"
            )));
        }
        if head.len() < 24 {
            return Err(StorageError::corrupt(format!(
                "the file is {} bytes, shorter than a qcow2 header",
                head.len()
            )));
        }
        let cluster_bits = be32(head, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(StorageError::corrupt(format!(
                "cluster_bits {cluster_bits} is out of range ({MIN_CLUSTER_BITS} to \
                 {MAX_CLUSTER_BITS}, 512 B to 2 MiB clusters)"
            )));
        }
        Ok(cluster_bits)
    }

    /// Parses and checks the fixed header at the start of `head` (cluster 0, or as much of it
    /// as the file holds). Feature checks that need the extensions are in [`Header::check`].
    pub fn parse(head: &[u8]) -> Result<Self> {
        let cluster_bits = Self::probe(head)?;
        let version = be32(head, 4);
        if head.len() < V2_HEADER_LEN {
            return Err(StorageError::corrupt(format!(
                "the file is {} bytes, shorter than a qcow2 header",
                head.len()
            )));
        }
        let cluster_size = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(head, 8),
            backing_file_size: be32(head, 16),
            cluster_bits,
            size: be64(head, 24),
            crypt_method: be32(head, 32),
            l1_size: be32(head, 36),
            l1_table_offset: be64(head, 40),
            refcount_table_offset: be64(head, 48),
            refcount_table_clusters: be32(head, 56),
            nb_snapshots: be32(head, 60),
            snapshots_offset: be64(head, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN as u32,
            compression: Compression::Zlib,
        };
        if version == 3 {
            if head.len() < V3_MIN_HEADER_LEN as usize {
                return Err(StorageError::corrupt(format!(
                    "the file is {} bytes, shorter than a qcow2 version 3 header",
                    head.len()
                )));
            }
            h.incompatible_features = be64(head, 72);
            h.compatible_features = be64(head, 80);
            h.autoclear_features = be64(head, 88);
            h.refcount_order = be32(head, 96);
            h.header_length = be32(head, 100);
            if h.header_length < V3_MIN_HEADER_LEN {
                return Err(StorageError::corrupt(format!(
                    "header_length {} is shorter than the {V3_MIN_HEADER_LEN} bytes of a \
                     version 3 header",
                    h.header_length
                )));
            }
            if h.header_length % 8 != 0 {
                return Err(StorageError::corrupt(format!(
                    "header_length {} is not a multiple of 8",
                    h.header_length
                )));
            }
            if u64::from(h.header_length) > cluster_size {
                return Err(StorageError::corrupt(format!(
                    "header_length {} exceeds the cluster size {cluster_size}",
                    h.header_length
                )));
            }
            if h.header_length as usize > head.len() {
                return Err(StorageError::corrupt(format!(
                    "header_length {} runs past the end of the file",
                    h.header_length
                )));
            }
            if h.header_length > V3_MIN_HEADER_LEN {
                h.compression = match head[104] {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    other => {
                        return Err(StorageError::unsupported(format!(
                            "qcow2 compression type {other} (only zlib and zstd are read)"
                        )))
                    }
                };
            }
        }
        Ok(h)
    }

    /// Checks the feature bits, encryption and table geometry once the extensions (for the
    /// feature-name table) are known. `file_size` is the size of the image file.
    pub fn check(&self, ext: &Extensions, file_size: u64) -> Result<()> {
        let unknown = self.incompatible_features & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(StorageError::unsupported(format!(
                "unknown incompatible qcow2 feature(s): {}",
                ext.describe_incompatible(unknown)
            )));
        }
        if self.refcount_order > 6 {
            return Err(StorageError::corrupt(format!(
                "refcount_order {} is larger than 6 (64-bit refcounts)",
                self.refcount_order
            )));
        }
        match self.crypt_method {
            0 => {}
            1 => return Err(StorageError::Encrypted("qcow2 legacy AES".into())),
            2 => return Err(StorageError::Encrypted("qcow2 LUKS".into())),
            other => {
                return Err(StorageError::corrupt(format!(
                    "unknown encryption method {other}"
                )))
            }
        }
        let flagged = self.incompatible_features & INCOMPAT_COMPRESSION != 0;
        match (self.compression, flagged) {
            (Compression::Zlib, true) => {
                return Err(StorageError::corrupt(
                    "the compression type feature bit is set but the compression type is zlib",
                ))
            }
            (Compression::Zstd, false) => {
                return Err(StorageError::corrupt(
                    "the compression type is zstd but its incompatible feature bit is not set",
                ))
            }
            _ => {}
        }
        if self.incompatible_features & INCOMPAT_EXTENDED_L2 != 0
            && self.cluster_bits < MIN_EXTENDED_L2_CLUSTER_BITS
        {
            return Err(StorageError::corrupt(format!(
                "extended L2 entries need clusters of at least 16 KiB, not {} bytes",
                self.cluster_size()
            )));
        }
        self.check_backing_name()?;
        self.check_l1(file_size)?;
        self.check_refcount_table()
    }

    fn check_backing_name(&self) -> Result<()> {
        if self.backing_file_offset == 0 {
            return Ok(());
        }
        let cs = self.cluster_size();
        if self.backing_file_offset > cs {
            return Err(StorageError::corrupt(format!(
                "the backing file name offset {} lies outside cluster 0",
                self.backing_file_offset
            )));
        }
        let room = cs - self.backing_file_offset;
        if self.backing_file_size > MAX_BACKING_NAME || u64::from(self.backing_file_size) > room {
            return Err(StorageError::corrupt(format!(
                "the backing file name is {} bytes; at most {} fit",
                self.backing_file_size,
                room.min(u64::from(MAX_BACKING_NAME))
            )));
        }
        Ok(())
    }

    /// The number of L1 entries a disk of the virtual size needs.
    pub fn min_l1_entries(&self, l2_entries: u64) -> Option<u64> {
        let per_l1 = l2_entries.checked_mul(self.cluster_size())?;
        Some(self.size.div_ceil(per_l1))
    }

    /// The number of entries in one L2 table.
    pub fn l2_entries(&self) -> u64 {
        let entry = if self.extended_l2() { 16 } else { 8 };
        self.cluster_size() / entry
    }

    /// Whether L2 entries are extended (128 bits, with subclusters).
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTENDED_L2 != 0
    }

    fn check_l1(&self, file_size: u64) -> Result<()> {
        let l1_bytes = u64::from(self.l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(StorageError::corrupt(format!(
                "the L1 table of {} entries is larger than QEMU's limit of {} MiB",
                self.l1_size,
                MAX_L1_BYTES >> 20
            )));
        }
        let needed = self.min_l1_entries(self.l2_entries()).unwrap_or(u64::MAX);
        if u64::from(self.l1_size) < needed {
            return Err(StorageError::corrupt(format!(
                "the L1 table has {} entries, too few for a virtual size of {} bytes \
                 (which needs {needed})",
                self.l1_size, self.size
            )));
        }
        if self.l1_size == 0 {
            return Ok(());
        }
        if self.l1_table_offset % self.cluster_size() != 0 {
            return Err(StorageError::corrupt(format!(
                "the L1 table offset {:#x} is not cluster-aligned",
                self.l1_table_offset
            )));
        }
        match self.l1_table_offset.checked_add(l1_bytes) {
            Some(end) if end <= file_size => Ok(()),
            _ => Err(StorageError::corrupt(format!(
                "the L1 table ({l1_bytes} bytes at {:#x}) runs past the end of the \
                 {file_size}-byte file",
                self.l1_table_offset
            ))),
        }
    }

    fn check_refcount_table(&self) -> Result<()> {
        let bytes = u64::from(self.refcount_table_clusters) << self.cluster_bits;
        if bytes > MAX_REFCOUNT_TABLE_BYTES {
            return Err(StorageError::corrupt(format!(
                "the refcount table of {} clusters is larger than QEMU's limit of {} MiB",
                self.refcount_table_clusters,
                MAX_REFCOUNT_TABLE_BYTES >> 20
            )));
        }
        if self.refcount_table_offset % self.cluster_size() != 0 {
            return Err(StorageError::corrupt(format!(
                "the refcount table offset {:#x} is not cluster-aligned",
                self.refcount_table_offset
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ErrorKind;

    /// A minimal valid v3 header (cluster 0 of 64 KiB clusters) for unit tests.
    pub(crate) fn v3_head() -> Vec<u8> {
        let mut h = vec![0u8; 65536];
        h[..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        h[36..40].copy_from_slice(&1u32.to_be_bytes());
        h[40..48].copy_from_slice(&65536u64.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        h
    }

    #[test]
    fn parses_and_rejects() {
        let h = Header::parse(&v3_head()).unwrap();
        assert_eq!(h.cluster_size(), 65536);
        assert_eq!(h.l2_entries(), 8192);
        h.check(&Extensions::default(), 3 * 65536).unwrap();

        let mut bad = v3_head();
        bad[20..24].copy_from_slice(&22u32.to_be_bytes());
        assert_eq!(Header::parse(&bad).unwrap_err().kind(), ErrorKind::Corrupt);

        let mut bad = v3_head();
        bad[100..104].copy_from_slice(&100u32.to_be_bytes());
        assert_eq!(Header::parse(&bad).unwrap_err().kind(), ErrorKind::Corrupt);

        let mut bad = v3_head();
        bad[4..8].copy_from_slice(&4u32.to_be_bytes());
        assert_eq!(
            Header::parse(&bad).unwrap_err().kind(),
            ErrorKind::Unsupported
        );

        let mut bad = v3_head();
        bad[104] = 7;
        assert_eq!(
            Header::parse(&bad).unwrap_err().kind(),
            ErrorKind::Unsupported
        );

        let mut bad = v3_head();
        bad[32..36].copy_from_slice(&2u32.to_be_bytes());
        let h = Header::parse(&bad).unwrap();
        let e = h.check(&Extensions::default(), 1 << 20).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Encrypted);

        let mut bad = v3_head();
        bad[72..80].copy_from_slice(&(1u64 << 40).to_be_bytes());
        let h = Header::parse(&bad).unwrap();
        let e = h.check(&Extensions::default(), 1 << 20).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("bit 40"), "{e}");

        // L1 too small for the virtual size.
        let mut bad = v3_head();
        bad[24..32].copy_from_slice(&(1u64 << 40).to_be_bytes());
        let h = Header::parse(&bad).unwrap();
        let e = h.check(&Extensions::default(), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("too few"), "{e}");
    }
}
