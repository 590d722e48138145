//! The control API over real HTTP on 127.0.0.1: a request without the token, with a wrong
//! one, from another origin or with another Host is refused and changes nothing; malformed
//! commands get a JSON error; the page's commands reach a page (here a thread polling the
//! channel as the runner's page does) and its answers come back; serial input, serial
//! output by cursor and stop reach the runner's hooks.

use qemuweb_control::{ControlChannel, ControlServer, Hooks};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One HTTP/1.1 request; (status, content type, body).
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head += &format!("Host: {addr}\r\n");
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    s.write_all(format!("{head}\r\n{body}").as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, ctype, out[split + 4..].to_vec())
}

struct Fixture {
    server: ControlServer,
    channel: Arc<ControlChannel>,
    serial_in: Arc<Mutex<Vec<u8>>>,
    stopped: Arc<Mutex<bool>>,
}

fn fixture() -> Fixture {
    let channel = ControlChannel::new();
    let serial_in = Arc::new(Mutex::new(Vec::new()));
    let stopped = Arc::new(Mutex::new(false));
    let (si, st) = (serial_in.clone(), stopped.clone());
    let hooks = Hooks::new(
        move |b| si.lock().unwrap().extend_from_slice(b),
        move || *st.lock().unwrap() = true,
    );
    let server =
        ControlServer::start("127.0.0.1:0".parse().unwrap(), channel.clone(), hooks).unwrap();
    Fixture {
        server,
        channel,
        serial_in,
        stopped,
    }
}

impl Fixture {
    fn addr(&self) -> String {
        self.server.local_addr().to_string()
    }

    fn command(&self, body: &str) -> (u16, String, Vec<u8>) {
        request(
            &self.addr(),
            "POST",
            "/v1/command",
            &[("X-QemuWeb-Token", self.server.token())],
            body,
        )
    }
}

/// A page: answers `n` commands, each with `answer(op)`, and returns what it was asked.
fn page(
    channel: Arc<ControlChannel>,
    n: usize,
    answer: fn(&serde_json::Value) -> String,
) -> std::thread::JoinHandle<Vec<serde_json::Value>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut seen = Vec::new();
            while seen.len() < n {
                let Some(req) = channel.next_for_page(Duration::from_secs(20)).await else {
                    break;
                };
                let v: serde_json::Value = serde_json::from_str(&req).unwrap();
                let reply = answer(&v).replace("ID", &v["id"].to_string());
                channel.page_answer(reply.as_bytes()).unwrap();
                seen.push(v);
            }
            seen
        })
    })
}

