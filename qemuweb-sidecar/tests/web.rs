//! The frame ring in headless Chromium: a real dedicated Worker produces frames into a
//! `SharedArrayBuffer` (the test page is cross-origin isolated: wasm-bindgen-test-runner
//! sends COOP/COEP) and the page consumes them, as the display will.
//!
//! Run with `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
//! cargo test -p qemuweb-sidecar --target wasm32-unknown-unknown --test web`
//! (chromedriver on PATH or in `CHROMEDRIVER`; `webdriver.json` has the Chromium flags).
#![cfg(target_arch = "wasm32")]

use std::time::Duration;

use js_sys::SharedArrayBuffer;
use qemuweb_sidecar::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const WIDTH: u32 = 160;
const HEIGHT: u32 = 100;
const FRAMES: u32 = 400;

#[wasm_bindgen(inline_js = r#"
export function spawn_worker(name, sab, frames) {
    const glue = new URL('/wasm-bindgen-test.js', location.href).href;
    const wasm = new URL('/wasm-bindgen-test_bg.wasm', location.href).href;
    const src = `import * as glue from ${JSON.stringify(glue)};
        self.onmessage = async (e) => {
            try {
                await glue.default({ module_or_path: ${JSON.stringify(wasm)} });
                self.postMessage({ sidecarOk: await glue[e.data.name](e.data.sab, e.data.frames) });
            } catch (err) {
                self.postMessage({ sidecarErr: String(err && err.stack || err) });
            }
        };`;
    const url = URL.createObjectURL(new Blob([src], { type: 'text/javascript' }));
    const worker = new Worker(url, { type: 'module' });
    const done = new Promise((resolve, reject) => {
        worker.addEventListener('message', (e) => {
            if (e.data && 'sidecarOk' in e.data) { worker.terminate(); resolve(e.data.sidecarOk); }
            if (e.data && 'sidecarErr' in e.data) { worker.terminate(); reject(new Error(e.data.sidecarErr)); }
        });
        worker.addEventListener('error', (e) => reject(new Error('worker error: ' + e.message)));
    });
    globalThis.__sidecarWorkerError = undefined;
    done.catch((e) => { globalThis.__sidecarWorkerError = String(e && e.message || e); });
    worker.postMessage({ name, sab, frames });
    return done;
}

export function worker_error() {
    return globalThis.__sidecarWorkerError;
}

export function cross_origin_isolated() {
    return globalThis.crossOriginIsolated === true;
}
"#)]
extern "C" {
    #[wasm_bindgen(catch)]
    fn spawn_worker(
        name: &str,
        sab: &SharedArrayBuffer,
        frames: u32,
    ) -> Result<js_sys::Promise, JsValue>;
    fn cross_origin_isolated() -> bool;
    fn worker_error() -> Option<String>;
}

/// The emulator stand-in: a screen that changes in pseudo-random rectangles.
struct Screen {
    data: Vec<u8>,
    rng: u64,
    seq: u64,
}

impl Screen {
    fn new() -> Screen {
        Screen {
            data: vec![0x11; (WIDTH * HEIGHT * 4) as usize],
            rng: 0x9e37_79b9_7f4a_7c15,
            seq: 1,
        }
    }

    fn below(&mut self, n: u32) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n as u64) as u32
    }

    /// Advances to the next frame and returns it (frame 1 is a keyframe).
    fn step(&mut self) -> Frame {
        self.seq += 1;
        let x = self.below(WIDTH);
        let y = self.below(HEIGHT);
        let rect = DirtyRect::new(x, y, 1 + self.below(WIDTH - x), 1 + self.below(HEIGHT - y));
        for row in rect.y..rect.y + rect.height {
            let start = ((row * WIDTH + rect.x) * 4) as usize;
            let end = start + (rect.width * 4) as usize;
            for (i, b) in self.data[start..end].iter_mut().enumerate() {
                *b = (self.seq as u8).wrapping_add(i as u8);
            }
        }
        self.frame(vec![rect])
    }

    fn frame(&self, dirty: Vec<DirtyRect>) -> Frame {
        let mut metadata = FrameMetadata::delta(
            self.seq,
            self.seq as f64,
            WIDTH,
            HEIGHT,
            PixelFormat::Rgba,
            dirty,
        );
        metadata.keyframe = metadata.dirty.is_empty();
        Frame {
            metadata,
            data: self.data.clone(),
        }
    }
}

