//! The test kit's scripted misbehaviour, as a layer (feature `misbehave`): a server that
//! fails, lies or changes on purpose, so clients can be tested against it.
//!
//! A path `/__mis/<token>/<mode>/<file>` is served as `/<file>` with the behaviour
//! `<mode>`. The request counter behind each mode is kept per `<token>/<mode>` pair, so
//! tests that use different tokens do not interfere. Only `GET` requests are counted (not
//! CORS preflights or `HEAD`). Other paths pass through untouched. Modes:
//!
//! | mode | behaviour |
//! |------|-----------|
//! | `plain` | well-behaved (a private log prefix for one test) |
//! | `ignore-range` | always `200` with the whole file |
//! | `truncate-N` | the first `N` GETs answered `206` promise the full `Content-Length` but the connection ends after half the body |
//! | `short-N` | the first `N` GETs answered `206` send a body and `Content-Length` half as long as their `Content-Range` |
//! | `status-C-N` | the first `N` GETs answer status `C` |
//! | `status-C` | every GET answers status `C` |
//! | `swap-K` | after `K` GETs the file's content (every byte XOR `0x5a`), `ETag` and `Last-Modified` (one hour later) change |
//! | `wrong-range` | a `bytes=A-B` range is answered as `bytes=A+1-B+1` (bytes and `Content-Range` one byte later than asked) |
//! | `weak-etag` | a weak `ETag` (`W/"…"`) instead of the strong one |
//! | `no-isolation` | no `Cross-Origin-Opener-Policy`/`-Embedder-Policy`/`-Resource-Policy`, as a misconfigured host answers (relative URLs of a page served so stay under the prefix) |
//! | `redirect-same` | `302` to `/<file>` on the same origin |
//! | `redirect-cross` | `302` to `<file>` on another origin: the same port under the other name of the loopback address (`127.0.0.1` <-> `localhost`) |
//! | `claim-size-N` | a `bytes=A-B` request is answered `206` with `Content-Range: bytes A-B/N` and `B-A+1` zero bytes (at most 64 MiB), the file's validators kept: a server lying about a file of `N` bytes |
//! | `no-length` | no `Content-Length`: the body is sent chunked |
//! | `no-length-flood` | no `Content-Length`, and after the body an endless stream of more bytes (until the client hangs up, 64 GiB at most) |
//! | `after-K-<mode>` | the first `K` GETs are served plainly, then `<mode>` starts counting |

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Frame;
use http_body_util::BodyExt;

use crate::body::{text, Body, BoxError};

/// How the content, `ETag` and `Last-Modified` change in `swap-K` mode.
const SWAP_XOR: u8 = 0x5a;
const SWAP_SUFFIX: &str = "-swapped";
const SWAP_SHIFT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    IgnoreRange,
    Truncate(u64),
    Short(u64),
    Status(u16, Option<u64>),
    Swap(u64),
    WrongRange,
    WeakEtag,
    NoIsolation,
    Redirect { cross: bool },
    ClaimSize(u64),
    NoLength { flood: bool },
}

/// The largest body a `claim-size-N` answer makes up.
const CLAIM_BODY_LIMIT: u64 = 64 << 20;
/// The most bytes a `no-length-flood` answer adds.
const FLOOD_LIMIT: u64 = 64 << 30;

fn parse_mode(s: &str) -> Option<Mode> {
    let num = |p: &str| s.strip_prefix(p).and_then(|n| n.parse::<u64>().ok());
    Some(match s {
        "plain" => Mode::Plain,
        "ignore-range" => Mode::IgnoreRange,
        "wrong-range" => Mode::WrongRange,
        "weak-etag" => Mode::WeakEtag,
        "no-isolation" => Mode::NoIsolation,
        "redirect-same" => Mode::Redirect { cross: false },
        "redirect-cross" => Mode::Redirect { cross: true },
        "no-length" => Mode::NoLength { flood: false },
        "no-length-flood" => Mode::NoLength { flood: true },
        _ if s.starts_with("claim-size-") => Mode::ClaimSize(num("claim-size-")?),
        _ if s.starts_with("truncate-") => Mode::Truncate(num("truncate-")?),
        _ if s.starts_with("short-") => Mode::Short(num("short-")?),
        _ if s.starts_with("swap-") => Mode::Swap(num("swap-")?),
        _ => {
            let rest = s.strip_prefix("status-")?;
            let (code, n) = match rest.split_once('-') {
                Some((c, n)) => (c, Some(n.parse().ok()?)),
                None => (rest, None),
            };
            let code: u16 = code.parse().ok()?;
            StatusCode::from_u16(code).ok()?;
            Mode::Status(code, n)
        }
    })
}

