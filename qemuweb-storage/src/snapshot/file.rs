//! The snapshot file: one snapshot (header, machine state, the blocks of each disk's
//! overlay point) as a single stream, written by [`FileWriter`] and read, from untrusted
//! bytes in pieces of any size, by [`FileParser`].
//!
//! Layout (integers little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `QWSNAP\r\n` |
//! | 4 | file version, `1` |
//! | 4 | header length `h` (at most [`MAX_HEADER_BYTES`]) |
//! | `h` | the [`SnapshotHeader`] as JSON |
//! | 32 | SHA-256 of the header |
//! | records | every machine-state chunk in order, then every disk's overlay blocks, disk by disk, indices strictly ascending |
//! | 1 + 32 | tag `0x7f`, SHA-256 of every byte before the tag |
//!
//! Records: `0x01 index:u32 bytes` (a chunk, as long as the header says),
//! `0x02 index:u32` (a chunk of zeros), `0x03 disk:u8 index:u64 bytes` (one overlay block
//! of the disk's block size).
//!
//! The parser checks everything as it goes (structure, bounds, order, counts, each chunk
//! against the header's digest) and the trailer's digest at the end; a reader commits
//! nothing until [`FileParser::finish`] succeeds. It buffers at most one record.

use super::header::{MachineState, SnapshotHeader, ZERO_CHUNK};
use crate::error::{Result, StorageError};
use sha2::{Digest, Sha256};

/// The first bytes of every snapshot file.
pub const FILE_MAGIC: [u8; 8] = *b"QWSNAP\r\n";
/// The file version this crate writes and reads.
pub const FILE_VERSION: u32 = 1;
/// The largest header accepted.
pub const MAX_HEADER_BYTES: u32 = 4 << 20;

const TAG_CHUNK: u8 = 0x01;
const TAG_ZERO: u8 = 0x02;
const TAG_BLOCK: u8 = 0x03;
const TAG_END: u8 = 0x7f;
const DIGEST: usize = 32;

/// Writes a snapshot file piece by piece; the caller sends each returned piece (and the
/// data it names) on, in order.
///
/// ```
/// use qemuweb_storage::snapshot::*;
/// let h = SnapshotHeader::example();
/// let mut w = FileWriter::new(&h);
/// let mut file = w.start();
/// let chunks: [&[u8]; 3] = [&[7; 1024], &[0; 1024], &[7; 952]];
/// for (i, c) in chunks.iter().enumerate() {
///     file.extend(w.chunk(i as u32, c));
/// }
/// for index in [3u64, 9] {
///     file.extend(w.block(0, index, &[index as u8; 4096]));
/// }
/// file.extend(w.end());
///
/// let mut p = FileParser::new();
/// let items = p.feed(&file).unwrap();
/// p.finish().unwrap();
/// assert!(matches!(&items[0], Item::Header(got) if *got == h));
/// assert_eq!(items.len(), 1 + 3 + 2);
/// ```
pub struct FileWriter {
    hash: Sha256,
    header: Vec<u8>,
}

impl FileWriter {
    /// A writer of the file of `header`.
    pub fn new(header: &SnapshotHeader) -> Self {
        Self {
            hash: Sha256::new(),
            header: header.to_json(),
        }
    }

    fn out(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        self.hash.update(&bytes);
        bytes
    }

    /// Magic, version and header.
    pub fn start(&mut self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + self.header.len() + DIGEST);
        b.extend_from_slice(&FILE_MAGIC);
        b.extend_from_slice(&FILE_VERSION.to_le_bytes());
        b.extend_from_slice(&(self.header.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.header);
        b.extend_from_slice(&Sha256::digest(&self.header));
        self.out(b)
    }

    /// The record prefix of machine-state chunk `index` holding `data`: a zero record
    /// when `data` is all zeros (then `data` must not be sent), else the prefix after
    /// which `data` follows. Returns whether `data` follows.
    pub fn chunk_prefix(&mut self, index: u32, data: &[u8]) -> (Vec<u8>, bool) {
        let zero = MachineState::chunk_digest(data) == ZERO_CHUNK;
        let mut b = Vec::with_capacity(5);
        b.push(if zero { TAG_ZERO } else { TAG_CHUNK });
        b.extend_from_slice(&index.to_le_bytes());
        let b = self.out(b);
        if !zero {
            self.hash.update(data);
        }
        (b, !zero)
    }

