//! The page's virtual network: the NICs a VM gets from its configuration
//! ([`plan_nics`]) and the switch that connects the VMs of one page ([`PageNetwork`]).
//!
//! `QemuClient` owns one [`PageNetwork`]: a [`qemuweb_net::Switch`] with the networks its
//! VMs attach to (from the client's `networks` option, default
//! [`default_networks`](qemuweb_config::default_networks)), one port per VM NIC. Each VM's
//! worker sends the frames its guest transmits over a `MessagePort` (one per VM, frames as
//! transferred `ArrayBuffer`s); the client passes them to [`PageNetwork::send`] and posts
//! what [`PageNetwork::drain`] gives back to the workers they are for. Everything here is
//! pure Rust (no I/O, the caller passes the time) and tested natively.
//!
//! ```
//! use qemuweb_config::{profile_by_id, NetworkAttachment, NicModel, VmOverrides};
//! use qemuweb_runtime::network::{plan_nics, PageNetwork};
//! use qemuweb_runtime::EngineKind;
//! let profile = profile_by_id("linux-i386-pc-nographic").unwrap();
//! let overrides = VmOverrides {
//!     networks: Some(vec![NetworkAttachment::on("default")]),
//!     ..VmOverrides::default()
//! };
//! let nics = plan_nics("vm1", &profile, Some(&overrides), EngineKind::V86)?;
//! assert_eq!(nics[0].model, NicModel::VirtioNet);
//! let mut net = PageNetwork::new(qemuweb_config::default_networks())?;
//! net.attach("vm1", &nics[0])?;
//! assert_eq!(net.stats("vm1").unwrap().network, "default");
//! # Ok::<(), qemuweb_runtime::RuntimeError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use qemuweb_config::{
    default_mac, effective_networks, format_mac, parse_mac, NetworkAttachment, NicModel,
    VirtualNetwork, VmOverrides, VmProfile,
};
use qemuweb_net::{DropReason, Mac, Nic, PortId, SendOutcome, Switch};
use serde::{Deserialize, Serialize};
use tsify::Tsify;

use crate::error::{Result, RuntimeError};
use crate::protocol::EngineKind;

/// The NIC model of a VM on v86 when its attachment names none.
pub const V86_DEFAULT_NIC: NicModel = NicModel::VirtioNet;

/// One NIC of a VM, resolved from its [`NetworkAttachment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNic {
    /// The network's id.
    pub network: String,
    /// Its MAC address: the attachment's, or [`default_mac`] of the VM id and NIC index.
    pub mac: Mac,
    /// The device the guest sees.
    pub model: NicModel,
    /// The address the network's DHCP always gives it.
    pub ip: Option<Ipv4Addr>,
}

/// The NICs VM `vm_id` gets on `engine` from its profile's or overrides' `networks`
/// ([`effective_networks`]). A VM has one channel to the page's switch, so one NIC. Its
/// model is the attachment's, else [`V86_DEFAULT_NIC`] on v86 and QEMU's default for the
/// guest's arch on QEMU ([`NicModel::qemu_default`]).
///
/// # Errors
///
/// [`RuntimeError::InvalidInputs`] for more than one NIC, a malformed or group MAC or a
/// malformed address; [`RuntimeError::Unsupported`] for a model the engine does not have
/// (`e1000` on v86, `ne2k-pci` on QEMU, whose build has `e1000` and `virtio-net`).
pub fn plan_nics(
    vm_id: &str,
    profile: &VmProfile,
    overrides: Option<&VmOverrides>,
    engine: EngineKind,
) -> Result<Vec<PlannedNic>> {
    let attachments = effective_networks(profile, overrides);
    if attachments.len() > 1 {
        return Err(RuntimeError::InvalidInputs(format!(
            "{} networks given: a VM on the {} engine has one NIC (one channel to the \
             page's switch)",
            attachments.len(),
            engine.as_str()
        )));
    }
    // The engine's default model, the one it lacks, and what it has.
    let (default, missing, has) = match engine {
        EngineKind::V86 => (V86_DEFAULT_NIC, NicModel::E1000, "ne2k-pci and virtio-net"),
        EngineKind::Qemu => (
            NicModel::qemu_default(profile.arch),
            NicModel::Ne2kPci,
            "e1000 and virtio-net",
        ),
    };
    attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let nic = plan_nic(vm_id, i as u32, a, default)?;
            if nic.model == missing {
                return Err(RuntimeError::Unsupported(format!(
                    "NIC model {}: the {} engine has {has}",
                    missing.qemu_device(),
                    engine.as_str()
                )));
            }
            Ok(nic)
        })
        .collect()
}

