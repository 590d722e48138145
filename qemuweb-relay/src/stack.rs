//! The user-mode stack: a smoltcp interface behind the network's gateway that terminates
//! the guests' TCP connections, and the channels to the host sockets that carry them.
//!
//! The interface has the gateway's MAC and address and accepts packets for any address
//! (smoltcp's AnyIP): a guest's SYN to `ADDR:PORT` beyond the network makes the stack
//! listen on `ADDR:PORT` for that one connection (when the [`Policy`] allows the
//! destination) and ask for a host connection to it; the bytes then flow between the
//! smoltcp socket and the host socket through two bounded channels. A forward goes the
//! other way: a host connection makes the stack ask the page's DNS server for the VM's
//! address, then connect to it.
//!
//! UDP and ICMP echo go the same way without a socket of smoltcp's: a guest's datagram
//! to `ADDR:PORT` beyond the network (or its echo request to `ADDR`) opens a datagram flow,
//! keyed by its four addresses (the echo's identifier as its port), and asks for a host
//! socket connected to the destination; the datagrams go through bounded channels (a full
//! channel drops the newest, as a network would), the answers come back as IPv4 packets
//! built here (fragmented when larger than the MTU), and a flow idle for
//! [`StackLimits::datagram_idle_ms`] ends. Echo requests go out only when the host lets
//! the relay open ICMP datagram ("ping") sockets ([`Stack::set_ping`]).
//!
//! Synchronous and without I/O of its own: [`Stack::input`] takes a frame from the page,
//! [`Stack::transmit`] gives the frames for the page, [`Stack::poll`] moves everything on
//! at a time the caller gives, and [`Stack::take_connects`] hands out the host connections
//! to make. Everything is bounded: the frames (size, validity), the connections
//! ([`StackLimits`]) and the bytes in flight per connection (socket buffers and channel
//! capacities).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};

use qemuweb_config::NetworkPlan;
use qemuweb_net::{services::gateway_mac, validate_frame, DropReason};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{dns, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpPacket, UdpPacket, UdpRepr,
};
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr};
use tokio::sync::mpsc;

use crate::device::FrameQueues as Queues;
use crate::policy::{Policy, Refusal};

/// The largest frame the relay takes or sends (a 1500-byte MTU and the Ethernet header).
pub const MAX_FRAME: usize = 1514;

/// The bytes of one read from, or one write to, a host socket.
pub const CHUNK: usize = 16 << 10;

/// How long a VM's address from the page's DNS is used for forwards without asking again.
const NAME_TTL_MS: u64 = 10_000;

/// Chunks in flight in each direction of a connection's channels.
const CHANNEL_CHUNKS: usize = 8;

/// Datagrams in flight in each direction of a datagram flow's channels.
const CHANNEL_DATAGRAMS: usize = 16;

/// The largest payload of one IPv4 packet to a guest (a multiple of 8, as fragments'
/// offsets are).
const MAX_IP_PAYLOAD: usize = MAX_FRAME - 14 - 20;

/// The largest UDP payload an IPv4 packet carries (65535 less the IPv4 and UDP headers):
/// the host sockets' datagrams are read into buffers of this size.
pub const MAX_DATAGRAM: usize = 65_507;

/// Bounds of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackLimits {
    /// The most connections open at once (default 256).
    pub max_flows: usize,
    /// Each connection's smoltcp receive buffer (guest to host), in bytes (default 64 KiB).
    pub socket_buffer: usize,
    /// Each connection's smoltcp send buffer (host to guest), in bytes, which bounds the
    /// bytes in flight to the guest (default 8 KiB). Small on purpose: an emulated NIC's
    /// receive ring is small (v86's NE2000 holds about 8 full frames), frames beyond it
    /// are lost, and smoltcp (no SACK, no congestion control here) recovers from a burst
    /// of losses by timeouts, which costs far more than the smaller window.
    pub send_buffer: usize,
    /// The guests' addresses whose MAC addresses the stack remembers (default 256).
    pub max_neighbors: usize,
    /// The most UDP and ICMP echo flows open at once (default 64), each a host socket.
    pub max_datagram_flows: usize,
    /// How long a UDP or ICMP echo flow lives without a datagram either way, in
    /// milliseconds (default 30 000).
    pub datagram_idle_ms: u64,
}

