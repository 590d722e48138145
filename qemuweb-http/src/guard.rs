//! Gates (a check that answers instead of the service when it refuses), and the gate for
//! endpoints that act: a per-run [`Token`] and a same-origin check.
//!
//! A page from another origin can send simple requests (a `text/plain` `POST`, a `GET`)
//! to any local server without a preflight. An endpoint that changes something (types to
//! a VM, ends a run) or reveals something (serial output) therefore checks, before it
//! runs, that:
//!
//! 1. `Origin`, when sent, is one of this server's own origins, and `Sec-Fetch-Site`, when
//!    sent, is `same-origin` (browsers send them; command-line clients usually do not);
//! 2. the request carries the run's token in the [`TOKEN_HEADER`] header (a custom header:
//!    a cross-origin page cannot send it without a preflight, which is never approved).
//!
//! The page gets the token from a configuration document served by the same server
//! without CORS, so only same-origin pages can read it. A refusal is a `403` with a
//! one-line reason, and the endpoint's service is never called: nothing changes.
//!
//! ```
//! use qemuweb_http::{ActionGuard, ActionGuardLayer, AllowedHosts, Token};
//! let hosts = AllowedHosts::for_addr("127.0.0.1:18000".parse().unwrap());
//! let token = Token::generate()?;
//! let layer = ActionGuardLayer::new(ActionGuard::new(token.clone(), &hosts));
//! # let _ = layer;
//! # Ok::<(), qemuweb_http::HttpError>(())
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready};
use http::{Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use crate::body::{text, Body};
use crate::error::{HttpError, Result};
use crate::host::AllowedHosts;

/// The request header carrying the run's token.
pub const TOKEN_HEADER: &str = "x-qemuweb-token";

/// A decision made on a request before its service sees it.
pub trait Check: Clone + Send + Sync + 'static {
    /// `None` to pass the request on, or the response that refuses it.
    fn check<B>(&self, req: &Request<B>) -> Option<Response<Body>>;
}

/// A service behind a [`Check`]: refused requests never reach `inner`.
#[derive(Debug, Clone)]
pub struct Gate<C, S> {
    check: C,
    inner: S,
}

/// The layer of a [`Gate`].
#[derive(Debug, Clone)]
pub struct GateLayer<C> {
    check: C,
}

impl<C> GateLayer<C> {
    /// A layer putting `check` in front of a service.
    pub fn new(check: C) -> Self {
        GateLayer { check }
    }
}

impl<C: Clone, S> tower::Layer<S> for GateLayer<C> {
    type Service = Gate<C, S>;

    fn layer(&self, inner: S) -> Gate<C, S> {
        Gate {
            check: self.check.clone(),
            inner,
        }
    }
}

impl<C, S, B> tower::Service<Request<B>> for Gate<C, S>
where
    C: Check,
    S: tower::Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Future<Output = std::result::Result<Response<Body>, Infallible>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<std::result::Result<Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.check.check(&req) {
            Some(refusal) => Either::Left(futures_util::future::ready(Ok(refusal))),
            None => Either::Right(self.inner.call(req)),
        }
    }
}

/// A random secret for one run (256 bits, hex), compared in constant time. Its `Debug`
/// output does not show it.
///
/// ```
/// use qemuweb_http::Token;
/// let t = Token::generate()?;
/// assert_eq!(t.as_str().len(), 64);
/// assert!(t.matches(t.as_str()));
/// assert!(!t.matches("guess"));
/// assert_ne!(t, Token::generate()?);
/// assert_eq!(format!("{t:?}"), "Token(..)");
/// # Ok::<(), qemuweb_http::HttpError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    /// A fresh token from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`HttpError::Io`] when no random bytes can be had.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| HttpError::io("random token", std::io::Error::other(e.to_string())))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Token(hex.into()))
    }

    /// The token's text, to hand to the page (e.g. in its configuration).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this token (constant time).
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The [`Check`] for endpoints that act: same origin and the run's token (see the
/// [module documentation](self)).
#[derive(Debug, Clone)]
pub struct ActionGuard {
    token: Token,
    origins: Arc<Vec<String>>,
}

