//! [`HttpBlockDevice`]: a read-only disk behind an HTTP(S) URL, read with Range requests.
//!
//! All of the protocol logic lives here, once, for every platform: response validation,
//! redirects, image pinning, the chunk cache, read-ahead, request merging, the concurrency
//! limit and retries. The platform modules only move bytes: `native` with `ureq` on a
//! helper thread per request, `browser` with `fetch` (in a window or a worker); both read
//! at most one byte more of a body than its range, whatever the server sends.
//!
//! # Redirects
//!
//! Redirects are followed here, not by the transports, so that an image (and every file
//! it names, through [`HttpResolver`]) stays on its origin: a redirect to another origin
//! (scheme, host or port) is refused with
//! [`ErrorKind::RedirectRefused`](crate::ErrorKind::RedirectRefused) before anything is
//! sent there, and so is a chain of more than [`MAX_REDIRECTS`]. Natively a same-origin
//! redirect is followed. In a browser `fetch` runs with `redirect: "manual"`: its
//! `"follow"` would send the request to the target before a script could object (and show
//! only the last URL of a chain), its `"error"` fails like a network error (retried,
//! untyped), and `"manual"` answers an opaque-redirect response that shows *that* a
//! redirect happened but not where it leads. Same-origin and cross-origin redirects cannot
//! be told apart there, so in a browser every redirect is refused: serve images from their
//! final URL.

pub mod headers;

use crate::device::{check_range, BlockDevice};
use crate::error::{Result, StorageError};
use crate::read_cache::{CachedImage, ReadCache};
use crate::resolver::{check_relative_name, ImageResolver, ImplicitOpen};
use async_lock::Semaphore;
use async_trait::async_trait;
use futures::channel::oneshot;
use futures::future::{join, join_all, FutureExt, Shared};
use headers::{origin, parse_content_range, resolve_location, same_origin};
use lru::LruCache;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::rc::Rc;
use std::time::Duration;

#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(target_arch = "wasm32")]
use browser as platform;
#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(not(target_arch = "wasm32"))]
use native as platform;

/// How much of a remote image has been downloaded, as given to
/// [`HttpOptions::on_progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Body bytes received in accepted responses so far.
    pub bytes_fetched: u64,
    /// The size of the image.
    pub total: u64,
}

/// Counters of what an [`HttpBlockDevice`] did, from [`HttpBlockDevice::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HttpStats {
    /// HTTP requests sent, including failed and retried ones.
    pub requests: u64,
    /// Body bytes received in accepted responses.
    pub bytes_fetched: u64,
    /// Requests that were repeated after a transient failure.
    pub retries: u64,
    /// Chunks served from the cache.
    pub cache_hits: u64,
    /// Chunks that had to be fetched (or waited for) because they were not cached.
    pub cache_misses: u64,
    /// Chunks read from the persistent [`read_cache`](HttpOptions::read_cache) instead of
    /// the network.
    pub persistent_hits: u64,
}

/// The largest accepted [`HttpOptions::max_request`]: a request's body is held in memory.
const MAX_REQUEST_LIMIT: u64 = 1 << 30;

/// The most redirects (all on the image's origin) one request follows.
pub const MAX_REDIRECTS: usize = 5;

/// Tuning for an [`HttpBlockDevice`]; [`Default`] gives sensible values.
///
/// ```
/// use qemuweb_storage::HttpOptions;
/// use std::time::Duration;
/// let options = HttpOptions::default()
///     .chunk_size(128 * 1024)
///     .cache_chunks(512)
///     .read_ahead(1 << 20)
///     .max_retries(3)
///     .retry_base_delay(Duration::from_millis(100))
///     .on_progress(|p| println!("{} of {} bytes", p.bytes_fetched, p.total));
/// assert_eq!(options.chunk_size, 128 * 1024);
/// ```
#[derive(Clone)]
pub struct HttpOptions {
    /// The unit of caching and of requests, in bytes: a power of two of at least 512
    /// (default 64 KiB).
    pub chunk_size: u32,
    /// How many chunks the LRU cache keeps (default 256, i.e. 16 MiB with 64 KiB chunks;
    /// 0 disables the cache).
    pub cache_chunks: usize,
    /// How many bytes after the end of a read that misses the cache are fetched in the
    /// same request (default 256 KiB; 0 disables read-ahead).
    pub read_ahead: u64,
    /// The largest byte range asked for in one request (default 4 MiB; at least one chunk,
    /// at most 1 GiB).
    pub max_request: u64,
    /// How many requests may be in flight at once (default 4; at least 1).
    pub max_concurrency: usize,
    /// How many times a transient failure is retried before it is reported (default 4).
    pub max_retries: u32,
    /// The delay before the first retry; it doubles with each further retry (default 200 ms).
    pub retry_base_delay: Duration,
    /// How long one request (headers and body) may take before it counts as a transient
    /// network failure (default 30 s).
    pub timeout: Duration,
    /// Called after every accepted response with the download progress.
    pub on_progress: Option<Rc<dyn Fn(Progress)>>,
    /// A persistent cache of fetched chunks (see [`read_cache`](crate::read_cache)):
    /// chunks it holds for this image's version are not fetched again, fetched ones are
    /// added, and the image opens from it when the network is down. Used only for
    /// images with a validator (a strong `ETag` or `Last-Modified`).
    pub read_cache: Option<Rc<dyn ReadCache>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            chunk_size: 64 * 1024,
            cache_chunks: 256,
            read_ahead: 256 * 1024,
            max_request: 4 << 20,
            max_concurrency: 4,
            max_retries: 4,
            retry_base_delay: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
            on_progress: None,
            read_cache: None,
        }
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOptions")
            .field("chunk_size", &self.chunk_size)
            .field("cache_chunks", &self.cache_chunks)
            .field("read_ahead", &self.read_ahead)
            .field("max_request", &self.max_request)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_retries", &self.max_retries)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("timeout", &self.timeout)
            .field("on_progress", &self.on_progress.is_some())
            .field("read_cache", &self.read_cache.is_some())
            .finish()
    }
}

