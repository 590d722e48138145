//! [`FileOverlay`]: a VM disk's changed blocks kept in one native file (not on `wasm32`;
//! see `IndexedDbOverlay` there).
//!
//! The file is an append-only log: a 16-byte header (magic `QWFOVL01`, block size, zero
//! padding), then records of `index` (u64 LE), the block's bytes, and the first 16 bytes of
//! the SHA-256 of both. A later record of a block supersedes earlier ones. On open the log
//! is replayed; a record cut short or damaged at the end (a crash mid-write) is dropped
//! and the file truncated there, so a block is always its old or its new content.
//! [`Overlay::sync`] makes appended records durable (`fdatasync`).

use crate::cow::{check_block_len, check_block_size, Overlay};
use crate::error::{Result, StorageError};
use crate::file::{read_exact_at, write_all_at};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const MAGIC: [u8; 8] = *b"QWFOVL01";
const HEADER_LEN: u64 = 16;
const DIGEST_LEN: usize = 16;

/// A persistent overlay in one native file.
///
/// ```
/// use qemuweb_storage::{FileOverlay, Overlay};
/// # futures::executor::block_on(async {
/// let path = std::env::temp_dir().join(format!("qemuweb-doc-{}.ovl", std::process::id()));
/// let overlay = FileOverlay::create(&path, 4096).unwrap();
/// overlay.write_block(9, &[7; 4096]).await.unwrap();
/// overlay.sync().await.unwrap();
/// drop(overlay);
/// let again = FileOverlay::open(&path).unwrap();
/// assert_eq!(again.block_indices(), [9]);
/// # std::fs::remove_file(&path).unwrap();
/// # });
/// ```
#[derive(Debug)]
pub struct FileOverlay {
    path: PathBuf,
    block_size: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    /// Where each block's latest data starts in the file.
    blocks: BTreeMap<u64, u64>,
    /// The end of the last whole record: where the next one goes.
    end: u64,
}

fn record_len(block_size: u32) -> u64 {
    8 + u64::from(block_size) + DIGEST_LEN as u64
}

fn digest(index: u64, data: &[u8]) -> [u8; DIGEST_LEN] {
    let mut h = Sha256::new();
    h.update(index.to_le_bytes());
    h.update(data);
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(&h.finalize()[..DIGEST_LEN]);
    out
}

impl FileOverlay {
    /// Creates (or empties) the overlay file at `path` for `block_size`-byte blocks.
    pub fn create(path: impl AsRef<Path>, block_size: u32) -> Result<Self> {
        check_block_size(block_size)?;
        let path = path.as_ref();
        let io = |e| StorageError::io(format!("creating {}", path.display()), e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io)?;
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&block_size.to_le_bytes());
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            block_size,
            state: Mutex::new(State {
                file,
                blocks: BTreeMap::new(),
                end: HEADER_LEN,
            }),
        })
    }

    /// Opens an existing overlay file, replaying its log. A damaged or partial last
    /// record is dropped; damage anywhere else is an
    /// [`ErrorKind::Integrity`](crate::ErrorKind::Integrity) error.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |e| StorageError::io(format!("opening {}", path.display()), e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact(&mut header).map_err(|_| {
            StorageError::Integrity(format!("{} is not a QemuWeb overlay file", path.display()))
        })?;
        if header[..8] != MAGIC {
            return Err(StorageError::Integrity(format!(
                "{} is not a QemuWeb overlay file (bad magic)",
                path.display()
            )));
        }
        let block_size = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        check_block_size(block_size)
            .map_err(|_| StorageError::Integrity(format!("bad block size {block_size}")))?;
        let size = file.metadata().map_err(io)?.len();
        let rec = record_len(block_size);
        let mut blocks = BTreeMap::new();
        let mut buf = vec![0u8; rec as usize];
        let mut at = HEADER_LEN;
        file.seek(SeekFrom::Start(at)).map_err(io)?;
        while at + rec <= size {
            file.read_exact(&mut buf).map_err(io)?;
            let index = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
            let data = &buf[8..8 + block_size as usize];
            if digest(index, data)[..] != buf[8 + block_size as usize..] {
                if at + rec == size {
                    break; // A torn last record: the crash happened while writing it.
                }
                return Err(StorageError::Integrity(format!(
                    "{}: the record at byte {at} is damaged",
                    path.display()
                )));
            }
            blocks.insert(index, at + 8);
            at += rec;
        }
        // Drop a partial or torn tail so the next record starts on a boundary.
        if at != size {
            file.set_len(at).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            block_size,
            state: Mutex::new(State {
                file,
                blocks,
                end: at,
            }),
        })
    }

    /// The overlay file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn io(&self, what: &str, e: std::io::Error) -> StorageError {
        StorageError::io(format!("{what} {}", self.path.display()), e)
    }
}

#[async_trait(?Send)]
impl Overlay for FileOverlay {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn contains(&self, index: u64) -> bool {
        self.lock().blocks.contains_key(&index)
    }

