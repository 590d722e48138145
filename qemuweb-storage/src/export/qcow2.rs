//! Export of a disk's changes as a standard qcow2 (version 3) overlay.
//!
//! With a backing file, the image holds exactly the clusters the overlay touched and names
//! the base image as its backing file, so natively
//! `qemu-img convert -O raw overlay.qcow2 disk.raw` (with the base beside it) gives the disk
//! the guest saw. Without one, it is a standalone image of every non-zero cluster.
//!
//! [`import`] goes the other way: the clusters a qcow2 overlay made natively
//! (`qemu-img create -b`, then `qemu-io` or a guest) are written into a disk's overlay.
//!
//! The file is written in one pass, metadata first: header cluster, L1 table, refcount
//! table, refcount blocks, L2 tables, then data clusters in guest order. Every cluster has
//! refcount 1 and its L1/L2 entries carry the COPIED flag, as QEMU expects of an image with
//! no snapshots.

use super::{check_same_size, ExportSink, ImportSummary};
use crate::cow::CowBlockDevice;
use crate::device::BlockDevice;
use crate::error::{Result, StorageError};
use crate::format::{OpenOptions, Qcow2Device};

/// The backing file an exported overlay names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingFile {
    /// The name written into the image (at most 1023 bytes), e.g. `"debian.qcow2"`.
    pub name: String,
    /// Its format, `"qcow2"` or `"raw"`, written in the backing-format header extension.
    pub format: String,
}

/// How to export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Qcow2ExportOptions {
    /// The base image, or `None` for a standalone image.
    pub backing: Option<BackingFile>,
    /// Cluster size in bytes (a power of two from 4 KiB to 2 MiB); `None` picks the overlay's
    /// block size, at least 4 KiB.
    pub cluster_size: Option<u32>,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qcow2ExportStats {
    /// Cluster size used.
    pub cluster_size: u32,
    /// Guest data clusters written.
    pub data_clusters: u64,
    /// Total image length in bytes.
    pub file_size: u64,
}

const BACKING_FORMAT_EXT: u32 = 0xe279_2aca;
const HEADER_LEN: u32 = 112;
const COPIED: u64 = 1 << 63;
/// 16-bit refcounts, as `qemu-img create` makes them.
const REFCOUNT_ORDER: u32 = 4;

/// Writes `disk`'s changes (or, without a backing file, the whole disk) to `sink` as qcow2.
///
/// ```
/// use qemuweb_storage::export::qcow2::{export, BackingFile, Qcow2ExportOptions};
/// use qemuweb_storage::{BlockDevice, CowBlockDevice, MemoryBlockDevice, MemoryOverlay};
/// # futures::executor::block_on(async {
/// let base = MemoryBlockDevice::read_only(vec![0; 1 << 20]);
/// let vm = CowBlockDevice::new(Box::new(base), Box::new(MemoryOverlay::new(4096).unwrap())).unwrap();
/// vm.write_at(65536, b"changed").await.unwrap();
/// let options = Qcow2ExportOptions {
///     backing: Some(BackingFile { name: "base.raw".into(), format: "raw".into() }),
///     cluster_size: None,
/// };
/// let mut image = Vec::new();
/// let stats = export(&vm, &options, &mut image).await.unwrap();
/// assert_eq!(&image[..4], b"QFI\xfb");
/// assert_eq!(stats.data_clusters, 1);
/// # });
/// ```
pub async fn export(
    disk: &CowBlockDevice,
    options: &Qcow2ExportOptions,
    sink: &mut dyn ExportSink,
) -> Result<Qcow2ExportStats> {
    let block_size = disk.overlay().block_size();
    let cluster_size = options.cluster_size.unwrap_or(block_size.max(4096));
    if !(4096..=2 << 20).contains(&cluster_size) || !cluster_size.is_power_of_two() {
        return Err(StorageError::InvalidArgument(format!(
            "qcow2 export cluster size {cluster_size} is not a power of two from 4 KiB to 2 MiB"
        )));
    }
    if let Some(b) = &options.backing {
        if b.name.is_empty() || b.name.len() > 1023 {
            return Err(StorageError::InvalidArgument(
                "the backing file name must be 1 to 1023 bytes".into(),
            ));
        }
    }
    let cs = u64::from(cluster_size);
    let clusters = if options.backing.is_some() {
        let mut v: Vec<u64> = disk
            .overlay()
            .block_indices()
            .into_iter()
            .map(|b| b * u64::from(block_size) / cs)
            .collect();
        v.dedup();
        v
    } else {
        nonzero_clusters(disk, cs).await?
    };
    let layout = Layout::new(disk.size(), cluster_size, &clusters);
    sink.write_all(&layout.header(options.backing.as_ref()))
        .await?;
    sink.write_all(&layout.l1_table()).await?;
    sink.write_all(&layout.refcount_table()).await?;
    sink.write_all(&layout.refcount_blocks()).await?;
    for table in layout.l2_tables() {
        sink.write_all(&table).await?;
    }
    let mut buf = vec![0u8; cluster_size as usize];
    for &c in &clusters {
        read_cluster(disk, c, &mut buf).await?;
        sink.write_all(&buf).await?;
    }
    Ok(Qcow2ExportStats {
        cluster_size,
        data_clusters: clusters.len() as u64,
        file_size: layout.total_clusters * cs,
    })
}

