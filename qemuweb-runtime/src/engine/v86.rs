//! The v86 engine (wasm32 only): 32-bit x86 guests on [v86](https://github.com/copy/v86),
//! loaded at run time from the URL of its ES module (`libv86.mjs` of the `v86` npm
//! package) given in the [`EngineAssets`](crate::protocol::EngineAssets).
//!
//! # Disks
//!
//! Each disk is a [`DiskObject`]: a JS object in v86's disk protocol over a QemuWeb
//! storage stack (`byteLength`, `load()`/`onload`, `get_and_cache`, synchronous
//! `get_from_cache`, `get`, `set`, `get_state`/`set_state`).
//!
//! v86 raises the completion interrupt of a PIO write *before* it calls `set`, passes a
//! no-op callback and reuses the buffer it passed. So `set` copies the data at once into a
//! synchronous write-back map of 512-byte sectors, which every later read is patched
//! with, and queues the write for the copy-on-write device; the queue is written in order
//! by one task, and a sector leaves the map only when its write has reached the device
//! and no read that might have missed it is in flight. `get_from_cache` answers from the
//! bytes read before the emulator starts (and is kept up to date by writes).
//!
//! # Display
//!
//! With a display ring ([`V86Config::display`]), the VGA text screen goes to the page:
//! v86 in a worker has no screen, but its headless screen adapter is told every text
//! cell (character, colours), text mode size and the font the guest loaded into VGA
//! plane 2. The engine wraps those adapter methods, renders the cells with the guest's
//! own font ([`TextScreen`]) and publishes RGBA frames with dirty rectangles into the
//! ring (`qemuweb_sidecar::LocalTransport`), at most one per [`FRAME_INTERVAL_MS`].
//!
//! In a graphics mode (v86's adapter is told `set_mode(true)` and the size through
//! `set_size_graphical`), the engine asks v86's VGA to render its framebuffer every
//! [`FRAME_INTERVAL_MS`] (`screen_fill_buffer`; a headless v86 never does), takes the
//! layers v86 hands to the adapter's `update_buffer` into a [`GraphicsScreen`] and
//! publishes RGBA frames whose dirty rectangles cover only the rows and columns that
//! changed; a new size or a switch between text and graphics starts with a keyframe.
//!
//! # Input
//!
//! Keyboard and pointer events ([`InputEvent`]) go to v86's PS/2 controller through its
//! bus (v86's own browser adapters, which listen on `document`, stay disabled): keys as
//! scan code set 1 bytes (`keyboard-code`), motion as PS/2 mouse deltas (`mouse-delta`,
//! up positive), the buttons' state (`mouse-click`) and vertical wheel notches
//! (`mouse-wheel`). v86 has no tablet, so absolute positions are not used; the guest
//! sees what it enabled (a guest that never enabled its mouse gets nothing).

use crate::engine::frame_ring::FrameRing;
use crate::engine::text_screen::{TextScreen, GLYPH_STRIDE};
pub use crate::engine::v86_net::V86Nic;
use crate::engine::v86_net::{self, ConnectedNic};
use crate::engine::vga_graphics::{GraphicsScreen, Layer};
use crate::engine::{js_text, set, Engine, EngineHost};
use crate::error::{Result, RuntimeError};
use crate::input::{InputEvent, Key, PointerButton};
use crate::protocol::{EngineKind, Event, LogLevel, ProgressTotal, StopReason};
use async_trait::async_trait;
use futures::channel::oneshot;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use qemuweb_sidecar::SabMemory;
use qemuweb_storage::BlockDevice;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};

const SECTOR: u64 = 512;
/// Bytes of each disk read before the emulator starts, for `get_from_cache`.
const HEAD_BYTES: u64 = 64 * 1024;
/// How long v86 may take from `new V86()` to running.
const START_TIMEOUT_MS: u32 = 60_000;
/// How long a pause for a snapshot waits for disk reads in flight.
const QUIESCE_TIMEOUT_MS: u32 = 30_000;
/// With no serial or screen output for this long after start, a warning is logged.
const SILENCE_WARNING_MS: u32 = 15_000;

#[wasm_bindgen(inline_js = "export function qemuwebImport(url) { return import(url); }")]
extern "C" {
    #[wasm_bindgen(js_name = qemuwebImport, catch)]
    fn import_module(url: &str) -> std::result::Result<Promise, JsValue>;
}

#[wasm_bindgen]
extern "C" {
    /// A v86 emulator (`new V86(options)`).
    type V86;
    #[wasm_bindgen(method, catch)]
    fn add_listener(
        this: &V86,
        event: &str,
        listener: &Function,
    ) -> std::result::Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn serial_send_bytes(
        this: &V86,
        serial: u32,
        data: &Uint8Array,
    ) -> std::result::Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn restart(this: &V86) -> std::result::Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn destroy(this: &V86) -> std::result::Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn stop(this: &V86) -> std::result::Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn run(this: &V86) -> std::result::Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn save_state(this: &V86) -> std::result::Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn restore_state(
        this: &V86,
        state: &js_sys::ArrayBuffer,
    ) -> std::result::Result<Promise, JsValue>;
}

/// A guest write waiting to reach the storage stack.
struct PendingWrite {
    offset: u64,
    data: Vec<u8>,
    seq: u64,
    callback: Option<Function>,
}

#[derive(Default)]
struct WriteBack {
    /// Sector index -> (sequence number of the write, 512 bytes).
    sectors: BTreeMap<u64, (u64, Box<[u8]>)>,
    queue: VecDeque<PendingWrite>,
    next_seq: u64,
    /// Every write with a sequence number up to this one has reached the device.
    flushed_seq: u64,
    flushing: bool,
    reads_in_flight: u32,
    idle_waiters: Vec<oneshot::Sender<()>>,
}

