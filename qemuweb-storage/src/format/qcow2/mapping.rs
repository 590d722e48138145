//! Guest-to-host mapping: L1 entries, L2 entries (standard and extended) and the L2 cache.

use crate::error::{Result, StorageError};
use lru::LruCache;
use std::cell::RefCell;
use std::num::NonZeroUsize;
use std::rc::Rc;

/// Offset bits of an L1 entry and of a standard L2 entry (bits 9 to 55).
pub(crate) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: the cluster is compressed.
const COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 63: refcount is exactly one (disambiguates offset 0 in data files).
const COPIED: u64 = 1 << 63;
/// Standard cluster descriptor bit 0: the cluster reads as zeros.
const ZERO: u64 = 1;
/// Subclusters per cluster with extended L2 entries.
pub(crate) const SUBCLUSTERS: u32 = 32;
/// The allocation half of an extended L2 bitmap.
const ALLOC_BITS: u64 = 0xffff_ffff;
/// How many bytes of L2 tables the cache keeps at most.
const L2_CACHE_BYTES: u64 = 16 << 20;
/// The cache keeps at least this many L2 tables.
const L2_CACHE_MIN_TABLES: u64 = 8;

/// The shape of an image's mapping: everything needed to decode entries.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub version: u32,
    pub cluster_bits: u32,
    pub cluster_size: u64,
    /// log2 of the number of entries in an L2 table.
    pub l2_bits: u32,
    pub extended: bool,
    /// Whether data clusters live in an external data file.
    pub data_file: bool,
    /// Size of the qcow2 file (metadata, and data unless in a data file).
    pub file_size: u64,
    /// Size of the file data clusters are read from.
    pub data_size: u64,
}

/// How one piece of guest data, inside one cluster, is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extent {
    /// Reads as zeros.
    Zero,
    /// Not allocated here: reads from the backing file, or zeros without one.
    Unallocated,
    /// Stored uncompressed at this host offset (of the piece's first byte).
    Data {
        /// Host offset in the data file (or the image file).
        host: u64,
    },
    /// The whole cluster is compressed at `offset`, in at most `len` bytes.
    Compressed {
        /// Host offset of the compressed data in the image file.
        offset: u64,
        /// Bytes that hold it (the stored sector count, less the offset into the sector).
        len: u64,
    },
}

impl Geometry {
    /// Entries in one L2 table.
    pub fn l2_entries(&self) -> u64 {
        1 << self.l2_bits
    }

    /// The L2 table offset an L1 entry points to, or `None` if unallocated.
    pub fn l2_offset(&self, l1_entry: u64, l1_index: u64) -> Result<Option<u64>> {
        let off = l1_entry & OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        if off % self.cluster_size != 0 {
            return Err(StorageError::corrupt(format!(
                "L2 table offset {off:#x} (L1 index {l1_index}) is not cluster-aligned"
            )));
        }
        if off.saturating_add(self.cluster_size) > self.file_size {
            return Err(StorageError::corrupt(format!(
                "L2 table offset {off:#x} (L1 index {l1_index}) lies past the end of the \
                 {}-byte file",
                self.file_size
            )));
        }
        Ok(Some(off))
    }

    /// Decodes an L2 table read from disk into its 64-bit words.
    pub fn decode_table(bytes: &[u8]) -> Rc<[u64]> {
        bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_be_bytes(a)
            })
            .collect()
    }

    /// Maps the guest bytes `[in_cluster, in_cluster + max)` of the cluster at `l2_index` of
    /// `table` (at most to the end of the cluster). Returns how the first piece is stored and
    /// its length: the piece ends where the storage changes (at a subcluster boundary).
    pub fn map(
        &self,
        table: &[u64],
        l2_index: u64,
        in_cluster: u64,
        max: u64,
    ) -> Result<(Extent, u64)> {
        let (entry, bitmap) = if self.extended {
            let i = (l2_index * 2) as usize;
            (table[i], table[i + 1])
        } else {
            (table[l2_index as usize], 0)
        };
        let whole = |e: Extent| Ok((e, max));
        if entry & COMPRESSED != 0 {
            return whole(self.compressed(entry)?);
        }
        let off = entry & OFFSET_MASK;
        let allocated = off != 0 || (self.data_file && entry & COPIED != 0);
        if !self.extended {
            if entry & ZERO != 0 {
                if self.version < 3 {
                    return Err(StorageError::corrupt(format!(
                        "zero cluster entry {entry:#x} in a version 2 image"
                    )));
                }
                if off != 0 {
                    self.check_data(off)?;
                }
                return whole(Extent::Zero);
            }
            if !allocated {
                return whole(Extent::Unallocated);
            }
            self.check_data(off)?;
            return whole(Extent::Data {
                host: off + in_cluster,
            });
        }
        // Extended L2: classify each subcluster from the bitmaps.
        let alloc = bitmap & ALLOC_BITS;
        let zero = bitmap >> 32;
        if allocated {
            if alloc & zero != 0 {
                return Err(StorageError::corrupt(format!(
                    "extended L2 bitmap {bitmap:#018x} marks subclusters both allocated and zero"
                )));
            }
            self.check_data(off)?;
        } else if alloc != 0 {
            return Err(StorageError::corrupt(format!(
                "extended L2 bitmap {bitmap:#018x} allocates subclusters of an unallocated \
                 cluster"
            )));
        }
        let sc_bits = self.cluster_bits - SUBCLUSTERS.trailing_zeros();
        let class = |sc: u64| -> u8 {
            if zero >> sc & 1 != 0 {
                0
            } else if alloc >> sc & 1 != 0 {
                1
            } else {
                2
            }
        };
        let first = in_cluster >> sc_bits;
        let kind = class(first);
        let mut end = ((first + 1) << sc_bits).min(in_cluster + max);
        let mut sc = first + 1;
        while end < in_cluster + max && class(sc) == kind {
            end = ((sc + 1) << sc_bits).min(in_cluster + max);
            sc += 1;
        }
        let extent = match kind {
            0 => Extent::Zero,
            1 => Extent::Data {
                host: off + in_cluster,
            },
            _ => Extent::Unallocated,
        };
        Ok((extent, end - in_cluster))
    }

    fn check_data(&self, off: u64) -> Result<()> {
        if off % self.cluster_size != 0 {
            return Err(StorageError::corrupt(format!(
                "data cluster offset {off:#x} is not cluster-aligned"
            )));
        }
        if off >= self.data_size {
            return Err(StorageError::corrupt(format!(
                "data cluster offset {off:#x} lies past the end of the {}-byte {}",
                self.data_size,
                if self.data_file { "data file" } else { "file" }
            )));
        }
        Ok(())
    }

    fn compressed(&self, entry: u64) -> Result<Extent> {
        if self.data_file {
            return Err(StorageError::corrupt(
                "compressed cluster in an image with an external data file",
            ));
        }
        let shift = 62 - (self.cluster_bits - 8);
        let offset = entry & ((1u64 << shift) - 1);
        let sectors = ((entry >> shift) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
        let len = sectors * 512 - (offset & 511);
        if offset >= self.file_size {
            return Err(StorageError::corrupt(format!(
                "compressed cluster offset {offset:#x} lies past the end of the {}-byte file",
                self.file_size
            )));
        }
        Ok(Extent::Compressed { offset, len })
    }
}

