//! Shared helpers: running the built `qemuweb` (under the watchdog), and curl.
#![allow(dead_code)]

use qemuweb_testkit::watchdog::{watch, Watched};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The built binary.
pub const QEMUWEB: &str = env!("CARGO_BIN_EXE_qemuweb");

/// `qemuweb serve DIR --port 0 --quiet` plus `extra`, under the watchdog (at most ten
/// minutes; killed with its group when dropped); returns it and the base URL (ending in
/// `/`) it printed.
pub fn serve(dir: &Path, extra: &[&str]) -> (Watched, String) {
    let mut cmd = Command::new(QEMUWEB);
    cmd.arg("serve")
        .arg(dir)
        .args(["--port", "0", "--quiet"])
        .args(extra);
    let server = watch("qemuweb serve", &mut cmd, Duration::from_secs(600));
    let line = server.wait_for_line("http://", Duration::from_secs(30));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    (server, url)
}

/// One HTTP answer as curl saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `curl -s -i --path-as-is ARGS URL` and splits the answer.
pub fn curl(args: &[&str], url: &str) -> Answer {
    let out = Command::new("curl")
        .args(["-s", "-i", "--path-as-is", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {:?}",
        out.status
    );
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body,
    }
}

/// Runs a program, panicking with its stderr if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The guest-visible bytes of an image, by `qemu-img convert -O raw`.
pub fn qemu_img_raw(image: &Path, dir: &Path) -> Vec<u8> {
    let raw = dir.join("oracle.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-O", "raw"])
        .arg(image)
        .arg(&raw));
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    bytes
}

/// The DOM `url` ends with in headless Chromium after `budget_ms` of virtual time.
pub fn chromium_dom(url: &str, budget_ms: u64) -> String {
    qemuweb_headless::dump_dom(url, std::time::Duration::from_millis(budget_ms)).unwrap()
}
