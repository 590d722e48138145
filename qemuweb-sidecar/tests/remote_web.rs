//! RemoteTransport in headless Chromium against the native peer: the `frame-server`
//! binary on 127.0.0.1 streams frames (keyframes, deltas with dirty rectangles, a
//! resize) to the page, which checks every screen byte for byte against a replica of
//! the stream and the canvas (through `CanvasPresenter`) against the screen, across a
//! reconnect; and the page sends frames to the server's sink, whose acknowledgements
//! carry the checksum of the screen it rebuilt, also when a busy socket makes the page
//! drop to the newest frame.
//!
//! The server's URL is compiled in from `QEMUWEB_FRAME_SERVER` (scripts/test starts
//! `frame-server` and sets it):
//! `QEMUWEB_FRAME_SERVER=ws://127.0.0.1:PORT CHROMEDRIVER=/usr/bin/chromedriver
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
//! cargo test -p qemuweb-sidecar --target wasm32-unknown-unknown --test remote_web`
#![cfg(target_arch = "wasm32")]

use qemuweb_sidecar::synthetic::SyntheticScreen;
use qemuweb_sidecar::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn server() -> &'static str {
    match option_env!("QEMUWEB_FRAME_SERVER") {
        Some(url) => url,
        None => panic!(
            "QEMUWEB_FRAME_SERVER (the frame-server's ws:// URL) must be set when building this test"
        ),
    }
}

#[wasm_bindgen(inline_js = r#"
export function make_canvas() {
    const c = document.createElement('canvas');
    document.body.appendChild(c);
    return c;
}
export function canvas_pixels(c) {
    const ctx = c.getContext('2d');
    return new Uint8Array(ctx.getImageData(0, 0, c.width, c.height).data.buffer);
}
export function unique() { return Math.random().toString(36).slice(2); }
"#)]
extern "C" {
    fn make_canvas() -> web_sys::HtmlCanvasElement;
    fn canvas_pixels(c: &web_sys::HtmlCanvasElement) -> Vec<u8>;
    fn unique() -> String;
}

fn checked() -> RemoteOptions {
    RemoteOptions {
        checksums: true,
        ..RemoteOptions::default()
    }
}

/// Receives until frame `until`: every screen equals the replica's, every change is
/// drawn and the canvas equals the screen.
async fn follow(
    rx: &mut RemoteTransport,
    replica: &mut SyntheticScreen,
    presenter: &mut CanvasPresenter,
    until: u64,
    sizes: &mut Vec<(u32, u32)>,
) -> u64 {
    let mut last = 0;
    while last < until {
        let change = rx.receive().await.expect("a frame from the frame-server");
        assert!(change.sequence > last);
        last = change.sequence;
        replica.advance_to(last);
        assert_eq!((change.width, change.height), replica.size());
        assert!(
            rx.screen() == replica.data(),
            "frame {last} differs from the server's"
        );
        presenter.present(&change, rx.screen()).unwrap();
        if !sizes.contains(&replica.size()) {
            sizes.push(replica.size());
        }
        if last % 16 == 0 || last >= until {
            assert!(
                canvas_pixels(presenter.canvas()) == replica.data(),
                "the canvas differs from frame {last}"
            );
        }
    }
    last
}

#[wasm_bindgen_test]
async fn frames_from_the_native_server_arrive_byte_for_byte_across_a_reconnect() {
    let url = format!(
        "{}/stream/web-{}?frames=400&fps=240&width=160&height=100&seed=5&resize=260:96x72",
        server(),
        unique()
    );
    let mut replica = SyntheticScreen::new(5, 160, 100).with_resize(260, 96, 72);
    let mut presenter = CanvasPresenter::new(make_canvas()).unwrap();
    let mut rx = RemoteTransport::receiver(url, checked());
    rx.connect().await.unwrap();
    let mut sizes = Vec::new();
    let first = follow(&mut rx, &mut replica, &mut presenter, 100, &mut sizes).await;

    // Reconnect: the new connection opens with a keyframe of the current screen.
    rx.close();
    assert_eq!(
        rx.try_receive().unwrap_err().kind(),
        ErrorKind::NotConnected
    );
    gloo_timers::future::TimeoutFuture::new(30).await;
    rx.connect().await.unwrap();
    let change = rx.receive().await.unwrap();
    assert!(change.keyframe, "a new connection starts with a keyframe");
    assert!(change.sequence > first);
    replica.advance_to(change.sequence);
    assert!(rx.screen() == replica.data());
    presenter.present(&change, rx.screen()).unwrap();
    follow(&mut rx, &mut replica, &mut presenter, 400, &mut sizes).await;

    assert_eq!(sizes, vec![(160, 100), (96, 72)], "the resize arrived");
    let stats = rx.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.last_acked, Some(400));
    assert_eq!(rx.frame().unwrap().data, replica.data());
}

