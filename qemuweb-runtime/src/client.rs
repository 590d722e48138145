//! `QemuClient`, the page-side API (wasm32 only): one module worker per VM, commands as
//! promises, events as callbacks.

use crate::capabilities;
use crate::protocol::{
    check_id, AssetSource, Command, EngineAssets, EngineKind, ErrorCode, Event, ExportFormat,
    Reply, Request, VmState, PROTOCOL_VERSION,
};
use crate::RuntimeError;
use js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use qemuweb_config::{DiskInput, ImageSource, VmInputs, VmOverrides, VmProfile};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use tsify::{Ts, Tsify};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Options of `new QemuClient(options)`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct ClientOptions {
    /// URL of the module worker script (`web/worker.js` of the build); default
    /// `./worker.js` relative to the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub worker_url: Option<String>,
    /// The engine assets every VM uses unless `startVm` gives others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub assets: Option<EngineAssets>,
}

/// Options of one `startVm`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct StartOptions {
    /// The engine; default: the one for the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub engine: Option<EngineKind>,
    /// Engine assets for this VM, replacing the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub assets: Option<EngineAssets>,
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    Ok(value.serialize(&serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true))?)
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// A JS `Error` with `code` (an [`ErrorCode`] name) and `vmId` properties.
fn error_value(code: ErrorCode, message: &str, vm_id: Option<&str>) -> JsValue {
    let e = js_sys::Error::new(message);
    let code = serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = Reflect::set(&e, &"code".into(), &code.into());
    if let Some(vm) = vm_id {
        let _ = Reflect::set(&e, &"vmId".into(), &vm.into());
    }
    e.into()
}

fn runtime_error(e: &RuntimeError, vm_id: Option<&str>) -> JsValue {
    error_value(e.code(), &e.to_string(), vm_id)
}

fn page_base() -> Option<String> {
    let global: JsValue = js_sys::global().into();
    get(&get(&global, "location"), "href").as_string()
}

fn resolve_url(url: &str, base: Option<&str>) -> String {
    match base.and_then(|b| web_sys::Url::new_with_base(url, b).ok()) {
        Some(u) => u.href(),
        None => url.to_string(),
    }
}

fn resolve_source(source: &mut ImageSource, base: Option<&str>) {
    if let ImageSource::Url { url } = source {
        *url = resolve_url(url, base);
    }
}

fn resolve_assets(assets: &mut EngineAssets, base: Option<&str>) {
    for u in [
        &mut assets.v86_module,
        &mut assets.v86_wasm,
        &mut assets.qemu_module,
        &mut assets.qemu_wasm,
        &mut assets.qemu_worker,
    ]
    .into_iter()
    .flatten()
    {
        *u = resolve_url(u, base);
    }
    for a in [
        &mut assets.bios,
        &mut assets.vga_bios,
        &mut assets.kvmvapic,
        &mut assets.linuxboot_dma,
    ]
    .into_iter()
    .flatten()
    {
        if let AssetSource::Url { url } = a {
            *url = resolve_url(url, base);
        }
    }
}

#[derive(Default)]
struct Callbacks {
    serial_out: Option<Function>,
    started: Option<Function>,
    stopped: Option<Function>,
    progress: Option<Function>,
    log: Option<Function>,
    error: Option<Function>,
    capabilities: Option<Function>,
}

struct Pending {
    resolve: Function,
    reject: Function,
    is_start: bool,
}

struct VmConn {
    vm_id: String,
    worker: web_sys::Worker,
    ready: Cell<bool>,
    queue: RefCell<Vec<JsValue>>,
    pending: RefCell<HashMap<u64, Pending>>,
    closures: RefCell<Vec<Box<dyn std::any::Any>>>,
}