/// Reads guest cluster `c` as the guest sees it, zero-padded past the end of the disk.
async fn read_cluster(disk: &CowBlockDevice, c: u64, buf: &mut [u8]) -> Result<()> {
    let start = c * buf.len() as u64;
    let n = (disk.size() - start).min(buf.len() as u64) as usize;
    buf[n..].fill(0);
    disk.read_at(start, &mut buf[..n]).await
}

/// Every cluster that does not read as all zeros.
async fn nonzero_clusters(disk: &CowBlockDevice, cs: u64) -> Result<Vec<u64>> {
    let mut buf = vec![0u8; cs as usize];
    let mut out = Vec::new();
    for c in 0..disk.size().div_ceil(cs) {
        read_cluster(disk, c, &mut buf).await?;
        if buf.iter().any(|&b| b != 0) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Where every part of the image goes, in clusters.
struct Layout<'a> {
    virtual_size: u64,
    cluster_bits: u32,
    cs: u64,
    l1_entries: u64,
    l1_clusters: u64,
    rt_clusters: u64,
    rb_count: u64,
    /// The distinct L1 indices that need an L2 table, ascending.
    l2_indices: Vec<u64>,
    /// Guest cluster numbers with data, ascending.
    data: &'a [u64],
    total_clusters: u64,
}

impl<'a> Layout<'a> {
    fn new(virtual_size: u64, cluster_size: u32, data: &'a [u64]) -> Self {
        let cs = u64::from(cluster_size);
        let l2_entries = cs / 8;
        let l1_entries = virtual_size.div_ceil(cs).div_ceil(l2_entries).max(1);
        let l1_clusters = (l1_entries * 8).div_ceil(cs);
        let mut l2_indices: Vec<u64> = data.iter().map(|c| c / l2_entries).collect();
        l2_indices.dedup();
        let fixed = 1 + l1_clusters + l2_indices.len() as u64 + data.len() as u64;
        let per_rb = cs * 8 / (1 << REFCOUNT_ORDER);
        // The refcount structures count themselves: grow them until they cover everything.
        let (mut rt_clusters, mut rb_count) = (1, 1);
        loop {
            let total = fixed + rt_clusters + rb_count;
            let need_rb = total.div_ceil(per_rb);
            let need_rt = (need_rb * 8).div_ceil(cs);
            if need_rb <= rb_count && need_rt <= rt_clusters {
                break;
            }
            rb_count = rb_count.max(need_rb);
            rt_clusters = rt_clusters.max(need_rt);
        }
        Self {
            virtual_size,
            cluster_bits: cluster_size.trailing_zeros(),
            cs,
            l1_entries,
            l1_clusters,
            rt_clusters,
            rb_count,
            total_clusters: fixed + rt_clusters + rb_count,
            l2_indices,
            data,
        }
    }

    fn l1_start(&self) -> u64 {
        1
    }
    fn rt_start(&self) -> u64 {
        self.l1_start() + self.l1_clusters
    }
    fn rb_start(&self) -> u64 {
        self.rt_start() + self.rt_clusters
    }
    fn l2_start(&self) -> u64 {
        self.rb_start() + self.rb_count
    }
    fn data_start(&self) -> u64 {
        self.l2_start() + self.l2_indices.len() as u64
    }

    fn header(&self, backing: Option<&BackingFile>) -> Vec<u8> {
        let mut h = vec![0u8; self.cs as usize];
        let mut ext = Vec::new();
        if let Some(b) = backing {
            ext.extend_from_slice(&BACKING_FORMAT_EXT.to_be_bytes());
            ext.extend_from_slice(&(b.format.len() as u32).to_be_bytes());
            ext.extend_from_slice(b.format.as_bytes());
            ext.resize(ext.len().next_multiple_of(8), 0);
        }
        ext.extend_from_slice(&[0; 8]); // end of extensions
        let ext_start = HEADER_LEN as usize;
        let name_at = ext_start + ext.len();
        h[ext_start..name_at].copy_from_slice(&ext);
        let (name_offset, name_len) = match backing {
            Some(b) => {
                h[name_at..name_at + b.name.len()].copy_from_slice(b.name.as_bytes());
                (name_at as u64, b.name.len() as u32)
            }
            None => (0, 0),
        };
        let put32 =
            |h: &mut [u8], at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_be_bytes());
        let put64 =
            |h: &mut [u8], at: usize, v: u64| h[at..at + 8].copy_from_slice(&v.to_be_bytes());
        h[..4].copy_from_slice(b"QFI\xfb");
        put32(&mut h, 4, 3);
        put64(&mut h, 8, name_offset);
        put32(&mut h, 16, name_len);
        put32(&mut h, 20, self.cluster_bits);
        put64(&mut h, 24, self.virtual_size);
        put32(&mut h, 32, 0); // no encryption
        put32(&mut h, 36, self.l1_entries as u32);
        put64(&mut h, 40, self.l1_start() * self.cs);
        put64(&mut h, 48, self.rt_start() * self.cs);
        put32(&mut h, 56, self.rt_clusters as u32);
        // nb_snapshots, snapshots_offset and the three feature bitmaps stay zero.
        put32(&mut h, 96, REFCOUNT_ORDER);
        put32(&mut h, 100, HEADER_LEN);
        // Byte 104: compression type 0 (zlib); 105..112 padding.
        h
    }

    fn l1_table(&self) -> Vec<u8> {
        let mut t = vec![0u8; (self.l1_clusters * self.cs) as usize];
        for (i, &l1) in self.l2_indices.iter().enumerate() {
            let entry = ((self.l2_start() + i as u64) * self.cs) | COPIED;
            t[l1 as usize * 8..l1 as usize * 8 + 8].copy_from_slice(&entry.to_be_bytes());
        }
        t
    }

    fn refcount_table(&self) -> Vec<u8> {
        let mut t = vec![0u8; (self.rt_clusters * self.cs) as usize];
        for i in 0..self.rb_count {
            let at = i as usize * 8;
            t[at..at + 8].copy_from_slice(&((self.rb_start() + i) * self.cs).to_be_bytes());
        }
        t
    }

    fn refcount_blocks(&self) -> Vec<u8> {
        let mut t = vec![0u8; (self.rb_count * self.cs) as usize];
        // Clusters 0..total_clusters are all in use, once each: 16-bit big-endian 1s.
        for c in 0..self.total_clusters as usize {
            t[c * 2 + 1] = 1;
        }
        t
    }

    fn l2_tables(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        let l2_entries = self.cs / 8;
        let mut next_data = self.data_start();
        let mut d = 0;
        self.l2_indices.iter().map(move |&l1| {
            let mut t = vec![0u8; self.cs as usize];
            while d < self.data.len() && self.data[d] / l2_entries == l1 {
                let slot = (self.data[d] % l2_entries) as usize * 8;
                t[slot..slot + 8].copy_from_slice(&((next_data * self.cs) | COPIED).to_be_bytes());
                next_data += 1;
                d += 1;
            }
            t
        })
    }
}