#[wasm_bindgen_test]
async fn frames_from_the_page_reach_the_native_sink_checksum_for_checksum() {
    let mut tx = RemoteTransport::sender(format!("{}/sink", server()), RemoteOptions::default());
    tx.connect().await.unwrap();
    let mut screen = SyntheticScreen::new(8, 200, 150).with_resize(30, 120, 90);
    tx.send(&screen.frame()).await.unwrap();
    for _ in 1..60 {
        tx.send(&screen.step()).await.unwrap();
        if screen.sequence() % 10 == 0 {
            // Lock step every ten frames: the sink's ack names its screen's checksum.
            let mut waited = 0;
            while tx.stats().last_acked != Some(screen.sequence()) {
                waited += 1;
                assert!(
                    waited < 2000,
                    "no ack for frame {}: {:?}",
                    screen.sequence(),
                    tx.stats()
                );
                gloo_timers::future::TimeoutFuture::new(5).await;
            }
            assert_eq!(
                tx.stats().last_ack_checksum,
                Some(crc32fast::hash(screen.data())),
                "the sink's screen after frame {} differs from the page's",
                screen.sequence()
            );
        }
    }
    let stats = tx.stats();
    assert_eq!(stats.sent + stats.dropped, 60);
    tx.close();
}

#[wasm_bindgen_test]
async fn a_busy_socket_holds_back_frames_and_the_newest_wins() {
    // No bytes may wait in the socket: while one frame is on its way, later ones wait in
    // the outbox and replace each other; the last one still arrives, whole.
    let options = RemoteOptions {
        max_buffered: 0,
        ..RemoteOptions::default()
    };
    let mut tx = RemoteTransport::sender(format!("{}/sink", server()), options);
    tx.connect().await.unwrap();
    // Let the handshake's welcome leave the socket: then the keyframe goes at once.
    while tx.buffered_amount() > 0 {
        gloo_timers::future::TimeoutFuture::new(1).await;
    }
    let mut screen = SyntheticScreen::new(13, 640, 480);
    tx.send(&screen.frame()).await.unwrap();
    assert_eq!(tx.stats().sent, 1);
    for _ in 1..100 {
        tx.send(&screen.step()).await.unwrap(); // never waits
    }
    let mut waited = 0;
    while tx.stats().last_acked != Some(100) {
        waited += 1;
        assert!(
            waited < 2000,
            "frame 100 never acknowledged: {:?}",
            tx.stats()
        );
        gloo_timers::future::TimeoutFuture::new(5).await;
    }
    let stats = tx.stats();
    // Held-back frames were merged into deltas that carry all their damage.
    assert!(stats.dropped > 0 && stats.sent >= 2, "{stats:?}");
    assert_eq!(stats.sent + stats.dropped, 100);
    assert_eq!(
        stats.last_ack_checksum,
        Some(crc32fast::hash(screen.data())),
        "the sink's screen differs from the page's after the merged frames"
    );
    tx.close();
}

#[wasm_bindgen_test]
async fn refusals_and_dead_servers_are_typed_errors() {
    let mut rx = RemoteTransport::receiver(
        format!("{}/stream/refuse-{}", server(), unique()),
        RemoteOptions {
            accept: vec![PixelFormat::Yuv420],
            ..RemoteOptions::default()
        },
    );
    assert_eq!(
        rx.connect().await.unwrap_err().kind(),
        ErrorKind::Negotiation
    );
    // Port 9 (discard) is closed on the test machine: the socket fails.
    let mut dead = RemoteTransport::receiver("ws://127.0.0.1:9/", RemoteOptions::default());
    assert_eq!(
        dead.connect().await.unwrap_err().kind(),
        ErrorKind::Connection
    );
    let mut bad = RemoteTransport::receiver("not a url", RemoteOptions::default());
    assert_eq!(
        bad.connect().await.unwrap_err().kind(),
        ErrorKind::Connection
    );
}

#[wasm_bindgen_test]
async fn remote_display_draws_the_stream_on_a_canvas() {
    let canvas = make_canvas();
    let url = format!(
        "{}/stream/display-{}?frames=30&fps=120&width=64&height=48&seed=3",
        server(),
        unique()
    );
    let mut display = RemoteDisplay::new(canvas.clone(), url).unwrap();
    display.connect().await.unwrap();
    let mut polls = 0;
    while display.last_sequence() != Some(30.0) {
        display.poll().unwrap();
        polls += 1;
        assert!(polls < 2000, "frame 30 not drawn");
        gloo_timers::future::TimeoutFuture::new(5).await;
    }
    let mut replica = SyntheticScreen::new(3, 64, 48);
    replica.advance_to(30);
    assert!(canvas_pixels(&canvas) == replica.data());
    display.close();
}
