//! The relay with real parts: a guest (smoltcp's interface and TCP sockets, as a guest
//! kernel would speak) on the page's real switch (`qemuweb_net::Switch`), whose uplink is
//! a WebSocket to the running relay, reaching real servers on 127.0.0.1 and being reached
//! through forwards. Every test is bounded (`timeout`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use qemuweb_config::network_by_id;
use qemuweb_net::{DropReason, Nic, PortId, Switch};
use qemuweb_relay::device::FrameQueues as Wire;
use qemuweb_relay::{Policy, Refusal, Relay, RelayConfig};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const LIMIT: Duration = Duration::from_secs(30);

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A guest on the page's switch, whose network's uplink is the relay.
struct Page {
    switch: Switch,
    port: PortId,
    uplink: PortId,
    iface: Interface,
    wire: Wire,
    sockets: SocketSet<'static>,
    ws: Ws,
    start: std::time::Instant,
}

async fn connect_ws(relay: &Relay, token: &str, headers: &[(&str, &str)]) -> Result<Ws, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("{}?token={token}", relay.url())
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let stream = tokio::net::TcpStream::connect(relay.local_addr())
        .await
        .map_err(|e| e.to_string())?;
    tokio_tungstenite::client_async(req, stream)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

impl Page {
    async fn new(relay: &Relay) -> Page {
        let mut switch = Switch::new();
        switch
            .add_network(network_by_id("default").unwrap().plan().unwrap())
            .unwrap();
        let port = switch
            .attach("default", Nic::new("vm1", GUEST_MAC).with_ip(GUEST_IP))
            .unwrap();
        let uplink = switch.attach_uplink("default").unwrap();
        let mut wire = Wire::default();
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC))),
            &mut wire,
            Instant::from_millis(0),
        );
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(GUEST_IP), 24)).unwrap();
        });
        iface.routes_mut().add_default_ipv4_route(GATEWAY).unwrap();
        let ws = connect_ws(relay, relay.token().as_str(), &[])
            .await
            .unwrap();
        Page {
            switch,
            port,
            uplink,
            iface,
            wire,
            sockets: SocketSet::new(Vec::new()),
            ws,
            start: std::time::Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// One round: the guest's frames through the switch to the relay, the relay's (those
    /// that come within a few milliseconds) back to the guest.
    async fn step(&mut self) {
        let now = self.now();
        self.iface.poll(
            Instant::from_millis(now as i64),
            &mut self.wire,
            &mut self.sockets,
        );
        while let Some(f) = self.wire.tx.pop_front() {
            self.switch.send(self.port, &f, now).unwrap();
        }
        while let Some(f) = self.switch.recv(self.uplink) {
            self.ws.send(Message::Binary(f.into())).await.unwrap();
        }
        while let Ok(Some(Ok(Message::Binary(f)))) =
            tokio::time::timeout(Duration::from_millis(2), self.ws.next()).await
        {
            self.switch.send(self.uplink, &f, self.now()).unwrap();
        }
        while let Some(f) = self.switch.recv(self.port) {
            self.wire.rx.push_back(f);
        }
    }

    fn tcp_socket(&mut self) -> SocketHandle {
        let s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        );
        self.sockets.add(s)
    }

    fn connect(&mut self, to: Ipv4Addr, port: u16, local: u16) -> SocketHandle {
        let h = self.tcp_socket();
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, (to, port), local)
            .unwrap();
        h
    }

    fn socket(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// A UDP socket on the guest's `port`.
    fn udp(&mut self, port: u16) -> SocketHandle {
        let buffer =
            || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 16 << 10]);
        let mut s = udp::Socket::new(buffer(), buffer());
        s.bind(port).unwrap();
        self.sockets.add(s)
    }

    /// Sends `data` from the UDP socket `h` to `to`, then steps until a datagram comes
    /// back (`None` when none does within `wait`).
    async fn udp_exchange(
        &mut self,
        h: SocketHandle,
        to: (Ipv4Addr, u16),
        data: &[u8],
        wait: Duration,
    ) -> Option<Vec<u8>> {
        self.sockets
            .get_mut::<udp::Socket>(h)
            .send_slice(data, (IpAddress::Ipv4(to.0), to.1))
            .unwrap();
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until {
            self.step().await;
            if let Ok((d, meta)) = self.sockets.get_mut::<udp::Socket>(h).recv() {
                assert_eq!(meta.endpoint.addr, IpAddress::Ipv4(to.0));
                assert_eq!(meta.endpoint.port, to.1);
                return Some(d.to_vec());
            }
        }
        None
    }

    /// Steps for `d`.
    async fn idle(&mut self, d: Duration) {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until {
            self.step().await;
        }
    }
}

