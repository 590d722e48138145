//! Resuming a snapshot at start (wasm32), on either engine: find it (stored, or a
//! published boot state imported once), check it against the engine, machine and disks
//! the start asks for before anything is opened or changed, and read its machine state
//! (v86 restores it into its emulator; QEMU gets it as a file and `snapshot-load`s it).

use super::{machine_digest, published, snapshot_error, Resume, SnapshotOperation};
use crate::engine::{EngineHost, EnginePlan};
use crate::error::Result;
use crate::protocol::Event;
use crate::storage_stack::{DiskResume, DiskStack, FileMap};
use qemuweb_config::{VmOverrides, VmProfile};
use qemuweb_storage::snapshot::{IndexedDbSnapshotStore, SnapshotHeader, StateEncoding};
use qemuweb_storage::StorageError;

/// The snapshot a start resumes, checked against everything but the disks' images
/// (those are checked as each disk opens, see `storage_stack::open_disk`).
pub struct Resuming {
    /// Its header.
    pub header: SnapshotHeader,
}

impl Resuming {
    /// Finds the snapshot `resume` names for VM `vm_id` and checks it against `plan`'s
    /// engine and disks and the machine of `profile` and `overrides`.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Snapshot`]: not found, damaged (a published state), or a mismatch
    /// (engine, machine, the disks' ids).
    pub async fn find(
        vm_id: &str,
        resume: &Resume,
        plan: &EnginePlan,
        profile: &VmProfile,
        overrides: Option<&VmOverrides>,
        files: &FileMap,
        host: &dyn EngineHost,
    ) -> Result<Self> {
        let store = IndexedDbSnapshotStore::open()
            .await
            .map_err(snapshot_error)?;
        let header = match resume {
            Resume::Snapshot { id } => store.get(vm_id, id).await.map_err(snapshot_error)?,
            Resume::Published { url } => {
                published::import(&store, vm_id, url, plan, files, host).await?
            }
        };
        let subject = header.subject();
        let mismatch = |what: &str, saved: String, given: String| {
            Err(snapshot_error(StorageError::mismatch(
                &subject, what, saved, given,
            )))
        };
        if header.engine != plan.engine.as_str() {
            return mismatch("engine", header.engine.clone(), plan.engine.as_str().into());
        }
        let digest = machine_digest(profile, overrides);
        if header.machine.digest != digest {
            return mismatch(
                "machine (profile and overrides)",
                format!("{} {}", header.machine.profile_id, header.machine.digest),
                format!("{} {digest}", profile.id),
            );
        }
        let ids = |it: &mut dyn Iterator<Item = &str>| it.collect::<Vec<_>>().join(", ");
        let saved = ids(&mut header.disks.iter().map(|d| d.id.as_str()));
        let given = ids(&mut plan.disks.iter().map(|d| d.id.as_str()));
        if saved != given {
            return mismatch("disks", saved, given);
        }
        Ok(Self { header })
    }

    /// How disk `disk_id` opens: on its point in this snapshot.
    pub fn disk(&self, disk_id: &str) -> Option<DiskResume<'_>> {
        self.header
            .disks
            .iter()
            .find(|d| d.id == disk_id)
            .map(|point| DiskResume {
                snapshot: &self.header,
                point,
            })
    }

    /// The machine state, read and checked chunk by chunk, with `snapshotProgress`
    /// (`restore`) events.
    pub async fn state(&self, host: &dyn EngineHost) -> Result<js_sys::Uint8Array> {
        let store = IndexedDbSnapshotStore::open()
            .await
            .map_err(snapshot_error)?;
        let h = &self.header;
        let report = |loaded: u64, total: u64| {
            host.emit(Event::SnapshotProgress {
                vm_id: h.vm_id.clone(),
                snapshot_id: h.id.clone(),
                operation: SnapshotOperation::Restore,
                loaded,
                total: Some(total),
            })
        };
        store.read_state(h, &report).await.map_err(snapshot_error)
    }

    /// The machine state as the engine saved it: [`state`](Self::state), its zstd
    /// stream decoded when it was published compressed (`qemuweb prepare --boot-state`).
    /// The QEMU engine writes it back into its module as the image it `snapshot-load`s;
    /// v86 restores a compressed state itself. At most `max` bytes are decoded.
    ///
    /// # Errors
    ///
    /// As [`state`](Self::state); [`RuntimeError::Snapshot`](crate::RuntimeError::Snapshot)
    /// (`snapshot-corrupt`) for a stream that does not decode within `max`.
    pub async fn raw_state(&self, host: &dyn EngineHost, max: u64) -> Result<js_sys::Uint8Array> {
        let state = self.state(host).await?;
        match self.header.state.encoding {
            StateEncoding::Raw => Ok(state),
            StateEncoding::Zstd => {
                let raw = self
                    .header
                    .state
                    .decode(state.to_vec(), max)
                    .map_err(snapshot_error)?;
                Ok(js_sys::Uint8Array::from(&raw[..]))
            }
        }
    }
}

/// Settles every disk opened on a snapshot's point: `running` keeps the resumed state,
/// otherwise each disk goes back to what it held. Errors are reported to `host`.
pub async fn settle(disks: &[DiskStack], running: bool, vm_id: &str, host: &dyn EngineHost) {
    for d in disks {
        if let Err(e) = d.settle_resume(running).await {
            host.emit(Event::error(None, Some(vm_id), &e));
        }
    }
}
