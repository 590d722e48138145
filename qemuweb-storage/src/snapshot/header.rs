//! [`SnapshotHeader`]: what a snapshot is of (engine, machine, base images, overlay
//! points) and how its machine state is cut into chunks; its checks.

use crate::error::{Result, StorageError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The header format this crate writes and reads.
pub const HEADER_FORMAT: u32 = 1;
/// The largest machine-state chunk accepted (the unit of storage and of export records).
pub const MAX_CHUNK_BYTES: u32 = 16 << 20;
/// The chunk size this crate writes: 1 MiB.
pub const DEFAULT_CHUNK_BYTES: u32 = 1 << 20;
/// The largest machine state accepted (64 GiB).
pub const MAX_STATE_BYTES: u64 = 64 << 30;
/// The most disks one snapshot covers.
pub const MAX_DISKS: usize = 16;
/// The largest overlay block accepted.
pub const MAX_BLOCK_BYTES: u32 = 1 << 20;
/// The longest id (snapshot, VM, disk) accepted.
pub const MAX_ID_LEN: usize = 64;
/// The longest free-text field (name, base identity) accepted.
pub const MAX_TEXT_LEN: usize = 1024;
/// What [`MachineState::chunks`] holds for a chunk of zero bytes (not stored).
pub const ZERO_CHUNK: &str = "zero";

/// How the machine state's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateEncoding {
    /// As the engine produced them.
    Raw,
    /// One zstd stream (v86 restores it directly).
    Zstd,
}

/// The machine the state belongs to: the profile's id (for people) and a digest of
/// everything that shapes the emulated hardware (profile and overrides), compared on
/// resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineRef {
    /// The profile id, e.g. `linux-i386-pc-nographic`.
    pub profile_id: String,
    /// `sha256:<hex>` of the machine's configuration.
    pub digest: String,
}

/// The machine state: its size, encoding and the SHA-256 of each chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineState {
    /// Bytes of the (encoded) state.
    pub bytes: u64,
    /// The chunk size; every chunk but the last is this long.
    pub chunk_size: u32,
    /// The encoding of the bytes.
    pub encoding: StateEncoding,
    /// Per chunk, lowercase hex SHA-256 of its bytes, or [`ZERO_CHUNK`] when they are all
    /// zero.
    pub chunks: Vec<String>,
}

impl MachineState {
    /// The number of chunks `bytes` makes at `chunk_size`.
    pub fn chunk_count(bytes: u64, chunk_size: u32) -> u64 {
        bytes.div_ceil(u64::from(chunk_size.max(1)))
    }

    /// The length of chunk `index`.
    pub fn chunk_len(&self, index: u64) -> u32 {
        let cs = u64::from(self.chunk_size);
        (self.bytes - index * cs).min(cs) as u32
    }

    /// The entry of [`chunks`](Self::chunks) for `data`.
    ///
    /// ```
    /// use qemuweb_storage::snapshot::MachineState;
    /// assert_eq!(MachineState::chunk_digest(&[0; 64]), "zero");
    /// assert_eq!(MachineState::chunk_digest(b"abc").len(), 64);
    /// ```
    pub fn chunk_digest(data: &[u8]) -> String {
        if data.iter().all(|b| *b == 0) {
            ZERO_CHUNK.to_string()
        } else {
            hex(&Sha256::digest(data))
        }
    }

    /// Checks `data` against the digest of chunk `index`.
    pub fn check_chunk(&self, index: u64, data: &[u8]) -> Result<()> {
        let want = self
            .chunks
            .get(index as usize)
            .ok_or_else(|| StorageError::corrupt(format!("no machine-state chunk {index}")))?;
        if data.len() != self.chunk_len(index) as usize {
            return Err(StorageError::corrupt(format!(
                "machine-state chunk {index} holds {} bytes, not {}",
                data.len(),
                self.chunk_len(index)
            )));
        }
        if *want != Self::chunk_digest(data) {
            return Err(StorageError::Integrity(format!(
                "machine-state chunk {index} does not match its SHA-256"
            )));
        }
        Ok(())
    }