fn relay_with(policy: Policy, forwards: &[String]) -> Relay {
    let plan = network_by_id("default").unwrap().plan().unwrap();
    let mut config = RelayConfig::new(plan, 0);
    config.policy = policy;
    config.forwards = forwards.iter().map(|f| f.parse().unwrap()).collect();
    Relay::start(config).unwrap()
}

/// A host server on 127.0.0.1 that reads everything, then answers its length and the
/// bytes again, and closes.
async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<usize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&(got.len() as u32).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&got).await.unwrap();
        s.shutdown().await.unwrap();
        got.len()
    });
    (addr, task)
}

/// Everything the socket has received, appended to `into`.
fn drain(s: &mut tcp::Socket, into: &mut Vec<u8>) {
    while s.can_recv() {
        s.recv(|b| {
            into.extend_from_slice(b);
            (b.len(), ())
        })
        .unwrap();
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn run<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            tokio::time::timeout(LIMIT, f)
                .await
                .expect("the test took more than 30 s")
        });
}

#[test]
fn a_guest_reaches_a_loopback_server_through_the_gateway_address() {
    run(async {
        let relay = relay_with(
            Policy {
                allow_loopback: true,
                allow_private: false,
            },
            &[],
        );
        let (server, served) = echo_server().await;
        let mut page = Page::new(&relay).await;
        let h = page.connect(GATEWAY, server.port(), 40000);
        let data = pattern(300_000);
        let (mut sent, mut got, mut closed) = (0, Vec::new(), false);
        loop {
            page.step().await;
            let s = page.socket(h);
            if s.can_send() && sent < data.len() {
                sent += s.send_slice(&data[sent..]).unwrap();
            }
            if sent == data.len() && !closed {
                s.close();
                closed = true;
            }
            drain(s, &mut got);
            if !s.may_recv() && closed && s.state() != tcp::State::SynSent {
                break;
            }
        }
        assert_eq!(served.await.unwrap(), data.len());
        assert_eq!(&got[..4], &(data.len() as u32).to_be_bytes());
        assert!(got[4..] == data[..], "the bytes came back changed");
        let stats = relay.stats();
        assert_eq!(stats.flows_opened, 1);
        assert_eq!(stats.refused.values().sum::<u64>(), 0);
    });
}

#[test]
fn loopback_and_private_destinations_are_refused_without_flags() {
    run(async {
        let relay = relay_with(Policy::default(), &[]);
        let (server, _served) = echo_server().await;
        let mut page = Page::new(&relay).await;
        let to_gateway = page.connect(GATEWAY, server.port(), 40001);
        let to_private = page.connect(Ipv4Addr::new(192, 168, 1, 1), 80, 40002);
        let to_shared = page.connect(Ipv4Addr::new(100, 64, 0, 1), 80, 40003);
        loop {
            page.step().await;
            let closed = [to_gateway, to_private, to_shared]
                .iter()
                .all(|h| page.socket(*h).state() == tcp::State::Closed);
            if closed {
                break;
            }
        }
        let stats = relay.stats();
        assert_eq!(stats.refused(Refusal::Loopback), 1);
        assert_eq!(stats.refused(Refusal::Private), 2);
        assert_eq!(stats.flows_opened, 0);
    });
}

#[test]
fn a_forward_reaches_the_guest_by_its_name() {
    run(async {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let plan = network_by_id("default").unwrap().plan().unwrap();
        let mut config = RelayConfig::new(plan, 0);
        config.forwards = vec![format!("{port}:vm1:80").parse().unwrap()];
        config.verbose = true;
        let relay = Relay::start(config).unwrap();
        let mut page = Page::new(&relay).await;
        let h = page.tcp_socket();
        page.socket(h).listen(80).unwrap();
        let host = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.unwrap();
            answer
        });
        let mut asked = Vec::new();
        let mut answered = false;
        while !host.is_finished() {
            page.step().await;
            let s = page.socket(h);
            drain(s, &mut asked);
            if asked.ends_with(b"\r\n\r\n") && !answered && s.can_send() {
                s.send_slice(b"HTTP/1.0 200 OK\r\n\r\nfrom the guest")
                    .unwrap();
                s.close();
                answered = true;
            }
        }
        assert_eq!(asked, b"GET / HTTP/1.0\r\n\r\n", "{:?}", relay.stats());
        assert_eq!(
            host.await.unwrap(),
            b"HTTP/1.0 200 OK\r\n\r\nfrom the guest"
        );
        assert_eq!(relay.stats().flows_opened, 1);
    });
}

