//! The Ethernet switch: networks, ports, MAC learning, flooding and fair bounded queues.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use qemuweb_config::NetworkPlan;
use smoltcp::wire::EthernetAddress;

use crate::error::NetError;
use crate::frame::{validate_frame, DropReason};
use crate::limiter::RateLimiter;
use crate::queue::{EgressQueue, Pushed, Source, SERVICES};
use crate::services::{Handled, LeaseInfo, Services};
use crate::Mac;

/// The shortest frame a port receives; shorter ones are padded with zeros.
const MIN_DELIVERED_BYTES: usize = 60;

/// Bounds of the switch itself (the per-port rates come from each network's
/// [`PortLimits`](qemuweb_config::PortLimits)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchLimits {
    /// The most ports (NICs) on one network (default 64).
    pub max_ports_per_network: usize,
    /// The most bytes waiting in one port's egress queue (default 512 KiB).
    pub queue_bytes: usize,
    /// The most frames of one sender waiting in one port's egress queue (default 256).
    pub queue_frames_per_sender: usize,
}

impl Default for SwitchLimits {
    fn default() -> Self {
        SwitchLimits {
            max_ports_per_network: 64,
            queue_bytes: 512 << 10,
            queue_frames_per_sender: 256,
        }
    }
}

/// A VM's NIC, as it joins a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The VM's id, which is also its name in the network's DNS: 1 to 63 ASCII letters,
    /// digits, `-` or `_`.
    pub vm: String,
    /// The NIC's MAC address (unicast).
    pub mac: Mac,
    /// An address the network's DHCP always gives this NIC.
    pub ip: Option<Ipv4Addr>,
}

impl Nic {
    /// A NIC of VM `vm` with MAC `mac`, addressed by DHCP from the network's range.
    pub fn new(vm: impl Into<String>, mac: Mac) -> Self {
        Nic {
            vm: vm.into(),
            mac,
            ip: None,
        }
    }

    /// The same NIC with a reserved address.
    pub fn with_ip(mut self, ip: Ipv4Addr) -> Self {
        self.ip = Some(ip);
        self
    }
}

/// A port of the switch: one NIC on one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortId(u64);

impl PortId {
    fn new(slot: usize, generation: u32) -> Self {
        PortId((u64::from(generation) << 32) | slot as u64)
    }

    fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// The id as a number (for logs and messages across workers).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

const REASONS: [DropReason; 9] = DropReason::ALL;

/// A port's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames the port sent that the switch accepted.
    pub sent_frames: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Frames the port received.
    pub received_frames: u64,
    /// Their bytes.
    pub received_bytes: u64,
    dropped: [u64; REASONS.len()],
}

impl PortStats {
    /// How many of the port's frames (or copies of them) were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.dropped[i])
    }

    /// All of the port's dropped frames and copies.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    fn count(&mut self, reason: DropReason) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.dropped[i] += 1;
        }
    }
}

/// What became of a frame a port sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted: queued for `copies` ports (or taken by the network's services, which
    /// count as one); copies that found a full queue are counted as
    /// [`DropReason::QueueFull`] on the sender.
    Forwarded {
        /// How many ports (and services) took it.
        copies: usize,
    },
    /// Dropped, and counted on the sending port.
    Dropped(DropReason),
}

#[derive(Debug)]
struct Network {
    services: Services,
    max_frame_bytes: usize,
    max_macs: usize,
    limits: qemuweb_config::PortLimits,
    id: String,
    ports: Vec<usize>,
    macs: HashMap<Mac, usize>,
    /// The slot of the network's uplink port, if one is attached.
    uplink: Option<usize>,
    nat: bool,
}

#[derive(Debug)]
struct Port {
    id: PortId,
    network: usize,
    nic: Nic,
    limiter: RateLimiter,
    queue: EgressQueue,
    learned: Vec<Mac>,
    stats: PortStats,
    /// The network's uplink: behind the gateway's MAC address, sending as the gateway.
    uplink: bool,
}

/// An Ethernet switch for the VMs of a page, with any number of isolated networks.
///
/// Each network is a separate broadcast domain with its own MAC table and its own services
/// ([`services`](crate::services)); a port belongs to exactly one. What a port sends is
/// checked ([`validate_frame`], the network's largest frame, its rate, the number of MAC
/// addresses it may use) and then goes to the ports it is for: the learned port of its
/// destination, or every other port of the network for broadcast, multicast and unknown
/// destinations. Each port's queue is bounded and shared fairly between the ports sending
/// to it, so a flooding port loses its own frames, counted on its
/// [`PortStats`], and the others' frames still arrive.
#[derive(Debug, Default)]
pub struct Switch {
    limits: SwitchLimits,
    networks: Vec<Network>,
    slots: Vec<Option<Port>>,
    generations: Vec<u32>,
}