/// Largest piece read from the overlay image at once during an import.
const IMPORT_CHUNK: u64 = 4 << 20;

/// Writes the guest data a qcow2 overlay defines (its own clusters, not its backing file's)
/// into `disk`'s overlay, so that `disk` then reads as the overlay over `disk`'s base.
///
/// The overlay's backing file is never opened: only the clusters the overlay itself
/// allocates are read, so the backing file may be absent and the name it gives is not
/// trusted. External data files are refused. The whole overlay is read and checked once before
/// anything is written, so a damaged image changes nothing.
pub async fn import(image: Box<dyn BlockDevice>, disk: &CowBlockDevice) -> Result<ImportSummary> {
    // The default resolver refuses external data files; the backing file is not needed.
    let options = OpenOptions {
        open_backing: false,
        ..OpenOptions::default()
    };
    let overlay = Qcow2Device::open(image, &options).await?;
    check_same_size("the qcow2 overlay", overlay.size(), disk.size())?;
    let ranges = overlay.allocated_ranges().await?;
    let mut buf = Vec::new();
    // Pass 1 reads (and so validates) everything; pass 2 writes.
    for write in [false, true] {
        for r in &ranges {
            let mut at = r.start;
            while at < r.end {
                let n = (r.end - at).min(IMPORT_CHUNK) as usize;
                buf.resize(n, 0);
                overlay.read_at(at, &mut buf).await?;
                if write {
                    disk.write_at(at, &buf).await?;
                }
                at += n as u64;
            }
        }
    }
    overlay.close().await?;
    Ok(ImportSummary {
        bytes: ranges.iter().map(|r| r.end - r.start).sum(),
        ranges: ranges.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcount_structures_cover_themselves() {
        // Small clusters and many data clusters force several refcount blocks.
        let data: Vec<u64> = (0..5000).collect();
        let l = Layout::new(5000 * 4096, 4096, &data);
        let per_rb = 4096 * 8 / 16;
        assert!(l.rb_count * per_rb >= l.total_clusters);
        assert!(l.rt_clusters * 4096 / 8 >= l.rb_count);
        assert_eq!(l.total_clusters, l.data_start() + 5000);
        assert_eq!(l.l2_tables().count(), l.l2_indices.len());
    }
}
