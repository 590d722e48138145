//! The services of a network's gateway: what a guest on a NAT network expects to find.
//!
//! - ARP: the gateway's and the DNS server's addresses resolve to the gateway's MAC
//!   ([`gateway_mac`]).
//! - ICMP: both answer ping.
//! - DHCP (UDP 67): leases from the network's range, the same address for a MAC each time
//!   while it is free (a NIC's reserved address always), with the netmask, the router (NAT
//!   networks), the DNS server and the domain.
//! - DNS (UDP 53 at the DNS server's address): `NAME` and `NAME.DOMAIN` for each VM on the
//!   network, as A records of its current address.

mod dhcp;
mod dns;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use qemuweb_config::NetworkPlan;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
};

pub use dhcp::{LeaseInfo, MAX_LEASES};

use crate::packet;
use crate::Mac;

/// The DNS port.
const DNS_PORT: u16 = 53;

/// The gateway's MAC address on a network: locally administered, derived from its IPv4
/// address (`52:55:` and the address's four bytes).
///
/// ```
/// use std::net::Ipv4Addr;
/// let mac = qemuweb_net::services::gateway_mac(Ipv4Addr::new(10, 0, 2, 2));
/// assert_eq!(mac, [0x52, 0x55, 10, 0, 2, 2]);
/// ```
pub fn gateway_mac(gateway: Ipv4Addr) -> Mac {
    let [a, b, c, d] = gateway.octets();
    [0x52, 0x55, a, b, c, d]
}

/// What the services did with a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Not theirs (the switch forwards it as usual).
    NotMine,
    /// Theirs; these frames answer it (maybe none).
    Answered(Vec<Vec<u8>>),
    /// Sent to the gateway for an address beyond the network.
    Beyond,
}

/// The services of one network.
#[derive(Debug)]
pub(crate) struct Services {
    plan: NetworkPlan,
    mac: Mac,
    leases: dhcp::Leases,
    /// The VMs' names (lower case) and their NICs' MACs.
    names: HashMap<String, Mac>,
}

impl Services {
    pub(crate) fn new(plan: NetworkPlan) -> Self {
        Services {
            mac: gateway_mac(plan.gateway),
            leases: dhcp::Leases::new(&plan),
            plan,
            names: HashMap::new(),
        }
    }

    pub(crate) fn mac(&self) -> Mac {
        self.mac
    }

    /// Whether `ip` is the gateway's or the DNS server's.
    fn is_mine(&self, ip: Ipv4Addr) -> bool {
        ip == self.plan.gateway || Some(ip) == self.plan.dns
    }

    /// Whether a NIC may reserve `ip` (a host of the network, no service's, no other
    /// NIC's).
    pub(crate) fn can_reserve(&self, ip: Ipv4Addr, mac: &Mac) -> bool {
        self.plan.is_host(ip)
            && !self.is_mine(ip)
            && self.leases.reserved_by(ip).is_none_or(|m| m == *mac)
    }

    pub(crate) fn has_name(&self, name: &str) -> bool {
        self.names.contains_key(&name.to_ascii_lowercase())
    }

    /// A VM's NIC joins: its name answers DNS, its reserved address is its own.
    pub(crate) fn add_host(&mut self, name: &str, mac: Mac, ip: Option<Ipv4Addr>) {
        self.names.insert(name.to_ascii_lowercase(), mac);
        if let Some(ip) = ip {
            self.leases.reserve(mac, ip);
        }
    }

    /// A VM's NIC leaves (its lease is remembered, so it finds its address again).
    pub(crate) fn remove_host(&mut self, name: &str, mac: &Mac) {
        self.names.remove(&name.to_ascii_lowercase());
        self.leases.unreserve(mac);
    }

    pub(crate) fn leases(&self, now_ms: u64) -> Vec<LeaseInfo> {
        self.leases.bound(now_ms)
    }

    /// The address the VM named `name` has now.
    pub(crate) fn resolve(&self, name: &str, now_ms: u64) -> Option<Ipv4Addr> {
        let mac = self.names.get(&name.to_ascii_lowercase())?;
        self.leases.address_of(mac, now_ms)
    }

