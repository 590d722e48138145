//! The native [`RemoteTransport`]: `ws://` over a `TcpStream` with `tungstenite`; the
//! sending end's socket is owned by a writer thread, so `send` never waits.

use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use super::{
    check_outgoing, check_welcome, negotiate, refused, Outbox, RemoteOptions, RemoteStats,
    StreamDecoder, StreamEncoder,
};
use crate::frame::{Frame, FrameMetadata};
use crate::wire::{decode, WireMessage};
use crate::{FrameTransport, SidecarError};

/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the writer thread looks for acknowledgements while no frame waits.
const ACK_POLL: Duration = Duration::from_millis(2);
/// How long the writer thread waits on the socket for an outstanding acknowledgement
/// before it looks at the outbox again.
const ACK_WAIT: Duration = Duration::from_millis(1);

fn connection(what: &str, err: impl std::fmt::Display) -> SidecarError {
    SidecarError::Connection {
        reason: format!("{what}: {err}"),
    }
}

/// The WebSocket settings of both ends: messages up to a 8192x8192 RGBA keyframe.
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(crate::ring::MAX_SLOT_CAPACITY as usize + (1 << 20)))
        .max_frame_size(Some(crate::ring::MAX_SLOT_CAPACITY as usize + (1 << 20)))
}

/// Reads the next binary message; `Ok(None)` if the socket would block (non-blocking
/// reads or a read timeout).
fn read_binary(ws: &mut WebSocket<TcpStream>) -> Result<Option<tungstenite::Bytes>, SidecarError> {
    loop {
        match ws.read() {
            Ok(Message::Binary(bytes)) => return Ok(Some(bytes)),
            Ok(Message::Text(_)) => {
                return Err(SidecarError::Protocol {
                    reason: "a text message on a binary frame stream".into(),
                })
            }
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => {
                return Err(connection("read", "the peer closed the connection"))
            }
            Ok(_) => continue, // ping, pong: tungstenite answers pings itself
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(connection("read", e)),
        }
    }
}

fn write(ws: &mut WebSocket<TcpStream>, message: &WireMessage<'_>) -> Result<(), SidecarError> {
    ws.send(Message::binary(message.encode()))
        .map_err(|e| connection("write", e))
}

/// Reads one message within the handshake timeout.
fn read_handshake(ws: &mut WebSocket<TcpStream>) -> Result<tungstenite::Bytes, SidecarError> {
    ws.get_mut()
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| connection("set_read_timeout", e))?;
    let got = read_binary(ws)?;
    ws.get_mut()
        .set_read_timeout(None)
        .map_err(|e| connection("set_read_timeout", e))?;
    got.ok_or_else(|| connection("handshake", "no answer within 10 s"))
}

/// Which end, and its live connection.
#[derive(Debug)]
enum Link {
    Sender(Option<SenderLink>),
    Receiver(Option<Box<WebSocket<TcpStream>>>),
}

/// Where a connection comes from.
#[derive(Debug)]
enum Origin {
    /// Dial this `ws://` URL on every `connect`.
    Url(String),
    /// A socket a server accepted; usable once.
    Accepted(Option<Box<WebSocket<TcpStream>>>),
}

/// A [`FrameTransport`] over a WebSocket (see [`remote`](crate::remote) for the
/// protocol, back-pressure and reconnects). Natively it speaks plain `ws://`.
///
/// An end either dials a URL on every [`connect`](FrameTransport::connect)
/// ([`sender`](Self::sender), [`receiver`](Self::receiver)) or takes a WebSocket a
/// server accepted ([`accepted_sender`](Self::accepted_sender),
/// [`accepted_receiver`](Self::accepted_receiver)). Natively `receive` blocks the
/// calling thread; [`receive_timeout`](Self::receive_timeout) bounds the wait.
///
/// ```
/// use qemuweb_sidecar::*;
/// use std::net::TcpListener;
/// # futures::executor::block_on(async {
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let url = format!("ws://{}", listener.local_addr().unwrap());
/// let server = std::thread::spawn(move || {
///     let (ws, _path) = RemoteTransport::accept(listener.accept().unwrap().0).unwrap();
///     let mut tx = RemoteTransport::accepted_sender(ws, RemoteOptions::default());
///     futures::executor::block_on(async {
///         tx.connect().await?;
///         tx.send(&Frame {
///             metadata: FrameMetadata::keyframe(1, 0.0, 4, 2, PixelFormat::Rgba),
///             data: vec![5; 32],
///         }).await?;
///         tx.close(std::time::Duration::from_secs(5))
///     })
/// });
/// let mut rx = RemoteTransport::receiver(url, RemoteOptions::default());
/// rx.connect().await?;
/// assert!(rx.receive().await?.keyframe);
/// assert_eq!(rx.screen(), &[5; 32][..]);
/// server.join().unwrap()?;
/// # Ok::<(), SidecarError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct RemoteTransport {
    origin: Origin,
    options: RemoteOptions,
    link: Link,
    decoder: StreamDecoder,
    /// Receiving end's counters (the sending end's live in its link).
    stats: RemoteStats,
    /// Sending end: counters of closed links, and the last sequence offered.
    sent_before: RemoteStats,
    last_offered: Option<u64>,
}

