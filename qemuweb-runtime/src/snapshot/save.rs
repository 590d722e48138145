//! Saving a running VM (wasm32), on either engine: pause the engine, let its writes reach
//! the disks' stacks, pin each disk's overlay point, take the machine state, let the guest
//! run on, then store the state in chunks and commit the snapshot. What differs between
//! engines is behind [`Engine`]'s `pause`, `flush`, `save_state` and `unpause` (v86: its
//! emulator's calls; QEMU: its QMP monitor, `engine::qmp`). A failure at any step leaves nothing
//! behind (the save is aborted, which drops its pins) and the guest running.

use super::{snapshot_error, SnapshotOperation};
use crate::engine::{Engine, EngineHost};
use crate::error::{Result, RuntimeError};
use crate::protocol::Event;
use crate::storage_stack::DiskStack;
use qemuweb_storage::snapshot::{
    DiskPoint, IndexedDbSnapshotStore, MachineRef, SnapshotHeader, DEFAULT_CHUNK_BYTES,
    HEADER_FORMAT,
};
use qemuweb_storage::Overlay;

/// What a save is of.
pub struct SaveRequest<'a> {
    /// The VM.
    pub vm_id: &'a str,
    /// The new snapshot's id.
    pub snapshot_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The machine it runs on.
    pub machine: MachineRef,
}

/// Saves `engine`'s VM with its `disks` as snapshot `request.snapshot_id`; reports
/// `snapshotProgress` (`save`) events to `host`.
///
/// # Errors
///
/// [`RuntimeError::Unsupported`] for an engine without snapshots or a disk whose writes
/// live only in memory; [`RuntimeError::Snapshot`] for a taken id or a storage failure;
/// engine errors.
pub async fn save(
    engine: &dyn Engine,
    disks: &[DiskStack],
    request: SaveRequest<'_>,
    host: &dyn EngineHost,
) -> Result<SnapshotHeader> {
    let SaveRequest {
        vm_id, snapshot_id, ..
    } = request;
    if let Some(d) = disks
        .iter()
        .find(|d| !d.persistent && !d.cow.overlay().block_indices().is_empty())
    {
        return Err(RuntimeError::Unsupported(format!(
            "{} is read-only or kept in memory and the guest wrote to it: a snapshot cannot \
             keep those writes (start the VM with persistence \"indexeddb\" and the disk \
             writable)",
            d.id
        )));
    }
    let store = IndexedDbSnapshotStore::open()
        .await
        .map_err(snapshot_error)?;
    let saving = store
        .begin_save(vm_id, snapshot_id, DEFAULT_CHUNK_BYTES)
        .await
        .map_err(snapshot_error)?;
    let paused = engine.pause().await;
    let taken = match paused {
        Ok(()) => capture(engine, disks, snapshot_id).await,
        Err(e) => Err(e),
    };
    let unpaused = engine.unpause().await;
    let (points, state) = match taken.and_then(|t| unpaused.map(|()| t)) {
        Ok(t) => t,
        Err(e) => {
            saving.abort().await;
            return Err(e);
        }
    };
    let mut saving = saving;
    let total: u64 = state.pieces.iter().map(|p| u64::from(p.length())).sum();
    let chunk = DEFAULT_CHUNK_BYTES;
    let mut stored = 0u64;
    for piece in &state.pieces {
        let len = piece.length();
        let mut at = 0u32;
        while at < len {
            let end = len.min(at.saturating_add(chunk));
            if let Err(e) = saving.put_chunk(&piece.subarray(at, end)).await {
                saving.abort().await;
                return Err(snapshot_error(e));
            }
            stored += u64::from(end - at);
            at = end;
            host.emit(Event::SnapshotProgress {
                vm_id: vm_id.to_string(),
                snapshot_id: snapshot_id.to_string(),
                operation: SnapshotOperation::Save,
                loaded: stored,
                total: Some(total),
            });
        }
    }
    let header = SnapshotHeader {
        format: HEADER_FORMAT,
        id: snapshot_id.to_string(),
        vm_id: vm_id.to_string(),
        name: request.name.to_string(),
        created_ms: js_sys::Date::now() as u64,
        engine: engine.kind().as_str().to_string(),
        machine: request.machine,
        state: saving.state(state.encoding),
        disks: disks
            .iter()
            .zip(points)
            .map(|(d, (point, blocks))| DiskPoint {
                id: d.id.clone(),
                base: d.base.clone(),
                size: qemuweb_storage::BlockDevice::size(&*d.cow),
                block_size: d.cow.overlay().block_size(),
                point,
                blocks,
            })
            .collect(),
    };
    saving.commit(header).await.map_err(snapshot_error)
}

/// With the guest paused: flushes its writes, pins each persistent disk and takes the
/// machine state. Returns each disk's (point, blocks) and the state.
async fn capture(
    engine: &dyn Engine,
    disks: &[DiskStack],
    snapshot_id: &str,
) -> Result<(Vec<(u32, u64)>, crate::engine::SavedState)> {
    engine.flush().await?;
    let mut points = Vec::new();
    for d in disks {
        let overlay: &dyn Overlay = d.cow.overlay();
        let point = if d.persistent {
            overlay
                .pin(snapshot_id)
                .await
                .map_err(|e| RuntimeError::storage(&d.id, e))?
                .unwrap_or(0)
        } else {
            0
        };
        points.push((point, overlay.block_indices().len() as u64));
    }
    let state = engine.save_state().await?;
    Ok((points, state))
}
