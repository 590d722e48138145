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

use crate::network::{NicStats, PageNetwork, PlannedNic, PortListener, UplinkStats};
use crate::protocol::ErrorCode;
use crate::RuntimeError;
use js_sys::{Promise, Uint8Array};
use qemuweb_config::VirtualNetwork;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use tsify::Tsify;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// The most bytes waiting in an uplink's WebSocket before frames for it are dropped (as
/// `closed`): a relay that cannot keep up loses frames, the page's memory stays bounded.
const UPLINK_BACKLOG_BYTES: u32 = 4 << 20;

/// The switch of a `QemuClient` and its channels to the VMs' workers and the networks'
/// uplinks.
pub(super) struct ClientNetwork {
    net: RefCell<PageNetwork>,
    channels: RefCell<HashMap<String, PortListener>>,
    uplinks: RefCell<HashMap<String, Rc<UplinkSocket>>>,
}

/// How an uplink's connection ended (what `NetworkUplink.closed` resolves with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct UplinkClosed {
    /// The network's id.
    pub network: String,
    /// The WebSocket close code (1000 for `close()`, 1006 when the connection was lost).
    pub code: u16,
    /// The close reason the relay gave, if any.
    pub reason: String,
    /// Whether the connection closed cleanly.
    pub was_clean: bool,
}

type OnClose = Closure<dyn FnMut(web_sys::CloseEvent)>;
type OnOpen = Closure<dyn FnMut(web_sys::Event)>;

/// One uplink's WebSocket and its handlers.
struct UplinkSocket {
    network: String,
    ws: web_sys::WebSocket,
    open: Cell<bool>,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    _on_close: RefCell<Option<OnClose>>,
    _on_open: RefCell<Option<OnOpen>>,
    closed: Promise,
}