/// `overrides` with every NIC's MAC written into its attachment (a planned NIC whose
/// attachment named none gets [`default_mac`]), for QEMU's arguments: the guest's NIC
/// then has the address the page's switch knows it by. `None` when the VM has no NIC.
///
/// ```
/// use qemuweb_config::{profile_by_id, NetworkAttachment, VmOverrides};
/// use qemuweb_runtime::network::{plan_nics, with_nic_macs};
/// use qemuweb_runtime::EngineKind;
/// let profile = profile_by_id("linux-x86_64-pc-nographic").unwrap();
/// let overrides = VmOverrides {
///     networks: Some(vec![NetworkAttachment::on("default")]),
///     ..VmOverrides::default()
/// };
/// let nics = plan_nics("vm1", &profile, Some(&overrides), EngineKind::Qemu)?;
/// let pinned = with_nic_macs(&profile, Some(&overrides), &nics).unwrap();
/// let mac = pinned.networks.unwrap()[0].mac.clone().unwrap();
/// assert_eq!(mac, qemuweb_config::format_mac(nics[0].mac));
/// # Ok::<(), qemuweb_runtime::RuntimeError>(())
/// ```
pub fn with_nic_macs(
    profile: &VmProfile,
    overrides: Option<&VmOverrides>,
    nics: &[PlannedNic],
) -> Option<VmOverrides> {
    if nics.is_empty() {
        return None;
    }
    let mut networks = effective_networks(profile, overrides);
    for (a, nic) in networks.iter_mut().zip(nics) {
        a.mac = Some(format_mac(nic.mac));
    }
    Some(VmOverrides {
        networks: Some(networks),
        ..overrides.cloned().unwrap_or_default()
    })
}

fn plan_nic(
    vm_id: &str,
    index: u32,
    a: &NetworkAttachment,
    default: NicModel,
) -> Result<PlannedNic> {
    let bad = |what: String| RuntimeError::InvalidInputs(format!("NIC {index}: {what}"));
    let model = a.model.unwrap_or(default);
    let mac = match &a.mac {
        Some(text) => {
            let m = parse_mac(text).ok_or_else(|| bad(format!("mac '{text}' is malformed")))?;
            if m[0] & 1 != 0 || m == [0; 6] {
                return Err(bad(format!("mac {text} is not a unicast address")));
            }
            m
        }
        None => default_mac(vm_id, index),
    };
    let ip = match &a.ip {
        Some(text) => Some(
            text.parse()
                .map_err(|_| bad(format!("ip '{text}' is not an IPv4 address")))?,
        ),
        None => None,
    };
    Ok(PlannedNic {
        network: a.network.clone(),
        mac,
        model,
        ip,
    })
}

/// The counters of one VM's NIC on the page's network (`networkStats(vmId)`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct NicStats {
    /// The network's id.
    pub network: String,
    /// The NIC's MAC address (`52:54:00:12:34:56`).
    pub mac: String,
    /// Frames the guest sent that the switch took.
    pub sent_frames: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Frames delivered to the guest.
    pub received_frames: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// Frames (or copies) dropped, by reason (`runt`, `rate-limited`, `queue-full`, ...;
    /// `closed` for frames for a VM whose channel had gone); reasons with none are left
    /// out.
    pub dropped: BTreeMap<String, u64>,
}

/// Why a frame is counted as `closed`: the VM's channel was gone when it was delivered.
pub const DROP_CLOSED: &str = "closed";

#[derive(Debug)]
struct VmPort {
    port: PortId,
    network: String,
    mac: Mac,
    /// Frames for it that could not be posted to its worker.
    closed: u64,
}