/// Runs in the worker: produces `frames` frames into the ring in `sab` as fast as it
/// can (the producer never blocks), then returns how many it overwrote unread.
#[wasm_bindgen]
pub fn sidecar_test_produce(sab: SharedArrayBuffer, frames: u32) -> Result<u32, JsError> {
    let mut producer = RingProducer::attach(SabMemory::from_buffer(sab))?;
    let mut screen = Screen::new();
    let mut dropped = 0;
    producer.send(&screen.frame(vec![]))?;
    for _ in 1..frames {
        let frame = screen.step();
        dropped += producer.send(&frame)?.dropped.is_some() as u32;
    }
    Ok(dropped)
}

#[wasm_bindgen_test]
async fn worker_produces_page_consumes_through_a_shared_array_buffer() {
    assert!(
        cross_origin_isolated(),
        "the test page must be cross-origin isolated"
    );
    let layout = RingLayout::for_screen(3, WIDTH, HEIGHT, PixelFormat::Rgba).unwrap();
    let memory = SabMemory::new(layout.len_words());
    layout.init(&memory).unwrap();
    let mut consumer = RingConsumer::attach(memory.clone()).unwrap();

    // The page's main thread may not block: waiting is refused, polling works.
    let err = consumer
        .receive_timeout(Duration::from_millis(10))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WaitUnsupported);

    let done = wasm_bindgen_futures::JsFuture::from(
        spawn_worker("sidecar_test_produce", memory.buffer(), FRAMES).unwrap(),
    );
    let mut expected = Screen::new();
    let mut received = 0u32;
    let mut last = 0u64;
    let mut idle_polls = 0;
    while last < FRAMES as u64 {
        match consumer.try_receive().unwrap() {
            Some(meta) => {
                assert!(meta.sequence > last);
                last = meta.sequence;
                received += 1;
                while expected.seq < meta.sequence {
                    expected.step();
                }
                assert!(
                    consumer.data() == &expected.data[..],
                    "frame {} differs from the worker's screen",
                    meta.sequence
                );
                idle_polls = 0;
            }
            None => {
                idle_polls += 1;
                if let Some(error) = worker_error() {
                    panic!("the worker's producer failed: {error}");
                }
                assert!(
                    idle_polls < 5_000,
                    "no frame from the worker after {last} ({:?})",
                    consumer.stats()
                );
                gloo_timers::future::TimeoutFuture::new(0).await;
            }
        }
    }
    let dropped_by_producer = done.await.expect("the worker's producer failed");
    let dropped_by_producer = dropped_by_producer.as_f64().unwrap() as u32;
    let stats = consumer.stats();
    assert_eq!(stats.published, FRAMES);
    assert_eq!(received + stats.dropped, FRAMES);
    assert!(stats.dropped >= dropped_by_producer);
    assert!(received >= 1);
}

/// Runs in the worker: consumes until frame `frames`, blocking in `Atomics.wait`
/// between frames, checking every frame against its own replica of the screen;
/// returns how many frames it received.
#[wasm_bindgen]
pub fn sidecar_test_consume(sab: SharedArrayBuffer, frames: u32) -> Result<u32, JsError> {
    let mut consumer = RingConsumer::attach(SabMemory::from_buffer(sab))?;
    let mut expected = Screen::new();
    let (mut last, mut received) = (0u64, 0u32);
    while last < frames as u64 {
        let meta = consumer
            .receive_timeout(Duration::from_secs(10))?
            .ok_or_else(|| JsError::new(&format!("no frame within 10 s after {last}")))?;
        if meta.sequence <= last {
            return Err(JsError::new("frames out of order"));
        }
        last = meta.sequence;
        received += 1;
        while expected.seq < meta.sequence {
            expected.step();
        }
        if consumer.data() != &expected.data[..] {
            return Err(JsError::new(&format!(
                "frame {last} differs from the page's screen"
            )));
        }
    }
    Ok(received)
}