    /// The state as the engine saved it, from its `encoded` bytes (what a store or a
    /// snapshot file holds): the same bytes when [`Raw`](StateEncoding::Raw), the zstd
    /// stream decoded when [`Zstd`](StateEncoding::Zstd) (a published boot state; v86
    /// restores those itself, the QEMU engine loads an image file and needs them
    /// decoded). At most `max` bytes come out (the caller's bound, e.g. the guest's
    /// memory with room for its devices).
    ///
    /// ```
    /// use qemuweb_storage::snapshot::{MachineState, SnapshotHeader, StateEncoding};
    /// let raw = MachineState { encoding: StateEncoding::Raw, ..SnapshotHeader::example().state };
    /// assert_eq!(raw.decode(vec![1, 2, 3], 3).unwrap(), [1, 2, 3]);
    /// assert!(raw.decode(vec![1, 2, 3], 2).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) for a damaged zstd stream or a
    /// state of more than `max` bytes.
    pub fn decode(&self, encoded: Vec<u8>, max: u64) -> Result<Vec<u8>> {
        use std::io::Read;
        let too_large = || {
            StorageError::corrupt(format!(
                "the machine state decodes to more than {max} bytes"
            ))
        };
        let bad = |e: &dyn std::fmt::Display| {
            StorageError::corrupt(format!("the machine state is not a valid zstd stream: {e}"))
        };
        match self.encoding {
            StateEncoding::Raw if encoded.len() as u64 > max => Err(too_large()),
            StateEncoding::Raw => Ok(encoded),
            StateEncoding::Zstd => {
                #[cfg(not(target_arch = "wasm32"))]
                let decoder =
                    zstd::stream::read::Decoder::new(&encoded[..]).map_err(|e| bad(&e))?;
                #[cfg(target_arch = "wasm32")]
                let decoder = ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
                    &encoded[..],
                    MAX_STATE_WINDOW,
                )
                .map_err(|e| bad(&e))?;
                let mut out = Vec::new();
                decoder
                    .take(max.saturating_add(1))
                    .read_to_end(&mut out)
                    .map_err(|e| bad(&e))?;
                if out.len() as u64 > max {
                    return Err(too_large());
                }
                Ok(out)
            }
        }
    }
}

/// The largest zstd window a published state's stream may ask for (the publisher writes
/// level 3: 2 MiB at most).
#[cfg(target_arch = "wasm32")]
const MAX_STATE_WINDOW: u64 = 8 << 20;

/// The overlay point of one disk saved with a snapshot: the disk's content is its base
/// image with the blocks of overlay generation `point` (and its ancestors) on top.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskPoint {
    /// The disk id, e.g. `disk0`.
    pub id: String,
    /// The base image's identity (as `IndexedDbOptions::base` records it).
    pub base: String,
    /// The guest-visible size in bytes.
    pub size: u64,
    /// The overlay's block size.
    pub block_size: u32,
    /// The overlay generation holding the disk's state at the save (local to the store
    /// the snapshot lives in; an import gives it a new one).
    pub point: u32,
    /// How many overlay blocks the disk's state holds (those an export carries).
    pub blocks: u64,
}

/// What a snapshot is: written first in every snapshot file and kept with every stored
/// snapshot.
///
/// ```
/// use qemuweb_storage::snapshot::*;
/// let h = SnapshotHeader::example();
/// h.validate().unwrap();
/// let json = serde_json::to_string(&h).unwrap();
/// assert_eq!(SnapshotHeader::parse(json.as_bytes()).unwrap(), h);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotHeader {
    /// [`HEADER_FORMAT`].
    pub format: u32,
    /// The snapshot's id (unique per VM).
    pub id: String,
    /// The VM it was saved from.
    pub vm_id: String,
    /// A name for people.
    pub name: String,
    /// When it was saved, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The engine that saved it (`v86`, `qemu`).
    pub engine: String,
    /// The machine.
    pub machine: MachineRef,
    /// The machine state.
    pub state: MachineState,
    /// Each disk's overlay point.
    pub disks: Vec<DiskPoint>,
}

/// What a snapshot is resumed against: each field is compared with the header's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// The engine that will run it.
    pub engine: String,
    /// The machine digest (see [`MachineRef::digest`]).
    pub machine_digest: String,
    /// Each disk: id, base identity and guest-visible size.
    pub disks: Vec<(String, String, u64)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of `bytes`.
