//! The response body type every service here answers with, and small constructors.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

/// Any error a body or service may carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: bytes in memory, a file's byte range, or a wrapped one.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A body of `bytes`.
///
/// ```
/// use http_body::Body as _;
/// assert_eq!(qemuweb_http::full("hi").size_hint().exact(), Some(2));
/// ```
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A `text/plain` response of `status` whose body is `message` and a newline.
///
/// ```
/// use http::StatusCode;
/// let r = qemuweb_http::text(StatusCode::FORBIDDEN, "no");
/// assert_eq!(r.status(), 403);
/// assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
/// ```
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{message}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