/// The layer of [`Misbehave`]; its GET counters are shared by every service it makes.
#[derive(Debug, Clone, Default)]
pub struct MisbehaveLayer {
    counters: Arc<Mutex<HashMap<String, u64>>>,
}

impl MisbehaveLayer {
    /// A layer with fresh counters.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower::Layer<S> for MisbehaveLayer {
    type Service = Misbehave<S>;

    fn layer(&self, inner: S) -> Misbehave<S> {
        Misbehave {
            inner,
            counters: self.counters.clone(),
        }
    }
}

/// A service answering `/__mis/<token>/<mode>/<file>` with scripted misbehaviour (see the
/// [module documentation](self)).
#[derive(Debug, Clone)]
pub struct Misbehave<S> {
    inner: S,
    counters: Arc<Mutex<HashMap<String, u64>>>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S, B> tower::Service<Request<B>> for Misbehave<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> BoxFuture {
        let Some(rest) = req.uri().path().strip_prefix("/__mis/").map(str::to_string) else {
            return Box::pin(self.inner.call(req));
        };
        let refuse = |m: &str| -> BoxFuture {
            let r = text(StatusCode::BAD_REQUEST, m);
            Box::pin(async move { Ok(r) })
        };
        let mut it = rest.splitn(3, '/');
        let (Some(token), Some(mode_s), Some(file)) = (it.next(), it.next(), it.next()) else {
            return refuse("use /__mis/<token>/<mode>/<file>");
        };
        // `after-K-<mode>`: the first K GETs are served plainly, then `<mode>` starts.
        let (skip, inner_mode) = match mode_s
            .strip_prefix("after-")
            .and_then(|r| r.split_once('-'))
        {
            Some((k, m)) => match k.parse::<u64>() {
                Ok(k) => (k, m),
                Err(_) => return refuse("bad after-K prefix"),
            },
            None => (0, mode_s),
        };
        let Some(mode) = parse_mode(inner_mode) else {
            return refuse("unknown misbehaviour mode");
        };
        let count = if req.method() == Method::GET {
            let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            let n = c.entry(format!("{token}/{mode_s}")).or_insert(0);
            *n += 1;
            *n - 1
        } else {
            0
        };
        let (mode, count) = if count < skip {
            (Mode::Plain, 0)
        } else {
            (mode, count - skip)
        };
        let target = match req.uri().query() {
            Some(q) => format!("/{file}?{q}"),
            None => format!("/{file}"),
        };
        match target.parse::<Uri>() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return refuse("bad file path"),
        }
        let mut alter = Alter::default();
        let headers = req.headers_mut();
        match mode {
            Mode::Status(code, n) if n.is_none_or(|n| count < n) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let r = text(status, "scripted failure");
                return Box::pin(async move { Ok(r) });
            }
            Mode::IgnoreRange => {
                headers.remove(header::RANGE);
                headers.remove(header::IF_RANGE);
            }
            Mode::WrongRange => shift_range(headers),
            Mode::Swap(k) if count >= k => {
                swap_validators(headers);
                alter.swap = true;
            }
            Mode::Truncate(n) if count < n => alter.cut = Some(Cut::Fail),
            Mode::Short(n) if count < n => alter.cut = Some(Cut::End),
            Mode::WeakEtag => alter.weak = true,
            Mode::NoIsolation => alter.no_isolation = true,
            Mode::Redirect { cross } => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("127.0.0.1");
                let location = match (cross, host.rsplit_once(':')) {
                    (false, _) => format!("/{file}"),
                    (true, Some(("localhost", port))) => format!("http://127.0.0.1:{port}/{file}"),
                    (true, Some((_, port))) => format!("http://localhost:{port}/{file}"),
                    (true, None) => format!("http://localhost/{file}"),
                };
                let mut r = text(StatusCode::FOUND, "redirect");
                match HeaderValue::from_str(&location) {
                    Ok(v) => r.headers_mut().insert(header::LOCATION, v),
                    Err(_) => return refuse("bad file path"),
                };
                return Box::pin(async move { Ok(r) });
            }
            Mode::ClaimSize(size) => {
                let Some((a, b)) = range_of(headers)
                    .filter(|&(a, b)| b >= a && b < size && b - a < CLAIM_BODY_LIMIT)
                else {
                    return refuse("claim-size answers a bytes=A-B range inside the claim");
                };
                // The file's own first byte brings its validators; the bytes are made up.
                headers.insert(header::RANGE, HeaderValue::from_static("bytes=0-0"));
                headers.remove(header::IF_RANGE);
                alter.claim = Some((a, b, size));
            }
            Mode::NoLength { flood } => alter.lengthless = Some(flood),
            _ => {}
        }
        let answer = self.inner.call(req);
        Box::pin(async move {
            let Ok(response) = answer.await;
            Ok(alter.apply(response))
        })
    }
}

