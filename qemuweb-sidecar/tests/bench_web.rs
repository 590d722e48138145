//! Benchmark (not a test; it asserts only that frames arrived intact): 1024x768 RGBA
//! frames from a real Worker to the page, in lock step (the worker sends frame `i + 1`
//! once the page has taken frame `i`), through
//!
//! - the frame ring (`LocalTransport`, keyframes: every byte copied in and out),
//! - `postMessage` with the frame's `ArrayBuffer` transferred,
//! - `postMessage` with the frame structured-cloned,
//! - a WebSocket from the native `frame-server` on 127.0.0.1 (`RemoteTransport`, lock step
//!   on its acknowledgements; keyframes, and deltas of one 64x64 dirty square; only when
//!   built with `QEMUWEB_FRAME_SERVER`),
//!
//! and, as the limit, a plain copy of the same bytes in the page's wasm (memcpy).
//! Frames per second and mean / p95 latency (worker stamp to page receipt), printed with
//! ratios against memcpy.
//!
//! Run: `scripts/sidecar-remote.sh bench` (with the WebSocket path), or
//! `CHROMEDRIVER=/usr/bin/chromedriver
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
//! cargo test -p qemuweb-sidecar --release --target wasm32-unknown-unknown --test bench_web -- --nocapture`
#![cfg(target_arch = "wasm32")]

use js_sys::{Int32Array, SharedArrayBuffer};
use qemuweb_sidecar::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const WIDTH: u32 = 1024;
const HEIGHT: u32 = 768;
const BYTES: usize = (WIDTH * HEIGHT * 4) as usize;
const FRAMES: u32 = 200;

#[wasm_bindgen(inline_js = r#"
const glueUrl = () => new URL('/wasm-bindgen-test.js', location.href).href;
const wasmUrl = () => new URL('/wasm-bindgen-test_bg.wasm', location.href).href;

function worker(src) {
    const url = URL.createObjectURL(new Blob([src], { type: 'text/javascript' }));
    return new Worker(url, { type: 'module' });
}

export function now_abs() { return performance.timeOrigin + performance.now(); }

// Ring: the worker runs the wasm export `bench_ring_send`; resolves when it returns.
export function spawn_ring_sender(sab, ack, frames) {
    const w = worker(`import * as glue from ${JSON.stringify(glueUrl())};
        self.onmessage = async (e) => {
            try {
                await glue.default({ module_or_path: ${JSON.stringify(wasmUrl())} });
                glue.bench_ring_send(e.data.sab, e.data.ack, e.data.frames);
                self.postMessage({ ok: true });
            } catch (err) { self.postMessage({ err: String(err && err.stack || err) }); }
        };`);
    const done = new Promise((resolve, reject) => {
        w.onmessage = (e) => { w.terminate(); e.data.ok ? resolve() : reject(new Error(e.data.err)); };
        w.onerror = (e) => reject(new Error('worker error: ' + e.message));
    });
    w.postMessage({ sab, ack, frames });
    return done;
}

// postMessage: the worker posts its screen each frame, either copied into a fresh buffer
// that is transferred, or structured-cloned; it waits on `ack` (the page increments it)
// before the next frame. Resolves to the run's seconds and latencies (ms).
export function post_message_run(bytes, frames, transfer) {
    const w = worker(`self.onmessage = (e) => {
        const { bytes, frames, transfer, ackSab } = e.data;
        const ack = new Int32Array(ackSab);
        const screen = new Uint8Array(bytes);
        for (let i = 0; i < bytes; i += 4096) screen[i] = i & 255;
        for (let i = 1; i <= frames; i++) {
            screen[0] = i & 255;
            const t0 = performance.timeOrigin + performance.now();
            if (transfer) {
                // A transferred buffer leaves the worker: copy the screen into a fresh one.
                const buf = new Uint8Array(bytes);
                buf.set(screen);
                self.postMessage({ i, t0, buf }, [buf.buffer]);
            } else {
                // Cloning copies the screen itself.
                self.postMessage({ i, t0, buf: screen });
            }
            while (Atomics.load(ack, 0) < i) Atomics.wait(ack, 0, Atomics.load(ack, 0), 1000);
        }
    };`);
    const ackSab = new SharedArrayBuffer(4);
    const ack = new Int32Array(ackSab);
    const lat = [];
    return new Promise((resolve, reject) => {
        let start; // the first frame's stamp: worker start-up is not measured
        w.onerror = (e) => reject(new Error('worker error: ' + e.message));
        w.onmessage = (e) => {
            const { i, t0, buf } = e.data;
            start ??= t0;
            lat.push(performance.timeOrigin + performance.now() - t0);
            if (buf.length !== bytes || buf[0] !== (i & 255) || buf[4096] !== 0) {
                reject(new Error(`frame ${i} arrived damaged`));
            }
            Atomics.store(ack, 0, i);
            Atomics.notify(ack, 0);
            if (i === frames) {
                w.terminate();
                resolve({ seconds: (performance.timeOrigin + performance.now() - start) / 1000, latencies: lat });
            }
        };
        w.postMessage({ bytes, frames, transfer, ackSab });
    });
}
"#)]
extern "C" {
    fn now_abs() -> f64;
    fn spawn_ring_sender(
        sab: &SharedArrayBuffer,
        ack: &SharedArrayBuffer,
        frames: u32,
    ) -> js_sys::Promise;
    fn post_message_run(bytes: usize, frames: u32, transfer: bool) -> js_sys::Promise;
}