impl Default for StackLimits {
    fn default() -> Self {
        StackLimits {
            max_flows: 256,
            socket_buffer: 64 << 10,
            send_buffer: 8 << 10,
            max_neighbors: 256,
            max_datagram_flows: 64,
            datagram_idle_ms: 30_000,
        }
    }
}

/// What a host socket's task tells the stack.
#[derive(Debug)]
pub enum HostEvent {
    /// Bytes the host sent.
    Data(Vec<u8>),
    /// The host closed its side.
    Eof,
    /// The host connection failed (or could not be made).
    Failed,
}

/// The stack's end of a connection's host side: the channels of its task.
#[derive(Debug)]
pub struct HostChannels {
    /// Bytes for the host.
    pub to_host: mpsc::Receiver<Vec<u8>>,
    /// What the host sent.
    pub from_host: mpsc::Sender<HostEvent>,
}

/// What a host socket carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A TCP connection: the channels carry a byte stream in chunks.
    Tcp,
    /// A UDP flow: the channels carry datagrams' payloads, one a message.
    Udp,
    /// ICMP echo: to the host, the guest's echo requests (the ICMP message: header and
    /// data); from it, the echo replies (the same), for an ICMP datagram socket.
    Icmp,
}

/// A host connection the stack wants made, or a forwarded one it has taken over.
#[derive(Debug)]
pub struct Connect {
    /// What the host socket carries.
    pub protocol: Protocol,
    /// Where to connect (for a guest's connection); `None` for a forward, whose host
    /// socket is open already.
    pub target: Option<SocketAddr>,
    /// The forward's id given to [`Stack::forward`], for a forward.
    pub forward: Option<u64>,
    /// The guest's side, for logs: `guest address:port -> address:port`.
    pub flow: String,
    /// The channels the host socket's task uses.
    pub channels: HostChannels,
}

/// The relay's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Frames from the page the stack took.
    pub frames_in: u64,
    /// Frames the stack sent to the page.
    pub frames_out: u64,
    /// Frames from the page that were dropped, by reason (`runt`, `oversized`, `spoofed`
    /// for a source that is not a guest of the network, `bad-length`, `bad-source`, and
    /// `no-route` for frames not for the gateway).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Guest connections refused, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Connections opened (guests' and forwards').
    pub flows_opened: u64,
    /// Forwarded host connections that found no VM (its name did not resolve).
    pub forwards_unresolved: u64,
    /// UDP and ICMP echo flows opened.
    pub datagram_flows_opened: u64,
    /// Datagrams carried from the guests to the host.
    pub datagrams_out: u64,
    /// Datagrams carried from the host to the guests.
    pub datagrams_in: u64,
    /// Guests' datagrams lost: their flow's channel to the host was full, or they came in
    /// fragments (not reassembled). (The host socket's task drops the host's datagrams
    /// when the channel to the stack is full; those are not counted here.)
    pub datagrams_dropped: u64,
}

impl RelayStats {
    /// How many frames were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// How many connections were refused for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused.get(reason.as_str()).copied().unwrap_or(0)
    }
}

/// The four addresses of a guest's connection.
type FlowKey = (Ipv4Addr, u16, Ipv4Addr, u16);

/// A datagram flow: UDP's four addresses, or an echo's (its identifier as the port, 0 as
/// the destination's).
type DatagramKey = (bool, Ipv4Addr, u16, Ipv4Addr, u16);

/// A guest's UDP or ICMP echo flow.
#[derive(Debug)]
struct DatagramFlow {
    guest_mac: EthernetAddress,
    to_host: mpsc::Sender<Vec<u8>>,
    from_host: mpsc::Receiver<HostEvent>,
    /// The last datagram either way (ms).
    last_ms: u64,
}

#[derive(Debug)]
struct Flow {
    key: Option<FlowKey>,
    to_host: Option<mpsc::Sender<Vec<u8>>>,
    from_host: mpsc::Receiver<HostEvent>,
    /// A chunk from the host not yet all in the socket, and how much of it is.
    pending: Option<(Vec<u8>, usize)>,
    host_done: bool,
    closing: bool,
}

/// A forwarded host connection waiting for its VM's address.
struct Lookup {
    id: u64,
    query: dns::QueryHandle,
    vm: String,
    port: u16,
    channels: (mpsc::Sender<Vec<u8>>, mpsc::Receiver<HostEvent>),
    host: HostChannels,
}