/// The `bytes=A-B` of a request.
fn range_of(headers: &HeaderMap) -> Option<(u64, u64)> {
    headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
        .and_then(|spec| spec.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
}

/// `bytes=A-B` becomes `bytes=A+1-B+1`.
fn shift_range(headers: &mut HeaderMap) {
    let shifted = range_of(headers)
        .map(|(a, b)| format!("bytes={}-{}", a.saturating_add(1), b.saturating_add(1)));
    if let Some(v) = shifted.and_then(|s| HeaderValue::from_str(&s).ok()) {
        headers.insert(header::RANGE, v);
    }
}

/// After a swap the client's validators name either the swapped version (map them to the
/// file's real ones) or the old one (make them match nothing).
fn swap_validators(headers: &mut HeaderMap) {
    for name in [header::IF_RANGE, header::IF_MATCH, header::IF_NONE_MATCH] {
        let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let mapped = if value.trim() == "*" {
            continue;
        } else if value.contains('"') {
            value
                .split(',')
                .map(|tag| {
                    let tag = tag.trim();
                    match tag.strip_suffix(&format!("{SWAP_SUFFIX}\"")) {
                        Some(real) => format!("{real}\""),
                        None => "\"stale\"".to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            match httpdate::parse_http_date(value) {
                Ok(d) => httpdate::fmt_http_date(d - SWAP_SHIFT),
                Err(_) => continue,
            }
        };
        if let Ok(v) = HeaderValue::from_str(&mapped) {
            headers.insert(name, v);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Half the body, then an error: the connection ends short of `Content-Length`.
    Fail,
    /// Half the body, announced as such.
    End,
}

/// What happens to the answer.
#[derive(Debug, Default)]
struct Alter {
    swap: bool,
    weak: bool,
    no_isolation: bool,
    cut: Option<Cut>,
    /// `claim-size`: the range asked for and the size claimed.
    claim: Option<(u64, u64, u64)>,
    /// `no-length`: no `Content-Length`; `true` adds an endless stream.
    lengthless: Option<bool>,
}

impl Alter {
    fn apply(self, response: Response<Body>) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        let headers = &mut parts.headers;
        if self.no_isolation {
            for name in [
                "cross-origin-opener-policy",
                "cross-origin-embedder-policy",
                "cross-origin-resource-policy",
            ] {
                headers.remove(name);
            }
        }
        let etag = headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(etag) = etag {
            let changed = if self.swap {
                format!("{}{SWAP_SUFFIX}\"", etag.trim_end_matches('"'))
            } else if self.weak {
                format!("W/{etag}")
            } else {
                etag
            };
            if let Ok(v) = HeaderValue::from_str(&changed) {
                headers.insert(header::ETAG, v);
            }
        }
        if self.swap {
            let later = headers
                .get(header::LAST_MODIFIED)
                .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok())
                .map(|d| httpdate::fmt_http_date(d + SWAP_SHIFT));
            if let Some(v) = later.and_then(|d| HeaderValue::from_str(&d).ok()) {
                headers.insert(header::LAST_MODIFIED, v);
            }
        }
        if let (Some((a, b, size)), StatusCode::PARTIAL_CONTENT) = (self.claim, parts.status) {
            let len = b - a + 1;
            let range = format!("bytes {a}-{b}/{size}");
            if let Ok(v) = HeaderValue::from_str(&range) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            return Response::from_parts(parts, crate::body::full(vec![0u8; len as usize]));
        }
        if let Some(flood) = self.lengthless {
            headers.remove(header::CONTENT_LENGTH);
            return Response::from_parts(parts, lengthless(body, flood));
        }
        let mut limit = None;
        if parts.status == StatusCode::PARTIAL_CONTENT {
            if let Some(cut) = self.cut {
                let len: u64 = headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                limit = Some((len / 2, cut));
                if cut == Cut::End {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len / 2));
                }
            }
        }
        Response::from_parts(parts, altered(body, self.swap, limit))
    }
}

/// `body` as a stream of no known length (sent chunked), followed by [`FLOOD_LIMIT`] bytes
/// of `0xa5` when `flood`.
fn lengthless(body: Body, flood: bool) -> Body {
    let more = if flood { FLOOD_LIMIT } else { 0 };
    let chunk = bytes::Bytes::from(vec![0xa5u8; 64 * 1024]);
    let tail = futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move { (sent < more).then(|| (Ok(Frame::data(chunk.clone())), sent + chunk.len() as u64)) }
    });
    let head = futures_util::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        match body.frame().await? {
            Ok(frame) => Some((Ok(frame), Some(body))),
            Err(e) => Some((Err(e), None)),
        }
    });
    http_body_util::StreamBody::new(futures_util::StreamExt::chain(head, tail)).boxed_unsync()
}

