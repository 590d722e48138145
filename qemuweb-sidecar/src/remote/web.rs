//! The browser's [`RemoteTransport`]: a `WebSocket` (binary type `arraybuffer`) whose
//! event handlers run the sans-IO stream core; `RemoteDisplay` for JavaScript.

use std::cell::RefCell;
use std::rc::Rc;
use std::task::{Poll, Waker};

use async_trait::async_trait;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, Event, HtmlCanvasElement, MessageEvent, WebSocket};

use super::{
    check_outgoing, check_welcome, negotiate, refused, Outbox, RemoteOptions, RemoteStats,
    StreamDecoder, StreamEncoder,
};
use crate::frame::{Frame, FrameMetadata};
use crate::present::CanvasPresenter;
use crate::wire::{decode, Welcome, WireMessage};
use crate::{FrameTransport, SidecarError};

/// How often a sending end retries a frame held back by `bufferedAmount`, in ms.
const PUMP_MS: u32 = 4;

fn connection(what: &str, err: JsValue) -> SidecarError {
    let detail = js_sys::Error::from(err.clone())
        .message()
        .as_string()
        .or_else(|| err.as_string())
        .unwrap_or_else(|| format!("{err:?}"));
    SidecarError::Connection {
        reason: format!("{what}: {detail}"),
    }
}

/// What the socket's handlers and the transport share.
#[derive(Debug)]
struct State {
    sender: bool,
    options: RemoteOptions,
    ws: Option<WebSocket>,
    open: bool,
    welcome: Option<Welcome>,
    error: Option<SidecarError>,
    decoder: StreamDecoder,
    encoder: Option<StreamEncoder>,
    outbox: Outbox,
    stats: RemoteStats,
    pumping: bool,
    waker: Option<Waker>,
}

impl State {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn fail(&mut self, err: SidecarError) {
        self.error.get_or_insert(err);
        if let Some(ws) = &self.ws {
            let _ = ws.close();
        }
        self.wake();
    }

    fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), SidecarError> {
        let ws = self.ws.as_ref().ok_or(SidecarError::NotConnected)?;
        ws.send_with_u8_array(bytes)
            .map_err(|e| connection("WebSocket.send", e))
    }

    fn on_message(&mut self, bytes: &[u8]) -> Result<(), SidecarError> {
        match decode(bytes)? {
            WireMessage::Refusal(r) => Err(refused(&r)),
            WireMessage::Hello(hello) if self.sender && self.welcome.is_none() => {
                match negotiate(&hello, self.options.source_format) {
                    Ok(welcome) => {
                        self.send_bytes(&WireMessage::Welcome(welcome).encode())?;
                        self.encoder = Some(StreamEncoder::new(welcome));
                        self.welcome = Some(welcome);
                        Ok(())
                    }
                    Err(refusal) => {
                        let _ = self.send_bytes(&WireMessage::Refusal(refusal.clone()).encode());
                        Err(SidecarError::Negotiation {
                            reason: refusal.reason,
                        })
                    }
                }
            }
            WireMessage::Ack(ack) if self.sender && self.welcome.is_some() => {
                self.stats.record_ack(&ack);
                Ok(())
            }
            WireMessage::Welcome(welcome) if !self.sender && self.welcome.is_none() => {
                check_welcome(&self.options, &welcome)?;
                self.decoder.start(&welcome);
                self.welcome = Some(welcome);
                Ok(())
            }
            WireMessage::Frame(frame) if !self.sender && self.welcome.is_some() => {
                let ack = self.decoder.apply(&frame)?;
                self.stats.received += 1;
                self.stats.record_ack(&ack);
                self.send_bytes(&WireMessage::Ack(ack).encode())
            }
            other => Err(SidecarError::Protocol {
                reason: format!("unexpected {other:?}"),
            }),
        }
    }

    /// Writes waiting frames while the socket's `bufferedAmount` allows.
    fn pump(&mut self) -> Result<(), SidecarError> {
        let Some(ws) = self.ws.clone() else {
            return Ok(());
        };
        while !self.outbox.is_empty() && ws.buffered_amount() <= self.options.max_buffered {
            let (Some(encoder), Some(frame)) = (self.encoder.as_mut(), self.outbox.take()) else {
                break;
            };
            let mut bytes = Vec::new();
            if let Err(err) = encoder.encode(&frame, &mut bytes) {
                encoder.restart();
                return Err(err);
            }
            self.send_bytes(&bytes)?;
            self.stats.sent += 1;
            self.stats.bytes_sent += bytes.len() as u64;
        }
        self.stats.dropped = self.outbox.dropped;
        Ok(())
    }
}