/// One v86 disk over a QemuWeb device stack: the JS object v86 is given, and the state
/// behind it.
pub struct DiskObject {
    id: String,
    vm_id: String,
    dev: Rc<dyn BlockDevice>,
    size: u64,
    head: RefCell<Vec<u8>>,
    wb: RefCell<WriteBack>,
    host: Rc<dyn EngineHost>,
    js: Object,
    closures: RefCell<Vec<Box<dyn std::any::Any>>>,
    /// Writes that failed to reach the device.
    write_errors: Cell<u64>,
}

impl DiskObject {
    /// Builds the disk object of disk `id` over `dev`, reading its first bytes.
    pub async fn new(
        vm_id: &str,
        id: &str,
        dev: Rc<dyn BlockDevice>,
        host: Rc<dyn EngineHost>,
    ) -> Result<Rc<Self>> {
        let size = dev.size();
        let head_len = size.min(HEAD_BYTES) as usize;
        let head = dev
            .read_vec(0, head_len)
            .await
            .map_err(|e| RuntimeError::storage(id, e))?;
        let this = Rc::new(Self {
            id: id.to_string(),
            vm_id: vm_id.to_string(),
            dev,
            size,
            head: RefCell::new(head),
            wb: RefCell::new(WriteBack {
                next_seq: 1,
                ..WriteBack::default()
            }),
            host,
            js: Object::new(),
            closures: RefCell::new(Vec::new()),
            write_errors: Cell::new(0),
        });
        this.install();
        Ok(this)
    }

    /// The JS object to pass to v86 as `hda`/`hdb`.
    pub fn js(&self) -> &Object {
        &self.js
    }

