//! The DHCP server: leases from the network's range, stable per MAC address.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use qemuweb_config::{DhcpPlan, NetworkMode, NetworkPlan};
use smoltcp::wire::{
    DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr, DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
};

use crate::packet;
use crate::Mac;

/// The most leases a network remembers (bound, offered and expired); beyond it, the oldest
/// expired lease is forgotten, and with none expired new clients get no offer.
pub const MAX_LEASES: usize = 4096;

/// How long an offered address is held for the client that was offered it.
const OFFER_HOLD_MS: u64 = 30_000;

/// The most declined addresses remembered.
const MAX_DECLINED: usize = 256;

/// DHCP option 15, the domain name.
const OPT_DOMAIN_NAME: u8 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    ip: Ipv4Addr,
    expires_ms: u64,
    bound: bool,
}

/// A lease as the network's services see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The client's MAC address.
    pub mac: Mac,
    /// Its address.
    pub ip: Ipv4Addr,
    /// When it ends (the caller's clock, milliseconds).
    pub expires_ms: u64,
}

/// The leases of one network.
#[derive(Debug)]
pub(crate) struct Leases {
    pool: Option<(u32, u32)>,
    lease_ms: u64,
    lease_seconds: u32,
    /// Addresses no client gets (gateway, DNS server).
    services: Vec<Ipv4Addr>,
    by_mac: HashMap<Mac, Lease>,
    /// The same leases by address (each address has at most one).
    by_ip: HashMap<Ipv4Addr, Mac>,
    reserved: HashMap<Mac, Ipv4Addr>,
    declined: HashMap<Ipv4Addr, u64>,
}