impl HttpOptions {
    /// Sets [`chunk_size`](Self::chunk_size).
    pub fn chunk_size(mut self, bytes: u32) -> Self {
        self.chunk_size = bytes;
        self
    }
    /// Sets [`cache_chunks`](Self::cache_chunks).
    pub fn cache_chunks(mut self, chunks: usize) -> Self {
        self.cache_chunks = chunks;
        self
    }
    /// Sets [`read_ahead`](Self::read_ahead).
    pub fn read_ahead(mut self, bytes: u64) -> Self {
        self.read_ahead = bytes;
        self
    }
    /// Sets [`max_request`](Self::max_request).
    pub fn max_request(mut self, bytes: u64) -> Self {
        self.max_request = bytes;
        self
    }
    /// Sets [`max_concurrency`](Self::max_concurrency).
    pub fn max_concurrency(mut self, requests: usize) -> Self {
        self.max_concurrency = requests;
        self
    }
    /// Sets [`max_retries`](Self::max_retries).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }
    /// Sets [`retry_base_delay`](Self::retry_base_delay).
    pub fn retry_base_delay(mut self, delay: Duration) -> Self {
        self.retry_base_delay = delay;
        self
    }
    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets [`on_progress`](Self::on_progress).
    pub fn on_progress(mut self, callback: impl Fn(Progress) + 'static) -> Self {
        self.on_progress = Some(Rc::new(callback));
        self
    }
    /// Sets [`read_cache`](Self::read_cache).
    pub fn read_cache(mut self, cache: Rc<dyn ReadCache>) -> Self {
        self.read_cache = Some(cache);
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StorageError::InvalidArgument(m));
        if self.chunk_size < 512 || !self.chunk_size.is_power_of_two() {
            return bad(format!(
                "chunk_size {} is not a power of two of at least 512",
                self.chunk_size
            ));
        }
        if self.max_request < u64::from(self.chunk_size) {
            return bad(format!(
                "max_request {} is smaller than one chunk ({})",
                self.max_request, self.chunk_size
            ));
        }
        if self.max_request > MAX_REQUEST_LIMIT {
            return bad(format!(
                "max_request {} is larger than the limit of {MAX_REQUEST_LIMIT}",
                self.max_request
            ));
        }
        if self.max_concurrency == 0 {
            return bad("max_concurrency must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return bad("timeout must not be zero".into());
        }
        Ok(())
    }
}

/// One Range request, as handed to a platform transport.
#[derive(Clone, Copy)]
pub(crate) struct RangeRequest<'a> {
    pub url: &'a str,
    /// First byte asked for.
    pub start: u64,
    /// Last byte asked for (inclusive).
    pub end: u64,
    /// The validator sent as `If-Range`.
    pub if_range: Option<&'a str>,
    /// Transports read at most this many body bytes plus one (to notice a longer body).
    pub max_body: u64,
    /// How long the whole exchange may take (natively the agent enforces it).
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub timeout: Duration,
}

/// What a transport got back. The body is read only for a `206` whose `Content-Length`,
/// if given, is at most `max_body`, and then at most `max_body + 1` bytes of it.
#[derive(Debug, Default)]
pub(crate) struct RawResponse {
    pub status: u16,
    pub content_range: Option<String>,
    pub content_length: Option<u64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// A redirect's `Location`.
    pub location: Option<String>,
    /// A browser's opaque-redirect answer (`redirect: "manual"`): a redirect whose target
    /// is hidden.
    pub opaque_redirect: bool,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A response's status and the headers used here, with no body yet; `header` gives a
    /// header's value by its (lower-case) name.
    pub(crate) fn head(status: u16, header: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            status,
            content_range: header("content-range"),
            content_length: header("content-length").and_then(|v| v.trim().parse().ok()),
            etag: header("etag"),
            last_modified: header("last-modified"),
            location: header("location"),
            opaque_redirect: false,
            body: Vec::new(),
        }
    }

    /// Whether this is a redirect the protocol follows or refuses (a 3xx with a
    /// `Location`, or a browser's opaque redirect).
    fn is_redirect(&self) -> bool {
        self.opaque_redirect
            || (matches!(self.status, 301 | 302 | 303 | 307 | 308) && self.location.is_some())
    }

    /// Whether the transport reads the body: a `206` whose `Content-Length`, if given, is
    /// at most `max_body`.
    pub(crate) fn wants_body(&self, max_body: u64) -> bool {
        self.status == 206 && self.content_length.is_none_or(|n| n <= max_body)
    }
}

/// A transport failure.
pub(crate) enum FetchError {
    /// Worth retrying: connection failed or reset, truncated body, timeout.
    Transient(String),
    /// Retrying cannot help (a malformed URL, a broken browser API).
    Fatal(StorageError),
}

/// A validation failure, before retry policy is applied.
enum Failure {
    Transient(StorageError),
    Fatal(StorageError),
}

