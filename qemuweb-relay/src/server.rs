//! The relay's WebSocket endpoint on 127.0.0.1, its checks, and the loop that runs the
//! stack for the connected page.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use qemuweb_config::{ForwardProtocol, NetworkPlan, NetworkPortForward};
use qemuweb_http::{
    empty, text, AllowedHosts, Body, Check, GateLayer, HostCheckLayer, RequestBody, Server,
    ServerConfig, Token,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::Message;

use crate::error::RelayError;
use crate::policy::Policy;
use crate::stack::{
    Connect, HostEvent, Protocol, RelayStats, Stack, StackLimits, CHUNK, MAX_DATAGRAM,
};

/// The path of the WebSocket endpoint.
pub const PATH: &str = "/network";

/// How the relay is run.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The network whose uplink this is (its gateway, DNS server and range).
    pub plan: NetworkPlan,
    /// The port on 127.0.0.1 to listen on (0 for a free one).
    pub port: u16,
    /// Which host destinations the guests may reach.
    pub policy: Policy,
    /// Host ports forwarded to VMs (TCP only).
    pub forwards: Vec<NetworkPortForward>,
    /// Origins of pages allowed besides the loopback ones (`http://127.0.0.1:PORT`,
    /// `http://localhost:PORT`, `http://[::1]:PORT` of any port), exactly as browsers
    /// send them.
    pub origins: Vec<String>,
    /// The token the page must give; a fresh random one when `None`.
    pub token: Option<Token>,
    /// The stack's bounds.
    pub limits: StackLimits,
    /// Print refusals and connections to standard error.
    pub verbose: bool,
}

impl RelayConfig {
    /// A relay for `plan` on `127.0.0.1:port`, refusing loopback and private
    /// destinations, without forwards.
    pub fn new(plan: NetworkPlan, port: u16) -> Self {
        RelayConfig {
            plan,
            port,
            policy: Policy::default(),
            forwards: Vec::new(),
            origins: Vec::new(),
            token: None,
            limits: StackLimits::default(),
            verbose: false,
        }
    }
}

/// The Origin and token check of the upgrade (a browser cannot send custom headers on a
/// WebSocket, so the token is the `token` query parameter).
#[derive(Debug, Clone)]
struct RelayGuard {
    token: Token,
    origins: Arc<Vec<String>>,
}

fn loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .find_map(|h| rest.strip_prefix(h));
    match host {
        Some("") => true,
        Some(port) => port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok()),
        None => false,
    }
}

impl Check for RelayGuard {
    fn check<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        let refuse = |why: String| Some(text(StatusCode::FORBIDDEN, &format!("refused: {why}")));
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let ok = loopback_origin(&origin.to_ascii_lowercase())
                || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin));
            if !ok {
                return refuse(format!(
                    "Origin {origin:?} may not use this relay (loopback pages and --origin only)"
                ));
            }
        }
        let token = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="));
        match token {
            Some(t) if self.token.matches(t) => None,
            Some(_) => refuse("wrong token".into()),
            None => refuse("missing token (ws://HOST/network?token=TOKEN)".into()),
        }
    }
}

/// What the relay's tasks share.
struct Shared {
    config: RelayConfig,
    busy: AtomicBool,
    stats: Mutex<RelayStats>,
    forwards: Mutex<Option<mpsc::Sender<(String, u16, tokio::net::TcpStream)>>>,
}

impl Shared {
    /// The page is gone (or never came): forwards find no queue and the next page may connect.
    fn release(&self) {
        if let Ok(mut f) = self.forwards.lock() {
            *f = None;
        }
        self.busy.store(false, Ordering::SeqCst);
    }
}

/// A running relay; it stops when dropped.
#[derive(Debug)]
pub struct Relay {
    server: Server,
    token: Token,
    shared: Arc<SharedHandle>,
    _forwards: Vec<std::thread::JoinHandle<()>>,
}

/// The relay's state, for [`Relay::stats`].
struct SharedHandle(Arc<Shared>);