/// A canvas showing a VM's screen: the page's end of its display ring, polled once an
/// animation frame.
struct Display {
    buffer: js_sys::SharedArrayBuffer,
    canvas_display: RefCell<qemuweb_sidecar::CanvasDisplay>,
    running: Cell<bool>,
    frame_callback: RefCell<Option<FrameCallback>>,
}

/// A `requestAnimationFrame` callback.
type FrameCallback = Closure<dyn FnMut(f64)>;

impl Display {
    fn request_frame(&self) {
        if let (Some(cb), Some(window)) = (self.frame_callback.borrow().as_ref(), web_sys::window())
        {
            let _ = window.request_animation_frame(cb.as_ref().unchecked_ref());
        }
    }
}

/// The largest guest screen a display ring holds (1024x768 RGBA; VGA text is 640x400).
const DISPLAY_MAX_WIDTH: u32 = 1024;
/// See [`DISPLAY_MAX_WIDTH`].
const DISPLAY_MAX_HEIGHT: u32 = 768;

struct Inner {
    worker_url: String,
    displays: RefCell<HashMap<String, Rc<Display>>>,
    assets: EngineAssets,
    vms: RefCell<HashMap<String, Rc<VmConn>>>,
    states: RefCell<HashMap<String, VmState>>,
    callbacks: RefCell<Callbacks>,
    caps: RefCell<Option<JsValue>>,
    next_id: Cell<u64>,
}

/// The page-side API: starts each VM in its own module worker and talks to it.
///
/// Commands return promises that settle with the worker's answer; rejections are `Error`s
/// with a `code` (see `ErrorCode`) and a `vmId`. Events arrive through the `on*`
/// callbacks.
#[wasm_bindgen]
pub struct QemuClient {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl QemuClient {
    /// `new QemuClient(options?)`.
    #[wasm_bindgen(constructor)]
    pub fn new(options: Option<Ts<ClientOptions>>) -> Result<QemuClient, JsError> {
        let options = match options {
            Some(o) => o.to_rust()?,
            None => ClientOptions::default(),
        };
        let base = page_base();
        let worker_url = resolve_url(
            options.worker_url.as_deref().unwrap_or("./worker.js"),
            base.as_deref(),
        );
        let mut assets = options.assets.unwrap_or_default();
        resolve_assets(&mut assets, base.as_deref());
        Ok(QemuClient {
            inner: Rc::new(Inner {
                worker_url,
                displays: RefCell::default(),
                assets,
                vms: RefCell::default(),
                states: RefCell::default(),
                callbacks: RefCell::default(),
                caps: RefCell::default(),
                next_id: Cell::new(1),
            }),
        })
    }

    /// Detects what this page offers; resolves to `RuntimeCapabilities`.
    #[wasm_bindgen(unchecked_return_type = "Promise<RuntimeCapabilities>")]
    pub fn init(&self) -> Promise {
        match to_js(&capabilities::detect()) {
            Ok(v) => {
                *self.inner.caps.borrow_mut() = Some(v.clone());
                Promise::resolve(&v)
            }
            Err(e) => Promise::reject(&JsValue::from(e)),
        }
    }

