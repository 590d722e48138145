//! [`publish`]: a snapshot file turned into a published boot state (native only): its
//! machine state compressed with zstd, the file cut into parts for HTTP, and
//! `boot-state.json` (see [`PublishedState`]).
//!
//! Works in bounded memory: the state goes through temporary files beside the output,
//! which are removed afterwards.

use super::{
    FileParser, FileWriter, Item, MachineState, PublishedDisk, PublishedPart, PublishedState,
    SnapshotHeader, StateEncoding, DEFAULT_CHUNK_BYTES, MANIFEST_NAME, PUBLISHED_FORMAT,
};
use crate::error::{Result, StorageError};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The largest part, in bytes (default 8 MiB).
    pub part_bytes: u64,
    /// The disk images the state was saved over, by disk id: their identities replace
    /// the ones the snapshot recorded (which belong to the browser that saved it).
    pub disks: Vec<PublishedDisk>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            part_bytes: 8 << 20,
            disks: Vec::new(),
        }
    }
}

/// The zstd level of published states (zstd's default: fast, and a page decompresses
/// any level as fast).
const ZSTD_LEVEL: i32 = 3;

fn io(what: impl std::fmt::Display, e: std::io::Error) -> StorageError {
    StorageError::io(what.to_string(), e)
}

/// A temporary file removed when dropped.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes into parts `stem.000`, `stem.001`, ... of at most `part` bytes each, hashing
/// everything.
struct Parts<'a> {
    dir: &'a Path,
    part: u64,
    current: Option<(BufWriter<File>, u64)>,
    done: Vec<PublishedPart>,
    hash: Sha256,
    total: u64,
}

impl Parts<'_> {
    fn name(&self, i: usize) -> String {
        format!("state.{i:03}")
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((mut w, n)) = self.current.take() {
            w.flush().map_err(|e| io("writing a part", e))?;
            let path = self.name(self.done.len());
            self.done.push(PublishedPart { path, bytes: n });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(Vec<PublishedPart>, String, u64)> {
        self.close_current()?;
        let digest: String = self
            .hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok((self.done, digest, self.total))
    }
}

impl Write for Parts<'_> {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let len = buf.len();
        self.hash.update(buf);
        self.total += len as u64;
        while !buf.is_empty() {
            if self.current.as_ref().is_some_and(|(_, n)| *n >= self.part) {
                self.close_current().map_err(std::io::Error::other)?;
            }
            if self.current.is_none() {
                let path = self.dir.join(self.name(self.done.len()));
                self.current = Some((BufWriter::new(File::create(path)?), 0));
            }
            let (w, n) = self.current.as_mut().expect("made above");
            let take = ((self.part - *n) as usize).min(buf.len());
            w.write_all(&buf[..take])?;
            *n += take as u64;
            buf = &buf[take..];
        }
        Ok(len)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.current {
            Some((w, _)) => w.flush(),
            None => Ok(()),
        }
    }
}