fn fnv(mac: &Mac) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in mac {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl Leases {
    pub(crate) fn new(plan: &NetworkPlan) -> Self {
        let dhcp = plan.dhcp.unwrap_or(DhcpPlan {
            start: plan.gateway,
            end: plan.gateway,
            lease_seconds: 3600,
        });
        Leases {
            pool: plan
                .dhcp
                .map(|d| (u32::from(d.start), u32::from(d.end)))
                .filter(|(s, e)| s <= e),
            lease_ms: u64::from(dhcp.lease_seconds) * 1000,
            lease_seconds: dhcp.lease_seconds,
            services: [Some(plan.gateway), plan.dns]
                .into_iter()
                .flatten()
                .collect(),
            by_mac: HashMap::new(),
            by_ip: HashMap::new(),
            reserved: HashMap::new(),
            declined: HashMap::new(),
        }
    }

    /// Gives `mac` the address `ip` always (a NIC's reserved address).
    pub(crate) fn reserve(&mut self, mac: Mac, ip: Ipv4Addr) {
        self.reserved.insert(mac, ip);
    }

    pub(crate) fn unreserve(&mut self, mac: &Mac) {
        self.reserved.remove(mac);
    }

    /// The MAC holding or reserving `ip`, if any.
    pub(crate) fn reserved_by(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.reserved
            .iter()
            .find(|(_, r)| **r == ip)
            .map(|(m, _)| *m)
    }

    /// The address `mac` has now: its reserved one, or its bound lease.
    pub(crate) fn address_of(&self, mac: &Mac, now_ms: u64) -> Option<Ipv4Addr> {
        self.reserved.get(mac).copied().or_else(|| {
            self.by_mac
                .get(mac)
                .filter(|l| l.bound && l.expires_ms > now_ms)
                .map(|l| l.ip)
        })
    }

    /// The bound leases, for callers that show them.
    pub(crate) fn bound(&self, now_ms: u64) -> Vec<LeaseInfo> {
        let mut v: Vec<_> = self
            .by_mac
            .iter()
            .filter(|(_, l)| l.bound && l.expires_ms > now_ms)
            .map(|(mac, l)| LeaseInfo {
                mac: *mac,
                ip: l.ip,
                expires_ms: l.expires_ms,
            })
            .collect();
        v.sort_by_key(|l| l.ip);
        v
    }

    fn in_pool(&self, ip: Ipv4Addr) -> bool {
        self.pool
            .is_some_and(|(s, e)| (s..=e).contains(&u32::from(ip)))
    }

    /// Whether `mac` may have `ip` now; `strict` also keeps the remembered (expired)
    /// leases of other clients free, so that each client finds its old address again.
    fn usable(&self, ip: Ipv4Addr, mac: &Mac, now_ms: u64, strict: bool) -> bool {
        if self.reserved.get(mac) == Some(&ip) {
            return true;
        }
        self.in_pool(ip)
            && !self.services.contains(&ip)
            && self.declined.get(&ip).is_none_or(|until| *until <= now_ms)
            && self.reserved_by(ip).is_none()
            && match self.by_ip.get(&ip) {
                Some(m) if m != mac => {
                    !strict && self.by_mac.get(m).is_none_or(|l| l.expires_ms <= now_ms)
                }
                _ => true,
            }
    }

    /// The address to offer `mac`.
    fn choose(&self, mac: &Mac, requested: Option<Ipv4Addr>, now_ms: u64) -> Option<Ipv4Addr> {
        if let Some(ip) = self.reserved.get(mac) {
            return Some(*ip);
        }
        let (start, end) = self.pool?;
        let candidates = self
            .by_mac
            .get(mac)
            .map(|l| l.ip)
            .into_iter()
            .chain(requested);
        for ip in candidates {
            if self.usable(ip, mac, now_ms, false) {
                return Some(ip);
            }
        }
        // A place derived from the MAC, then the next free one: at most one probe per
        // address in use (leases, reservations, declines, services) finds a free one.
        let size = u64::from(end - start) + 1;
        let first = u64::from(fnv(mac)) % size;
        let tries = size.min(
            (self.by_mac.len() + self.reserved.len() + self.declined.len() + self.services.len())
                as u64
                + 1,
        );
        for strict in [true, false] {
            for k in 0..tries {
                let ip = Ipv4Addr::from(start + ((first + k) % size) as u32);
                if self.usable(ip, mac, now_ms, strict) {
                    return Some(ip);
                }
            }
        }
        None
    }

    /// Records `ip` for `mac` until `expires_ms`; `false` when the table is full of
    /// leases that have not expired.
    fn record(
        &mut self,
        mac: Mac,
        ip: Ipv4Addr,
        now_ms: u64,
        expires_ms: u64,
        bound: bool,
    ) -> bool {
        if !self.by_mac.contains_key(&mac) && self.by_mac.len() >= MAX_LEASES {
            let expired = self
                .by_mac
                .iter()
                .filter(|(_, l)| l.expires_ms <= now_ms)
                .min_by_key(|(_, l)| l.expires_ms)
                .map(|(m, _)| *m);
            match expired {
                Some(m) => self.forget(&m),
                None => return false,
            }
        }
        // The address's previous (expired) holder loses it; the client its previous one.
        if let Some(other) = self.by_ip.get(&ip).copied() {
            if other != mac {
                self.forget(&other);
            }
        }
        self.forget(&mac);
        self.by_ip.insert(ip, mac);
        self.by_mac.insert(
            mac,
            Lease {
                ip,
                expires_ms,
                bound,
            },
        );
        true
    }

    fn forget(&mut self, mac: &Mac) {
        if let Some(l) = self.by_mac.remove(mac) {
            self.by_ip.remove(&l.ip);
        }
    }

    /// Answers one DHCP message that `sender` (the frame's source address) sent; the reply's
    /// frame, if any.
    pub(crate) fn answer(
        &mut self,
        plan: &NetworkPlan,
        gateway_mac: Mac,
        sender: Mac,
        request: &DhcpRepr<'_>,
        now_ms: u64,
    ) -> Option<Vec<u8>> {
        let mac = request.client_hardware_address.0;
        if mac != sender {
            // No relays here: a client speaks for itself only (so that one VM cannot fill
            // the lease table with made-up addresses).
            return None;
        }
        let server = plan.gateway;
        let reply_type = match request.message_type {
            DhcpMessageType::Discover => {
                let ip = self.choose(&mac, request.requested_ip, now_ms)?;
                let keep = self
                    .by_mac
                    .get(&mac)
                    .filter(|l| l.ip == ip && l.bound && l.expires_ms > now_ms)
                    .copied();
                match keep {
                    Some(_) => {}
                    None => {
                        if !self.record(
                            mac,
                            ip,
                            now_ms,
                            now_ms.saturating_add(OFFER_HOLD_MS),
                            false,
                        ) {
                            return None;
                        }
                    }
                }
                (DhcpMessageType::Offer, ip)
            }
            DhcpMessageType::Request => {
                if request.server_identifier.is_some_and(|s| s != server) {
                    // The client took another server's offer.
                    if self.by_mac.get(&mac).is_some_and(|l| !l.bound) {
                        self.forget(&mac);
                    }
                    return None;
                }
                let wanted = request
                    .requested_ip
                    .or((!request.client_ip.is_unspecified()).then_some(request.client_ip));
                match wanted {
                    Some(ip) if self.usable(ip, &mac, now_ms, false) => {
                        if !self.record(mac, ip, now_ms, now_ms.saturating_add(self.lease_ms), true)
                        {
                            (DhcpMessageType::Nak, Ipv4Addr::UNSPECIFIED)
                        } else {
                            (DhcpMessageType::Ack, ip)
                        }
                    }
                    _ => (DhcpMessageType::Nak, Ipv4Addr::UNSPECIFIED),
                }
            }
            DhcpMessageType::Release => {
                if let Some(l) = self.by_mac.get_mut(&mac) {
                    if l.ip == request.client_ip {
                        l.expires_ms = now_ms;
                        l.bound = false;
                    }
                }
                return None;
            }
            DhcpMessageType::Decline => {
                let ip = request.requested_ip?;
                if self.by_mac.get(&mac).is_some_and(|l| l.ip == ip) {
                    self.forget(&mac);
                    self.declined.retain(|_, until| *until > now_ms);
                    if self.declined.len() < MAX_DECLINED {
                        self.declined
                            .insert(ip, now_ms.saturating_add(self.lease_ms));
                    }
                }
                return None;
            }
            DhcpMessageType::Inform => (DhcpMessageType::Ack, Ipv4Addr::UNSPECIFIED),
            _ => return None,
        };
        let (message_type, your_ip) = reply_type;
        let nak = message_type == DhcpMessageType::Nak;
        let inform = request.message_type == DhcpMessageType::Inform;
        let dns = plan.dns.map(|d| {
            let mut v = heapless_dns();
            let _ = v.push(d);
            v
        });
        let domain = [DhcpOption {
            kind: OPT_DOMAIN_NAME,
            data: plan.domain.as_bytes(),
        }];
        let offers_config = !nak;
        let reply = DhcpRepr {
            message_type,
            transaction_id: request.transaction_id,
            secs: 0,
            client_hardware_address: request.client_hardware_address,
            client_ip: if inform {
                request.client_ip
            } else {
                Ipv4Addr::UNSPECIFIED
            },
            your_ip,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: (offers_config && plan.mode == NetworkMode::Nat).then_some(plan.gateway),
            subnet_mask: offers_config.then(|| plan.netmask()),
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: request.broadcast,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(server),
            parameter_request_list: None,
            dns_servers: if offers_config { dns } else { None },
            max_size: None,
            lease_duration: (offers_config && !inform).then_some(self.lease_seconds),
            renew_duration: (offers_config && !inform).then_some(self.lease_seconds / 2),
            rebind_duration: (offers_config && !inform).then_some(self.lease_seconds / 8 * 7),
            additional_options: if offers_config { &domain } else { &[] },
        };
        // To the client's MAC (it reads its raw socket before it has an address), or to
        // everyone when it asked for broadcast replies or is told no.
        let (dst_mac, dst_ip) = if request.broadcast || nak {
            ([0xff; 6], Ipv4Addr::BROADCAST)
        } else if inform {
            (mac, request.client_ip)
        } else {
            (mac, your_ip)
        };
        let len = reply.buffer_len();
        let mut failed = false;
        let frame = packet::udp(
            (gateway_mac, server, DHCP_SERVER_PORT),
            (dst_mac, dst_ip, DHCP_CLIENT_PORT),
            len,
            |buf| {
                let mut p = DhcpPacket::new_unchecked(buf);
                failed = reply.emit(&mut p).is_err();
            },
        );
        (!failed).then_some(frame)
    }
}

fn heapless_dns() -> heapless::Vec<Ipv4Addr, { smoltcp::wire::DHCP_MAX_DNS_SERVER_COUNT }> {
    heapless::Vec::new()
}

/// Parses a client's DHCP message (UDP payload).
pub(crate) fn parse(payload: &[u8]) -> Option<DhcpPacket<&[u8]>> {
    DhcpPacket::new_checked(payload).ok()
}