#[wasm_bindgen_test]
async fn page_produces_worker_consumes_with_atomics_wait() {
    let layout = RingLayout::for_screen(3, WIDTH, HEIGHT, PixelFormat::Rgba).unwrap();
    let memory = SabMemory::new(layout.len_words());
    layout.init(&memory).unwrap();
    let mut producer = RingProducer::attach(memory.clone()).unwrap();
    let done = wasm_bindgen_futures::JsFuture::from(
        spawn_worker("sidecar_test_consume", memory.buffer(), FRAMES).unwrap(),
    );
    // Let the worker start and block in Atomics.wait on the empty ring.
    gloo_timers::future::TimeoutFuture::new(200).await;
    assert_eq!(worker_error(), None);
    let mut screen = Screen::new();
    producer.send(&screen.frame(vec![])).unwrap();
    for i in 1..FRAMES {
        producer.send(&screen.step()).unwrap();
        if i % 8 == 0 {
            gloo_timers::future::TimeoutFuture::new(1).await;
        }
    }
    let received = done.await.expect("the worker's consumer failed");
    let received = received.as_f64().unwrap() as u32;
    let stats = producer.stats();
    assert_eq!(stats.published, FRAMES);
    assert_eq!(received + stats.dropped, FRAMES);
    assert!(received > 1, "the worker woke for more than the last frame");
}

/// Runs in the worker: sends `frames` frames through a [`LocalTransport`]'s sending end
/// as fast as it can; returns the ring's dropped count when done.
#[wasm_bindgen]
pub async fn sidecar_test_transport_send(
    sab: SharedArrayBuffer,
    frames: u32,
) -> Result<u32, JsError> {
    let mut tx = LocalTransport::sender(SabMemory::from_buffer(sab));
    tx.connect().await?;
    let mut screen = Screen::new();
    tx.send(&screen.frame(vec![])).await?;
    for _ in 1..frames {
        let frame = screen.step();
        tx.send(&frame).await?;
    }
    Ok(tx.stats().map_or(0, |s| s.dropped))
}