/// Publishes the snapshot file `snapshot` into directory `out` (created if needed):
/// `boot-state.json` and the parts `state.NNN`. Returns the manifest.
///
/// # Errors
///
/// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) /
/// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) for a damaged snapshot file,
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a disk of the
/// snapshot is not in `options.disks`, [`ErrorKind::Io`](crate::ErrorKind::Io) for
/// file errors.
pub fn publish(snapshot: &Path, out: &Path, options: &PublishOptions) -> Result<PublishedState> {
    std::fs::create_dir_all(out).map_err(|e| io(out.display(), e))?;
    let raw = Temp(out.join(".state.raw"));
    let blocks = Temp(out.join(".blocks"));
    let zst = Temp(out.join(".state.zst"));

    // 1. Read the snapshot: the raw state and the blocks into temporary files.
    let header = split(snapshot, &raw.0, &blocks.0)?;
    if header.state.encoding != StateEncoding::Raw {
        return Err(StorageError::unsupported(
            "publishing a snapshot whose state is already compressed",
        ));
    }
    // 2. Compress the state.
    {
        let source = BufReader::new(File::open(&raw.0).map_err(|e| io("the state", e))?);
        let mut target = BufWriter::new(File::create(&zst.0).map_err(|e| io("the state", e))?);
        zstd::stream::copy_encode(source, &mut target, ZSTD_LEVEL)
            .and_then(|()| target.flush())
            .map_err(|e| io("compressing the state", e))?;
    }
    drop(raw);
    // 3. The new header: the compressed state's chunks, the published disks, a content id.
    let mut content = Sha256::new();
    let mut chunks = Vec::new();
    let mut bytes = 0u64;
    for_each_chunk(&zst.0, |c| {
        content.update(c);
        chunks.push(MachineState::chunk_digest(c));
        bytes += c.len() as u64;
        Ok(())
    })?;
    let mut blocks_file = File::open(&blocks.0).map_err(|e| io("the blocks", e))?;
    std::io::copy(&mut blocks_file, &mut DigestWriter(&mut content))
        .map_err(|e| io("the blocks", e))?;
    let id: String = content.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut published = header.clone();
    published.id = format!("published-{id}");
    published.state = MachineState {
        bytes,
        chunk_size: DEFAULT_CHUNK_BYTES,
        encoding: StateEncoding::Zstd,
        chunks,
    };
    for d in &mut published.disks {
        let given = options.disks.iter().find(|p| p.id == d.id).ok_or_else(|| {
            StorageError::InvalidArgument(format!("no published image for disk {}", d.id))
        })?;
        if given.virtual_size != d.size {
            return Err(StorageError::mismatch(
                header.subject(),
                format!("the size of {}", d.id),
                d.size.to_string(),
                given.virtual_size.to_string(),
            ));
        }
        d.base = given.identity();
    }
    published.validate()?;
    // 4. The new file, cut into parts as it is written.
    for entry in std::fs::read_dir(out)
        .map_err(|e| io(out.display(), e))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("state.") || name == MANIFEST_NAME {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let mut parts = Parts {
        dir: out,
        part: options.part_bytes.max(1),
        current: None,
        done: Vec::new(),
        hash: Sha256::new(),
        total: 0,
    };
    let mut w = FileWriter::new(&published);
    parts
        .write_all(&w.start())
        .map_err(|e| io("writing a part", e))?;
    let mut index = 0u32;
    for_each_chunk(&zst.0, |c| {
        let record = w.chunk(index, c);
        index += 1;
        parts
            .write_all(&record)
            .map_err(|e| io("writing a part", e))
    })?;
    blocks_file
        .seek(SeekFrom::Start(0))
        .map_err(|e| io("the blocks", e))?;
    let mut reader = BufReader::new(blocks_file);
    let sizes: Vec<usize> = published
        .disks
        .iter()
        .map(|d| d.block_size as usize)
        .collect();
    let mut head = [0u8; 9];
    loop {
        match reader.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io("the blocks", e)),
        }
        let disk = head[0];
        let index = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
        let mut data = vec![0u8; sizes[disk as usize]];
        reader
            .read_exact(&mut data)
            .map_err(|e| io("the blocks", e))?;
        parts
            .write_all(&w.block(disk, index, &data))
            .map_err(|e| io("writing a part", e))?;
    }
    parts
        .write_all(&w.end())
        .map_err(|e| io("writing a part", e))?;
    let (parts, file_sha256, file_bytes) = parts.finish()?;
    let manifest = PublishedState {
        format: PUBLISHED_FORMAT,
        snapshot_id: published.id.clone(),
        engine: published.engine.clone(),
        profile_id: published.machine.profile_id.clone(),
        file_bytes,
        file_sha256,
        parts,
        disks: options.disks.clone(),
    };
    manifest.validate()?;
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| StorageError::InvalidArgument(format!("encoding {MANIFEST_NAME}: {e}")))?;
    std::fs::write(out.join(MANIFEST_NAME), json).map_err(|e| io(MANIFEST_NAME, e))?;
    Ok(manifest)
}