impl std::fmt::Debug for SharedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared(..)")
    }
}

impl Relay {
    /// Starts the relay: the WebSocket endpoint on `127.0.0.1:PORT` and a listener on
    /// `127.0.0.1:HOST_PORT` for each forward.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) for an isolated network or
    /// a UDP forward, [`Io`](crate::ErrorKind::Io) when a port cannot be bound.
    pub fn start(config: RelayConfig) -> Result<Relay, RelayError> {
        if config.plan.mode != qemuweb_config::NetworkMode::Nat {
            return Err(RelayError::InvalidArgument(format!(
                "network '{}' is isolated: it has no way out",
                config.plan.id
            )));
        }
        if let Some(f) = config
            .forwards
            .iter()
            .find(|f| f.protocol == ForwardProtocol::Udp)
        {
            return Err(RelayError::InvalidArgument(format!(
                "forward {}:{}:{}: only TCP is forwarded",
                f.host_port, f.vm, f.guest_port
            )));
        }
        let token = match &config.token {
            Some(t) => t.clone(),
            None => Token::generate()?,
        };
        let mut forward_listeners = Vec::new();
        for f in &config.forwards {
            let l = TcpListener::bind(("127.0.0.1", f.host_port)).map_err(|e| {
                RelayError::io(format!("cannot listen on 127.0.0.1:{}", f.host_port), e)
            })?;
            l.set_nonblocking(true)
                .map_err(|e| RelayError::io("forward listener", e))?;
            forward_listeners.push((l, f.vm.clone(), f.guest_port));
        }
        let listener = qemuweb_http::bind_loopback(config.port)?;
        let addr = listener
            .local_addr()
            .map_err(|e| RelayError::io("listener", e))?;
        let guard = RelayGuard {
            token: token.clone(),
            origins: Arc::new(config.origins.clone()),
        };
        let shared = Arc::new(Shared {
            config,
            busy: AtomicBool::new(false),
            stats: Mutex::new(RelayStats::default()),
            forwards: Mutex::new(None),
        });
        let s = shared.clone();
        let endpoint = tower::service_fn(move |req: Request<RequestBody>| {
            let s = s.clone();
            async move { Ok::<_, Infallible>(upgrade(req, s)) }
        });
        let service = tower::ServiceBuilder::new()
            .layer(HostCheckLayer::new(AllowedHosts::for_addr(addr)))
            .layer(GateLayer::new(guard))
            .service(endpoint);
        let server = Server::start(listener, ServerConfig::default(), service)?;
        let mut threads = Vec::new();
        for (l, vm, port) in forward_listeners {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("qemuweb-relay-forward-{port}"))
                    .spawn(move || accept_forwards(l, vm, port, s))
                    .map_err(|e| RelayError::io("forward thread", e))?,
            );
        }
        Ok(Relay {
            server,
            token,
            shared: Arc::new(SharedHandle(shared)),
            _forwards: threads,
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The token the page gives (`?token=`).
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The URL the page connects to, without the token: `ws://127.0.0.1:PORT/network`.
    pub fn url(&self) -> String {
        format!("ws://{}{PATH}", self.local_addr())
    }

    /// The counters of the page's sessions so far (updated as they run).
    pub fn stats(&self) -> RelayStats {
        self.shared
            .0
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Whether a page is connected.
    pub fn connected(&self) -> bool {
        self.shared.0.busy.load(Ordering::SeqCst)
    }

    /// Blocks until the relay ends (it does not end by itself).
    pub fn wait(self) {
        self.server.wait()
    }
}

/// Accepts host connections on a forward's port and hands them to the page's session (or
/// closes them when no page is connected).
fn accept_forwards(listener: TcpListener, vm: String, port: u16, shared: Arc<Shared>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let tx = shared.forwards.lock().ok().and_then(|f| f.clone());
            if let Some(tx) = tx {
                // A full queue (a flood of host connections) closes the newest.
                let _ = tx.try_send((vm.clone(), port, stream));
            }
        }
    });
}

