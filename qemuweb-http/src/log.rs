//! A request log: every answered request, with the body bytes really sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{Body, BoxError};

/// The most entries kept; the oldest tenth goes when it is reached.
const MAX_LOG: usize = 200_000;

/// One request as the server saw and answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The request method (`GET`, `HEAD`, `OPTIONS`, ...).
    pub method: String,
    /// The request path, as sent (without the query string).
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `If-Range` header, if any.
    pub if_range: Option<String>,
    /// The status answered.
    pub status: u16,
    /// The body bytes sent (the announced length until the body ends, then the count).
    pub bytes: u64,
}

impl LogEntry {
    /// The entry as one line: `METHOD<TAB>PATH<TAB>RANGE<TAB>STATUS<TAB>BYTES` (`-` for
    /// no range).
    ///
    /// ```
    /// let e = qemuweb_http::LogEntry { method: "GET".into(), path: "/d.img".into(),
    ///     range: Some("bytes=0-9".into()), if_range: None, status: 206, bytes: 10 };
    /// assert_eq!(e.to_line(), "GET\t/d.img\tbytes=0-9\t206\t10");
    /// ```
    pub fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}",
            self.method,
            self.path,
            self.range.as_deref().unwrap_or("-"),
            self.status,
            self.bytes
        )
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: Mutex<VecDeque<(u64, LogEntry)>>,
    next: AtomicU64,
}

/// A shared, bounded request log (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<Inner>);

impl RequestLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, LogEntry)>> {
        self.0.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, entry: LogEntry) -> u64 {
        let id = self.0.next.fetch_add(1, Ordering::SeqCst);
        let mut log = self.lock();
        if log.len() >= MAX_LOG {
            log.drain(..MAX_LOG / 10);
        }
        log.push_back((id, entry));
        id
    }

    fn set_bytes(&self, id: u64, bytes: u64) {
        if let Some((_, e)) = self.lock().iter_mut().rev().find(|(i, _)| *i == id) {
            e.bytes = bytes;
        }
    }

    /// A copy of the entries, oldest first.
    pub fn entries(&self) -> Vec<LogEntry> {
        self.lock().iter().map(|(_, e)| e.clone()).collect()
    }

    /// Empties the log.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The entries whose path starts with `prefix`, one [`LogEntry::to_line`] a line.
    pub fn text(&self, prefix: &str) -> String {
        self.lock()
            .iter()
            .filter(|(_, e)| e.path.starts_with(prefix))
            .map(|(_, e)| e.to_line() + "\n")
            .collect()
    }
}

/// The layer of [`RequestLogService`].
#[derive(Debug, Clone)]
pub struct RequestLogLayer {
    log: RequestLog,
    print: bool,
}

impl RequestLogLayer {
    /// Records every request in `log`.
    pub fn new(log: RequestLog) -> Self {
        RequestLogLayer { log, print: false }
    }

    /// Also prints a line per request on stderr (`GET /path 206 (bytes=0-99)`).
    pub fn print(mut self, print: bool) -> Self {
        self.print = print;
        self
    }
}

impl<S> tower::Layer<S> for RequestLogLayer {
    type Service = RequestLogService<S>;

    fn layer(&self, inner: S) -> RequestLogService<S> {
        RequestLogService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service logging each request when its answer is ready, and the bytes sent when the
/// body ends (so a client that has its answer finds it in the log).
#[derive(Debug, Clone)]
pub struct RequestLogService<S> {
    inner: S,
    layer: RequestLogLayer,
}

impl<S, B> tower::Service<Request<B>> for RequestLogService<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let head = |name| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut entry = LogEntry {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            range: head(header::RANGE),
            if_range: head(header::IF_RANGE),
            status: 0,
            bytes: 0,
        };
        let is_head = req.method() == Method::HEAD;
        let layer = self.layer.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let Ok(response) = answer.await;
            entry.status = response.status().as_u16();
            // The announced length; corrected when the body ends.
            entry.bytes = if is_head {
                0
            } else {
                response
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .or(response.body().size_hint().exact())
                    .unwrap_or(0)
            };
            if layer.print {
                eprintln!(
                    "{} {} {}{}",
                    entry.method,
                    entry.path,
                    entry.status,
                    entry
                        .range
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
            let id = layer.log.push(entry);
            let (parts, body) = response.into_parts();
            let counted = Counted {
                inner: body,
                sent: 0,
                log: layer.log,
                id,
                done: false,
            };
            Ok(Response::from_parts(parts, counted.boxed_unsync()))
        })
    }
}

/// A body that records in the log how many bytes went out, when it ends or is dropped.
struct Counted {
    inner: Body,
    sent: u64,
    log: RequestLog,
    id: u64,
    done: bool,
}

impl Counted {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.log.set_bytes(self.id, self.sent);
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(_) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{get, request, serve_files, site};

    #[test]
    fn requests_and_bytes_sent_are_logged() {
        let (_tmp, root, _) = site();
        let log = RequestLog::new();
        let server = serve_files(&root, |_| RequestLogLayer::new(log.clone()));
        let addr = server.local_addr();
        get(
            addr,
            "/sub/f.bin",
            &[("Range", "bytes=10-19"), ("If-Range", "\"x\"")],
        );
        get(addr, "/sub/f.bin", &[("Range", "bytes=10-19")]);
        request(addr, "HEAD", "/sub/f.bin", &[]);
        get(addr, "/missing", &[]);
        let e = log.entries();
        assert_eq!(e.len(), 4);
        assert_eq!(
            (e[0].status, e[0].bytes, e[0].if_range.as_deref()),
            (200, 5000, Some("\"x\""))
        );
        assert_eq!(e[1].to_line(), "GET\t/sub/f.bin\tbytes=10-19\t206\t10");
        assert_eq!((e[2].method.as_str(), e[2].bytes), ("HEAD", 0));
        assert_eq!(e[3].status, 404);
        assert_eq!(log.text("/sub/").lines().count(), 3);
        log.clear();
        assert!(log.entries().is_empty());
    }
}
