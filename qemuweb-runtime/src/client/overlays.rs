//! The VMs' stored disks: what `QemuClient.overlays`, `resetOverlay` and `deleteOverlays`
//! show and remove. A VM's writes are kept in IndexedDB by VM id and disk id (see
//! `storage_stack`), so these work whether or not the VM ever ran in this page.

use qemuweb_storage::{IndexedDbOverlay, StoredOverlay};
use serde::Serialize;
use tsify::Tsify;

/// One disk's stored writes, from `QemuClient.overlays(vmId)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct OverlayInfo {
    /// The disk (`disk0` is the boot disk, then `disk1`, ...).
    pub disk_id: String,
    /// The size of the overlay's blocks (`OVERLAY_BLOCK_SIZE`, 4096, for every disk the
    /// runtime made).
    pub block_size: u32,
    /// How many blocks the guest changed.
    pub blocks: u64,
    /// The bytes they hold (`blocks * blockSize`).
    pub bytes: u64,
    /// The base image the writes belong to, as recorded when the overlay was made (its
    /// format and size, and its HTTP validator or URL, or a file's name, size and date).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub base: Option<String>,
}

impl From<StoredOverlay> for OverlayInfo {
    fn from(s: StoredOverlay) -> Self {
        OverlayInfo {
            bytes: s.blocks.saturating_mul(u64::from(s.block_size)),
            disk_id: s.disk_id,
            block_size: s.block_size,
            blocks: s.blocks,
            base: s.base,
        }
    }
}

/// The stored overlays of VM `vm_id`, by disk id.
pub async fn list(vm_id: &str) -> qemuweb_storage::Result<Vec<OverlayInfo>> {
    let mut disks: Vec<OverlayInfo> = IndexedDbOverlay::list_vm(vm_id)
        .await?
        .into_iter()
        .map(OverlayInfo::from)
        .collect();
    disks.sort_by(|a, b| a.disk_id.cmp(&b.disk_id));
    Ok(disks)
}

/// Deletes the overlay of one disk of VM `vm_id`, or of all of its disks.
pub async fn delete(vm_id: &str, disk_id: Option<&str>) -> qemuweb_storage::Result<()> {
    match disk_id {
        Some(d) => IndexedDbOverlay::delete_disk(vm_id, d).await,
        None => IndexedDbOverlay::delete_vm(vm_id).await,
    }
}