/// Runs in the worker: sends `frames` whole-screen keyframes through the ring, each
/// stamped with the absolute time, waiting for the page's ack between frames.
#[wasm_bindgen]
pub fn bench_ring_send(
    sab: SharedArrayBuffer,
    ack: SharedArrayBuffer,
    frames: u32,
) -> Result<(), JsError> {
    let ack = Int32Array::new(&ack);
    let mut tx = LocalTransport::sender(SabMemory::from_buffer(sab));
    tx.attach()?;
    // The emulator's framebuffer: one buffer, updated in place, copied into the ring by
    // each send (as the postMessage runs copy it into a fresh buffer).
    let mut frame = Frame {
        metadata: FrameMetadata::keyframe(1, 0.0, WIDTH, HEIGHT, PixelFormat::Rgba),
        data: vec![0u8; BYTES],
    };
    for i in (0..BYTES).step_by(4096) {
        frame.data[i] = (i & 255) as u8;
    }
    for i in 1..=frames {
        frame.data[0] = i as u8;
        frame.metadata.sequence = i as u64;
        frame.metadata.timestamp = now_abs();
        tx.send_now(&frame)?;
        while js_sys::Atomics::load(&ack, 0).unwrap_or(0) < i as i32 {
            let seen = js_sys::Atomics::load(&ack, 0).unwrap_or(0);
            let _ = js_sys::Atomics::wait_with_timeout(&ack, 0, seen, 1000.0);
        }
    }
    Ok(())
}

struct Result1 {
    name: &'static str,
    fps: f64,
    mean_ms: f64,
    p95_ms: f64,
}

fn summarize(name: &'static str, seconds: f64, mut lat: Vec<f64>) -> Result1 {
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    let p95 = lat[(lat.len() * 95 / 100).min(lat.len() - 1)];
    Result1 {
        name,
        fps: lat.len() as f64 / seconds,
        mean_ms: mean,
        p95_ms: p95,
    }
}

/// The WebSocket path: the native frame-server on 127.0.0.1 (started by
/// scripts/sidecar-remote.sh bench) sends frames in lock step (the next once the page's
/// RemoteTransport acknowledged one): whole-screen keyframes, or (`side > 0`) deltas of
/// one `side x side` square. Latency: the server's wall-clock stamp to the page's
/// receipt (same machine, same clock).
async fn remote_run(server: &str, name: &'static str, side: u32) -> Result1 {
    let url = format!("{server}/bench?frames={FRAMES}&width={WIDTH}&height={HEIGHT}&rect={side}");
    let mut rx = RemoteTransport::receiver(url, RemoteOptions::default());
    rx.connect().await.unwrap();
    let (mut lat, mut start, mut last) = (Vec::new(), None, 0);
    while last < FRAMES as u64 {
        let meta = rx.receive().await.unwrap();
        assert!(meta.sequence > last);
        last = meta.sequence;
        lat.push(now_abs() - meta.timestamp);
        start.get_or_insert(meta.timestamp);
        if side == 0 || last == 1 {
            assert!(meta.keyframe);
            assert_eq!(rx.screen()[0], last as u8);
            assert_eq!(rx.screen()[4096], 0);
        } else {
            // The square the server painted (its bench_rect), every byte = sequence.
            let x = (last as u32).wrapping_mul(61) % (WIDTH - side + 1);
            let y = (last as u32).wrapping_mul(37) % (HEIGHT - side + 1);
            assert_eq!(meta.dirty, vec![DirtyRect::new(x, y, side, side)]);
            let at = ((y * WIDTH + x) * 4) as usize;
            assert_eq!(rx.screen()[at], last as u8);
        }
    }
    rx.close();
    summarize(name, (now_abs() - start.unwrap()) / 1000.0, lat)
}