fn upgrade(mut req: Request<RequestBody>, shared: Arc<Shared>) -> Response<Body> {
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    if req.uri().path() != PATH {
        return text(
            StatusCode::NOT_FOUND,
            "not found: the relay's endpoint is /network",
        );
    }
    let is_upgrade = header(header::UPGRADE).as_deref() == Some("websocket")
        && header(header::CONNECTION).is_some_and(|c| c.split(',').any(|t| t.trim() == "upgrade"))
        && header(header::SEC_WEBSOCKET_VERSION).as_deref() == Some("13");
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(StatusCode::BAD_REQUEST, "a WebSocket upgrade is expected");
    };
    if !is_upgrade {
        return text(StatusCode::BAD_REQUEST, "a WebSocket upgrade is expected");
    }
    if shared.busy.swap(true, Ordering::SeqCst) {
        return text(StatusCode::CONFLICT, "refused: a page is connected already");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    // The forwards' queue is in place before the page sees its 101: a host connection to a
    // forward made as soon as the page is connected reaches the session, not a closed door.
    let (forward_tx, forward_rx) = mpsc::channel(16);
    if let Ok(mut f) = shared.forwards.lock() {
        *f = Some(forward_tx);
    }
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(_) => {
                shared.release();
                return;
            }
        };
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(qemuweb_net::MAX_FRAME_BYTES + 64);
        ws_config.max_frame_size = Some(qemuweb_net::MAX_FRAME_BYTES + 64);
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config))
                .await;
        session(ws, forward_rx, &shared).await;
        shared.release();
    });
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Runs the stack for one connected page until it goes.
async fn session<S>(
    ws: WebSocketStream<S>,
    mut forward_rx: mpsc::Receiver<(String, u16, tokio::net::TcpStream)>,
    shared: &Shared,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let config = &shared.config;
    let start = tokio::time::Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let mut stack = Stack::new(config.plan.clone(), config.policy, config.limits, now());
    let ping = ping_socket().is_ok();
    stack.set_ping(ping);
    if config.verbose {
        eprintln!(
            "qemuweb network: ping beyond the network {}",
            if ping {
                "goes out through ICMP datagram sockets"
            } else {
                "is refused (no ICMP datagram sockets for this group: net.ipv4.ping_group_range)"
            }
        );
    }
    let notify = Arc::new(Notify::new());
    let (mut sink, mut stream) = ws.split();
    let mut hosts = tokio::task::JoinSet::new();
    let mut forwarded: HashMap<u64, tokio::net::TcpStream> = HashMap::new();
    let mut next_forward = 0u64;
    let mut next_report = 0u64;
    if config.verbose {
        eprintln!("qemuweb network: a page connected");
    }
    loop {
        stack.poll(now());
        for c in stack.take_connects() {
            let stream = c.forward.and_then(|id| forwarded.remove(&id));
            if config.verbose {
                eprintln!("qemuweb network: {}", c.flow);
            }
            if c.protocol == Protocol::Tcp {
                hosts.spawn(host_side(c, stream, notify.clone()));
            } else {
                hosts.spawn(datagram_side(c, notify.clone()));
            }
        }
        // Host connections whose forward found no VM are closed.
        for id in stack.take_failed_forwards() {
            forwarded.remove(&id);
        }
        for line in stack.take_log() {
            eprintln!("qemuweb network: {line}");
        }
        let mut gone = false;
        while let Some(frame) = stack.transmit() {
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                gone = true;
                break;
            }
        }
        if let Ok(mut s) = shared.stats.lock() {
            if config.verbose && now() >= next_report && *s != *stack.stats() {
                next_report = now() + 5000;
                eprintln!(
                    "qemuweb network: {:?}, {} open",
                    stack.stats(),
                    stack.flows()
                );
            }
            *s = stack.stats().clone();
        }
        if gone {
            break;
        }
        while hosts.try_join_next().is_some() {}
        let delay = stack.poll_delay(now()).unwrap_or(1000).min(1000);
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(frame))) => stack.input(&frame, now()),
                // Frames are binary messages: text is a malformed frame.
                Some(Ok(Message::Text(_))) => stack.input(&[], now()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            },
            _ = notify.notified() => {}
            Some((vm, port, stream)) = forward_rx.recv() => {
                // At most as many waiting forwarded connections as the stack has flows.
                if forwarded.len() < config.limits.max_flows {
                    next_forward += 1;
                    forwarded.insert(next_forward, stream);
                    stack.forward(next_forward, &vm, port, now());
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
        }
    }
    hosts.abort_all();
    if config.verbose {
        eprintln!("qemuweb network: the page went");
    }
}