/// A writer that only hashes.
struct DigestWriter<'a>(&'a mut Sha256);

impl Write for DigestWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Calls `f` with each [`DEFAULT_CHUNK_BYTES`] piece of `path`.
fn for_each_chunk(path: &Path, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut file = BufReader::new(File::open(path).map_err(|e| io(path.display(), e))?);
    let mut buf = vec![0u8; DEFAULT_CHUNK_BYTES as usize];
    loop {
        let mut n = 0;
        while n < buf.len() {
            let got = file
                .read(&mut buf[n..])
                .map_err(|e| io(path.display(), e))?;
            if got == 0 {
                break;
            }
            n += got;
        }
        if n == 0 {
            return Ok(());
        }
        f(&buf[..n])?;
        if n < buf.len() {
            return Ok(());
        }
    }
}

/// Parses snapshot file `snapshot`, writing its raw state to `raw` and its blocks to
/// `blocks` (`disk:u8 index:u64 data` each); returns the header.
fn split(snapshot: &Path, raw: &Path, blocks: &Path) -> Result<SnapshotHeader> {
    let mut input = File::open(snapshot).map_err(|e| io(snapshot.display(), e))?;
    let mut state = BufWriter::new(File::create(raw).map_err(|e| io(raw.display(), e))?);
    let mut out = BufWriter::new(File::create(blocks).map_err(|e| io(blocks.display(), e))?);
    let mut parser = FileParser::new();
    let mut header = None;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| io(snapshot.display(), e))?;
        if n == 0 {
            break;
        }
        for item in parser.feed(&buf[..n])? {
            let w = |r: std::io::Result<()>| r.map_err(|e| io("a temporary file", e));
            match item {
                Item::Header(h) => header = Some(h),
                Item::Chunk { index, data } => {
                    let h = header.as_ref().expect("the header comes first");
                    match data {
                        Some(d) => w(state.write_all(&d))?,
                        None => {
                            let zeros = vec![0u8; h.state.chunk_len(u64::from(index)) as usize];
                            w(state.write_all(&zeros))?
                        }
                    }
                }
                Item::Block { disk, index, data } => {
                    w(out.write_all(&[disk]))?;
                    w(out.write_all(&index.to_le_bytes()))?;
                    w(out.write_all(&data))?;
                }
            }
        }
    }
    parser.finish()?;
    state.flush().map_err(|e| io("a temporary file", e))?;
    out.flush().map_err(|e| io("a temporary file", e))?;
    header.ok_or_else(|| StorageError::corrupt("a snapshot file without a header"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{DiskPoint, MachineRef, HEADER_FORMAT};
    use crate::ErrorKind;

    fn snapshot_file(dir: &Path) -> (PathBuf, Vec<u8>) {
        // A state that compresses: zeros, a repeated pattern, a non-zero tail.
        let mut state = vec![0u8; 3 << 20];
        for (i, b) in state[1 << 20..2 << 20].iter_mut().enumerate() {
            *b = (i % 7) as u8 + 1;
        }
        *state.last_mut().unwrap() = 9;
        let chunks: Vec<&[u8]> = state.chunks(1 << 20).collect();
        let header = SnapshotHeader {
            format: HEADER_FORMAT,
            id: "s1".into(),
            vm_id: "vm".into(),
            name: "at the prompt".into(),
            created_ms: 1,
            engine: "v86".into(),
            machine: MachineRef {
                profile_id: "linux-i386-pc-nographic".into(),
                digest: crate::snapshot::sha256_tag(b"m"),
            },
            state: MachineState {
                bytes: state.len() as u64,
                chunk_size: 1 << 20,
                encoding: StateEncoding::Raw,
                chunks: chunks
                    .iter()
                    .map(|c| MachineState::chunk_digest(c))
                    .collect(),
            },
            disks: vec![DiskPoint {
                id: "disk0".into(),
                base: "qcow2 65536 bytes, validator \"abc\"".into(),
                size: 65536,
                block_size: 4096,
                point: 3,
                blocks: 2,
            }],
        };
        let mut w = FileWriter::new(&header);
        let mut file = w.start();
        for (i, c) in chunks.iter().enumerate() {
            file.extend(w.chunk(i as u32, c));
        }
        file.extend(w.block(0, 1, &[1; 4096]));
        file.extend(w.block(0, 15, &[15; 4096]));
        file.extend(w.end());
        let path = dir.join("s1.qwsnap");
        std::fs::write(&path, file).unwrap();
        (path, state)
    }

    fn disk() -> PublishedDisk {
        PublishedDisk {
            id: "disk0".into(),
            format: "qcow2".into(),
            virtual_size: 65536,
            file_size: 20000,
            sha256: "a".repeat(64),
        }
    }

    #[test]
    fn a_snapshot_publishes_as_compressed_parts_that_parse_back() {
        let dir = tempfile::tempdir().unwrap();
        let (file, state) = snapshot_file(dir.path());
        let out = dir.path().join("boot-state");
        let options = PublishOptions {
            part_bytes: 4096,
            disks: vec![disk()],
        };
        let m = publish(&file, &out, &options).unwrap();
        assert!(m.snapshot_id.starts_with("published-"));
        assert!(m.parts.len() > 1);
        let names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
        let manifest =
            PublishedState::parse(&std::fs::read(out.join(MANIFEST_NAME)).unwrap()).unwrap();
        assert_eq!(manifest, m);
        let mut whole = Vec::new();
        for p in &m.parts {
            whole.extend(std::fs::read(out.join(&p.path)).unwrap());
        }
        assert_eq!(whole.len() as u64, m.file_bytes);
        assert!(
            m.file_bytes < state.len() as u64 / 10,
            "compressed: {}",
            m.file_bytes
        );
        let mut parser = FileParser::new();
        let items = parser.feed(&whole).unwrap();
        parser.finish().unwrap();
        let Item::Header(h) = &items[0] else { panic!() };
        assert_eq!(h.id, m.snapshot_id);
        assert_eq!(h.state.encoding, StateEncoding::Zstd);
        assert_eq!(h.disks[0].base, disk().identity());
        assert_eq!(h.disks[0].point, 3);
        let mut compressed = Vec::new();
        let mut blocks = Vec::new();
        for item in &items[1..] {
            match item {
                Item::Chunk { data, index } => compressed.extend(
                    data.clone()
                        .unwrap_or_else(|| vec![0; h.state.chunk_len(u64::from(*index)) as usize]),
                ),
                Item::Block { index, data, .. } => blocks.push((*index, data[0])),
                Item::Header(_) => unreachable!(),
            }
        }
        let mut decoder = ruzstd::decoding::StreamingDecoder::new(&compressed[..]).unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut decoder, &mut back).unwrap();
        assert!(back == state);
        assert_eq!(blocks, [(1, 1), (15, 15)]);
        // Publishing again (the same content) gives the same id and replaces the parts.
        let again = publish(&file, &out, &options).unwrap();
        assert_eq!(again.snapshot_id, m.snapshot_id);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (file, _) = snapshot_file(dir.path());
        let out = dir.path().join("out");
        let e = publish(&file, &out, &PublishOptions::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let mut wrong = disk();
        wrong.virtual_size = 1;
        let e = publish(
            &file,
            &out,
            &PublishOptions {
                disks: vec![wrong],
                ..PublishOptions::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Mismatch);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&file, bytes).unwrap();
        let e = publish(
            &file,
            &out,
            &PublishOptions {
                disks: vec![disk()],
                ..PublishOptions::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }
}