/// A least-recently-used cache of decoded L2 tables, keyed by their host offset.
pub(crate) struct L2Cache {
    tables: RefCell<LruCache<u64, Rc<[u64]>>>,
}

impl L2Cache {
    /// A cache sized for tables of `cluster_size` bytes.
    pub fn new(cluster_size: u64) -> Self {
        let n = (L2_CACHE_BYTES / cluster_size).max(L2_CACHE_MIN_TABLES) as usize;
        let n = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self {
            tables: RefCell::new(LruCache::new(n)),
        }
    }

    /// The cached table at `offset`.
    pub fn get(&self, offset: u64) -> Option<Rc<[u64]>> {
        self.tables.borrow_mut().get(&offset).cloned()
    }

    /// Caches `table` as the one at `offset`.
    pub fn insert(&self, offset: u64, table: Rc<[u64]>) {
        self.tables.borrow_mut().put(offset, table);
    }

    /// Drops every cached table.
    pub fn clear(&self) {
        self.tables.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn geo(extended: bool) -> Geometry {
        Geometry {
            version: 3,
            cluster_bits: 16,
            cluster_size: 65536,
            l2_bits: if extended { 12 } else { 13 },
            extended,
            data_file: false,
            file_size: 1 << 30,
            data_size: 1 << 30,
        }
    }

    #[test]
    fn standard_entries() {
        let g = geo(false);
        let t = [0u64, 1, 0x20000 | COPIED, 0x20001, 0x20200];
        assert_eq!(g.map(&t, 0, 0, 10).unwrap(), (Extent::Unallocated, 10));
        assert_eq!(g.map(&t, 1, 0, 10).unwrap(), (Extent::Zero, 10));
        assert_eq!(
            g.map(&t, 2, 100, 10).unwrap(),
            (Extent::Data { host: 0x20064 }, 10)
        );
        assert_eq!(g.map(&t, 3, 0, 1).unwrap(), (Extent::Zero, 1));
        assert_eq!(g.map(&t, 4, 0, 1).unwrap_err().kind(), ErrorKind::Corrupt);
        let v2 = Geometry { version: 2, ..g };
        assert_eq!(v2.map(&t, 1, 0, 1).unwrap_err().kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn compressed_entries() {
        let g = geo(false);
        // x = 62 - 8 = 54: offset in bits 0..54, additional sectors above.
        let entry = COMPRESSED | (3u64 << 54) | 0x1_0203;
        let (e, _) = g.map(&[entry], 0, 0, 1).unwrap();
        assert_eq!(
            e,
            Extent::Compressed {
                offset: 0x1_0203,
                len: 4 * 512 - 0x003
            }
        );
    }

    #[test]
    fn extended_entries() {
        let g = geo(true);
        // Subclusters of 2 KiB: 0-1 allocated, 2 zero, rest unallocated.
        let t = [0x30000u64, 0b11 | (0b100 << 32)];
        assert_eq!(
            g.map(&t, 0, 0, 65536).unwrap(),
            (Extent::Data { host: 0x30000 }, 4096)
        );
        assert_eq!(
            g.map(&t, 0, 4096, 65536 - 4096).unwrap(),
            (Extent::Zero, 2048)
        );
        assert_eq!(g.map(&t, 0, 6144, 100).unwrap(), (Extent::Unallocated, 100));
        let both = [0x30000u64, 1 | (1 << 32)];
        assert_eq!(
            g.map(&both, 0, 0, 1).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        let unalloc = [0u64, 1];
        assert_eq!(
            g.map(&unalloc, 0, 0, 1).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
