//! RemoteTransport natively: the `frame-server` binary and in-process peers over real
//! WebSockets on 127.0.0.1.
#![cfg(not(target_arch = "wasm32"))]

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use futures::executor::block_on;
use qemuweb_sidecar::synthetic::SyntheticScreen;
use qemuweb_sidecar::*;
use qemuweb_testkit::watchdog::{watch, Watched};

/// A `frame-server` process under the watchdog (five minutes at most; its group is killed
/// on drop).
struct Server {
    _process: Watched,
    url: String,
}

impl Server {
    fn start() -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_frame-server"));
        let process = watch("frame-server", &mut cmd, Duration::from_secs(300));
        let line = process.wait_for_line("frame-server listening on ", Duration::from_secs(30));
        let url = line
            .lines()
            .find_map(|l| l.trim().strip_prefix("frame-server listening on "))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server {
            _process: process,
            url,
        }
    }
}

fn checked() -> RemoteOptions {
    RemoteOptions {
        checksums: true,
        ..RemoteOptions::default()
    }
}

/// Receives until frame `until`, checking every screen byte for byte against a replica
/// of the server's stream; returns the last sequence and the sizes seen.
fn follow(
    rx: &mut RemoteTransport,
    replica: &mut SyntheticScreen,
    until: u64,
    sizes: &mut Vec<(u32, u32)>,
) -> u64 {
    let mut last = 0;
    while last < until {
        let meta = rx
            .receive_timeout(Duration::from_secs(20))
            .unwrap()
            .expect("a frame within 20 s");
        assert!(meta.sequence > last);
        last = meta.sequence;
        replica.advance_to(last);
        assert_eq!((meta.width, meta.height), replica.size());
        assert!(rx.screen() == replica.data(), "frame {last} differs");
        if !sizes.contains(&replica.size()) {
            sizes.push(replica.size());
        }
    }
    last
}

#[test]
fn frame_server_stream_arrives_byte_for_byte_across_a_reconnect_and_a_resize() {
    let server = Server::start();
    let url = format!(
        "{}/stream/native?frames=300&fps=400&width=160&height=100&seed=9&resize=200:96x72",
        server.url
    );
    let mut replica = SyntheticScreen::new(9, 160, 100).with_resize(200, 96, 72);
    let mut rx = RemoteTransport::receiver(&url, checked());
    block_on(rx.connect()).unwrap();
    let mut sizes = Vec::new();
    let first = follow(&mut rx, &mut replica, 80, &mut sizes);
    rx.close(Duration::from_secs(1)).unwrap();
    assert_eq!(
        rx.receive_timeout(Duration::from_millis(1))
            .unwrap_err()
            .kind(),
        ErrorKind::NotConnected
    );
    std::thread::sleep(Duration::from_millis(50));
    block_on(rx.connect()).unwrap();
    let meta = rx
        .receive_timeout(Duration::from_secs(20))
        .unwrap()
        .unwrap();
    assert!(meta.keyframe, "a new connection starts with a keyframe");
    assert!(meta.sequence > first);
    replica.advance_to(meta.sequence);
    assert!(rx.screen() == replica.data());
    follow(&mut rx, &mut replica, 300, &mut sizes);
    assert_eq!(sizes, vec![(160, 100), (96, 72)]);
    let stats = rx.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(rx.frame().unwrap().data, replica.data());
}

#[test]
fn a_slow_receiver_makes_the_sender_drop_to_the_newest_frame_not_queue() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    const FRAMES: u64 = 300;
    let sender = std::thread::spawn(move || {
        let (ws, _) = RemoteTransport::accept(listener.accept().unwrap().0).unwrap();
        let mut tx = RemoteTransport::accepted_sender(ws, RemoteOptions::default());
        block_on(tx.connect()).unwrap();
        let mut screen = SyntheticScreen::new(3, 640, 480);
        block_on(tx.send(&screen.frame())).unwrap();
        for _ in 1..FRAMES {
            // send() never waits for the slow receiver.
            block_on(tx.send(&screen.step())).unwrap();
        }
        let at_end = tx.stats();
        assert!(tx.wait_acked(Duration::from_secs(30)).unwrap());
        tx.close(Duration::from_secs(5)).unwrap();
        (at_end, tx.stats())
    });
    let mut rx = RemoteTransport::receiver(url, checked());
    block_on(rx.connect()).unwrap();
    let mut replica = SyntheticScreen::new(3, 640, 480);
    let mut received = 0;
    loop {
        let meta = block_on(rx.receive()).unwrap();
        received += 1;
        replica.advance_to(meta.sequence);
        assert!(rx.screen() == replica.data(), "frame {}", meta.sequence);
        if meta.sequence == FRAMES {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (at_end, stats) = sender.join().unwrap();
    assert!(
        at_end.sent < FRAMES,
        "all {FRAMES} sends returned before the receiver had them: {at_end:?}"
    );
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.sent + stats.dropped, FRAMES);
    assert_eq!(stats.sent, received);
    assert_eq!(stats.last_acked, Some(FRAMES));
    // The closed connection ends the receiver with a typed error.
    assert_eq!(
        block_on(rx.receive()).unwrap_err().kind(),
        ErrorKind::Connection
    );
}