impl Drop for UplinkSocket {
    fn drop(&mut self) {
        self.ws.set_onmessage(None);
        self.ws.set_onopen(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

/// A network's connection to `qemuweb network` (from `QemuClient.connectNetwork`): the
/// relay is the network's way out; its VMs' traffic for other addresses goes to it.
#[wasm_bindgen]
pub struct NetworkUplink {
    net: Weak<ClientNetwork>,
    socket: Rc<UplinkSocket>,
}

#[wasm_bindgen]
impl NetworkUplink {
    /// The network's id.
    #[wasm_bindgen(getter)]
    pub fn network(&self) -> String {
        self.socket.network.clone()
    }

    /// Settles when the connection ends (closed by either side or lost), with how; the
    /// network then has no way out again (its traffic for other addresses is dropped as
    /// `no-route`) until `connectNetwork` is called again.
    #[wasm_bindgen(getter, unchecked_return_type = "Promise<UplinkClosed>")]
    pub fn closed(&self) -> Promise {
        self.socket.closed.clone()
    }

    /// The uplink's counters (`undefined` once it is closed).
    #[wasm_bindgen(unchecked_return_type = "UplinkStats | undefined")]
    pub fn stats(&self) -> JsValue {
        let Some(net) = self.net.upgrade() else {
            return JsValue::UNDEFINED;
        };
        let stats: Option<UplinkStats> = net.net.borrow().uplink_stats(&self.socket.network);
        stats
            .and_then(|s| serde_wasm_bindgen::to_value(&s).ok())
            .unwrap_or(JsValue::UNDEFINED)
    }

    /// Closes the connection (code 1000); `closed` settles.
    pub fn close(&self) {
        let _ = self.socket.ws.close_with_code(1000);
    }
}

fn browser_error(network: &str, message: String) -> JsValue {
    super::events::qemu_error(
        ErrorCode::Browser,
        &format!("network '{network}': {message}"),
        None,
        None,
        &JsValue::UNDEFINED,
    )
}

impl ClientNetwork {
    /// A network with the client's definitions.
    pub(super) fn new(networks: Vec<VirtualNetwork>) -> Result<Rc<Self>, RuntimeError> {
        Ok(Rc::new(ClientNetwork {
            net: RefCell::new(PageNetwork::new(networks)?),
            channels: RefCell::default(),
            uplinks: RefCell::default(),
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

    /// A frame from VM `vm_id`'s guest: into the switch, then out to every VM (and
    /// uplink) it is for.
    fn on_frame(&self, vm_id: &str, data: &JsValue) {
        if !data.is_instance_of::<js_sys::ArrayBuffer>() {
            return;
        }
        let frame = Uint8Array::new(data).to_vec();
        let now_ms = js_sys::Date::now().max(0.0) as u64;
        self.net.borrow_mut().send(vm_id, &frame, now_ms);
        self.deliver();
    }

    /// A frame from network `network`'s relay: into the switch, then out to the VMs.
    fn on_uplink_frame(&self, network: &str, data: &JsValue) {
        if !data.is_instance_of::<js_sys::ArrayBuffer>() {
            return; // frames are binary messages
        }
        let frame = Uint8Array::new(data).to_vec();
        let now_ms = js_sys::Date::now().max(0.0) as u64;
        self.net.borrow_mut().send_uplink(network, &frame, now_ms);
        self.deliver();
    }

    /// Posts what the switch has for the VMs and the uplinks.
    fn deliver(&self) {
        let mut net = self.net.borrow_mut();
        let channels = self.channels.borrow();
        net.drain(|to, frame| {
            let Some(channel) = channels.get(to) else {
                return false;
            };
            channel.post_frame(&Uint8Array::from(&frame[..]))
        });
        let uplinks = self.uplinks.borrow();
        net.drain_uplinks(|network, frame| {
            let Some(u) = uplinks.get(network) else {
                return false;
            };
            u.open.get()
                && u.ws.buffered_amount() <= UPLINK_BACKLOG_BYTES
                && u.ws.send_with_u8_array(&frame).is_ok()
        });
    }

    /// Whether network `network` can get an uplink now (defined, NAT, none yet).
    fn check_uplink(&self, network: &str) -> Result<(), RuntimeError> {
        if self.uplinks.borrow().contains_key(network) {
            return Err(RuntimeError::InvalidInputs(format!(
                "network '{network}' is connected already"
            )));
        }
        // Try it on a copy of nothing: connecting and disconnecting at once checks the
        // network's definition and mode.
        let mut net = self.net.borrow_mut();
        net.connect_uplink(network)?;
        net.disconnect_uplink(network);
        Ok(())
    }

    /// Connects network `network` to `qemuweb network` at `url` with `token`: resolves
    /// with the [`NetworkUplink`] once the WebSocket is open (the uplink is then on the
    /// switch), rejects with a `QemuError` (code `invalid-inputs` for a network that
    /// cannot have an uplink, `browser` when the relay cannot be reached or refuses).
    pub(super) fn connect(self: &Rc<Self>, network: String, url: String, token: String) -> Promise {
        if let Err(e) = self.check_uplink(&network) {
            return Promise::reject(&super::runtime_error(&e, None));
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        let token = String::from(js_sys::encode_uri_component(&token));
        let ws = match web_sys::WebSocket::new(&format!("{url}{sep}token={token}")) {
            Ok(ws) => ws,
            Err(e) => {
                let message = format!("cannot connect to {url}: {e:?}");
                return Promise::reject(&browser_error(&network, message));
            }
        };
        ws.set_binary_type(web_sys::BinaryType::Arraybuffer);
        let weak = Rc::downgrade(self);
        let id = network.clone();
        let on_message =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                if let Some(this) = weak.upgrade() {
                    this.on_uplink_frame(&id, &e.data());
                }
            });
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let mut resolve_closed: Option<js_sys::Function> = None;
        let closed = Promise::new(&mut |resolve, _| resolve_closed = Some(resolve));
        let socket = Rc::new(UplinkSocket {
            network: network.clone(),
            ws: ws.clone(),
            open: Cell::new(false),
            _on_message: on_message,
            _on_close: RefCell::default(),
            _on_open: RefCell::default(),
            closed,
        });
        let this = self.clone();
        let sock = socket;
        Promise::new(&mut |resolve, reject| {
            // Opened: the uplink goes on the switch.
            let (this_open, sock_open, reject_open) = (this.clone(), sock.clone(), reject.clone());
            let on_open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                if let Err(e) = this_open
                    .net
                    .borrow_mut()
                    .connect_uplink(&sock_open.network)
                {
                    let _ = reject_open.call1(&JsValue::NULL, &super::runtime_error(&e, None));
                    let _ = sock_open
                        .ws
                        .close_with_code_and_reason(1000, "refused by the page");
                    return;
                }
                sock_open.open.set(true);
                this_open
                    .uplinks
                    .borrow_mut()
                    .insert(sock_open.network.clone(), sock_open.clone());
                let uplink = NetworkUplink {
                    net: Rc::downgrade(&this_open),
                    socket: sock_open.clone(),
                };
                let _ = resolve.call1(&JsValue::NULL, &uplink.into());
            });
            // Closed (or never opened): off the switch; `closed` settles, and a connect
            // still waiting is rejected.
            let (this_close, sock_close) = (this.clone(), sock.clone());
            let resolve_closed = resolve_closed.take();
            let on_close =
                Closure::<dyn FnMut(web_sys::CloseEvent)>::new(move |e: web_sys::CloseEvent| {
                    let was_open = sock_close.open.replace(false);
                    if was_open {
                        this_close
                            .net
                            .borrow_mut()
                            .disconnect_uplink(&sock_close.network);
                        let mut uplinks = this_close.uplinks.borrow_mut();
                        if uplinks
                            .get(&sock_close.network)
                            .is_some_and(|u| Rc::ptr_eq(u, &sock_close))
                        {
                            uplinks.remove(&sock_close.network);
                        }
                    } else {
                        let message = format!(
                            "the relay at {} refused the connection or cannot be reached \
                             (close code {}; a wrong token or origin is refused before the \
                             WebSocket opens)",
                            sock_close.ws.url(),
                            e.code()
                        );
                        let _ = reject
                            .call1(&JsValue::NULL, &browser_error(&sock_close.network, message));
                    }
                    let how = UplinkClosed {
                        network: sock_close.network.clone(),
                        code: e.code(),
                        reason: e.reason(),
                        was_clean: e.was_clean(),
                    };
                    if let Some(r) = &resolve_closed {
                        let value = serde_wasm_bindgen::to_value(&how).unwrap_or(JsValue::NULL);
                        let _ = r.call1(&JsValue::NULL, &value);
                    }
                    // The handlers hold the socket; they go after this one has returned.
                    let s = sock_close.clone();
                    wasm_bindgen_futures::spawn_local(async move {
                        s.ws.set_onopen(None);
                        s.ws.set_onclose(None);
                        drop(s._on_open.borrow_mut().take());
                        drop(s._on_close.borrow_mut().take());
                    });
                });
            sock.ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
            sock.ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
            *sock._on_open.borrow_mut() = Some(on_open);
            *sock._on_close.borrow_mut() = Some(on_close);
        })
        // The socket lives until it closes: its handlers hold it, and go at its close.
    }
}