    fn keep<T: 'static>(&self, closure: T) {
        self.closures.borrow_mut().push(Box::new(closure));
    }

    fn install(self: &Rc<Self>) {
        let js = &self.js;
        set(js, "byteLength", &JsValue::from_f64(self.size as f64));

        let obj = js.clone();
        let load = Closure::<dyn FnMut()>::new(move || {
            // The first bytes were read in `new`; v86 may go on at once.
            if let Ok(f) =
                Reflect::get(&obj, &"onload".into()).and_then(|f| f.dyn_into::<Function>())
            {
                let _ = f.call0(&JsValue::NULL);
            }
        });
        set(js, "load", load.as_ref());
        self.keep(load);

        let weak = Rc::downgrade(self);
        let get_from_cache =
            Closure::<dyn FnMut(f64, f64) -> JsValue>::new(move |start: f64, len: f64| {
                weak.upgrade()
                    .and_then(|this| this.cached(start as u64, len as usize))
                    .map(|bytes| Uint8Array::from(&bytes[..]).into())
                    .unwrap_or(JsValue::UNDEFINED)
            });
        set(js, "get_from_cache", get_from_cache.as_ref());
        self.keep(get_from_cache);

        for name in ["get", "get_and_cache"] {
            let weak = Rc::downgrade(self);
            let get = Closure::<dyn FnMut(f64, f64, Function)>::new(
                move |start: f64, len: f64, cb: Function| {
                    if let Some(this) = weak.upgrade() {
                        this.get(start as u64, len as usize, cb);
                    }
                },
            );
            set(js, name, get.as_ref());
            self.keep(get);
        }

        let weak = Rc::downgrade(self);
        let set_fn = Closure::<dyn FnMut(f64, Uint8Array, JsValue)>::new(
            move |start: f64, data: Uint8Array, cb: JsValue| {
                if let Some(this) = weak.upgrade() {
                    this.set(start as u64, data.to_vec(), cb.dyn_into::<Function>().ok());
                }
            },
        );
        set(js, "set", set_fn.as_ref());
        self.keep(set_fn);

        let weak = Rc::downgrade(self);
        let get_state = Closure::<dyn FnMut() -> JsValue>::new(move || {
            weak.upgrade()
                .map(|t| t.state())
                .unwrap_or_else(|| Array::new().into())
        });
        set(js, "get_state", get_state.as_ref());
        self.keep(get_state);

        let weak = Rc::downgrade(self);
        let set_state = Closure::<dyn FnMut(JsValue)>::new(move |state: JsValue| {
            if let Some(this) = weak.upgrade() {
                this.restore_state(&state);
            }
        });
        set(js, "set_state", set_state.as_ref());
        self.keep(set_state);
    }

    /// Copies the write-back map's sectors over `buf`, which holds the bytes at `start`.
    fn patch(wb: &WriteBack, start: u64, buf: &mut [u8]) {
        if wb.sectors.is_empty() || buf.is_empty() {
            return;
        }
        let end = start + buf.len() as u64;
        for (&sector, (_, data)) in wb.sectors.range(start / SECTOR..end.div_ceil(SECTOR)) {
            let s = sector * SECTOR;
            let from = s.max(start);
            let to = (s + SECTOR).min(end);
            buf[(from - start) as usize..(to - start) as usize]
                .copy_from_slice(&data[(from - s) as usize..(to - s) as usize]);
        }
    }

    fn cached(&self, start: u64, len: usize) -> Option<Vec<u8>> {
        let head = self.head.borrow();
        let end = start.checked_add(len as u64)?;
        if end > head.len() as u64 {
            return None;
        }
        let mut out = head[start as usize..end as usize].to_vec();
        Self::patch(&self.wb.borrow(), start, &mut out);
        Some(out)
    }

    fn get(self: Rc<Self>, start: u64, len: usize, cb: Function) {
        // Answer at once what the head holds (boot code, partition table).
        if let Some(bytes) = self.cached(start, len) {
            let _ = cb.call1(&JsValue::NULL, &Uint8Array::from(&bytes[..]));
            return;
        }
        self.wb.borrow_mut().reads_in_flight += 1;
        spawn_local(async move {
            let mut buf = vec![0u8; len];
            let result = self.dev.read_at(start, &mut buf).await;
            {
                let mut wb = self.wb.borrow_mut();
                wb.reads_in_flight -= 1;
                if result.is_ok() {
                    Self::patch(&wb, start, &mut buf);
                }
            }
            self.purge();
            match result {
                Ok(()) => {
                    let _ = cb.call1(&JsValue::NULL, &Uint8Array::from(&buf[..]));
                }
                Err(e) => self.host.emit(Event::error(
                    None,
                    Some(&self.vm_id),
                    &RuntimeError::Storage {
                        disk: self.id.clone(),
                        source: e,
                    },
                )),
            }
        });
    }

    fn set(self: Rc<Self>, start: u64, data: Vec<u8>, callback: Option<Function>) {
        let aligned = start % SECTOR == 0 && data.len() as u64 % SECTOR == 0;
        if !aligned {
            self.host.emit(Event::Log {
                vm_id: Some(self.vm_id.clone()),
                level: LogLevel::Warn,
                message: format!(
                    "{}: unaligned write of {} bytes at {start}: visible to reads only once written",
                    self.id,
                    data.len()
                ),
            });
        }
        {
            // Keep the head (get_from_cache) current.
            let mut head = self.head.borrow_mut();
            let head_len = head.len() as u64;
            if start < head_len {
                let n = (head_len - start).min(data.len() as u64) as usize;
                head[start as usize..start as usize + n].copy_from_slice(&data[..n]);
            }
        }
        let start_flusher = {
            let mut wb = self.wb.borrow_mut();
            let seq = wb.next_seq;
            wb.next_seq += 1;
            if aligned {
                for (i, chunk) in data.chunks(SECTOR as usize).enumerate() {
                    wb.sectors
                        .insert(start / SECTOR + i as u64, (seq, chunk.into()));
                }
            }
            wb.queue.push_back(PendingWrite {
                offset: start,
                data,
                seq,
                callback,
            });
            !std::mem::replace(&mut wb.flushing, true)
        };
        if start_flusher {
            spawn_local(self.flush_loop());
        }
    }

    async fn flush_loop(self: Rc<Self>) {
        loop {
            let next = self.wb.borrow_mut().queue.pop_front();
            let Some(w) = next else { break };
            if let Err(e) = self.dev.write_at(w.offset, &w.data).await {
                self.write_errors.set(self.write_errors.get() + 1);
                self.host.emit(Event::error(
                    None,
                    Some(&self.vm_id),
                    &RuntimeError::Storage {
                        disk: self.id.clone(),
                        source: e,
                    },
                ));
            }
            self.wb.borrow_mut().flushed_seq = w.seq;
            if let Some(cb) = w.callback {
                let _ = cb.call0(&JsValue::NULL);
            }
        }
        let waiters = {
            let mut wb = self.wb.borrow_mut();
            wb.flushing = false;
            std::mem::take(&mut wb.idle_waiters)
        };
        for w in waiters {
            let _ = w.send(());
        }
        self.purge();
    }

    /// Drops sectors from the map whose writes reached the device, when no read is in
    /// flight that could have read the device before they did.
    fn purge(&self) {
        let mut wb = self.wb.borrow_mut();
        if wb.reads_in_flight == 0 && !wb.sectors.is_empty() {
            let flushed = wb.flushed_seq;
            wb.sectors.retain(|_, (seq, _)| *seq > flushed);
        }
    }

    /// Waits until every write so far has reached the device.
    pub async fn flush(&self) -> Result<()> {
        let rx = {
            let mut wb = self.wb.borrow_mut();
            if !wb.flushing && wb.queue.is_empty() {
                None
            } else {
                let (tx, rx) = oneshot::channel();
                wb.idle_waiters.push(tx);
                Some(rx)
            }
        };
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        match self.write_errors.get() {
            0 => Ok(()),
            n => Err(RuntimeError::Engine(format!(
                "{}: {n} guest writes could not be stored",
                self.id
            ))),
        }
    }

    /// Waits until no read of this disk is in flight (bounded: a read that never
    /// completes fails the wait after [`QUIESCE_TIMEOUT_MS`]).
    pub async fn quiesce(&self) -> Result<()> {
        let started = js_sys::Date::now();
        while self.wb.borrow().reads_in_flight > 0 {
            if js_sys::Date::now() - started > f64::from(QUIESCE_TIMEOUT_MS) {
                return Err(RuntimeError::Engine(format!(
                    "{}: a disk read did not complete within {} s",
                    self.id,
                    QUIESCE_TIMEOUT_MS / 1000
                )));
            }
            gloo_timers::future::TimeoutFuture::new(5).await;
        }
        Ok(())
    }

    /// Forgets queued writes (a forced stop) and lets the JS object go.
    pub fn release(&self, drop_pending: bool) {
        if drop_pending {
            self.wb.borrow_mut().queue.clear();
        }
        for name in [
            "load",
            "get",
            "get_and_cache",
            "get_from_cache",
            "set",
            "get_state",
            "set_state",
        ] {
            let _ = Reflect::delete_property(&self.js, &JsValue::from_str(name));
        }
        self.closures.borrow_mut().clear();
    }

    /// v86 state: `[[[sector, Uint8Array], ...]]`, the writes not yet on the device.
    fn state(&self) -> JsValue {
        let entries = Array::new();
        for (sector, (_, data)) in &self.wb.borrow().sectors {
            let pair = Array::new();
            pair.push(&JsValue::from_f64(*sector as f64));
            pair.push(&Uint8Array::from(&data[..]));
            entries.push(&pair);
        }
        Array::of1(&entries).into()
    }

    fn restore_state(self: Rc<Self>, state: &JsValue) {
        let entries = Reflect::get(state, &JsValue::from_f64(0.0)).unwrap_or(JsValue::UNDEFINED);
        let Some(entries) = entries.dyn_ref::<Array>() else {
            return;
        };
        for pair in entries.iter() {
            let sector = Reflect::get(&pair, &JsValue::from_f64(0.0))
                .ok()
                .and_then(|v| v.as_f64());
            let data = Reflect::get(&pair, &JsValue::from_f64(1.0))
                .ok()
                .and_then(|v| v.dyn_into::<Uint8Array>().ok());
            if let (Some(sector), Some(data)) = (sector, data) {
                let start = sector as u64 * SECTOR;
                if data.length() as u64 == SECTOR && start + SECTOR <= self.size {
                    self.clone().set(start, data.to_vec(), None);
                }
            }
        }
    }
}

