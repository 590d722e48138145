//! Snapshots of running VMs: what the protocol says about them ([`SnapshotInfo`],
//! [`Resume`], [`SnapshotOperation`]), the machine digest a snapshot is matched against
//! ([`machine_digest`]), and (wasm32) the worker's save and resume
//! (`snapshot::save`, `snapshot::resume`) over `qemuweb_storage::snapshot`.
//!
//! A snapshot is the engine's whole machine state (CPU, memory, devices) plus, for each
//! disk, its base image identity and a pinned point of its IndexedDB overlay, so a
//! resumed VM continues with the same processes, uptime and disk; resuming against
//! another engine, machine or base image is refused
//! ([`ErrorCode::SnapshotMismatch`](crate::ErrorCode::SnapshotMismatch)) before anything
//! changes.

use crate::error::RuntimeError;
use qemuweb_config::{VmOverrides, VmProfile};
use qemuweb_storage::snapshot::{sha256_tag, SnapshotHeader};
use serde::{Deserialize, Serialize};
use tsify::Tsify;

#[cfg(target_arch = "wasm32")]
pub mod published;
#[cfg(target_arch = "wasm32")]
pub mod resume;
#[cfg(target_arch = "wasm32")]
pub mod save;

/// The longest snapshot name accepted.
pub const MAX_SNAPSHOT_NAME: usize = 256;

/// Checks a snapshot's name: at most [`MAX_SNAPSHOT_NAME`] bytes, no control characters.
///
/// ```
/// use qemuweb_runtime::protocol::check_snapshot_name;
/// assert!(check_snapshot_name("at the prompt").is_ok());
/// assert!(check_snapshot_name("a\nb").is_err());
/// ```
pub fn check_snapshot_name(name: &str) -> Result<(), RuntimeError> {
    if name.len() > MAX_SNAPSHOT_NAME || name.chars().any(char::is_control) {
        return Err(RuntimeError::Malformed(format!(
            "a snapshot name is at most {MAX_SNAPSHOT_NAME} bytes without control characters"
        )));
    }
    Ok(())
}

/// What a VM resumes from instead of booting (`resume` of `startVm`'s options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Resume {
    /// A snapshot stored in this browser for this VM (`saveSnapshot`, `importSnapshot`).
    Snapshot {
        /// Its id.
        id: String,
    },
    /// A published boot state (`qemuweb prepare --boot-state`): the URL of its
    /// `boot-state.json`. It is imported once (kept as a snapshot of this VM) and
    /// resumed; the disk goes back to the state's point each time.
    Published {
        /// The URL (relative URLs resolve against the page).
        url: String,
    },
}

/// What a `snapshotProgress` event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotOperation {
    /// Storing a state being saved.
    Save,
    /// Reading a stored state to resume it.
    Restore,
    /// Writing a snapshot file.
    Export,
    /// Reading a snapshot file.
    Import,
    /// Downloading a published boot state.
    Fetch,
}

/// One disk of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDiskInfo {
    /// The disk (`disk0`, ...).
    pub id: String,
    /// The identity of its base image (format and size, and its HTTP validator or URL, or
    /// a file's name, size and date).
    pub base: String,
    /// Its guest-visible size in bytes.
    pub size: u64,
}

/// A snapshot, as `listSnapshots`, `saveSnapshot` and `importSnapshot` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    /// Its id (unique per VM).
    pub id: String,
    /// The VM it belongs to.
    pub vm_id: String,
    /// Its name.
    pub name: String,
    /// When it was saved (milliseconds since the Unix epoch).
    pub created_ms: u64,
    /// The engine that saved it (and the only one that resumes it).
    pub engine: String,
    /// The profile of the machine.
    pub profile_id: String,
    /// Bytes of machine state stored.
    pub state_bytes: u64,
    /// Its disks.
    pub disks: Vec<SnapshotDiskInfo>,
}

impl From<&SnapshotHeader> for SnapshotInfo {
    fn from(h: &SnapshotHeader) -> Self {
        SnapshotInfo {
            id: h.id.clone(),
            vm_id: h.vm_id.clone(),
            name: h.name.clone(),
            created_ms: h.created_ms,
            engine: h.engine.clone(),
            profile_id: h.machine.profile_id.clone(),
            state_bytes: h.state.bytes,
            disks: h
                .disks
                .iter()
                .map(|d| SnapshotDiskInfo {
                    id: d.id.clone(),
                    base: d.base.clone(),
                    size: d.size,
                })
                .collect(),
        }
    }
}

/// The digest of everything that shapes the emulated machine: the profile and the
/// overrides. A snapshot resumes only on the same.
///
/// ```
/// use qemuweb_runtime::snapshot::machine_digest;
/// let p = qemuweb_config::profile_by_id("linux-i386-pc-nographic").unwrap();
/// let mut o = qemuweb_config::VmOverrides::default();
/// let a = machine_digest(&p, None);
/// assert_eq!(a, machine_digest(&p, Some(&o)), "no overrides and empty ones are the same");
/// o.memory_mib = Some(128);
/// assert_ne!(a, machine_digest(&p, Some(&o)));
/// ```
pub fn machine_digest(profile: &VmProfile, overrides: Option<&VmOverrides>) -> String {
    let empty = VmOverrides::default();
    let json = serde_json::json!({
        "profile": profile,
        "overrides": overrides.unwrap_or(&empty),
    });
    sha256_tag(json.to_string().as_bytes())
}

/// A snapshot failure from the storage layer as a runtime error: mismatches, damage and
/// absence get their own codes, the rest is a storage error.
pub fn snapshot_error(e: qemuweb_storage::StorageError) -> RuntimeError {
    RuntimeError::Snapshot(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use qemuweb_storage::StorageError;

    #[test]
    fn storage_failures_get_snapshot_codes() {
        let cases = [
            (
                StorageError::mismatch("s", "engine", "v86", "qemu"),
                ErrorCode::SnapshotMismatch,
            ),
            (StorageError::corrupt("bad"), ErrorCode::SnapshotCorrupt),
            (
                StorageError::Integrity("digest".into()),
                ErrorCode::SnapshotCorrupt,
            ),
            (
                StorageError::NotFound("none".into()),
                ErrorCode::SnapshotNotFound,
            ),
            (
                StorageError::QuotaExceeded("full".into()),
                ErrorCode::Storage,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(snapshot_error(e).code(), code);
        }
    }

    #[test]
    fn info_and_resume_travel_in_camel_case() {
        let h = SnapshotHeader::example();
        let info = SnapshotInfo::from(&h);
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["vmId"], "vm1");
        assert_eq!(v["profileId"], "linux-i386-pc-nographic");
        assert_eq!(v["stateBytes"], 3000);
        let r: Resume = serde_json::from_str(r#"{"kind":"snapshot","id":"s1"}"#).unwrap();
        assert_eq!(r, Resume::Snapshot { id: "s1".into() });
        let r: Resume =
            serde_json::from_str(r#"{"kind":"published","url":"boot-state.json"}"#).unwrap();
        assert!(matches!(r, Resume::Published { .. }));
        assert!(check_snapshot_name(&"x".repeat(MAX_SNAPSHOT_NAME + 1)).is_err());
    }
}
