//! [`Qcow2Device`]: the read path of a qcow2 image.

use super::compressed::{decode_all, ClusterCache, Decoders, Job};
use super::extensions::Extensions;
use super::header::{
    Header, AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE,
    INCOMPAT_DIRTY, V2_HEADER_LEN,
};
use super::mapping::{Extent, Geometry, L2Cache};
use super::Qcow2Info;
use crate::device::{check_range, BlockDevice};
use crate::error::{Result, StorageError};
use crate::format::{open_image_at, ImageFormat, OpenOptions};
use crate::resolver::{ImplicitKind, ImplicitOpen};
use async_trait::async_trait;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Compressed clusters whose stored bytes lie at most this far apart are fetched with one
/// read.
const COMPRESSED_GAP: u64 = 64 << 10;
/// The most bytes of compressed data fetched with one read (more if one cluster needs it).
const COMPRESSED_SPAN: u64 = 4 << 20;
/// How much of the file's start is read before the cluster size is known.
const PROBE_LEN: u64 = 512;

/// A qcow2 image as a read-only [`BlockDevice`] of its virtual size.
///
/// The L1 table is held in memory, L2 tables in an LRU cache, and the last few decompressed
/// clusters are kept for small reads. Guest-contiguous clusters that are also contiguous in
/// the file are fetched with one read, and so are runs of compressed clusters stored close
/// together, so a slow underlying device (HTTP) sees few, large reads.
///
/// ```
/// use qemuweb_storage::format::{OpenOptions, Qcow2Device};
/// use qemuweb_storage::{BlockDevice, ErrorKind, MemoryBlockDevice};
/// # futures::executor::block_on(async {
/// // A tiny hand-made image: 64 KiB clusters, 1 MiB virtual, nothing allocated.
/// let mut img = vec![0u8; 3 * 65536];
/// img[..4].copy_from_slice(b"QFI\xfb");
/// img[4..8].copy_from_slice(&3u32.to_be_bytes());
/// img[20..24].copy_from_slice(&16u32.to_be_bytes()); // cluster_bits
/// img[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes()); // virtual size
/// img[36..40].copy_from_slice(&1u32.to_be_bytes()); // l1_size
/// img[40..48].copy_from_slice(&65536u64.to_be_bytes()); // l1_table_offset
/// img[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order
/// img[100..104].copy_from_slice(&112u32.to_be_bytes()); // header_length
/// let dev = Box::new(MemoryBlockDevice::from_vec(img));
/// let disk = Qcow2Device::open(dev, &OpenOptions::default()).await.unwrap();
/// assert_eq!(disk.size(), 1 << 20);
/// assert_eq!(disk.info().cluster_size, 65536);
/// assert_eq!(disk.read_vec(4096, 3).await.unwrap(), [0, 0, 0]);
/// assert_eq!(disk.write_at(0, b"x").await.unwrap_err().kind(), ErrorKind::ReadOnly);
/// # });
/// ```
pub struct Qcow2Device {
    file: Box<dyn BlockDevice>,
    data_file: Option<Box<dyn BlockDevice>>,
    backing: Option<Box<dyn BlockDevice>>,
    info: Qcow2Info,
    geo: Geometry,
    l1: Vec<u64>,
    l2_cache: L2Cache,
    decoders: RefCell<Decoders>,
    clusters: RefCell<ClusterCache>,
    /// A reusable buffer for compressed data (taken while in use).
    scratch: RefCell<Vec<u8>>,
    closed: Cell<bool>,
}

impl std::fmt::Debug for Qcow2Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Device")
            .field("info", &self.info)
            .field("has_backing", &self.backing.is_some())
            .finish_non_exhaustive()
    }
}

/// One compressed cluster wanted by a read.
struct CompressedPiece {
    /// Where in the caller's buffer the piece goes.
    buf_start: usize,
    len: usize,
    /// Offset of the piece inside the decoded cluster.
    in_cluster: usize,
    offset: u64,
    stored_len: u64,
}

/// Reads that are being gathered so that neighbours merge into one underlying read.
#[derive(Default)]
struct Plan {
    /// Guest offset of the caller's buffer.
    base: u64,
    /// A run of guest bytes stored contiguously in the data file: (buf start, len, host).
    data: Option<(usize, usize, u64)>,
    /// A run of guest bytes read from the backing file: (buf start, len).
    backing: Option<(usize, usize)>,
    /// Compressed clusters stored close together, ascending.
    compressed: Vec<CompressedPiece>,
    compressed_span: (u64, u64),
}