/// What the v86 engine needs besides the disks.
pub struct V86Config {
    /// The VM.
    pub vm_id: String,
    /// URL of `libv86.mjs`.
    pub module_url: String,
    /// URL of `v86.wasm`.
    pub wasm_url: String,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// The system BIOS.
    pub bios: Vec<u8>,
    /// The VGA BIOS.
    pub vga_bios: Option<Vec<u8>>,
    /// A kernel (bzImage) for direct boot.
    pub kernel: Option<Vec<u8>>,
    /// Its initrd.
    pub initrd: Option<Vec<u8>>,
    /// Its command line.
    pub cmdline: Option<String>,
    /// A display ring (`SharedArrayBuffer`) to send the VGA screen to.
    pub display: Option<js_sys::SharedArrayBuffer>,
    /// A saved machine state (`save_state`, raw or zstd) to resume instead of booting.
    pub initial_state: Option<Uint8Array>,
    /// A NIC on the page's virtual network.
    pub nic: Option<V86Nic>,
}

fn buffer_image(bytes: &[u8]) -> Object {
    let obj = Object::new();
    set(&obj, "buffer", &Uint8Array::from(bytes).buffer());
    obj
}

/// A guest running on v86.
pub struct V86Engine {
    vm_id: String,
    emulator: V86,
    disks: Vec<Rc<DiskObject>>,
    listeners: RefCell<Vec<Box<dyn std::any::Any>>>,
    stopped: Cell<bool>,
    /// The display, once attached (at `emulator-started`), with the closures v86 calls.
    display: Rc<RefCell<Option<AttachedDisplay>>>,
    /// The pointer buttons held (left, middle, right): v86 takes their whole state.
    buttons: Cell<[bool; 3]>,
    /// The NIC's connection to the page, once made (at `emulator-started`).
    nic: Rc<RefCell<Option<ConnectedNic>>>,
}

/// A display attached to v86's screen adapter.
struct AttachedDisplay {
    state: Rc<DisplayState>,
    _closures: Vec<Box<dyn std::any::Any>>,
}

/// How often, at most, the screen is published to the display ring (a 60 Hz display).
pub const FRAME_INTERVAL_MS: u32 = 16;

/// The screens and the ring they go to.
struct DisplayState {
    screen: RefCell<TextScreen>,
    graphics: RefCell<GraphicsScreen>,
    /// Whether the VGA is in a graphics mode (v86's `set_mode`).
    graphical: Cell<bool>,
    /// The emulator (its VGA renders graphics frames on request).
    emulator: JsValue,
    /// The display ring (text and graphics frames share its sequence).
    ring: RefCell<FrameRing>,
    scheduled: Cell<bool>,
    stopped: Cell<bool>,
}

impl DisplayState {
    /// Publishes the screen's changes within [`FRAME_INTERVAL_MS`], once for any number
    /// of changes meanwhile.
    fn schedule(self: Rc<Self>) {
        if self.scheduled.replace(true) || self.stopped.get() {
            return;
        }
        spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(FRAME_INTERVAL_MS).await;
            self.scheduled.set(false);
            if self.stopped.get() {
                return;
            }
            let now = js_sys::Date::now();
            let sequence = self.ring.borrow().next_sequence();
            let graphical = self.graphical.get();
            let frame = if graphical {
                // v86 calls the adapter's `update_buffer` (see `attach_display`) from here.
                self.fill_graphics();
                self.graphics.borrow_mut().take_frame(sequence, now)
            } else {
                self.screen.borrow_mut().take_frame(now)
            };
            self.ring.borrow_mut().publish(frame);
            // The guest draws into video memory without telling anyone: look again.
            if graphical {
                self.schedule();
            }
        });
    }

    /// Has v86's VGA render its graphics framebuffer (`screen_fill_buffer`, which hands
    /// the result to the adapter's `update_buffer`).
    fn fill_graphics(&self) {
        let mut vga = self.emulator.clone();
        for key in ["v86", "cpu", "devices", "vga"] {
            vga = Reflect::get(&vga, &key.into()).unwrap_or(JsValue::UNDEFINED);
        }
        if let Ok(fill) =
            Reflect::get(&vga, &"screen_fill_buffer".into()).and_then(|f| f.dyn_into::<Function>())
        {
            let _ = fill.call0(&vga);
        }
    }

    /// Copies the layers of v86's `update_buffer(layers)` into the graphics screen.
    fn take_layers(&self, layers: &JsValue) {
        let Some(layers) = layers.dyn_ref::<Array>() else {
            return;
        };
        let num = |v: &JsValue, key: &str| {
            Reflect::get(v, &key.into())
                .ok()
                .and_then(|n| n.as_f64())
                .unwrap_or(0.0)
        };
        let mut graphics = self.graphics.borrow_mut();
        for layer in layers.iter() {
            let image = Reflect::get(&layer, &"image_data".into()).unwrap_or_default();
            let Ok(data) = Reflect::get(&image, &"data".into())
                .and_then(|d| d.dyn_into::<js_sys::Uint8ClampedArray>())
            else {
                continue;
            };
            let image_width = num(&image, "width") as u32;
            let l = Layer {
                screen_x: num(&layer, "screen_x") as i64,
                screen_y: num(&layer, "screen_y") as i64,
                buffer_x: num(&layer, "buffer_x") as u32,
                buffer_y: num(&layer, "buffer_y") as u32,
                buffer_width: num(&layer, "buffer_width") as u32,
                buffer_height: num(&layer, "buffer_height") as u32,
            };
            // Only the image rows the layer shows cross into Rust.
            let stride = image_width.saturating_mul(4);
            let start = l.buffer_y.saturating_mul(stride).min(data.length());
            let end = l
                .buffer_y
                .saturating_add(l.buffer_height)
                .saturating_mul(stride)
                .min(data.length());
            let rows = data.subarray(start, end).to_vec();
            graphics.blit(&l, image_width, &rows);
        }
    }
}