/// A raw HTTP/1.1 upgrade request to the relay; the status line's code.
async fn upgrade_status(relay: &Relay, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(relay.local_addr())
        .await
        .unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    let mut has_host = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_host {
        req.push_str(&format!("Host: {}\r\n", relay.local_addr()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head[9..12].parse().unwrap()
}

#[test]
fn the_token_origin_and_host_are_checked_before_the_upgrade() {
    run(async {
        let relay = relay_with(Policy::default(), &[]);
        let token = relay.token().as_str().to_string();
        let good = format!("/network?token={token}");
        let evil_host = format!("evil.example:{}", relay.local_addr().port());
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16);
        let cases: [Case; 7] = [
            ("/network", &[], 403),
            ("/network?token=00", &[], 403),
            (&good, &[("Origin", "http://evil.example")], 403),
            (
                &good,
                &[("Origin", "http://127.0.0.1.evil.example:80")],
                403,
            ),
            (&good, &[("Host", &evil_host)], 403),
            (&good, &[("Origin", "http://127.0.0.1:8000")], 101),
            ("/other?token=x", &[], 403),
        ];
        for (path, headers, status) in cases {
            assert_eq!(
                upgrade_status(&relay, path, headers).await,
                status,
                "{path} {headers:?}"
            );
            // Let the accepted session end before the next case.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A second page while one is connected is refused.
        let _first = connect_ws(&relay, &token, &[]).await.unwrap();
        assert!(connect_ws(&relay, &token, &[])
            .await
            .unwrap_err()
            .contains("409"));
    });
}

/// A valid IPv4 packet from the guest's MAC address but an address beyond the network.
fn spoofed(gw: [u8; 6]) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr};
    let repr = Ipv4Repr {
        src_addr: Ipv4Addr::new(192, 0, 2, 9),
        dst_addr: Ipv4Addr::new(198, 51, 100, 1),
        next_header: IpProtocol::Tcp,
        payload_len: 20,
        hop_limit: 64,
    };
    let mut f = gw.to_vec();
    f.extend(GUEST_MAC);
    f.extend([0x08, 0x00]);
    f.resize(14 + 40, 0);
    repr.emit(
        &mut Ipv4Packet::new_unchecked(&mut f[14..]),
        &ChecksumCapabilities::default(),
    );
    f
}

#[test]
fn malformed_frames_are_dropped_and_counted_and_a_flood_harms_nothing() {
    run(async {
        let relay = relay_with(
            Policy {
                allow_loopback: true,
                allow_private: false,
            },
            &[],
        );
        let mut page = Page::new(&relay).await;
        let gw = qemuweb_net::services::gateway_mac(GATEWAY);
        let frame = |dst: [u8; 6], src: [u8; 6], len: usize| {
            let mut f = dst.to_vec();
            f.extend(src);
            f.extend([0x08, 0x00]);
            f.resize(len, 0x45);
            f
        };
        let bad = [
            vec![1u8; 10],                               // runt
            frame(gw, GUEST_MAC, 2000),                  // oversized
            frame(gw, [0xff; 6], 60),                    // bad source
            spoofed(gw),                                 // from an address beyond the network
            frame([0x52, 0, 0, 0, 0, 9], GUEST_MAC, 60), // not for the gateway
        ];
        for f in &bad {
            page.ws
                .send(Message::Binary(f.clone().into()))
                .await
                .unwrap();
        }
        page.ws
            .send(Message::Text("not a frame".into()))
            .await
            .unwrap();
        // A flood of junk IPv4 for the gateway.
        for i in 0..20_000u32 {
            let mut f = frame(gw, GUEST_MAC, 600);
            f[20] = i as u8;
            page.ws.send(Message::Binary(f.into())).await.unwrap();
        }
        // The relay still carries a connection.
        let (server, served) = echo_server().await;
        let h = page.connect(GATEWAY, server.port(), 40010);
        let mut got = Vec::new();
        let mut closed = false;
        loop {
            page.step().await;
            let s = page.socket(h);
            if s.may_send() && !closed {
                s.send_slice(b"ping").unwrap();
                s.close();
                closed = true;
            }
            drain(s, &mut got);
            if closed && !s.may_recv() {
                break;
            }
        }
        assert_eq!(served.await.unwrap(), 4);
        assert_eq!(&got[4..], b"ping");
        let stats = relay.stats();
        assert_eq!(stats.dropped(DropReason::Runt), 2, "{stats:?}"); // and the text
        assert_eq!(stats.dropped(DropReason::Oversized), 1, "{stats:?}");
        assert_eq!(stats.dropped(DropReason::BadSource), 1, "{stats:?}");
        assert_eq!(stats.dropped(DropReason::Spoofed), 1, "{stats:?}");
        assert_eq!(stats.dropped(DropReason::NoRoute), 1, "{stats:?}");
        assert_eq!(stats.dropped(DropReason::BadLength), 20_000, "{stats:?}");
    });
}

/// A UDP server on 127.0.0.1 that answers each datagram with the same bytes, or with
/// `pattern(n)` for `big:N`; it reports each datagram's source port.
async fn udp_echo_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<u16>) {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = s.recv_from(&mut buf).await.unwrap();
            let _ = tx.send(from.port());
            let answer = match std::str::from_utf8(&buf[..n])
                .ok()
                .and_then(|t| t.strip_prefix("big:"))
                .and_then(|n| n.parse().ok())
            {
                Some(len) => pattern(len),
                None => buf[..n].to_vec(),
            };
            s.send_to(&answer, from).await.unwrap();
        }
    });
    (addr, rx)
}