impl ActionGuard {
    /// Requests must carry `token` and may come only from pages of `hosts`.
    pub fn new(token: Token, hosts: &AllowedHosts) -> Self {
        ActionGuard {
            token,
            origins: Arc::new(hosts.origins()),
        }
    }
}

impl Check for ActionGuard {
    fn check<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let refuse = |why: String| Some(text(StatusCode::FORBIDDEN, &format!("refused: {why}")));
        if let Some(origin) = header("origin") {
            if !self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                return refuse(format!(
                    "Origin {origin:?} is not this server's; only its own pages may use this endpoint"
                ));
            }
        }
        if let Some(site) = header("sec-fetch-site") {
            if site != "same-origin" {
                return refuse(format!(
                    "Sec-Fetch-Site {site:?}: only same-origin requests may use this endpoint"
                ));
            }
        }
        match header(TOKEN_HEADER) {
            Some(t) if self.token.matches(t) => None,
            Some(_) => refuse(format!("wrong {TOKEN_HEADER}")),
            None => refuse(format!("missing {TOKEN_HEADER}")),
        }
    }
}

/// The layer of the [`ActionGuard`] gate: `ActionGuardLayer::new(ActionGuard::new(..))`.
pub type ActionGuardLayer = GateLayer<ActionGuard>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::full;
    use crate::testing::{request, serve};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A server whose one endpoint counts the requests that reach it.
    fn acting_server(token: &Token) -> (crate::Server, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let token = token.clone();
        let server = serve(move |addr| {
            let endpoint = tower::service_fn(move |_req: Request<crate::RequestBody>| {
                h.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(Response::new(full("done"))) }
            });
            tower::ServiceBuilder::new()
                .layer(ActionGuardLayer::new(ActionGuard::new(
                    token,
                    &AllowedHosts::for_addr(addr),
                )))
                .service(endpoint)
        });
        (server, hits)
    }

    #[test]
    fn token_and_origin_are_required_and_refusals_change_nothing() {
        let token = Token::generate().unwrap();
        let (server, hits) = acting_server(&token);
        let addr = server.local_addr();
        let own = format!("http://{addr}");
        let post = |headers: &[(&str, &str)]| {
            let mut h = vec![("Content-Length", "0")];
            h.extend_from_slice(headers);
            request(addr, "POST", "/serial/in", &h)
        };
        let refused: [&[(&str, &str)]; 7] = [
            &[],
            &[(TOKEN_HEADER, "0000")],
            &[
                (TOKEN_HEADER, token.as_str()),
                ("Origin", "http://evil.example"),
            ],
            &[
                (TOKEN_HEADER, token.as_str()),
                ("Origin", "http://127.0.0.1:1"),
            ],
            &[(TOKEN_HEADER, token.as_str()), ("Origin", "null")],
            &[
                (TOKEN_HEADER, token.as_str()),
                ("Sec-Fetch-Site", "cross-site"),
            ],
            &[
                (TOKEN_HEADER, token.as_str()),
                ("Sec-Fetch-Site", "same-site"),
            ],
        ];
        for headers in refused {
            let a = post(headers);
            assert_eq!(a.status, 403, "{headers:?}");
            assert!(
                String::from_utf8_lossy(&a.body).starts_with("refused: "),
                "{headers:?}"
            );
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "a refused request reached the endpoint"
        );
        let a = post(&[(TOKEN_HEADER, token.as_str())]);
        assert_eq!((a.status, a.body.as_slice()), (200, b"done".as_slice()));
        let a = post(&[
            (TOKEN_HEADER, token.as_str()),
            ("Origin", &own),
            ("Sec-Fetch-Site", "same-origin"),
        ]);
        assert_eq!(a.status, 200);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}