impl V86Engine {
    /// Loads v86 and starts the guest; resolves once the emulator runs.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Fetch`] if v86's module cannot be loaded, [`RuntimeError::Engine`]
    /// if v86 fails or does not start in time.
    pub async fn start(
        config: V86Config,
        disks: Vec<Rc<DiskObject>>,
        host: Rc<dyn EngineHost>,
    ) -> Result<Self> {
        let fetch_err = |reason: String| RuntimeError::Fetch {
            what: "the v86 module".into(),
            url: config.module_url.clone(),
            reason,
        };
        let promise = import_module(&config.module_url).map_err(|e| fetch_err(js_text(&e)))?;
        let module = JsFuture::from(promise)
            .await
            .map_err(|e| fetch_err(js_text(&e)))?;
        let ctor: Function = Reflect::get(&module, &"V86".into())
            .ok()
            .and_then(|c| c.dyn_into().ok())
            .ok_or_else(|| fetch_err("the module has no V86 export".into()))?;

        let options = Object::new();
        set(&options, "wasm_path", &config.wasm_url.as_str().into());
        set(
            &options,
            "memory_size",
            &JsValue::from_f64(config.memory_bytes as f64),
        );
        set(
            &options,
            "vga_memory_size",
            &JsValue::from_f64((8u32 << 20) as f64),
        );
        // A resumed VM runs once its state is restored.
        set(
            &options,
            "autostart",
            &config.initial_state.is_none().into(),
        );
        set(&options, "disable_keyboard", &true.into());
        set(&options, "disable_mouse", &true.into());
        set(&options, "disable_speaker", &true.into());
        set(&options, "bios", &buffer_image(&config.bios));
        if let Some(vga) = &config.vga_bios {
            set(&options, "vga_bios", &buffer_image(vga));
        }
        for (disk, name) in disks.iter().zip(["hda", "hdb"]) {
            set(&options, name, disk.js());
        }
        if let Some(k) = &config.kernel {
            set(&options, "bzimage", &buffer_image(k));
        }
        if let Some(i) = &config.initrd {
            set(&options, "initrd", &buffer_image(i));
        }
        if let Some(c) = &config.cmdline {
            set(&options, "cmdline", &c.as_str().into());
        }
        if let Some(nic) = &config.nic {
            set(&options, "net_device", &nic.net_device());
        }

        let emulator: V86 = Reflect::construct(&ctor, &Array::of1(&options))
            .map_err(|e| RuntimeError::Engine(format!("new V86() failed: {}", js_text(&e))))?
            .unchecked_into();

        let engine = Self {
            vm_id: config.vm_id.clone(),
            emulator,
            disks,
            listeners: RefCell::new(Vec::new()),
            stopped: Cell::new(false),
            display: Rc::default(),
            buttons: Cell::new([false; 3]),
            nic: Rc::default(),
        };
        let heard = Rc::new(Cell::new(false));
        // v86 makes its screen adapter and NIC during its asynchronous set-up; at
        // `emulator-started` they exist and the guest has not run an instruction yet. The
        // display and the NIC are connected then; their errors end the start once it is over.
        let mut start_errors = Vec::new();
        if let Some(buffer) = config.display.clone() {
            let emulator = engine.emulator.clone();
            start_errors.push(engine.at_start(engine.display.clone(), move || {
                attach_display(&emulator, buffer.clone())
            })?);
        }
        if let Some(nic) = config.nic {
            engine.listen("net0-send", v86_net::sender(&nic.port))?;
            let emulator = engine.emulator.clone();
            start_errors.push(engine.at_start(engine.nic.clone(), move || {
                v86_net::connect(&emulator, &nic)
            })?);
        }

        // Serial output, batched: bytes that arrive in one turn of the event loop go out
        // in one event.
        let pending: Rc<RefCell<Vec<u8>>> = Rc::default();
        {
            let host = host.clone();
            let vm_id = config.vm_id.clone();
            let heard = heard.clone();
            let on_byte = Closure::<dyn FnMut(f64)>::new(move |byte: f64| {
                heard.set(true);
                let first = {
                    let mut p = pending.borrow_mut();
                    p.push(byte as u8);
                    p.len() == 1
                };
                if first {
                    let pending = pending.clone();
                    let host = host.clone();
                    let vm_id = vm_id.clone();
                    spawn_local(async move {
                        gloo_timers::future::TimeoutFuture::new(1).await;
                        let data = std::mem::take(&mut *pending.borrow_mut());
                        if !data.is_empty() {
                            host.emit(Event::SerialOut { vm_id, data });
                        }
                    });
                }
            });
            engine.listen("serial0-output-byte", on_byte)?;
        }
        {
            let heard = heard.clone();
            let on_char = Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| heard.set(true));
            engine.listen("screen-put-char", on_char)?;
        }

