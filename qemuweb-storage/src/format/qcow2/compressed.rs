//! Compressed clusters: zlib (raw deflate) and zstd decoding, and a cache of the clusters
//! decoded last.

use super::header::Compression;
use crate::error::{Result, StorageError};
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use std::io::Read;
use std::rc::Rc;

/// The largest zstd window accepted: far above what QEMU writes for a 2 MiB cluster, and a
/// bound on what a hostile frame can make the decoder allocate.
const MAX_ZSTD_WINDOW: u64 = 8 << 20;
/// How many decoded clusters [`ClusterCache`] keeps.
const CACHED_CLUSTERS: usize = 4;

/// Decodes compressed clusters, reusing its decoder state between clusters.
pub(crate) struct Decompressor {
    inflate: Box<DecompressorOxide>,
    zstd: FrameDecoder,
}

impl Decompressor {
    /// A decoder for either compression type.
    pub fn new() -> Self {
        let mut zstd = FrameDecoder::new();
        zstd.set_max_window_size(MAX_ZSTD_WINDOW);
        Self {
            inflate: Box::default(),
            zstd,
        }
    }

    /// Decodes `input` (the stored bytes of one compressed cluster, possibly followed by
    /// padding) into `out`, which must come out exactly full.
    pub fn decode(&mut self, kind: Compression, input: &[u8], out: &mut [u8]) -> Result<()> {
        match kind {
            Compression::Zlib => self.inflate(input, out),
            Compression::Zstd => self.unzstd(input, out),
        }
    }

    fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> Result<()> {
        self.inflate.init();
        let (status, _, written) = decompress(
            &mut self.inflate,
            input,
            out,
            0,
            inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
        );
        // Like QEMU, accept a stream that fills the cluster whether or not it ends there.
        match status {
            TINFLStatus::Done | TINFLStatus::HasMoreOutput | TINFLStatus::NeedsMoreInput
                if written == out.len() =>
            {
                Ok(())
            }
            TINFLStatus::Done | TINFLStatus::NeedsMoreInput => Err(StorageError::corrupt(format!(
                "compressed cluster inflates to {written} bytes, not the cluster size {}",
                out.len()
            ))),
            other => Err(StorageError::corrupt(format!(
                "compressed cluster is not valid deflate data ({other:?} after {written} bytes)"
            ))),
        }
    }

    fn unzstd(&mut self, input: &[u8], out: &mut [u8]) -> Result<()> {
        let bad = |what: String| {
            StorageError::corrupt(format!("compressed cluster is not valid zstd data: {what}"))
        };
        let mut src = input;
        self.zstd.reset(&mut src).map_err(|e| bad(e.to_string()))?;
        let mut written = 0;
        loop {
            let want = out.len() - written + 1;
            let progress = (
                self.zstd.bytes_read_from_source(),
                self.zstd.blocks_decoded(),
            );
            self.zstd
                .decode_blocks(&mut src, BlockDecodingStrategy::UptoBytes(want))
                .map_err(|e| bad(e.to_string()))?;
            loop {
                let n = self
                    .zstd
                    .read(&mut out[written..])
                    .map_err(|e| bad(e.to_string()))?;
                if n == 0 {
                    break;
                }
                written += n;
            }
            if self.zstd.can_collect() > 0 {
                return Err(StorageError::corrupt(format!(
                    "compressed cluster decodes to more than the cluster size {}",
                    out.len()
                )));
            }
            if self.zstd.is_finished() {
                break;
            }
            if progress
                == (
                    self.zstd.bytes_read_from_source(),
                    self.zstd.blocks_decoded(),
                )
            {
                return Err(bad("the frame is truncated".into()));
            }
        }
        if written != out.len() {
            return Err(StorageError::corrupt(format!(
                "compressed cluster decodes to {written} bytes, not the cluster size {}",
                out.len()
            )));
        }
        Ok(())
    }
}

/// The few clusters decoded last, for reads smaller than a cluster.
#[derive(Default)]
pub(crate) struct ClusterCache {
    /// Most recently used last; keyed by the compressed cluster's host offset.
    entries: Vec<(u64, Rc<[u8]>)>,
}

impl ClusterCache {
    /// The decoded cluster stored at host offset `key`, if cached.
    pub fn get(&mut self, key: u64) -> Option<Rc<[u8]>> {
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        let e = self.entries.remove(i);
        let data = e.1.clone();
        self.entries.push(e);
        Some(data)
    }

    /// Caches the decoded cluster stored at `key`.
    pub fn insert(&mut self, key: u64, data: Rc<[u8]>) {
        self.entries.retain(|(k, _)| *k != key);
        if self.entries.len() >= CACHED_CLUSTERS {
            self.entries.remove(0);
        }
        self.entries.push((key, data));
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn inflate_exact_cluster() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let packed = miniz_oxide::deflate::compress_to_vec(&data, 6);
        let mut d = Decompressor::new();
        let mut out = vec![0u8; 4096];
        let mut padded = packed.clone();
        padded.extend_from_slice(&[0xee; 300]);
        d.decode(Compression::Zlib, &padded, &mut out).unwrap();
        assert_eq!(out, data);
        // Too short: the stream ends before the cluster is full.
        let mut big = vec![0u8; 8192];
        let e = d.decode(Compression::Zlib, &packed, &mut big).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        // Garbage.
        let e = d
            .decode(Compression::Zlib, &[0xff; 64], &mut out)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let e = d.decode(Compression::Zstd, &packed, &mut out).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn cache_keeps_the_last_clusters() {
        let mut c = ClusterCache::default();
        for k in 0..6u64 {
            c.insert(k, Rc::from(vec![k as u8]));
        }
        assert!(c.get(0).is_none());
        assert_eq!(&*c.get(5).unwrap(), &[5]);
        c.clear();
        assert!(c.get(5).is_none());
    }
}