/// What identifies the exact image version read first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pin {
    /// A strong ETag, exactly as the server sent it (quotes included).
    ETag(String),
    /// A `Last-Modified` date, used when there is no strong ETag.
    LastModified(String),
}

impl Pin {
    fn from_response(r: &RawResponse) -> Option<Self> {
        match (&r.etag, &r.last_modified) {
            (Some(t), _) if t.starts_with('"') && t.len() >= 2 && t.ends_with('"') => {
                Some(Self::ETag(t.clone()))
            }
            (_, Some(d)) if !d.is_empty() => Some(Self::LastModified(d.clone())),
            _ => None,
        }
    }

    fn value(&self) -> &str {
        match self {
            Self::ETag(v) | Self::LastModified(v) => v,
        }
    }
}

/// What a response must match.
struct Expect<'a> {
    start: u64,
    end: u64,
    /// The known image size (`None` for the first request).
    size: Option<u64>,
    pin: Option<&'a Pin>,
}

/// An accepted response.
struct Accepted {
    body: Vec<u8>,
    total: u64,
    pin: Option<Pin>,
}

/// Checks one response against what was asked; the heart of the protocol.
fn check(url: &str, exp: &Expect<'_>, mut r: RawResponse) -> Result<Accepted, Failure> {
    let bad = |reason: String| {
        Failure::Fatal(StorageError::BadResponse {
            url: url.to_string(),
            reason,
        })
    };
    let changed = |reason: String| {
        Failure::Fatal(StorageError::ImageChanged {
            url: url.to_string(),
            reason,
        })
    };
    match r.status {
        206 => {
            let Some(cr) = r.content_range.as_deref() else {
                return Err(bad(
                    "a 206 answer without Content-Range (a cross-origin server \
                     must list it in Access-Control-Expose-Headers)"
                        .into(),
                ));
            };
            let (range, total) = match parse_content_range(cr) {
                Some((Some(range), Some(total))) => (range, total),
                _ => return Err(bad(format!("malformed Content-Range {cr:?}"))),
            };
            if range.1 >= total {
                return Err(bad(format!("Content-Range {cr:?} ends past its total")));
            }
            if let Some(size) = exp.size {
                if total != size {
                    return Err(changed(format!("its size changed from {size} to {total}")));
                }
            }
            match exp.pin {
                Some(Pin::ETag(want)) => match r.etag.as_deref() {
                    Some(got) if got == want => {}
                    Some(got) => {
                        return Err(changed(format!("its ETag changed from {want} to {got}")));
                    }
                    None => return Err(bad("the ETag disappeared from a 206 answer".into())),
                },
                Some(Pin::LastModified(want)) => {
                    if let Some(got) = r.last_modified.as_deref() {
                        if got != want {
                            return Err(changed(format!(
                                "its Last-Modified changed from {want} to {got}"
                            )));
                        }
                    }
                }
                None => {}
            }
            let want_end = exp.end.min(total - 1);
            if range != (exp.start, want_end) {
                return Err(bad(format!(
                    "asked for bytes {}-{} but the answer holds bytes {}-{}",
                    exp.start, want_end, range.0, range.1
                )));
            }
            let want = want_end - exp.start + 1;
            if let Some(len) = r.content_length {
                if len > want {
                    return Err(bad(format!(
                        "Content-Length {len} is larger than the {want} bytes of its Content-Range"
                    )));
                }
            }
            let got = r.body.len() as u64;
            if got > want {
                return Err(bad(format!(
                    "the body holds {got} bytes but Content-Range says {want}"
                )));
            }
            if got < want {
                return Err(Failure::Transient(StorageError::Network {
                    url: url.to_string(),
                    message: format!("truncated body: {got} of {want} bytes"),
                }));
            }
            let pin = Pin::from_response(&r);
            Ok(Accepted {
                body: std::mem::take(&mut r.body),
                total,
                pin,
            })
        }
        200 => {
            if let Some(pin) = exp.pin {
                let same = match pin {
                    Pin::ETag(t) => r.etag.as_deref() == Some(t.as_str()),
                    Pin::LastModified(d) => {
                        r.etag.is_none() && r.last_modified.as_deref() == Some(d.as_str())
                    }
                };
                if !same {
                    return Err(changed(
                        "the server answered an If-Range request with the whole (different) image"
                            .into(),
                    ));
                }
            }
            Err(Failure::Fatal(StorageError::RangeNotSupported {
                url: url.to_string(),
                status: 200,
            }))
        }
        416 => {
            let total = r
                .content_range
                .as_deref()
                .and_then(parse_content_range)
                .and_then(|(_, t)| t);
            match (exp.size, total) {
                (None, Some(0)) => Ok(Accepted {
                    body: Vec::new(),
                    total: 0,
                    pin: Pin::from_response(&r),
                }),
                (Some(size), Some(t)) if t != size => {
                    Err(changed(format!("its size changed from {size} to {t}")))
                }
                _ => Err(bad(format!(
                    "416 (range not satisfiable) for bytes {}-{}",
                    exp.start, exp.end
                ))),
            }
        }
        408 | 429 | 500 | 502 | 503 | 504 => Err(Failure::Transient(StorageError::HttpStatus {
            url: url.to_string(),
            status: r.status,
        })),
        s if s >= 400 => Err(Failure::Fatal(StorageError::HttpStatus {
            url: url.to_string(),
            status: s,
        })),
        s => Err(bad(format!("unexpected status {s} to a Range request"))),
    }
}

/// The retry delay before attempt `attempt` (1-based), capped at one minute.
fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << (attempt - 1).min(16))
        .min(Duration::from_secs(60))
}

