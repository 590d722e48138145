//! qcow2 header extensions: backing format, feature names, external data file name.

use crate::error::{Result, StorageError};

/// Extension type: end of the extension area.
const EXT_END: u32 = 0;
/// Extension type: the backing file's format name.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Extension type: the feature-name table.
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Extension type: the bitmaps directory.
const EXT_BITMAPS: u32 = 0x2385_2875;
/// Extension type: the full-disk-encryption header pointer.
const EXT_CRYPTO: u32 = 0x0537_be77;
/// Extension type: the external data file's name.
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// QEMU keeps backing format names in a 16-byte buffer.
const MAX_BACKING_FORMAT: usize = 15;
/// One feature-name table entry: type, bit, 46-byte name.
const FEATURE_ENTRY_LEN: usize = 48;

/// What the header extensions say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Extensions {
    /// The backing file's format, from the backing-format extension.
    pub backing_format: Option<String>,
    /// The external data file's name.
    pub data_file: Option<String>,
    /// Names of feature bits: (type 0/1/2 = incompatible/compatible/autoclear, bit, name).
    pub feature_names: Vec<(u8, u8, String)>,
    /// Whether a bitmaps extension is present.
    pub bitmaps: bool,
    /// Whether a full-disk-encryption header extension is present.
    pub crypto: bool,
}

impl Extensions {
    /// Parses the extensions in `cluster0[start..end]`. Bytes of the area that lie past
    /// the end of `cluster0` (a short file) read as zeros, which end the list.
    pub fn parse(cluster0: &[u8], start: usize, end: usize) -> Result<Self> {
        let mut ext = Extensions::default();
        let end = end.min(cluster0.len());
        let mut at = start;
        while at.checked_add(8).is_some_and(|e| e <= end) {
            let ty = u32::from_be_bytes([
                cluster0[at],
                cluster0[at + 1],
                cluster0[at + 2],
                cluster0[at + 3],
            ]);
            let len = u32::from_be_bytes([
                cluster0[at + 4],
                cluster0[at + 5],
                cluster0[at + 6],
                cluster0[at + 7],
            ]) as usize;
            at += 8;
            if ty == EXT_END {
                break;
            }
            if len > end - at {
                return Err(StorageError::corrupt(format!(
                    "header extension {ty:#010x} of {len} bytes at offset {} overruns the \
                     extension area, which ends at {end}",
                    at - 8
                )));
            }
            let data = &cluster0[at..at + len];
            match ty {
                EXT_BACKING_FORMAT => {
                    if len > MAX_BACKING_FORMAT {
                        return Err(StorageError::corrupt(format!(
                            "the backing format name is {len} bytes, longer than \
                             {MAX_BACKING_FORMAT}"
                        )));
                    }
                    ext.backing_format = Some(text(data, "backing format name")?);
                }
                EXT_DATA_FILE => ext.data_file = Some(text(data, "external data file name")?),
                EXT_FEATURE_TABLE => {
                    for e in data.chunks_exact(FEATURE_ENTRY_LEN) {
                        let name = &e[2..];
                        let n = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                        let name = String::from_utf8_lossy(&name[..n]).into_owned();
                        ext.feature_names.push((e[0], e[1], name));
                    }
                }
                EXT_BITMAPS => ext.bitmaps = true,
                EXT_CRYPTO => ext.crypto = true,
                _ => {}
            }
            // Extension data is padded to a multiple of 8 bytes.
            at = at.saturating_add(len.next_multiple_of(8)).min(end);
        }
        Ok(ext)
    }

    /// Describes the incompatible feature bits in `bits`, by name where the table has one.
    pub fn describe_incompatible(&self, bits: u64) -> String {
        (0..64u8)
            .filter(|b| bits & (1u64 << b) != 0)
            .map(|b| {
                match self
                    .feature_names
                    .iter()
                    .find(|(ty, bit, _)| *ty == 0 && *bit == b)
                {
                    Some((_, _, name)) if !name.is_empty() => format!("bit {b} ({name})"),
                    _ => format!("bit {b}"),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A string stored in an extension: not NUL-terminated, but tolerate trailing NULs.
fn text(data: &[u8], what: &str) -> Result<String> {
    let n = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8(data[..n].to_vec())
        .map_err(|_| StorageError::corrupt(format!("the {what} is not valid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn ext(ty: u32, data: &[u8]) -> Vec<u8> {
        let mut v = ty.to_be_bytes().to_vec();
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v.resize(v.len().next_multiple_of(8), 0);
        v
    }

    #[test]
    fn parses_known_extensions() {
        let mut area = ext(EXT_BACKING_FORMAT, b"qcow2");
        let mut table = vec![0u8; 48];
        table[1] = 9;
        table[2..8].copy_from_slice(b"future");
        area.extend(ext(EXT_FEATURE_TABLE, &table));
        area.extend(ext(0x1234_5678, b"skip me"));
        area.extend(ext(EXT_DATA_FILE, b"data.raw"));
        area.extend(ext(EXT_END, b""));
        area.extend(ext(EXT_DATA_FILE, b"ignored"));
        let e = Extensions::parse(&area, 0, area.len()).unwrap();
        assert_eq!(e.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(e.data_file.as_deref(), Some("data.raw"));
        assert_eq!(
            e.describe_incompatible((1 << 9) | (1 << 33)),
            "bit 9 (future), bit 33"
        );
    }

    #[test]
    fn rejects_overruns_and_long_names() {
        let mut area = ext(EXT_DATA_FILE, b"data.raw");
        area[4..8].copy_from_slice(&1000u32.to_be_bytes());
        let e = Extensions::parse(&area, 0, area.len()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let area = ext(EXT_BACKING_FORMAT, b"a-very-long-format-name");
        let e = Extensions::parse(&area, 0, area.len()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        // An area cut short by the end of the file ends the list.
        let area = ext(EXT_BACKING_FORMAT, b"raw");
        let e = Extensions::parse(&area[..5], 0, 4096).unwrap();
        assert_eq!(e, Extensions::default());
    }
}
