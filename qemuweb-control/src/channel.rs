//! What the runner shares with the page: commands for it, its answers, and the guest's
//! serial output with a cursor.

use crate::command::PageOp;
use crate::error::{ControlError, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// How much serial output is kept for `serialOut` (older bytes are reported as lost).
pub const SERIAL_LOG_BYTES: usize = 1 << 20;
/// The most commands waiting for the page at once (more are refused).
const MAX_QUEUED: usize = 64;

/// What the page answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageResult {
    /// Done.
    Done,
    /// A screenshot.
    Png(Vec<u8>),
}

/// The guest's serial output after a cursor (`serialOut`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SerialRead {
    /// The output (lossy UTF-8).
    pub data: String,
    /// The cursor to read from next time.
    pub cursor: u64,
    /// Bytes after the asked cursor that are no longer kept.
    pub lost: u64,
}

#[derive(Serialize)]
struct Request<'a> {
    id: u64,
    #[serde(flatten)]
    op: &'a PageOp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    id: u64,
    ok: bool,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    png: Option<String>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    waiting: HashMap<u64, oneshot::Sender<Result<PageResult>>>,
    next_id: u64,
    serial: VecDeque<u8>,
    /// The cursor of `serial[0]`.
    serial_start: u64,
    closed: bool,
}

/// The control channel between the control server, the runner's site (which the page
/// polls) and the runner's serial bridge.
#[derive(Default)]
pub struct ControlChannel {
    state: Mutex<State>,
    /// Wakes the page's long poll.
    wake: Notify,
}