    /// Handles a frame a NIC sent to the gateway's MAC or to everyone.
    pub(crate) fn handle(&mut self, frame: &EthernetFrame<&[u8]>, now_ms: u64) -> Handled {
        let to_me = frame.dst_addr() == EthernetAddress(self.mac);
        let handled = match frame.ethertype() {
            EthernetProtocol::Arp => self.arp(frame.payload()),
            EthernetProtocol::Ipv4 => self.ipv4(frame, now_ms),
            _ => Handled::NotMine,
        };
        match handled {
            // Sent to the gateway and not for a service (an ARP reply to the gateway, TCP
            // to the gateway's address, ...): the uplink's, if the network has one.
            Handled::NotMine if to_me => Handled::Beyond,
            Handled::Beyond if !to_me => Handled::NotMine,
            h => h,
        }
    }

    fn arp(&self, payload: &[u8]) -> Handled {
        let Ok(Ok(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        })) = ArpPacket::new_checked(payload).map(|p| ArpRepr::parse(&p))
        else {
            return Handled::NotMine;
        };
        if !self.is_mine(target_protocol_addr) {
            return Handled::NotMine;
        }
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(self.mac),
            source_protocol_addr: target_protocol_addr,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let frame = packet::ethernet(
            self.mac,
            source_hardware_addr.0,
            EthernetProtocol::Arp,
            reply.buffer_len(),
            |buf| reply.emit(&mut ArpPacket::new_unchecked(buf)),
        );
        Handled::Answered(vec![frame])
    }

    fn ipv4(&mut self, frame: &EthernetFrame<&[u8]>, now_ms: u64) -> Handled {
        let caps = ChecksumCapabilities::default();
        let Ok(packet) = Ipv4Packet::new_checked(frame.payload()) else {
            return Handled::NotMine;
        };
        let Ok(ip) = Ipv4Repr::parse(&packet, &caps) else {
            return Handled::NotMine;
        };
        if packet.more_frags() || packet.frag_offset() != 0 {
            // Fragments are not reassembled: no service message needs them.
            return Handled::NotMine;
        }
        let payload = &packet.payload()[..ip.payload_len.min(packet.payload().len())];
        let peer = (frame.src_addr().0, ip.src_addr);
        match ip.next_header {
            IpProtocol::Udp => self.udp(peer, ip.dst_addr, payload, now_ms),
            IpProtocol::Icmp if self.is_mine(ip.dst_addr) => {
                let Ok(icmp) = Icmpv4Packet::new_checked(payload) else {
                    return Handled::Answered(Vec::new());
                };
                let Ok(Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                }) = Icmpv4Repr::parse(&icmp, &caps)
                else {
                    return Handled::Answered(Vec::new());
                };
                let reply = Icmpv4Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                };
                let frame = packet::ipv4(
                    (self.mac, ip.dst_addr),
                    peer,
                    IpProtocol::Icmp,
                    reply.buffer_len(),
                    |buf| reply.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps),
                );
                Handled::Answered(vec![frame])
            }
            // TCP and the rest to the gateway's own address, or beyond the network: the
            // uplink's (`qemuweb network` maps the gateway's address to the host's).
            _ if frame.dst_addr() == EthernetAddress(self.mac) => Handled::Beyond,
            _ if self.is_mine(ip.dst_addr) => Handled::Answered(Vec::new()),
            _ => Handled::NotMine,
        }
    }

    fn udp(
        &mut self,
        peer: (Mac, Ipv4Addr),
        dst: Ipv4Addr,
        payload: &[u8],
        now_ms: u64,
    ) -> Handled {
        let Ok(udp) = UdpPacket::new_checked(payload) else {
            return Handled::NotMine;
        };
        let caps = ChecksumCapabilities::default();
        let Ok(repr) = UdpRepr::parse(&udp, &IpAddress::Ipv4(peer.1), &IpAddress::Ipv4(dst), &caps)
        else {
            return Handled::NotMine;
        };
        let dhcp_to_me = repr.dst_port == DHCP_SERVER_PORT
            && repr.src_port == DHCP_CLIENT_PORT
            && (dst == Ipv4Addr::BROADCAST || self.is_mine(dst));
        if dhcp_to_me {
            let answer = dhcp::parse(udp.payload()).and_then(|p| {
                let r = DhcpRepr::parse(&p).ok()?;
                self.leases.answer(&self.plan, self.mac, peer.0, &r, now_ms)
            });
            return Handled::Answered(answer.into_iter().collect());
        }
        if Some(dst) == self.plan.dns && repr.dst_port == DNS_PORT {
            let lookup = |name: &str| self.lookup(name, now_ms);
            let answer = dns::answer(udp.payload(), lookup).map(|bytes| {
                packet::udp(
                    (self.mac, dst, DNS_PORT),
                    (peer.0, peer.1, repr.src_port),
                    bytes.len(),
                    |buf| buf.copy_from_slice(&bytes),
                )
            });
            return Handled::Answered(answer.into_iter().collect());
        }
        if dst == self.plan.gateway {
            Handled::Beyond
        } else if self.is_mine(dst) {
            Handled::Answered(Vec::new())
        } else if dst != Ipv4Addr::BROADCAST && !self.plan.contains(dst) {
            Handled::Beyond
        } else {
            Handled::NotMine
        }
    }

    fn lookup(&self, name: &str, now_ms: u64) -> dns::Lookup {
        let suffix = format!(".{}", self.plan.domain.to_ascii_lowercase());
        let local = match name.strip_suffix(&suffix) {
            Some(short) => short,
            None if !name.contains('.') => name,
            None => return dns::Lookup::Elsewhere,
        };
        if self.names.contains_key(local) {
            dns::Lookup::Vm(self.resolve(local, now_ms))
        } else {
            dns::Lookup::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Nic, PortId, Switch};
    use qemuweb_config::{network_by_id, VirtualNetwork};
    use smoltcp::wire::{DhcpMessageType, DhcpPacket, DnsPacket};

    const VM1: Mac = [0x52, 0x54, 0, 0, 0, 1];
    const VM2: Mac = [0x52, 0x54, 0, 0, 0, 2];
    const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    fn client(mac: Mac, message_type: DhcpMessageType) -> DhcpRepr<'static> {
        DhcpRepr {
            message_type,
            transaction_id: 0x1234_5678,
            secs: 0,
            client_hardware_address: EthernetAddress(mac),
            client_ip: ANY,
            your_ip: ANY,
            server_ip: ANY,
            router: None,
            subnet_mask: None,
            relay_agent_ip: ANY,
            broadcast: false,
            requested_ip: None,
            client_identifier: Some(EthernetAddress(mac)),
            server_identifier: None,
            parameter_request_list: Some(&[1, 3, 6, 15, 51]),
            dns_servers: None,
            max_size: None,
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        }
    }

    /// A client's DHCP message as a NIC sends it (from 0.0.0.0 to everyone).
    fn dhcp_frame(repr: &DhcpRepr<'_>) -> Vec<u8> {
        let mac = repr.client_hardware_address.0;
        packet::udp(
            (mac, repr.client_ip, DHCP_CLIENT_PORT),
            ([0xff; 6], Ipv4Addr::BROADCAST, DHCP_SERVER_PORT),
            repr.buffer_len(),
            |buf| repr.emit(&mut DhcpPacket::new_unchecked(buf)).unwrap(),
        )
    }

    /// The DHCP reply in a frame: its Ethernet and IP destinations and its message.
    fn dhcp_reply(frame: &[u8]) -> (Mac, Ipv4Addr, DhcpRepr<'static>) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
        assert_eq!((udp.src_port(), udp.dst_port()), (67, 68));
        let bytes: &'static [u8] = Box::leak(udp.payload().to_vec().into_boxed_slice());
        let packet: &'static DhcpPacket<&'static [u8]> =
            Box::leak(Box::new(DhcpPacket::new_checked(bytes).unwrap()));
        let mut repr = DhcpRepr::parse(packet).unwrap();
        // The domain option (15) is checked on the packet itself.
        let domain = packet.options().find(|o| o.kind == 15).map(|o| o.data);
        repr.additional_options = &[];
        assert_eq!(
            domain.map(|d| d.to_vec()),
            repr.subnet_mask.map(|_| b"qemuweb.internal".to_vec())
        );
        (eth.dst_addr().0, ip.dst_addr(), repr)
    }

    fn default_switch() -> (Switch, PortId, PortId) {
        let mut s = Switch::new();
        s.add_network(network_by_id("default").unwrap().plan().unwrap())
            .unwrap();
        let a = s.attach("default", Nic::new("vm1", VM1)).unwrap();
        let b = s.attach("default", Nic::new("vm2", VM2)).unwrap();
        (s, a, b)
    }

    /// The next frame for a port from the gateway (skipping the other VMs' broadcasts).
    fn from_gateway(s: &mut Switch, port: PortId) -> Option<Vec<u8>> {
        let gateway = s.gateway_mac("default").unwrap_or([0; 6]);
        std::iter::from_fn(|| s.recv(port)).find(|f| f[6..12] == gateway)
    }

    /// DISCOVER, OFFER, REQUEST, ACK: the address bound.
    fn lease(s: &mut Switch, port: PortId, mac: Mac, now: u64) -> Ipv4Addr {
        s.send(
            port,
            &dhcp_frame(&client(mac, DhcpMessageType::Discover)),
            now,
        )
        .unwrap();
        let (_, _, offer) = dhcp_reply(&from_gateway(s, port).expect("an offer"));
        assert_eq!(offer.message_type, DhcpMessageType::Offer);
        let mut request = client(mac, DhcpMessageType::Request);
        request.requested_ip = Some(offer.your_ip);
        request.server_identifier = offer.server_identifier;
        s.send(port, &dhcp_frame(&request), now).unwrap();
        let (_, _, ack) = dhcp_reply(&from_gateway(s, port).expect("an ack"));
        assert_eq!(ack.message_type, DhcpMessageType::Ack);
        assert_eq!(ack.your_ip, offer.your_ip);
        ack.your_ip
    }

    #[test]
    fn dhcp_hands_out_leases_with_the_networks_settings() {
        let (mut s, a, b) = default_switch();
        s.send(a, &dhcp_frame(&client(VM1, DhcpMessageType::Discover)), 0)
            .unwrap();
        let (dst_mac, dst_ip, offer) = dhcp_reply(&from_gateway(&mut s, a).unwrap());
        assert_eq!(dst_mac, VM1);
        assert_eq!(dst_ip, offer.your_ip);
        assert_eq!(offer.transaction_id, 0x1234_5678);
        assert_eq!(offer.server_identifier, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(offer.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(offer.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(
            offer.dns_servers.as_deref(),
            Some(&[Ipv4Addr::new(10, 0, 2, 3)][..])
        );
        assert_eq!(offer.lease_duration, Some(3600));
        let o = offer.your_ip.octets();
        assert!(o[..3] == [10, 0, 2] && (15..=254).contains(&o[3]), "{o:?}");
        // The other VM saw the broadcast DISCOVER, not the unicast offer.
        assert_eq!(s.pending(b).unwrap(), 1);

        let ip1 = lease(&mut s, a, VM1, 0);
        assert_eq!(ip1, offer.your_ip);
        let ip2 = lease(&mut s, b, VM2, 0);
        assert_ne!(ip1, ip2);
        assert_eq!(s.resolve("default", "vm1", 0).unwrap(), Some(ip1));
        let leases = s.leases("default", 0).unwrap();
        assert_eq!(leases.len(), 2);
        assert!(leases.iter().any(|l| l.mac == VM2 && l.ip == ip2));
        // Leases end.
        assert_eq!(s.resolve("default", "vm1", 3_600_000).unwrap(), None);
    }

    #[test]
    fn an_address_is_stable_per_mac() {
        let (mut s, a, _) = default_switch();
        let first = lease(&mut s, a, VM1, 0);
        // Released, it comes back; after the lease ended too.
        let mut release = client(VM1, DhcpMessageType::Release);
        release.client_ip = first;
        s.send(a, &dhcp_frame(&release), 10).unwrap();
        assert!(
            from_gateway(&mut s, a).is_none(),
            "a release gets no answer"
        );
        assert_eq!(lease(&mut s, a, VM1, 20), first);
        assert_eq!(lease(&mut s, a, VM1, 10_000_000), first);
        // On another switch with the same network (the page reloaded), the same address.
        let (mut other, a2, _) = default_switch();
        assert_eq!(lease(&mut other, a2, VM1, 0), first);
        // Many clients each get their own.
        let mut seen = std::collections::HashSet::new();
        for i in 0..50u8 {
            let mac = [0x52, 0x54, 0, 1, 0, i];
            let p = other
                .attach("default", Nic::new(format!("m{i}"), mac))
                .unwrap();
            assert!(seen.insert(lease(&mut other, p, mac, 0)));
        }
    }

    #[test]
    fn reserved_addresses_wrong_requests_and_other_servers() {
        let (mut s, a, _) = default_switch();
        let fixed = Ipv4Addr::new(10, 0, 2, 50);
        let mac = [0x52, 0x54, 0, 0, 0, 3];
        let c = s
            .attach("default", Nic::new("db", mac).with_ip(fixed))
            .unwrap();
        assert_eq!(lease(&mut s, c, mac, 0), fixed);
        assert_eq!(s.resolve("default", "db", 0).unwrap(), Some(fixed));
        // No one else gets it, even when asking.
        let mut request = client(VM1, DhcpMessageType::Request);
        request.requested_ip = Some(fixed);
        s.send(a, &dhcp_frame(&request), 0).unwrap();
        let (dst_mac, dst_ip, nak) = dhcp_reply(&from_gateway(&mut s, a).unwrap());
        assert_eq!(nak.message_type, DhcpMessageType::Nak);
        assert_eq!((dst_mac, dst_ip), ([0xff; 6], Ipv4Addr::BROADCAST));
        assert_eq!(
            (nak.subnet_mask, nak.router, nak.lease_duration),
            (None, None, None)
        );
        // Nor an address outside the range.
        request.requested_ip = Some(Ipv4Addr::new(10, 0, 3, 7));
        s.send(a, &dhcp_frame(&request), 0).unwrap();
        assert_eq!(
            dhcp_reply(&from_gateway(&mut s, a).unwrap()).2.message_type,
            DhcpMessageType::Nak
        );
        // A request for another server's offer gets no answer.
        request.server_identifier = Some(Ipv4Addr::new(10, 0, 2, 99));
        s.send(a, &dhcp_frame(&request), 0).unwrap();
        assert!(from_gateway(&mut s, a).is_none());
        // A declined address is not offered again.
        let ip = lease(&mut s, a, VM1, 0);
        let mut decline = client(VM1, DhcpMessageType::Decline);
        decline.requested_ip = Some(ip);
        s.send(a, &dhcp_frame(&decline), 0).unwrap();
        assert_ne!(lease(&mut s, a, VM1, 0), ip);
        // A client speaks for itself only: a DISCOVER for another MAC gets nothing.
        let mut forged = dhcp_frame(&client([0x52, 0x54, 0, 9, 9, 9], DhcpMessageType::Discover));
        forged[6..12].copy_from_slice(&VM1);
        s.send(a, &forged, 0).unwrap();
        assert!(from_gateway(&mut s, a).is_none());
        assert_eq!(s.leases("default", 0).unwrap().len(), 2);
    }

    #[test]
    fn a_small_pool_runs_out_without_harm() {
        let mut s = Switch::new();
        // A /29: hosts .9-.14, gateway .9, pool .10-.14.
        s.add_network(VirtualNetwork::nat("small", "10.9.0.8/29").plan().unwrap())
            .unwrap();
        let mut got = Vec::new();
        for i in 0..7u8 {
            let mac = [0x52, 0x54, 0, 2, 0, i];
            let p = s.attach("small", Nic::new(format!("m{i}"), mac)).unwrap();
            s.send(p, &dhcp_frame(&client(mac, DhcpMessageType::Discover)), 0)
                .unwrap();
            got.push(s.recv(p).map(|f| dhcp_reply(&f).2.your_ip));
        }
        let offered: Vec<_> = got.iter().flatten().collect();
        assert_eq!(offered.len(), 5, "{got:?}");
        // Offers are held 30 s; then the addresses are free again.
        let late_mac = [0x52, 0x54, 0, 2, 1, 0];
        let late = s.attach("small", Nic::new("late", late_mac)).unwrap();
        s.send(
            late,
            &dhcp_frame(&client(late_mac, DhcpMessageType::Discover)),
            31_000,
        )
        .unwrap();
        assert!(s.recv(late).is_some());
    }

    #[test]
    fn isolated_networks_offer_no_router() {
        let mut s = Switch::new();
        s.add_network(network_by_id("isolated").unwrap().plan().unwrap())
            .unwrap();
        let a = s.attach("isolated", Nic::new("vm1", VM1)).unwrap();
        s.send(a, &dhcp_frame(&client(VM1, DhcpMessageType::Discover)), 0)
            .unwrap();
        let (_, _, offer) = dhcp_reply(&s.recv(a).unwrap());
        assert_eq!(offer.router, None);
        assert_eq!(
            offer.server_identifier,
            Some(Ipv4Addr::new(192, 168, 100, 1))
        );
    }

    fn arp_request(from: (Mac, Ipv4Addr), target: Ipv4Addr) -> Vec<u8> {
        let repr = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(from.0),
            source_protocol_addr: from.1,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        packet::ethernet(
            from.0,
            [0xff; 6],
            EthernetProtocol::Arp,
            repr.buffer_len(),
            |b| repr.emit(&mut ArpPacket::new_unchecked(b)),
        )
    }

    #[test]
    fn arp_and_ping_for_the_gateway_and_the_dns_server() {
        let (mut s, a, b) = default_switch();
        let me = (VM1, Ipv4Addr::new(10, 0, 2, 15));
        let gateway_mac = s.gateway_mac("default").unwrap();
        for service in [Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::new(10, 0, 2, 3)] {
            s.send(a, &arp_request(me, service), 0).unwrap();
            let reply = from_gateway(&mut s, a).unwrap();
            let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
            assert_eq!(eth.dst_addr().0, VM1);
            let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
            let ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_protocol_addr,
                ..
            } = arp
            else {
                unreachable!()
            };
            assert_eq!(operation, ArpOperation::Reply);
            assert_eq!(source_hardware_addr.0, gateway_mac);
            assert_eq!(
                (source_protocol_addr, target_protocol_addr),
                (service, me.1)
            );
        }
        // ARP for another VM is theirs to answer: flooded, not answered by the gateway.
        s.send(a, &arp_request(me, Ipv4Addr::new(10, 0, 2, 16)), 0)
            .unwrap();
        assert!(from_gateway(&mut s, a).is_none());
        assert_eq!(s.pending(b).unwrap(), 3);

        let caps = ChecksumCapabilities::default();
        let echo = Icmpv4Repr::EchoRequest {
            ident: 7,
            seq_no: 1,
            data: b"ping data",
        };
        let ping = packet::ipv4(
            me,
            (gateway_mac, Ipv4Addr::new(10, 0, 2, 2)),
            IpProtocol::Icmp,
            echo.buffer_len(),
            |b| echo.emit(&mut Icmpv4Packet::new_unchecked(b), &caps),
        );
        s.send(a, &ping, 0).unwrap();
        let reply = from_gateway(&mut s, a).unwrap();
        let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let ip_repr = Ipv4Repr::parse(&ip, &caps).unwrap();
        assert_eq!(
            (ip_repr.src_addr, ip_repr.dst_addr),
            (Ipv4Addr::new(10, 0, 2, 2), me.1)
        );
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&icmp, &caps).unwrap(),
            Icmpv4Repr::EchoReply {
                ident: 7,
                seq_no: 1,
                data: b"ping data"
            }
        );
        // Beyond the network there is no route (no uplink yet).
        let out = packet::ipv4(
            me,
            (gateway_mac, Ipv4Addr::new(192, 0, 2, 1)),
            IpProtocol::Icmp,
            echo.buffer_len(),
            |b| echo.emit(&mut Icmpv4Packet::new_unchecked(b), &caps),
        );
        assert_eq!(
            s.send(a, &out, 0).unwrap(),
            crate::SendOutcome::Dropped(crate::DropReason::NoRoute)
        );
        // A damaged packet to the gateway is nothing, not a panic.
        let mut damaged = ping.clone();
        damaged[20] ^= 0xff;
        s.send(a, &damaged, 0).unwrap();
        assert!(from_gateway(&mut s, a).is_none());
    }

    #[test]
    fn dns_answers_the_vms_names() {
        let (mut s, a, b) = default_switch();
        let ip1 = lease(&mut s, a, VM1, 0);
        let ip2 = lease(&mut s, b, VM2, 0);
        let gateway_mac = s.gateway_mac("default").unwrap();
        let ask = |name: &str| {
            let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
            for label in name.split('.') {
                q.push(label.len() as u8);
                q.extend(label.as_bytes());
            }
            q.extend([0, 0, 1, 0, 1]);
            packet::udp(
                (VM1, ip1, 40000),
                (gateway_mac, Ipv4Addr::new(10, 0, 2, 3), 53),
                q.len(),
                |b| b.copy_from_slice(&q),
            )
        };
        s.send(a, &ask("vm2.qemuweb.internal"), 0).unwrap();
        let reply = from_gateway(&mut s, a).unwrap();
        let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (ip.dst_addr(), udp.src_port(), udp.dst_port()),
            (ip1, 53, 40000)
        );
        let dns = DnsPacket::new_checked(udp.payload()).unwrap();
        assert_eq!(
            (dns.transaction_id(), dns.answer_record_count()),
            (0xabcd, 1)
        );
        assert_eq!(&udp.payload()[udp.payload().len() - 4..], &ip2.octets());
        s.send(a, &ask("nobody"), 0).unwrap();
        let reply = from_gateway(&mut s, a).unwrap();
        assert_eq!(reply[14 + 20 + 8 + 3] & 0x0f, 3, "NXDOMAIN");
        assert!(
            from_gateway(&mut s, b).is_none(),
            "DNS traffic goes to the asker only"
        );
    }
}
