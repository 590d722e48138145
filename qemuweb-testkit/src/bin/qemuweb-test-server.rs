//! `qemuweb-test-server --root DIR [--port N] [--port-file FILE]`: serves DIR with the test
//! server (Range, ETag, CORS, scripted misbehaviour) on 127.0.0.1 until killed, and prints
//! its URL on the first line of standard output (and writes it to FILE, if given).

use qemuweb_testkit::server::TestServer;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: qemuweb-test-server --root DIR [--port N] [--port-file FILE]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut root: Option<PathBuf> = None;
    let mut port_file: Option<PathBuf> = None;
    let mut port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = args.next().map(PathBuf::from),
            "--port-file" => port_file = args.next().map(PathBuf::from),
            "--port" => match args.next().and_then(|p| p.parse().ok()) {
                Some(p) => port = p,
                None => return usage(),
            },
            "-h" | "--help" => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let Some(root) = root else { return usage() };
    let server = match TestServer::start_on(&root, port) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qemuweb-test-server: cannot serve {}: {e}", root.display());
            return ExitCode::FAILURE;
        }
    };
    let url = server.url();
    if let Some(f) = port_file {
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