/// The counters of a network's uplink (`NetworkUplink.stats()`): frames to and from
/// `qemuweb network`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct UplinkStats {
    /// The network's id.
    pub network: String,
    /// Frames from the relay that the switch took.
    pub sent_frames: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Frames the VMs sent beyond the network, delivered to the relay.
    pub received_frames: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// Frames (or copies) dropped, by reason (as [`NicStats::dropped`]; `closed` for
    /// frames for a relay whose connection was gone or too far behind).
    pub dropped: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct UplinkPort {
    port: PortId,
    closed: u64,
}

/// The switch of a page and the VMs on it (one port per VM), and the networks' uplinks.
#[derive(Debug)]
pub struct PageNetwork {
    switch: Switch,
    networks: Vec<VirtualNetwork>,
    /// The networks already on the switch (added when a VM first attaches to them).
    added: Vec<String>,
    vms: HashMap<String, VmPort>,
    uplinks: HashMap<String, UplinkPort>,
}

impl PageNetwork {
    /// A network with these definitions (none on the switch yet).
    ///
    /// # Errors
    ///
    /// [`RuntimeError::InvalidInputs`] for a network that does not plan (bad addresses,
    /// ...) or an id given twice.
    pub fn new(networks: Vec<VirtualNetwork>) -> Result<Self> {
        for (i, n) in networks.iter().enumerate() {
            n.plan()
                .map_err(|e| RuntimeError::InvalidInputs(format!("networks: {e}")))?;
            if networks[..i].iter().any(|o| o.id == n.id) {
                return Err(RuntimeError::InvalidInputs(format!(
                    "networks: '{}' is defined twice",
                    n.id
                )));
            }
        }
        Ok(PageNetwork {
            switch: Switch::new(),
            networks,
            added: Vec::new(),
            vms: HashMap::new(),
            uplinks: HashMap::new(),
        })
    }

    /// Attaches VM `vm_id`'s NIC to its network.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::InvalidInputs`] for a network this page does not define, a VM
    /// already attached, a MAC already on the network, a reserved address that is not
    /// free, a full network.
    pub fn attach(&mut self, vm_id: &str, nic: &PlannedNic) -> Result<()> {
        let bad = |reason: String| RuntimeError::InvalidInputs(reason);
        if self.vms.contains_key(vm_id) {
            return Err(bad(format!(
                "VM {vm_id:?} is already on the page's network"
            )));
        }
        self.ensure_network(&nic.network)?;
        let mut joining = Nic::new(vm_id, nic.mac);
        if let Some(ip) = nic.ip {
            joining = joining.with_ip(ip);
        }
        let port = self
            .switch
            .attach(&nic.network, joining)
            .map_err(|e| bad(e.to_string()))?;
        self.vms.insert(
            vm_id.to_string(),
            VmPort {
                port,
                network: nic.network.clone(),
                mac: nic.mac,
                closed: 0,
            },
        );
        Ok(())
    }

    /// Puts network `network` on the switch, if it is not yet.
    fn ensure_network(&mut self, network: &str) -> Result<()> {
        let bad = |reason: String| RuntimeError::InvalidInputs(reason);
        if self.added.iter().any(|n| n == network) {
            return Ok(());
        }
        let Some(def) = self.networks.iter().find(|n| n.id == network) else {
            let known: Vec<&str> = self.networks.iter().map(|n| n.id.as_str()).collect();
            return Err(bad(format!(
                "no network '{network}' is defined (this client has: {})",
                known.join(", ")
            )));
        };
        let plan = def
            .plan()
            .map_err(|e| bad(format!("network '{network}': {e}")))?;
        self.switch
            .add_network(plan)
            .map_err(|e| bad(e.to_string()))?;
        self.added.push(network.to_string());
        Ok(())
    }

    /// Attaches the uplink of NAT network `network` (the page's end of `qemuweb
    /// network`): what its VMs send beyond the network goes to it
    /// ([`drain_uplinks`](Self::drain_uplinks)), what it sends comes in through
    /// [`send_uplink`](Self::send_uplink).
    ///
    /// # Errors
    ///
    /// [`RuntimeError::InvalidInputs`] for a network this page does not define, an
    /// isolated network, or one with an uplink already.
    pub fn connect_uplink(&mut self, network: &str) -> Result<()> {
        self.ensure_network(network)?;
        let port = self
            .switch
            .attach_uplink(network)
            .map_err(|e| RuntimeError::InvalidInputs(e.to_string()))?;
        self.uplinks
            .insert(network.to_string(), UplinkPort { port, closed: 0 });
        Ok(())
    }

