//! CORS: off by default, allowed for origins the caller names, a wildcard only on request.

use http::{header, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::{HttpError, Result};
use crate::isolation::Corp;

/// Which other origins may read this server's responses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsPolicy {
    /// None (no CORS headers): the default.
    #[default]
    Off,
    /// These origins (`scheme://host[:port]`, normalized to lower case).
    Origins(Vec<String>),
    /// Any origin (`Access-Control-Allow-Origin: *`): only by explicit opt-in, e.g. for a
    /// public image host or the test kit's image server.
    Any,
}

impl CorsPolicy {
    /// A policy for the named origins (none named: [`CorsPolicy::Off`]).
    ///
    /// ```
    /// use qemuweb_http::CorsPolicy;
    /// let p = CorsPolicy::origins(["http://127.0.0.1:8081/", "HTTPS://Example.org"])?;
    /// assert_eq!(p, CorsPolicy::Origins(vec!["http://127.0.0.1:8081".into(), "https://example.org".into()]));
    /// assert_eq!(CorsPolicy::origins(Vec::<String>::new())?, CorsPolicy::Off);
    /// assert!(CorsPolicy::origins(["*"]).is_err());
    /// # Ok::<(), qemuweb_http::HttpError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`HttpError::InvalidOrigin`] for a value that is not `http(s)://host[:port]`.
    pub fn origins<I, S>(origins: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let list = origins
            .into_iter()
            .map(|o| normalize_origin(o.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(if list.is_empty() {
            CorsPolicy::Off
        } else {
            CorsPolicy::Origins(list)
        })
    }

    /// The tower-http layer for this policy (`None` when off): `GET`, `HEAD`, `OPTIONS`,
    /// the request headers a disk reader sends (`Range`, `If-Range`, `If-Match`,
    /// `If-None-Match`) and the response headers it reads exposed.
    pub fn layer(&self) -> Option<CorsLayer> {
        let allow = match self {
            CorsPolicy::Off => return None,
            CorsPolicy::Any => AllowOrigin::any(),
            CorsPolicy::Origins(list) => AllowOrigin::list(
                list.iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect::<Vec<_>>(),
            ),
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
                .allow_headers([
                    header::RANGE,
                    header::IF_RANGE,
                    header::IF_MATCH,
                    header::IF_NONE_MATCH,
                ])
                .expose_headers([
                    header::CONTENT_LENGTH,
                    header::CONTENT_RANGE,
                    header::ACCEPT_RANGES,
                    header::ETAG,
                    header::LAST_MODIFIED,
                ])
                .max_age(std::time::Duration::from_secs(600)),
        )
    }

    /// The resource policy that goes with it: `cross-origin` for [`CorsPolicy::Any`],
    /// else `same-origin` (named origins read through CORS, which CORP does not limit).
    ///
    /// ```
    /// use qemuweb_http::{CorsPolicy, Corp};
    /// assert_eq!(CorsPolicy::Off.corp(), Corp::SameOrigin);
    /// assert_eq!(CorsPolicy::Any.corp(), Corp::CrossOrigin);
    /// ```
    pub fn corp(&self) -> Corp {
        match self {
            CorsPolicy::Any => Corp::CrossOrigin,
            _ => Corp::SameOrigin,
        }
    }
}

/// `scheme://host[:port]` in lower case, from a value that may end with `/`.
fn normalize_origin(value: &str) -> Result<String> {
    let bad = || HttpError::InvalidOrigin {
        origin: value.to_string(),
    };
    let uri: http::Uri = value.trim().parse().map_err(|_| bad())?;
    let scheme = uri
        .scheme_str()
        .map(str::to_ascii_lowercase)
        .ok_or_else(bad)?;
    let authority = uri.authority().ok_or_else(bad)?;
    let path_ok = matches!(uri.path(), "" | "/");
    if !(scheme == "http" || scheme == "https")
        || !path_ok
        || uri.query().is_some()
        || authority.as_str().contains('@')
    {
        return Err(bad());
    }
    Ok(format!(
        "{scheme}://{}",
        authority.as_str().to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{get, request, serve_files, site};

    fn cors_server(policy: &CorsPolicy, root: &std::path::Path) -> crate::Server {
        serve_files(root, |_| tower::util::option_layer(policy.layer()))
    }

    #[test]
    fn off_by_default_named_origins_only_wildcard_on_request() {
        let (_tmp, root, _) = site();
        let page = [("Origin", "http://127.0.0.1:9")];
        let other = [("Origin", "http://evil.example")];

        let server = cors_server(&CorsPolicy::default(), &root);
        let a = get(server.local_addr(), "/sub/f.bin", &page);
        assert_eq!(a.header("access-control-allow-origin"), None);

        let named = CorsPolicy::origins(["http://127.0.0.1:9"]).unwrap();
        let server = cors_server(&named, &root);
        let a = get(server.local_addr(), "/sub/f.bin", &page);
        assert_eq!(
            a.header("access-control-allow-origin"),
            Some("http://127.0.0.1:9")
        );
        assert!(a
            .header("access-control-expose-headers")
            .unwrap()
            .contains("content-range"));
        let a = get(server.local_addr(), "/sub/f.bin", &other);
        assert_eq!(a.header("access-control-allow-origin"), None);
        // A preflight for a Range read.
        let pre = [
            ("Origin", "http://127.0.0.1:9"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range, if-range"),
        ];
        let a = request(server.local_addr(), "OPTIONS", "/sub/f.bin", &pre);
        assert_eq!(
            a.header("access-control-allow-origin"),
            Some("http://127.0.0.1:9")
        );
        assert!(a
            .header("access-control-allow-headers")
            .unwrap()
            .contains("range"));

        let server = cors_server(&CorsPolicy::Any, &root);
        let a = get(server.local_addr(), "/sub/f.bin", &other);
        assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    }

    #[test]
    fn origins_are_checked() {
        for bad in [
            "*",
            "127.0.0.1:8080",
            "http://a/b",
            "ftp://a",
            "http://u@a",
            "http://a?x",
        ] {
            assert!(CorsPolicy::origins([bad]).is_err(), "{bad}");
        }
    }
}