/// Retries frames held back by `bufferedAmount` until none waits.
fn schedule_pump(state: &Rc<RefCell<State>>) {
    if std::mem::replace(&mut state.borrow_mut().pumping, true) {
        return;
    }
    let state = state.clone();
    wasm_bindgen_futures::spawn_local(async move {
        loop {
            gloo_timers::future::TimeoutFuture::new(PUMP_MS).await;
            let mut s = state.borrow_mut();
            if let Err(err) = s.pump() {
                s.fail(err);
            }
            if s.outbox.is_empty() || s.error.is_some() || s.ws.is_none() {
                s.pumping = false;
                return;
            }
        }
    });
}

/// Waits until `ready` holds for the shared state (woken by the socket's handlers).
async fn until(state: &Rc<RefCell<State>>, ready: impl Fn(&State) -> bool) {
    std::future::poll_fn(|cx| {
        let mut s = state.borrow_mut();
        if ready(&s) {
            Poll::Ready(())
        } else {
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

/// A live socket and the handlers that keep it running.
#[derive(Debug)]
struct Link {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(Event)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onerror(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

/// A [`FrameTransport`] over a browser `WebSocket` (see [`remote`](crate::remote) for
/// the protocol, back-pressure and reconnects).
///
/// Frames are applied as they arrive (in the socket's message handler) and
/// acknowledged; `receive` waits without blocking the page and returns the change since
/// it last returned, so a page that draws once an animation frame skips nothing but
/// intermediate screens. The sending end holds a frame back while the socket's
/// `bufferedAmount` is above [`RemoteOptions::max_buffered`] (a newer frame replaces
/// it) and retries every few milliseconds.
#[derive(Debug)]
pub struct RemoteTransport {
    url: String,
    options: RemoteOptions,
    state: Rc<RefCell<State>>,
    link: Option<Link>,
    /// The receiving end's copy of the screen (what `screen()` lends).
    screen: Vec<u8>,
    last_offered: Option<u64>,
}

impl RemoteTransport {
    fn new(url: String, options: RemoteOptions, sender: bool) -> RemoteTransport {
        let state = State {
            sender,
            options: options.clone(),
            ws: None,
            open: false,
            welcome: None,
            error: None,
            decoder: StreamDecoder::default(),
            encoder: None,
            outbox: Outbox::default(),
            stats: RemoteStats::default(),
            pumping: false,
            waker: None,
        };
        RemoteTransport {
            url,
            options,
            state: Rc::new(RefCell::new(state)),
            link: None,
            screen: Vec::new(),
            last_offered: None,
        }
    }

    /// The sending end, dialling `url` (`ws://` or `wss://`) on every `connect`.
    pub fn sender(url: impl Into<String>, options: RemoteOptions) -> RemoteTransport {
        RemoteTransport::new(url.into(), options, true)
    }

    /// The receiving end, dialling `url` (`ws://` or `wss://`) on every `connect`.
    pub fn receiver(url: impl Into<String>, options: RemoteOptions) -> RemoteTransport {
        RemoteTransport::new(url.into(), options, false)
    }

    /// Whether the end has a live connection.
    pub fn is_connected(&self) -> bool {
        let s = self.state.borrow();
        self.link.is_some() && s.welcome.is_some() && s.error.is_none()
    }

    /// Counters across this end's connections.
    pub fn stats(&self) -> RemoteStats {
        self.state.borrow().stats
    }

    /// The socket's `bufferedAmount` (bytes queued but not yet sent), 0 unconnected.
    pub fn buffered_amount(&self) -> u32 {
        self.link.as_ref().map_or(0, |l| l.ws.buffered_amount())
    }

    /// Closes the connection (a sending end's waiting frame is dropped).
    pub fn close(&mut self) {
        self.link = None;
        let mut s = self.state.borrow_mut();
        s.ws = None;
        s.welcome = None;
        s.encoder = None;
    }

    /// The receiving end: the change since the last call, if a frame arrived; never
    /// waits. For a display that polls, e.g. once an animation frame.
    pub fn try_receive(&mut self) -> Result<Option<FrameMetadata>, SidecarError> {
        self.receiving("receive")?;
        let mut s = self.state.borrow_mut();
        if let Some(change) = s.decoder.take_change() {
            sync_screen(&mut self.screen, s.decoder.screen(), &change);
            return Ok(Some(change));
        }
        if let Some(err) = s.error.take() {
            drop(s);
            self.close();
            return Err(err);
        }
        Ok(None)
    }

    /// The receiving end's whole current screen as a [`Frame`] (a copy).
    pub fn frame(&self) -> Option<Frame> {
        self.state.borrow().decoder.frame()
    }

    /// The sending end: queues the frame for the socket (replacing one still held
    /// back) and returns at once; what [`FrameTransport::send`] does.
    pub fn send_now(&mut self, frame: &Frame) -> Result<(), SidecarError> {
        let mut s = self.state.borrow_mut();
        if !s.sender {
            return Err(SidecarError::WrongSide {
                operation: "send",
                side: "receiving",
            });
        }
        let Some(welcome) = s.welcome.filter(|_| self.link.is_some()) else {
            return Err(SidecarError::NotConnected);
        };
        if let Some(err) = s.error.clone() {
            return Err(err);
        }
        check_outgoing(frame, self.last_offered, welcome.format)?;
        s.outbox.offer(frame);
        self.last_offered = Some(frame.metadata.sequence);
        if let Err(err) = s.pump() {
            s.fail(err.clone());
            return Err(err);
        }
        let waiting = !s.outbox.is_empty();
        drop(s);
        if waiting {
            schedule_pump(&self.state);
        }
        Ok(())
    }

    fn receiving(&self, operation: &'static str) -> Result<(), SidecarError> {
        if self.state.borrow().sender {
            return Err(SidecarError::WrongSide {
                operation,
                side: "sending",
            });
        }
        if self.link.is_none() {
            return Err(SidecarError::NotConnected);
        }
        Ok(())
    }

    fn open_socket(&mut self) -> Result<(), SidecarError> {
        self.close();
        let ws = WebSocket::new(&self.url).map_err(|e| connection("new WebSocket", e))?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let on_open = {
            let state = self.state.clone();
            Closure::<dyn FnMut(Event)>::new(move |_| {
                let mut s = state.borrow_mut();
                s.open = true;
                s.wake();
            })
        };
        let on_message = {
            let state = self.state.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let mut s = state.borrow_mut();
                let result = match event.data().dyn_into::<js_sys::ArrayBuffer>() {
                    Ok(buffer) => s.on_message(&js_sys::Uint8Array::new(&buffer).to_vec()),
                    Err(_) => Err(SidecarError::Protocol {
                        reason: "a text message on a binary frame stream".into(),
                    }),
                };
                match result {
                    Ok(()) => s.wake(),
                    Err(err) => s.fail(err),
                }
            })
        };
        let on_error = {
            let state = self.state.clone();
            Closure::<dyn FnMut(Event)>::new(move |_| {
                state.borrow_mut().fail(SidecarError::Connection {
                    reason: "the WebSocket failed (refused, unreachable or reset)".into(),
                });
            })
        };
        let on_close = {
            let state = self.state.clone();
            Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
                state.borrow_mut().fail(SidecarError::Connection {
                    reason: format!(
                        "the WebSocket closed (code {}, {:?})",
                        event.code(),
                        event.reason()
                    ),
                });
            })
        };
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        {
            let mut s = self.state.borrow_mut();
            s.ws = Some(ws.clone());
            s.open = false;
            s.error = None;
            s.welcome = None;
            s.encoder = None;
            s.outbox = Outbox {
                dropped: s.stats.dropped,
                ..Outbox::default()
            };
        }
        self.link = Some(Link {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_error: on_error,
            _on_close: on_close,
        });
        Ok(())
    }

    fn fail_connect(&mut self) -> Result<(), SidecarError> {
        let err = self.state.borrow_mut().error.take();
        match err {
            Some(err) => {
                self.close();
                Err(err)
            }
            None => Ok(()),
        }
    }
}

/// Brings `screen` up to `source` for `change` (whole for keyframes, else its rects).
fn sync_screen(screen: &mut Vec<u8>, source: &[u8], change: &FrameMetadata) {
    if change.keyframe || screen.len() != source.len() {
        screen.clear();
        screen.extend_from_slice(source);
        return;
    }
    for rect in &change.dirty {
        change
            .format
            .rect_spans(change.width, change.height, rect, |off, len| {
                screen[off..off + len].copy_from_slice(&source[off..off + len])
            });
    }
}

#[async_trait(?Send)]
impl FrameTransport for RemoteTransport {
    /// Opens a new `WebSocket` (closing the old one) and runs the stream handshake; a
    /// sending end's first frame on it is a keyframe.
    async fn connect(&mut self) -> Result<(), SidecarError> {
        self.open_socket()?;
        until(&self.state, |s| s.open || s.error.is_some()).await;
        self.fail_connect()?;
        if !self.state.borrow().sender {
            let hello = WireMessage::Hello(self.options.hello()).encode();
            let sent = self.state.borrow_mut().send_bytes(&hello);
            if let Err(err) = sent {
                self.close();
                return Err(err);
            }
        }
        until(&self.state, |s| s.welcome.is_some() || s.error.is_some()).await;
        self.fail_connect()?;
        self.state.borrow_mut().stats.connections += 1;
        Ok(())
    }

    /// Queues the frame for the socket (replacing one still held back); never waits.
    async fn send(&mut self, frame: &Frame) -> Result<(), SidecarError> {
        self.send_now(frame)
    }

    /// Waits (without blocking the page) for the next frame; returns the change since
    /// the previous `receive`. Any error drops the connection.
    async fn receive(&mut self) -> Result<FrameMetadata, SidecarError> {
        loop {
            if let Some(change) = self.try_receive()? {
                return Ok(change);
            }
            until(&self.state, |s| s.decoder.has_change() || s.error.is_some()).await;
        }
    }

    fn screen(&self) -> &[u8] {
        &self.screen
    }
}

/// A remote screen on a `<canvas>`, for JavaScript: the receiving end of a
/// [`RemoteTransport`] plus a [`CanvasPresenter`]. Call `poll()` once an animation
/// frame; after an error, `connect()` again (the new connection starts with a keyframe).
#[wasm_bindgen]
#[derive(Debug)]
pub struct RemoteDisplay {
    transport: RemoteTransport,
    presenter: CanvasPresenter,
    last_sequence: Option<u64>,
}

#[wasm_bindgen]
impl RemoteDisplay {
    /// A display of the frame stream at `url` (`ws://` or `wss://`) on `canvas`, not yet
    /// connected.
    #[wasm_bindgen(constructor)]
    pub fn new(canvas: HtmlCanvasElement, url: String) -> Result<RemoteDisplay, JsError> {
        Ok(RemoteDisplay {
            transport: RemoteTransport::receiver(url, RemoteOptions::default()),
            presenter: CanvasPresenter::new(canvas)?,
            last_sequence: None,
        })
    }

    /// Connects (again), resolving once the sender welcomed the display.
    pub async fn connect(&mut self) -> Result<(), JsError> {
        self.transport.connect().await?;
        Ok(())
    }

    /// Draws what changed since the last poll, if anything; returns whether it drew.
    pub fn poll(&mut self) -> Result<bool, JsError> {
        let Some(change) = self.transport.try_receive()? else {
            return Ok(false);
        };
        self.presenter.present(&change, self.transport.screen())?;
        self.last_sequence = Some(change.sequence);
        Ok(true)
    }

    /// The sequence number of the last frame drawn (`undefined` before the first).
    #[wasm_bindgen(getter, js_name = lastSequence)]
    pub fn last_sequence(&self) -> Option<f64> {
        self.last_sequence.map(|s| s as f64)
    }

    /// Frames received (applied) across connections.
    #[wasm_bindgen(getter)]
    pub fn received(&self) -> f64 {
        self.transport.stats().received as f64
    }

    /// Closes the connection.
    pub fn close(&mut self) {
        self.transport.close();
    }
}