    fn block_indices(&self) -> Vec<u64> {
        self.lock().blocks.keys().copied().collect()
    }

    async fn read_block(&self, index: u64, buf: &mut [u8]) -> Result<bool> {
        check_block_len(self.block_size, buf.len())?;
        let state = self.lock();
        let Some(&at) = state.blocks.get(&index) else {
            return Ok(false);
        };
        read_exact_at(&state.file, buf, at).map_err(|e| self.io("reading", e))?;
        Ok(true)
    }

    async fn write_block(&self, index: u64, data: &[u8]) -> Result<()> {
        check_block_len(self.block_size, data.len())?;
        let mut record = Vec::with_capacity(record_len(self.block_size) as usize);
        record.extend_from_slice(&index.to_le_bytes());
        record.extend_from_slice(data);
        record.extend_from_slice(&digest(index, data));
        let mut state = self.lock();
        let at = state.end;
        write_all_at(&state.file, &record, at).map_err(|e| self.io("writing", e))?;
        state.end = at + record.len() as u64;
        state.blocks.insert(index, at + 8);
        Ok(())
    }

    async fn sync(&self) -> Result<()> {
        self.lock()
            .file
            .sync_data()
            .map_err(|e| self.io("syncing", e))
    }

    async fn clear(&self) -> Result<()> {
        let mut state = self.lock();
        state
            .file
            .set_len(HEADER_LEN)
            .and_then(|()| state.file.sync_all())
            .map_err(|e| self.io("clearing", e))?;
        state.blocks.clear();
        state.end = HEADER_LEN;
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.sync().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use futures::executor::block_on;

    /// A path in a private directory of its own (mode 0700, unpredictable name), which
    /// goes away with the returned guard.
    fn temp(name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("qemuweb-fovl-")
            .tempdir()
            .unwrap();
        let path = dir.path().join(name);
        (dir, path)
    }

    #[test]
    fn replays_the_log_and_keeps_the_latest_block() {
        block_on(async {
            let (_dir, p) = temp("replay");
            let o = FileOverlay::create(&p, 512).unwrap();
            o.write_block(3, &[1; 512]).await.unwrap();
            o.write_block(1, &[2; 512]).await.unwrap();
            o.write_block(3, &[3; 512]).await.unwrap();
            o.close().await.unwrap();
            drop(o);
            let o = FileOverlay::open(&p).unwrap();
            assert_eq!(o.block_indices(), [1, 3]);
            let mut b = [0u8; 512];
            assert!(o.read_block(3, &mut b).await.unwrap());
            assert_eq!(b, [3; 512]);
            o.clear().await.unwrap();
            drop(o);
            assert!(FileOverlay::open(&p).unwrap().block_indices().is_empty());
            std::fs::remove_file(p).unwrap();
        });
    }

    #[test]
    fn a_torn_last_record_is_dropped_but_earlier_damage_is_an_error() {
        block_on(async {
            let (_dir, p) = temp("torn");
            let o = FileOverlay::create(&p, 512).unwrap();
            o.write_block(0, &[1; 512]).await.unwrap();
            o.write_block(0, &[2; 512]).await.unwrap();
            o.close().await.unwrap();
            drop(o);
            let full = std::fs::read(&p).unwrap();
            let rec = record_len(512) as usize;
            // A crash mid-append: the second record is cut short, or whole but unfinished.
            for cut in [full.len() - 1, full.len() - rec + 3] {
                std::fs::write(&p, &full[..cut]).unwrap();
                let o = FileOverlay::open(&p).unwrap();
                let mut b = [0u8; 512];
                assert!(o.read_block(0, &mut b).await.unwrap());
                assert_eq!(b, [1; 512], "the old content, never a torn one");
                // Appending after recovery starts on a record boundary.
                o.write_block(5, &[5; 512]).await.unwrap();
                drop(o);
                assert_eq!(FileOverlay::open(&p).unwrap().block_indices(), [0, 5]);
            }
            let mut torn = full.clone();
            let last = torn.len() - 1;
            torn[last] ^= 1;
            std::fs::write(&p, &torn).unwrap();
            let o = FileOverlay::open(&p).unwrap();
            let mut b = [0u8; 512];
            assert!(o.read_block(0, &mut b).await.unwrap());
            assert_eq!(b, [1; 512]);
            drop(o);
            let mut early = full;
            early[HEADER_LEN as usize + 20] ^= 1;
            std::fs::write(&p, &early).unwrap();
            assert_eq!(
                FileOverlay::open(&p).unwrap_err().kind(),
                ErrorKind::Integrity
            );
            std::fs::write(&p, b"not an overlay").unwrap();
            assert_eq!(
                FileOverlay::open(&p).unwrap_err().kind(),
                ErrorKind::Integrity
            );
            std::fs::remove_file(p).unwrap();
        });
    }
}
