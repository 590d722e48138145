//! Test helpers: a server on a free loopback port and a raw HTTP/1.1 client, so tests
//! can send exactly the headers they mean (a foreign `Host`, a wrong `Origin`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::{bind_loopback, Server, ServerConfig};

/// Serves `service` (made with the bound address) on a free port of 127.0.0.1.
pub(crate) fn serve<S, B>(make: impl FnOnce(SocketAddr) -> S) -> Server
where
    S: tower::Service<
            http::Request<crate::RequestBody>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    let listener = bind_loopback(0).unwrap();
    let addr = listener.local_addr().unwrap();
    Server::start(listener, ServerConfig::default(), make(addr)).unwrap()
}

/// Serves the files of `root` behind the layer `make` builds for the bound address.
pub(crate) fn serve_files<L>(root: &std::path::Path, make: impl FnOnce(SocketAddr) -> L) -> Server
where
    L: tower::Layer<crate::StaticFiles>,
    L::Service: tower::Service<
            http::Request<crate::RequestBody>,
            Response = http::Response<crate::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<crate::RequestBody>>>::Future: Send + 'static,
{
    let files = crate::StaticFiles::new(root).unwrap();
    serve(|addr| make(addr).layer(files))
}

/// An answer as the client read it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends one request (`Host: ADDR` unless `headers` has one, `Connection: close`) and
/// reads the answer until the server closes (also after a connection cut short).
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(out[..split].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    Answer {
        status,
        head,
        body: out[split + 4..].to_vec(),
    }
}

/// `GET` with `headers`.
pub(crate) fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    request(addr, "GET", path, headers)
}

/// A directory with `sub/f.bin` (5000 patterned bytes), `index.html`, `a.wasm`, a
/// subdirectory with an index, symbolic links inside and out, and a secret beside it.
pub(crate) fn site() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(tmp.path().join("secret.txt"), "secret\n").unwrap();
    std::fs::write(root.join("index.html"), "<p>hi</p>\n").unwrap();
    std::fs::write(root.join("a.wasm"), "a.wasm").unwrap();
    std::fs::write(root.join("sub/index.html"), "sub index\n").unwrap();
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("sub/f.bin"), &data).unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("out.txt")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), root.join("outdir")).unwrap();
    std::os::unix::fs::symlink("sub/f.bin", root.join("in.bin")).unwrap();
    (tmp, root, data)
}