fn relay_with_limits(policy: Policy, f: impl FnOnce(&mut qemuweb_relay::StackLimits)) -> Relay {
    let plan = network_by_id("default").unwrap().plan().unwrap();
    let mut config = RelayConfig::new(plan, 0);
    config.policy = policy;
    f(&mut config.limits);
    Relay::start(config).unwrap()
}

const LOOPBACK_ONLY: Policy = Policy {
    allow_loopback: true,
    allow_private: false,
};

#[test]
fn udp_datagrams_reach_a_loopback_server_and_its_answers_come_back() {
    run(async {
        let relay = relay_with_limits(LOOPBACK_ONLY, |l| l.datagram_idle_ms = 300);
        let (server, mut sources) = udp_echo_server().await;
        let mut page = Page::new(&relay).await;
        let h = page.udp(5000);
        let to = (GATEWAY, server.port());
        let wait = Duration::from_secs(5);
        assert_eq!(
            page.udp_exchange(h, to, b"one", wait).await.as_deref(),
            Some(&b"one"[..])
        );
        // An answer larger than the MTU comes in fragments, which the guest reassembles
        // (and checks the UDP checksum of).
        let big = page.udp_exchange(h, to, b"big:4000", wait).await.unwrap();
        assert!(big == pattern(4000), "the large answer came back changed");
        // The same flow: one host socket, one source port.
        let first = sources.recv().await.unwrap();
        assert_eq!(sources.recv().await.unwrap(), first);
        let stats = relay.stats();
        assert_eq!(stats.datagram_flows_opened, 1, "{stats:?}");
        assert_eq!(
            (stats.datagrams_out, stats.datagrams_in),
            (2, 2),
            "{stats:?}"
        );
        // Idle for longer than its timeout, the flow ends: the next datagram opens
        // another, from another host socket.
        page.idle(Duration::from_millis(1500)).await;
        assert_eq!(
            page.udp_exchange(h, to, b"two", wait).await.as_deref(),
            Some(&b"two"[..])
        );
        assert_ne!(sources.recv().await.unwrap(), first);
        assert_eq!(relay.stats().datagram_flows_opened, 2);
        assert_eq!(relay.stats().refused.values().sum::<u64>(), 0);
    });
}