#[wasm_bindgen_test]
async fn local_transport_page_receives_with_wait_async_from_a_worker() {
    let memory = LocalTransport::create_ring(3, WIDTH, HEIGHT, PixelFormat::Rgba).unwrap();
    let mut rx = LocalTransport::receiver(memory.clone());
    rx.connect().await.unwrap();
    let done = wasm_bindgen_futures::JsFuture::from(
        spawn_worker("sidecar_test_transport_send", memory.buffer(), FRAMES).unwrap(),
    );
    let mut expected = Screen::new();
    let (mut last, mut received) = (0u64, 0u32);
    while last < FRAMES as u64 {
        // receive() waits with Atomics.waitAsync: the page's thread is never blocked.
        let meta = rx.receive().await.unwrap();
        assert!(meta.sequence > last);
        if last == 0 {
            assert!(meta.keyframe, "the first frame received redraws everything");
        }
        last = meta.sequence;
        received += 1;
        while expected.seq < meta.sequence {
            expected.step();
        }
        assert!(
            rx.screen() == &expected.data[..],
            "frame {last} differs from the worker's screen"
        );
        // A slow display: every few frames it lets the worker run ahead.
        if received % 4 == 0 {
            gloo_timers::future::TimeoutFuture::new(2).await;
        }
    }
    done.await.expect("the worker's sender failed");
    let stats = rx.stats().unwrap();
    assert_eq!(stats.published, FRAMES);
    assert_eq!(received + stats.dropped, FRAMES);
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
export function canvas_mark(c, x, y) {
    const ctx = c.getContext('2d');
    ctx.fillStyle = 'rgb(1, 2, 3)';
    ctx.fillRect(x, y, 1, 1);
}
"#)]
extern "C" {
    fn make_canvas() -> web_sys::HtmlCanvasElement;
    fn canvas_pixels(c: &web_sys::HtmlCanvasElement) -> Vec<u8>;
    fn canvas_mark(c: &web_sys::HtmlCanvasElement, x: u32, y: u32);
}

fn pixel(pixels: &[u8], width: u32, x: u32, y: u32) -> [u8; 4] {
    let at = ((y * width + x) * 4) as usize;
    pixels[at..at + 4].try_into().unwrap()
}

#[wasm_bindgen_test]
fn canvas_presenter_draws_keyframes_whole_and_deltas_only_in_dirty_rects() {
    let canvas = make_canvas();
    let mut presenter = CanvasPresenter::new(canvas.clone()).unwrap();
    let (w, h) = (8u32, 6u32);
    let mut screen = vec![0u8; (w * h * 4) as usize];
    for (i, px) in screen.chunks_exact_mut(4).enumerate() {
        px.copy_from_slice(&[i as u8, 100, 200, 255]);
    }
    let key = FrameMetadata::keyframe(1, 0.0, w, h, PixelFormat::Rgba);
    assert_eq!(presenter.present(&key, &screen).unwrap(), (w * h) as u64);
    assert_eq!((canvas.width(), canvas.height()), (w, h));
    assert_eq!(canvas_pixels(&canvas), screen);

    // Mark two pixels behind the presenter's back: a delta must redraw only its rect.
    canvas_mark(&canvas, 0, 0);
    canvas_mark(&canvas, 3, 2);
    for y in 2..4 {
        for x in 3..5 {
            let at = ((y * w + x) * 4) as usize;
            screen[at..at + 4].copy_from_slice(&[9, 8, 7, 255]);
        }
    }
    let delta = FrameMetadata::delta(
        2,
        1.0,
        w,
        h,
        PixelFormat::Rgba,
        vec![DirtyRect::new(3, 2, 2, 2)],
    );
    assert_eq!(presenter.present(&delta, &screen).unwrap(), 4);
    let shown = canvas_pixels(&canvas);
    assert_eq!(
        pixel(&shown, w, 0, 0),
        [1, 2, 3, 255],
        "outside the rect: untouched"
    );
    assert_eq!(pixel(&shown, w, 3, 2), [9, 8, 7, 255], "inside: redrawn");
    assert_eq!(pixel(&shown, w, 4, 3), [9, 8, 7, 255]);
    assert_eq!(pixel(&shown, w, 5, 3), pixel(&screen, w, 5, 3));

    // An unchanged screen draws nothing.
    let nothing = FrameMetadata::delta(3, 2.0, w, h, PixelFormat::Rgba, vec![]);
    assert_eq!(presenter.present(&nothing, &screen).unwrap(), 0);

    // RGB565, new size: converted and drawn whole, the canvas follows the size.
    let small: Vec<u8> = [0xf800u16, 0x07e0, 0x001f, 0xffff]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let meta = FrameMetadata::delta(
        4,
        3.0,
        2,
        2,
        PixelFormat::Rgb565,
        vec![DirtyRect::new(0, 0, 1, 1)],
    );
    assert_eq!(presenter.present(&meta, &small).unwrap(), 4);
    assert_eq!((canvas.width(), canvas.height()), (2, 2));
    assert_eq!(
        canvas_pixels(&canvas),
        [255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 255, 255, 255, 255]
    );

    let compressed = FrameMetadata::keyframe(5, 4.0, 2, 2, PixelFormat::Compressed);
    let err = presenter.present(&compressed, &[1, 2, 3]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedFormat);
}

#[wasm_bindgen_test]
fn canvas_display_and_frame_sender_classes_move_frames_to_the_canvas() {
    let canvas = make_canvas();
    let buffer = CanvasDisplay::create_ring(4, 2, 3).unwrap();
    let mut display = CanvasDisplay::new(canvas.clone(), buffer.clone()).unwrap();
    let mut sender = FrameSender::new(buffer).unwrap();
    assert!(!display.poll().unwrap(), "nothing sent yet");
    // Opaque pixels: the canvas stores premultiplied alpha, so translucent ones round.
    let mut screen = [50u8, 60, 70, 255].repeat(4 * 2);
    sender
        .send_rgba(1.0, 0.0, 4, 2, screen.clone(), None)
        .unwrap();
    screen[(4 + 1) * 4..(4 + 1) * 4 + 4].copy_from_slice(&[0, 0, 0, 255]);
    sender
        .send_rgba(2.0, 1.0, 4, 2, screen.clone(), Some(vec![1, 1, 1, 1]))
        .unwrap();
    assert!(display.poll().unwrap());
    assert_eq!(display.last_sequence(), Some(2.0));
    assert_eq!(display.published(), 2);
    assert_eq!(
        display.dropped(),
        1,
        "frame 1 was stale when the display polled"
    );
    assert_eq!(canvas_pixels(&canvas), screen);
    assert!(!display.poll().unwrap());
    // Malformed dirty lists are refused.
    assert!(sender
        .send_rgba(3.0, 2.0, 4, 2, screen.clone(), Some(vec![1, 1, 1]))
        .is_err());
}
