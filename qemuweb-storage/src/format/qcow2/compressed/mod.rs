//! Compressed clusters: zlib (raw deflate) and zstd decoding, several clusters at once, and
//! a cache of the clusters decoded last.
//!
//! The logic (what a valid cluster is, how a read's clusters are cut out of one span of the
//! file, the cache) is here once. Two thin adapters choose per platform:
//!
//! - the zstd decoder: the reference C library (the `zstd` crate, `zstd_c`) natively, and
//!   the pure-Rust `ruzstd` (`zstd_rust`) on wasm32, where no C library is at hand; the
//!   native tests build both and hold them to the same results;
//! - how a read's clusters are decoded ([`decode_all`]): on every core natively (scoped
//!   threads, one decoder each), one after the other on wasm32 (a page's worker has one
//!   thread).
//!
//! zlib (raw deflate) is `zlib-rs` on both.

use super::header::Compression;
use crate::error::{Result, StorageError};
use std::rc::Rc;
use zlib_rs::{Inflate, InflateFlush, Status};

#[cfg(not(target_arch = "wasm32"))]
mod zstd_c;
#[cfg(any(target_arch = "wasm32", test))]
mod zstd_rust;

#[cfg(not(target_arch = "wasm32"))]
use zstd_c::ZstdDecoder;
#[cfg(target_arch = "wasm32")]
use zstd_rust::ZstdDecoder;

/// The largest zstd window `ruzstd` accepts: far above what QEMU writes for a 2 MiB cluster,
/// and a bound on what a hostile frame can make the decoder allocate.
#[cfg(any(target_arch = "wasm32", test))]
const MAX_ZSTD_WINDOW: u64 = 8 << 20;
/// How many decoded clusters [`ClusterCache`] keeps.
const CACHED_CLUSTERS: usize = 4;
/// The most decoders (threads) a read uses natively.
#[cfg(not(target_arch = "wasm32"))]
const MAX_THREADS: usize = 8;
/// The fewest clusters per thread worth a thread of their own.
#[cfg(not(target_arch = "wasm32"))]
const CLUSTERS_PER_THREAD: usize = 2;

/// What a zstd decoder of either adapter does.
trait DecodeZstd {
    /// Decodes the frame at the start of `input` (padding may follow it) into `out`, which
    /// must come out exactly full.
    fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<()>;
}

/// The error of a zstd frame that is not valid.
fn bad_zstd(what: impl std::fmt::Display) -> StorageError {
    StorageError::corrupt(format!("compressed cluster is not valid zstd data: {what}"))
}

/// The error of a zstd frame that decodes to more than the cluster.
#[cfg(any(target_arch = "wasm32", test))]
fn zstd_too_long(cluster: usize) -> StorageError {
    StorageError::corrupt(format!(
        "compressed cluster decodes to more than the cluster size {cluster}"
    ))
}

/// The error of a zstd frame that decodes to less than the cluster.
fn zstd_too_short(written: usize, cluster: usize) -> StorageError {
    StorageError::corrupt(format!(
        "compressed cluster decodes to {written} bytes, not the cluster size {cluster}"
    ))
}

/// Decodes compressed clusters, reusing its decoder state between clusters.
pub(crate) struct Decompressor {
    inflate: Inflate,
    zstd: ZstdDecoder,
}

impl Decompressor {
    /// A decoder for either compression type.
    pub fn new() -> Result<Self> {
        Ok(Self {
            // Raw deflate with any window up to 32 KiB (QEMU writes 4 KiB windows).
            inflate: Inflate::new(false, 15),
            zstd: ZstdDecoder::new()?,
        })
    }

    /// Decodes `input` (the stored bytes of one compressed cluster, possibly followed by
    /// padding) into `out`, which must come out exactly full.
    pub fn decode(&mut self, kind: Compression, input: &[u8], out: &mut [u8]) -> Result<()> {
        match kind {
            Compression::Zlib => inflate(&mut self.inflate, input, out),
            Compression::Zstd => self.zstd.decode(input, out),
        }
    }
}