/// What both `open` and the device need to exchange requests.
struct Conn {
    url: String,
    options: HttpOptions,
    transport: platform::Transport,
    permits: Semaphore,
    stats: Cell<HttpStats>,
}

impl Conn {
    fn bump(&self, f: impl FnOnce(&mut HttpStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Fetches bytes `start..=end` with validation and retries.
    async fn exchange(&self, exp: Expect<'_>) -> Result<Accepted> {
        let request = RangeRequest {
            url: &self.url,
            start: exp.start,
            end: exp.end,
            if_range: exp.pin.map(Pin::value),
            max_body: exp.end - exp.start + 1,
            timeout: self.options.timeout,
        };
        let mut attempt = 0u32;
        loop {
            let answer = self.get_following(&request).await;
            let outcome = match answer {
                Ok(r) => check(&self.url, &exp, r),
                Err(FetchError::Transient(message)) => {
                    Err(Failure::Transient(StorageError::Network {
                        url: self.url.clone(),
                        message,
                    }))
                }
                Err(FetchError::Fatal(e)) => Err(Failure::Fatal(e)),
            };
            match outcome {
                Ok(a) => {
                    self.bump(|s| s.bytes_fetched += a.body.len() as u64);
                    return Ok(a);
                }
                Err(Failure::Transient(_)) if attempt < self.options.max_retries => {
                    attempt += 1;
                    self.bump(|s| s.retries += 1);
                    platform::sleep(backoff(self.options.retry_base_delay, attempt)).await;
                }
                Err(Failure::Transient(e) | Failure::Fatal(e)) => return Err(e),
            }
        }
    }

    /// Sends `request`, following redirects on the image's origin (see the module
    /// documentation); a refused redirect is fatal.
    async fn get_following(
        &self,
        request: &RangeRequest<'_>,
    ) -> std::result::Result<RawResponse, FetchError> {
        let mut url = request.url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let answer = {
                let _permit = self.permits.acquire().await;
                self.bump(|s| s.requests += 1);
                self.transport
                    .get(&RangeRequest {
                        url: &url,
                        ..*request
                    })
                    .await?
            };
            if !answer.is_redirect() {
                return Ok(answer);
            }
            let refuse = |location: Option<String>, reason: &str| {
                FetchError::Fatal(StorageError::RedirectRefused {
                    url: url.clone(),
                    location,
                    reason: reason.into(),
                })
            };
            if answer.opaque_redirect {
                return Err(refuse(
                    None,
                    "a browser does not show a script where a redirect leads (fetch with \
                     redirect \"manual\"), so every redirect is refused; serve the image \
                     from its final URL",
                ));
            }
            let location = answer.location.unwrap_or_default();
            let Some(next) = resolve_location(&url, &location) else {
                return Err(refuse(Some(location), "it is not an http(s) URL"));
            };
            if !same_origin(&self.url, &next) {
                return Err(refuse(
                    Some(next),
                    "it leads to another origin than the image's",
                ));
            }
            url = next;
        }
        Err(FetchError::Fatal(StorageError::RedirectRefused {
            url: self.url.clone(),
            location: Some(url),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        }))
    }
}

type Waiter = Shared<oneshot::Receiver<Rc<[u8]>>>;

/// A read-only [`BlockDevice`] over an HTTP(S) URL, read with Range requests.
///
/// - [`open`](Self::open) learns the size from the `Content-Range` of its first request,
///   which also brings the first chunks.
/// - Every answer must be a `206` whose `Content-Range` and body match what was asked,
///   else [`ErrorKind::BadResponse`](crate::ErrorKind::BadResponse); a `200` means the
///   server ignores ranges ([`ErrorKind::RangeNotSupported`](crate::ErrorKind::RangeNotSupported)).
/// - The image is pinned: the strong `ETag` (or else `Last-Modified`) of the first
///   answer is sent as `If-Range` on every later request, and any sign of another version
///   is [`ErrorKind::ImageChanged`](crate::ErrorKind::ImageChanged); bytes of two versions
///   are never mixed.
/// - Data is fetched and cached in chunks ([`HttpOptions::chunk_size`]) in a bounded LRU;
///   adjacent missing chunks go in one request, with read-ahead; concurrent reads of the
///   same chunk share one request; at most [`HttpOptions::max_concurrency`] requests run.
/// - Network errors, truncated bodies and statuses 408/429/500/502/503/504 are retried
///   with exponential backoff; other 4xx/5xx fail at once with
///   [`ErrorKind::HttpStatus`](crate::ErrorKind::HttpStatus).
///
/// ```no_run
/// use qemuweb_storage::{BlockDevice, HttpBlockDevice, HttpOptions};
/// # futures::executor::block_on(async {
/// let disk = HttpBlockDevice::open("http://127.0.0.1:8080/disk.img", HttpOptions::default())
///     .await
///     .unwrap();
/// let mut sector = [0u8; 512];
/// disk.read_at(0, &mut sector).await.unwrap();
/// println!("{} bytes, {} requests so far", disk.size(), disk.stats().requests);
/// # });
/// ```
pub struct HttpBlockDevice {
    conn: Conn,
    size: u64,
    pin: Option<Pin>,
    cache: RefCell<Option<LruCache<u64, Rc<[u8]>>>>,
    inflight: RefCell<HashMap<u64, Waiter>>,
    closed: Cell<bool>,
    /// The persistent cache and the image version it is bound to.
    persistent: Option<(Rc<dyn ReadCache>, CachedImage)>,
}

impl fmt::Debug for HttpBlockDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBlockDevice")
            .field("url", &self.conn.url)
            .field("size", &self.size)
            .field("pin", &self.pin)
            .field("stats", &self.conn.stats.get())
            .finish()
    }
}