/// The relay's user-mode stack for one network (see the [module documentation](self)).
pub struct Stack {
    iface: Interface,
    device: Queues,
    sockets: SocketSet<'static>,
    gateway: Ipv4Addr,
    gateway_mac: EthernetAddress,
    dns_server: Option<Ipv4Addr>,
    plan: NetworkPlan,
    policy: Policy,
    limits: StackLimits,
    flows: HashMap<SocketHandle, Flow>,
    keys: HashMap<FlowKey, SocketHandle>,
    datagrams: HashMap<DatagramKey, DatagramFlow>,
    ping: bool,
    ping_refusal_logged: bool,
    next_ip_ident: u16,
    neighbors: HashMap<Ipv4Addr, EthernetAddress>,
    dns: Option<SocketHandle>,
    lookups: Vec<Lookup>,
    /// VMs' addresses the page's DNS gave, until when (ms): forwarded connections in a
    /// row ask once.
    names: HashMap<String, (Ipv4Addr, u64)>,
    now_ms: u64,
    connects: Vec<Connect>,
    failed_forwards: Vec<u64>,
    next_port: u16,
    stats: RelayStats,
    log: Vec<String>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("network", &self.plan.id)
            .field("flows", &self.flows.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn channels() -> (
    (mpsc::Sender<Vec<u8>>, mpsc::Receiver<HostEvent>),
    HostChannels,
) {
    let (to_host_tx, to_host_rx) = mpsc::channel(CHANNEL_CHUNKS);
    let (from_host_tx, from_host_rx) = mpsc::channel(CHANNEL_CHUNKS);
    (
        (to_host_tx, from_host_rx),
        HostChannels {
            to_host: to_host_rx,
            from_host: from_host_tx,
        },
    )
}

impl Stack {
    /// A stack behind the gateway of the network `plan`, at time `now_ms`.
    pub fn new(plan: NetworkPlan, policy: Policy, limits: StackLimits, now_ms: u64) -> Self {
        let mut device = Queues::default();
        let mac = EthernetAddress(gateway_mac(plan.gateway));
        let now = Instant::from_millis(now_ms as i64);
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(mac)),
            &mut device,
            now,
        );
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(plan.gateway), plan.prefix));
        });
        iface.set_any_ip(true);
        let mut sockets = SocketSet::new(Vec::new());
        let dns = plan.dns.map(|server| {
            let queries: Vec<Option<dns::DnsQuery>> = (0..8).map(|_| None).collect();
            sockets.add(dns::Socket::new(&[IpAddress::Ipv4(server)], queries))
        });
        Stack {
            iface,
            device,
            sockets,
            gateway: plan.gateway,
            gateway_mac: mac,
            dns_server: plan.dns,
            plan,
            policy,
            limits,
            flows: HashMap::new(),
            keys: HashMap::new(),
            datagrams: HashMap::new(),
            ping: false,
            ping_refusal_logged: false,
            next_ip_ident: 1,
            neighbors: HashMap::new(),
            dns,
            lookups: Vec::new(),
            names: HashMap::new(),
            now_ms,
            connects: Vec::new(),
            failed_forwards: Vec::new(),
            next_port: 49152,
            stats: RelayStats::default(),
            log: Vec::new(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Connections open now.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// UDP and ICMP echo flows open now.
    pub fn datagram_flows(&self) -> usize {
        self.datagrams.len()
    }

    /// Whether the guests' echo requests beyond the network go out (through ICMP datagram
    /// sockets, which the host allows when the relay's group is in
    /// `net.ipv4.ping_group_range`); when not (the default), they are refused
    /// ([`Refusal::Unsupported`]).
    pub fn set_ping(&mut self, available: bool) {
        self.ping = available;
    }

    /// Lines for the log since the last call (refusals and the like).
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    /// The host connections to make (for guests' connections) or whose sockets to serve
    /// (forwards), since the last call.
    pub fn take_connects(&mut self) -> Vec<Connect> {
        std::mem::take(&mut self.connects)
    }

    /// The forwards (ids given to [`forward`](Self::forward)) that failed since the last
    /// call: their host connections are to be closed.
    pub fn take_failed_forwards(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.failed_forwards)
    }

    /// The next frame for the page.
    pub fn transmit(&mut self) -> Option<Vec<u8>> {
        let f = self.device.tx.pop_front()?;
        self.stats.frames_out += 1;
        Some(f)
    }

    fn drop_frame(&mut self, reason: DropReason) {
        *self.stats.dropped.entry(reason.as_str()).or_default() += 1;
    }

    fn refuse(&mut self, reason: Refusal, what: String) {
        *self.stats.refused.entry(reason.as_str()).or_default() += 1;
        self.log.push(format!("refused {what}: {reason}"));
    }

    /// A frame from the page, at `now_ms`: checked, then given to the stack.
    ///
    /// Frames are dropped (and counted) when they are not valid Ethernet frames of at most
    /// [`MAX_FRAME`] bytes, are not for the gateway's MAC address, or do not come from an
    /// address of the network; ARP requests are the page's to answer and are ignored.
    pub fn input(&mut self, frame: &[u8], now_ms: u64) {
        let checked = match validate_frame(frame, MAX_FRAME) {
            Ok(view) if view.dst_addr() != self.gateway_mac => Err(DropReason::NoRoute),
            other => other.map(|_| ()),
        };
        if let Err(reason) = checked {
            self.drop_frame(reason);
            return;
        }
        let view = EthernetFrame::new_unchecked(frame);
        match view.ethertype() {
            EthernetProtocol::Arp => {
                let reply = ArpPacket::new_checked(view.payload())
                    .ok()
                    .and_then(|p| ArpRepr::parse(&p).ok());
                match reply {
                    Some(ArpRepr::EthernetIpv4 {
                        operation: ArpOperation::Reply,
                        source_protocol_addr,
                        ..
                    }) if self.plan.is_host(source_protocol_addr) => {}
                    _ => return,
                }
            }
            EthernetProtocol::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(view.payload()) else {
                    self.drop_frame(DropReason::BadLength);
                    return;
                };
                let src = ip.src_addr();
                // The page's services (their DNS answers) send from the gateway's MAC
                // address, which the switch lets no VM use; the guests from theirs.
                let from_services = view.src_addr() == self.gateway_mac;
                let valid = if from_services {
                    Some(src) == self.dns_server
                } else {
                    self.plan.is_host(src) && src != self.gateway && Some(src) != self.dns_server
                };
                if !valid {
                    self.drop_frame(DropReason::Spoofed);
                    return;
                }
                let beyond = !self.plan.contains(ip.dst_addr()) || ip.dst_addr() == self.gateway;
                if from_services {
                    // Answers to the stack's own questions (smoltcp matches them).
                } else if ip.next_header() == IpProtocol::Tcp {
                    self.learn(src, view.src_addr(), now_ms);
                    self.on_tcp(&ip);
                } else if beyond && matches!(ip.next_header(), IpProtocol::Udp | IpProtocol::Icmp) {
                    self.learn(src, view.src_addr(), now_ms);
                    if self.on_datagram(&ip, view.src_addr(), now_ms) {
                        // Carried: smoltcp is not to see it (it would answer "port
                        // unreachable"), as it does for refused UDP.
                        self.stats.frames_in += 1;
                        self.poll(now_ms);
                        return;
                    }
                } else if beyond {
                    self.learn(src, view.src_addr(), now_ms);
                    let what = format!("{:?} {src} -> {}", ip.next_header(), ip.dst_addr());
                    self.refuse(Refusal::Unsupported, what);
                }
            }
            _ => return,
        }
        self.stats.frames_in += 1;
        self.device.rx.push_back(frame.to_vec());
        self.poll(now_ms);
    }

    /// Teaches smoltcp a guest's MAC address from its frame, so that its first answer
    /// needs no ARP round trip: an ARP reply from the guest, made here, as if it had sent
    /// one.
    fn learn(&mut self, ip: Ipv4Addr, mac: EthernetAddress, now_ms: u64) {
        if self.neighbors.get(&ip) == Some(&mac) {
            return;
        }
        if self.neighbors.len() >= self.limits.max_neighbors {
            self.neighbors.clear();
        }
        self.neighbors.insert(ip, mac);
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: self.gateway_mac,
            target_protocol_addr: self.gateway,
        };
        let mut frame = vec![0u8; 14 + arp.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst_addr(self.gateway_mac);
        eth.set_src_addr(mac);
        eth.set_ethertype(EthernetProtocol::Arp);
        arp.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        self.device.rx.push_back(frame);
        self.poll(now_ms);
    }

    /// A guest's TCP segment: a SYN for a new connection opens one, if allowed.
    fn on_tcp(&mut self, ip: &Ipv4Packet<&[u8]>) {
        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
            return;
        };
        if !tcp.syn() || tcp.ack() {
            return;
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let key = (src, tcp.src_port(), dst, tcp.dst_port());
        if self.keys.contains_key(&key) || (self.plan.contains(dst) && dst != self.gateway) {
            return;
        }
        let what = format!("{src}:{} -> {dst}:{}", key.1, key.3);
        let target = match self
            .policy
            .target(dst, key.3, self.gateway, self.dns_server)
        {
            Ok(t) if self.flows.len() < self.limits.max_flows => t,
            Ok(_) => return self.refuse(Refusal::TooManyFlows, what),
            Err(reason) => return self.refuse(reason, what),
        };
        let mut socket = self.new_socket();
        if socket
            .listen(IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(dst)),
                port: key.3,
            })
            .is_err()
        {
            return;
        }
        let handle = self.sockets.add(socket);
        let ((to_host, from_host), host) = channels();
        self.flows.insert(
            handle,
            Flow {
                key: Some(key),
                to_host: Some(to_host),
                from_host,
                pending: None,
                host_done: false,
                closing: false,
            },
        );
        self.keys.insert(key, handle);
        self.stats.flows_opened += 1;
        self.connects.push(Connect {
            protocol: Protocol::Tcp,
            forward: None,
            target: Some(target),
            flow: what,
            channels: host,
        });
    }

    /// A guest's UDP datagram or ICMP message beyond the network: whether it was taken
    /// (carried, or dropped on purpose). Refused UDP is left to smoltcp, which answers
    /// "port unreachable", as a host without the service would; a refused echo request
    /// goes unanswered.
    fn on_datagram(&mut self, ip: &Ipv4Packet<&[u8]>, mac: EthernetAddress, now_ms: u64) -> bool {
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if ip.more_frags() || ip.frag_offset() != 0 {
            self.stats.datagrams_dropped += 1;
            return true;
        }
        let icmp = ip.next_header() == IpProtocol::Icmp;
        let (key, what, payload) = if icmp {
            let echo = Icmpv4Packet::new_checked(ip.payload())
                .ok()
                .and_then(|p| Icmpv4Repr::parse(&p, &ChecksumCapabilities::default()).ok());
            let Some(Icmpv4Repr::EchoRequest { ident, .. }) = echo else {
                return false;
            };
            let what = format!("ping {src} -> {dst} (id {ident})");
            ((true, src, ident, dst, 0), what, ip.payload())
        } else {
            let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                return false;
            };
            let key = (false, src, udp.src_port(), dst, udp.dst_port());
            let what = format!("udp {src}:{} -> {dst}:{}", key.2, key.4);
            (key, what, udp.payload())
        };
        if !self.datagrams.contains_key(&key) {
            if icmp && !self.ping {
                if !std::mem::replace(&mut self.ping_refusal_logged, true) {
                    self.log.push(
                        "ping beyond the network needs ICMP datagram sockets: the host \
                         allows them to the groups in net.ipv4.ping_group_range"
                            .into(),
                    );
                }
                self.refuse(Refusal::Unsupported, what);
                return true;
            }
            // An echo's "port" only passes the policy's check; its socket has none.
            let port = if icmp { 7 } else { key.4 };
            let target = match self.policy.target(dst, port, self.gateway, self.dns_server) {
                Ok(t) if self.datagrams.len() < self.limits.max_datagram_flows => t,
                Ok(_) => {
                    self.refuse(Refusal::TooManyFlows, what);
                    return icmp;
                }
                Err(reason) => {
                    self.refuse(reason, what);
                    return icmp;
                }
            };
            let (to_host, to_host_rx) = mpsc::channel(CHANNEL_DATAGRAMS);
            let (from_host_tx, from_host) = mpsc::channel(CHANNEL_DATAGRAMS);
            self.datagrams.insert(
                key,
                DatagramFlow {
                    guest_mac: mac,
                    to_host,
                    from_host,
                    last_ms: now_ms,
                },
            );
            self.stats.datagram_flows_opened += 1;
            self.connects.push(Connect {
                protocol: if icmp { Protocol::Icmp } else { Protocol::Udp },
                forward: None,
                target: Some(target),
                flow: what,
                channels: HostChannels {
                    to_host: to_host_rx,
                    from_host: from_host_tx,
                },
            });
        }
        let Some(flow) = self.datagrams.get_mut(&key) else {
            return true;
        };
        flow.last_ms = now_ms;
        if flow.to_host.try_send(payload.to_vec()).is_ok() {
            self.stats.datagrams_out += 1;
        } else {
            self.stats.datagrams_dropped += 1;
        }
        true
    }

    /// Moves the host's datagrams to the guests, and ends the flows that are idle or whose
    /// host socket is gone.
    fn pump_datagrams(&mut self) {
        let mut gone = Vec::new();
        let mut out = Vec::new();
        for (key, flow) in self.datagrams.iter_mut() {
            let mut ended = false;
            // At most a channel's worth a round, so the queue to the page stays bounded.
            for _ in 0..CHANNEL_DATAGRAMS {
                match flow.from_host.try_recv() {
                    Ok(HostEvent::Data(d)) => {
                        flow.last_ms = self.now_ms;
                        out.push((*key, flow.guest_mac, d));
                    }
                    Ok(HostEvent::Eof | HostEvent::Failed)
                    | Err(mpsc::error::TryRecvError::Disconnected) => {
                        ended = true;
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
            if ended || self.now_ms.saturating_sub(flow.last_ms) >= self.limits.datagram_idle_ms {
                gone.push(*key);
            }
        }
        for key in gone {
            // Dropping the channels ends the host socket's task.
            self.datagrams.remove(&key);
        }
        for ((icmp, guest, guest_port, dst, dst_port), mac, data) in out {
            let packet = if icmp {
                let reply = Icmpv4Packet::new_checked(&data[..])
                    .ok()
                    .and_then(|p| Icmpv4Repr::parse(&p, &ChecksumCapabilities::ignored()).ok());
                let Some(Icmpv4Repr::EchoReply { seq_no, data, .. }) = reply else {
                    continue;
                };
                // The host's socket had its own identifier: the guest's goes back.
                let repr = Icmpv4Repr::EchoReply {
                    ident: guest_port,
                    seq_no,
                    data,
                };
                let mut b = vec![0; repr.buffer_len()];
                repr.emit(
                    &mut Icmpv4Packet::new_unchecked(&mut b[..]),
                    &ChecksumCapabilities::default(),
                );
                b
            } else {
                if data.len() > MAX_DATAGRAM {
                    self.stats.datagrams_dropped += 1;
                    continue;
                }
                let repr = UdpRepr {
                    src_port: dst_port,
                    dst_port: guest_port,
                };
                let mut b = vec![0; 8 + data.len()];
                repr.emit(
                    &mut UdpPacket::new_unchecked(&mut b[..]),
                    &IpAddress::Ipv4(dst),
                    &IpAddress::Ipv4(guest),
                    data.len(),
                    |p| p.copy_from_slice(&data),
                    &ChecksumCapabilities::default(),
                );
                b
            };
            let protocol = if icmp {
                IpProtocol::Icmp
            } else {
                IpProtocol::Udp
            };
            self.send_to_guest((guest, mac), dst, protocol, &packet);
            self.stats.datagrams_in += 1;
        }
    }

    /// Queues an IPv4 packet from `from` to a guest, in fragments when it is larger than
    /// the MTU.
    fn send_to_guest(
        &mut self,
        (guest, mac): (Ipv4Addr, EthernetAddress),
        from: Ipv4Addr,
        protocol: IpProtocol,
        payload: &[u8],
    ) {
        let ident = self.next_ip_ident;
        self.next_ip_ident = ident.wrapping_add(1);
        let mut off = 0;
        loop {
            let n = (payload.len() - off).min(MAX_IP_PAYLOAD);
            let more = off + n < payload.len();
            let mut frame = vec![0u8; 14 + 20 + n];
            let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
            eth.set_dst_addr(mac);
            eth.set_src_addr(self.gateway_mac);
            eth.set_ethertype(EthernetProtocol::Ipv4);
            let repr = Ipv4Repr {
                src_addr: from,
                dst_addr: guest,
                next_header: protocol,
                payload_len: n,
                hop_limit: 64,
            };
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
            repr.emit(&mut ip, &ChecksumCapabilities::ignored());
            ip.set_ident(ident);
            ip.set_dont_frag(false);
            ip.set_more_frags(more);
            ip.set_frag_offset(off as u16);
            ip.fill_checksum();
            frame[34..].copy_from_slice(&payload[off..off + n]);
            self.device.tx.push_back(frame);
            off += n;
            if !more {
                break;
            }
        }
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.limits.socket_buffer]),
            tcp::SocketBuffer::new(vec![0; self.limits.send_buffer]),
        );
        s.set_timeout(Some(Duration::from_secs(60)));
        s.set_nagle_enabled(false);
        // Acknowledge at once, as QEMU's slirp does: a guest's Nagle waits for the ACK of
        // its first small segment before it sends the next (an HTTP head, then its body).
        s.set_ack_delay(None);
        s
    }

    /// A host connection accepted on a forward's port: the stack asks the page's DNS
    /// server for `vm`'s address and connects to its `port`; the host socket's task gets
    /// its channels from [`take_connects`](Self::take_connects) (or they are dropped, and
    /// the host connection closed, when the VM is not found or there are too many
    /// connections).
    pub fn forward(&mut self, id: u64, vm: &str, port: u16, now_ms: u64) {
        let ((to_host, from_host), host) = channels();
        if self.flows.len() + self.lookups.len() >= self.limits.max_flows {
            self.refuse(Refusal::TooManyFlows, format!("forward to {vm}:{port}"));
            self.failed_forwards.push(id);
            return;
        }
        let known = self
            .names
            .get(vm)
            .filter(|(_, until)| *until > now_ms)
            .map(|(ip, _)| *ip);
        let query = match (vm.parse::<Ipv4Addr>().ok().or(known), self.dns) {
            (Some(ip), _) => {
                self.connect_forward(id, ip, port, (to_host, from_host), host);
                self.poll(now_ms);
                return;
            }
            (None, Some(dns)) => {
                let cx = self.iface.context();
                self.sockets.get_mut::<dns::Socket>(dns).start_query(
                    cx,
                    vm,
                    smoltcp::wire::DnsQueryType::A,
                )
            }
            (None, None) => {
                self.stats.forwards_unresolved += 1;
                self.failed_forwards.push(id);
                self.log
                    .push(format!("forward to {vm}:{port}: the network has no DNS"));
                return;
            }
        };
        match query {
            Ok(query) => self.lookups.push(Lookup {
                id,
                query,
                vm: vm.into(),
                port,
                channels: (to_host, from_host),
                host,
            }),
            Err(e) => {
                self.stats.forwards_unresolved += 1;
                self.failed_forwards.push(id);
                self.log.push(format!("forward to {vm}:{port}: {e}"));
            }
        }
        self.poll(now_ms);
    }

    fn connect_forward(
        &mut self,
        id: u64,
        ip: Ipv4Addr,
        port: u16,
        (to_host, from_host): (mpsc::Sender<Vec<u8>>, mpsc::Receiver<HostEvent>),
        host: HostChannels,
    ) {
        let mut socket = self.new_socket();
        self.next_port = if self.next_port >= 65000 {
            49152
        } else {
            self.next_port + 1
        };
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(self.gateway)),
            port: self.next_port,
        };
        let cx = self.iface.context();
        if socket
            .connect(cx, (IpAddress::Ipv4(ip), port), local)
            .is_err()
        {
            self.log
                .push(format!("forward to {ip}:{port}: cannot connect"));
            self.failed_forwards.push(id);
            return;
        }
        let handle = self.sockets.add(socket);
        self.flows.insert(
            handle,
            Flow {
                key: None,
                to_host: Some(to_host),
                from_host,
                pending: None,
                host_done: false,
                closing: false,
            },
        );
        self.stats.flows_opened += 1;
        self.connects.push(Connect {
            protocol: Protocol::Tcp,
            forward: Some(id),
            target: None,
            flow: format!("forward -> {ip}:{port}"),
            channels: host,
        });
    }

    /// When [`poll`](Self::poll) wants to run next (at the latest), in milliseconds from
    /// `now_ms`.
    pub fn poll_delay(&mut self, now_ms: u64) -> Option<u64> {
        self.iface
            .poll_delay(Instant::from_millis(now_ms as i64), &self.sockets)
            .map(|d| d.total_millis())
    }

    /// Moves everything on at `now_ms`: smoltcp's timers and queues, the forwards' name
    /// lookups, the bytes between the connections' sockets and their channels, and the
    /// host's datagrams to the guests (ending idle datagram flows).
    pub fn poll(&mut self, now_ms: u64) {
        let now = Instant::from_millis(now_ms as i64);
        self.now_ms = now_ms;
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.resolve();
        self.pump_datagrams();
        if self.pump() {
            self.iface.poll(now, &mut self.device, &mut self.sockets);
        }
    }

    fn resolve(&mut self) {
        let Some(dns) = self.dns else {
            return;
        };
        let mut i = 0;
        while i < self.lookups.len() {
            let result = self
                .sockets
                .get_mut::<dns::Socket>(dns)
                .get_query_result(self.lookups[i].query);
            let lookup = match result {
                Err(dns::GetQueryResultError::Pending) => {
                    i += 1;
                    continue;
                }
                _ => self.lookups.swap_remove(i),
            };
            let ip = result.ok().and_then(|ips| {
                ips.iter().find_map(|a| match a {
                    IpAddress::Ipv4(ip) => Some(*ip),
                    #[allow(unreachable_patterns)]
                    _ => None,
                })
            });
            match ip {
                Some(ip) => {
                    if self.names.len() >= 64 {
                        self.names.clear();
                    }
                    self.names
                        .insert(lookup.vm.clone(), (ip, self.now_ms + NAME_TTL_MS));
                    self.connect_forward(lookup.id, ip, lookup.port, lookup.channels, lookup.host)
                }
                None => {
                    self.stats.forwards_unresolved += 1;
                    self.failed_forwards.push(lookup.id);
                    self.log.push(format!(
                        "forward to {}:{}: the network's DNS does not know the VM",
                        lookup.vm, lookup.port
                    ));
                }
            }
        }
    }

    /// Moves bytes between sockets and channels; whether anything moved.
    fn pump(&mut self) -> bool {
        let mut moved = false;
        let mut gone = Vec::new();
        for (handle, flow) in self.flows.iter_mut() {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            // Guest to host.
            let mut host_gone = false;
            if let Some(tx) = &flow.to_host {
                while socket.can_recv() {
                    let permit = match tx.try_reserve() {
                        Ok(p) => p,
                        Err(mpsc::error::TrySendError::Full(_)) => break,
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            socket.abort();
                            host_gone = true;
                            break;
                        }
                    };
                    let Ok(chunk) = socket.recv(|b| {
                        let n = b.len().min(CHUNK);
                        (n, b[..n].to_vec())
                    }) else {
                        break;
                    };
                    permit.send(chunk);
                    moved = true;
                }
                let guest_closed = !socket.may_recv()
                    && socket.recv_queue() == 0
                    && !matches!(
                        socket.state(),
                        tcp::State::Listen | tcp::State::SynReceived | tcp::State::SynSent
                    );
                if guest_closed || host_gone {
                    flow.to_host = None; // the host task shuts its socket's writing side
                }
            }
            // Host to guest.
            loop {
                if flow.pending.is_none() && !flow.host_done {
                    match flow.from_host.try_recv() {
                        Ok(HostEvent::Data(d)) => flow.pending = Some((d, 0)),
                        Ok(HostEvent::Eof) | Err(mpsc::error::TryRecvError::Disconnected) => {
                            flow.host_done = true
                        }
                        Ok(HostEvent::Failed) => {
                            flow.host_done = true;
                            socket.abort();
                            moved = true;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {}
                    }
                }
                let Some((data, off)) = &mut flow.pending else {
                    break;
                };
                if !socket.can_send() {
                    break;
                }
                let n = socket.send_slice(&data[*off..]).unwrap_or(0);
                *off += n;
                moved |= n > 0;
                if *off < data.len() {
                    break;
                }
                flow.pending = None;
            }
            if flow.host_done && flow.pending.is_none() && !flow.closing {
                flow.closing = true;
                socket.close();
                moved = true;
            }
            // Done, once what the guest sent has all gone to the host (or the host is
            // gone): a closed socket may still hold received bytes.
            let drained = socket.recv_queue() == 0 || flow.to_host.is_none();
            if matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) && drained {
                gone.push(*handle);
            }
        }
        for handle in gone {
            if let Some(flow) = self.flows.remove(&handle) {
                if let Some(key) = flow.key {
                    self.keys.remove(&key);
                }
            }
            self.sockets.remove(handle);
        }
        moved
    }
}
