//! The QEMU engine (wasm32 only): `qemu-system-x86_64` or `qemu-system-aarch64` built to
//! wasm64 by `qemuweb-wasm-build` (Emscripten ES6 factories with pthreads and
//! `PROXY_TO_PTHREAD`, described by the build's `qemu-build.json`:
//! [`qemu_build`](super::qemu_build)), run in a module worker of its own
//! (`web/qemu-worker.js`) that the VM worker starts.
//!
//! - **Arguments**: `build_qemu_args` for [`qemu_target`](super::qemu_target)
//!   ([`QemuPlan`](super::QemuPlan)), every disk a raw file under `/mnt`.
//! - **Firmware and kernels**: written into the module's MEMFS (`/firmware`, `/mnt`)
//!   before QEMU's `main` runs.
//! - **Disks**: each is a MEMFS node of the disk's size whose `read`/`write` callbacks go
//!   through the [`qemu_channel`](super::qemu_channel) to this worker's storage stack
//!   ([`QemuDiskPort`] on the QEMU side, [`QemuEngine`] serving here). Nothing is fetched
//!   before the guest asks for it; qcow2 decoding and the IndexedDB copy-on-write overlay
//!   are the stack's, as with v86.
//! - **Serial**: QEMU's `-serial stdio` is Emscripten's stdin/stdout devices: the QEMU
//!   worker posts `Module.stdout`'s characters, which this side batches into serial events;
//!   serial input goes into the channel's stdin ring, which `Module.stdin` reads
//!   ([`QemuDiskPort::stdin_byte`]).
//! - **Display and input** (graphics profiles: `-display qemuweb`, our patch 0020): QEMU
//!   announces its display block once (`Module.qemuwebDisplay(memory, address)`, which the
//!   QEMU worker posts here with the module's shared memory); from then on this worker
//!   reads the screen's changes out of it every [`POLL_MS`] into the display ring and
//!   writes keyboard and pointer events into its input ring
//!   ([`qemu_display`](super::qemu_display)). Nothing goes through QEMU's threads.
//! - **Network** (a VM on a page network: `-netdev qemuweb`, our patch 0030): QEMU
//!   announces its NIC's ring block once (`Module.qemuwebNet(memory, address)`, posted
//!   here like the display's); from then on the guest's frames go from its TX ring to the
//!   VM's port to the page's switch, and the page's frames into its RX ring
//!   ([`qemu_net`](super::qemu_net)).
//! - **Execution mode**: the QEMU worker posts the JIT's statistics block (patch 0012) or
//!   that the build has none; `execution` and `log` events say whether the interpreter or
//!   the JIT runs and how many blocks it compiled ([`qemu_jit`](super::qemu_jit)).
//! - **Snapshots**: every QEMU has a QMP monitor on a device file of the module's
//!   filesystem whose input is the channel's QMP ring
//!   ([`qmp`](super::qmp) has the commands and why they are these): `pause` is `stop`,
//!   `save_state` saves the machine into a qcow2 image in the module's filesystem
//!   (`snapshot-save`), which the QEMU worker hands over in
//!   [`DEFAULT_CHUNK_BYTES`] chunks, and `unpause` is `cont`. A resumed QEMU
//!   ([`QemuConfig::resume_state`]) starts paused with that image written back,
//!   `snapshot-load`s it and continues.
//! - **Reset** starts a new QEMU on the same disks; **stop** terminates its worker (and
//!   with it QEMU's pthread workers).

use crate::engine::frame_ring::FrameRing;
use crate::engine::qemu_channel::{
    self as channel, slot, IoOp, IoRequest, State, EIO, HEADER_BYTES, HEADER_WORDS, QMP_OFFSET,
    QMP_RING, STDIN_RING, WINDOW_OFFSET,
};
use crate::engine::qemu_display::{encode_input, DisplayBlock, QemuDisplay, POLL_MS};
use crate::engine::qemu_jit::{self, JitStats, StatsBlock};
use crate::engine::qemu_net::{NetBlock, QemuNet, QemuNic};
use crate::engine::qmp::{self, JobState, LineBuffer, Message, Step};
use crate::engine::{js_text, qemu_stderr_is_fatal, set, Engine, EngineHost};
use crate::error::{Result, RuntimeError};
use crate::protocol::{EngineKind, Event, ExecutionStats, LogLevel};
use async_trait::async_trait;
use futures::channel::oneshot;
use js_sys::{
    Array, Atomics, Function, Int32Array, Object, Reflect, SharedArrayBuffer, Uint8Array,
};
use qemuweb_storage::snapshot::{StateEncoding, DEFAULT_CHUNK_BYTES};
use qemuweb_storage::BlockDevice;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;

/// How long QEMU's worker may take to load the module and reach `main`.
const START_TIMEOUT_MS: u32 = 120_000;
/// Lines of QEMU's stderr kept for error messages.
const STDERR_TAIL: usize = 20;

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// Whether this worker may share memory with others (`crossOriginIsolated`): the QEMU
/// module's threads and the disk channel need `SharedArrayBuffer`.
///
/// # Errors
///
/// [`RuntimeError::Unsupported`] with the fix when it is not.
pub fn check_isolation() -> Result<()> {
    let global: JsValue = js_sys::global().into();
    let isolated = get(&global, "crossOriginIsolated").as_bool() == Some(true);
    let has_sab = !get(&global, "SharedArrayBuffer").is_undefined();
    if isolated && has_sab {
        Ok(())
    } else {
        Err(RuntimeError::Unsupported(
            "the QEMU engine needs SharedArrayBuffer (QEMU's threads and its disk channel), \
             and this page is not cross-origin isolated: serve the page and its workers with \
             `Cross-Origin-Opener-Policy: same-origin` and \
             `Cross-Origin-Embedder-Policy: require-corp` (or use the v86 engine)"
                .into(),
        ))
    }
}

/// One disk as QEMU sees it.
pub struct QemuDisk {
    /// Its path in the module's filesystem (from the plan: `/mnt/disk0.raw`).
    pub path: String,
    /// The storage stack (the copy-on-write device on top).
    pub dev: Rc<dyn BlockDevice>,
}