fn inflate(state: &mut Inflate, input: &[u8], out: &mut [u8]) -> Result<()> {
    state.reset(false);
    let status = state.decompress(input, out, InflateFlush::Finish);
    let written = state.total_out() as usize;
    // Like QEMU, accept a stream that fills the cluster whether or not it ends there.
    match status {
        Ok(Status::StreamEnd | Status::Ok | Status::BufError) if written == out.len() => Ok(()),
        Ok(_) => Err(StorageError::corrupt(format!(
            "compressed cluster inflates to {written} bytes, not the cluster size {}",
            out.len()
        ))),
        Err(e) => Err(StorageError::corrupt(format!(
            "compressed cluster is not valid deflate data ({}: {e:?} after {written} bytes)",
            state.error_message().unwrap_or("invalid")
        ))),
    }
}

/// One compressed cluster a read needs.
pub(crate) struct Job<'a> {
    /// Its stored bytes (possibly followed by others).
    pub input: &'a [u8],
    /// Where the wanted part of it goes.
    pub out: &'a mut [u8],
    /// The offset of that part in the decoded cluster.
    pub in_cluster: usize,
    /// For a part smaller than the cluster: the whole decoded cluster, for the cache.
    pub whole: Option<Rc<[u8]>>,
}

/// Decodes `job` with `dec`; returns the whole cluster when only a part was wanted.
fn decode_job(
    dec: &mut Decompressor,
    kind: Compression,
    cluster_size: usize,
    input: &[u8],
    out: &mut [u8],
    in_cluster: usize,
) -> Result<Option<Vec<u8>>> {
    if out.len() == cluster_size {
        dec.decode(kind, input, out)?;
        return Ok(None);
    }
    let mut cluster = vec![0u8; cluster_size];
    dec.decode(kind, input, &mut cluster)?;
    out.copy_from_slice(&cluster[in_cluster..in_cluster + out.len()]);
    Ok(Some(cluster))
}

/// A decoder per thread a read may use (one on wasm32), made as they are first needed.
#[derive(Default)]
pub(crate) struct Decoders(Vec<Decompressor>);

impl Decoders {
    /// At least `n` decoders.
    fn at_least(&mut self, n: usize) -> Result<&mut [Decompressor]> {
        while self.0.len() < n {
            self.0.push(Decompressor::new()?);
        }
        Ok(&mut self.0[..n])
    }
}