        let rx = engine.once("emulator-started")?;
        let loaded = match config.initial_state {
            Some(_) => Some(engine.once("emulator-loaded")?),
            None => None,
        };
        {
            // v86 downloads its wasm itself: its progress is the engine's download.
            let host = host.clone();
            let vm_id = config.vm_id.clone();
            let on_progress = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
                let num = |k: &str| Reflect::get(&e, &k.into()).ok().and_then(|v| v.as_f64());
                let known =
                    Reflect::get(&e, &"lengthComputable".into()).is_ok_and(|v| v.is_truthy());
                host.emit(Event::Progress {
                    vm_id: vm_id.clone(),
                    what: "v86Wasm".into(),
                    loaded: num("loaded").unwrap_or(0.0) as u64,
                    total: num("total").filter(|t| known && *t > 0.0).map(|t| t as u64),
                    total_of: ProgressTotal::FileSize,
                });
            });
            engine.listen("download-progress", on_progress)?;
        }
        {
            let host = host.clone();
            let vm_id = config.vm_id.clone();
            let on_download_error = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
                let name = Reflect::get(&e, &"file_name".into())
                    .ok()
                    .and_then(|v| v.as_string())
                    .unwrap_or_default();
                host.emit(Event::error(
                    None,
                    Some(&vm_id),
                    &RuntimeError::Fetch {
                        what: "a v86 file".into(),
                        url: name,
                        reason: "download failed".into(),
                    },
                ));
            });
            engine.listen("download-error", on_download_error)?;
        }

        let timeout = gloo_timers::future::TimeoutFuture::new(START_TIMEOUT_MS);
        futures::pin_mut!(timeout);
        if let (Some(state), Some(loaded)) = (&config.initial_state, loaded) {
            if let Err(e) = engine.restore(state, loaded, &mut timeout).await {
                let _ = engine.shutdown(true).await;
                return Err(e);
            }
        }
        match futures::future::select(rx, timeout).await {
            futures::future::Either::Left((Ok(()), _)) => {}
            _ => {
                let _ = engine.shutdown(true).await;
                return Err(RuntimeError::Engine(format!(
                    "v86 did not start within {} s (check that {} is v86's wasm)",
                    START_TIMEOUT_MS / 1000,
                    config.wasm_url
                )));
            }
        }

        // The NIC's error first, then the display's (the order they were reported in).
        for error in start_errors.iter().rev() {
            let failed = error.borrow_mut().take();
            if let Some(e) = failed {
                let _ = engine.shutdown(true).await;
                return Err(e);
            }
        }

        // A BIOS that is not a BIOS boots nothing and says nothing: tell the user (a
        // resumed guest may well be quiet, at its prompt).
        let vm_id = config.vm_id.clone();
        let resumed = config.initial_state.is_some();
        spawn_local(async move {
            if resumed {
                return;
            }
            gloo_timers::future::TimeoutFuture::new(SILENCE_WARNING_MS).await;
            if !heard.get() {
                host.emit(Event::Log {
                    vm_id: Some(vm_id),
                    level: LogLevel::Warn,
                    message: format!(
                        "no serial or screen output {} s after start: check the BIOS image \
                         (SeaBIOS, e.g. bios-256k.bin) and the boot disk",
                        SILENCE_WARNING_MS / 1000
                    ),
                });
            }
        });
        Ok(engine)
    }

    /// A receiver that completes at the next `event` of the emulator.
    fn once(&self, event: &str) -> Result<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel::<()>();
        let tx = RefCell::new(Some(tx));
        let on_event = Closure::<dyn FnMut()>::new(move || {
            if let Some(tx) = tx.borrow_mut().take() {
                let _ = tx.send(());
            }
        });
        self.listen(event, on_event)?;
        Ok(rx)
    }

    /// Restores `state` into the emulator once it has loaded, then lets it run.
    async fn restore(
        &self,
        state: &Uint8Array,
        loaded: oneshot::Receiver<()>,
        timeout: &mut std::pin::Pin<&mut gloo_timers::future::TimeoutFuture>,
    ) -> Result<()> {
        match futures::future::select(loaded, timeout.as_mut()).await {
            futures::future::Either::Left((Ok(()), _)) => {}
            _ => {
                return Err(RuntimeError::Engine(format!(
                    "v86 did not load within {} s",
                    START_TIMEOUT_MS / 1000
                )))
            }
        }
        // v86 wants the state's own buffer.
        let whole = state.byte_offset() == 0 && state.byte_length() == state.buffer().byte_length();
        let buffer = if whole {
            state.buffer()
        } else {
            state.slice(0, state.length()).buffer()
        };
        let restored = match self.emulator.restore_state(&buffer) {
            Ok(p) => JsFuture::from(p).await.map(|_| ()),
            Err(e) => Err(e),
        };
        restored.map_err(|e| {
            RuntimeError::Snapshot(qemuweb_storage::StorageError::corrupt(format!(
                "v86 refused the machine state: {}",
                js_text(&e)
            )))
        })?;
        self.emulator
            .run()
            .map(|_| ())
            .map_err(|e| RuntimeError::Engine(format!("v86 run: {}", js_text(&e))))
    }

    /// Runs `make` once at `emulator-started` (v86 has made its devices and the guest
    /// has not run an instruction yet) and keeps what it makes in `slot`; returns the cell
    /// that holds its error, if it fails, for the start to report.
    fn at_start<T: 'static>(
        &self,
        slot: Rc<RefCell<Option<T>>>,
        mut make: impl FnMut() -> Result<T> + 'static,
    ) -> Result<Rc<RefCell<Option<RuntimeError>>>> {
        let error: Rc<RefCell<Option<RuntimeError>>> = Rc::default();
        let failed = error.clone();
        let on_started = Closure::<dyn FnMut()>::new(move || {
            if slot.borrow().is_some() || failed.borrow().is_some() {
                return;
            }
            match make() {
                Ok(made) => *slot.borrow_mut() = Some(made),
                Err(e) => *failed.borrow_mut() = Some(e),
            }
        });
        self.listen("emulator-started", on_started)?;
        Ok(error)
    }

    fn listen<F: ?Sized + wasm_bindgen::closure::WasmClosure + 'static>(
        &self,
        event: &str,
        closure: Closure<F>,
    ) -> Result<()> {
        self.emulator
            .add_listener(event, closure.as_ref().unchecked_ref())
            .map_err(|e| RuntimeError::Engine(format!("add_listener({event}): {}", js_text(&e))))?;
        self.listeners.borrow_mut().push(Box::new(closure));
        Ok(())
    }

    async fn shutdown(&self, force: bool) -> Result<()> {
        if self.stopped.replace(true) {
            return Ok(());
        }
        let flushed = if force {
            Ok(())
        } else {
            self.flush_disks().await
        };
        let destroyed = match self.emulator.destroy() {
            Ok(p) => JsFuture::from(p).await.map(|_| ()),
            Err(e) => Err(e),
        };
        for d in &self.disks {
            d.release(force);
        }
        if let Some(display) = self.display.borrow_mut().take() {
            display.state.stopped.set(true);
        }
        self.nic.borrow_mut().take();
        self.listeners.borrow_mut().clear();
        flushed?;
        destroyed.map_err(|e| RuntimeError::Engine(format!("v86 destroy: {}", js_text(&e))))
    }

    async fn flush_disks(&self) -> Result<()> {
        let mut first_err = None;
        for d in &self.disks {
            if let Err(e) = d.flush().await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The VM this engine runs.
    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }
}