impl Qcow2Device {
    /// Opens the qcow2 image on `dev`. A backing file or external data file the image names
    /// is opened through `options.resolver`, and backing files are opened (recursively) up
    /// to `options.max_chain_depth` levels deep.
    ///
    /// Fails with [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) for invalid metadata,
    /// [`Encrypted`](crate::ErrorKind::Encrypted) for encrypted images,
    /// [`Unsupported`](crate::ErrorKind::Unsupported) for unknown versions, incompatible
    /// features and compression types,
    /// [`ImplicitOpenDenied`](crate::ErrorKind::ImplicitOpenDenied) when the resolver refuses
    /// a named file and [`ChainTooDeep`](crate::ErrorKind::ChainTooDeep) for a chain deeper
    /// than the limit.
    pub async fn open(dev: Box<dyn BlockDevice>, options: &OpenOptions) -> Result<Self> {
        Self::open_at(dev, options, 0).await
    }

    /// What the header says about the image.
    pub fn info(&self) -> &Qcow2Info {
        &self.info
    }

    /// Opens the image at `depth` in a backing chain (0 for the top image).
    pub(crate) async fn open_at(
        file: Box<dyn BlockDevice>,
        options: &OpenOptions,
        depth: usize,
    ) -> Result<Self> {
        let file_size = file.size();
        let probe = file.read_vec(0, file_size.min(PROBE_LEN) as usize).await?;
        // The magic, version and cluster size are checked before a read of a whole
        // cluster (up to 2 MiB) is made.
        let cluster_size = 1u64 << Header::probe(&probe)?;
        let cluster0 = if cluster_size > probe.len() as u64 && file_size > probe.len() as u64 {
            file.read_vec(0, file_size.min(cluster_size) as usize)
                .await?
        } else {
            probe
        };
        let header = Header::parse(&cluster0)?;
        let ext_start = if header.version == 2 {
            V2_HEADER_LEN
        } else {
            header.header_length as usize
        };
        let ext_end = if header.backing_file_offset != 0 {
            header.backing_file_offset.min(cluster_size) as usize
        } else {
            cluster_size as usize
        };
        let ext = Extensions::parse(&cluster0, ext_start, ext_end)?;
        header.check(&ext, file_size)?;
        let backing_file = backing_name(&header, &cluster0)?;

        let data_file = if header.incompatible_features & INCOMPAT_DATA_FILE != 0 {
            let name = ext.data_file.clone().ok_or_else(|| {
                StorageError::unsupported(
                    "the image uses an external data file but does not name it",
                )
            })?;
            let request = ImplicitOpen {
                kind: ImplicitKind::DataFile,
                name,
                format: None,
                depth,
            };
            Some(options.resolver.open(&request).await?)
        } else {
            None
        };

        let geo = Geometry {
            version: header.version,
            cluster_bits: header.cluster_bits,
            cluster_size,
            l2_bits: header.l2_entries().trailing_zeros(),
            extended: header.extended_l2(),
            data_file: data_file.is_some(),
            file_size,
            data_size: data_file.as_ref().map_or(file_size, |d| d.size()),
        };

        // Only the L1 entries the virtual size needs are kept.
        let l1_len = header
            .min_l1_entries(geo.l2_entries())
            .unwrap_or(0)
            .min(u64::from(header.l1_size)) as usize;
        let raw_l1 = if l1_len == 0 {
            // Nothing to read (an empty disk): the offset need not even lie in the file.
            Vec::new()
        } else {
            file.read_vec(header.l1_table_offset, l1_len * 8).await?
        };
        let l1 = raw_l1
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_be_bytes(a)
            })
            .collect();

        let backing = match &backing_file {
            None => None,
            Some(_) if !options.open_backing => None,
            Some(name) => {
                if depth >= options.max_chain_depth {
                    return Err(StorageError::ChainTooDeep {
                        limit: options.max_chain_depth,
                    });
                }
                let format = match ext.backing_format.as_deref() {
                    None => None,
                    Some(f) => Some(ImageFormat::from_name(f).ok_or_else(|| {
                        StorageError::unsupported(format!(
                            "the backing file {name:?} is in the {f} format, which is not \
                             supported"
                        ))
                    })?),
                };
                let request = ImplicitOpen {
                    kind: ImplicitKind::BackingFile,
                    name: name.clone(),
                    format: ext.backing_format.clone(),
                    depth,
                };
                let dev = options.resolver.open(&request).await?;
                Some(open_image_at(dev, options, format, depth + 1).await?)
            }
        };

        let info = Qcow2Info {
            version: header.version,
            cluster_size,
            // QEMU counts whole 512-byte sectors; a stray tail is not part of the disk.
            virtual_size: header.size & !511,
            backing_file,
            backing_format: ext.backing_format.clone(),
            data_file: if data_file.is_some() {
                ext.data_file.clone()
            } else {
                None
            },
            data_file_raw: data_file.is_some()
                && header.autoclear_features & AUTOCLEAR_DATA_FILE_RAW != 0,
            compression: header.compression,
            extended_l2: header.extended_l2(),
            dirty: header.incompatible_features & INCOMPAT_DIRTY != 0,
            corrupt: header.incompatible_features & INCOMPAT_CORRUPT != 0,
            lazy_refcounts: header.compatible_features & COMPAT_LAZY_REFCOUNTS != 0,
            refcount_bits: 1 << header.refcount_order,
            snapshot_count: header.nb_snapshots,
            has_bitmaps: ext.bitmaps,
            incompatible_features: header.incompatible_features,
            compatible_features: header.compatible_features,
            autoclear_features: header.autoclear_features,
        };
        Ok(Self {
            file,
            data_file,
            backing,
            info,
            l2_cache: L2Cache::new(cluster_size),
            geo,
            l1,
            decoders: RefCell::default(),
            clusters: RefCell::new(ClusterCache::default()),
            scratch: RefCell::new(Vec::new()),
            closed: Cell::new(false),
        })
    }

    /// The L2 table for L1 index `l1_index`, or `None` if it is unallocated.
    async fn l2_table(&self, l1_index: u64) -> Result<Option<Rc<[u64]>>> {
        let entry = *self.l1.get(l1_index as usize).ok_or_else(|| {
            StorageError::corrupt(format!("L1 index {l1_index} is past the L1 table"))
        })?;
        let Some(offset) = self.geo.l2_offset(entry, l1_index)? else {
            return Ok(None);
        };
        if let Some(t) = self.l2_cache.get(offset) {
            return Ok(Some(t));
        }
        let bytes = self
            .file
            .read_vec(offset, self.geo.cluster_size as usize)
            .await?;
        let table = Geometry::decode_table(&bytes);
        self.l2_cache.insert(offset, table.clone());
        Ok(Some(table))
    }

    /// The guest byte ranges this image itself defines (as data or as zeros), ascending and
    /// merged. Every other byte reads through to the backing file (or as zeros without one).
    ///
    /// This walks the L1 and L2 tables only; no guest data is read.
    pub async fn allocated_ranges(&self) -> Result<Vec<std::ops::Range<u64>>> {
        if self.closed.get() {
            return Err(StorageError::Closed);
        }
        let cs = self.geo.cluster_size;
        let size = self.info.virtual_size;
        let per_table = self.geo.l2_entries();
        let mut out: Vec<std::ops::Range<u64>> = Vec::new();
        for l1_index in 0..self.l1.len() as u64 {
            let first_cluster = l1_index * per_table;
            if first_cluster * cs >= size {
                break;
            }
            let Some(table) = self.l2_table(l1_index).await? else {
                continue;
            };
            for i in 0..per_table {
                let start = (first_cluster + i) * cs;
                if start >= size {
                    break;
                }
                let len = cs.min(size - start);
                let mut at = 0;
                while at < len {
                    let (extent, run) = self.geo.map(&table, i, at, len - at)?;
                    if extent != Extent::Unallocated {
                        let r = start + at..start + at + run;
                        match out.last_mut() {
                            Some(last) if last.end == r.start => last.end = r.end,
                            _ => out.push(r),
                        }
                    }
                    at += run;
                }
            }
        }
        Ok(out)
    }

    /// The device data clusters are read from.
    fn data_dev(&self) -> &dyn BlockDevice {
        self.data_file.as_deref().unwrap_or(self.file.as_ref())
    }

    /// Adds one mapped piece to the plan, first carrying out whatever it cannot merge with.
    async fn push(
        &self,
        plan: &mut Plan,
        buf: &mut [u8],
        start: usize,
        len: usize,
        in_cluster: usize,
        extent: Extent,
    ) -> Result<()> {
        match extent {
            Extent::Zero => buf[start..start + len].fill(0),
            Extent::Unallocated => match &mut plan.backing {
                Some((s, l)) if *s + *l == start => *l += len,
                _ => {
                    self.flush_backing(plan, buf).await?;
                    plan.backing = Some((start, len));
                }
            },
            Extent::Data { host } => match &mut plan.data {
                Some((s, l, h)) if *s + *l == start && *h + *l as u64 == host => *l += len,
                _ => {
                    self.flush_data(plan, buf).await?;
                    plan.data = Some((start, len, host));
                }
            },
            Extent::Compressed {
                offset,
                len: stored_len,
            } => {
                if let Some(c) = self.clusters.borrow_mut().get(offset) {
                    buf[start..start + len].copy_from_slice(&c[in_cluster..in_cluster + len]);
                    return Ok(());
                }
                let end = offset.saturating_add(stored_len);
                let (lo, hi) = plan.compressed_span;
                let joins = !plan.compressed.is_empty()
                    && offset >= lo
                    && offset <= hi.saturating_add(COMPRESSED_GAP)
                    && end.max(hi) - lo <= COMPRESSED_SPAN;
                if !joins {
                    self.flush_compressed(plan, buf).await?;
                    plan.compressed_span = (offset, end);
                }
                plan.compressed_span.1 = plan.compressed_span.1.max(end);
                plan.compressed.push(CompressedPiece {
                    buf_start: start,
                    len,
                    in_cluster,
                    offset,
                    stored_len,
                });
            }
        }
        Ok(())
    }

    async fn flush(&self, plan: &mut Plan, buf: &mut [u8]) -> Result<()> {
        self.flush_data(plan, buf).await?;
        self.flush_backing(plan, buf).await?;
        self.flush_compressed(plan, buf).await
    }

    async fn flush_data(&self, plan: &mut Plan, buf: &mut [u8]) -> Result<()> {
        let Some((start, len, host)) = plan.data.take() else {
            return Ok(());
        };
        let dev = self.data_dev();
        // A cluster may end past the end of the file (QEMU reads zeros there).
        read_or_zero(dev, host, &mut buf[start..start + len]).await
    }

    async fn flush_backing(&self, plan: &mut Plan, buf: &mut [u8]) -> Result<()> {
        let Some((start, len)) = plan.backing.take() else {
            return Ok(());
        };
        let guest = plan.base + start as u64;
        let out = &mut buf[start..start + len];
        match &self.backing {
            None => out.fill(0),
            // Past the end of a shorter backing file, the image reads zeros.
            Some(b) => read_or_zero(b.as_ref(), guest, out).await?,
        }
        Ok(())
    }

    async fn flush_compressed(&self, plan: &mut Plan, buf: &mut [u8]) -> Result<()> {
        if plan.compressed.is_empty() {
            return Ok(());
        }
        let pieces = std::mem::take(&mut plan.compressed);
        let (lo, hi) = plan.compressed_span;
        // The last sector of compressed data may run past the end of the file.
        let hi = hi.min(self.geo.file_size);
        let mut span = std::mem::take(&mut *self.scratch.borrow_mut());
        span.resize((hi - lo) as usize, 0);
        let read = self.file.read_at(lo, &mut span).await;
        let result = read.and_then(|()| self.decode_pieces(&pieces, lo, &span, buf));
        *self.scratch.borrow_mut() = span;
        result
    }

    /// Decodes the compressed clusters of `pieces` out of `span` (the file's bytes from
    /// host offset `lo`) into their places in `buf`, several at once where the platform
    /// can; caches the clusters read only in part.
    fn decode_pieces(
        &self,
        pieces: &[CompressedPiece],
        lo: u64,
        span: &[u8],
        buf: &mut [u8],
    ) -> Result<()> {
        let mut order: Vec<&CompressedPiece> = pieces.iter().collect();
        order.sort_by_key(|p| p.buf_start);
        let mut jobs = Vec::with_capacity(order.len());
        let mut rest = buf;
        let mut consumed = 0;
        for p in &order {
            let from = (p.offset - lo) as usize;
            let to = (p.offset.saturating_add(p.stored_len) - lo).min(span.len() as u64) as usize;
            // Pieces are parts of the caller's buffer that do not overlap.
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(p.buf_start - consumed);
            let (out, tail) = tail.split_at_mut(p.len);
            rest = tail;
            consumed = p.buf_start + p.len;
            jobs.push(Job {
                input: &span[from..to],
                out,
                in_cluster: p.in_cluster,
                whole: None,
            });
        }
        decode_all(
            &mut self.decoders.borrow_mut(),
            self.info.compression,
            self.geo.cluster_size as usize,
            &mut jobs,
        )?;
        let mut cache = self.clusters.borrow_mut();
        for (p, job) in order.iter().zip(jobs) {
            if let Some(whole) = job.whole {
                cache.insert(p.offset, whole);
            }
        }
        Ok(())
    }
}

