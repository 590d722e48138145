//! Forwarding a page's display to a remote viewer: `DisplayForward` sends the frames a
//! `CanvasDisplay` draws over a [`RemoteTransport`] too, and checks the viewer's
//! acknowledgements against its own screen.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::frame::{Frame, FrameMetadata};
use crate::remote::{RemoteOptions, RemoteTransport};
use crate::{FrameTransport, SidecarError};

/// How many sent frames' checksums are kept to check acknowledgements against.
const KEPT_CHECKSUMS: usize = 256;

#[derive(Debug, Default)]
struct ForwardState {
    /// The connected sending end (`None` while connecting, after an error or `close`).
    transport: Option<RemoteTransport>,
    error: Option<SidecarError>,
    closed: bool,
    /// The stream's own sequence numbers (the display's restart with a new VM run).
    sequence: u64,
    forwarded: u64,
    /// (sequence, CRC-32 of the page's screen) of recent frames.
    sent: VecDeque<(u64, u32)>,
    /// The newest acknowledgement already checked.
    checked: Option<u64>,
    matched: u64,
    mismatched: u64,
}

impl ForwardState {
    /// Checks the newest acknowledgement against the checksum of the frame it names.
    fn check_ack(&mut self) {
        let Some(stats) = self.transport.as_ref().map(|t| t.stats()) else {
            return;
        };
        let (Some(seq), Some(crc)) = (stats.last_acked, stats.last_ack_checksum) else {
            return;
        };
        if self.checked == Some(seq) {
            return;
        }
        self.checked = Some(seq);
        if let Some(&(_, mine)) = self.sent.iter().find(|(s, _)| *s == seq) {
            if mine == crc {
                self.matched += 1;
            } else {
                self.mismatched += 1;
            }
        }
    }
}

/// A display's frames forwarded over a [`RemoteTransport`] (made by
/// `CanvasDisplay.forward(url)`, or `QemuClient.forwardDisplay`): every frame the page
/// draws is also sent, renumbered into one stream whose first frame is the current
/// screen as a keyframe. The viewer's acknowledgements carry the checksum of its
/// screen; each one seen is compared with the page's screen when it sent that frame.
#[wasm_bindgen]
#[derive(Debug, Clone)]
pub struct DisplayForward {
    state: Rc<RefCell<ForwardState>>,
}

impl DisplayForward {
    /// Starts connecting to `url` (`ws://` or `wss://`, a receiver such as
    /// `frame-server`'s `/sink`).
    pub(crate) fn start(url: String) -> DisplayForward {
        let forward = DisplayForward {
            state: Rc::default(),
        };
        let state = forward.state.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let mut transport = RemoteTransport::sender(url, RemoteOptions::default());
            let result = transport.connect().await;
            let mut s = state.borrow_mut();
            match result {
                Ok(()) if !s.closed => s.transport = Some(transport),
                Ok(()) => transport.close(),
                Err(err) => s.error = Some(err),
            }
        });
        forward
    }

    /// Whether the next frame offered must be a keyframe of the whole screen (connected,
    /// nothing sent yet).
    pub(crate) fn wants_keyframe(&self) -> bool {
        let s = self.state.borrow();
        s.transport.is_some() && s.forwarded == 0
    }

    /// Whether frames are being forwarded (connected or connecting).
    pub(crate) fn is_live(&self) -> bool {
        let s = self.state.borrow();
        !s.closed && s.error.is_none()
    }

    /// Sends the change `metadata` describes of `screen` (the whole screen); dropped
    /// while connecting. A failed send ends the forwarding (see `error`).
    pub(crate) fn offer(&self, metadata: &FrameMetadata, screen: &[u8]) {
        let mut guard = self.state.borrow_mut();
        let s = &mut *guard;
        s.check_ack();
        let Some(transport) = s.transport.as_mut() else {
            return;
        };
        let mut metadata = metadata.clone();
        metadata.sequence = s.sequence + 1;
        if s.forwarded == 0 {
            metadata.keyframe = true;
            metadata.dirty.clear();
        }
        let frame = Frame {
            metadata,
            data: screen.to_vec(),
        };
        match transport.send_now(&frame) {
            Ok(()) => {
                s.sequence += 1;
                s.forwarded += 1;
                s.sent.push_back((s.sequence, crc32fast::hash(screen)));
                if s.sent.len() > KEPT_CHECKSUMS {
                    s.sent.pop_front();
                }
            }
            Err(err) => {
                s.error = Some(err);
                if let Some(mut t) = s.transport.take() {
                    t.close();
                }
            }
        }
    }
}

