//! `qemuweb-test-server --root DIR [--port N] [--port-file FILE]`: serves DIR with the test
//! kit's server (Range, ETags, COOP/COEP, CORS for every origin, a request log at
//! `/__log`, scripted misbehaviour under `/__mis/`) on 127.0.0.1 until killed, and prints
//! its URL on the first line of standard output (and writes it to FILE, if given).

use clap::Parser;
use qemuweb_testkit::server::TestServer;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Serves a directory on 127.0.0.1 for tests (see the qemuweb-testkit crate).
#[derive(Debug, Parser)]
#[command(name = "qemuweb-test-server", version)]
struct Args {
    /// The directory to serve.
    #[arg(long)]
    root: PathBuf,
    /// The TCP port (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Also write the URL to this file (written whole, by rename).
    #[arg(long)]
    port_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let server = match TestServer::start_on(&args.root, args.port) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "qemuweb-test-server: cannot serve {}: {e}",
                args.root.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let url = server.url();
    if let Some(f) = args.port_file {
        // Write then rename, so a watcher never reads a half-written file.
        let tmp = f.with_extension("tmp");
        if let Err(e) =
            std::fs::write(&tmp, format!("{url}\n")).and_then(|_| std::fs::rename(&tmp, &f))
        {
            eprintln!("qemuweb-test-server: cannot write {}: {e}", f.display());
            return ExitCode::FAILURE;
        }
    }
    println!("{url}");
    let _ = std::io::stdout().flush();
    server.wait();
    ExitCode::SUCCESS
}