/// Reads `out.len()` bytes at `offset` from `dev`, with zeros for the part past its end.
async fn read_or_zero(dev: &dyn BlockDevice, offset: u64, out: &mut [u8]) -> Result<()> {
    let size = dev.size();
    let inside = size.saturating_sub(offset).min(out.len() as u64) as usize;
    let (head, tail) = out.split_at_mut(inside);
    if !head.is_empty() {
        dev.read_at(offset, head).await?;
    }
    tail.fill(0);
    Ok(())
}

/// The backing file name stored in cluster 0, if any.
fn backing_name(header: &Header, cluster0: &[u8]) -> Result<Option<String>> {
    if header.backing_file_offset == 0 || header.backing_file_size == 0 {
        return Ok(None);
    }
    let start = header.backing_file_offset as usize;
    let end = start + header.backing_file_size as usize;
    let bytes = cluster0.get(start..end).ok_or_else(|| {
        StorageError::corrupt("the backing file name lies past the end of the file")
    })?;
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| StorageError::corrupt("the backing file name is not valid UTF-8"))
}

#[async_trait(?Send)]
impl BlockDevice for Qcow2Device {
    fn size(&self) -> u64 {
        self.info.virtual_size
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.closed.get() {
            return Err(StorageError::Closed);
        }
        check_range(self.info.virtual_size, offset, buf.len())?;
        let cs = self.geo.cluster_size;
        let l2_mask = self.geo.l2_entries() - 1;
        let mut plan = Plan {
            base: offset,
            ..Plan::default()
        };
        let mut table: Option<(u64, Option<Rc<[u64]>>)> = None;
        let mut pos = 0usize;
        while pos < buf.len() {
            let guest = offset + pos as u64;
            let cluster = guest >> self.geo.cluster_bits;
            let l1_index = cluster >> self.geo.l2_bits;
            if table.as_ref().is_none_or(|(i, _)| *i != l1_index) {
                table = Some((l1_index, self.l2_table(l1_index).await?));
            }
            let in_cluster = guest & (cs - 1);
            let max = (cs - in_cluster).min((buf.len() - pos) as u64);
            let (extent, run) = match table.as_ref().and_then(|(_, t)| t.as_deref()) {
                None => (Extent::Unallocated, max),
                Some(t) => self.geo.map(t, cluster & l2_mask, in_cluster, max)?,
            };
            let run = run as usize;
            self.push(&mut plan, buf, pos, run, in_cluster as usize, extent)
                .await?;
            pos += run;
        }
        self.flush(&mut plan, buf).await
    }

    async fn write_at(&self, _offset: u64, _data: &[u8]) -> Result<()> {
        Err(StorageError::ReadOnly(
            "qcow2 images are opened read-only".into(),
        ))
    }

    async fn sync(&self) -> Result<()> {
        if self.closed.get() {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.closed.set(true);
        self.l2_cache.clear();
        self.clusters.borrow_mut().clear();
        self.scratch.borrow_mut().clear();
        self.file.close().await?;
        if let Some(d) = &self.data_file {
            d.close().await?;
        }
        if let Some(b) = &self.backing {
            b.close().await?;
        }
        Ok(())
    }
}