impl ControlChannel {
    /// A new channel.
    pub fn new() -> Arc<ControlChannel> {
        Arc::new(ControlChannel::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the page to do `op`; resolves with its answer, [`ControlError::Timeout`]
    /// after `timeout`, or [`ControlError::Stopped`] once the channel is closed.
    ///
    /// # Errors
    ///
    /// As above, and [`ControlError::Page`] for the page's own refusal.
    pub async fn ask_page(&self, op: &PageOp, timeout: Duration) -> Result<PageResult> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut s = self.state();
            if s.closed {
                return Err(ControlError::Stopped);
            }
            if s.queue.len() >= MAX_QUEUED {
                return Err(ControlError::Malformed(format!(
                    "{MAX_QUEUED} commands are already waiting for the page"
                )));
            }
            s.next_id += 1;
            let id = s.next_id;
            let json = serde_json::to_string(&Request { id, op })
                .map_err(|e| ControlError::Malformed(e.to_string()))?;
            s.queue.push_back(json);
            s.waiting.insert(id, tx);
            id
        };
        self.wake.notify_waiters();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ControlError::Stopped),
            Err(_) => {
                let mut s = self.state();
                s.waiting.remove(&id);
                Err(ControlError::Timeout(timeout.as_secs()))
            }
        }
    }

    /// The page's long poll: the next command for it (JSON `{"id", "op", ...}`), or
    /// `None` after `wait` without one or once the channel is closed.
    pub async fn next_for_page(&self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            // Registered before looking, so a command queued in between is not missed.
            notified.as_mut().enable();
            {
                let mut s = self.state();
                if let Some(next) = s.queue.pop_front() {
                    return Some(next);
                }
                if s.closed {
                    return None;
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// The page's answer to a command (`{"id": N, "ok": true, "png"?: base64}` or
    /// `{"id": N, "ok": false, "code", "message"}`).
    ///
    /// # Errors
    ///
    /// [`ControlError::Malformed`] for an answer that is not one, or to no command
    /// waiting.
    pub fn page_answer(&self, body: &[u8]) -> Result<()> {
        let a: Answer = serde_json::from_slice(body)
            .map_err(|e| ControlError::Malformed(format!("page answer: {e}")))?;
        let result = match (a.ok, a.png) {
            (true, None) => Ok(PageResult::Done),
            (true, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map(PageResult::Png)
                .map_err(|e| ControlError::Malformed(format!("the page's PNG: {e}"))),
            (false, _) => Err(ControlError::Page {
                code: a.code.unwrap_or_else(|| "page".into()),
                message: a.message.unwrap_or_default(),
            }),
        };
        let tx = self.state().waiting.remove(&a.id);
        match tx {
            Some(tx) => {
                let _ = tx.send(result);
                Ok(())
            }
            None => Err(ControlError::Malformed(format!(
                "page answer to command {}, which nobody waits for",
                a.id
            ))),
        }
    }

    /// Records serial output of the guest (the runner tees its console into this).
    pub fn serial_output(&self, bytes: &[u8]) {
        let mut s = self.state();
        s.serial.extend(bytes);
        let over = s.serial.len().saturating_sub(SERIAL_LOG_BYTES);
        if over > 0 {
            s.serial.drain(..over);
            s.serial_start += over as u64;
        }
    }

    /// The serial output after cursor `since`.
    ///
    /// ```
    /// let c = qemuweb_control::ControlChannel::new();
    /// c.serial_output(b"hello ");
    /// let first = c.serial_since(0);
    /// c.serial_output(b"world");
    /// let next = c.serial_since(first.cursor);
    /// assert_eq!((first.data.as_str(), next.data.as_str(), next.cursor), ("hello ", "world", 11));
    /// ```
    pub fn serial_since(&self, since: u64) -> SerialRead {
        let s = self.state();
        let end = s.serial_start + s.serial.len() as u64;
        let from = since.clamp(s.serial_start, end);
        let skip = (from - s.serial_start) as usize;
        let bytes: Vec<u8> = s.serial.iter().skip(skip).copied().collect();
        SerialRead {
            data: String::from_utf8_lossy(&bytes).into_owned(),
            cursor: end,
            lost: s.serial_start.saturating_sub(since),
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Closes the channel (the VM is stopping): waiting commands end with
    /// [`ControlError::Stopped`], and so do new ones.
    pub fn close(&self) {
        let waiting: Vec<_> = {
            let mut s = self.state();
            s.closed = true;
            s.queue.clear();
            s.waiting.drain().map(|(_, tx)| tx).collect()
        };
        for tx in waiting {
            let _ = tx.send(Err(ControlError::Stopped));
        }
        self.wake.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn a_command_goes_to_the_page_and_its_answer_comes_back() {
        rt().block_on(async {
            let c = ControlChannel::new();
            let page = {
                let c = c.clone();
                tokio::spawn(async move {
                    let req = c.next_for_page(Duration::from_secs(5)).await.unwrap();
                    let v: serde_json::Value = serde_json::from_str(&req).unwrap();
                    assert_eq!(v["op"], "screenshot");
                    let id = v["id"].as_u64().unwrap();
                    // An answer to no command is refused; the real one goes through.
                    assert!(c.page_answer(br#"{"id":999,"ok":true}"#).is_err());
                    c.page_answer(
                        format!(r#"{{"id":{id},"ok":true,"png":"iVBORw=="}}"#).as_bytes(),
                    )
                    .unwrap();
                })
            };
            let got = c
                .ask_page(&PageOp::Screenshot, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(got, PageResult::Png(vec![0x89, b'P', b'N', b'G']));
            page.await.unwrap();
        });
    }

    #[test]
    fn refusals_timeouts_and_a_closed_channel_are_typed() {
        rt().block_on(async {
            let c = ControlChannel::new();
            let page = {
                let c = c.clone();
                tokio::spawn(async move {
                    let req = c.next_for_page(Duration::from_secs(5)).await.unwrap();
                    let id: u64 = serde_json::from_str::<serde_json::Value>(&req).unwrap()["id"]
                        .as_u64()
                        .unwrap();
                    c.page_answer(
                        format!(
                            r#"{{"id":{id},"ok":false,"code":"out-of-order","message":"no VM"}}"#
                        )
                        .as_bytes(),
                    )
                    .unwrap();
                })
            };
            let e = c
                .ask_page(&PageOp::Screenshot, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Page);
            assert!(e.to_string().contains("out-of-order"));
            page.await.unwrap();
            // Nobody polls: a timeout, and the command leaves nothing behind.
            let e = c
                .ask_page(&PageOp::Move { x: 1, y: 1 }, Duration::from_millis(50))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Timeout);
            assert!(c.state().waiting.is_empty());
            assert!(!c.is_closed());
            c.close();
            assert!(c.is_closed());
            assert_eq!(c.next_for_page(Duration::from_secs(5)).await, None);
            let e = c
                .ask_page(&PageOp::Screenshot, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Stopped);
            // Garbage from the page is refused, not a panic.
            for bad in [&b""[..], b"{}", b"[1]", br#"{"id":1,"ok":true,"png":"!!"}"#] {
                assert!(c.page_answer(bad).is_err());
            }
        });
    }

    #[test]
    fn serial_output_is_kept_bounded_and_read_by_cursor() {
        let c = ControlChannel::new();
        c.serial_output(&vec![b'a'; SERIAL_LOG_BYTES]);
        c.serial_output(b"bcd");
        let r = c.serial_since(0);
        assert_eq!(r.lost, 3);
        assert_eq!(r.cursor, SERIAL_LOG_BYTES as u64 + 3);
        assert!(r.data.ends_with("bcd"));
        let r = c.serial_since(SERIAL_LOG_BYTES as u64 + 1);
        assert_eq!((r.data.as_str(), r.lost), ("cd", 0));
        // A cursor from the future reads nothing.
        assert_eq!(c.serial_since(u64::MAX).data, "");
    }
}