impl RemoteTransport {
    fn new(origin: Origin, options: RemoteOptions, sender: bool) -> RemoteTransport {
        RemoteTransport {
            origin,
            options,
            link: if sender {
                Link::Sender(None)
            } else {
                Link::Receiver(None)
            },
            decoder: StreamDecoder::default(),
            stats: RemoteStats::default(),
            sent_before: RemoteStats::default(),
            last_offered: None,
        }
    }

    /// The sending end, dialling `url` (`ws://host:port/path`) on every `connect`.
    pub fn sender(url: impl Into<String>, options: RemoteOptions) -> RemoteTransport {
        RemoteTransport::new(Origin::Url(url.into()), options, true)
    }

    /// The receiving end, dialling `url` (`ws://host:port/path`) on every `connect`.
    pub fn receiver(url: impl Into<String>, options: RemoteOptions) -> RemoteTransport {
        RemoteTransport::new(Origin::Url(url.into()), options, false)
    }

    /// The sending end over a WebSocket a server accepted ([`accept`](Self::accept));
    /// `connect` runs the stream's handshake on it (once: it cannot redial).
    pub fn accepted_sender(ws: WebSocket<TcpStream>, options: RemoteOptions) -> RemoteTransport {
        RemoteTransport::new(Origin::Accepted(Some(Box::new(ws))), options, true)
    }

    /// The receiving end over a WebSocket a server accepted ([`accept`](Self::accept)).
    pub fn accepted_receiver(ws: WebSocket<TcpStream>, options: RemoteOptions) -> RemoteTransport {
        RemoteTransport::new(Origin::Accepted(Some(Box::new(ws))), options, false)
    }

    /// A server's side of the WebSocket handshake on an accepted TCP connection, with
    /// this transport's message limits. Returns the socket and the request's path
    /// (with its query), e.g. to pick a stream.
    pub fn accept(stream: TcpStream) -> Result<(WebSocket<TcpStream>, String), SidecarError> {
        use tungstenite::handshake::server::{Request, Response};
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(|e| connection("set_read_timeout", e))?;
        let mut path = String::new();
        #[allow(clippy::result_large_err)] // tungstenite's callback signature
        let callback = |request: &Request, response: Response| {
            path = request.uri().to_string();
            Ok(response)
        };
        let ws = tungstenite::accept_hdr_with_config(stream, callback, Some(ws_config()))
            .map_err(|e| connection("WebSocket handshake", e))?;
        Ok((ws, path))
    }

    fn open(&mut self) -> Result<Box<WebSocket<TcpStream>>, SidecarError> {
        match &mut self.origin {
            Origin::Accepted(ws) => ws.take().ok_or_else(|| {
                connection("connect", "an accepted connection cannot be opened again")
            }),
            Origin::Url(url) => {
                let uri: tungstenite::http::Uri = url
                    .parse()
                    .map_err(|e| connection(&format!("URL {url}"), e))?;
                if uri.scheme_str() != Some("ws") {
                    return Err(connection(
                        &format!("URL {url}"),
                        "only ws:// is supported natively",
                    ));
                }
                let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
                let port = uri.port_u16().unwrap_or(80);
                let stream = TcpStream::connect((host, port))
                    .map_err(|e| connection(&format!("connect to {url}"), e))?;
                let _ = stream.set_nodelay(true);
                stream
                    .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
                    .map_err(|e| connection("set_read_timeout", e))?;
                let (ws, _) = tungstenite::client::client_with_config(
                    url.as_str(),
                    stream,
                    Some(ws_config()),
                )
                .map_err(|e| connection(&format!("WebSocket handshake with {url}"), e))?;
                Ok(Box::new(ws))
            }
        }
    }

    /// Whether the end has a live connection.
    pub fn is_connected(&self) -> bool {
        match &self.link {
            Link::Sender(Some(link)) => link.lock().error.is_none(),
            Link::Receiver(ws) => ws.is_some(),
            _ => false,
        }
    }