/// A connection's host side: connects (or takes the forwarded socket), then copies both
/// ways through the stack's channels until both sides are done.
async fn host_side(c: Connect, stream: Option<tokio::net::TcpStream>, notify: Arc<Notify>) {
    let Connect {
        target, channels, ..
    } = c;
    let mut to_host = channels.to_host;
    let from_host = channels.from_host;
    let stream = match (stream, target) {
        (Some(s), _) => s,
        (None, Some(addr)) => {
            match tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(s)) => s,
                _ => {
                    let _ = from_host.send(HostEvent::Failed).await;
                    notify.notify_one();
                    return;
                }
            }
        }
        (None, None) => {
            let _ = from_host.send(HostEvent::Failed).await;
            notify.notify_one();
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut r, mut w) = stream.into_split();
    let n2 = notify.clone();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = from_host.send(HostEvent::Eof).await;
                    n2.notify_one();
                    break;
                }
                Ok(n) => {
                    if from_host
                        .send(HostEvent::Data(buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    n2.notify_one();
                }
            }
        }
    };
    let writer = async move {
        while let Some(chunk) = to_host.recv().await {
            notify.notify_one();
            if w.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// An ICMP datagram socket ("ping" socket, `SOCK_DGRAM` and `IPPROTO_ICMP`): the kernel
/// sets each echo request's identifier and checksum and gives back only the replies to
/// it. Unprivileged, when the process's group is in `net.ipv4.ping_group_range`.
fn ping_socket() -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol as P, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(P::ICMPV4))?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// A UDP or ICMP echo flow's host side: a socket connected to the target (so that only
/// its answers come back), datagrams both ways until the stack drops the flow's channels
/// (idle, or the page gone). A full channel to the stack drops the datagram.
async fn datagram_side(c: Connect, notify: Arc<Notify>) {
    let Connect {
        protocol,
        target,
        channels,
        ..
    } = c;
    let mut to_host = channels.to_host;
    let from_host = channels.from_host;
    let socket = async {
        let target = target.ok_or_else(|| std::io::Error::other("no target"))?;
        let socket = if protocol == Protocol::Icmp {
            tokio::net::UdpSocket::from_std(ping_socket()?)?
        } else if target.ip().is_loopback() {
            tokio::net::UdpSocket::bind("127.0.0.1:0").await?
        } else {
            tokio::net::UdpSocket::bind("0.0.0.0:0").await?
        };
        socket.connect(target).await?;
        Ok::<_, std::io::Error>(socket)
    };
    let socket = match socket.await {
        Ok(s) => s,
        Err(_) => {
            let _ = from_host.send(HostEvent::Failed).await;
            notify.notify_one();
            return;
        }
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            d = to_host.recv() => match d {
                // A datagram the host cannot take now is lost, as on a network.
                Some(d) => { let _ = socket.send(&d).await; }
                None => break,
            },
            r = socket.recv(&mut buf) => match r {
                Ok(n) => {
                    if from_host.try_send(HostEvent::Data(buf[..n].to_vec())).is_ok() {
                        notify.notify_one();
                    }
                }
                // "Connection refused" (an ICMP error for an earlier datagram) and the
                // like: the flow goes on; a closed channel ends it.
                Err(_) => {
                    if from_host.is_closed() {
                        break;
                    }
                }
            },
        }
    }
}