/// Decodes every job (`cluster_size`-byte clusters compressed with `kind`): natively on
/// several threads, each with its own decoder, on wasm32 one after the other. The first
/// failure, in job order, is returned.
pub(crate) fn decode_all(
    decoders: &mut Decoders,
    kind: Compression,
    cluster_size: usize,
    jobs: &mut [Job<'_>],
) -> Result<()> {
    let run = |dec: &mut Decompressor, jobs: &mut [Job<'_>]| -> Result<()> {
        for job in jobs {
            let whole = decode_job(dec, kind, cluster_size, job.input, job.out, job.in_cluster)?;
            job.whole = whole.map(Rc::from);
            // `Rc` is not `Send`: the threads below hand back plain vectors instead.
        }
        Ok(())
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores
            .min(MAX_THREADS)
            .min(jobs.len() / CLUSTERS_PER_THREAD)
            .max(1);
        if threads > 1 {
            return decode_parallel(decoders.at_least(threads)?, kind, cluster_size, jobs);
        }
    }
    run(&mut decoders.at_least(1)?[0], jobs)
}

/// Decodes `jobs` on `decoders.len()` scoped threads, each a contiguous share of them.
#[cfg(not(target_arch = "wasm32"))]
fn decode_parallel(
    decoders: &mut [Decompressor],
    kind: Compression,
    cluster_size: usize,
    jobs: &mut [Job<'_>],
) -> Result<()> {
    let per = jobs.len().div_ceil(decoders.len());
    let results: Vec<Result<Vec<Option<Vec<u8>>>>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks_mut(per)
            .zip(decoders.iter_mut())
            .map(|(share, dec)| {
                let share: Vec<(&[u8], &mut [u8], usize)> = share
                    .iter_mut()
                    .map(|j| (j.input, &mut *j.out, j.in_cluster))
                    .collect();
                s.spawn(move || {
                    share
                        .into_iter()
                        .map(|(input, out, at)| decode_job(dec, kind, cluster_size, input, out, at))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(StorageError::corrupt("a decoder thread panicked")))
            })
            .collect()
    });
    let mut wholes = Vec::with_capacity(jobs.len());
    for r in results {
        wholes.extend(r?);
    }
    for (job, whole) in jobs.iter_mut().zip(wholes) {
        job.whole = whole.map(Rc::from);
    }
    Ok(())
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
        let mut d = Decompressor::new().unwrap();
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

    /// Both zstd adapters agree on valid frames, padded frames and every kind of bad one.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn zstd_adapters_agree() {
        let cluster: Vec<u8> = (0..65536u32).map(|i| (i / 7 % 253) as u8).collect();
        let frame = ruzstd::encoding::compress_to_vec(
            &cluster[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0x5a; 511]);
        let mut short = frame.clone();
        short.truncate(frame.len() / 2);
        let half = ruzstd::encoding::compress_to_vec(
            &cluster[..32768],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let cases: [(&str, &[u8], usize, bool); 6] = [
            ("exact", &frame, 65536, true),
            ("padded", &padded, 65536, true),
            ("truncated", &short, 65536, false),
            ("decodes short", &half, 65536, false),
            ("decodes long", &frame, 32768, false),
            ("garbage", &[0xff; 64], 65536, false),
        ];
        let mut c = zstd_c::ZstdDecoder::new().unwrap();
        let mut rust = zstd_rust::ZstdDecoder::new().unwrap();
        for (name, input, len, ok) in cases {
            let mut a = vec![0u8; len];
            let mut b = vec![0u8; len];
            let ra = c.decode(input, &mut a);
            let rb = rust.decode(input, &mut b);
            assert_eq!(ra.is_ok(), ok, "{name}: C {ra:?}");
            assert_eq!(rb.is_ok(), ok, "{name}: Rust {rb:?}");
            if ok {
                assert_eq!(a, cluster, "{name}");
                assert_eq!(b, cluster, "{name}");
            } else {
                assert_eq!(ra.unwrap_err().kind(), ErrorKind::Corrupt, "{name}");
                assert_eq!(rb.unwrap_err().kind(), ErrorKind::Corrupt, "{name}");
            }
        }
    }

    #[test]
    fn many_jobs_decode_on_several_threads_in_order() {
        let clusters: Vec<Vec<u8>> = (0..40u8)
            .map(|k| (0..4096u32).map(|i| (i as u8).wrapping_mul(k)).collect())
            .collect();
        let packed: Vec<Vec<u8>> = clusters
            .iter()
            .map(|c| miniz_oxide::deflate::compress_to_vec(c, 1))
            .collect();
        let mut out = vec![0u8; 40 * 4096 - 100];
        let mut rest = &mut out[..];
        let mut jobs = Vec::new();
        for (k, p) in packed.iter().enumerate() {
            // The last job wants only the start of its cluster.
            let len = if k == 39 { 4096 - 100 } else { 4096 };
            let (here, tail) = rest.split_at_mut(len);
            rest = tail;
            jobs.push(Job {
                input: p,
                out: here,
                in_cluster: 0,
                whole: None,
            });
        }
        let mut decoders = Decoders::default();
        decode_all(&mut decoders, Compression::Zlib, 4096, &mut jobs).unwrap();
        let whole = jobs[39].whole.clone().unwrap();
        assert!(jobs[..39].iter().all(|j| j.whole.is_none()));
        assert_eq!(&whole[..], &clusters[39][..]);
        let want: Vec<u8> = clusters.concat();
        assert_eq!(out[..], want[..40 * 4096 - 100]);
        // A bad cluster fails the read.
        let garbage = [0xffu8; 64];
        let mut out = vec![0u8; 8 * 4096];
        let mut jobs: Vec<Job> = out
            .chunks_mut(4096)
            .enumerate()
            .map(|(k, o)| Job {
                input: if k == 5 { &garbage[..] } else { &packed[k][..] },
                out: o,
                in_cluster: 0,
                whole: None,
            })
            .collect();
        let e = decode_all(&mut decoders, Compression::Zlib, 4096, &mut jobs).unwrap_err();
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