    /// Counters across this end's connections.
    pub fn stats(&self) -> RemoteStats {
        match &self.link {
            Link::Sender(link) => {
                let mut stats = self.sent_before;
                if let Some(link) = link {
                    let live = link.lock().stats;
                    stats.sent += live.sent;
                    stats.dropped += live.dropped;
                    stats.bytes_sent += live.bytes_sent;
                    stats.last_acked = live.last_acked.or(stats.last_acked);
                    stats.last_ack_checksum = live.last_ack_checksum;
                }
                stats.connections = self.sent_before.connections;
                stats
            }
            Link::Receiver(_) => self.stats,
        }
    }

    /// Sending end: waits until the frame sent last was written and acknowledged, up to
    /// `timeout`; returns whether it was.
    pub fn wait_acked(&self, timeout: Duration) -> Result<bool, SidecarError> {
        let Link::Sender(Some(link)) = &self.link else {
            return Err(SidecarError::NotConnected);
        };
        let Some(target) = self.last_offered else {
            return Ok(true);
        };
        let deadline = Instant::now() + timeout;
        let mut state = link.lock();
        loop {
            if state.stats.last_acked.is_some_and(|a| a >= target) {
                return Ok(true);
            }
            if let Some(err) = &state.error {
                return Err(err.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            state = link
                .shared
                .changed
                .wait_timeout(state, left.min(ACK_POLL))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sending end: writes the waiting frame (within `timeout`), closes the WebSocket and
    /// ends the writer thread. Receiving end: closes the WebSocket.
    pub fn close(&mut self, timeout: Duration) -> Result<(), SidecarError> {
        match &mut self.link {
            Link::Sender(link) => {
                if let Some(mut link) = link.take() {
                    let result = link.finish(timeout);
                    self.retire(&link);
                    result?;
                }
            }
            Link::Receiver(ws) => {
                if let Some(mut ws) = ws.take() {
                    let _ = ws.close(None);
                    let _ = ws.flush();
                }
            }
        }
        Ok(())
    }

    fn retire(&mut self, link: &SenderLink) {
        let live = link.lock().stats;
        self.sent_before.sent += live.sent;
        self.sent_before.dropped += live.dropped;
        self.sent_before.bytes_sent += live.bytes_sent;
        self.sent_before.last_acked = live.last_acked.or(self.sent_before.last_acked);
        self.sent_before.last_ack_checksum = live.last_ack_checksum;
    }

    /// Receiving end: like [`receive`](FrameTransport::receive), but gives up after
    /// `timeout` with `Ok(None)` (the connection stays up).
    pub fn receive_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<FrameMetadata>, SidecarError> {
        let result = self.receive_inner(Some(timeout));
        if result.is_err() {
            self.link = Link::Receiver(None);
        }
        result
    }

    fn receive_inner(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<FrameMetadata>, SidecarError> {
        let ws = match &mut self.link {
            Link::Receiver(Some(ws)) => ws,
            Link::Receiver(None) => return Err(SidecarError::NotConnected),
            Link::Sender(_) => {
                return Err(SidecarError::WrongSide {
                    operation: "receive",
                    side: "sending",
                })
            }
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let wait = deadline.map(|d| {
                d.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
            });
            ws.get_mut()
                .set_read_timeout(wait)
                .map_err(|e| connection("set_read_timeout", e))?;
            let Some(bytes) = read_binary(ws)? else {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
                continue;
            };
            match decode(&bytes)? {
                WireMessage::Frame(frame) => {
                    let ack = self.decoder.apply(&frame)?;
                    self.stats.received += 1;
                    self.stats.record_ack(&ack);
                    write(ws, &WireMessage::Ack(ack))?;
                    return Ok(self.decoder.take_change());
                }
                WireMessage::Refusal(r) => return Err(refused(&r)),
                other => {
                    return Err(SidecarError::Protocol {
                        reason: format!("the receiving end got {other:?}"),
                    })
                }
            }
        }
    }

    /// The receiving end's whole current screen as a [`Frame`] (a copy).
    pub fn frame(&self) -> Option<Frame> {
        self.decoder.frame()
    }

    fn connect_receiver(&mut self) -> Result<(), SidecarError> {
        let mut ws = self.open()?;
        write(&mut ws, &WireMessage::Hello(self.options.hello()))?;
        let bytes = read_handshake(&mut ws)?;
        match decode(&bytes)? {
            WireMessage::Welcome(welcome) => {
                check_welcome(&self.options, &welcome)?;
                self.decoder.start(&welcome);
                self.stats.connections += 1;
                self.link = Link::Receiver(Some(ws));
                Ok(())
            }
            WireMessage::Refusal(r) => Err(refused(&r)),
            other => Err(SidecarError::Protocol {
                reason: format!("expected the sender's welcome, got {other:?}"),
            }),
        }
    }

    fn connect_sender(&mut self) -> Result<(), SidecarError> {
        if let Link::Sender(Some(mut old)) = std::mem::replace(&mut self.link, Link::Sender(None)) {
            old.abort();
            self.retire(&old);
        }
        let mut ws = self.open()?;
        let bytes = read_handshake(&mut ws)?;
        let hello = match decode(&bytes)? {
            WireMessage::Hello(hello) => hello,
            other => {
                return Err(SidecarError::Protocol {
                    reason: format!("expected the receiver's hello, got {other:?}"),
                })
            }
        };
        let welcome = match negotiate(&hello, self.options.source_format) {
            Ok(welcome) => welcome,
            Err(refusal) => {
                let err = SidecarError::Negotiation {
                    reason: refusal.reason.clone(),
                };
                let _ = write(&mut ws, &WireMessage::Refusal(refusal));
                let _ = ws.close(None);
                let _ = ws.flush();
                return Err(err);
            }
        };
        write(&mut ws, &WireMessage::Welcome(welcome))?;
        self.sent_before.connections += 1;
        self.link = Link::Sender(Some(SenderLink::spawn(*ws, StreamEncoder::new(welcome))?));
        Ok(())
    }
}

impl Drop for RemoteTransport {
    fn drop(&mut self) {
        if let Link::Sender(Some(link)) = &mut self.link {
            link.abort();
        }
    }
}

#[async_trait(?Send)]
impl FrameTransport for RemoteTransport {
    /// Dials (or takes the accepted socket) and runs the stream handshake; a sending
    /// end's first frame on the new connection is a keyframe.
    async fn connect(&mut self) -> Result<(), SidecarError> {
        match self.link {
            Link::Sender(_) => self.connect_sender(),
            Link::Receiver(_) => {
                self.link = Link::Receiver(None);
                self.connect_receiver()
            }
        }
    }

    /// Puts the frame in the outbox for the writer thread (replacing a frame still
    /// waiting there); never waits for the network. Fails if the connection failed.
    async fn send(&mut self, frame: &Frame) -> Result<(), SidecarError> {
        let link = match &self.link {
            Link::Sender(Some(link)) => link,
            Link::Sender(None) => return Err(SidecarError::NotConnected),
            Link::Receiver(_) => {
                return Err(SidecarError::WrongSide {
                    operation: "send",
                    side: "receiving",
                })
            }
        };
        check_outgoing(frame, self.last_offered, link.format)?;
        {
            let mut state = link.lock();
            if let Some(err) = &state.error {
                return Err(err.clone());
            }
            state.outbox.offer(frame);
            state.stats.dropped = state.outbox.dropped;
        }
        link.shared.changed.notify_all();
        self.last_offered = Some(frame.metadata.sequence);
        Ok(())
    }

    /// Blocks until the next frame arrives, applies it and acknowledges it. Any error
    /// drops the connection (`connect` again for a keyframe).
    async fn receive(&mut self) -> Result<FrameMetadata, SidecarError> {
        loop {
            match self.receive_inner(None) {
                Ok(Some(meta)) => return Ok(meta),
                Ok(None) => continue,
                Err(err) => {
                    self.link = Link::Receiver(None);
                    return Err(err);
                }
            }
        }
    }

    fn screen(&self) -> &[u8] {
        self.decoder.screen()
    }
}

/// What the sending end and its writer thread share.
#[derive(Debug, Default)]
struct SendState {
    outbox: Outbox,
    /// The writer is writing a frame it took from the outbox.
    writing: bool,
    /// Finish: close after the outbox is written (`graceful`) or at once.
    stop: Option<bool>,
    error: Option<SidecarError>,
    stats: RemoteStats,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<SendState>,
    changed: Condvar,
}

/// A sending end's live connection: the writer thread and what it shares.
#[derive(Debug)]
struct SenderLink {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// A handle on the socket, to unblock the writer when aborting.
    socket: TcpStream,
    format: crate::PixelFormat,
}

impl SenderLink {
    fn spawn(ws: WebSocket<TcpStream>, encoder: StreamEncoder) -> Result<SenderLink, SidecarError> {
        let socket = ws
            .get_ref()
            .try_clone()
            .map_err(|e| connection("clone socket", e))?;
        let shared = Arc::new(Shared::default());
        let format = encoder.welcome().format;
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("frame-stream writer".into())
                .spawn(move || write_loop(ws, encoder, &shared))
                .map_err(|e| connection("spawn writer thread", e))?
        };
        Ok(SenderLink {
            shared,
            thread: Some(thread),
            socket,
            format,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SendState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` for the outbox to be written, then closes.
    fn finish(&mut self, timeout: Duration) -> Result<(), SidecarError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while (!state.outbox.is_empty() || state.writing) && state.error.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let unsent = !state.outbox.is_empty() || state.writing;
        let error = state.error.clone();
        state.stop = Some(!unsent);
        drop(state);
        self.shared.changed.notify_all();
        if unsent {
            let _ = self.socket.shutdown(Shutdown::Both);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        match error {
            Some(err) => Err(err),
            None if unsent => Err(connection(
                "close",
                "the last frame was not written in time",
            )),
            None => Ok(()),
        }
    }

    /// Stops at once.
    fn abort(&mut self) {
        self.lock().stop = Some(false);
        self.shared.changed.notify_all();
        let _ = self.socket.shutdown(Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: writes frames from the outbox, reads acknowledgements between.
fn write_loop(mut ws: WebSocket<TcpStream>, mut encoder: StreamEncoder, shared: &Shared) {
    let lock = || shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let mut buf = Vec::new();
    let mut last_written = None;
    let result = (|| -> Result<(), SidecarError> {
        loop {
            let frame = {
                let mut state = lock();
                let idle = state.outbox.is_empty() && state.stop.is_none();
                if idle && last_written > state.stats.last_acked {
                    // A frame awaits its ack: wait on the socket (an ack wakes at once).
                    drop(state);
                    read_acks(&mut ws, shared, Some(ACK_WAIT))?;
                    continue;
                }
                if idle {
                    state = shared
                        .changed
                        .wait_timeout(state, ACK_POLL)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                match state.stop {
                    Some(true) if state.outbox.is_empty() => {
                        let _ = ws.close(None);
                        let _ = ws.flush();
                        return Ok(());
                    }
                    Some(false) => return Ok(()),
                    _ => {}
                }
                let frame = state.outbox.take();
                state.writing = frame.is_some();
                frame
            };
            if let Some(frame) = frame {
                buf.clear();
                let encoded = encoder.encode(&frame, &mut buf);
                let written = match encoded {
                    Ok(()) => {
                        let len = buf.len() as u64;
                        ws.send(Message::binary(std::mem::take(&mut buf)))
                            .map(|_| len)
                            .map_err(|e| connection("write", e))
                    }
                    Err(err) => {
                        encoder.restart();
                        Err(err)
                    }
                };
                let mut state = lock();
                state.writing = false;
                match written {
                    Ok(len) => {
                        last_written = Some(frame.metadata.sequence);
                        state.stats.sent += 1;
                        state.stats.bytes_sent += len;
                    }
                    Err(err @ SidecarError::Connection { .. }) => return Err(err),
                    Err(err) => state.error = Some(err),
                }
                drop(state);
                shared.changed.notify_all();
            }
            read_acks(&mut ws, shared, None)?;
        }
    })();
    let mut state = lock();
    if let Err(err) = result {
        state.error.get_or_insert(err);
    }
    state.writing = false;
    drop(state);
    shared.changed.notify_all();
}

/// Reads whatever acknowledgements arrived without blocking, or (`wait`) blocks up to
/// `wait` for one.
fn read_acks(
    ws: &mut WebSocket<TcpStream>,
    shared: &Shared,
    wait: Option<Duration>,
) -> Result<(), SidecarError> {
    let socket = ws.get_mut();
    match wait {
        Some(wait) => socket.set_read_timeout(Some(wait)),
        None => socket.set_nonblocking(true),
    }
    .map_err(|e| connection("socket options", e))?;
    let result = (|| loop {
        let Some(bytes) = read_binary(ws)? else {
            return Ok(());
        };
        match decode(&bytes)? {
            WireMessage::Ack(ack) => {
                let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                state.stats.record_ack(&ack);
                drop(state);
                shared.changed.notify_all();
                if wait.is_some() {
                    return Ok(()); // one ack; the outbox may hold the next frame
                }
            }
            WireMessage::Refusal(r) => return Err(refused(&r)),
            other => {
                return Err(SidecarError::Protocol {
                    reason: format!("the sending end got {other:?}"),
                })
            }
        }
    })();
    let socket = ws.get_mut();
    match wait {
        Some(_) => socket.set_read_timeout(None),
        None => socket.set_nonblocking(false),
    }
    .map_err(|e| connection("socket options", e))?;
    result
}