/// Removes in-flight registrations when a fetch ends, however it ends; waiters whose
/// chunk was not delivered see a cancelled channel and fetch it themselves.
struct InflightGuard<'a> {
    map: &'a RefCell<HashMap<u64, Waiter>>,
    senders: HashMap<u64, oneshot::Sender<Rc<[u8]>>>,
    registered: Vec<u64>,
}

impl InflightGuard<'_> {
    fn deliver(&mut self, index: u64, data: &Rc<[u8]>) {
        if let Some(tx) = self.senders.remove(&index) {
            let _ = tx.send(data.clone());
        }
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.map.borrow_mut();
        for index in &self.registered {
            map.remove(index);
        }
    }
}

/// What an open asks for when the [`read_cache`](HttpOptions::read_cache) holds the image:
/// enough to learn its version (validator and size).
pub const PROBE_BYTES: u64 = 2;

impl HttpBlockDevice {
    /// Opens the image at `url`: one request learns its size and validator and brings
    /// its first chunks.
    ///
    /// With a [`read_cache`](HttpOptions::read_cache) that holds chunks of this URL, the
    /// first request asks for two bytes only ([`PROBE_BYTES`]), to check the version (the validator and the
    /// size); a different version drops the old chunks. When that request fails for the
    /// network, the image opens from the cache (offline: what it holds reads, the rest
    /// fails with [`ErrorKind::Network`](crate::ErrorKind::Network)).
    pub async fn open(url: &str, options: HttpOptions) -> Result<Self> {
        options.validate()?;
        if url.is_empty() {
            return Err(StorageError::InvalidArgument("empty URL".into()));
        }
        let transport = platform::Transport::new(options.timeout)?;
        let cs = u64::from(options.chunk_size);
        let persistent = options.read_cache.clone();
        let cached = match &persistent {
            Some(c) => c
                .image(url)
                .await
                .ok()
                .flatten()
                .filter(|i| i.chunk_size == options.chunk_size),
            None => None,
        };
        let first_len = if cached.is_some() {
            // Two bytes, not one: `bytes=0-0` reads as "to the end" on servers that parse the
            // end with `parseInt(end) || size - 1` (sirv, the files of Vite's dev server),
            // whose whole-file answer would be refused as not the range asked for.
            PROBE_BYTES
        } else {
            (cs + options.read_ahead).min(options.max_request) / cs * cs
        };
        let cache = NonZeroUsize::new(options.cache_chunks).map(LruCache::new);
        let conn = Conn {
            url: url.to_string(),
            permits: Semaphore::new(options.max_concurrency),
            options,
            transport,
            stats: Cell::new(HttpStats::default()),
        };
        let first = conn
            .exchange(Expect {
                start: 0,
                end: first_len - 1,
                size: None,
                pin: None,
            })
            .await;
        let (size, pin, body) = match (first, &cached) {
            (Ok(first), _) => (first.total, first.pin, first.body),
            // Offline: the version the cache holds.
            (Err(e), Some(image)) if e.kind() == crate::ErrorKind::Network => {
                let pin = if image.etag {
                    Pin::ETag(image.validator.clone())
                } else {
                    Pin::LastModified(image.validator.clone())
                };
                (image.size, Some(pin), Vec::new())
            }
            (Err(e), _) => return Err(e),
        };
        let mut dev = Self {
            conn,
            size,
            pin,
            cache: RefCell::new(cache),
            inflight: RefCell::new(HashMap::new()),
            closed: Cell::new(false),
            persistent: None,
        };
        if let (Some(store), Some(pin)) = (persistent, &dev.pin) {
            let image = CachedImage::new(
                url,
                pin.value(),
                matches!(pin, Pin::ETag(_)),
                size,
                dev.conn.options.chunk_size,
            );
            let bound = cached.as_ref() == Some(&image) || store.bind(&image).await.is_ok();
            if bound {
                dev.persistent = Some((store, image));
            }
        }
        if cached.is_none() {
            let chunks = dev.store(0, &body);
            dev.keep(&chunks).await;
        }
        dev.report_progress();
        Ok(dev)
    }

    /// Adds fetched chunks to the persistent cache (a failure only costs a later fetch).
    async fn keep(&self, chunks: &[(u64, Rc<[u8]>)]) {
        if let Some((store, image)) = &self.persistent {
            let whole: Vec<(u64, &[u8])> = chunks
                .iter()
                .filter(|(i, c)| image.chunk_fits(*i, c.len()))
                .map(|(i, c)| (*i, &c[..]))
                .collect();
            if !whole.is_empty() {
                let _ = store.put(image, &whole).await;
            }
        }
    }

    /// Looks up `wanted` chunks in the persistent cache; those found go into the memory
    /// cache and are returned.
    async fn recall(&self, wanted: &[u64]) -> Vec<(u64, Rc<[u8]>)> {
        let Some((store, image)) = &self.persistent else {
            return Vec::new();
        };
        let found = store.get(image, wanted).await.unwrap_or_default();
        let mut out = Vec::new();
        for (i, data) in found {
            if !image.chunk_fits(i, data.len()) {
                continue;
            }
            let chunk: Rc<[u8]> = Rc::from(data);
            if let Some(cache) = self.cache.borrow_mut().as_mut() {
                cache.put(i, chunk.clone());
            }
            out.push((i, chunk));
        }
        self.conn.bump(|s| s.persistent_hits += out.len() as u64);
        out
    }

