//! `qemuweb serve`: a static file server for browser VMs, built from `qemuweb-http`.
//!
//! Every answer carries the headers a cross-origin-isolated page needs
//! (`Cross-Origin-Opener-Policy: same-origin`, `Cross-Origin-Embedder-Policy:
//! require-corp`, and `Cross-Origin-Resource-Policy`), so the QEMU worker can use
//! `SharedArrayBuffer`. Disk images are read with HTTP Range requests (`206`, `416`, strong
//! `ETag`s with `If-Range`, `If-None-Match`, `If-Match`); paths that leave the root, also
//! through symbolic links, are refused (see `qemuweb_http::StaticFiles`).
//!
//! Safe by default: the server listens on 127.0.0.1, sends no CORS headers (pages of other
//! origins, including other ports of 127.0.0.1, cannot read its files), and refuses
//! requests whose `Host` is not its own address (DNS rebinding). Other origins are let in
//! by name ([`ServeOptions::cors`] with `CorsPolicy::Origins`, the CLI's `--cors-origin`),
//! or all of them only by `CorsPolicy::Any` (`--cors-any`).

use crate::error::{CliError, Result};
use qemuweb_http::{
    isolation, AllowedHosts, CorsPolicy, HostCheckLayer, RequestLog, RequestLogLayer, ServerConfig,
    StaticFiles,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use tower::ServiceBuilder;

/// What `qemuweb serve` serves, and how.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The directory to serve.
    pub root: PathBuf,
    /// The address to listen on (`127.0.0.1:8080` on the command line).
    pub addr: SocketAddr,
    /// Which other origins may read the files (none by default).
    pub cors: CorsPolicy,
    /// Further `Host` values to answer to (`name:port`), beyond the bound address.
    pub allow_hosts: Vec<String>,
    /// Do not log requests on stderr.
    pub quiet: bool,
}

impl ServeOptions {
    /// Serving `root` on `addr`, no CORS, logging requests.
    pub fn new(root: impl Into<PathBuf>, addr: SocketAddr) -> Self {
        ServeOptions {
            root: root.into(),
            addr,
            cors: CorsPolicy::Off,
            allow_hosts: Vec::new(),
            quiet: false,
        }
    }
}

/// Binds and starts the server (in the background; [`qemuweb_http::Server::wait`] blocks).
///
/// ```no_run
/// use qemuweb_cli::serve::{start, ServeOptions};
/// let server = start(&ServeOptions::new("site", "127.0.0.1:0".parse().unwrap()))?;
/// println!("{}", server.url());
/// server.wait();
/// # Ok::<(), qemuweb_cli::CliError>(())
/// ```
///
/// # Errors
///
/// [`CliError::Io`] when the root is not a directory or the address cannot be bound.
pub fn start(opts: &ServeOptions) -> Result<qemuweb_http::Server> {
    let files = StaticFiles::new(&opts.root).map_err(|e| CliError::io(&opts.root, io_error(e)))?;
    let listener = std::net::TcpListener::bind(opts.addr)
        .map_err(|e| CliError::io(opts.addr.to_string(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::io("listener", e))?;
    let hosts = opts
        .allow_hosts
        .iter()
        .fold(AllowedHosts::for_addr(addr), |h, extra| h.with(extra));
    let service = ServiceBuilder::new()
        .layer(RequestLogLayer::new(RequestLog::new()).print(!opts.quiet))
        .layer(HostCheckLayer::new(hosts))
        .layer(isolation(opts.cors.corp()))
        .option_layer(opts.cors.layer())
        .service(files);
    qemuweb_http::Server::start(listener, ServerConfig::default(), service)
        .map_err(|e| CliError::io(addr.to_string(), io_error(e)))
}

fn io_error(e: qemuweb_http::HttpError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