#[test]
fn the_sink_checks_frames_sent_to_it_and_acknowledges_its_screen_checksum() {
    let server = Server::start();
    let mut tx = RemoteTransport::sender(format!("{}/sink", server.url), RemoteOptions::default());
    block_on(tx.connect()).unwrap();
    let mut screen = SyntheticScreen::new(11, 200, 150).with_resize(40, 120, 90);
    block_on(tx.send(&screen.frame())).unwrap();
    for _ in 1..60 {
        block_on(tx.send(&screen.step())).unwrap();
        if screen.sequence() % 10 == 0 {
            assert!(tx.wait_acked(Duration::from_secs(10)).unwrap());
            let stats = tx.stats();
            assert_eq!(stats.last_acked, Some(screen.sequence()));
            assert_eq!(
                stats.last_ack_checksum,
                Some(crc32fast::hash(screen.data()))
            );
        }
    }
    tx.close(Duration::from_secs(5)).unwrap();
    // A wrong format is refused by the sender's negotiation, as a typed error.
    let mut rgb565 = RemoteTransport::sender(
        format!("{}/sink", server.url),
        RemoteOptions {
            source_format: PixelFormat::Compressed,
            ..RemoteOptions::default()
        },
    );
    assert_eq!(
        block_on(rgb565.connect()).unwrap_err().kind(),
        ErrorKind::Negotiation
    );
}

#[test]
fn handshake_failures_are_typed_errors() {
    let server = Server::start();
    // The stream is RGBA; a receiver taking only YUV420 is refused.
    let mut rx = RemoteTransport::receiver(
        format!("{}/stream/refuse", server.url),
        RemoteOptions {
            accept: vec![PixelFormat::Yuv420],
            ..RemoteOptions::default()
        },
    );
    assert_eq!(
        block_on(rx.connect()).unwrap_err().kind(),
        ErrorKind::Negotiation
    );
    // Nothing listening, and not a WebSocket URL.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut rx = RemoteTransport::receiver(url, RemoteOptions::default());
    assert_eq!(
        block_on(rx.connect()).unwrap_err().kind(),
        ErrorKind::Connection
    );
    let mut rx = RemoteTransport::receiver("http://127.0.0.1:1/", RemoteOptions::default());
    assert_eq!(
        block_on(rx.connect()).unwrap_err().kind(),
        ErrorKind::Connection
    );
}

#[test]
fn a_peer_sending_garbage_gets_typed_errors_not_panics() {
    use tungstenite::Message;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let peer = std::thread::spawn(move || {
        let (mut ws, _) = RemoteTransport::accept(listener.accept().unwrap().0).unwrap();
        let _hello = ws.read().unwrap();
        let welcome = wire::WireMessage::Welcome(wire::Welcome {
            version: wire::WIRE_VERSION,
            format: PixelFormat::Rgba,
            checksums: false,
        });
        ws.send(Message::binary(welcome.encode())).unwrap();
        // A frame header claiming a payload it does not have.
        let mut bad = wire::WireMessage::Frame(wire::WireFrame {
            metadata: FrameMetadata::keyframe(1, 0.0, 2, 2, PixelFormat::Rgba),
            base: 0,
            checksum: None,
            payload: &[0; 16],
        })
        .encode();
        bad.truncate(bad.len() - 3);
        ws.send(Message::binary(bad)).unwrap();
        let _ = ws.read();
    });
    let mut rx = RemoteTransport::receiver(url, RemoteOptions::default());
    block_on(rx.connect()).unwrap();
    assert_eq!(
        block_on(rx.receive()).unwrap_err().kind(),
        ErrorKind::Malformed
    );
    assert!(!rx.is_connected(), "an error drops the connection");
    drop(rx);
    peer.join().unwrap();
}
