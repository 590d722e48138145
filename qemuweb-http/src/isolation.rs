//! Cross-origin isolation headers (COOP/COEP) and the resource policy (CORP), as a layer.

use http::{header::HeaderName, HeaderValue};
use tower::layer::util::Stack;
use tower_http::set_header::SetResponseHeaderLayer;

/// Who may embed a response without CORS (`Cross-Origin-Resource-Policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Corp {
    /// Only pages of this server's origin (the default: another port on 127.0.0.1 is
    /// another origin but the same site).
    #[default]
    SameOrigin,
    /// Pages of the same site.
    SameSite,
    /// Any page (what a public image host sends; pair it with an explicit CORS opt-in).
    CrossOrigin,
}

impl Corp {
    /// The header value.
    ///
    /// ```
    /// assert_eq!(qemuweb_http::Corp::CrossOrigin.as_str(), "cross-origin");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Corp::SameOrigin => "same-origin",
            Corp::SameSite => "same-site",
            Corp::CrossOrigin => "cross-origin",
        }
    }
}

/// The layer [`isolation`] makes: three tower-http `SetResponseHeaderLayer`s.
pub type IsolationLayer = Stack<
    SetResponseHeaderLayer<HeaderValue>,
    Stack<SetResponseHeaderLayer<HeaderValue>, SetResponseHeaderLayer<HeaderValue>>,
>;

/// A layer adding `Cross-Origin-Opener-Policy: same-origin`,
/// `Cross-Origin-Embedder-Policy: require-corp` (so pages may use `SharedArrayBuffer`) and
/// `Cross-Origin-Resource-Policy: <corp>` to every response that has none of its own.
///
/// ```
/// use qemuweb_http::{isolation, Corp};
/// let layer = isolation(Corp::SameOrigin);
/// # let _ = layer;
/// ```
pub fn isolation(corp: Corp) -> IsolationLayer {
    let set = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    };
    Stack::new(
        set("cross-origin-opener-policy", "same-origin"),
        Stack::new(
            set("cross-origin-embedder-policy", "require-corp"),
            set("cross-origin-resource-policy", corp.as_str()),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{get, serve_files, site};

    #[test]
    fn every_answer_is_cross_origin_isolated() {
        let (_tmp, root, _) = site();
        for corp in [Corp::SameOrigin, Corp::CrossOrigin] {
            let server = serve_files(&root, |_| isolation(corp));
            for path in ["/", "/a.wasm", "/missing", "/sub/f.bin"] {
                let a = get(server.local_addr(), path, &[("Range", "bytes=0-0")]);
                assert_eq!(
                    a.header("cross-origin-opener-policy"),
                    Some("same-origin"),
                    "{path}"
                );
                assert_eq!(
                    a.header("cross-origin-embedder-policy"),
                    Some("require-corp")
                );
                assert_eq!(
                    a.header("cross-origin-resource-policy"),
                    Some(corp.as_str())
                );
            }
        }
    }
}