    /// The URL the device reads.
    pub fn url(&self) -> &str {
        &self.conn.url
    }

    /// What the device has done so far.
    pub fn stats(&self) -> HttpStats {
        self.conn.stats.get()
    }

    /// How much has been downloaded, of how much.
    pub fn progress(&self) -> Progress {
        Progress {
            bytes_fetched: self.conn.stats.get().bytes_fetched,
            total: self.size,
        }
    }

    /// The validator the image is pinned to (`ETag` or `Last-Modified` value), if the
    /// server sent one.
    pub fn validator(&self) -> Option<&str> {
        self.pin.as_ref().map(Pin::value)
    }

    fn report_progress(&self) {
        if let Some(cb) = &self.conn.options.on_progress {
            cb(self.progress());
        }
    }

    fn chunk_size(&self) -> u64 {
        u64::from(self.conn.options.chunk_size)
    }

    fn chunk_count(&self) -> u64 {
        self.size.div_ceil(self.chunk_size())
    }

    /// Splits a body that starts at chunk `first` into cached chunks; returns them.
    fn store(&self, first: u64, body: &[u8]) -> Vec<(u64, Rc<[u8]>)> {
        let cs = self.chunk_size() as usize;
        let chunks: Vec<(u64, Rc<[u8]>)> = body
            .chunks(cs)
            .enumerate()
            .map(|(i, c)| (first + i as u64, Rc::from(c)))
            .collect();
        if let Some(cache) = self.cache.borrow_mut().as_mut() {
            for (i, c) in &chunks {
                cache.put(*i, c.clone());
            }
        }
        chunks
    }

    /// Groups the missing chunks into requests, adding read-ahead after the last one
    /// when it is `last_needed`.
    fn plan(&self, missing: &[u64], last_needed: u64) -> Vec<(u64, u64)> {
        let max_chunks = (self.conn.options.max_request / self.chunk_size()).max(1);
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let push = |runs: &mut Vec<(u64, u64)>, i: u64| match runs.last_mut() {
            Some((s, n)) if *s + *n == i && *n < max_chunks => *n += 1,
            _ => runs.push((i, 1)),
        };
        for &i in missing {
            push(&mut runs, i);
        }
        if missing.last() == Some(&last_needed) {
            let ahead = self.conn.options.read_ahead.div_ceil(self.chunk_size());
            let cache = self.cache.borrow();
            let inflight = self.inflight.borrow();
            let end = last_needed
                .saturating_add(1)
                .saturating_add(ahead)
                .min(self.chunk_count());
            for i in last_needed + 1..end {
                if cache.as_ref().is_some_and(|c| c.contains(&i)) || inflight.contains_key(&i) {
                    break;
                }
                push(&mut runs, i);
            }
        }
        runs
    }

    /// `missing` and, when it ends at `last_needed`, the read-ahead chunks after it that
    /// are neither cached in memory nor in flight.
    fn with_read_ahead(&self, missing: &[u64], last_needed: u64) -> Vec<u64> {
        let mut wanted = missing.to_vec();
        if missing.last() == Some(&last_needed) {
            let ahead = self.conn.options.read_ahead.div_ceil(self.chunk_size());
            let cache = self.cache.borrow();
            let inflight = self.inflight.borrow();
            let end = (last_needed + 1 + ahead).min(self.chunk_count());
            wanted.extend((last_needed + 1..end).filter(|i| {
                !cache.as_ref().is_some_and(|c| c.contains(i)) && !inflight.contains_key(i)
            }));
        }
        wanted
    }

    /// Fetches `count` chunks from chunk `first`.
    async fn fetch_run(&self, first: u64, count: u64) -> Result<Vec<(u64, Rc<[u8]>)>> {
        let cs = self.chunk_size();
        // `first` is a chunk of the image, so `first * cs < size`; the end is checked, as
        // a size near u64::MAX leaves no room past the last chunk.
        let start = first * cs;
        let end = first
            .checked_add(count)
            .and_then(|n| n.checked_mul(cs))
            .map_or(self.size, |e| e.min(self.size))
            - 1;
        let got = self
            .conn
            .exchange(Expect {
                start,
                end,
                size: Some(self.size),
                pin: self.pin.as_ref(),
            })
            .await?;
        let chunks = self.store(first, &got.body);
        self.keep(&chunks).await;
        self.report_progress();
        Ok(chunks)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.get() {
            Err(StorageError::Closed)
        } else {
            Ok(())
        }
    }
}

