//! [`PublishedState`]: a boot state published beside a disk image for static hosting
//! (`qemuweb prepare --boot-state`): a snapshot file (its machine state zstd-compressed)
//! cut into parts, and `boot-state.json`, this manifest.
//!
//! A page resumes it instead of booting: the runtime fetches the parts, imports them as a
//! snapshot of its VM (once; the id names the state's content) and resumes that. The disk
//! images of a published state are named by what a page can check without reading them
//! whole (format, virtual size, file size), with their SHA-256 for people and tools.

use crate::error::{Result, StorageError};
use serde::{Deserialize, Serialize};

/// The manifest format this crate writes and reads.
pub const PUBLISHED_FORMAT: u32 = 1;
/// The name of the manifest in a published directory.
pub const MANIFEST_NAME: &str = "boot-state.json";
/// The largest manifest accepted.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// The most parts a published state may have.
pub const MAX_PARTS: usize = 4096;

/// One part of the snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishedPart {
    /// Its path, relative to the manifest (a plain file name).
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// A disk image the state was saved over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishedDisk {
    /// The disk id (`disk0`, ...).
    pub id: String,
    /// The image format (`qcow2`, `raw`).
    pub format: String,
    /// The guest-visible size in bytes.
    pub virtual_size: u64,
    /// The image file's size in bytes.
    pub file_size: u64,
    /// Lowercase hex SHA-256 of the image file.
    pub sha256: String,
}

impl PublishedDisk {
    /// The base image identity recorded in the published snapshot file for this disk.
    pub fn identity(&self) -> String {
        format!(
            "published {} {} bytes, file {} bytes sha256 {}",
            self.format, self.virtual_size, self.file_size, self.sha256
        )
    }
}

/// `boot-state.json`.
///
/// ```
/// use qemuweb_storage::snapshot::*;
/// let m = PublishedState::example();
/// m.validate().unwrap();
/// let json = serde_json::to_vec(&m).unwrap();
/// assert_eq!(PublishedState::parse(&json).unwrap(), m);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishedState {
    /// [`PUBLISHED_FORMAT`].
    pub format: u32,
    /// The id the snapshot is imported under (it names the state's content).
    pub snapshot_id: String,
    /// The engine that saved it.
    pub engine: String,
    /// The profile of the machine.
    pub profile_id: String,
    /// The size of the whole snapshot file (the parts together).
    pub file_bytes: u64,
    /// Lowercase hex SHA-256 of the whole snapshot file.
    pub file_sha256: String,
    /// The parts, in order.
    pub parts: Vec<PublishedPart>,
    /// The disk images it was saved over.
    pub disks: Vec<PublishedDisk>,
}

impl PublishedState {
    /// A small valid manifest (for examples and tests).
    pub fn example() -> Self {
        PublishedState {
            format: PUBLISHED_FORMAT,
            snapshot_id: "published-0123456789abcdef".into(),
            engine: "v86".into(),
            profile_id: "linux-i386-pc-nographic".into(),
            file_bytes: 30,
            file_sha256: "0".repeat(64),
            parts: vec![
                PublishedPart {
                    path: "state.000".into(),
                    bytes: 20,
                },
                PublishedPart {
                    path: "state.001".into(),
                    bytes: 10,
                },
            ],
            disks: vec![PublishedDisk {
                id: "disk0".into(),
                format: "qcow2".into(),
                virtual_size: 1 << 20,
                file_size: 4096,
                sha256: "1".repeat(64),
            }],
        }
    }

