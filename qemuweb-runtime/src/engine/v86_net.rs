//! The NIC of a v86 guest, connected to the page's virtual network (wasm32 only).
//!
//! v86 has one NIC (`net_device: {type: "ne2k" | "virtio"}`) whose frames go through its
//! bus: `net0-send` carries what the guest transmits, `net0-receive` what it receives. Here
//! both ends meet the VM's `MessagePort` to the page (where `QemuClient`'s switch is,
//! [`crate::network`]): each frame crosses as one message, an `ArrayBuffer` that is
//! transferred, not copied. v86 picks a random MAC; the NIC's planned one replaces it
//! before the guest runs (in the NE2000's registers and address PROM, or virtio-net's
//! configuration).

use crate::engine::set;
use crate::error::{Result, RuntimeError};
use crate::network::{post_frame, PortListener};
use js_sys::{Function, Object, Reflect, Uint8Array};
use qemuweb_config::NicModel;
use qemuweb_net::Mac;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// A NIC for a v86 guest.
pub struct V86Nic {
    /// `ne2k-pci` or `virtio-net` (the worker refuses others before the engine starts).
    pub model: NicModel,
    /// Its MAC address.
    pub mac: Mac,
    /// The page's end of the frame channel.
    pub port: web_sys::MessagePort,
}

impl V86Nic {
    /// v86's `net_device` option for this NIC.
    pub fn net_device(&self) -> Object {
        let device = Object::new();
        let kind = match self.model {
            NicModel::VirtioNet => "virtio",
            _ => "ne2k",
        };
        set(&device, "type", &kind.into());
        device
    }
}

/// The listener that connects the page's frames to the NIC; dropping it disconnects it.
pub(crate) type ConnectedNic = PortListener;

/// The closure for v86's `net0-send`: posts each frame to the page (a copy, since v86
/// hands a view of its device memory). A closed port (the page went) drops the frame, as
/// a cable pulled out would.
pub(crate) fn sender(port: &web_sys::MessagePort) -> Closure<dyn FnMut(JsValue)> {
    let port = port.clone();
    Closure::new(move |frame: JsValue| {
        // Always a copy: v86's own buffer must never be transferred away.
        if let Some(frame) = frame.dyn_ref::<Uint8Array>() {
            post_frame(&port, &frame.slice(0, frame.length()));
        }
    })
}

/// Sets the NIC's MAC in v86's device (it exists once the emulator has started and the
/// guest has not run yet), then delivers the page's frames to the guest.
///
/// # Errors
///
/// [`RuntimeError::Engine`] if v86 has no such device or bus.
pub(crate) fn connect(emulator: &JsValue, nic: &V86Nic) -> Result<ConnectedNic> {
    let path = |v: &JsValue, keys: &[&str]| {
        keys.iter().fold(v.clone(), |v, k| {
            Reflect::get(&v, &(*k).into()).unwrap_or(JsValue::UNDEFINED)
        })
    };
    let name = match nic.model {
        NicModel::VirtioNet => "virtio_net",
        _ => "net",
    };
    let device = path(emulator, &["v86", "cpu", "devices", name]);
    if !device.is_object() {
        return Err(RuntimeError::Engine(format!(
            "v86 made no {} device",
            nic.model.qemu_device()
        )));
    }
    let mac = Uint8Array::from(&nic.mac[..]);
    set(device.unchecked_ref(), "mac", &mac);
    if nic.model != NicModel::VirtioNet {
        // The NE2000's address PROM: each byte twice, where drivers read the MAC.
        if let Ok(memory) = Reflect::get(&device, &"memory".into()) {
            if let Some(memory) = memory.dyn_ref::<Uint8Array>() {
                for (i, b) in nic.mac.iter().enumerate() {
                    memory.set_index((i * 2) as u32, *b);
                    memory.set_index((i * 2 + 1) as u32, *b);
                }
            }
        }
    }
    let bus = path(emulator, &["bus"]);
    let send: Function = Reflect::get(&bus, &"send".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| RuntimeError::Engine("v86 has no bus for the NIC".into()))?;
    Ok(PortListener::new(nic.port.clone(), move |data| {
        if !data.is_instance_of::<js_sys::ArrayBuffer>() {
            return;
        }
        let frame = Uint8Array::new(&data);
        // v86 drops what its NIC cannot take (receiver off, ring full), as hardware does.
        let _ = send.call2(&bus, &"net0-receive".into(), &frame);
    }))
}
