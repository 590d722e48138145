//! The page's virtual network as `QemuClient` runs it: the [`PageNetwork`] (switch) of
//! [`crate::network`] and one `MessageChannel` per VM attached to it.
//!
//! A VM's worker gets one end of its channel in its `start` message; each frame its guest
//! sends comes in as one message (an `ArrayBuffer`, transferred), goes into the switch at
//! the page's clock, and whatever the switch then has for any VM is posted to that VM's
//! port the same way. Nothing in the switch happens without a frame (leases and rate
//! limits are reckoned at the time of the next frame), so no timer is needed.
//!
//! Message ports rather than a `SharedArrayBuffer` ring: they work on pages that are not
//! cross-origin isolated, cost no polling on either side, and a transferred buffer is not
//! copied; a frame is one message, so the switch sees frames in the order sent.

use crate::network::{NicStats, PageNetwork, PlannedNic, PortListener};
use crate::RuntimeError;
use js_sys::Uint8Array;
use qemuweb_config::VirtualNetwork;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// The switch of a `QemuClient` and its channels to the VMs' workers.
pub(super) struct ClientNetwork {
    net: RefCell<PageNetwork>,
    channels: RefCell<HashMap<String, PortListener>>,
}

impl ClientNetwork {
    /// A network with the client's definitions.
    pub(super) fn new(networks: Vec<VirtualNetwork>) -> Result<Rc<Self>, RuntimeError> {
        Ok(Rc::new(ClientNetwork {
            net: RefCell::new(PageNetwork::new(networks)?),
            channels: RefCell::default(),
        }))
    }

    /// Puts VM `vm_id`'s NIC on its network; returns the port to hand (transfer) to its
    /// worker.
    pub(super) fn attach(
        self: &Rc<Self>,
        vm_id: &str,
        nic: &PlannedNic,
    ) -> Result<web_sys::MessagePort, RuntimeError> {
        let channel = web_sys::MessageChannel::new()
            .map_err(|e| RuntimeError::Browser(format!("MessageChannel: {e:?}")))?;
        self.net.borrow_mut().attach(vm_id, nic)?;
        let weak: Weak<Self> = Rc::downgrade(self);
        let id = vm_id.to_string();
        let listener = PortListener::new(channel.port1(), move |data| {
            if let Some(this) = weak.upgrade() {
                this.on_frame(&id, &data);
            }
        });
        self.channels
            .borrow_mut()
            .insert(vm_id.to_string(), listener);
        Ok(channel.port2())
    }

    /// Takes VM `vm_id` off its network and closes its channel (it stopped or failed).
    pub(super) fn detach(&self, vm_id: &str) {
        self.channels.borrow_mut().remove(vm_id);
        self.net.borrow_mut().detach(vm_id);
    }

    /// The counters of VM `vm_id`'s NIC.
    pub(super) fn stats(&self, vm_id: &str) -> Option<NicStats> {
        self.net.borrow().stats(vm_id)
    }

    /// A frame from VM `vm_id`'s guest: into the switch, then out to every VM it is for.
    fn on_frame(&self, vm_id: &str, data: &JsValue) {
        if !data.is_instance_of::<js_sys::ArrayBuffer>() {
            return;
        }
        let frame = Uint8Array::new(data).to_vec();
        let now_ms = js_sys::Date::now().max(0.0) as u64;
        let mut net = self.net.borrow_mut();
        net.send(vm_id, &frame, now_ms);
        let channels = self.channels.borrow();
        net.drain(|to, frame| {
            let Some(channel) = channels.get(to) else {
                return false;
            };
            channel.post_frame(&Uint8Array::from(&frame[..]))
        });
    }
}