    /// Parses and [validates](Self::validate) a manifest.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) for anything malformed.
    pub fn parse(json: &[u8]) -> Result<Self> {
        if json.len() > MAX_MANIFEST_BYTES {
            return Err(StorageError::corrupt(format!(
                "{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let m: PublishedState = serde_json::from_slice(json)
            .map_err(|e| StorageError::corrupt(format!("bad {MANIFEST_NAME}: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// Checks the fields: format, ids, part names (plain file names), sizes adding up.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StorageError::corrupt(format!("{MANIFEST_NAME}: {m}")));
        if self.format != PUBLISHED_FORMAT {
            return Err(StorageError::unsupported(format!(
                "{MANIFEST_NAME} format {} (this build reads {PUBLISHED_FORMAT})",
                self.format
            )));
        }
        super::check_id("snapshotId", &self.snapshot_id)
            .map_err(|e| StorageError::corrupt(format!("{MANIFEST_NAME}: {e}")))?;
        super::check_id("profileId", &self.profile_id)
            .map_err(|e| StorageError::corrupt(format!("{MANIFEST_NAME}: {e}")))?;
        let hex =
            |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex(&self.file_sha256) || self.disks.iter().any(|d| !hex(&d.sha256)) {
            return bad("a SHA-256 is not 64 lowercase hex digits".into());
        }
        if self.parts.is_empty() || self.parts.len() > MAX_PARTS {
            return bad(format!("{} parts", self.parts.len()));
        }
        for p in &self.parts {
            let plain = !p.path.is_empty()
                && p.path.len() <= 128
                && !p.path.starts_with('.')
                && p.path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !plain || p.bytes == 0 {
                return bad(format!("part {:?} is not a plain, non-empty file", p.path));
            }
        }
        let sum = self
            .parts
            .iter()
            .try_fold(0u64, |a, p| a.checked_add(p.bytes));
        if sum != Some(self.file_bytes) {
            return bad(format!(
                "the parts do not add up to the file's {} bytes",
                self.file_bytes
            ));
        }
        if self.disks.len() > super::MAX_DISKS {
            return bad(format!("{} disks", self.disks.len()));
        }
        for d in &self.disks {
            super::check_id("disk id", &d.id)
                .map_err(|e| StorageError::corrupt(format!("{MANIFEST_NAME}: {e}")))?;
            if !matches!(d.format.as_str(), "qcow2" | "raw") {
                return bad(format!("disk {} has format {:?}", d.id, d.format));
            }
        }
        Ok(())
    }

    /// Cuts `file_len` bytes into parts of at most `part_bytes`, named `stem.000`,
    /// `stem.001`, ...: (name, start, length).
    ///
    /// ```
    /// use qemuweb_storage::snapshot::PublishedState;
    /// let parts = PublishedState::cut(25, 10, "state");
    /// assert_eq!(parts, [("state.000".to_string(), 0, 10), ("state.001".into(), 10, 10), ("state.002".into(), 20, 5)]);
    /// ```
    pub fn cut(file_len: u64, part_bytes: u64, stem: &str) -> Vec<(String, u64, u64)> {
        let part = part_bytes.max(1);
        (0..file_len.div_ceil(part))
            .map(|i| {
                let start = i * part;
                (format!("{stem}.{i:03}"), start, part.min(file_len - start))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn manifests_are_checked() {
        let broken = |f: &dyn Fn(&mut PublishedState)| {
            let mut m = PublishedState::example();
            f(&mut m);
            m.validate().unwrap_err().kind()
        };
        assert_eq!(broken(&|m| m.format = 9), ErrorKind::Unsupported);
        assert_eq!(
            broken(&|m| m.parts[0].path = "../x".into()),
            ErrorKind::Corrupt
        );
        assert_eq!(
            broken(&|m| m.parts[0].path = "a/b".into()),
            ErrorKind::Corrupt
        );
        assert_eq!(broken(&|m| m.file_bytes = 31), ErrorKind::Corrupt);
        assert_eq!(broken(&|m| m.parts.clear()), ErrorKind::Corrupt);
        assert_eq!(
            broken(&|m| m.snapshot_id = "a b".into()),
            ErrorKind::Corrupt
        );
        assert_eq!(
            broken(&|m| m.file_sha256 = "X".repeat(64)),
            ErrorKind::Corrupt
        );
        assert_eq!(
            broken(&|m| m.disks[0].format = "vmdk".into()),
            ErrorKind::Corrupt
        );
        assert_eq!(
            PublishedState::parse(&vec![b' '; MAX_MANIFEST_BYTES + 1])
                .unwrap_err()
                .kind(),
            ErrorKind::Corrupt
        );
        assert!(PublishedState::example().disks[0]
            .identity()
            .starts_with("published qcow2 1048576 bytes"));
    }
}