    /// Detaches network `network`'s uplink (its connection closed); its traffic is
    /// dropped as `no-route` again.
    pub fn disconnect_uplink(&mut self, network: &str) {
        if let Some(u) = self.uplinks.remove(network) {
            let _ = self.switch.detach(u.port);
        }
    }

    /// A frame from network `network`'s uplink, at `now_ms`; `None` without an uplink.
    pub fn send_uplink(&mut self, network: &str, frame: &[u8], now_ms: u64) -> Option<SendOutcome> {
        let port = self.uplinks.get(network)?.port;
        self.switch.send(port, frame, now_ms).ok()
    }

    /// Hands every frame waiting for an uplink to `deliver(network, frame)`, which says
    /// whether it could send it; those it could not are counted as [`DROP_CLOSED`].
    pub fn drain_uplinks(&mut self, mut deliver: impl FnMut(&str, Vec<u8>) -> bool) {
        for (network, u) in self.uplinks.iter_mut() {
            while let Some(frame) = self.switch.recv(u.port) {
                if !deliver(network, frame) {
                    u.closed += 1;
                }
            }
        }
    }

    /// The counters of network `network`'s uplink.
    pub fn uplink_stats(&self, network: &str) -> Option<UplinkStats> {
        let u = self.uplinks.get(network)?;
        let s = self.switch.stats(u.port).ok()?;
        let mut dropped: BTreeMap<String, u64> = DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), s.dropped(*r)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if u.closed > 0 {
            dropped.insert(DROP_CLOSED.into(), u.closed);
        }
        Some(UplinkStats {
            network: network.to_string(),
            sent_frames: s.sent_frames,
            sent_bytes: s.sent_bytes,
            received_frames: s.received_frames,
            received_bytes: s.received_bytes,
            dropped,
        })
    }

    /// Takes VM `vm_id` off the network (when it stops); frames queued for it go.
    pub fn detach(&mut self, vm_id: &str) {
        if let Some(v) = self.vms.remove(vm_id) {
            let _ = self.switch.detach(v.port);
        }
    }

    /// Whether VM `vm_id` is on the network.
    pub fn has(&self, vm_id: &str) -> bool {
        self.vms.contains_key(vm_id)
    }

    /// A frame VM `vm_id`'s guest sent, at `now_ms`; `None` for a VM not on the network
    /// (a late frame of a stopped VM).
    pub fn send(&mut self, vm_id: &str, frame: &[u8], now_ms: u64) -> Option<SendOutcome> {
        let port = self.vms.get(vm_id)?.port;
        self.switch.send(port, frame, now_ms).ok()
    }

    /// Hands every frame waiting for a VM to `deliver(vm_id, frame)`, which says whether
    /// it could post it; those it could not are counted as [`DROP_CLOSED`] on that VM.
    pub fn drain(&mut self, mut deliver: impl FnMut(&str, Vec<u8>) -> bool) {
        for (vm_id, v) in self.vms.iter_mut() {
            while let Some(frame) = self.switch.recv(v.port) {
                if !deliver(vm_id, frame) {
                    v.closed += 1;
                }
            }
        }
    }

    /// The counters of VM `vm_id`'s NIC.
    pub fn stats(&self, vm_id: &str) -> Option<NicStats> {
        let v = self.vms.get(vm_id)?;
        let s = self.switch.stats(v.port).ok()?;
        let mut dropped: BTreeMap<String, u64> = DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), s.dropped(*r)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if v.closed > 0 {
            dropped.insert(DROP_CLOSED.into(), v.closed);
        }
        Some(NicStats {
            network: v.network.clone(),
            mac: format_mac(v.mac),
            sent_frames: s.sent_frames,
            sent_bytes: s.sent_bytes,
            received_frames: s.received_frames,
            received_bytes: s.received_bytes,
            dropped,
        })
    }
}

/// One end of a frame channel (a `MessagePort`) with its message listener (wasm32 only):
/// the VM worker's end, on the NIC, and the page's end, on the switch. Dropping it removes
/// the listener and closes the port.
#[cfg(target_arch = "wasm32")]
pub(crate) struct PortListener {
    port: web_sys::MessagePort,
    _on_message: wasm_bindgen::closure::Closure<dyn FnMut(web_sys::MessageEvent)>,
}

