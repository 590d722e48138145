//! Showing frames on the page: a canvas presenter and the JavaScript classes the page
//! and a JavaScript worker use (`CanvasDisplay`, `FrameSender`).

use js_sys::SharedArrayBuffer;
use wasm_bindgen::prelude::*;
use wasm_bindgen::{Clamped, JsCast};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, ImageData};

use crate::convert::rect_to_rgba;
use crate::forward::DisplayForward;
use crate::frame::{DirtyRect, Frame, FrameMetadata, PixelFormat};
use crate::memory::SabMemory;
use crate::transport::LocalTransport;
use crate::SidecarError;

fn display_error(what: &str, err: JsValue) -> SidecarError {
    let detail = js_sys::Error::from(err.clone())
        .message()
        .as_string()
        .or_else(|| err.as_string())
        .unwrap_or_else(|| format!("{err:?}"));
    SidecarError::Display {
        reason: format!("{what}: {detail}"),
    }
}

/// Draws frames on a `<canvas>` with its 2D context: a keyframe (or a new size) is
/// drawn whole and resizes the canvas to the frame; a delta draws only its dirty
/// rectangles, so an unchanged screen draws nothing. RGBA is drawn as is; RGB565 and
/// YUV420 are converted ([`rect_to_rgba`](crate::rect_to_rgba)); compressed frames
/// are refused.
#[derive(Debug)]
pub struct CanvasPresenter {
    canvas: HtmlCanvasElement,
    context: CanvasRenderingContext2d,
    /// (width, height) of what the canvas shows, once a frame was drawn.
    size: Option<(u32, u32)>,
    scratch: Vec<u8>,
}

impl CanvasPresenter {
    /// A presenter drawing on `canvas` (its 2D context; fails if the canvas already has
    /// another kind of context).
    pub fn new(canvas: HtmlCanvasElement) -> Result<CanvasPresenter, SidecarError> {
        let context = canvas
            .get_context("2d")
            .map_err(|e| display_error("getContext('2d')", e))?
            .ok_or_else(|| SidecarError::Display {
                reason: "the canvas has no 2D context (another context kind is in use)".into(),
            })?
            .dyn_into::<CanvasRenderingContext2d>()
            .map_err(|_| SidecarError::Display {
                reason: "getContext('2d') returned something else".into(),
            })?;
        Ok(CanvasPresenter {
            canvas,
            context,
            size: None,
            scratch: Vec::new(),
        })
    }

    /// The canvas.
    pub fn canvas(&self) -> &HtmlCanvasElement {
        &self.canvas
    }

    /// Draws the change `metadata` describes from `screen` (the whole current screen in
    /// `metadata.format`, as a transport's receiving end holds it). Returns the number
    /// of pixels drawn.
    pub fn present(
        &mut self,
        metadata: &FrameMetadata,
        screen: &[u8],
    ) -> Result<u64, SidecarError> {
        let (w, h) = (metadata.width, metadata.height);
        if metadata.format == PixelFormat::Compressed {
            return Err(SidecarError::UnsupportedFormat {
                format: metadata.format,
            });
        }
        let whole = metadata.keyframe || self.size != Some((w, h));
        if whole {
            if self.canvas.width() != w {
                self.canvas.set_width(w);
            }
            if self.canvas.height() != h {
                self.canvas.set_height(h);
            }
            self.draw(metadata, screen, &DirtyRect::new(0, 0, w, h))?;
            self.size = Some((w, h));
            return Ok(w as u64 * h as u64);
        }
        let mut drawn = 0;
        for rect in &metadata.dirty {
            self.draw(metadata, screen, rect)?;
            drawn += rect.width as u64 * rect.height as u64;
        }
        Ok(drawn)
    }

    /// Draws a whole [`Frame`] (e.g. one received over the network).
    pub fn present_frame(&mut self, frame: &Frame) -> Result<u64, SidecarError> {
        self.present(&frame.metadata, &frame.data)
    }

    fn draw(
        &mut self,
        meta: &FrameMetadata,
        screen: &[u8],
        rect: &DirtyRect,
    ) -> Result<(), SidecarError> {
        rect_to_rgba(
            meta.format,
            meta.width,
            meta.height,
            screen,
            rect,
            &mut self.scratch,
        )?;
        let image = ImageData::new_with_u8_clamped_array_and_sh(
            Clamped(&self.scratch),
            rect.width,
            rect.height,
        )
        .map_err(|e| display_error("new ImageData", e))?;
        self.context
            .put_image_data(&image, rect.x as f64, rect.y as f64)
            .map_err(|e| display_error("putImageData", e))
    }
}

/// The page's display, for JavaScript: the receiving end of a frame ring plus a
/// [`CanvasPresenter`]. Create the ring with `CanvasDisplay.createRing`, post the
/// buffer to the emulator's worker, then call `poll()` once an animation frame.
#[wasm_bindgen]
#[derive(Debug)]
pub struct CanvasDisplay {
    transport: LocalTransport,
    presenter: CanvasPresenter,
    last_sequence: Option<u64>,
    /// The last frame drawn (its size and format describe the current screen).
    last_metadata: Option<FrameMetadata>,
    forward: Option<DisplayForward>,
}