///
/// ```
/// assert!(qemuweb_storage::snapshot::sha256_tag(b"").starts_with("sha256:e3b0c442"));
/// ```
pub fn sha256_tag(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Checks an id: 1 to [`MAX_ID_LEN`] ASCII letters, digits, `-`, `_` and `.`, not
/// starting with `.`.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidArgument(format!(
            "{what} {:?} must be 1 to {MAX_ID_LEN} ASCII letters, digits, '-', '_' or '.', \
             not starting with '.'",
            id.chars().take(80).collect::<String>()
        )))
    }
}

fn check_text(what: &str, text: &str) -> Result<()> {
    if text.len() > MAX_TEXT_LEN || text.chars().any(char::is_control) {
        return Err(StorageError::corrupt(format!(
            "snapshot {what} is longer than {MAX_TEXT_LEN} bytes or holds control characters"
        )));
    }
    Ok(())
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl SnapshotHeader {
    /// A small valid header (for examples and tests).
    pub fn example() -> Self {
        let chunk = vec![7u8; 1000];
        SnapshotHeader {
            format: HEADER_FORMAT,
            id: "snap-1".into(),
            vm_id: "vm1".into(),
            name: "at the prompt".into(),
            created_ms: 1_700_000_000_000,
            engine: "v86".into(),
            machine: MachineRef {
                profile_id: "linux-i386-pc-nographic".into(),
                digest: sha256_tag(b"machine"),
            },
            state: MachineState {
                bytes: 3000,
                chunk_size: 1024,
                encoding: StateEncoding::Raw,
                chunks: vec![
                    MachineState::chunk_digest(&[7u8; 1024]),
                    ZERO_CHUNK.into(),
                    MachineState::chunk_digest(&chunk[..952]),
                ],
            },
            disks: vec![DiskPoint {
                id: "disk0".into(),
                base: "raw 65536 bytes, url http://h/x.img".into(),
                size: 65536,
                block_size: 4096,
                point: 1,
                blocks: 2,
            }],
        }
    }

    /// A subject for error messages.
    pub fn subject(&self) -> String {
        format!("snapshot {:?} of VM {:?}", self.id, self.vm_id)
    }

    /// Parses and [validates](Self::validate) a header from its JSON bytes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) for anything malformed.
    pub fn parse(json: &[u8]) -> Result<Self> {
        let header: SnapshotHeader = serde_json::from_slice(json)
            .map_err(|e| StorageError::corrupt(format!("bad snapshot header: {e}")))?;
        header.validate()?;
        Ok(header)
    }

    /// Checks every field: format, ids, sizes and their bounds, the chunk list against
    /// the state's size, disks (unique ids, block sizes, points).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let corrupt = |m: String| Err(StorageError::corrupt(m));
        if self.format != HEADER_FORMAT {
            return Err(StorageError::unsupported(format!(
                "snapshot header format {} (this build reads {HEADER_FORMAT})",
                self.format
            )));
        }
        let id = |what: &str, v: &str| {
            check_id(what, v).map_err(|e| StorageError::corrupt(format!("snapshot {e}")))
        };
        id("id", &self.id)?;
        id("vmId", &self.vm_id)?;
        check_text("name", &self.name)?;
        if self.engine.is_empty()
            || self.engine.len() > 32
            || !self.engine.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return corrupt(format!("snapshot engine {:?} is not a name", self.engine));
        }
        id("profile id", &self.machine.profile_id)?;
        match self.machine.digest.strip_prefix("sha256:") {
            Some(d) if is_digest(d) => {}
            _ => return corrupt("snapshot machine digest is not sha256:<hex>".into()),
        }
        let s = &self.state;
        if s.chunk_size == 0 || s.chunk_size > MAX_CHUNK_BYTES {
            return corrupt(format!(
                "snapshot chunk size {} is not 1 to {MAX_CHUNK_BYTES}",
                s.chunk_size
            ));
        }
        if s.bytes == 0 || s.bytes > MAX_STATE_BYTES {
            return corrupt(format!(
                "snapshot machine state of {} bytes (1 to {MAX_STATE_BYTES})",
                s.bytes
            ));
        }
        let n = MachineState::chunk_count(s.bytes, s.chunk_size);
        if s.chunks.len() as u64 != n {
            return corrupt(format!(
                "snapshot lists {} chunks; {} bytes in {}-byte chunks make {n}",
                s.chunks.len(),
                s.bytes,
                s.chunk_size
            ));
        }
        if let Some(bad) = s
            .chunks
            .iter()
            .position(|c| c != ZERO_CHUNK && !is_digest(c))
        {
            return corrupt(format!("snapshot chunk {bad} has no valid digest"));
        }
        if self.disks.len() > MAX_DISKS {
            return corrupt(format!("snapshot has {} disks", self.disks.len()));
        }
        for (i, d) in self.disks.iter().enumerate() {
            id("disk id", &d.id)?;
            if self.disks[..i].iter().any(|o| o.id == d.id) {
                return corrupt(format!("snapshot names disk {:?} twice", d.id));
            }
            check_text("base identity", &d.base)?;
            if d.block_size < 512
                || d.block_size > MAX_BLOCK_BYTES
                || !d.block_size.is_power_of_two()
            {
                return corrupt(format!(
                    "disk {:?}: block size {} is not a power of two from 512 to {MAX_BLOCK_BYTES}",
                    d.id, d.block_size
                ));
            }
            let max_blocks = d.size.div_ceil(u64::from(d.block_size));
            if d.blocks > max_blocks {
                return corrupt(format!(
                    "disk {:?}: {} overlay blocks on a disk of {max_blocks}",
                    d.id, d.blocks
                ));
            }
        }
        Ok(())
    }

    /// Checks that this snapshot can resume against `expected`: the same engine, machine
    /// digest, and disks (ids, base identities and sizes, in order).
    ///
    /// ```
    /// use qemuweb_storage::{snapshot::*, ErrorKind};
    /// let h = SnapshotHeader::example();
    /// let mut e = Expectation {
    ///     engine: "v86".into(),
    ///     machine_digest: h.machine.digest.clone(),
    ///     disks: vec![("disk0".into(), h.disks[0].base.clone(), 65536)],
    /// };
    /// h.check_compatible(&e).unwrap();
    /// e.engine = "qemu".into();
    /// assert_eq!(h.check_compatible(&e).unwrap_err().kind(), ErrorKind::Mismatch);
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Mismatch`](crate::ErrorKind::Mismatch) naming the first difference.
    pub fn check_compatible(&self, expected: &Expectation) -> Result<()> {
        let subject = self.subject();
        let mismatch = |what: &str, saved: &str, given: &str| {
            Err(StorageError::mismatch(&subject, what, saved, given))
        };
        if self.engine != expected.engine {
            return mismatch("engine", &self.engine, &expected.engine);
        }
        if self.machine.digest != expected.machine_digest {
            return mismatch(
                "machine (profile and overrides)",
                &format!("{} {}", self.machine.profile_id, self.machine.digest),
                &expected.machine_digest,
            );
        }
        let ids = |d: &mut dyn Iterator<Item = &str>| d.collect::<Vec<_>>().join(", ");
        let saved_ids = ids(&mut self.disks.iter().map(|d| d.id.as_str()));
        let given_ids = ids(&mut expected.disks.iter().map(|d| d.0.as_str()));
        if saved_ids != given_ids {
            return mismatch("disks", &saved_ids, &given_ids);
        }
        for (d, (id, base, size)) in self.disks.iter().zip(&expected.disks) {
            if d.base != *base {
                return mismatch(&format!("the base image of {id}"), &d.base, base);
            }
            if d.size != *size {
                return mismatch(
                    &format!("the size of {id}"),
                    &d.size.to_string(),
                    &size.to_string(),
                );
            }
        }
        Ok(())
    }

    /// The header as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Only our own plain types: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn broken(f: impl FnOnce(&mut SnapshotHeader)) -> ErrorKind {
        let mut h = SnapshotHeader::example();
        f(&mut h);
        h.validate().unwrap_err().kind()
    }

    #[test]
    fn every_field_is_checked() {
        SnapshotHeader::example().validate().unwrap();
        let corrupt = ErrorKind::Corrupt;
        assert_eq!(broken(|h| h.format = 2), ErrorKind::Unsupported);
        assert_eq!(broken(|h| h.id = "../x".into()), corrupt);
        assert_eq!(broken(|h| h.vm_id = String::new()), corrupt);
        assert_eq!(broken(|h| h.name = "a\nb".into()), corrupt);
        assert_eq!(broken(|h| h.engine = "v 86".into()), corrupt);
        assert_eq!(broken(|h| h.machine.digest = "md5:00".into()), corrupt);
        assert_eq!(broken(|h| h.state.chunk_size = 0), corrupt);
        assert_eq!(
            broken(|h| h.state.chunk_size = MAX_CHUNK_BYTES + 1),
            corrupt
        );
        assert_eq!(broken(|h| h.state.bytes = 0), corrupt);
        assert_eq!(broken(|h| h.state.bytes = 4000), corrupt);
        assert_eq!(broken(|h| h.state.chunks[1] = "zer0".into()), corrupt);
        assert_eq!(broken(|h| h.disks[0].block_size = 1000), corrupt);
        assert_eq!(broken(|h| h.disks[0].blocks = 17), corrupt);
        assert_eq!(
            broken(|h| {
                let d = h.disks[0].clone();
                h.disks.push(d);
            }),
            corrupt
        );
        assert_eq!(
            SnapshotHeader::parse(br#"{"format":1}"#)
                .unwrap_err()
                .kind(),
            corrupt
        );
        let mut v = serde_json::to_value(SnapshotHeader::example()).unwrap();
        v["extra"] = 1.into();
        assert_eq!(
            SnapshotHeader::parse(v.to_string().as_bytes())
                .unwrap_err()
                .kind(),
            corrupt
        );
    }

    #[test]
    fn a_published_state_decodes_within_its_bound() {
        let raw: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let zstd = ruzstd::encoding::compress_to_vec(
            &raw[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let state = MachineState {
            encoding: StateEncoding::Zstd,
            ..SnapshotHeader::example().state
        };
        assert_eq!(state.decode(zstd.clone(), raw.len() as u64).unwrap(), raw);
        let e = state
            .decode(zstd.clone(), raw.len() as u64 - 1)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("more than"), "{e}");
        let mut damaged = zstd;
        damaged.truncate(damaged.len() / 2);
        assert_eq!(
            state.decode(damaged, 1 << 20).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert_eq!(
            state
                .decode(b"not zstd".to_vec(), 1 << 20)
                .unwrap_err()
                .kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn chunks_are_checked_against_their_digests() {
        let h = SnapshotHeader::example();
        assert_eq!(h.state.chunk_len(0), 1024);
        assert_eq!(h.state.chunk_len(2), 952);
        h.state.check_chunk(0, &[7; 1024]).unwrap();
        h.state.check_chunk(1, &[0; 1024]).unwrap();
        assert_eq!(
            h.state.check_chunk(1, &[0; 1000]).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        let mut bad = vec![7u8; 1024];
        bad[5] = 8;
        assert_eq!(
            h.state.check_chunk(0, &bad).unwrap_err().kind(),
            ErrorKind::Integrity
        );
        assert_eq!(
            h.state.check_chunk(3, &[0; 1]).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn compatibility_names_the_difference() {
        let h = SnapshotHeader::example();
        let good = Expectation {
            engine: "v86".into(),
            machine_digest: h.machine.digest.clone(),
            disks: vec![("disk0".into(), h.disks[0].base.clone(), 65536)],
        };
        h.check_compatible(&good).unwrap();
        type Change = Box<dyn Fn(&mut Expectation)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|e| e.engine = "qemu".into()), "engine"),
            (
                Box::new(|e| e.machine_digest = sha256_tag(b"other")),
                "machine",
            ),
            (Box::new(|e| e.disks.clear()), "disks"),
            (
                Box::new(|e| e.disks[0].1 = "raw 1 bytes".into()),
                "base image of disk0",
            ),
            (Box::new(|e| e.disks[0].2 = 1), "size of disk0"),
        ];
        for (change, what) in cases {
            let mut e = good.clone();
            change(&mut e);
            let err = h.check_compatible(&e).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Mismatch);
            assert!(err.to_string().contains(what), "{err}");
            assert!(err.to_string().contains("snap-1"), "{err}");
        }
    }
}