    /// The capabilities `init()` found, or `undefined` before it.
    #[wasm_bindgen(
        js_name = getCapabilities,
        unchecked_return_type = "RuntimeCapabilities | undefined"
    )]
    pub fn get_capabilities(&self) -> JsValue {
        self.inner
            .caps
            .borrow()
            .clone()
            .unwrap_or(JsValue::UNDEFINED)
    }

    /// Starts VM `vmId` in a new worker; resolves once the guest runs.
    ///
    /// `files` maps the names that `{kind: "file", path}` inputs use to `File`s or
    /// `Blob`s.
    #[wasm_bindgen(js_name = startVm, unchecked_return_type = "Promise<void>")]
    pub fn start_vm(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        profile: Ts<VmProfile>,
        inputs: Ts<VmInputs>,
        overrides: Option<Ts<VmOverrides>>,
        options: Option<Ts<StartOptions>>,
        files: Option<Object>,
    ) -> Promise {
        match self.start_message(&vm_id, profile, inputs, overrides, options, files) {
            Ok(message) => self.inner.clone().spawn_and_send(vm_id, message),
            Err(e) => Promise::reject(&e),
        }
    }

    /// Stops VM `vmId`: without `force` its writes are made durable first. Resolves when
    /// the guest has stopped (the worker is then terminated).
    #[wasm_bindgen(js_name = stopVm, unchecked_return_type = "Promise<void>")]
    pub fn stop_vm(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        force: Option<bool>,
    ) -> Promise {
        let force = force.unwrap_or(false);
        self.inner.send(
            &vm_id,
            Command::Stop {
                vm_id: vm_id.clone(),
                force,
            },
        )
    }

    /// Reboots VM `vmId`.
    #[wasm_bindgen(js_name = resetVm, unchecked_return_type = "Promise<void>")]
    pub fn reset_vm(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) -> Promise {
        self.inner.send(
            &vm_id,
            Command::Reset {
                vm_id: vm_id.clone(),
            },
        )
    }

    /// Sends `data` (a string, sent as UTF-8, or a `Uint8Array`) to the guest's serial port.
    #[wasm_bindgen(js_name = sendSerialIn)]
    pub fn send_serial_in(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        #[wasm_bindgen(unchecked_param_type = "string | Uint8Array")] data: JsValue,
    ) -> Result<(), JsValue> {
        let bytes = if let Some(s) = data.as_string() {
            s.into_bytes()
        } else if let Some(a) = data.dyn_ref::<Uint8Array>() {
            a.to_vec()
        } else {
            return Err(error_value(
                ErrorCode::Malformed,
                "sendSerialIn takes a string or a Uint8Array",
                Some(&vm_id),
            ));
        };
        if !self.inner.vms.borrow().contains_key(&vm_id) {
            return Err(error_value(
                ErrorCode::OutOfOrder,
                &format!("no VM {vm_id:?} is running"),
                Some(&vm_id),
            ));
        }
        for chunk in bytes.chunks(crate::protocol::MAX_SERIAL_IN) {
            let command = Command::SerialIn {
                vm_id: vm_id.clone(),
                data: chunk.to_vec(),
            };
            // Failures come back as error events.
            let _ = self.inner.send(&vm_id, command);
        }
        Ok(())
    }

    /// Makes every write of VM `vmId` durable in IndexedDB.
    #[wasm_bindgen(js_name = syncOverlay, unchecked_return_type = "Promise<void>")]
    pub fn sync_overlay(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) -> Promise {
        self.inner.send(
            &vm_id,
            Command::SyncOverlay {
                vm_id: vm_id.clone(),
            },
        )
    }

    /// Exports the overlay of disk `diskId` (`disk0` is the boot disk) as `compact`
    /// (default) or `qcow2`; resolves to a `Uint8Array`.
    #[wasm_bindgen(js_name = exportOverlay, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn export_overlay(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        #[wasm_bindgen(js_name = "diskId")] disk_id: String,
        format: Option<String>,
    ) -> Promise {
        let format = match format.as_deref() {
            None | Some("compact") => ExportFormat::Compact,
            Some("qcow2") => ExportFormat::Qcow2,
            Some(other) => {
                return Promise::reject(&error_value(
                    ErrorCode::Malformed,
                    &format!("unknown export format {other:?} (compact or qcow2)"),
                    Some(&vm_id),
                ))
            }
        };
        self.inner.send(
            &vm_id,
            Command::ExportOverlay {
                vm_id: vm_id.clone(),
                disk_id,
                format,
            },
        )
    }

    /// The last known state of VM `vmId` (`starting`, `running`, `stopping`, `stopped`,
    /// `failed`), or `undefined` for a VM this client never started.
    #[wasm_bindgen(js_name = getVmState)]
    pub fn get_vm_state(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) -> Option<String> {
        self.inner
            .states
            .borrow()
            .get(&vm_id)
            .map(|s| state_name(*s))
    }

    /// Asks the worker of VM `vmId` for its state.
    #[wasm_bindgen(js_name = queryVmState, unchecked_return_type = "Promise<VmState>")]
    pub fn query_vm_state(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) -> Promise {
        self.inner.send(
            &vm_id,
            Command::QueryState {
                vm_id: vm_id.clone(),
            },
        )
    }

    /// The ids of the VMs that have a worker.
    #[wasm_bindgen(js_name = vmIds)]
    pub fn vm_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.inner.vms.borrow().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Shows VM `vmId`'s screen on `canvas` (resized to the guest's screen). Call it
    /// before `startVm`: the VM's worker then renders its VGA text screen into a
    /// `SharedArrayBuffer` ring and the page draws what changed once an animation
    /// frame. Needs a cross-origin isolated page (COOP/COEP); otherwise throws an
    /// `Error` with code `unsupported`. Replaces an earlier canvas of the same VM.
    #[wasm_bindgen(js_name = attachDisplay)]
    pub fn attach_display(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        canvas: web_sys::HtmlCanvasElement,
    ) -> Result<(), JsValue> {
        check_id("vmId", &vm_id).map_err(|e| runtime_error(&e, Some(&vm_id)))?;
        let isolated = Reflect::get(&js_sys::global(), &"crossOriginIsolated".into())
            .map(|v| v.is_truthy())
            .unwrap_or(false);
        if !isolated {
            return Err(error_value(
                ErrorCode::Unsupported,
                "a display needs SharedArrayBuffer: serve the page cross-origin isolated \
                 (Cross-Origin-Opener-Policy: same-origin, Cross-Origin-Embedder-Policy: \
                 require-corp)",
                Some(&vm_id),
            ));
        }
        self.detach_display(vm_id.clone());
        let browser = |e: JsError| {
            let e = JsValue::from(e);
            let message = js_sys::Error::from(e).message();
            error_value(ErrorCode::Browser, &String::from(message), Some(&vm_id))
        };
        let buffer =
            qemuweb_sidecar::CanvasDisplay::create_ring(DISPLAY_MAX_WIDTH, DISPLAY_MAX_HEIGHT, 3)
                .map_err(browser)?;
        let canvas_display =
            qemuweb_sidecar::CanvasDisplay::new(canvas, buffer.clone()).map_err(browser)?;
        let display = Rc::new(Display {
            buffer,
            canvas_display: RefCell::new(canvas_display),
            running: Cell::new(true),
            frame_callback: RefCell::new(None),
        });
        let weak = Rc::downgrade(&display);
        let inner = Rc::downgrade(&self.inner);
        let id = vm_id.clone();
        let on_frame = Closure::<dyn FnMut(f64)>::new(move |_: f64| {
            let Some(display) = weak.upgrade() else {
                return;
            };
            if !display.running.get() {
                return;
            }
            if let Err(e) = display.canvas_display.borrow_mut().poll() {
                let e = JsValue::from(e);
                if let Some(inner) = inner.upgrade() {
                    let err = error_value(
                        ErrorCode::Browser,
                        &String::from(js_sys::Error::from(e).message()),
                        Some(&id),
                    );
                    inner.callback(|c| &c.error, &[JsValue::from_str(&id), err]);
                }
            }
            display.request_frame();
        });
        *display.frame_callback.borrow_mut() = Some(on_frame);
        display.request_frame();
        self.inner.displays.borrow_mut().insert(vm_id, display);
        Ok(())
    }

    /// Stops drawing VM `vmId`'s screen (the canvas keeps its last picture). A running
    /// VM keeps rendering into its ring until it stops.
    #[wasm_bindgen(js_name = detachDisplay)]
    pub fn detach_display(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) {
        if let Some(d) = self.inner.displays.borrow_mut().remove(&vm_id) {
            d.running.set(false);
        }
    }

    /// Also sends what VM `vmId`'s display draws to the frame receiver at `url`
    /// (`ws://` or `wss://`, e.g. qemuweb-sidecar's `frame-server` `/sink`) over a
    /// WebSocket (`RemoteTransport`), starting with the current screen; replaces an
    /// earlier forwarding of that display. Returns a `DisplayForward` (`stats()`,
    /// `flush(timeoutMs)`, `close()`). Throws an `Error` with code `out_of_order`
    /// without an attached display.
    #[wasm_bindgen(js_name = forwardDisplay)]
    pub fn forward_display(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        url: String,
    ) -> Result<qemuweb_sidecar::DisplayForward, JsValue> {
        let displays = self.inner.displays.borrow();
        let display = displays.get(&vm_id).ok_or_else(|| {
            error_value(
                ErrorCode::OutOfOrder,
                "no display is attached for this VM: call attachDisplay first",
                Some(&vm_id),
            )
        })?;
        let forward = display.canvas_display.borrow_mut().forward(url);
        Ok(forward)
    }

    /// The sequence number of the last frame VM `vmId`'s display drew (`undefined`
    /// before the first or without a display).
    #[wasm_bindgen(js_name = displayFrame)]
    pub fn display_frame(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) -> Option<f64> {
        self.inner
            .displays
            .borrow()
            .get(&vm_id)
            .and_then(|d| d.canvas_display.borrow().last_sequence())
    }

    /// Terminates every worker at once (no sync); pending commands are rejected.
    pub fn terminate(&self) {
        let vms: Vec<Rc<VmConn>> = self
            .inner
            .vms
            .borrow_mut()
            .drain()
            .map(|(_, v)| v)
            .collect();
        for vm in vms {
            self.inner
                .close(&vm, ErrorCode::Worker, "the client was terminated");
            self.inner
                .states
                .borrow_mut()
                .insert(vm.vm_id.clone(), VmState::Stopped);
        }
    }

    /// `callback(vmId, bytes: Uint8Array)` for serial output.
    #[wasm_bindgen(js_name = onSerialOut)]
    pub fn on_serial_out(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, bytes: Uint8Array) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.callbacks.borrow_mut().serial_out = callback;
    }

    /// `callback(vmId, engine)` when a guest runs.
    #[wasm_bindgen(js_name = onStarted)]
    pub fn on_started(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, engine: EngineKind) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.callbacks.borrow_mut().started = callback;
    }

    /// `callback(vmId, reason)` when a guest stopped (`requested`, `forced`, `error`).
    #[wasm_bindgen(js_name = onStopped)]
    pub fn on_stopped(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, reason: StopReason) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.callbacks.borrow_mut().stopped = callback;
    }

    /// `callback(vmId, {what, bytesFetched, total})` for download progress.
    #[wasm_bindgen(js_name = onProgress)]
    pub fn on_progress(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, progress: { what: string; bytesFetched: number; total: number }) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.callbacks.borrow_mut().progress = callback;
    }

    /// `callback(vmId, level, message)` for log messages.
    #[wasm_bindgen(js_name = onLog)]
    pub fn on_log(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, level: LogLevel, message: string) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.callbacks.borrow_mut().log = callback;
    }

    /// `callback(vmId, {code, message, requestId})` for every error event.
    #[wasm_bindgen(js_name = onError)]
    pub fn on_error(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, error: Error & { code: ErrorCode; vmId: string; requestId?: number }) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.callbacks.borrow_mut().error = callback;
    }

    /// `callback(vmId, capabilities)` when a worker reports its capabilities.
    #[wasm_bindgen(js_name = onCapabilities)]
    pub fn on_capabilities(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, capabilities: RuntimeCapabilities) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.callbacks.borrow_mut().capabilities = callback;
    }
}