#[wasm_bindgen_test]
async fn bench_1024x768_rgba_frames_worker_to_page() {
    // memcpy: the limit.
    let src: Vec<u8> = (0..BYTES).map(|i| i as u8).collect();
    let mut dst = vec![0u8; BYTES];
    let mut lat = Vec::new();
    let start = now_abs();
    for i in 0..FRAMES {
        let t0 = now_abs();
        dst.copy_from_slice(&src);
        dst[0] ^= i as u8;
        lat.push(now_abs() - t0);
    }
    let memcpy = summarize("memcpy (page wasm)", (now_abs() - start) / 1000.0, lat);
    assert_eq!(dst[1], 1);

    // The ring.
    let memory = LocalTransport::create_ring(3, WIDTH, HEIGHT, PixelFormat::Rgba).unwrap();
    let mut rx = LocalTransport::receiver(memory.clone());
    rx.connect().await.unwrap();
    let ack_sab = SharedArrayBuffer::new(4);
    let ack = Int32Array::new(&ack_sab);
    let done =
        wasm_bindgen_futures::JsFuture::from(spawn_ring_sender(memory.buffer(), &ack_sab, FRAMES));
    let mut lat = Vec::new();
    let mut start = None;
    for i in 1..=FRAMES {
        let meta = rx.receive().await.unwrap();
        lat.push(now_abs() - meta.timestamp);
        start.get_or_insert(meta.timestamp);
        assert_eq!(meta.sequence, i as u64, "lock step: no frame skipped");
        assert_eq!(rx.screen()[0], i as u8);
        assert_eq!(rx.screen()[4096], 0);
        let _ = js_sys::Atomics::store(&ack, 0, i as i32);
        let _ = js_sys::Atomics::notify(&ack, 0);
    }
    let ring = summarize(
        "ring (LocalTransport)",
        (now_abs() - start.unwrap()) / 1000.0,
        lat,
    );
    done.await.expect("the ring sender failed");

    let mut results = vec![memcpy, ring];
    for (name, transfer) in [
        ("postMessage, transferred", true),
        ("postMessage, structured clone", false),
    ] {
        let got = wasm_bindgen_futures::JsFuture::from(post_message_run(BYTES, FRAMES, transfer))
            .await
            .expect("postMessage run failed");
        let seconds = js_sys::Reflect::get(&got, &"seconds".into())
            .unwrap()
            .as_f64()
            .unwrap();
        let lat: Vec<f64> =
            js_sys::Array::from(&js_sys::Reflect::get(&got, &"latencies".into()).unwrap())
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
        results.push(summarize(name, seconds, lat));
    }

    // The WebSocket path: the native frame-server on 127.0.0.1 (started by
    // scripts/sidecar-remote.sh bench) sends whole-screen keyframes in lock step (the
    // next once the page's RemoteTransport acknowledged one). Latency: the server's
    // wall-clock stamp to the page's receipt (same machine, same clock).
    match option_env!("QEMUWEB_FRAME_SERVER") {
        Some(server) => {
            for (name, side) in [
                ("WebSocket (RemoteTransport)", 0),
                ("WebSocket, 64x64 dirty rect", 64),
            ] {
                results.push(remote_run(server, name, side).await);
            }
        }
        None => console_log!(
            "!!!! RemoteTransport not measured: build with QEMUWEB_FRAME_SERVER set \
             (scripts/sidecar-remote.sh bench) !!!!"
        ),
    }

    let limit = results[0].fps;
    console_log!(
        "{FRAMES} frames of {WIDTH}x{HEIGHT} RGBA ({BYTES} bytes), worker -> page, lock step:"
    );
    for r in &results {
        console_log!(
            "  {:<32} {:>8.1} frames/s  ({:>5.3} of memcpy)  latency mean {:>7.3} ms  p95 {:>7.3} ms",
            r.name,
            r.fps,
            r.fps / limit,
            r.mean_ms,
            r.p95_ms
        );
    }
    let ring = &results[1];
    for r in &results[2..] {
        console_log!(
            "  ring vs {:<30} {:>5.2}x frames/s, {:>5.2}x lower mean latency",
            r.name,
            ring.fps / r.fps,
            r.mean_ms / ring.mean_ms
        );
    }
}