/// What the QEMU engine needs to start.
pub struct QemuConfig {
    /// The VM's id (for events).
    pub vm_id: String,
    /// URL of `qemu-worker.js`.
    pub worker_url: String,
    /// URL of the module's ES6 factory (e.g. `qemu-system-x86_64.js`).
    pub module_url: String,
    /// URL of its wasm.
    pub wasm_url: String,
    /// QEMU's arguments.
    pub args: Vec<String>,
    /// Files written into the module's filesystem before `main`: firmware, kernel, initrd
    /// (absolute path, bytes).
    pub files: Vec<(String, Vec<u8>)>,
    /// The disks, in the order QEMU's arguments number them.
    pub disks: Vec<QemuDisk>,
    /// The data window of the disk channel.
    pub window: u32,
    /// How long QEMU waits for one disk answer.
    pub io_timeout_ms: u32,
    /// Whether the guest has a display (QEMU runs `-display qemuweb`): keyboard and
    /// pointer input go through it.
    pub graphics: bool,
    /// A display ring (`SharedArrayBuffer`) to send the guest's screen to.
    pub display: Option<SharedArrayBuffer>,
    /// The machine state to resume (a snapshot's, as `save_state` gave it), instead of
    /// booting; used by the first start only (a reset boots).
    pub resume_state: Option<Uint8Array>,
    /// A NIC on the page's network (QEMU's arguments have its `-netdev qemuweb`).
    pub nic: Option<QemuNic>,
}

/// `url` with this worker's `#wasm=...` (where the runtime's wasm is, when the VM worker
/// was started with one, as the npm package's self-contained worker is), unless `url`
/// already has a fragment: the QEMU worker loads the same wasm for its side of the channel.
fn with_wasm_hash(url: &str) -> String {
    let hash = Reflect::get(&js_sys::global(), &"location".into())
        .ok()
        .and_then(|l| Reflect::get(&l, &"hash".into()).ok())
        .and_then(|h| h.as_string())
        .unwrap_or_default();
    if url.contains('#') || !hash.contains("wasm=") {
        url.to_string()
    } else {
        format!("{url}{hash}")
    }
}

/// A running QEMU worker and its disk channel.
struct Instance {
    worker: web_sys::Worker,
    header: Int32Array,
    data: Uint8Array,
    stdin: Uint8Array,
    qmp: Uint8Array,
    _closures: Vec<Box<dyn std::any::Any>>,
}

/// A QMP command's answer: its `return`, or QEMU's error class and message.
type QmpReply = std::result::Result<Value, (String, String)>;

/// The two input rings of the channel.
#[derive(Clone, Copy)]
enum Ring {
    /// The guest's serial input.
    Stdin,
    /// Commands to QEMU's QMP monitor.
    Qmp,
}

impl Ring {
    /// (written slot, taken slot, doorbell message type)
    fn slots(self) -> (usize, usize, &'static str) {
        match self {
            Ring::Stdin => (slot::STDIN_WRITTEN, slot::STDIN_TAKEN, "stdin"),
            Ring::Qmp => (slot::QMP_WRITTEN, slot::QMP_TAKEN, "qmp"),
        }
    }
}

struct Inner {
    config: QemuConfig,
    host: Rc<dyn EngineHost>,
    instance: RefCell<Option<Instance>>,
    /// Bumped for each QEMU started; answers for an older one are dropped.
    generation: Cell<u32>,
    /// Disk requests being served (at most one: QEMU's side waits for each).
    serving: Cell<u32>,
    idle_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    stopped: Cell<bool>,
    start_waiter: RefCell<Option<oneshot::Sender<Result<()>>>>,
    stderr: RefCell<VecDeque<String>>,
    /// Serial input that did not fit the ring yet.
    stdin_pending: RefCell<VecDeque<u8>>,
    stdin_pumping: Cell<bool>,
    /// Serial output of this turn of the event loop, sent as one event.
    serial_out: RefCell<Vec<u8>>,
    /// QEMU's display block, the display ring and input waiting for room.
    display: RefCell<QemuDisplay>,
    /// Whether the display poll runs.
    polling: Cell<bool>,
    /// The NIC's connection to the page's switch (its ring block once QEMU announced it).
    net: Option<QemuNet>,
    /// The state the first start resumes.
    resume_state: RefCell<Option<Uint8Array>>,
    /// QMP commands that did not fit the ring yet.
    qmp_pending: RefCell<VecDeque<u8>>,
    qmp_pumping: Cell<bool>,
    /// The monitor's output, split into messages.
    qmp_lines: RefCell<LineBuffer>,
    /// Commands sent and not answered yet, in order (the monitor answers in order).
    qmp_waiters: RefCell<VecDeque<oneshot::Sender<QmpReply>>>,
    /// Held by whoever talks to the monitor (one command, or a save's or load's steps).
    qmp_lock: futures::lock::Mutex<()>,
    /// Whether `qmp_capabilities` was sent to this QEMU's monitor.
    qmp_negotiated: Cell<bool>,
    /// A save waiting for the QEMU worker to hand the state over.
    state_waiter: RefCell<Option<oneshot::Sender<Result<Vec<Uint8Array>>>>>,
}

/// QEMU behind the [`Engine`] trait.
pub struct QemuEngine {
    inner: Rc<Inner>,
}

impl Inner {
    fn error(&self, e: &RuntimeError) {
        self.host
            .emit(Event::error(None, Some(&self.config.vm_id), e));
    }

    fn stderr_tail(&self) -> String {
        let lines = self.stderr.borrow();
        if lines.is_empty() {
            "(no output on stderr)".into()
        } else {
            lines.iter().cloned().collect::<Vec<_>>().join("\n")
        }
    }