/// `body` with its bytes XORed (`xor`) and/or cut after `limit` bytes.
fn altered(body: Body, xor: bool, limit: Option<(u64, Cut)>) -> Body {
    let stream = futures_util::stream::unfold(Some((body, 0u64)), move |state| async move {
        let (mut body, passed) = state?;
        if let Some((limit, cut)) = limit {
            if passed >= limit {
                if cut == Cut::End {
                    return None;
                }
                // Let hyper flush what was sent before the connection is cut.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let cut: BoxError = "truncated on purpose (misbehaviour truncate-N)".into();
                return Some((Err(cut), None));
            }
        }
        let data = match body.frame().await? {
            Ok(frame) => frame.into_data().ok()?,
            Err(e) => return Some((Err(e), None)),
        };
        let room = limit.map_or(u64::MAX, |(l, _)| l - passed);
        let keep = (data.len() as u64).min(room) as usize;
        let mut data = data.slice(..keep);
        if xor {
            data = data
                .iter()
                .map(|b| b ^ SWAP_XOR)
                .collect::<Vec<u8>>()
                .into();
        }
        Some((Ok(Frame::data(data)), Some((body, passed + keep as u64))))
    });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{get, serve_files, site};
    use std::io::{Read, Write};

    #[test]
    fn every_mode() {
        let (_tmp, root, data) = site();
        let server = serve_files(&root, |_| {
            tower::layer::util::Stack::new(
                crate::isolation(crate::Corp::SameOrigin),
                MisbehaveLayer::new(),
            )
        });
        let addr = server.local_addr();
        let r = [("Range", "bytes=0-99")];
        let g = |path: &str| get(addr, path, &r);
        assert_eq!(g("/__mis/a/plain/sub/f.bin").body, &data[..100]);
        let a = g("/__mis/a/ignore-range/sub/f.bin");
        assert_eq!((a.status, a.body.len()), (200, 5000));
        for expected in [503, 503, 206] {
            assert_eq!(g("/__mis/a/status-503-2/sub/f.bin").status, expected);
        }
        // Another token has its own counter.
        assert_eq!(g("/__mis/b/status-503-2/sub/f.bin").status, 503);
        assert_eq!(g("/__mis/a/status-429/sub/f.bin").status, 429);
        assert_eq!(g("/__mis/a/status-429/sub/f.bin").status, 429);
        let a = g("/__mis/a/truncate-1/sub/f.bin");
        assert_eq!((a.status, a.body.len()), (206, 50));
        assert_eq!(a.header("content-length"), Some("100"));
        assert_eq!(g("/__mis/a/truncate-1/sub/f.bin").body, &data[..100]);
        let a = g("/__mis/a/short-1/sub/f.bin");
        assert_eq!((a.status, a.body.as_slice()), (206, &data[..50]));
        assert_eq!(a.header("content-range"), Some("bytes 0-99/5000"));
        assert_eq!(a.header("content-length"), Some("50"));
        let a = g("/__mis/a/wrong-range/sub/f.bin");
        assert_eq!((a.status, a.body.as_slice()), (206, &data[1..101]));
        assert_eq!(a.header("content-range"), Some("bytes 1-100/5000"));
        for expected in [206, 500, 206] {
            assert_eq!(
                g("/__mis/a/after-1-status-500-1/sub/f.bin").status,
                expected
            );
        }
        let a = g("/__mis/a/weak-etag/sub/f.bin");
        let weak = a.header("etag").unwrap().to_string();
        assert!(weak.starts_with("W/\""), "{weak}");
        // A weak tag never satisfies If-Range.
        let a = get(
            addr,
            "/__mis/a/weak-etag/sub/f.bin",
            &[r[0], ("If-Range", &weak)],
        );
        assert_eq!(a.status, 200);
        // Redirects: the request's Host is 127.0.0.1:PORT.
        let a = g("/__mis/a/redirect-same/sub/f.bin");
        assert_eq!((a.status, a.header("location")), (302, Some("/sub/f.bin")));
        let a = g("/__mis/a/redirect-cross/sub/f.bin");
        let cross = format!("http://localhost:{}/sub/f.bin", addr.port());
        assert_eq!(
            (a.status, a.header("location")),
            (302, Some(cross.as_str()))
        );
        // A claimed size: the range asked for, zeros, the file's validators.
        let far = [("Range", "bytes=18446744073709551000-18446744073709551099")];
        let a = get(
            addr,
            &format!("/__mis/a/claim-size-{}/sub/f.bin", u64::MAX),
            &far,
        );
        assert_eq!((a.status, a.body.as_slice()), (206, &[0u8; 100][..]));
        assert_eq!(
            a.header("content-range"),
            Some("bytes 18446744073709551000-18446744073709551099/18446744073709551615")
        );
        assert!(a.header("etag").is_some_and(|e| e.starts_with('"')));
        assert_eq!(
            get(addr, "/__mis/a/claim-size-5/sub/f.bin", &far).status,
            400
        );
        // No Content-Length: chunked; a flood goes on past the body.
        let a = g("/__mis/a/no-length/sub/f.bin");
        assert_eq!((a.status, a.header("content-length")), (206, None));
        assert_eq!(a.header("transfer-encoding"), Some("chunked"));
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(
            format!(
                "GET /__mis/a/no-length-flood/sub/f.bin HTTP/1.1\r\nHost: {addr}\r\nRange: bytes=0-99\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut got = vec![0u8; 1 << 20];
        s.read_exact(&mut got).unwrap();
        assert!(got.windows(100).any(|w| w == &data[..100]));
        assert!(got.iter().filter(|&&b| b == 0xa5).count() > 900_000);
        drop(s);
        for bad in [
            "/__mis/a/nonsense/sub/f.bin",
            "/__mis/a/after-x-plain/f",
            "/__mis/a",
            "/__mis/a/status-9999/x",
        ] {
            assert_eq!(g(bad).status, 400, "{bad}");
        }
    }

    #[test]
    fn swap_changes_content_and_validators() {
        let (_tmp, root, data) = site();
        let server = serve_files(&root, |_| MisbehaveLayer::new());
        let addr = server.local_addr();
        let path = "/__mis/s/swap-1/sub/f.bin";
        let r = ("Range", "bytes=0-99");
        let first = get(addr, path, &[r]);
        assert_eq!(first.body, &data[..100]);
        let old_tag = first.header("etag").unwrap().to_string();
        let old_date = first.header("last-modified").unwrap().to_string();
        let second = get(addr, path, &[r]);
        assert_eq!(second.body[0], data[0] ^ 0x5a);
        let new_tag = second.header("etag").unwrap().to_string();
        assert_ne!(new_tag, old_tag);
        assert_ne!(second.header("last-modified").unwrap(), old_date);
        // The old version's validators no longer match; the new ones do.
        assert_eq!(get(addr, path, &[r, ("If-Range", &old_tag)]).status, 200);
        assert_eq!(get(addr, path, &[r, ("If-Range", &old_date)]).status, 200);
        let a = get(addr, path, &[r, ("If-Range", &new_tag)]);
        assert_eq!((a.status, a.body[1]), (206, data[1] ^ 0x5a));
        let new_date = second.header("last-modified").unwrap();
        assert_eq!(get(addr, path, &[r, ("If-Range", new_date)]).status, 206);
        assert_eq!(get(addr, path, &[("If-None-Match", &new_tag)]).status, 304);
        assert_eq!(get(addr, path, &[("If-Match", &old_tag)]).status, 412);
    }
}