#[test]
fn requests_without_the_token_or_from_elsewhere_are_refused_and_change_nothing() {
    let f = fixture();
    let addr = f.addr();
    let cmd = r#"{"cmd":"serialIn","data":"echo no\r"}"#;
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "missing X-QemuWeb-Token"),
        (
            vec![("X-QemuWeb-Token", "0123456789abcdef")],
            "wrong X-QemuWeb-Token",
        ),
        (
            vec![
                ("X-QemuWeb-Token", f.server.token()),
                ("Origin", "http://evil.example"),
            ],
            "Origin",
        ),
        (
            vec![
                ("X-QemuWeb-Token", f.server.token()),
                ("Origin", "http://127.0.0.1:1"),
            ],
            "Origin",
        ),
        (
            vec![
                ("X-QemuWeb-Token", f.server.token()),
                ("Sec-Fetch-Site", "cross-site"),
            ],
            "Sec-Fetch-Site",
        ),
    ];
    for (headers, why) in cases {
        let (status, _, body) = request(&addr, "POST", "/v1/command", &headers, cmd);
        assert_eq!(status, 403, "{headers:?}");
        assert!(
            String::from_utf8_lossy(&body)
                .to_lowercase()
                .contains(&why.to_lowercase()),
            "{why}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Another Host (DNS rebinding), even with the token.
    let (status, _, _) = request(
        &addr,
        "POST",
        "/v1/command",
        &[
            ("Host", "evil.example"),
            ("X-QemuWeb-Token", f.server.token()),
        ],
        cmd,
    );
    assert_eq!(status, 403);
    assert!(
        f.serial_in.lock().unwrap().is_empty(),
        "a refused request reached the guest"
    );
    // With the token, the same request goes through.
    let (status, _, body) = f.command(cmd);
    assert_eq!(
        (status, String::from_utf8_lossy(&body).as_ref()),
        (200, r#"{"ok":true}"#)
    );
    assert_eq!(&*f.serial_in.lock().unwrap(), b"echo no\r");
    // Not loopback: refused before binding.
    let e = ControlServer::start(
        "0.0.0.0:0".parse().unwrap(),
        ControlChannel::new(),
        Hooks::new(|_| {}, || {}),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind(), qemuweb_control::ErrorKind::NotLoopback);
}

#[test]
fn malformed_commands_get_a_json_error_and_change_nothing() {
    let f = fixture();
    for (body, status) in [
        ("not json", 400),
        (r#"{"cmd":"format"}"#, 400),
        (r#"{"cmd":"serialIn"}"#, 400),
        (r#"{"cmd":"type","text":"ü"}"#, 400),
        (r#"{"cmd":"keys","keys":["ControlLeft","Del"]}"#, 400),
    ] {
        let (got, ctype, reply) = f.command(body);
        assert_eq!(got, status, "{body}");
        assert_eq!(ctype, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "malformed", "{body}");
    }
    let (status, _, _) = request(
        &f.addr(),
        "GET",
        "/v1/command",
        &[("X-QemuWeb-Token", f.server.token())],
        "",
    );
    assert_eq!(status, 405);
    let big = format!(r#"{{"cmd":"serialIn","data":"{}"}}"#, "x".repeat(300 << 10));
    let (status, _, _) = f.command(&big);
    assert!(status == 413 || status == 400, "{status}");
    assert!(f.serial_in.lock().unwrap().is_empty());
    assert!(!*f.stopped.lock().unwrap());
}

#[test]
fn page_commands_reach_the_page_and_serial_and_stop_reach_the_runner() {
    let f = fixture();
    let page = page(f.channel.clone(), 5, |v| match v["op"].as_str().unwrap() {
        "screenshot" => r#"{"id":ID,"ok":true,"png":"iVBORw0KGgo="}"#.into(),
        "move" if v["x"] == 9999 => {
            r#"{"id":ID,"ok":false,"code":"out-of-order","message":"no display"}"#.into()
        }
        _ => r#"{"id":ID,"ok":true}"#.into(),
    });
    let (status, _, _) = f.command(r#"{"cmd":"type","text":"Hi\n"}"#);
    assert_eq!(status, 200);
    let (status, _, _) = f.command(r#"{"cmd":"keys","keys":["ControlLeft","AltLeft","Delete"]}"#);
    assert_eq!(status, 200);
    let (status, _, _) = f.command(r#"{"cmd":"click","x":10,"y":20,"button":"right"}"#);
    assert_eq!(status, 200);
    let (status, ctype, png) = f.command(r#"{"cmd":"screenshot"}"#);
    assert_eq!((status, ctype.as_str()), (200, "image/png"));
    assert_eq!(&png[..4], b"\x89PNG");
    let (status, _, body) = f.command(r#"{"cmd":"move","x":9999,"y":1}"#);
    assert_eq!(status, 409);
    assert!(String::from_utf8_lossy(&body).contains("out-of-order"));
    let seen = page.join().unwrap();
    let ops: Vec<&str> = seen.iter().map(|v| v["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["input", "input", "click", "screenshot", "move"]);
    // "Hi\n": Shift, H, i, Enter as key events.
    assert_eq!(seen[0]["events"].as_array().unwrap().len(), 8);
    assert_eq!(
        seen[1]["events"][5],
        serde_json::json!({"type": "key", "code": "ControlLeft", "down": false})
    );
    assert_eq!(seen[2]["button"], "right");

    f.channel.serial_output(b"QEMUWEB-GUEST x86 v1\r\n> ");
    let (_, _, body) = f.command(r#"{"cmd":"serialOut","since":0}"#);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"], "QEMUWEB-GUEST x86 v1\r\n> ");
    let cursor = v["cursor"].as_u64().unwrap();
    f.channel.serial_output(b"more");
    let (_, _, body) = f.command(&format!(r#"{{"cmd":"serialOut","since":{cursor}}}"#));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["data"].as_str(), v["lost"].as_u64()),
        (Some("more"), Some(0))
    );

    let (status, _, _) = f.command(r#"{"cmd":"stop"}"#);
    assert_eq!(status, 200);
    assert!(*f.stopped.lock().unwrap());
    // After stop, page commands end at once.
    let (status, _, body) = f.command(r#"{"cmd":"screenshot"}"#);
    assert_eq!(status, 410, "{}", String::from_utf8_lossy(&body));
}