/// The TypeScript type of [`DisplayForward::stats`].
#[wasm_bindgen(typescript_custom_section)]
const FORWARD_STATS: &'static str = r#"
/** The counters of a `DisplayForward` (see `stats()`). */
export interface ForwardStats {
    /** Frames handed to the socket. */
    forwarded: number;
    /** Frames sent. */
    sent: number;
    /** Frames merged into a newer one while the socket was busy. */
    dropped: number;
    /** Bytes sent. */
    bytesSent: number;
    /** The sequence number of the last frame forwarded. */
    lastSequence: number;
    /** The last sequence number the viewer acknowledged. */
    lastAcked?: number;
    /** The screen checksum of that acknowledgement. */
    lastAckChecksum?: number;
    /** Acknowledgements whose checksum equals the page's screen. */
    matched: number;
    /** Acknowledgements whose checksum differs from it. */
    mismatched: number;
    /** Whether the socket is open. */
    connected: boolean;
    /** Why forwarding ended, if it did. */
    error?: string;
}
"#;

#[wasm_bindgen]
impl DisplayForward {
    /// Counters: `forwarded` (frames handed to the socket), `sent`, `dropped` (merged
    /// into a newer one while the socket was busy), `bytesSent`, `lastSequence`,
    /// `lastAcked`, `lastAckChecksum`, `matched`/`mismatched` (acknowledgements whose
    /// checksum equals / differs from the page's screen), `connected` and `error` (a
    /// message, or `undefined`).
    #[wasm_bindgen(unchecked_return_type = "ForwardStats")]
    pub fn stats(&self) -> js_sys::Object {
        let mut s = self.state.borrow_mut();
        s.check_ack();
        let remote = s.transport.as_ref().map(|t| t.stats()).unwrap_or_default();
        let out = js_sys::Object::new();
        let put = |k: &str, v: JsValue| {
            let _ = js_sys::Reflect::set(&out, &k.into(), &v);
        };
        let num = |n: u64| JsValue::from_f64(n as f64);
        put("forwarded", num(s.forwarded));
        put("sent", num(remote.sent));
        put("dropped", num(remote.dropped));
        put("bytesSent", num(remote.bytes_sent));
        put("lastSequence", num(s.sequence));
        put(
            "lastAcked",
            remote.last_acked.map_or(JsValue::UNDEFINED, num),
        );
        put(
            "lastAckChecksum",
            remote
                .last_ack_checksum
                .map_or(JsValue::UNDEFINED, |c| num(c.into())),
        );
        put("matched", num(s.matched));
        put("mismatched", num(s.mismatched));
        put("connected", s.transport.is_some().into());
        put(
            "error",
            s.error
                .as_ref()
                .map_or(JsValue::UNDEFINED, |e| e.to_string().into()),
        );
        out
    }

    /// Resolves `true` once the viewer acknowledged the last frame forwarded (`false`
    /// after `timeoutMs` or an error).
    #[wasm_bindgen(unchecked_return_type = "Promise<boolean>")]
    pub fn flush(&self, #[wasm_bindgen(js_name = "timeoutMs")] timeout_ms: u32) -> js_sys::Promise {
        let state = self.state.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let start = js_sys::Date::now();
            loop {
                {
                    let mut s = state.borrow_mut();
                    s.check_ack();
                    let acked = s.transport.as_ref().and_then(|t| t.stats().last_acked);
                    if s.forwarded > 0 && acked == Some(s.sequence) {
                        return Ok(true.into());
                    }
                    if s.error.is_some() || js_sys::Date::now() - start > f64::from(timeout_ms) {
                        return Ok(false.into());
                    }
                }
                gloo_timers::future::TimeoutFuture::new(5).await;
            }
        })
    }

    /// Stops forwarding and closes the connection.
    pub fn close(&self) {
        let mut s = self.state.borrow_mut();
        s.closed = true;
        if let Some(mut t) = s.transport.take() {
            t.close();
        }
    }
}
