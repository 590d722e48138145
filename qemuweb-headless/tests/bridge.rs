//! Issue 13: the runner's serial bridge belongs to the runner's own page. A page of
//! another origin (another port of 127.0.0.1), open in the same browser while a VM runs,
//! tries to read the bridge, type into the terminal and end the run; every attempt fails
//! and nothing changes. Requests without the token, with a wrong one, with a foreign
//! `Origin` or a foreign `Host` are refused (403) too.
//!
//! Needs the runtime's web bundle and v86 from `e2e/node_modules` (scripts/test runs it
//! after the e2e step): `cargo test -p qemuweb-headless --test bridge -- --ignored`.
#![cfg(not(target_arch = "wasm32"))]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qemuweb_headless::{dump_dom, run, Console, Outcome, RunnerOptions};

/// A writer the test can read from.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<u8>>>);

impl Write for Seen {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn wait_for(&self, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.text().contains(what) {
            assert!(
                Instant::now() < deadline,
                "no {what:?} in {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One raw request to the runner; returns the status.
fn raw(port: u16, head: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)[9..12].parse().unwrap()
}

const ATTACK: &str = r#"<!doctype html><body>waiting</body><script>
(async () => {
  const target = new URLSearchParams(location.search).get('target');
  const within = (p) => Promise.race([p, new Promise((r) => setTimeout(() => r('timeout'), 3000))]);
  const attempt = async (name, url, init) => {
    try {
      const r = await within(fetch(url, init));
      if (r === 'timeout') return `${name}: timeout`;
      if (r.type === 'opaque') return `${name}: opaque`;
      return `${name}: READ ${r.status} ${await r.text()}`;
    } catch (e) { return `${name}: blocked ${e.name}`; }
  };
  const lines = [];
  lines.push(await attempt('config', target + '/config.json'));
  lines.push(await attempt('read-serial', target + '/serial/in'));
  lines.push(await attempt('read-serial-no-cors', target + '/serial/in', { mode: 'no-cors' }));
  lines.push(await attempt('type', target + '/serial/out', { method: 'POST', mode: 'no-cors', body: 'INJECTED\x1b]0;pwned\x07' }));
  lines.push(await attempt('end', target + '/event', { method: 'POST', mode: 'no-cors', body: '{"type":"exited"}' }));
  lines.push(await attempt('fatal', target + '/event', { method: 'POST', mode: 'no-cors', body: '{"type":"error","fatal":true,"code":"x","message":"PWNED"}' }));
  document.body.textContent = lines.join('\n');
})();
</script>"#;

#[test]
#[ignore = "needs the web bundle and e2e/node_modules (run by scripts/test after the e2e step)"]
fn another_origin_cannot_use_the_runners_bridge() {
    let tmp = tempfile::tempdir().unwrap();
    let guests = qemuweb_guests::write_guest_images(tmp.path(), None).unwrap();
    let profile = tmp.path().join("profile");
    let mut opts = RunnerOptions::new(qemuweb_config::LINUX_I386_PC_NOGRAPHIC);
    opts.disk = Some(guests.x86_qcow2.display().to_string());
    opts.timeout = Some(Duration::from_secs(180));
    opts.user_data_dir = Some(profile.clone());
    let (input, mut typing) = std::io::pipe().unwrap();
    let seen = Seen::default();
    let console = Console {
        input: Box::new(input),
        output: Box::new(seen.clone()),
    };
    let runner = std::thread::spawn(move || run(&opts, console));

    seen.wait_for(qemuweb_guests::PROMPT, Duration::from_secs(90));
    let port: u16 = std::fs::read_to_string(profile.join("qemuweb-headless-port"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let target = format!("http://127.0.0.1:{port}");

    // The attacker's page, on another origin.
    let site = tmp.path().join("attacker");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("attack.html"), ATTACK).unwrap();
    let listener = qemuweb_http::bind_loopback(0).unwrap();
    let attacker = qemuweb_http::Server::start(
        listener,
        qemuweb_http::ServerConfig::default(),
        qemuweb_http::StaticFiles::new(&site).unwrap(),
    )
    .unwrap();
    let dom = dump_dom(
        &format!("{}/attack.html?target={target}", attacker.url()),
        Duration::from_secs(20),
    )
    .unwrap();
    // What it can read: nothing (no-cors attempts end opaque or blocked by CORP).
    for line in [
        "config: blocked TypeError",
        "read-serial: blocked TypeError",
    ] {
        assert!(dom.contains(line), "{line:?} in {dom}");
    }
    for name in ["read-serial-no-cors", "type", "end", "fatal"] {
        let line = dom
            .lines()
            .find(|l| l.contains(&format!("{name}: ")))
            .unwrap_or_default();
        assert!(
            line.ends_with("opaque") || line.contains("blocked"),
            "{name}: {dom}"
        );
    }
    assert!(!dom.contains("READ") && !dom.contains("timeout"), "{dom}");

    // Without the page's token, or from elsewhere, the bridge refuses; it ends nothing.
    let exited = r#"{"type":"exited"}"#;
    for extra in [
        String::new(),
        "X-QemuWeb-Token: 0123\r\n".to_string(),
        format!("Origin: http://127.0.0.1:{}\r\n", port.wrapping_add(1)),
    ] {
        let head = format!(
            "POST /event HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{extra}\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{exited}",
            exited.len()
        );
        assert_eq!(raw(port, &head), 403, "{extra:?}");
    }
    let rebinding = format!(
        "GET /config.json HTTP/1.1\r\nHost: attacker.example:{port}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(port, &rebinding), 403);

    // Nothing reached the terminal, the run goes on and the guest still gets our typing.
    std::thread::sleep(Duration::from_secs(1));
    assert!(!runner.is_finished(), "the run ended");
    typing.write_all(b"echo still mine\n").unwrap();
    seen.wait_for("still mine\r\n", Duration::from_secs(30));
    let text = seen.text();
    assert!(
        !text.contains("INJECTED") && !text.contains("pwned"),
        "{text}"
    );
    drop(typing);
    let outcome = runner.join().unwrap().unwrap();
    assert_eq!(outcome, Outcome::InputClosed);
}