#[async_trait(?Send)]
impl BlockDevice for HttpBlockDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_open()?;
        check_range(self.size, offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let cs = self.chunk_size();
        let first = offset / cs;
        let last = (offset + buf.len() as u64 - 1) / cs;
        let mut have: Vec<Option<Rc<[u8]>>> = vec![None; (last - first + 1) as usize];
        let mut recalled = false;
        loop {
            let mut missing = Vec::new();
            let mut waits: Vec<(u64, Waiter)> = Vec::new();
            {
                let mut cache = self.cache.borrow_mut();
                let inflight = self.inflight.borrow();
                let (mut hits, mut misses) = (0, 0);
                for i in first..=last {
                    let slot = &mut have[(i - first) as usize];
                    if slot.is_some() {
                        continue;
                    }
                    if let Some(c) = cache.as_mut().and_then(|c| c.get(&i)) {
                        *slot = Some(c.clone());
                        hits += 1;
                    } else if let Some(w) = inflight.get(&i) {
                        waits.push((i, w.clone()));
                        misses += 1;
                    } else {
                        missing.push(i);
                        misses += 1;
                    }
                }
                self.conn.bump(|s| {
                    s.cache_hits += hits;
                    s.cache_misses += misses;
                });
            }
            if missing.is_empty() && waits.is_empty() {
                break;
            }
            if !missing.is_empty() && self.persistent.is_some() && !recalled {
                // Once per read: what the persistent cache holds of the missing chunks
                // and of the read-ahead after them is not fetched.
                recalled = true;
                let wanted = self.with_read_ahead(&missing, last);
                for (i, chunk) in self.recall(&wanted).await {
                    if (first..=last).contains(&i) {
                        have[(i - first) as usize] = Some(chunk);
                    }
                }
                continue;
            }
            let runs = self.plan(&missing, last);
            let mut guard = InflightGuard {
                map: &self.inflight,
                senders: HashMap::new(),
                registered: Vec::new(),
            };
            {
                let mut inflight = self.inflight.borrow_mut();
                for &(s, n) in &runs {
                    for i in s..s + n {
                        let (tx, rx) = oneshot::channel();
                        inflight.insert(i, rx.shared());
                        guard.senders.insert(i, tx);
                        guard.registered.push(i);
                    }
                }
            }
            let fetches = join_all(runs.iter().map(|&(s, n)| self.fetch_run(s, n)));
            let waited = join_all(waits.into_iter().map(|(i, w)| async move { (i, w.await) }));
            let (fetched, waited) = join(fetches, waited).await;
            let mut error = None;
            for (r, &(s, n)) in fetched.into_iter().zip(&runs) {
                match r {
                    Ok(chunks) => {
                        for (i, c) in chunks {
                            guard.deliver(i, &c);
                            if (first..=last).contains(&i) {
                                have[(i - first) as usize] = Some(c);
                            }
                        }
                    }
                    // A failed run of read-ahead chunks only is not this read's failure.
                    Err(e) if s <= last && s + n > first => {
                        error.get_or_insert(e);
                    }
                    Err(_) => {}
                }
            }
            drop(guard);
            if let Some(e) = error {
                return Err(e);
            }
            for (i, r) in waited {
                // A cancelled wait means the other fetch failed: the next round fetches
                // the chunk itself (and reports its own error).
                if let Ok(c) = r {
                    have[(i - first) as usize] = Some(c);
                }
            }
        }
        // Copy the chunks into place.
        let mut pos = 0usize;
        for (k, chunk) in have.iter().enumerate() {
            let Some(chunk) = chunk else {
                unreachable!("every chunk was filled above");
            };
            let chunk_start = (first + k as u64) * cs;
            let from = (offset + pos as u64 - chunk_start) as usize;
            let n = (chunk.len() - from).min(buf.len() - pos);
            buf[pos..pos + n].copy_from_slice(&chunk[from..from + n]);
            pos += n;
        }
        debug_assert_eq!(pos, buf.len());
        Ok(())
    }

    async fn write_at(&self, _offset: u64, _data: &[u8]) -> Result<()> {
        self.check_open()?;
        Err(StorageError::ReadOnly(format!(
            "{} is a read-only HTTP image",
            self.conn.url
        )))
    }

    async fn sync(&self) -> Result<()> {
        self.check_open()
    }

    async fn close(&self) -> Result<()> {
        self.closed.set(true);
        if let Some(c) = self.cache.borrow_mut().as_mut() {
            c.clear();
        }
        Ok(())
    }
}

/// Opens the files an image names as URLs next to a base URL, on the same origin.
///
/// Only plain relative names are accepted (see
/// [`check_relative_name`]): no absolute paths, `..`, schemes or other hosts. The name
/// is resolved against the directory of the base URL and percent-encoded, so `?`, `#`
/// and `%` in a name cannot change the URL's meaning.
///
/// ```
/// use qemuweb_storage::{HttpOptions, HttpResolver};
/// let r = HttpResolver::new("https://example.com/images/top.qcow2", HttpOptions::default()).unwrap();
/// assert_eq!(r.resolve("base.qcow2").unwrap(), "https://example.com/images/base.qcow2");
/// assert!(r.resolve("../secret.img").is_err());
/// assert!(r.resolve("https://evil.example/x.img").is_err());
/// ```
#[derive(Debug, Clone)]
pub struct HttpResolver {
    origin: String,
    dir: String,
    options: HttpOptions,
}

impl HttpResolver {
    /// A resolver for names found in the image at `base_url` (an absolute `http` or
    /// `https` URL); devices it opens use `options`.
    pub fn new(base_url: &str, options: HttpOptions) -> Result<Self> {
        let invalid =
            |why: &str| StorageError::InvalidArgument(format!("base URL {base_url:?}: {why}"));
        options.validate()?;
        let (origin, rest) = origin(base_url)
            .ok_or_else(|| invalid("not an absolute http(s) URL with a plain host"))?;
        let path = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
        let dir = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => "/",
        };
        Ok(Self {
            origin,
            dir: dir.to_string(),
            options,
        })
    }

    /// The URL `name` resolves to, or why it is refused.
    pub fn resolve(&self, name: &str) -> std::result::Result<String, &'static str> {
        check_relative_name(name)?;
        let mut url = format!("{}{}", self.origin, self.dir);
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        if !url.starts_with(&format!("{}/", self.origin)) {
            return Err("the name leaves the origin of the image");
        }
        Ok(url)
    }
}