#[async_trait(?Send)]
impl Engine for V86Engine {
    fn kind(&self) -> EngineKind {
        EngineKind::V86
    }

    fn send_serial(&self, data: &[u8]) -> Result<()> {
        self.emulator
            .serial_send_bytes(0, &Uint8Array::from(data))
            .map_err(|e| RuntimeError::Engine(format!("serial input: {}", js_text(&e))))
    }

    fn send_input(&self, events: &[InputEvent]) -> Result<()> {
        let bus = Reflect::get(&self.emulator, &"bus".into()).unwrap_or_default();
        let send: Function = Reflect::get(&bus, &"send".into())
            .ok()
            .and_then(|f| f.dyn_into().ok())
            .ok_or_else(|| RuntimeError::Engine("v86 has no bus to send input on".into()))?;
        let post = |name: &str, value: JsValue| {
            send.call2(&bus, &name.into(), &value)
                .map(|_| ())
                .map_err(|e| RuntimeError::Engine(format!("v86 {name}: {}", js_text(&e))))
        };
        let pair = |a: i32, b: i32| -> JsValue { Array::of2(&a.into(), &b.into()).into() };
        for event in events {
            match event {
                InputEvent::Key { code, down } => {
                    for byte in Key::from_code(code)?.set1(*down) {
                        post("keyboard-code", byte.into())?;
                    }
                }
                InputEvent::Move { dx, dy, .. } => {
                    if *dx != 0 || *dy != 0 {
                        post("mouse-delta", pair(*dx, -*dy))?;
                    }
                }
                InputEvent::Button { button, down } => {
                    let mut held = self.buttons.get();
                    held[match button {
                        PointerButton::Left => 0,
                        PointerButton::Middle => 1,
                        PointerButton::Right => 2,
                    }] = *down;
                    self.buttons.set(held);
                    let state: Array = held.iter().map(|&b| JsValue::from(b)).collect();
                    post("mouse-click", state.into())?;
                }
                InputEvent::Wheel { dy, .. } => {
                    // v86's PS/2 wheel: positive is up; horizontal notches are dropped.
                    if *dy != 0 {
                        post("mouse-wheel", pair(-*dy, 0))?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn reset(&self) -> Result<()> {
        // Writes already made stay: flush them so the rebooted guest reads them.
        self.flush_disks().await?;
        self.emulator
            .restart()
            .map_err(|e| RuntimeError::Engine(format!("restart: {}", js_text(&e))))
    }

    async fn flush(&self) -> Result<()> {
        self.flush_disks().await
    }

    async fn stop(&self, force: bool) -> Result<()> {
        self.shutdown(force).await
    }

    /// Stops v86's CPU, then waits until no disk read is in flight (a read answered after
    /// the save would be lost to the saved device state) and every write reached the
    /// disks' stacks.
    async fn pause(&self) -> Result<()> {
        let stopped = match self.emulator.stop() {
            Ok(p) => JsFuture::from(p).await.map(|_| ()),
            Err(e) => Err(e),
        };
        stopped.map_err(|e| RuntimeError::Engine(format!("v86 stop: {}", js_text(&e))))?;
        for d in &self.disks {
            d.quiesce().await?;
        }
        self.flush_disks().await
    }

    async fn unpause(&self) -> Result<()> {
        self.emulator
            .run()
            .map(|_| ())
            .map_err(|e| RuntimeError::Engine(format!("v86 run: {}", js_text(&e))))
    }

    async fn save_state(&self) -> Result<crate::engine::SavedState> {
        let saved = match self.emulator.save_state() {
            Ok(p) => JsFuture::from(p).await,
            Err(e) => Err(e),
        };
        let buffer =
            saved.map_err(|e| RuntimeError::Engine(format!("v86 save_state: {}", js_text(&e))))?;
        Ok(crate::engine::SavedState {
            pieces: vec![Uint8Array::new(&buffer)],
            encoding: qemuweb_storage::snapshot::StateEncoding::Raw,
        })
    }
}

/// Sends the VGA text screen to the display ring in `buffer`: wraps the methods of
/// v86's (headless) screen adapter through which the VGA reports text cells, text mode
/// sizes and the font in plane 2, renders them ([`TextScreen`]) and publishes a frame
/// at most once per [`FRAME_INTERVAL_MS`] (the ring never blocks v86). The adapter's
/// own methods still run first.
fn attach_display(
    emulator: &JsValue,
    buffer: js_sys::SharedArrayBuffer,
) -> Result<AttachedDisplay> {
    let ring = FrameRing::connect(SabMemory::from_buffer(buffer))?;
    let adapter: Object = Reflect::get(emulator, &"screen_adapter".into())
        .ok()
        .and_then(|a| a.dyn_into().ok())
        .ok_or_else(|| RuntimeError::Engine("v86 has no screen adapter".into()))?;
    let state = Rc::new(DisplayState {
        screen: RefCell::new(TextScreen::default()),
        graphics: RefCell::new(GraphicsScreen::new(320, 200)),
        graphical: Cell::new(false),
        emulator: emulator.clone(),
        ring: RefCell::new(ring),
        scheduled: Cell::new(false),
        stopped: Cell::new(false),
    });
    let original = |name: &str| -> Option<Function> {
        Reflect::get(&adapter, &name.into())
            .ok()
            .and_then(|f| f.dyn_into().ok())
    };
    let wrap = |name: &str, f: JsValue| {
        set(&adapter, name, &f);
    };

    let mut closures: Vec<Box<dyn std::any::Any>> = Vec::new();
    let (st, orig, this) = (state.clone(), original("put_char"), adapter.clone());
    let put_char = Closure::<dyn FnMut(JsValue, JsValue, JsValue, JsValue, JsValue, JsValue)>::new(
        move |row: JsValue, col: JsValue, ch: JsValue, flags: JsValue, bg: JsValue, fg: JsValue| {
            if let Some(f) = &orig {
                let args: Array = [&row, &col, &ch, &flags, &bg, &fg].into_iter().collect();
                let _ = f.apply(&this, &args);
            }
            let n = |v: &JsValue| v.as_f64().unwrap_or(0.0) as u32;
            st.screen
                .borrow_mut()
                .put_char(n(&row), n(&col), n(&ch) as u8, n(&fg), n(&bg));
            st.clone().schedule();
        },
    );
    wrap("put_char", put_char.as_ref().clone());
    closures.push(Box::new(put_char));

    let (st, orig, this) = (state.clone(), original("set_size_text"), adapter.clone());
    let set_size =
        Closure::<dyn FnMut(JsValue, JsValue)>::new(move |cols: JsValue, rows: JsValue| {
            if let Some(f) = &orig {
                let _ = f.call2(&this, &cols, &rows);
            }
            let n = |v: &JsValue| v.as_f64().unwrap_or(0.0) as u32;
            st.screen.borrow_mut().set_size(n(&cols), n(&rows));
            st.clone().schedule();
        });
    wrap("set_size_text", set_size.as_ref().clone());
    closures.push(Box::new(set_size));

    let (st, orig, this) = (state.clone(), original("set_font_bitmap"), adapter.clone());
    let set_font = Closure::<dyn FnMut(JsValue, JsValue, JsValue, JsValue, JsValue, JsValue)>::new(
        move |height: JsValue,
              w9: JsValue,
              dbl: JsValue,
              copy8: JsValue,
              plane2: JsValue,
              dirty: JsValue| {
            if let Some(f) = &orig {
                let args: Array = [&height, &w9, &dbl, &copy8, &plane2, &dirty]
                    .into_iter()
                    .collect();
                let _ = f.apply(&this, &args);
            }
            st.screen.borrow_mut().set_cell_width(
                w9.is_truthy(),
                dbl.is_truthy(),
                copy8.is_truthy(),
            );
            if let Some(plane2) = plane2.dyn_ref::<Uint8Array>() {
                let len = plane2.length().min((256 * GLYPH_STRIDE) as u32);
                let bytes = plane2.subarray(0, len).to_vec();
                let h = height.as_f64().unwrap_or(16.0) as u32;
                st.screen.borrow_mut().set_font(h, &bytes);
            }
            st.clone().schedule();
        },
    );
    wrap("set_font_bitmap", set_font.as_ref().clone());
    closures.push(Box::new(set_font));

    let (st, orig, this) = (state.clone(), original("set_mode"), adapter.clone());
    let set_mode = Closure::<dyn FnMut(JsValue)>::new(move |graphical: JsValue| {
        if let Some(f) = &orig {
            let _ = f.call1(&this, &graphical);
        }
        let graphical = graphical.is_truthy();
        if st.graphical.replace(graphical) != graphical {
            // The other screen was not shown meanwhile: send it whole.
            if graphical {
                st.graphics.borrow_mut().invalidate();
            } else {
                st.screen.borrow_mut().invalidate();
            }
        }
        st.clone().schedule();
    });
    wrap("set_mode", set_mode.as_ref().clone());
    closures.push(Box::new(set_mode));

    let (st, orig, this) = (
        state.clone(),
        original("set_size_graphical"),
        adapter.clone(),
    );
    let set_size_graphical = Closure::<dyn FnMut(JsValue, JsValue, JsValue, JsValue)>::new(
        move |w: JsValue, h: JsValue, vw: JsValue, vh: JsValue| {
            if let Some(f) = &orig {
                let args: Array = [&w, &h, &vw, &vh].into_iter().collect();
                let _ = f.apply(&this, &args);
            }
            let n = |v: &JsValue| v.as_f64().unwrap_or(0.0) as u32;
            st.graphics.borrow_mut().set_size(n(&w), n(&h));
            st.clone().schedule();
        },
    );
    wrap("set_size_graphical", set_size_graphical.as_ref().clone());
    closures.push(Box::new(set_size_graphical));

    let (st, orig, this) = (state.clone(), original("update_buffer"), adapter.clone());
    let update_buffer = Closure::<dyn FnMut(JsValue)>::new(move |layers: JsValue| {
        if let Some(f) = &orig {
            let _ = f.call1(&this, &layers);
        }
        st.take_layers(&layers);
    });
    wrap("update_buffer", update_buffer.as_ref().clone());
    closures.push(Box::new(update_buffer));
    Ok(AttachedDisplay {
        state,
        _closures: closures,
    })
}

/// Why a stop happened, from its `force` flag.
pub fn stop_reason(force: bool) -> StopReason {
    if force {
        StopReason::Forced
    } else {
        StopReason::Requested
    }
}