fn state_name(s: VmState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl QemuClient {
    fn start_message(
        &self,
        vm_id: &str,
        profile: Ts<VmProfile>,
        inputs: Ts<VmInputs>,
        overrides: Option<Ts<VmOverrides>>,
        options: Option<Ts<StartOptions>>,
        files: Option<Object>,
    ) -> Result<JsValue, JsValue> {
        let bad = |what: &str, e: tsify::Error| {
            error_value(ErrorCode::Malformed, &format!("{what}: {e}"), Some(vm_id))
        };
        check_id("vmId", vm_id).map_err(|e| runtime_error(&e, Some(vm_id)))?;
        if let Some(state) = self.inner.states.borrow().get(vm_id) {
            if self.inner.vms.borrow().contains_key(vm_id) {
                return Err(error_value(
                    ErrorCode::OutOfOrder,
                    &format!("VM {vm_id:?} is already {}", state_name(*state)),
                    Some(vm_id),
                ));
            }
        }
        let profile = profile.to_rust().map_err(|e| bad("profile", e))?;
        let mut inputs = inputs.to_rust().map_err(|e| bad("inputs", e))?;
        let overrides = overrides
            .map(|o| o.to_rust())
            .transpose()
            .map_err(|e| bad("overrides", e))?;
        let options = options
            .map(|o| o.to_rust())
            .transpose()
            .map_err(|e| bad("options", e))?
            .unwrap_or_default();
        let base = page_base();
        let base = base.as_deref();
        let disks = inputs
            .disk
            .iter_mut()
            .chain(inputs.additional_disks.iter_mut());
        for DiskInput { source, .. } in disks {
            resolve_source(source, base);
        }
        for s in [&mut inputs.kernel, &mut inputs.initrd]
            .into_iter()
            .flatten()
        {
            resolve_source(s, base);
        }
        let assets = match options.assets {
            Some(mut a) => {
                resolve_assets(&mut a, base);
                a
            }
            None => self.inner.assets.clone(),
        };
        let request = Request {
            id: self.inner.next_id(),
            command: Command::Start {
                vm_id: vm_id.to_string(),
                profile,
                inputs,
                overrides,
                engine: options.engine,
                assets,
            },
        };
        let message = to_js(&request).map_err(JsValue::from)?;
        if let Some(files) = files {
            let _ = Reflect::set(&get(&message, "command"), &"files".into(), &files);
        }
        if let Some(display) = self.inner.displays.borrow().get(vm_id) {
            let _ = Reflect::set(
                &get(&message, "command"),
                &"display".into(),
                &display.buffer,
            );
        }
        Ok(message)
    }
}

impl Inner {
    fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    fn callback(&self, pick: impl Fn(&Callbacks) -> &Option<Function>, args: &[JsValue]) {
        let f = pick(&self.callbacks.borrow()).clone();
        if let Some(f) = f {
            let a = js_sys::Array::new();
            for v in args {
                a.push(v);
            }
            // A throwing callback must not break the event loop of the client.
            let _ = f.apply(&JsValue::NULL, &a);
        }
    }

    fn spawn_and_send(self: Rc<Self>, vm_id: String, message: JsValue) -> Promise {
        let options = web_sys::WorkerOptions::new();
        options.set_type(web_sys::WorkerType::Module);
        options.set_name(&format!("qemuweb-{vm_id}"));
        let worker = match web_sys::Worker::new_with_options(&self.worker_url, &options) {
            Ok(w) => w,
            Err(e) => {
                let msg = format!("cannot start the worker {}: {e:?}", self.worker_url);
                return Promise::reject(&error_value(ErrorCode::Worker, &msg, Some(&vm_id)));
            }
        };
        let conn = Rc::new(VmConn {
            vm_id: vm_id.clone(),
            worker,
            ready: Cell::new(false),
            queue: RefCell::default(),
            pending: RefCell::default(),
            closures: RefCell::default(),
        });
        let weak_inner = Rc::downgrade(&self);
        let weak_conn = Rc::downgrade(&conn);
        let on_message =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                if let (Some(inner), Some(conn)) = (weak_inner.upgrade(), weak_conn.upgrade()) {
                    inner.on_event(&conn, e.data());
                }
            });
        conn.worker
            .set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let weak_inner = Rc::downgrade(&self);
        let weak_conn = Rc::downgrade(&conn);
        let on_error = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            if let (Some(inner), Some(conn)) = (weak_inner.upgrade(), weak_conn.upgrade()) {
                let message = get(&e, "message")
                    .as_string()
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "the worker script failed to load or threw".into());
                let error = error_value(ErrorCode::Worker, &message, Some(&conn.vm_id));
                inner.callback(|c| &c.error, &[conn.vm_id.as_str().into(), error]);
                if conn.ready.get() {
                    // An exception the emulator did not catch: the worker lives on, and
                    // the page decides whether to stop the VM.
                    return;
                }
                // The worker never came up (its script or the wasm failed to load).
                inner.close(&conn, ErrorCode::Worker, &message);
                inner.vms.borrow_mut().remove(&conn.vm_id);
                inner
                    .states
                    .borrow_mut()
                    .insert(conn.vm_id.clone(), VmState::Failed);
            }
        });
        conn.worker
            .set_onerror(Some(on_error.as_ref().unchecked_ref()));
        conn.closures.borrow_mut().push(Box::new(on_message));
        conn.closures.borrow_mut().push(Box::new(on_error));
        self.vms.borrow_mut().insert(vm_id.clone(), conn.clone());
        self.states.borrow_mut().insert(vm_id, VmState::Starting);
        self.post(&conn, message, true)
    }

    /// Sends `command` to the worker of `vm_id`; the promise settles with its answer.
    fn send(&self, vm_id: &str, command: Command) -> Promise {
        let conn = self.vms.borrow().get(vm_id).cloned();
        let Some(conn) = conn else {
            return Promise::reject(&error_value(
                ErrorCode::OutOfOrder,
                &format!("no VM {vm_id:?} is running in this client"),
                Some(vm_id),
            ));
        };
        let request = Request {
            id: self.next_id(),
            command,
        };
        match to_js(&request) {
            Ok(message) => self.post(&conn, message, false),
            Err(e) => Promise::reject(&JsValue::from(e)),
        }
    }

    fn post(&self, conn: &VmConn, message: JsValue, is_start: bool) -> Promise {
        let id = get(&message, "id").as_f64().unwrap_or_default() as u64;
        let mut slot = None;
        let promise = Promise::new(&mut |resolve, reject| {
            slot = Some(Pending {
                resolve,
                reject,
                is_start,
            });
        });
        if let Some(p) = slot {
            conn.pending.borrow_mut().insert(id, p);
        }
        if conn.ready.get() {
            let _ = conn.worker.post_message(&message);
        } else {
            conn.queue.borrow_mut().push(message);
        }
        promise
    }

    /// Rejects every pending command and terminates the worker.
    fn close(&self, conn: &VmConn, code: ErrorCode, message: &str) {
        let pending: Vec<Pending> = conn.pending.borrow_mut().drain().map(|(_, p)| p).collect();
        for p in pending {
            let _ = p.reject.call1(
                &JsValue::NULL,
                &error_value(code, message, Some(&conn.vm_id)),
            );
        }
        conn.worker.terminate();
        conn.worker.set_onmessage(None);
        conn.worker.set_onerror(None);
    }

    fn on_event(&self, conn: &Rc<VmConn>, data: JsValue) {
        let vm: JsValue = conn.vm_id.as_str().into();
        let event: Event = match serde_wasm_bindgen::from_value(data.clone()) {
            Ok(e) => e,
            Err(e) => {
                let error = error_value(
                    ErrorCode::Malformed,
                    &format!("the worker sent a malformed event: {e}"),
                    Some(&conn.vm_id),
                );
                return self.callback(|c| &c.error, &[vm, error]);
            }
        };
        match event {
            Event::Ready { version, .. } => {
                if version != PROTOCOL_VERSION {
                    let e = RuntimeError::VersionMismatch {
                        page: PROTOCOL_VERSION,
                        worker: version,
                    };
                    self.callback(|c| &c.error, &[vm, runtime_error(&e, Some(&conn.vm_id))]);
                    self.close(conn, e.code(), &e.to_string());
                    self.vms.borrow_mut().remove(&conn.vm_id);
                    self.states
                        .borrow_mut()
                        .insert(conn.vm_id.clone(), VmState::Failed);
                    return;
                }
                let hello = Request {
                    id: self.next_id(),
                    command: Command::Hello {
                        version: PROTOCOL_VERSION,
                    },
                };
                if let Ok(m) = to_js(&hello) {
                    let _ = conn.worker.post_message(&m);
                }
                conn.ready.set(true);
                for m in conn.queue.borrow_mut().drain(..) {
                    let _ = conn.worker.post_message(&m);
                }
            }
            Event::Capabilities { .. } => {
                self.callback(|c| &c.capabilities, &[vm, get(&data, "capabilities")]);
            }
            Event::Started { engine, .. } => {
                self.states
                    .borrow_mut()
                    .insert(conn.vm_id.clone(), VmState::Running);
                self.callback(|c| &c.started, &[vm, engine.as_str().into()]);
            }
            Event::Stopped { .. } => {
                self.states
                    .borrow_mut()
                    .insert(conn.vm_id.clone(), VmState::Stopped);
                self.callback(|c| &c.stopped, &[vm, get(&data, "reason")]);
            }
            Event::SerialOut { .. } => {
                self.callback(|c| &c.serial_out, &[vm, get(&data, "data")]);
            }
            Event::Progress { .. } => {
                self.callback(|c| &c.progress, &[vm, data.clone()]);
            }
            Event::Log { level, message, .. } => {
                let level = serde_json::to_value(level)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                self.callback(|c| &c.log, &[vm, level.into(), message.into()]);
            }
            Event::Error {
                request_id,
                code,
                message,
                ..
            } => {
                let error = error_value(code, &message, Some(&conn.vm_id));
                if let Some(id) = request_id {
                    let _ =
                        Reflect::set(&error, &"requestId".into(), &JsValue::from_f64(id as f64));
                }
                self.callback(|c| &c.error, &[vm, error.clone()]);
                let pending = request_id.and_then(|id| conn.pending.borrow_mut().remove(&id));
                if let Some(p) = pending {
                    let _ = p.reject.call1(&JsValue::NULL, &error);
                    if p.is_start {
                        // A VM that failed to start has nothing left in its worker.
                        self.states
                            .borrow_mut()
                            .insert(conn.vm_id.clone(), VmState::Failed);
                        self.close(conn, code, &message);
                        self.vms.borrow_mut().remove(&conn.vm_id);
                    }
                }
            }
            Event::Done { request_id, result } => {
                let pending = conn.pending.borrow_mut().remove(&request_id);
                if let Some(p) = pending {
                    let value = match result {
                        Reply::Ok => JsValue::UNDEFINED,
                        Reply::State { state } => state_name(state).into(),
                        Reply::Exported { .. } => get(&get(&data, "result"), "data"),
                    };
                    let _ = p.resolve.call1(&JsValue::NULL, &value);
                }
                let stopped = self.states.borrow().get(&conn.vm_id) == Some(&VmState::Stopped);
                if stopped && conn.pending.borrow().is_empty() {
                    self.close(conn, ErrorCode::Worker, "the VM stopped");
                    self.vms.borrow_mut().remove(&conn.vm_id);
                }
            }
        }
    }
}