#[wasm_bindgen]
impl CanvasDisplay {
    /// A `SharedArrayBuffer` holding an empty ring of `slots` slots for screens up to
    /// `width x height` RGBA. Needs a cross-origin isolated page (COOP/COEP).
    #[wasm_bindgen(js_name = createRing)]
    pub fn create_ring(width: u32, height: u32, slots: u32) -> Result<SharedArrayBuffer, JsError> {
        if !js_sys::global().is_instance_of::<js_sys::Object>()
            || !js_sys::Reflect::get(&js_sys::global(), &"SharedArrayBuffer".into())
                .map(|v| v.is_function())
                .unwrap_or(false)
        {
            return Err(JsError::new(
                "SharedArrayBuffer is unavailable: the page must be cross-origin isolated \
                 (serve it with Cross-Origin-Opener-Policy: same-origin and \
                 Cross-Origin-Embedder-Policy: require-corp)",
            ));
        }
        let memory = LocalTransport::create_ring(slots, width, height, PixelFormat::Rgba)?;
        Ok(memory.buffer().clone())
    }

    /// Attaches to the ring in `buffer` as its consumer and draws on `canvas`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        canvas: HtmlCanvasElement,
        buffer: SharedArrayBuffer,
    ) -> Result<CanvasDisplay, JsError> {
        let mut transport = LocalTransport::receiver(SabMemory::from_buffer(buffer));
        transport.attach()?;
        Ok(CanvasDisplay {
            transport,
            presenter: CanvasPresenter::new(canvas)?,
            last_sequence: None,
            last_metadata: None,
            forward: None,
        })
    }

    /// Draws the newest frame if one arrived (only what changed) and forwards it (see
    /// `forward`); returns whether it drew. Never blocks.
    pub fn poll(&mut self) -> Result<bool, JsError> {
        let got = self.transport.try_receive()?;
        if let Some(meta) = &got {
            self.presenter.present(meta, self.transport.screen_data())?;
            self.last_sequence = Some(meta.sequence);
            self.last_metadata = Some(meta.clone());
        }
        if let Some(forward) = self.forward.as_ref().filter(|f| f.is_live()) {
            // A new connection starts with the current screen, changed or not.
            let meta = match forward.wants_keyframe() {
                true => self.last_metadata.as_ref(),
                false => got.as_ref(),
            };
            if let Some(meta) = meta {
                forward.offer(meta, self.transport.screen_data());
            }
        }
        Ok(got.is_some())
    }

    /// Also sends every frame drawn from now on to the receiver at `url` (`ws://` or
    /// `wss://`, e.g. `frame-server`'s `/sink`) over a `RemoteTransport`, starting with
    /// the current screen; replaces an earlier forwarding. Returns its handle
    /// (`stats()`, `flush(timeoutMs)`, `close()`).
    pub fn forward(&mut self, url: String) -> DisplayForward {
        if let Some(old) = self.forward.take() {
            old.close();
        }
        let forward = DisplayForward::start(url);
        self.forward = Some(forward.clone());
        forward
    }

    /// The sequence number of the last frame drawn (`undefined` before the first).
    #[wasm_bindgen(getter, js_name = lastSequence)]
    pub fn last_sequence(&self) -> Option<f64> {
        self.last_sequence.map(|s| s as f64)
    }

    /// Frames the emulator published into the ring.
    #[wasm_bindgen(getter)]
    pub fn published(&self) -> u32 {
        self.transport.stats().map_or(0, |s| s.published)
    }

    /// Frames skipped as stale (the display was slower than the emulator).
    #[wasm_bindgen(getter)]
    pub fn dropped(&self) -> u32 {
        self.transport.stats().map_or(0, |s| s.dropped)
    }
}

/// The emulator's end of a frame ring, for JavaScript (e.g. a worker running a
/// JavaScript emulator): sends RGBA screens. Never blocks.
#[wasm_bindgen]
#[derive(Debug)]
pub struct FrameSender {
    transport: LocalTransport,
}

#[wasm_bindgen]
impl FrameSender {
    /// Attaches to the ring in `buffer` as its producer.
    #[wasm_bindgen(constructor)]
    pub fn new(buffer: SharedArrayBuffer) -> Result<FrameSender, JsError> {
        let mut transport = LocalTransport::sender(SabMemory::from_buffer(buffer));
        transport.attach()?;
        Ok(FrameSender { transport })
    }

    /// Sends the whole RGBA screen `data` (`width * height * 4` bytes). `dirty` lists
    /// what changed since the previous frame as `[x, y, width, height, ...]`; omitted,
    /// the frame is a keyframe. `sequence` must increase from frame to frame.
    #[wasm_bindgen(js_name = sendRgba)]
    pub fn send_rgba(
        &mut self,
        sequence: f64,
        timestamp: f64,
        width: u32,
        height: u32,
        data: Vec<u8>,
        dirty: Option<Vec<u32>>,
    ) -> Result<(), JsError> {
        let sequence = sequence as u64;
        let metadata = match dirty {
            None => FrameMetadata::keyframe(sequence, timestamp, width, height, PixelFormat::Rgba),
            Some(words) => {
                if words.len() % 4 != 0 {
                    return Err(JsError::new(
                        "dirty must hold groups of [x, y, width, height]",
                    ));
                }
                let rects = words
                    .chunks_exact(4)
                    .map(|r| DirtyRect::new(r[0], r[1], r[2], r[3]))
                    .collect();
                FrameMetadata::delta(sequence, timestamp, width, height, PixelFormat::Rgba, rects)
            }
        };
        self.transport.send_now(&Frame { metadata, data })?;
        Ok(())
    }
}