#[cfg(target_arch = "wasm32")]
impl PortListener {
    /// Calls `on_message` with each message's data that arrives on `port`.
    pub(crate) fn new(
        port: web_sys::MessagePort,
        on_message: impl FnMut(wasm_bindgen::JsValue) + 'static,
    ) -> Self {
        use wasm_bindgen::JsCast;
        let mut on_message = on_message;
        let on_message = wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |e: web_sys::MessageEvent| on_message(e.data()),
        );
        port.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        PortListener {
            port,
            _on_message: on_message,
        }
    }

    /// Posts `frame` as an `ArrayBuffer` it transfers; `false` if the port refused it.
    pub(crate) fn post_frame(&self, frame: &js_sys::Uint8Array) -> bool {
        post_frame(&self.port, frame)
    }
}

/// Posts `frame` to `port` as an `ArrayBuffer` it transfers (a view of part of a buffer,
/// such as v86's device memory, is copied first); `false` if the port refused it.
#[cfg(target_arch = "wasm32")]
pub(crate) fn post_frame(port: &web_sys::MessagePort, frame: &js_sys::Uint8Array) -> bool {
    let whole = frame.byte_offset() == 0 && frame.byte_length() == frame.buffer().byte_length();
    let buffer = if whole {
        frame.buffer()
    } else {
        frame.slice(0, frame.length()).buffer()
    };
    port.post_message_with_transferable(&buffer, &js_sys::Array::of1(&buffer))
        .is_ok()
}

#[cfg(target_arch = "wasm32")]
impl Drop for PortListener {
    fn drop(&mut self) {
        self.port.set_onmessage(None);
        self.port.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qemuweb_config::{profile_by_id, NetMode};

    fn i386() -> VmProfile {
        profile_by_id("linux-i386-pc-nographic").unwrap()
    }

    fn on(network: &str) -> VmOverrides {
        VmOverrides {
            networks: Some(vec![NetworkAttachment::on(network)]),
            ..VmOverrides::default()
        }
    }

    fn nic(vm: &str, network: &str) -> PlannedNic {
        plan_nics(vm, &i386(), Some(&on(network)), EngineKind::V86)
            .unwrap()
            .remove(0)
    }

    /// A broadcast frame from `mac` with a local EtherType and `fill` as payload.
    fn broadcast(mac: Mac, fill: u8) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend(mac);
        f.extend([0x88, 0xb5]);
        f.extend([fill; 46]);
        f
    }

    fn unicast(to: Mac, from: Mac, fill: u8) -> Vec<u8> {
        let mut f = to.to_vec();
        f.extend(from);
        f.extend([0x88, 0xb5]);
        f.extend([fill; 46]);
        f
    }

