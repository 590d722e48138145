//! The `Host` check against DNS rebinding: a request must name this server.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, Request, Response, StatusCode};

use crate::body::{text, Body};
use crate::guard::{Check, Gate, GateLayer};

/// The `Host` values (`name:port`, lower case) a server answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts(Arc<Vec<String>>);

impl AllowedHosts {
    /// The names of `addr`: for a loopback or unspecified address `127.0.0.1:PORT`,
    /// `localhost:PORT` and `[::1]:PORT`; for another address that address and port
    /// (other names a user reaches the server by are added with [`with`](Self::with)).
    ///
    /// ```
    /// use qemuweb_http::AllowedHosts;
    /// let hosts = AllowedHosts::for_addr("127.0.0.1:8080".parse().unwrap());
    /// assert!(hosts.allows("localhost:8080"));
    /// assert!(hosts.allows("[::1]:8080"));
    /// assert!(!hosts.allows("evil.example:8080"));
    /// assert!(!hosts.allows("127.0.0.1:8081"));
    /// ```
    pub fn for_addr(addr: SocketAddr) -> Self {
        let port = addr.port();
        let mut list = Vec::new();
        if addr.ip().is_loopback() || addr.ip().is_unspecified() {
            for name in ["127.0.0.1", "localhost", "[::1]"] {
                list.push(format!("{name}:{port}"));
            }
        }
        if !addr.ip().is_unspecified() {
            list.push(addr.to_string());
        }
        let mut hosts = AllowedHosts(Arc::new(Vec::new()));
        for h in list {
            hosts = hosts.with(&h);
        }
        hosts
    }

    /// These hosts and `host` (`name:port`; on port 80 the bare name is accepted too).
    ///
    /// ```
    /// use qemuweb_http::AllowedHosts;
    /// let hosts = AllowedHosts::for_addr("127.0.0.1:8080".parse().unwrap()).with("Box.Local:8080");
    /// assert!(hosts.allows("box.local:8080"));
    /// ```
    pub fn with(self, host: &str) -> Self {
        let mut list = Arc::unwrap_or_clone(self.0);
        let host = host.to_ascii_lowercase();
        if let Some(bare) = host.strip_suffix(":80") {
            list.push(bare.to_string());
        }
        if !list.contains(&host) {
            list.push(host);
        }
        AllowedHosts(Arc::new(list))
    }

    /// Whether a request naming `host` is for this server.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        self.0.contains(&host)
    }

    /// The origins of pages this server serves (`http://HOST` for each host).
    ///
    /// ```
    /// use qemuweb_http::AllowedHosts;
    /// let hosts = AllowedHosts::for_addr("127.0.0.1:8080".parse().unwrap());
    /// assert!(hosts.origins().contains(&"http://localhost:8080".to_string()));
    /// ```
    pub fn origins(&self) -> Vec<String> {
        self.0.iter().map(|h| format!("http://{h}")).collect()
    }

    /// The hosts, for messages.
    pub fn list(&self) -> &[String] {
        &self.0
    }
}

impl Check for AllowedHosts {
    fn check<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
        match host {
            Some(h) if self.allows(&h) => None,
            other => Some(text(
                StatusCode::FORBIDDEN,
                &format!(
                    "refused: Host {:?} is not this server (DNS rebinding protection); use one of: {}",
                    other.unwrap_or_default(),
                    self.list().join(", ")
                ),
            )),
        }
    }
}

/// A service refusing (`403`) requests whose `Host` is not in [`AllowedHosts`].
pub type HostCheck<S> = Gate<AllowedHosts, S>;

/// The layer of [`HostCheck`]: `HostCheckLayer::new(AllowedHosts::for_addr(addr))`.
pub type HostCheckLayer = GateLayer<AllowedHosts>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{get, serve_files, site};

    #[test]
    fn a_foreign_host_is_refused() {
        let (_tmp, root, _) = site();
        let server = serve_files(&root, |addr| {
            HostCheckLayer::new(AllowedHosts::for_addr(addr))
        });
        let addr = server.local_addr();
        let port = addr.port();
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            format!("LOCALHOST:{port}"),
        ] {
            assert_eq!(get(addr, "/", &[("Host", &host)]).status, 200, "{host}");
        }
        for host in [
            format!("evil.example:{port}"),
            "evil.example".into(),
            format!("127.0.0.1:{}", port.wrapping_add(1)),
            "127.0.0.1".into(),
            format!("localhost.evil.example:{port}"),
        ] {
            let a = get(addr, "/sub/f.bin", &[("Host", &host)]);
            assert_eq!(a.status, 403, "{host}");
            let body = String::from_utf8_lossy(&a.body);
            assert!(body.contains("DNS rebinding"), "{body}");
            assert!(a.body.len() < 300, "no file content");
        }
    }

    #[test]
    fn other_addresses() {
        let any = AllowedHosts::for_addr("0.0.0.0:80".parse().unwrap());
        assert!(any.allows("localhost") && any.allows("127.0.0.1:80"));
        assert!(!any.allows("0.0.0.0:80"));
        let lan = AllowedHosts::for_addr("192.0.2.7:8080".parse().unwrap());
        assert!(lan.allows("192.0.2.7:8080") && !lan.allows("localhost:8080"));
    }
}