    /// The whole record of chunk `index` (prefix and data).
    pub fn chunk(&mut self, index: u32, data: &[u8]) -> Vec<u8> {
        let (mut b, follows) = self.chunk_prefix(index, data);
        if follows {
            b.extend_from_slice(data);
        }
        b
    }

    /// The record of overlay block `index` of disk number `disk` (its position in the
    /// header's list).
    pub fn block(&mut self, disk: u8, index: u64, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(10 + data.len());
        b.push(TAG_BLOCK);
        b.push(disk);
        b.extend_from_slice(&index.to_le_bytes());
        b.extend_from_slice(data);
        self.out(b)
    }

    /// The trailer.
    pub fn end(self) -> Vec<u8> {
        let digest = self.hash.finalize();
        let mut b = Vec::with_capacity(1 + DIGEST);
        b.push(TAG_END);
        b.extend_from_slice(&digest);
        b
    }
}

/// What the parser found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The header (always first).
    Header(SnapshotHeader),
    /// Machine-state chunk `index`, checked against its digest; `None` for a zero chunk.
    Chunk {
        /// Its index.
        index: u32,
        /// Its bytes.
        data: Option<Vec<u8>>,
    },
    /// An overlay block of disk number `disk`.
    Block {
        /// The disk's position in the header's list.
        disk: u8,
        /// The block index.
        index: u64,
        /// Its bytes.
        data: Vec<u8>,
    },
}

enum Stage {
    Magic,
    Header { len: usize },
    Records,
    Done,
}

/// An incremental parser of snapshot files; see the [module](self) for what it checks.
pub struct FileParser {
    stage: Stage,
    buf: Vec<u8>,
    hash: Sha256,
    header: Option<SnapshotHeader>,
    next_chunk: u64,
    /// (disk position, blocks seen, last index) of the disk whose blocks come now.
    disk: usize,
    blocks_seen: u64,
    last_block: Option<u64>,
    consumed: u64,
}

impl Default for FileParser {
    fn default() -> Self {
        Self::new()
    }
}

fn corrupt(at: u64, m: impl std::fmt::Display) -> StorageError {
    StorageError::corrupt(format!("snapshot file, byte {at}: {m}"))
}

impl FileParser {
    /// A parser at the start of a file.
    pub fn new() -> Self {
        Self {
            stage: Stage::Magic,
            buf: Vec::new(),
            hash: Sha256::new(),
            header: None,
            next_chunk: 0,
            disk: 0,
            blocks_seen: 0,
            last_block: None,
            consumed: 0,
        }
    }

    /// The header, once parsed.
    pub fn header(&self) -> Option<&SnapshotHeader> {
        self.header.as_ref()
    }

