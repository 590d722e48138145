//! [`FileBlockDevice`]: a native file as a disk (not on `wasm32`; see `BlobBlockDevice` there).

use crate::device::{check_range, BlockDevice};
use crate::error::{Result, StorageError};
use async_trait::async_trait;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A native file used as a disk. Its size is fixed when it is opened.
///
/// ```
/// use qemuweb_storage::{BlockDevice, FileBlockDevice};
/// # futures::executor::block_on(async {
/// let path = std::env::temp_dir().join(format!("qemuweb-doc-{}.img", std::process::id()));
/// let disk = FileBlockDevice::create(&path, 1 << 20).unwrap();
/// disk.write_at(4096, b"boot").await.unwrap();
/// disk.sync().await.unwrap();
/// let again = FileBlockDevice::open(&path, true).unwrap();
/// assert_eq!(again.read_vec(4096, 4).await.unwrap(), b"boot");
/// # std::fs::remove_file(&path).unwrap();
/// # });
/// ```
#[derive(Debug)]
pub struct FileBlockDevice {
    file: Mutex<Option<File>>,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl FileBlockDevice {
    /// Opens an existing file, read-only or read-write.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
        Self::from_file(file, path, read_only)
    }

    /// Creates (or truncates) a sparse file of `size` bytes, opened read-write.
    pub fn create(path: impl AsRef<Path>, size: u64) -> Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| StorageError::io(format!("creating {}", path.display()), e))?;
        file.set_len(size)
            .map_err(|e| StorageError::io(format!("sizing {}", path.display()), e))?;
        Self::from_file(file, path, false)
    }

    fn from_file(file: File, path: &Path, read_only: bool) -> Result<Self> {
        let size = file
            .metadata()
            .map_err(|e| StorageError::io(format!("reading metadata of {}", path.display()), e))?
            .len();
        Ok(Self {
            file: Mutex::new(Some(file)),
            path: path.to_path_buf(),
            size,
            read_only,
        })
    }

    /// The path the device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_file<T>(&self, f: impl FnOnce(&File) -> std::io::Result<T>, what: &str) -> Result<T> {
        let guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let file = guard.as_ref().ok_or(StorageError::Closed)?;
        f(file).map_err(|e| StorageError::io(format!("{what} {}", self.path.display()), e))
    }
}

#[cfg(unix)]
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
pub(crate) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(not(unix))]
pub(crate) fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(not(unix))]
pub(crate) fn write_all_at(mut file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(buf)
}

#[async_trait(?Send)]
impl BlockDevice for FileBlockDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        self.with_file(|f| read_exact_at(f, buf, offset), "reading")
    }

    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(StorageError::ReadOnly(format!(
                "{} was opened read-only",
                self.path.display()
            )));
        }
        check_range(self.size, offset, data.len())?;
        self.with_file(|f| write_all_at(f, data, offset), "writing")
    }

    async fn sync(&self) -> Result<()> {
        if self.read_only {
            return self.with_file(|_| Ok(()), "syncing");
        }
        self.with_file(File::sync_data, "syncing")
    }

    async fn close(&self) -> Result<()> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(())
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
            .prefix("qemuweb-file-")
            .tempdir()
            .unwrap();
        let path = dir.path().join(name);
        (dir, path)
    }

    #[test]
    fn errors_are_typed() {
        block_on(async {
            let missing = FileBlockDevice::open(temp("missing").1, true).unwrap_err();
            assert_eq!(missing.kind(), ErrorKind::Io);
            let (_dir, p) = temp("ro");
            std::fs::write(&p, [1u8; 1000]).unwrap();
            let d = FileBlockDevice::open(&p, true).unwrap();
            assert_eq!(d.size(), 1000);
            assert_eq!(
                d.write_at(0, b"x").await.unwrap_err().kind(),
                ErrorKind::ReadOnly
            );
            assert_eq!(
                d.read_vec(999, 2).await.unwrap_err().kind(),
                ErrorKind::OutOfRange
            );
            d.close().await.unwrap();
            assert_eq!(
                d.read_vec(0, 1).await.unwrap_err().kind(),
                ErrorKind::Closed
            );
            std::fs::remove_file(p).unwrap();
        });
    }
}