    fn drained(net: &mut PageNetwork) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        net.drain(|vm, f| {
            out.push((vm.to_string(), f));
            true
        });
        out.sort();
        out
    }

    #[test]
    fn an_uplink_carries_what_is_beyond_the_network() {
        let mut net = PageNetwork::new(qemuweb_config::default_networks()).unwrap();
        // Before any VM: the network is put on the switch for it.
        net.connect_uplink("default").unwrap();
        assert!(net.connect_uplink("default").is_err(), "one per network");
        assert!(net.connect_uplink("isolated").is_err(), "isolated");
        assert!(net.connect_uplink("nope").is_err());
        let a = nic("a", "default");
        net.attach("a", &a).unwrap();
        let gw = qemuweb_net::services::gateway_mac(Ipv4Addr::new(10, 0, 2, 2));
        // An ARP reply to the gateway (not for its services) goes to the uplink.
        let mut arp = gw.to_vec();
        arp.extend(a.mac);
        arp.extend([0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
        arp.extend(a.mac);
        arp.extend([10, 0, 2, 15]);
        arp.extend(gw);
        arp.extend([10, 0, 2, 2]);
        net.send("a", &arp, 0).unwrap();
        let mut up = Vec::new();
        net.drain_uplinks(|n, f| {
            up.push((n.to_string(), f));
            true
        });
        assert_eq!(up, [("default".to_string(), arp)]);
        // The relay's frame to the VM comes in as the gateway's.
        let back = unicast(a.mac, gw, 7);
        net.send_uplink("default", &back, 0).unwrap();
        assert_eq!(drained(&mut net), [("a".to_string(), back)]);
        let stats = net.uplink_stats("default").unwrap();
        assert_eq!((stats.sent_frames, stats.received_frames), (1, 1));
        net.disconnect_uplink("default");
        assert!(net.uplink_stats("default").is_none());
        assert!(net
            .send_uplink("default", &unicast(a.mac, gw, 7), 0)
            .is_none());
    }

    #[test]
    fn nics_come_from_the_overrides_or_the_profile() {
        let p = i386();
        assert!(plan_nics("a", &p, None, EngineKind::V86)
            .unwrap()
            .is_empty());
        let n = nic("a", "isolated");
        assert_eq!(n.network, "isolated");
        assert_eq!(n.mac, default_mac("a", 0));
        assert_eq!(n.model, NicModel::VirtioNet);
        let mut with_profile = p.clone();
        with_profile.networks = vec![NetworkAttachment {
            mac: Some("52:54:00:aa:bb:cc".into()),
            model: Some(NicModel::Ne2kPci),
            ip: Some("10.0.2.77".into()),
            ..NetworkAttachment::on("default")
        }];
        let n = plan_nics("a", &with_profile, None, EngineKind::V86).unwrap();
        assert_eq!(n[0].mac, [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
        assert_eq!(n[0].model, NicModel::Ne2kPci);
        assert_eq!(n[0].ip, Some(Ipv4Addr::new(10, 0, 2, 77)));
        let off = VmOverrides {
            net: Some(NetMode::None),
            ..VmOverrides::default()
        };
        assert!(plan_nics("a", &with_profile, Some(&off), EngineKind::V86)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn qemu_nics_get_the_builds_models_and_bad_nics_are_refused() {
        // QEMU: e1000 for the i386 PC, virtio-net elsewhere; ne2k-pci is not in the build.
        let n = plan_nics("a", &i386(), Some(&on("default")), EngineKind::Qemu).unwrap();
        assert_eq!(
            (n[0].model, n[0].mac),
            (NicModel::E1000, default_mac("a", 0))
        );
        let x64 = profile_by_id("linux-x86_64-pc-nographic").unwrap();
        let n = plan_nics("a", &x64, Some(&on("default")), EngineKind::Qemu).unwrap();
        assert_eq!(n[0].model, NicModel::VirtioNet);
        let ne2k = VmOverrides {
            networks: Some(vec![NetworkAttachment {
                model: Some(NicModel::Ne2kPci),
                ..NetworkAttachment::on("default")
            }]),
            ..VmOverrides::default()
        };
        let e = plan_nics("a", &i386(), Some(&ne2k), EngineKind::Qemu).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::Unsupported);
        assert!(e.to_string().contains("e1000 and virtio-net"), "{e}");
        // The MACs go into QEMU's arguments through the overrides.
        let pinned = with_nic_macs(&i386(), Some(&ne2k), &n).unwrap();
        let a = &pinned.networks.unwrap()[0];
        assert_eq!(a.mac.as_deref(), Some(format_mac(n[0].mac).as_str()));
        assert_eq!(a.model, Some(NicModel::Ne2kPci), "the rest is kept");
        assert!(with_nic_macs(&i386(), None, &[]).is_none());
        let two = VmOverrides {
            networks: Some(vec![
                NetworkAttachment::on("default"),
                NetworkAttachment::on("isolated"),
            ]),
            ..VmOverrides::default()
        };
        let e = plan_nics("a", &i386(), Some(&two), EngineKind::V86).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::InvalidInputs);
        for (mac, model, ip) in [
            (Some("01:00:00:00:00:01"), None, None),
            (Some("zz"), None, None),
            (None, Some(NicModel::E1000), None),
            (None, None, Some("10.0.2")),
        ] {
            let ov = VmOverrides {
                networks: Some(vec![NetworkAttachment {
                    mac: mac.map(Into::into),
                    model,
                    ip: ip.map(Into::into),
                    ..NetworkAttachment::on("default")
                }]),
                ..VmOverrides::default()
            };
            assert!(plan_nics("a", &i386(), Some(&ov), EngineKind::V86).is_err());
        }
    }

    #[test]
    fn frames_go_to_the_ports_of_their_network_only() {
        let mut net = PageNetwork::new(qemuweb_config::default_networks()).unwrap();
        let (a, b, c) = (
            nic("a", "default"),
            nic("b", "default"),
            nic("c", "isolated"),
        );
        net.attach("a", &a).unwrap();
        net.attach("b", &b).unwrap();
        net.attach("c", &c).unwrap();
        // Broadcast from a: b only (not a itself, not c on the other network).
        let f = broadcast(a.mac, 1);
        assert!(matches!(
            net.send("a", &f, 0),
            Some(SendOutcome::Forwarded { copies: 1 })
        ));
        assert_eq!(drained(&mut net), vec![("b".to_string(), f)]);
        // b answers a by its learned address.
        let g = unicast(a.mac, b.mac, 2);
        net.send("b", &g, 1).unwrap();
        assert_eq!(drained(&mut net), vec![("a".to_string(), g)]);
        // c's broadcast reaches nobody on default; c's unicast to a is flooded within
        // isolated only, where nobody else is.
        net.send("c", &broadcast(c.mac, 3), 2).unwrap();
        net.send("c", &unicast(a.mac, c.mac, 4), 3).unwrap();
        assert!(drained(&mut net).is_empty());
        let sa = net.stats("a").unwrap();
        assert_eq!((sa.sent_frames, sa.received_frames), (1, 1));
        assert_eq!(sa.network, "default");
        assert_eq!(sa.mac, format_mac(a.mac));
        assert_eq!(net.stats("c").unwrap().received_frames, 0);
    }

    #[test]
    fn drops_are_counted_on_the_vm() {
        let mut net = PageNetwork::new(qemuweb_config::default_networks()).unwrap();
        let (a, b) = (nic("a", "default"), nic("b", "default"));
        net.attach("a", &a).unwrap();
        net.attach("b", &b).unwrap();
        // A runt and a frame from a group address are the switch's drops.
        assert_eq!(
            net.send("a", &[0u8; 10], 0),
            Some(SendOutcome::Dropped(DropReason::Runt))
        );
        let mut bad = broadcast(a.mac, 0);
        bad[6] = 0x01;
        net.send("a", &bad, 0).unwrap();
        // Frames for b that its channel cannot take are `closed`.
        net.send("a", &broadcast(a.mac, 5), 0).unwrap();
        net.send("a", &broadcast(a.mac, 6), 0).unwrap();
        net.drain(|_, _| false);
        let sa = net.stats("a").unwrap();
        assert_eq!(sa.dropped.get("runt"), Some(&1));
        assert_eq!(sa.dropped.get("bad-source"), Some(&1));
        assert_eq!(sa.sent_frames, 2);
        assert_eq!(net.stats("b").unwrap().dropped.get(DROP_CLOSED), Some(&2));
        // A detached VM's late frames go nowhere; it can attach again.
        net.detach("b");
        assert!(!net.has("b") && net.send("b", &broadcast(b.mac, 7), 1).is_none());
        net.send("a", &broadcast(a.mac, 8), 1).unwrap();
        assert!(drained(&mut net).is_empty());
        net.attach("b", &b).unwrap();
    }

    #[test]
    fn unknown_networks_duplicates_and_bad_definitions_are_refused() {
        let mut net = PageNetwork::new(qemuweb_config::default_networks()).unwrap();
        let e = net.attach("a", &nic("a", "nowhere")).unwrap_err();
        assert!(e.to_string().contains("default, isolated"), "{e}");
        net.attach("a", &nic("a", "default")).unwrap();
        assert!(net.attach("a", &nic("a", "default")).is_err());
        // Another VM with a's MAC.
        assert!(net.attach("b", &nic("a", "default")).is_err());
        let mut twice = qemuweb_config::default_networks();
        twice.push(twice[0].clone());
        assert!(PageNetwork::new(twice).is_err());
        let bad = VirtualNetwork::nat("bad", "10.0.0.0/33");
        assert!(PageNetwork::new(vec![bad]).is_err());
    }
}