fn valid_vm_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Switch {
    /// A free port slot: a detached port's, or a new one.
    fn free_slot(&mut self) -> usize {
        match self.slots.iter().position(Option::is_none) {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                self.slots.len() - 1
            }
        }
    }

    /// A switch with no networks and the default [`SwitchLimits`].
    pub fn new() -> Self {
        Switch::default()
    }

    /// A switch with other limits.
    pub fn with_limits(limits: SwitchLimits) -> Self {
        Switch {
            limits,
            ..Switch::default()
        }
    }

    /// Adds a network, from a plan made by
    /// [`VirtualNetwork::plan`](qemuweb_config::VirtualNetwork::plan).
    ///
    /// # Errors
    ///
    /// [`InvalidNetwork`](crate::ErrorKind::InvalidNetwork) when its id is taken or the plan
    /// is inconsistent (built by hand with a prefix outside 8-29, addresses outside the
    /// network, bad limits).
    pub fn add_network(&mut self, plan: NetworkPlan) -> Result<(), NetError> {
        let bad = |reason: &str| NetError::InvalidNetwork {
            id: plan.id.clone(),
            reason: reason.into(),
        };
        if self.networks.iter().any(|n| n.id == plan.id) {
            return Err(bad("a network with this id is on the switch already"));
        }
        if !(8..=29).contains(&plan.prefix) {
            return Err(bad("the prefix must be from 8 to 29"));
        }
        let dhcp_ok = plan.dhcp.is_none_or(|d| {
            plan.is_host(d.start) && plan.is_host(d.end) && d.start <= d.end && d.lease_seconds > 0
        });
        if !plan.is_host(plan.gateway) || plan.dns.is_some_and(|d| !plan.is_host(d)) || !dhcp_ok {
            return Err(bad("its addresses are not host addresses of the network"));
        }
        let l = plan.limits;
        if !(60..=9014).contains(&l.max_frame_bytes)
            || l.frames_per_second == 0
            || l.bytes_per_second == 0
            || l.burst_frames == 0
            || l.max_macs == 0
        {
            return Err(bad("its port limits are out of range"));
        }
        self.networks.push(Network {
            id: plan.id.clone(),
            max_frame_bytes: l.max_frame_bytes as usize,
            max_macs: l.max_macs as usize,
            limits: l,
            nat: plan.mode == qemuweb_config::NetworkMode::Nat,
            services: Services::new(plan),
            ports: Vec::new(),
            macs: HashMap::new(),
            uplink: None,
        });
        Ok(())
    }

    fn network_index(&self, id: &str) -> Result<usize, NetError> {
        self.networks
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| NetError::UnknownNetwork { id: id.into() })
    }

    /// Attaches a NIC to a network; frames it sends go in through [`Switch::send`], frames
    /// for it come out of [`Switch::recv`].
    ///
    /// # Errors
    ///
    /// [`UnknownNetwork`](crate::ErrorKind::UnknownNetwork);
    /// [`InvalidNic`](crate::ErrorKind::InvalidNic) for a bad name, a name or MAC already on
    /// the network, a group or gateway MAC, or a reserved address that is not free;
    /// [`TooManyPorts`](crate::ErrorKind::TooManyPorts).
    pub fn attach(&mut self, network: &str, nic: Nic) -> Result<PortId, NetError> {
        let n = self.network_index(network)?;
        let net = &self.networks[n];
        let bad = |reason: &str| NetError::InvalidNic {
            vm: nic.vm.clone(),
            mac: nic.mac,
            network: network.into(),
            reason: reason.into(),
        };
        if !valid_vm_name(&nic.vm) {
            return Err(bad(
                "the name must be 1 to 63 ASCII letters, digits, '-' or '_'",
            ));
        }
        let mac = EthernetAddress(nic.mac);
        if !mac.is_unicast() || nic.mac == [0; 6] || nic.mac == net.services.mac() {
            return Err(bad(
                "the MAC address is not a unicast address a NIC may use",
            ));
        }
        if net.services.has_name(&nic.vm) {
            return Err(bad("a VM of this name is on the network"));
        }
        let mac_taken = net.ports.iter().any(|s| {
            self.slots[*s]
                .as_ref()
                .is_some_and(|p| p.nic.mac == nic.mac)
        });
        if mac_taken {
            return Err(bad("a NIC with this MAC address is on the network"));
        }
        if let Some(ip) = nic.ip {
            if !net.services.can_reserve(ip, &nic.mac) {
                return Err(bad(
                    "the reserved address is not a free host address of the network",
                ));
            }
        }
        if net.ports.len() >= self.limits.max_ports_per_network {
            return Err(NetError::TooManyPorts {
                network: network.into(),
                max: self.limits.max_ports_per_network,
            });
        }
        let slot = self.free_slot();
        let id = PortId::new(slot, self.generations[slot]);
        let net = &mut self.networks[n];
        net.services.add_host(&nic.vm, nic.mac, nic.ip);
        net.ports.push(slot);
        // The NIC's own address is known before it sends (it may have moved from a port
        // that used it without owning it).
        if let Some(old) = net.macs.insert(nic.mac, slot) {
            if let Some(p) = self.slots[old].as_mut() {
                p.learned.retain(|m| *m != nic.mac);
            }
        }
        self.slots[slot] = Some(Port {
            id,
            network: n,
            limiter: RateLimiter::new(&net.limits),
            queue: EgressQueue::new(self.limits.queue_bytes, self.limits.queue_frames_per_sender),
            learned: vec![nic.mac],
            nic,
            stats: PortStats::default(),
            uplink: false,
        });
        Ok(id)
    }

    /// Attaches the uplink of a NAT network (the page's end of `qemuweb network`): the port
    /// behind the gateway's MAC address. It receives what the VMs send to the gateway that
    /// its services do not answer (traffic for addresses beyond the network or for the
    /// gateway's own address, ARP replies to the gateway) and the services' answers to the
    /// gateway's address; what it sends must come from the gateway's MAC address, goes to
    /// the services when it is for the gateway or everyone, and to the VMs it is for. It is
    /// never flooded to, and is not a VM (no name in DNS, no lease).
    ///
    /// # Errors
    ///
    /// [`UnknownNetwork`](crate::ErrorKind::UnknownNetwork);
    /// [`InvalidNetwork`](crate::ErrorKind::InvalidNetwork) for an isolated network or one
    /// with an uplink already.
    pub fn attach_uplink(&mut self, network: &str) -> Result<PortId, NetError> {
        let n = self.network_index(network)?;
        let net = &self.networks[n];
        if !net.nat || net.uplink.is_some() {
            return Err(NetError::InvalidNetwork {
                id: network.into(),
                reason: if net.nat {
                    "it has an uplink already".into()
                } else {
                    "an isolated network has no uplink".into()
                },
            });
        }
        let mac = net.services.mac();
        let slot = self.free_slot();
        let id = PortId::new(slot, self.generations[slot]);
        let net = &mut self.networks[n];
        net.uplink = Some(slot);
        net.macs.insert(mac, slot);
        self.slots[slot] = Some(Port {
            id,
            network: n,
            limiter: RateLimiter::new(&net.limits),
            queue: EgressQueue::new(self.limits.queue_bytes, self.limits.queue_frames_per_sender),
            learned: vec![mac],
            nic: Nic::new("uplink", mac),
            stats: PortStats::default(),
            uplink: true,
        });
        Ok(id)
    }

    fn port(&self, id: PortId) -> Result<&Port, NetError> {
        self.slots
            .get(id.slot())
            .and_then(Option::as_ref)
            .filter(|p| p.id == id)
            .ok_or(NetError::UnknownPort(id.0))
    }

    fn port_mut(&mut self, id: PortId) -> Result<&mut Port, NetError> {
        self.slots
            .get_mut(id.slot())
            .and_then(Option::as_mut)
            .filter(|p| p.id == id)
            .ok_or(NetError::UnknownPort(id.0))
    }

    /// Detaches a port: its queue, its learned addresses and its frames waiting for other
    /// ports go; its DHCP lease is remembered.
    ///
    /// # Errors
    ///
    /// [`UnknownPort`](crate::ErrorKind::UnknownPort).
    pub fn detach(&mut self, id: PortId) -> Result<(), NetError> {
        self.port(id)?;
        let slot = id.slot();
        let port = self.slots[slot].take().expect("checked above");
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        let net = &mut self.networks[port.network];
        net.ports.retain(|s| *s != slot);
        net.macs.retain(|_, s| *s != slot);
        if port.uplink {
            net.uplink = None;
        } else {
            net.services.remove_host(&port.nic.vm, &port.nic.mac);
        }
        for s in net.ports.iter().chain(net.uplink.as_ref()) {
            if let Some(p) = self.slots[*s].as_mut() {
                p.queue.forget(slot as Source);
            }
        }
        Ok(())
    }

    /// Takes a frame a NIC sent (without frame check sequence) at time `now_ms` (any
    /// monotonic clock in milliseconds), and queues it for the ports it is for.
    ///
    /// # Errors
    ///
    /// [`UnknownPort`](crate::ErrorKind::UnknownPort) only: what happens to the frame is
    /// the [`SendOutcome`].
    pub fn send(&mut self, id: PortId, frame: &[u8], now_ms: u64) -> Result<SendOutcome, NetError> {
        let slot = id.slot();
        let port = self.port(id)?;
        let n = port.network;
        let net = &self.networks[n];
        let uplink = port.uplink;
        let checked = validate_frame(frame, net.max_frame_bytes).and_then(|view| {
            // A VM may not send as the gateway; the uplink sends only as the gateway.
            if (view.src_addr().0 == net.services.mac()) != uplink {
                Err(DropReason::Spoofed)
            } else {
                Ok(view)
            }
        });
        let view = match checked {
            Ok(v) => v,
            Err(reason) => return Ok(self.drop_at(slot, reason)),
        };
        let src = view.src_addr().0;
        let dst = view.dst_addr();
        let learned_here = net.macs.get(&src) == Some(&slot) || uplink;
        let max_macs = net.max_macs;
        let port = self.slots[slot].as_mut().expect("checked above");
        if !learned_here && port.learned.len() >= max_macs {
            return Ok(self.drop_at(slot, DropReason::TooManyMacs));
        }
        if !port.limiter.take(now_ms, frame.len()) {
            return Ok(self.drop_at(slot, DropReason::RateLimited));
        }
        port.stats.sent_frames += 1;
        port.stats.sent_bytes += frame.len() as u64;
        if !learned_here {
            port.learned.push(src);
            if let Some(old) = self.networks[n].macs.insert(src, slot) {
                if let Some(p) = self.slots[old].as_mut() {
                    p.learned.retain(|m| *m != src);
                }
            }
        }
        let net = &mut self.networks[n];
        let to_gateway = dst == EthernetAddress(net.services.mac());
        let uplink_slot = net.uplink;
        let mut copies = 0;
        if to_gateway || !dst.is_unicast() {
            match net.services.handle(&view, now_ms) {
                Handled::Answered(replies) => {
                    copies += 1;
                    for reply in replies {
                        self.deliver_from(n, SERVICES, reply);
                    }
                }
                // Beyond the network: the uplink's, if there is one (never back to it).
                Handled::Beyond => match uplink_slot {
                    Some(u) if !uplink => {
                        let queued = self.deliver_to(u, slot as Source, frame.to_vec());
                        return Ok(SendOutcome::Forwarded { copies: queued });
                    }
                    _ => return Ok(self.drop_at(slot, DropReason::NoRoute)),
                },
                Handled::NotMine => {}
            }
            if to_gateway {
                return Ok(SendOutcome::Forwarded { copies });
            }
        }
        copies += self.deliver_from(n, slot as Source, frame.to_vec());
        Ok(SendOutcome::Forwarded { copies })
    }

    /// Queues a frame from `source` for the port in `slot` only; the number of ports that
    /// queued it (0 or 1; a full queue is counted on the source).
    fn deliver_to(&mut self, slot: usize, source: Source, frame: Vec<u8>) -> usize {
        let Some(port) = self.slots[slot].as_mut() else {
            return 0;
        };
        let (queued, lost) = match port.queue.push(source, frame) {
            Pushed::Queued { evicted } => (1, evicted),
            Pushed::Refused => (0, vec![source]),
        };
        for s in lost {
            if s != SERVICES {
                if let Some(p) = self.slots.get_mut(s as usize).and_then(Option::as_mut) {
                    p.stats.count(DropReason::QueueFull);
                }
            }
        }
        queued
    }

    /// Queues a frame from `source` (a port's slot or the services) for the ports of
    /// network `n` it is for; the number of ports that queued it.
    fn deliver_from(&mut self, n: usize, source: Source, mut frame: Vec<u8>) -> usize {
        // As on a wire, no frame is shorter than 60 bytes (64 with the check sequence):
        // short ones are padded with zeros, which some NIC models require.
        if frame.len() < MIN_DELIVERED_BYTES {
            frame.resize(MIN_DELIVERED_BYTES, 0);
        }
        let net = &self.networks[n];
        let Some(dst) = frame.get(..6).map(EthernetAddress::from_bytes) else {
            return 0;
        };
        let targets: Vec<usize> = match net.macs.get(&dst.0) {
            Some(s) if dst.is_unicast() => {
                if *s as Source == source {
                    Vec::new() // for the sender itself: filtered
                } else {
                    vec![*s]
                }
            }
            _ => net
                .ports
                .iter()
                .copied()
                .filter(|s| *s as Source != source)
                .collect(),
        };
        let mut queued = 0;
        let mut lost: Vec<Source> = Vec::new();
        let mut frame = Some(frame);
        for (i, t) in targets.iter().enumerate() {
            let Some(port) = self.slots[*t].as_mut() else {
                continue;
            };
            // The last target takes the frame itself, the others a copy.
            let copy = match (i + 1 == targets.len(), frame.take()) {
                (true, Some(f)) => f,
                (_, Some(f)) => {
                    let copy = f.clone();
                    frame = Some(f);
                    copy
                }
                (_, None) => break,
            };
            match port.queue.push(source, copy) {
                Pushed::Queued { evicted } => {
                    queued += 1;
                    lost.extend(evicted);
                }
                Pushed::Refused => lost.push(source),
            }
        }
        for s in lost {
            if s != SERVICES {
                if let Some(p) = self.slots.get_mut(s as usize).and_then(Option::as_mut) {
                    p.stats.count(DropReason::QueueFull);
                }
            }
        }
        queued
    }

    fn drop_at(&mut self, slot: usize, reason: DropReason) -> SendOutcome {
        if let Some(p) = self.slots[slot].as_mut() {
            p.stats.count(reason);
        }
        SendOutcome::Dropped(reason)
    }

    /// The next frame for a port's NIC, if any (senders take turns).
    ///
    /// Returns `None` for a port that is not attached.
    pub fn recv(&mut self, id: PortId) -> Option<Vec<u8>> {
        let port = self.port_mut(id).ok()?;
        let frame = port.queue.pop()?;
        port.stats.received_frames += 1;
        port.stats.received_bytes += frame.len() as u64;
        Some(frame)
    }

    /// How many frames wait for a port.
    ///
    /// # Errors
    ///
    /// [`UnknownPort`](crate::ErrorKind::UnknownPort).
    pub fn pending(&self, id: PortId) -> Result<usize, NetError> {
        Ok(self.port(id)?.queue.len())
    }

    /// A port's counters.
    ///
    /// # Errors
    ///
    /// [`UnknownPort`](crate::ErrorKind::UnknownPort).
    pub fn stats(&self, id: PortId) -> Result<&PortStats, NetError> {
        Ok(&self.port(id)?.stats)
    }

    /// The bound DHCP leases of a network, by address.
    ///
    /// # Errors
    ///
    /// [`UnknownNetwork`](crate::ErrorKind::UnknownNetwork).
    pub fn leases(&self, network: &str, now_ms: u64) -> Result<Vec<LeaseInfo>, NetError> {
        Ok(self.networks[self.network_index(network)?]
            .services
            .leases(now_ms))
    }

    /// The address a VM on a network has now (its reserved one or its lease), as the
    /// network's DNS answers it.
    ///
    /// # Errors
    ///
    /// [`UnknownNetwork`](crate::ErrorKind::UnknownNetwork).
    pub fn resolve(
        &self,
        network: &str,
        vm: &str,
        now_ms: u64,
    ) -> Result<Option<Ipv4Addr>, NetError> {
        Ok(self.networks[self.network_index(network)?]
            .services
            .resolve(vm, now_ms))
    }

    /// The gateway's MAC address on a network.
    ///
    /// # Errors
    ///
    /// [`UnknownNetwork`](crate::ErrorKind::UnknownNetwork).
    pub fn gateway_mac(&self, network: &str) -> Result<Mac, NetError> {
        Ok(self.networks[self.network_index(network)?].services.mac())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qemuweb_config::{network_by_id, PortLimits, VirtualNetwork};

    const A: Mac = [0x52, 0x54, 0, 0, 0, 0xa];
    const B: Mac = [0x52, 0x54, 0, 0, 0, 0xb];
    const C: Mac = [0x52, 0x54, 0, 0, 0, 0xc];
    const BROADCAST: Mac = [0xff; 6];

    /// A frame of a local experimental EtherType (0x88b5), which the services ignore.
    fn frame(src: Mac, dst: Mac, tag: u8) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend(src);
        f.extend([0x88, 0xb5]);
        f.extend([tag; 46]);
        f
    }

    fn switch_with(limits: PortLimits) -> (Switch, PortId, PortId, PortId) {
        switch_of(Switch::new(), limits)
    }

    fn switch_of(mut s: Switch, limits: PortLimits) -> (Switch, PortId, PortId, PortId) {
        let mut plan = network_by_id("default").unwrap().plan().unwrap();
        plan.limits = limits;
        s.add_network(plan).unwrap();
        let a = s.attach("default", Nic::new("a", A)).unwrap();
        let b = s.attach("default", Nic::new("b", B)).unwrap();
        let c = s.attach("default", Nic::new("c", C)).unwrap();
        (s, a, b, c)
    }

    fn drain(s: &mut Switch, p: PortId) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| s.recv(p)).collect()
    }

    #[test]
    fn broadcast_floods_and_unicast_goes_to_the_learned_port() {
        let (mut s, a, b, c) = switch_with(PortLimits::default());
        let hello = frame(A, BROADCAST, 1);
        assert_eq!(
            s.send(a, &hello, 0).unwrap(),
            SendOutcome::Forwarded { copies: 2 }
        );
        assert_eq!(drain(&mut s, b), std::slice::from_ref(&hello));
        assert_eq!(drain(&mut s, c), [hello]);
        assert!(drain(&mut s, a).is_empty());
        let reply = frame(B, A, 2);
        assert_eq!(
            s.send(b, &reply, 0).unwrap(),
            SendOutcome::Forwarded { copies: 1 }
        );
        assert_eq!(drain(&mut s, a), [reply]);
        assert!(drain(&mut s, c).is_empty());
        // An unknown destination floods; once it has sent, it is known.
        let guest_mac = [0x02, 0, 0, 0, 0, 7];
        let to_unknown = frame(A, guest_mac, 3);
        assert_eq!(
            s.send(a, &to_unknown, 0).unwrap(),
            SendOutcome::Forwarded { copies: 2 }
        );
        drain(&mut s, b);
        drain(&mut s, c);
        s.send(c, &frame(guest_mac, BROADCAST, 4), 0).unwrap();
        assert_eq!(
            s.send(a, &to_unknown, 0).unwrap(),
            SendOutcome::Forwarded { copies: 1 }
        );
        assert_eq!(drain(&mut s, c).len(), 1);
        // A frame for an address behind the sender itself goes nowhere.
        assert_eq!(
            s.send(c, &frame(C, guest_mac, 5), 0).unwrap(),
            SendOutcome::Forwarded { copies: 0 }
        );
        // A short frame (an unpadded ARP request) arrives padded to 60 bytes.
        drain(&mut s, b);
        let mut short = frame(A, BROADCAST, 6);
        short.truncate(42);
        s.send(a, &short, 0).unwrap();
        let got = drain(&mut s, b);
        assert_eq!(
            (got[0].len(), &got[0][..42], &got[0][42..]),
            (60, &short[..], &[0u8; 18][..])
        );
        drain(&mut s, c);
        assert_eq!(s.stats(a).unwrap().sent_frames, 4);
        assert_eq!(s.stats(a).unwrap().received_frames, 1);
    }

    #[test]
    fn networks_are_isolated() {
        let (mut s, a, b, _) = switch_with(PortLimits::default());
        s.add_network(VirtualNetwork::nat("other", "10.9.0.0/24").plan().unwrap())
            .unwrap();
        // The same MAC and name may exist on another network.
        let x = s.attach("other", Nic::new("a", A)).unwrap();
        s.send(x, &frame(A, BROADCAST, 1), 0).unwrap();
        s.send(x, &frame(A, B, 1), 0).unwrap();
        assert!(drain(&mut s, a).is_empty() && drain(&mut s, b).is_empty());
        s.send(a, &frame(A, BROADCAST, 2), 0).unwrap();
        assert!(drain(&mut s, x).is_empty());
    }

    #[test]
    fn bad_frames_are_dropped_counted_and_harm_no_one() {
        let (mut s, a, b, c) = switch_with(PortLimits::default());
        let gateway = s.gateway_mac("default").unwrap();
        let mut long = frame(A, BROADCAST, 0);
        long.resize(1515, 0);
        let cases = [
            (vec![0u8; 10], DropReason::Runt),
            (long, DropReason::Oversized),
            (frame(BROADCAST, B, 0), DropReason::BadSource),
            (frame(gateway, B, 0), DropReason::Spoofed),
        ];
        for (f, reason) in &cases {
            assert_eq!(s.send(a, f, 0).unwrap(), SendOutcome::Dropped(*reason));
            assert_eq!(s.stats(a).unwrap().dropped(*reason), 1);
        }
        assert_eq!(s.stats(a).unwrap().dropped_total(), 4);
        assert_eq!(s.stats(a).unwrap().sent_frames, 0);
        assert!(drain(&mut s, b).is_empty());
        // The others still talk.
        s.send(b, &frame(B, C, 9), 0).unwrap();
        assert_eq!(drain(&mut s, c).len(), 1);
    }

    #[test]
    fn a_port_may_use_only_a_few_mac_addresses() {
        let (mut s, a, _, _) = switch_with(PortLimits {
            max_macs: 2,
            ..PortLimits::default()
        });
        assert!(matches!(
            s.send(a, &frame(A, BROADCAST, 0), 0).unwrap(),
            SendOutcome::Forwarded { .. }
        ));
        let other = [0x02, 0, 0, 0, 0, 1];
        assert!(matches!(
            s.send(a, &frame(other, BROADCAST, 0), 0).unwrap(),
            SendOutcome::Forwarded { .. }
        ));
        assert_eq!(
            s.send(a, &frame([0x02, 0, 0, 0, 0, 2], BROADCAST, 0), 0)
                .unwrap(),
            SendOutcome::Dropped(DropReason::TooManyMacs)
        );
    }

    #[test]
    fn a_flood_is_rate_limited_at_its_port() {
        let (mut s, a, b, c) = switch_with(PortLimits {
            frames_per_second: 1000,
            burst_frames: 100,
            ..PortLimits::default()
        });
        let sent = (0..10_000)
            .filter(|i| {
                let out = s
                    .send(a, &frame(A, BROADCAST, (*i % 256) as u8), 0)
                    .unwrap();
                out != SendOutcome::Dropped(DropReason::RateLimited)
            })
            .count();
        assert_eq!(sent, 100);
        assert_eq!(s.stats(a).unwrap().dropped(DropReason::RateLimited), 9_900);
        // B's frame to C is not held up.
        s.send(b, &frame(B, C, 7), 0).unwrap();
        let at_c = drain(&mut s, c);
        assert_eq!(at_c.len(), 101);
        assert_eq!(at_c[1][14], 7, "senders take turns: B's frame comes second");
    }

    #[test]
    fn a_flood_within_its_rate_cannot_starve_the_others() {
        let unlimited = PortLimits {
            frames_per_second: u32::MAX,
            burst_frames: u32::MAX,
            bytes_per_second: u32::MAX,
            ..PortLimits::default()
        };
        // Both bounds of the queues: frames per sender...
        let (mut s, a, b, c) = switch_with(unlimited);
        flood_while_b_talks(&mut s, a, b, c);
        // ...and bytes, with the flooder's frames evicted to make room for B's.
        let (mut s, a, b, c) = switch_of(
            Switch::with_limits(SwitchLimits {
                queue_bytes: 16 << 10,
                queue_frames_per_sender: usize::MAX,
                ..SwitchLimits::default()
            }),
            unlimited,
        );
        flood_while_b_talks(&mut s, a, b, c);
    }

    fn flood_while_b_talks(s: &mut Switch, a: PortId, b: PortId, c: PortId) {
        for i in 0..100_000u32 {
            s.send(a, &frame(A, BROADCAST, (i % 100) as u8), 0).unwrap();
            if i % 1000 == 0 {
                s.send(b, &frame(B, C, 0xbb), 0).unwrap();
            }
        }
        // C's queue stays bounded, and holds every one of B's 100 frames.
        let at_c = drain(s, c);
        assert!(at_c.len() <= 16 << 10, "{}", at_c.len());
        assert_eq!(at_c.iter().filter(|f| f[14] == 0xbb).count(), 100);
        let lost = s.stats(a).unwrap().dropped(DropReason::QueueFull);
        assert!(lost > 150_000, "{lost}"); // most copies to B and C
        assert_eq!(s.stats(b).unwrap().dropped_total(), 0);
    }

    #[test]
    fn detached_ports_are_gone() {
        let (mut s, a, b, _) = switch_with(PortLimits::default());
        s.send(a, &frame(A, B, 1), 0).unwrap();
        s.detach(a).unwrap();
        assert_eq!(
            s.detach(a).unwrap_err().kind(),
            crate::ErrorKind::UnknownPort
        );
        assert_eq!(
            s.send(a, &frame(A, B, 1), 0).unwrap_err().kind(),
            crate::ErrorKind::UnknownPort
        );
        assert!(s.recv(a).is_none());
        assert_eq!(s.pending(b).unwrap(), 0, "the frames it sent are forgotten");
        // Its slot is used again under another id, and its name is free.
        let a2 = s.attach("default", Nic::new("a", A)).unwrap();
        assert_ne!(a2, a);
        assert!(s.stats(a).is_err() && s.stats(a2).is_ok());
    }

    #[test]
    fn bad_attachments_are_refused() {
        let (mut s, ..) = switch_with(PortLimits::default());
        let gateway = s.gateway_mac("default").unwrap();
        let cases = [
            Nic::new("a", [0x52, 0x54, 0, 0, 1, 1]),   // name taken
            Nic::new("A", [0x52, 0x54, 0, 0, 1, 1]),   // names ignore case
            Nic::new("d", A),                          // MAC taken
            Nic::new("d", [0x01, 0, 0, 0, 0, 1]),      // group MAC
            Nic::new("d", gateway),                    // the gateway's
            Nic::new("a.b", [0x52, 0x54, 0, 0, 1, 1]), // not a name
            Nic::new("d", [0x52, 0x54, 0, 0, 1, 1]).with_ip(Ipv4Addr::new(10, 0, 2, 2)),
            Nic::new("d", [0x52, 0x54, 0, 0, 1, 1]).with_ip(Ipv4Addr::new(10, 0, 3, 9)),
        ];
        for nic in cases {
            let err = s.attach("default", nic.clone()).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidNic, "{nic:?}");
        }
        assert_eq!(
            s.attach("nope", Nic::new("d", [2, 0, 0, 0, 0, 1]))
                .unwrap_err()
                .kind(),
            crate::ErrorKind::UnknownNetwork
        );
        let mut small = Switch::with_limits(SwitchLimits {
            max_ports_per_network: 1,
            ..SwitchLimits::default()
        });
        small
            .add_network(network_by_id("isolated").unwrap().plan().unwrap())
            .unwrap();
        small.attach("isolated", Nic::new("a", A)).unwrap();
        assert_eq!(
            small
                .attach("isolated", Nic::new("b", B))
                .unwrap_err()
                .kind(),
            crate::ErrorKind::TooManyPorts
        );
    }

    /// An IPv4/TCP-ish frame (protocol 6, no real TCP header needed by the switch) from
    /// `src` to `dst` addressed to `dst_ip`.
    fn ip_frame(src: Mac, dst: Mac, src_ip: Ipv4Addr, dst_ip: Ipv4Addr) -> Vec<u8> {
        use smoltcp::phy::ChecksumCapabilities;
        use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr};
        let repr = Ipv4Repr {
            src_addr: src_ip,
            dst_addr: dst_ip,
            next_header: IpProtocol::Tcp,
            payload_len: 20,
            hop_limit: 64,
        };
        let mut f = dst.to_vec();
        f.extend(src);
        f.extend([0x08, 0x00]);
        f.resize(14 + 20 + 20, 0);
        repr.emit(
            &mut Ipv4Packet::new_unchecked(&mut f[14..]),
            &ChecksumCapabilities::default(),
        );
        f
    }

    #[test]
    fn the_uplink_gets_what_is_beyond_and_sends_as_the_gateway() {
        let (mut s, a, b, _) = switch_with(PortLimits::default());
        let gw = s.gateway_mac("default").unwrap();
        let me = Ipv4Addr::new(10, 0, 2, 15);
        let away = ip_frame(A, gw, me, Ipv4Addr::new(192, 0, 2, 1));
        let to_gw = ip_frame(A, gw, me, Ipv4Addr::new(10, 0, 2, 2));
        // No uplink: no route.
        assert_eq!(
            s.send(a, &away, 0).unwrap(),
            SendOutcome::Dropped(DropReason::NoRoute)
        );
        let up = s.attach_uplink("default").unwrap();
        assert_eq!(
            s.attach_uplink("default").unwrap_err().kind(),
            crate::ErrorKind::InvalidNetwork
        );
        assert_eq!(
            s.send(a, &away, 0).unwrap(),
            SendOutcome::Forwarded { copies: 1 }
        );
        s.send(a, &to_gw, 0).unwrap();
        // Broadcasts are not flooded to the uplink.
        s.send(a, &frame(A, BROADCAST, 1), 0).unwrap();
        assert_eq!(drain(&mut s, up), [away, to_gw]);
        // The uplink sends as the gateway only, to the VM it is for.
        let mut back = ip_frame(gw, A, Ipv4Addr::new(192, 0, 2, 1), me);
        back.resize(60, 0);
        assert_eq!(
            s.send(up, &back, 0).unwrap(),
            SendOutcome::Forwarded { copies: 1 }
        );
        assert_eq!(drain(&mut s, a), [back]);
        assert!(drain(&mut s, b).iter().all(|f| f[14] == 1));
        assert_eq!(
            s.send(up, &frame(A, B, 1), 0).unwrap(),
            SendOutcome::Dropped(DropReason::Spoofed)
        );
        // Nothing it sends goes back to it.
        assert_eq!(
            s.send(
                up,
                &ip_frame(
                    gw,
                    gw,
                    Ipv4Addr::new(10, 0, 2, 2),
                    Ipv4Addr::new(192, 0, 2, 1)
                ),
                0
            )
            .unwrap(),
            SendOutcome::Dropped(DropReason::NoRoute)
        );
        // Detached, the route is gone again; an isolated network has none.
        s.detach(up).unwrap();
        assert_eq!(
            s.send(a, &ip_frame(A, gw, me, Ipv4Addr::new(192, 0, 2, 1)), 0)
                .unwrap(),
            SendOutcome::Dropped(DropReason::NoRoute)
        );
        s.add_network(network_by_id("isolated").unwrap().plan().unwrap())
            .unwrap();
        assert!(s.attach_uplink("isolated").is_err());
    }

    #[test]
    fn inconsistent_plans_are_refused() {
        let mut s = Switch::new();
        let plan = network_by_id("default").unwrap().plan().unwrap();
        s.add_network(plan.clone()).unwrap();
        assert_eq!(
            s.add_network(plan.clone()).unwrap_err().kind(),
            crate::ErrorKind::InvalidNetwork
        );
        let mut bad = plan.clone();
        bad.id = "x".into();
        bad.prefix = 33;
        assert!(s.add_network(bad).is_err());
        let mut bad = plan.clone();
        bad.id = "y".into();
        bad.gateway = Ipv4Addr::new(1, 2, 3, 4);
        assert!(s.add_network(bad).is_err());
        let mut bad = plan;
        bad.id = "z".into();
        bad.limits.max_frame_bytes = 10;
        assert!(s.add_network(bad).is_err());
    }
}
