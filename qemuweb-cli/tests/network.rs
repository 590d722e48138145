//! `qemuweb network` run for real: what the command adds to `qemuweb-relay` (whose own
//! tests carry guests' connections through it): its flags, 127.0.0.1 only, the URL and
//! token it prints, and the upgrade refused without the token or from another origin.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use qemuweb_testkit::watchdog::watch;
use std::process::Command;
use std::time::Duration;

/// `curl` of the relay's endpoint as a WebSocket upgrade, with `headers`.
fn upgrade(url: &str, headers: &[&str]) -> u16 {
    let mut args = vec![
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "--max-time",
        "2",
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(&args)
        .arg(url)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn the_relay_listens_on_loopback_prints_its_token_and_checks_it() {
    let mut cmd = Command::new(QEMUWEB);
    cmd.args(["network", "--listen", "127.0.0.1:0", "--allow-loopback"]);
    let relay = watch("qemuweb network", &mut cmd, Duration::from_secs(120));
    let line = relay.wait_for_line(" token ", Duration::from_secs(30));
    assert!(
        line.starts_with(
            "Network default (10.0.2.0/24, gateway 10.0.2.2) relayed at ws://127.0.0.1:"
        ),
        "{line}"
    );
    let words: Vec<&str> = line.split_whitespace().collect();
    let ws = words[words.len() - 3];
    let token = words[words.len() - 1];
    assert_eq!(token.len(), 64, "{line}");
    let http = ws.replacen("ws://", "http://", 1);
    assert_eq!(upgrade(&http, &[]), 403, "no token");
    assert_eq!(upgrade(&format!("{http}?token=0"), &[]), 403, "wrong token");
    let good = format!("{http}?token={token}");
    assert_eq!(
        upgrade(&good, &["Origin: http://evil.example"]),
        403,
        "another origin"
    );
    assert_eq!(upgrade(&good, &["Origin: http://127.0.0.1:9"]), 101);
}

#[test]
fn what_it_cannot_serve_is_refused_before_it_listens() {
    let cases: [(&[&str], &str); 4] = [
        (&["--listen", "0.0.0.0:0"], "127.0.0.1 only"),
        (
            &["--network", "isolated", "--listen", "127.0.0.1:0"],
            "isolated",
        ),
        (&["--network", "nope", "--listen", "127.0.0.1:0"], "nope"),
        (
            &["--listen", "127.0.0.1:0", "--forward", "8080:not/a/name:80"],
            "8080:not/a/name:80",
        ),
    ];
    for (args, says) in cases {
        let out = Command::new(QEMUWEB)
            .arg("network")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