    /// Ends a start in progress with `result`; `false` if none was waiting.
    fn finish_start(&self, result: Result<()>) -> bool {
        match self.start_waiter.borrow_mut().take() {
            Some(tx) => {
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }

    fn on_message(self: &Rc<Self>, generation: u32, data: JsValue) {
        if generation != self.generation.get() || self.stopped.get() {
            return;
        }
        let kind = get(&data, "type").as_string().unwrap_or_default();
        match kind.as_str() {
            "io" => self.clone().serve(generation),
            "display" => match DisplayBlock::new(&get(&data, "memory"), &get(&data, "address")) {
                Ok(block) => {
                    self.display.borrow_mut().set_block(block);
                    self.clone().poll_display();
                }
                Err(e) => self.error(&e),
            },
            "net" => match (
                &self.net,
                NetBlock::new(&get(&data, "memory"), &get(&data, "address")),
            ) {
                (Some(net), Ok(block)) => {
                    let weak = Rc::downgrade(self);
                    net.set_block(block, move |e| {
                        if let Some(inner) = weak.upgrade() {
                            inner.error(&e);
                        }
                    });
                }
                (Some(_), Err(e)) => self.error(&e),
                // A netdev the VM's start did not ask for (extra arguments): not connected.
                (None, _) => self.warn(
                    "QEMU announced a qemuweb netdev, but the VM is on no page network".into(),
                ),
            },
            "jit" => self.clone().watch_execution(generation, &data),
            "qmp" => {
                if let Ok(bytes) = get(&data, "data").dyn_into::<Uint8Array>() {
                    let messages = self.qmp_lines.borrow_mut().push(&bytes.to_vec());
                    for m in messages {
                        self.on_qmp(m);
                    }
                }
            }
            "state" => {
                let result = match get(&data, "error").as_string() {
                    Some(e) => Err(RuntimeError::Engine(format!(
                        "the QEMU worker could not hand over the machine state: {e}"
                    ))),
                    None => Ok(Array::from(&get(&data, "chunks"))
                        .iter()
                        .filter_map(|c| c.dyn_into::<Uint8Array>().ok())
                        .collect()),
                };
                if let Some(tx) = self.state_waiter.borrow_mut().take() {
                    let _ = tx.send(result);
                }
            }
            "ready" => {
                self.finish_start(Ok(()));
            }
            "serial" => {
                if let Ok(bytes) = get(&data, "data").dyn_into::<Uint8Array>() {
                    let first = {
                        let mut out = self.serial_out.borrow_mut();
                        let first = out.is_empty();
                        out.extend(bytes.to_vec());
                        first
                    };
                    if first {
                        let this = self.clone();
                        spawn_local(async move {
                            gloo_timers::future::TimeoutFuture::new(1).await;
                            let data = std::mem::take(&mut *this.serial_out.borrow_mut());
                            if !data.is_empty() {
                                this.host.emit(Event::SerialOut {
                                    vm_id: this.config.vm_id.clone(),
                                    data,
                                });
                            }
                        });
                    }
                }
            }
            "stderr" => {
                let line = get(&data, "line").as_string().unwrap_or_default();
                {
                    let mut tail = self.stderr.borrow_mut();
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line.clone());
                }
                if qemu_stderr_is_fatal(&line) {
                    self.error(&RuntimeError::Engine(format!("QEMU: {line}")));
                } else {
                    self.host.emit(Event::Log {
                        vm_id: Some(self.config.vm_id.clone()),
                        level: LogLevel::Warn,
                        message: format!("qemu: {line}"),
                    });
                }
            }
            "exit" => {
                let status = get(&data, "status").as_f64().unwrap_or(-1.0);
                let e = || {
                    RuntimeError::Engine(format!(
                        "QEMU exited with status {status}; its last output:\n{}",
                        self.stderr_tail()
                    ))
                };
                if !self.finish_start(Err(e())) {
                    if status == 0.0 {
                        self.host.emit(Event::Log {
                            vm_id: Some(self.config.vm_id.clone()),
                            level: LogLevel::Info,
                            message: "QEMU exited (the guest powered off)".into(),
                        });
                    } else {
                        self.error(&e());
                    }
                }
            }
            "error" => {
                let message = get(&data, "message").as_string().unwrap_or_default();
                let what = get(&data, "what").as_string().unwrap_or_default();
                let e = || {
                    if what == "module" {
                        RuntimeError::Fetch {
                            what: "the QEMU module".into(),
                            url: self.config.module_url.clone(),
                            reason: message.clone(),
                        }
                    } else {
                        RuntimeError::Engine(format!("QEMU: {message}"))
                    }
                };
                if !self.finish_start(Err(e())) {
                    self.error(&e());
                }
            }
            _ => {}
        }
    }

    /// Reports how QEMU `generation` runs guest code: from the JIT's statistics block the
    /// QEMU worker posted (read after [`qemu_jit::FIRST_POLL_MS`], then every
    /// [`qemu_jit::POLL_MS`]; an event when the JIT did more work), or once that the build
    /// has no JIT.
    fn watch_execution(self: Rc<Self>, generation: u32, data: &JsValue) {
        let memory = get(data, "memory");
        if memory.is_null() || memory.is_undefined() {
            self.report_execution(qemu_jit::interpreter_only());
            return;
        }
        let block = match StatsBlock::new(&memory, &get(data, "address")) {
            Ok(block) => block,
            Err(e) => return self.warn(format!("{e}; the execution mode is not reported")),
        };
        spawn_local(async move {
            let mut last: Option<JitStats> = None;
            let mut waited = 0;
            loop {
                let period = if last.is_none() {
                    qemu_jit::FIRST_POLL_MS
                } else {
                    qemu_jit::POLL_MS
                };
                gloo_timers::future::TimeoutFuture::new(period).await;
                waited += period;
                if generation != self.generation.get() || self.stopped.get() {
                    return;
                }
                match block.read() {
                    // Until QEMU has set up its accelerator the block says "interpreter":
                    // that is believed only after a whole period.
                    Ok(now) if last.is_none() && !now.settled(waited) => {}
                    Ok(now) if last.is_none_or(|l| now.changed_from(&l)) => {
                        self.report_execution(now.summary());
                        last = Some(now);
                    }
                    Ok(_) => {}
                    Err(e) => return self.warn(e.to_string()),
                }
            }
        });
    }

    fn report_execution(&self, stats: ExecutionStats) {
        let vm_id = self.config.vm_id.clone();
        self.host.emit(Event::Log {
            vm_id: Some(vm_id.clone()),
            level: LogLevel::Info,
            message: qemu_jit::message(&stats),
        });
        self.host.emit(Event::Execution { vm_id, stats });
    }

    fn warn(&self, message: String) {
        self.host.emit(Event::Log {
            vm_id: Some(self.config.vm_id.clone()),
            level: LogLevel::Warn,
            message,
        });
    }

    /// Serves the request in the channel of QEMU `generation`.
    fn serve(self: Rc<Self>, generation: u32) {
        let (header, data) = match &*self.instance.borrow() {
            Some(i) => (i.header.clone(), i.data.clone()),
            None => return,
        };
        let mut words = [0i32; HEADER_WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            *w = Atomics::load(&header, i as u32).unwrap_or(0);
        }
        if words[slot::STATE] != State::Pending as i32 {
            return;
        }
        let disks: Vec<(u64, bool)> = self
            .config
            .disks
            .iter()
            .map(|d| (d.dev.size(), true))
            .collect();
        let request = IoRequest::decode(&words).and_then(|r| {
            r.check(self.config.window, &disks)?;
            Ok(r)
        });
        self.serving.set(self.serving.get() + 1);
        spawn_local(async move {
            let result = match request {
                Err(e) => {
                    self.error(&RuntimeError::Engine(format!("QEMU disk channel: {e}")));
                    -e.errno()
                }
                Ok(r) => self.transfer(&r, &data).await,
            };
            self.serving.set(self.serving.get() - 1);
            if self.serving.get() == 0 {
                for w in self.idle_waiters.borrow_mut().drain(..) {
                    let _ = w.send(());
                }
            }
            if generation != self.generation.get() {
                return; // That QEMU is gone; its channel with it.
            }
            let _ = Atomics::store(&header, slot::RESULT as u32, result);
            let _ = Atomics::store(&header, slot::ACK as u32, words[slot::SEQ]);
            let _ = Atomics::store(&header, slot::STATE as u32, State::Done as i32);
            let _ = Atomics::notify(&header, slot::STATE as u32);
        });
    }

    /// Does one checked request against the storage stack: bytes done or `-errno`.
    async fn transfer(&self, r: &IoRequest, window: &Uint8Array) -> i32 {
        let disk = &self.config.disks[r.disk as usize];
        let id = format!("disk{}", r.disk);
        let len = r.len as usize;
        let result = match r.op {
            IoOp::Read => {
                let mut buf = vec![0u8; len];
                let res = disk.dev.read_at(r.offset, &mut buf).await;
                if res.is_ok() {
                    window.subarray(0, r.len).copy_from(&buf);
                }
                res
            }
            IoOp::Write => {
                let buf = window.subarray(0, r.len).to_vec();
                disk.dev.write_at(r.offset, &buf).await
            }
        };
        match result {
            Ok(()) => r.len as i32,
            Err(e) => {
                self.error(&RuntimeError::storage(&id, e));
                -EIO
            }
        }
    }

    /// Starts a QEMU worker; resolves when QEMU's runtime is up and `main` was called.
    async fn launch(self: &Rc<Self>) -> Result<()> {
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        self.stderr.borrow_mut().clear();
        let c = &self.config;
        let sab = SharedArrayBuffer::new(channel::channel_bytes(c.window) as u32);
        let header = Int32Array::new_with_byte_offset_and_length(&sab, 0, HEADER_WORDS as u32);
        let stdin = Uint8Array::new_with_byte_offset_and_length(
            &sab,
            HEADER_BYTES as u32,
            STDIN_RING as u32,
        );
        let qmp_ring =
            Uint8Array::new_with_byte_offset_and_length(&sab, QMP_OFFSET as u32, QMP_RING as u32);
        let data =
            Uint8Array::new_with_byte_offset_and_length(&sab, WINDOW_OFFSET as u32, c.window);
        // A new monitor: whatever the last one was asked is not answered.
        self.qmp_negotiated.set(false);
        *self.qmp_lines.borrow_mut() = LineBuffer::default();
        self.qmp_pending.borrow_mut().clear();
        // Dropping the senders ends those commands ("QEMU stopped before ... answered").
        self.qmp_waiters.borrow_mut().clear();
        let resume = self.resume_state.borrow_mut().take();

        let options = web_sys::WorkerOptions::new();
        options.set_type(web_sys::WorkerType::Module);
        options.set_name(&format!("qemu {}", c.vm_id));
        let worker_url = with_wasm_hash(&c.worker_url);
        let worker = web_sys::Worker::new_with_options(&worker_url, &options).map_err(|e| {
            RuntimeError::Fetch {
                what: "the QEMU worker script".into(),
                url: c.worker_url.clone(),
                reason: js_text(&e),
            }
        })?;
        let weak = Rc::downgrade(self);
        let on_message =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                if let Some(inner) = weak.upgrade() {
                    inner.on_message(generation, e.data());
                }
            });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let weak = Rc::downgrade(self);
        let url = c.worker_url.clone();
        let on_error =
            Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |e: web_sys::ErrorEvent| {
                e.prevent_default();
                let Some(inner) = weak.upgrade() else { return };
                if generation != inner.generation.get() {
                    return;
                }
                let err = || RuntimeError::Fetch {
                    what: "the QEMU worker script".into(),
                    url: url.clone(),
                    reason: if e.message().is_empty() {
                        "it failed to load (is qemu-worker.js beside worker.js?)".into()
                    } else {
                        e.message()
                    },
                };
                if !inner.finish_start(Err(err())) {
                    inner.error(&err());
                }
            });
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));

        let message = Object::new();
        set(&message, "type", &"start".into());
        set(&message, "moduleUrl", &c.module_url.as_str().into());
        set(&message, "wasmUrl", &c.wasm_url.as_str().into());
        let mut args = c.args.clone();
        args.extend(qmp::monitor_args());
        if resume.is_some() {
            args.extend(qmp::resume_args());
        }
        let args: Array = args.iter().map(|a| JsValue::from_str(a)).collect();
        set(&message, "args", &args);
        set(&message, "qmpPath", &qmp::DEVICE_PATH.into());
        set(&message, "statePath", &qmp::VMSTATE_PATH.into());
        set(
            &message,
            "stateChunkBytes",
            &JsValue::from(DEFAULT_CHUNK_BYTES),
        );
        if let Some(state) = &resume {
            set(&message, "state", state);
        }
        let files = Array::new();
        for (path, bytes) in &c.files {
            let f = Object::new();
            set(&f, "path", &path.as_str().into());
            set(&f, "data", &Uint8Array::from(&bytes[..]));
            files.push(&f);
        }
        set(&message, "files", &files);
        let disks = Array::new();
        for d in &c.disks {
            let o = Object::new();
            set(&o, "path", &d.path.as_str().into());
            set(&o, "size", &JsValue::from_f64(d.dev.size() as f64));
            disks.push(&o);
        }
        set(&message, "disks", &disks);
        set(&message, "channel", &sab);
        set(&message, "ioTimeoutMs", &JsValue::from(c.io_timeout_ms));

        let (tx, rx) = oneshot::channel();
        *self.start_waiter.borrow_mut() = Some(tx);
        *self.instance.borrow_mut() = Some(Instance {
            worker: worker.clone(),
            header,
            data,
            stdin,
            qmp: qmp_ring,
            _closures: vec![Box::new(on_message), Box::new(on_error)],
        });
        // The state's buffer moves to the QEMU worker (this one keeps no copy).
        let transfer = Array::new();
        if let Some(state) = &resume {
            transfer.push(&state.buffer());
        }
        worker
            .post_message_with_transfer(&message, &transfer)
            .map_err(|e| {
                RuntimeError::Engine(format!("posting to the QEMU worker: {}", js_text(&e)))
            })?;

        let timeout = gloo_timers::future::TimeoutFuture::new(START_TIMEOUT_MS);
        futures::pin_mut!(timeout);
        let outcome = match futures::future::select(rx, timeout).await {
            futures::future::Either::Left((Ok(r), _)) => r,
            futures::future::Either::Left((Err(_), _)) => {
                Err(RuntimeError::Engine("QEMU's start was abandoned".into()))
            }
            futures::future::Either::Right(_) => Err(RuntimeError::Engine(format!(
                "QEMU did not start within {} s (check that {} is a QEMU module built by \
                 qemuweb-wasm-build); its last output:\n{}",
                START_TIMEOUT_MS / 1000,
                c.module_url,
                self.stderr_tail()
            ))),
        };
        if outcome.is_err() {
            self.start_waiter.borrow_mut().take();
            self.terminate();
        }
        outcome
    }

    /// Polls QEMU's display block every [`POLL_MS`] while there is one: input into its
    /// ring, the screen's changes into the display ring.
    fn poll_display(self: Rc<Self>) {
        if self.polling.replace(true) {
            return;
        }
        spawn_local(async move {
            loop {
                if self.stopped.get() || !self.display.borrow().has_block() {
                    break;
                }
                let polled = self.display.borrow_mut().poll();
                if let Err(e) = polled {
                    self.display.borrow_mut().clear_block();
                    self.error(&e);
                    break;
                }
                gloo_timers::future::TimeoutFuture::new(POLL_MS).await;
            }
            self.polling.set(false);
        });
    }

    fn terminate(&self) {
        self.display.borrow_mut().clear_block();
        if let Some(net) = &self.net {
            if let Some([sent, received, dropped, polls]) = net.counters() {
                self.host.emit(Event::Log {
                    vm_id: Some(self.config.vm_id.clone()),
                    level: LogLevel::Info,
                    message: format!(
                        "QEMU's NIC: {sent} frames sent, {received} received, {dropped} \
                         dropped; QEMU polled its ring {polls} times"
                    ),
                });
            }
            net.clear_block();
        }
        if let Some(i) = self.instance.borrow_mut().take() {
            i.worker.set_onmessage(None);
            i.worker.set_onerror(None);
            i.worker.terminate();
        }
    }

    /// Moves pending serial input into its ring; retries every few milliseconds while the
    /// ring is full.
    fn pump_stdin(self: &Rc<Self>) {
        self.pump(Ring::Stdin);
    }

    /// Moves pending input of `ring` into it and rings QEMU's side; retries every few
    /// milliseconds while the ring is full.
    fn pump(self: &Rc<Self>, ring: Ring) {
        let (written_slot, taken_slot, doorbell_type) = ring.slots();
        let (pending, pumping) = match ring {
            Ring::Stdin => (&self.stdin_pending, &self.stdin_pumping),
            Ring::Qmp => (&self.qmp_pending, &self.qmp_pumping),
        };
        let moved = match &*self.instance.borrow() {
            Some(i) => {
                let buffer = match ring {
                    Ring::Stdin => &i.stdin,
                    Ring::Qmp => &i.qmp,
                };
                let written = Atomics::load(&i.header, written_slot as u32).unwrap_or(0) as u32;
                let taken = Atomics::load(&i.header, taken_slot as u32).unwrap_or(0) as u32;
                let mut pending = pending.borrow_mut();
                let n = channel::stdin_free(written, taken).min(pending.len());
                for (k, b) in pending.drain(..n).enumerate() {
                    let at = channel::stdin_slot(written.wrapping_add(k as u32));
                    buffer.set_index(at as u32, b);
                }
                let _ = Atomics::store(
                    &i.header,
                    written_slot as u32,
                    written.wrapping_add(n as u32) as i32,
                );
                if n > 0 {
                    // Wakes QEMU's poll() on the ring's file (the QEMU worker's event loop
                    // is free while QEMU waits in poll).
                    let doorbell = Object::new();
                    set(&doorbell, "type", &doorbell_type.into());
                    let _ = i.worker.post_message(&doorbell);
                }
                true
            }
            None => false,
        };
        let waiting = !pending.borrow().is_empty();
        if (waiting || !moved) && !self.stopped.get() && !pumping.replace(true) {
            let this = self.clone();
            spawn_local(async move {
                gloo_timers::future::TimeoutFuture::new(5).await;
                let (pending, pumping) = match ring {
                    Ring::Stdin => (&this.stdin_pending, &this.stdin_pumping),
                    Ring::Qmp => (&this.qmp_pending, &this.qmp_pumping),
                };
                pumping.set(false);
                if !pending.borrow().is_empty() {
                    this.pump(ring);
                }
            });
        }
    }

    /// Hands one message of the monitor to the command waiting for it.
    fn on_qmp(&self, message: Result<Message>) {
        let reply = match message {
            Ok(Message::Greeting) | Ok(Message::Event(_)) => return,
            Ok(Message::Return(v)) => Ok(v),
            Ok(Message::Error { class, desc }) => Err((class, desc)),
            Err(e) => {
                self.error(&e);
                return;
            }
        };
        match self.qmp_waiters.borrow_mut().pop_front() {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            None => self.warn("QEMU's monitor answered a command nobody sent".into()),
        }
    }

    /// Sends `execute` to the monitor (with `qmp_lock` held) and waits for its answer, at
    /// most [`qmp::COMMAND_TIMEOUT_MS`].
    async fn qmp_locked(
        self: &Rc<Self>,
        execute: &str,
        arguments: Option<&Value>,
    ) -> Result<Value> {
        if self.stopped.get() || self.instance.borrow().is_none() {
            return Err(RuntimeError::Engine("QEMU is not running".into()));
        }
        if !self.qmp_negotiated.replace(true) {
            Box::pin(self.qmp_locked("qmp_capabilities", None)).await?;
        }
        let (tx, rx) = oneshot::channel();
        self.qmp_waiters.borrow_mut().push_back(tx);
        self.qmp_pending
            .borrow_mut()
            .extend(qmp::command(execute, arguments));
        self.pump(Ring::Qmp);
        let timeout = gloo_timers::future::TimeoutFuture::new(qmp::COMMAND_TIMEOUT_MS);
        futures::pin_mut!(timeout);
        match futures::future::select(rx, timeout).await {
            futures::future::Either::Left((Ok(Ok(v)), _)) => Ok(v),
            futures::future::Either::Left((Ok(Err((class, message))), _)) => {
                Err(qmp::failure(execute, &class, &message))
            }
            futures::future::Either::Left((Err(_), _)) => Err(RuntimeError::Engine(format!(
                "QEMU stopped before its monitor answered {execute}"
            ))),
            futures::future::Either::Right(_) => Err(RuntimeError::Engine(format!(
                "QEMU's monitor did not answer {execute} within {} s; its last output:\n{}",
                qmp::COMMAND_TIMEOUT_MS / 1000,
                self.stderr_tail()
            ))),
        }
    }

    /// Runs `steps` with the monitor to itself: each command, and each job until it
    /// concludes (then dismissed).
    async fn qmp_steps(self: &Rc<Self>, steps: &[Step]) -> Result<()> {
        let _held = self.qmp_lock.lock().await;
        for s in steps {
            self.qmp_locked(s.execute, s.arguments.as_ref()).await?;
            let Some(id) = s.job else { continue };
            let state = loop {
                let jobs = self.qmp_locked("query-jobs", None).await?;
                match qmp::job_state(&jobs, id) {
                    JobState::Running => {
                        gloo_timers::future::TimeoutFuture::new(qmp::JOB_POLL_MS).await
                    }
                    other => break other,
                }
            };
            if state != JobState::Missing {
                let dismiss = serde_json::json!({ "id": id });
                self.qmp_locked("job-dismiss", Some(&dismiss)).await?;
            }
            match state {
                JobState::Failed(message) => {
                    return Err(qmp::failure(s.execute, "JobFailed", &message))
                }
                JobState::Missing => {
                    return Err(qmp::failure(
                        s.execute,
                        "JobMissing",
                        &format!("job {id} is not in query-jobs"),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Sends one command to the monitor.
    async fn qmp(self: &Rc<Self>, execute: &str) -> Result<Value> {
        let _held = self.qmp_lock.lock().await;
        self.qmp_locked(execute, None).await
    }

    /// Asks the QEMU worker for the state image, in chunks (the file is removed).
    async fn take_state(&self) -> Result<Vec<Uint8Array>> {
        let (tx, rx) = oneshot::channel();
        *self.state_waiter.borrow_mut() = Some(tx);
        {
            let instance = self.instance.borrow();
            let i = instance
                .as_ref()
                .ok_or_else(|| RuntimeError::Engine("QEMU is not running".into()))?;
            let m = Object::new();
            set(&m, "type", &"takeState".into());
            i.worker.post_message(&m).map_err(|e| {
                RuntimeError::Engine(format!("posting to the QEMU worker: {}", js_text(&e)))
            })?;
        }
        let timeout = gloo_timers::future::TimeoutFuture::new(qmp::COMMAND_TIMEOUT_MS);
        futures::pin_mut!(timeout);
        match futures::future::select(rx, timeout).await {
            futures::future::Either::Left((Ok(r), _)) => r,
            _ => Err(RuntimeError::Engine(
                "the QEMU worker did not hand over the machine state".into(),
            )),
        }
    }

    /// Waits until no disk request is being served.
    async fn idle(&self) {
        if self.serving.get() == 0 {
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.idle_waiters.borrow_mut().push(tx);
        let _ = rx.await;
    }
}

impl QemuEngine {
    /// Starts QEMU in a new worker; resolves once QEMU's runtime is up and its `main`
    /// runs.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Unsupported`] without cross-origin isolation; [`RuntimeError::Fetch`]
    /// or [`RuntimeError::Engine`] if the worker or module cannot be loaded, or QEMU exits
    /// (bad arguments, missing firmware) or does not start in time.
    pub async fn start(mut config: QemuConfig, host: Rc<dyn EngineHost>) -> Result<Self> {
        check_isolation()?;
        let config_resume = config.resume_state.take();
        let resuming = config_resume.is_some();
        let ring = match config.display.take() {
            Some(buffer) => Some(FrameRing::connect(
                qemuweb_sidecar::SabMemory::from_buffer(buffer),
            )?),
            None => None,
        };
        let net = config.nic.take().map(QemuNet::connect);
        let inner = Rc::new(Inner {
            config,
            host,
            instance: RefCell::new(None),
            generation: Cell::new(0),
            serving: Cell::new(0),
            idle_waiters: RefCell::new(Vec::new()),
            stopped: Cell::new(false),
            start_waiter: RefCell::new(None),
            stderr: RefCell::new(VecDeque::new()),
            stdin_pending: RefCell::new(VecDeque::new()),
            stdin_pumping: Cell::new(false),
            serial_out: RefCell::new(Vec::new()),
            display: RefCell::new(QemuDisplay::new(ring)),
            polling: Cell::new(false),
            net,
            resume_state: RefCell::new(config_resume),
            qmp_pending: RefCell::new(VecDeque::new()),
            qmp_pumping: Cell::new(false),
            qmp_lines: RefCell::new(LineBuffer::default()),
            qmp_waiters: RefCell::new(VecDeque::new()),
            qmp_lock: futures::lock::Mutex::new(()),
            qmp_negotiated: Cell::new(false),
            state_waiter: RefCell::new(None),
        });
        inner.launch().await?;
        if resuming {
            // QEMU waits paused (`-S`) with the state image: load it, then run.
            let loaded = match inner.qmp_steps(&qmp::load_steps()).await {
                Ok(()) => inner.qmp("cont").await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = loaded {
                inner.stopped.set(true);
                inner.terminate();
                return Err(e);
            }
        }
        Ok(Self { inner })
    }
}

#[async_trait(?Send)]
impl Engine for QemuEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Qemu
    }

    fn send_serial(&self, data: &[u8]) -> Result<()> {
        if self.inner.stopped.get() {
            return Err(RuntimeError::Engine("QEMU is not running".into()));
        }
        self.inner.stdin_pending.borrow_mut().extend(data);
        self.inner.pump_stdin();
        Ok(())
    }

    fn send_input(&self, events: &[crate::input::InputEvent]) -> Result<()> {
        if self.inner.stopped.get() {
            return Err(RuntimeError::Engine("QEMU is not running".into()));
        }
        let entries = encode_input(events)?;
        let mut display = self.inner.display.borrow_mut();
        if !display.has_block() {
            return Err(RuntimeError::Unsupported(if self.inner.config.graphics {
                "QEMU's display is not up yet (keyboard and pointer input go through it)".into()
            } else {
                "this VM has no display (its profile runs without graphics): keyboard and \
                 pointer input on the QEMU engine go through the display"
                    .into()
            }));
        }
        let dropped = display.queue(entries);
        if dropped > 0 {
            let total = display.dropped();
            drop(display);
            self.inner.host.emit(Event::Log {
                vm_id: Some(self.inner.config.vm_id.clone()),
                level: LogLevel::Warn,
                message: format!(
                    "QEMU's input ring is full: {dropped} input events dropped ({total} so far)"
                ),
            });
        }
        Ok(())
    }

    async fn reset(&self) -> Result<()> {
        // Every write QEMU made has been answered, so it is in the storage stack: a new
        // QEMU on the same disks is a reboot.
        self.inner.terminate();
        self.inner.idle().await;
        self.inner.launch().await
    }

    async fn flush(&self) -> Result<()> {
        // Writes are answered only once the storage stack took them; wait for one that is
        // being served.
        self.inner.idle().await;
        Ok(())
    }

    async fn stop(&self, force: bool) -> Result<()> {
        if self.inner.stopped.replace(true) {
            return Ok(());
        }
        self.inner.terminate();
        if !force {
            self.inner.idle().await;
        }
        Ok(())
    }

    async fn pause(&self) -> Result<()> {
        self.inner.qmp("stop").await.map(|_| ())
    }

    async fn unpause(&self) -> Result<()> {
        self.inner.qmp("cont").await.map(|_| ())
    }

    async fn save_state(&self) -> Result<crate::engine::SavedState> {
        if let Err(e) = self.inner.qmp_steps(&qmp::save_steps()).await {
            // Leave no state node behind (each may not exist: errors are expected).
            for s in qmp::save_cleanup_steps() {
                let _ = self.inner.qmp_steps(&[s]).await;
            }
            return Err(e);
        }
        let pieces = self.inner.take_state().await?;
        Ok(crate::engine::SavedState {
            pieces,
            encoding: StateEncoding::Raw,
        })
    }
}

/// The QEMU side of the disk channel, used by `web/qemu-worker.js` inside the disks'
/// filesystem callbacks: `read`/`write` block (`Atomics.wait`) until the VM worker has
/// served each window-sized piece.
#[wasm_bindgen]
pub struct QemuDiskPort {
    header: Int32Array,
    data: Uint8Array,
    stdin: Uint8Array,
    qmp: Uint8Array,
    window: u32,
    sizes: Vec<u64>,
    seq: Cell<u32>,
    timeout_ms: f64,
    doorbell: Function,
    broken: RefCell<Option<String>>,
}

impl QemuDiskPort {
    /// Whether bytes wait in `ring` (written and taken counts differ).
    fn ring_ready(&self, ring: Ring) -> bool {
        let (written, taken, _) = ring.slots();
        let written = Atomics::load(&self.header, written as u32).unwrap_or(0);
        let taken = Atomics::load(&self.header, taken as u32).unwrap_or(0);
        written != taken
    }

    /// The next byte of `ring`, taken from it, if any.
    fn ring_byte(&self, ring: Ring) -> Option<u8> {
        let (written_slot, taken_slot, _) = ring.slots();
        let written = Atomics::load(&self.header, written_slot as u32).unwrap_or(0) as u32;
        let taken = Atomics::load(&self.header, taken_slot as u32).unwrap_or(0) as u32;
        if written == taken {
            return None;
        }
        let data = match ring {
            Ring::Stdin => &self.stdin,
            Ring::Qmp => &self.qmp,
        };
        let byte = data.get_index(channel::stdin_slot(taken) as u32);
        let _ = Atomics::store(
            &self.header,
            taken_slot as u32,
            taken.wrapping_add(1) as i32,
        );
        Some(byte)
    }
}

#[wasm_bindgen]
impl QemuDiskPort {
    /// A port on `channel` (the `SharedArrayBuffer` the engine made) for disks of `sizes`
    /// bytes; `doorbell()` tells the VM worker a request is waiting.
    #[wasm_bindgen(constructor)]
    pub fn new(
        channel: SharedArrayBuffer,
        sizes: Vec<f64>,
        doorbell: Function,
        timeout_ms: f64,
    ) -> std::result::Result<QemuDiskPort, JsError> {
        let bytes = channel.byte_length() as usize;
        if bytes <= WINDOW_OFFSET {
            return Err(JsError::new("the disk channel is too small"));
        }
        Ok(QemuDiskPort {
            header: Int32Array::new_with_byte_offset_and_length(&channel, 0, HEADER_WORDS as u32),
            data: Uint8Array::new_with_byte_offset(&channel, WINDOW_OFFSET as u32),
            stdin: Uint8Array::new_with_byte_offset_and_length(
                &channel,
                HEADER_BYTES as u32,
                STDIN_RING as u32,
            ),
            qmp: Uint8Array::new_with_byte_offset_and_length(
                &channel,
                QMP_OFFSET as u32,
                QMP_RING as u32,
            ),
            window: (bytes - WINDOW_OFFSET) as u32,
            sizes: sizes.into_iter().map(|s| s as u64).collect(),
            seq: Cell::new(0),
            timeout_ms,
            doorbell,
            broken: RefCell::new(None),
        })
    }

    /// Reads into `dest` from disk `disk` at `position`; returns the bytes read (fewer at
    /// the end of the disk). Throws `{errno, message}` on failure.
    pub fn read(
        &self,
        disk: u32,
        dest: &Uint8Array,
        position: f64,
    ) -> std::result::Result<u32, JsValue> {
        self.transfer(IoOp::Read, disk, dest, position)
    }

    /// Writes `src` to disk `disk` at `position`; returns the bytes written. Throws
    /// `{errno, message}` on failure.
    pub fn write(
        &self,
        disk: u32,
        src: &Uint8Array,
        position: f64,
    ) -> std::result::Result<u32, JsValue> {
        self.transfer(IoOp::Write, disk, src, position)
    }

    /// Whether serial input is waiting in the ring (for `poll()` on QEMU's stdin).
    #[wasm_bindgen(js_name = stdinReady)]
    pub fn stdin_ready(&self) -> bool {
        self.ring_ready(Ring::Stdin)
    }

    /// The next byte of serial input, if any (for `Module.stdin`; `undefined` means none
    /// yet).
    #[wasm_bindgen(js_name = stdinByte)]
    pub fn stdin_byte(&self) -> Option<u8> {
        self.ring_byte(Ring::Stdin)
    }

    /// Whether QMP command bytes wait in the QMP ring (for `poll()` on the monitor's
    /// device).
    #[wasm_bindgen(js_name = qmpReady)]
    pub fn qmp_ready(&self) -> bool {
        self.ring_ready(Ring::Qmp)
    }

    /// The next byte of QMP input, if any (`undefined` means none yet).
    #[wasm_bindgen(js_name = qmpByte)]
    pub fn qmp_byte(&self) -> Option<u8> {
        self.ring_byte(Ring::Qmp)
    }

    fn fail(errno: i32, message: String) -> JsValue {
        let e = Object::new();
        set(&e, "errno", &JsValue::from(errno));
        set(&e, "message", &message.into());
        e.into()
    }

    fn transfer(
        &self,
        op: IoOp,
        disk: u32,
        buf: &Uint8Array,
        position: f64,
    ) -> std::result::Result<u32, JsValue> {
        if let Some(why) = &*self.broken.borrow() {
            return Err(Self::fail(EIO, why.clone()));
        }
        let size = *self
            .sizes
            .get(disk as usize)
            .ok_or_else(|| Self::fail(EIO, format!("no disk{disk}")))?;
        if !(position >= 0.0 && position.fract() == 0.0) {
            return Err(Self::fail(EIO, format!("bad position {position}")));
        }
        let position = position as u64;
        let len = match op {
            IoOp::Read => channel::clamp_read(size, position, u64::from(buf.length())),
            IoOp::Write => u64::from(buf.length()),
        };
        for (offset, at, n) in channel::split(position, len, self.window) {
            let seq = self.seq.get().wrapping_add(1);
            self.seq.set(seq);
            let request = IoRequest {
                op,
                disk,
                offset,
                len: n,
                seq,
            };
            let mut words = [0i32; HEADER_WORDS];
            request.encode(&mut words);
            if op == IoOp::Write {
                self.data
                    .subarray(0, n)
                    .set(&buf.subarray(at as u32, at as u32 + n), 0);
            }
            for (i, w) in words.iter().enumerate().take(slot::SEQ + 1).skip(slot::OP) {
                let _ = Atomics::store(&self.header, i as u32, *w);
            }
            let _ = Atomics::store(&self.header, slot::STATE as u32, State::Pending as i32);
            let _ = self.doorbell.call0(&JsValue::NULL);
            let waited = Atomics::wait_with_timeout(
                &self.header,
                slot::STATE as u32,
                State::Pending as i32,
                self.timeout_ms,
            );
            let state = Atomics::load(&self.header, slot::STATE as u32).unwrap_or(-1);
            let ack = Atomics::load(&self.header, slot::ACK as u32).unwrap_or(0);
            if state != State::Done as i32 || ack != seq as i32 {
                let why = match waited {
                    Ok(s) if s == "timed-out" => format!(
                        "no answer from the storage stack within {} s for {n} bytes at {offset} of disk{disk}",
                        self.timeout_ms / 1000.0
                    ),
                    Ok(s) => format!("the disk channel is in an unknown state ({})", String::from(s)),
                    Err(e) => format!("Atomics.wait failed: {}", js_text(&e)),
                };
                *self.broken.borrow_mut() = Some(format!("the disk channel broke earlier: {why}"));
                return Err(Self::fail(EIO, why));
            }
            let result = Atomics::load(&self.header, slot::RESULT as u32).unwrap_or(-EIO);
            let _ = Atomics::store(&self.header, slot::STATE as u32, State::Idle as i32);
            if result < 0 {
                return Err(Self::fail(
                    -result,
                    format!(
                        "disk{disk}: {n} bytes at {offset} failed (errno {})",
                        -result
                    ),
                ));
            }
            if op == IoOp::Read {
                buf.subarray(at as u32, at as u32 + n)
                    .set(&self.data.subarray(0, n), 0);
            }
        }
        Ok(len as u32)
    }
}