#[async_trait(?Send)]
impl ImageResolver for HttpResolver {
    async fn open(&self, request: &ImplicitOpen) -> Result<Box<dyn BlockDevice>> {
        let url = self.resolve(&request.name).map_err(|r| request.deny(r))?;
        Ok(Box::new(
            HttpBlockDevice::open(&url, self.options.clone()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, cr: Option<&str>, etag: Option<&str>, body: usize) -> RawResponse {
        RawResponse {
            status,
            content_range: cr.map(str::to_string),
            content_length: Some(body as u64),
            etag: etag.map(str::to_string),
            last_modified: None,
            location: None,
            opaque_redirect: false,
            body: vec![7; body],
        }
    }

    fn kind(r: Result<Accepted, Failure>) -> (bool, crate::ErrorKind) {
        match r {
            Ok(_) => panic!("accepted"),
            Err(Failure::Transient(e)) => (true, e.kind()),
            Err(Failure::Fatal(e)) => (false, e.kind()),
        }
    }

    #[test]
    fn validation() {
        use crate::ErrorKind::*;
        let pin = Pin::ETag("\"a\"".into());
        let exp = Expect {
            start: 10,
            end: 19,
            size: Some(100),
            pin: Some(&pin),
        };
        let ok = check(
            "u",
            &exp,
            resp(206, Some("bytes 10-19/100"), Some("\"a\""), 10),
        );
        assert_eq!(ok.ok().unwrap().body.len(), 10);
        let r = |st, cr, et, n| kind(check("u", &exp, resp(st, cr, et, n)));
        assert_eq!(
            r(206, Some("bytes 10-19/100"), Some("\"a\""), 5),
            (true, Network)
        );
        assert_eq!(
            r(206, Some("bytes 10-19/100"), Some("\"b\""), 10),
            (false, ImageChanged)
        );
        assert_eq!(
            r(206, Some("bytes 10-19/101"), Some("\"a\""), 10),
            (false, ImageChanged)
        );
        assert_eq!(
            r(206, Some("bytes 11-20/100"), Some("\"a\""), 10),
            (false, BadResponse)
        );
        assert_eq!(
            r(206, Some("bytes 10-19/*"), Some("\"a\""), 10),
            (false, BadResponse)
        );
        assert_eq!(r(206, None, Some("\"a\""), 10), (false, BadResponse));
        assert_eq!(
            r(206, Some("bytes 10-19/100"), None, 10),
            (false, BadResponse)
        );
        assert_eq!(r(200, None, Some("\"b\""), 100), (false, ImageChanged));
        assert_eq!(r(200, None, Some("\"a\""), 100), (false, RangeNotSupported));
        assert_eq!(r(503, None, None, 0), (true, HttpStatus));
        assert_eq!(r(404, None, None, 0), (false, HttpStatus));
        assert_eq!(r(204, None, None, 0), (false, BadResponse));
        assert_eq!(r(416, Some("bytes */50"), None, 0), (false, ImageChanged));
        let mut long = resp(206, Some("bytes 10-19/100"), Some("\"a\""), 11);
        long.content_length = None;
        assert_eq!(kind(check("u", &exp, long)), (false, BadResponse));
        // The first request may run past the end of a small image.
        let first = Expect {
            start: 0,
            end: 1000,
            size: None,
            pin: None,
        };
        let a = check(
            "u",
            &first,
            resp(206, Some("bytes 0-99/100"), Some("\"a\""), 100),
        );
        let a = a.ok().unwrap();
        assert_eq!((a.total, a.pin), (100, Some(pin.clone())));
        assert_eq!(
            kind(check("u", &first, resp(200, None, None, 100))),
            (false, RangeNotSupported)
        );
        let empty = check("u", &first, resp(416, Some("bytes */0"), None, 0));
        assert_eq!(empty.ok().unwrap().total, 0);
    }

    #[test]
    fn weak_etags_fall_back_to_last_modified() {
        let mut r = resp(206, None, Some("W/\"a\""), 0);
        assert_eq!(Pin::from_response(&r), None);
        r.last_modified = Some("Sun, 06 Nov 1994 08:49:37 GMT".into());
        assert!(matches!(Pin::from_response(&r), Some(Pin::LastModified(_))));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 1), b);
        assert_eq!(backoff(b, 3), b * 4);
        assert_eq!(backoff(b, 40), Duration::from_secs(60));
    }

    #[test]
    fn resolver_names() {
        let r =
            HttpResolver::new("http://Host:8/a/b/top.img?x=1#f", HttpOptions::default()).unwrap();
        assert_eq!(r.resolve("base.img").unwrap(), "http://host:8/a/b/base.img");
        assert_eq!(
            r.resolve("d/x y%#?.img").unwrap(),
            "http://host:8/a/b/d/x%20y%25%23%3F.img"
        );
        for bad in [
            "../x",
            "/etc/passwd",
            "http://evil/x",
            "//evil/x",
            "a/../../x",
            "",
        ] {
            assert!(r.resolve(bad).is_err(), "{bad}");
        }
        let top = HttpResolver::new("https://h", HttpOptions::default()).unwrap();
        assert_eq!(top.resolve("b.img").unwrap(), "https://h/b.img");
        for bad in ["ftp://h/x", "h/x", "http:///x", "http://u@h/x"] {
            assert!(
                HttpResolver::new(bad, HttpOptions::default()).is_err(),
                "{bad}"
            );
        }
    }
}