    /// Takes `n` bytes from the front of the buffer (hashing them).
    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n);
        let out = std::mem::replace(&mut self.buf, rest);
        self.hash.update(&out);
        self.consumed += n as u64;
        out
    }

    /// Parses `input` (the next bytes of the file) and returns the items it completed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) for malformed bytes (with the
    /// offset), [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) for a digest that
    /// does not match, [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) for
    /// another file version. After an error the parser refuses everything.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        match self.feed_into(input, &mut items) {
            Ok(()) => Ok(items),
            Err(e) => {
                self.stage = Stage::Done;
                self.header = None;
                self.buf = Vec::new();
                Err(e)
            }
        }
    }

    fn feed_into(&mut self, mut input: &[u8], items: &mut Vec<Item>) -> Result<()> {
        if matches!(self.stage, Stage::Done) && !input.is_empty() {
            return Err(corrupt(
                self.consumed,
                if self.header.is_some() {
                    "bytes after the end of the snapshot"
                } else {
                    "the parser stopped at an earlier error"
                },
            ));
        }
        loop {
            // Bring in only as much as the current element needs: the buffer never holds
            // more than one record.
            // What a record needs grows as its first bytes arrive (tag, then its index or
            // disk); it is complete when the bytes held are what it needs.
            let need = self.need()?;
            if self.buf.len() < need {
                let n = (need - self.buf.len()).min(input.len());
                self.buf.extend_from_slice(&input[..n]);
                input = &input[n..];
                if self.buf.len() < need {
                    return Ok(());
                }
                continue;
            }
            if let Some(item) = self.step()? {
                items.push(item);
            }
            if matches!(self.stage, Stage::Done) {
                if !input.is_empty() {
                    return Err(corrupt(
                        self.consumed,
                        "bytes after the end of the snapshot",
                    ));
                }
                return Ok(());
            }
        }
    }

    /// How many buffered bytes the next element needs.
    fn need(&self) -> Result<usize> {
        Ok(match self.stage {
            Stage::Magic => 16,
            Stage::Header { len } => len + DIGEST,
            Stage::Done => 0,
            Stage::Records => {
                let Some(&tag) = self.buf.first() else {
                    return Ok(1);
                };
                let h = self.header.as_ref().expect("records follow the header");
                match tag {
                    TAG_CHUNK => {
                        if self.buf.len() < 5 {
                            5
                        } else {
                            let index = u32::from_le_bytes(self.buf[1..5].try_into().unwrap());
                            let len = if u64::from(index) < h.state.chunks.len() as u64 {
                                h.state.chunk_len(u64::from(index)) as usize
                            } else {
                                0 // reported by step
                            };
                            5 + len
                        }
                    }
                    TAG_ZERO => 5,
                    TAG_BLOCK => {
                        if self.buf.len() < 2 {
                            2
                        } else {
                            let disk = self.buf[1] as usize;
                            let bs = h.disks.get(disk).map_or(0, |d| d.block_size as usize);
                            10 + bs
                        }
                    }
                    TAG_END => 1 + DIGEST,
                    other => {
                        return Err(corrupt(
                            self.consumed,
                            format!("unknown record tag {other:#04x}"),
                        ))
                    }
                }
            }
        })
    }

    /// Consumes the complete element in the buffer.
    fn step(&mut self) -> Result<Option<Item>> {
        let at = self.consumed;
        match self.stage {
            Stage::Magic => {
                let b = self.take(16);
                if b[..8] != FILE_MAGIC {
                    return Err(corrupt(0, "not a QemuWeb snapshot (bad magic)"));
                }
                let version = u32::from_le_bytes(b[8..12].try_into().unwrap());
                if version != FILE_VERSION {
                    return Err(StorageError::unsupported(format!(
                        "snapshot file version {version} (this build reads {FILE_VERSION})"
                    )));
                }
                let len = u32::from_le_bytes(b[12..16].try_into().unwrap());
                if len == 0 || len > MAX_HEADER_BYTES {
                    return Err(corrupt(12, format!("header length {len}")));
                }
                self.stage = Stage::Header { len: len as usize };
                Ok(None)
            }
            Stage::Header { len } => {
                let b = self.take(len + DIGEST);
                if Sha256::digest(&b[..len])[..] != b[len..] {
                    return Err(StorageError::Integrity(
                        "snapshot file: the header does not match its SHA-256".into(),
                    ));
                }
                let header = SnapshotHeader::parse(&b[..len])?;
                self.header = Some(header.clone());
                self.stage = Stage::Records;
                self.skip_empty_disks();
                Ok(Some(Item::Header(header)))
            }
            Stage::Records => self.record(at),
            Stage::Done => Ok(None),
        }
    }

    /// Moves past disks whose blocks are all seen (or that have none).
    fn skip_empty_disks(&mut self) {
        let h = self.header.as_ref().expect("after the header");
        while self.disk < h.disks.len() && self.blocks_seen == h.disks[self.disk].blocks {
            self.disk += 1;
            self.blocks_seen = 0;
            self.last_block = None;
        }
    }

    fn record(&mut self, at: u64) -> Result<Option<Item>> {
        let h = self.header.clone().expect("records follow the header");
        let chunks = h.state.chunks.len() as u64;
        let tag = self.buf[0];
        match tag {
            TAG_CHUNK | TAG_ZERO => {
                let index = u32::from_le_bytes(self.buf[1..5].try_into().unwrap());
                if u64::from(index) != self.next_chunk {
                    return Err(corrupt(
                        at,
                        if self.next_chunk >= chunks {
                            format!("chunk {index} after all {chunks} chunks")
                        } else {
                            format!("chunk {index} where chunk {} belongs", self.next_chunk)
                        },
                    ));
                }
                let rec = self.take(self.buf.len());
                let data = if tag == TAG_ZERO {
                    if h.state.chunks[index as usize] != ZERO_CHUNK {
                        return Err(StorageError::Integrity(format!(
                            "snapshot file: chunk {index} is recorded as zeros but its digest says otherwise"
                        )));
                    }
                    None
                } else {
                    let data = rec[5..].to_vec();
                    h.state.check_chunk(u64::from(index), &data)?;
                    Some(data)
                };
                self.next_chunk += 1;
                Ok(Some(Item::Chunk { index, data }))
            }
            TAG_BLOCK => {
                if self.next_chunk < chunks {
                    return Err(corrupt(
                        at,
                        format!("a disk block before chunk {} of {chunks}", self.next_chunk),
                    ));
                }
                let disk = self.buf[1] as usize;
                if disk != self.disk || disk >= h.disks.len() {
                    return Err(corrupt(
                        at,
                        format!("a block of disk {disk} where disk {} belongs", self.disk),
                    ));
                }
                let rec = self.take(self.buf.len());
                let index = u64::from_le_bytes(rec[2..10].try_into().unwrap());
                let d = &h.disks[disk];
                let max = d.size.div_ceil(u64::from(d.block_size));
                if index >= max {
                    return Err(corrupt(
                        at,
                        format!("block {index} past the end of {}", d.id),
                    ));
                }
                if self.last_block.is_some_and(|last| index <= last) {
                    return Err(corrupt(
                        at,
                        format!("block {index} of {} out of order", d.id),
                    ));
                }
                self.last_block = Some(index);
                self.blocks_seen += 1;
                self.skip_empty_disks();
                Ok(Some(Item::Block {
                    disk: disk as u8,
                    index,
                    data: rec[10..].to_vec(),
                }))
            }
            TAG_END => {
                if self.next_chunk < chunks || self.disk < h.disks.len() {
                    return Err(corrupt(at, "the end record before all chunks and blocks"));
                }
                let digest = self.hash.clone().finalize();
                let rec = self.take(1 + DIGEST);
                if rec[1..] != digest[..] {
                    return Err(StorageError::Integrity(
                        "snapshot file: its contents do not match the trailing SHA-256".into(),
                    ));
                }
                self.stage = Stage::Done;
                Ok(None)
            }
            other => Err(corrupt(at, format!("unknown record tag {other:#04x}"))),
        }
    }

    /// Checks that the file ended where it should.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) for a truncated file.
    pub fn finish(&self) -> Result<()> {
        match self.stage {
            Stage::Done if self.header.is_some() => Ok(()),
            _ => Err(StorageError::corrupt(format!(
                "snapshot file truncated after {} bytes",
                self.consumed + self.buf.len() as u64
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn file() -> (SnapshotHeader, Vec<u8>) {
        let h = SnapshotHeader::example();
        let mut w = FileWriter::new(&h);
        let mut f = w.start();
        f.extend(w.chunk(0, &[7; 1024]));
        f.extend(w.chunk(1, &[0; 1024]));
        f.extend(w.chunk(2, &[7; 952]));
        f.extend(w.block(0, 3, &[3; 4096]));
        f.extend(w.block(0, 9, &[9; 4096]));
        f.extend(w.end());
        (h, f)
    }

    fn parse_all(bytes: &[u8], piece: usize) -> Result<Vec<Item>> {
        let mut p = FileParser::new();
        let mut items = Vec::new();
        for c in bytes.chunks(piece.max(1)) {
            items.extend(p.feed(c)?);
        }
        p.finish()?;
        Ok(items)
    }

    #[test]
    fn round_trips_in_pieces_of_any_size() {
        let (h, f) = file();
        for piece in [1, 2, 7, 100, 4096, f.len()] {
            let items = parse_all(&f, piece).unwrap();
            assert_eq!(items[0], Item::Header(h.clone()));
            assert_eq!(
                items[2],
                Item::Chunk {
                    index: 1,
                    data: None
                }
            );
            assert_eq!(
                items[5],
                Item::Block {
                    disk: 0,
                    index: 9,
                    data: vec![9; 4096]
                }
            );
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let (_, f) = file();
        for cut in 0..f.len() {
            let e = parse_all(&f[..cut], 4096).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "cut at {cut}: {e}");
        }
        let mut longer = f.clone();
        longer.push(0);
        assert_eq!(
            parse_all(&longer, 100).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let (_, f) = file();
        // Every byte of the first 4 KiB and the last 100, each bit pattern once.
        let positions = (0..4096.min(f.len())).chain(f.len() - 100..f.len());
        for at in positions {
            let mut bad = f.clone();
            bad[at] ^= 0x41;
            let e = parse_all(&bad, 997).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::Corrupt | ErrorKind::Integrity | ErrorKind::Unsupported
                ),
                "byte {at}: {e}"
            );
        }
    }

    #[test]
    fn records_out_of_place_are_refused() {
        let h = SnapshotHeader::example();
        let build = |f: &dyn Fn(&mut FileWriter) -> Vec<u8>| {
            let mut w = FileWriter::new(&h);
            let mut out = w.start();
            out.extend(f(&mut w));
            out.extend(w.end());
            out
        };
        let all_chunks = |w: &mut FileWriter| {
            let mut o = w.chunk(0, &[7; 1024]);
            o.extend(w.chunk(1, &[0; 1024]));
            o.extend(w.chunk(2, &[7; 952]));
            o
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "chunk order",
                build(&|w| {
                    let mut o = w.chunk(1, &[0; 1024]);
                    o.extend(w.chunk(0, &[7; 1024]));
                    o
                }),
            ),
            ("missing blocks", build(&|w| all_chunks(w))),
            ("block before chunks", build(&|w| w.block(0, 1, &[1; 4096]))),
            (
                "blocks descending",
                build(&|w| {
                    let mut o = all_chunks(w);
                    o.extend(w.block(0, 5, &[1; 4096]));
                    o.extend(w.block(0, 4, &[1; 4096]));
                    o
                }),
            ),
            (
                "block past the disk",
                build(&|w| {
                    let mut o = all_chunks(w);
                    o.extend(w.block(0, 16, &[1; 4096]));
                    o
                }),
            ),
            (
                "unknown disk",
                build(&|w| {
                    let mut o = all_chunks(w);
                    o.extend(w.block(1, 0, &[1; 4096]));
                    o
                }),
            ),
            (
                "wrong chunk data",
                build(&|w| {
                    let mut o = w.chunk(0, &[8; 1024]);
                    o.extend(w.chunk(1, &[0; 1024]));
                    o
                }),
            ),
        ];
        for (what, bytes) in cases {
            let e = parse_all(&bytes, 333).unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Integrity),
                "{what}: {e}"
            );
        }
    }

    #[test]
    fn a_huge_header_length_is_refused_before_buffering() {
        let mut f = FILE_MAGIC.to_vec();
        f.extend(FILE_VERSION.to_le_bytes());
        f.extend(u32::MAX.to_le_bytes());
        let mut p = FileParser::new();
        assert_eq!(p.feed(&f).unwrap_err().kind(), ErrorKind::Corrupt);
        assert_eq!(p.feed(b"x").unwrap_err().kind(), ErrorKind::Corrupt);
        let mut f = FILE_MAGIC.to_vec();
        f.extend(2u32.to_le_bytes());
        f.extend(10u32.to_le_bytes());
        assert_eq!(
            FileParser::new().feed(&f).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    }
}