#[test]
fn udp_flows_are_refused_by_the_policy_and_bounded_in_number() {
    run(async {
        let (server, _sources) = udp_echo_server().await;
        let wait = Duration::from_millis(600);
        // Without --allow-loopback: the gateway's address and 127/8 are refused, and so
        // are private ranges; no datagram reaches the server.
        let strict = relay_with(Policy::default(), &[]);
        let mut page = Page::new(&strict).await;
        let h = page.udp(5001);
        for to in [GATEWAY, Ipv4Addr::LOCALHOST, Ipv4Addr::new(192, 168, 1, 1)] {
            assert_eq!(
                page.udp_exchange(h, (to, server.port()), b"x", wait).await,
                None
            );
        }
        let stats = strict.stats();
        assert_eq!(stats.refused(Refusal::Loopback), 2, "{stats:?}");
        assert_eq!(stats.refused(Refusal::Private), 1, "{stats:?}");
        assert_eq!((stats.datagram_flows_opened, stats.datagrams_out), (0, 0));
        drop(page);
        // At most two flows: a third guest port is refused while they live.
        let relay = relay_with_limits(LOOPBACK_ONLY, |l| l.max_datagram_flows = 2);
        let mut page = Page::new(&relay).await;
        let to = (GATEWAY, server.port());
        for port in [6000, 6001] {
            let h = page.udp(port);
            assert!(page.udp_exchange(h, to, b"x", wait * 5).await.is_some());
        }
        let h = page.udp(6002);
        assert_eq!(page.udp_exchange(h, to, b"x", wait).await, None);
        let stats = relay.stats();
        assert_eq!(stats.refused(Refusal::TooManyFlows), 1, "{stats:?}");
        assert_eq!(stats.datagram_flows_opened, 2, "{stats:?}");
    });
}

/// Whether this process may open ICMP datagram sockets (its group in
/// `net.ipv4.ping_group_range`).
fn ping_sockets() -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)).is_ok()
}

/// Both ways in one test, as the host allows: with ICMP datagram sockets (for instance in
/// a network namespace of its own: `unshare -n` with `ping_group_range` set and `lo` up)
/// the echo goes to 127.0.0.1 and its reply comes back with the guest's identifier;
/// without, it is refused as unsupported and unanswered.
#[test]
fn ping_beyond_the_network_goes_out_through_a_ping_socket_or_is_refused() {
    run(async {
        let relay = relay_with(LOOPBACK_ONLY, &[]);
        let mut page = Page::new(&relay).await;
        let ident = 0x4242;
        let mut s = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        );
        s.bind(icmp::Endpoint::Ident(ident)).unwrap();
        let h = page.sockets.add(s);
        let caps = smoltcp::phy::ChecksumCapabilities::default();
        let echo = smoltcp::wire::Icmpv4Repr::EchoRequest {
            ident,
            seq_no: 7,
            data: b"qemuweb ping",
        };
        let mut b = vec![0; echo.buffer_len()];
        echo.emit(
            &mut smoltcp::wire::Icmpv4Packet::new_unchecked(&mut b),
            &caps,
        );
        let to = IpAddress::Ipv4(Ipv4Addr::LOCALHOST);
        page.sockets
            .get_mut::<icmp::Socket>(h)
            .send_slice(&b, to)
            .unwrap();
        let until =
            std::time::Instant::now() + Duration::from_secs(if ping_sockets() { 10 } else { 1 });
        let mut reply = None;
        while reply.is_none() && std::time::Instant::now() < until {
            page.step().await;
            if let Ok((d, from)) = page.sockets.get_mut::<icmp::Socket>(h).recv() {
                assert_eq!(from, to);
                let p = smoltcp::wire::Icmpv4Packet::new_checked(d).unwrap();
                reply = Some(());
                assert_eq!(
                    smoltcp::wire::Icmpv4Repr::parse(&p, &caps).unwrap(),
                    smoltcp::wire::Icmpv4Repr::EchoReply {
                        ident,
                        seq_no: 7,
                        data: b"qemuweb ping"
                    }
                );
            }
        }
        let stats = relay.stats();
        if ping_sockets() {
            assert!(reply.is_some(), "no echo reply: {stats:?}");
            assert_eq!(
                (stats.datagrams_out, stats.datagrams_in),
                (1, 1),
                "{stats:?}"
            );
        } else {
            assert_eq!(reply, None);
            assert_eq!(stats.refused(Refusal::Unsupported), 1, "{stats:?}");
            assert_eq!(stats.datagram_flows_opened, 0, "{stats:?}");
        }
    });
}
