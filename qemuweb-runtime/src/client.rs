//! `QemuClient`, the page-side API (wasm32 only): one module worker per VM, commands as
//! promises, events to any number of listeners.
//!
//! - `events`: listeners (`on`, `once`, `off`, the `onX` slots) and `QemuError`;
//! - `overlays`: the VMs' stored disks (`overlays`, `resetOverlay`, `deleteOverlays`);
//! - `devtools`: the page side of the DevTools hook (`devtools: true`), see
//!   [`crate::devtools`];
//! - `snapshots`: saved VM states (`saveSnapshot`, `listSnapshots`, `deleteSnapshot`,
//!   `exportSnapshot`, `importSnapshot`; `startVm`'s `resume` option resumes one).
//! - `network`: the page's virtual network that connects the VMs' NICs (`networks`
//!   option, `networkStats`), and its way out (`connectNetwork`).

mod devtools;
mod events;
mod network;
mod overlays;
mod snapshots;

use crate::canvas_input::CanvasInput;
use crate::capabilities;
use crate::input::{chord, text_events, InputEvent, InputOptions, MAX_INPUT_EVENTS};
use crate::protocol::{
    check_id, AssetSource, Command, EngineAssets, EngineKind, ErrorCode, Event, ExportFormat,
    Limits, Persistence, QemuOptions, ReadCacheOptions, Reply, Request, Resume, VmState,
    PROTOCOL_VERSION,
};
use crate::RuntimeError;
use events::{field as get, is_public, qemu_error, Listeners, Slot};
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use qemuweb_config::{DiskInput, ImageSource, VirtualNetwork, VmInputs, VmOverrides, VmProfile};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use tsify::{Ts, Tsify};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;

/// Options of `new QemuClient(options)`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct ClientOptions {
    /// URL of the VM worker script. `QemuClient` of `@qemuweb/runtime` uses the package's
    /// own `worker.js` (its `workerUrl` export) unless this is given; with the raw
    /// wasm-bindgen output (`qemuweb_runtime.js` of `scripts/build-web`) the default is
    /// `./worker.js`, relative to the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub worker_url: Option<String>,
    /// The engine assets every VM uses unless `startVm` gives others. `QemuClient` of
    /// `@qemuweb/runtime` fills in those its installed packages hold (see its README);
    /// what is given here wins, asset by asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub assets: Option<EngineAssets>,
    /// Lets the QemuWeb DevTools extension (`extensions/chrome`) see and drive this
    /// client's VMs: their state, serial console, disks and events, and stop, reset,
    /// export overlay and save state (default: off). The hook answers only messages that
    /// the page's own window posts to itself (the extension's content script), never
    /// another frame's or origin's; see the `devtools` module for its messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub devtools: Option<bool>,
    /// The virtual networks this client's VMs may attach to (through their profile's or
    /// overrides' `networks`); default: the built-in `default` (NAT addresses 10.0.2.0/24,
    /// DHCP, DNS) and `isolated` (192.168.100.0/24). VMs on one network reach each other
    /// through the page's switch; networks are isolated from each other. VMs on both
    /// engines have a NIC on them (QEMU through its `-netdev qemuweb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub networks: Option<Vec<VirtualNetwork>>,
}

/// Options of one `startVm(vmId, profile, inputs, options)`.
#[derive(Debug, Default, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartOptions {
    /// Per-run changes to the profile (memory, kernel command line, disk interface, ...).
    #[serde(default)]
    #[tsify(optional)]
    pub overrides: Option<VmOverrides>,
    /// The engine; default: the one for the profile (`v86` for i386 profiles with IDE
    /// disks, else `qemu`).
    #[serde(default)]
    #[tsify(optional)]
    pub engine: Option<EngineKind>,
    /// Engine assets for this VM, replacing the client's.
    #[serde(default)]
    #[tsify(optional)]
    pub assets: Option<EngineAssets>,
    /// Where the disks' writes go: `indexeddb` (the default: kept by VM id and disk id, so
    /// the next start of the same `vmId` sees them) or `memory` (dropped at stop).
    #[serde(default)]
    #[tsify(optional)]
    pub persistence: Option<Persistence>,
    /// The `File`s and `Blob`s that inputs of kind `file` name, by their `path`.
    #[serde(default, with = "serde_wasm_bindgen::preserve")]
    #[tsify(optional, type = "Record<string, Blob>")]
    pub files: JsValue,
    /// Called with this VM's `phase` and `progress` events until `startVm` settles (the
    /// client's listeners hear them too).
    #[serde(default, with = "serde_wasm_bindgen::preserve")]
    #[tsify(
        optional,
        type = "(event: QemuEventOf<\"phase\"> | QemuEventOf<\"progress\">) => void"
    )]
    pub progress: JsValue,
    /// Cancels the start: `startVm` then rejects with a `QemuError` of code `aborted`
    /// (its `cause` is the signal's reason), and the VM's worker is terminated, which
    /// releases every lock it held. A signal aborted after the start completed does
    /// nothing.
    #[serde(default, with = "serde_wasm_bindgen::preserve")]
    #[tsify(optional, type = "AbortSignal")]
    pub signal: JsValue,
    /// Bounds on the sizes of this VM's kernel and initrd (default: [`Limits::default`]).
    #[serde(default)]
    #[tsify(optional)]
    pub limits: Option<Limits>,
    /// Resume a saved state instead of booting: a snapshot of this VM
    /// (`{kind: "snapshot", id}`, see `saveSnapshot`/`importSnapshot`) or a published
    /// boot state (`{kind: "published", url}`, the `boot-state.json` that
    /// `qemuweb prepare --boot-state` writes). The VM continues where it was saved, with
    /// its disks as they were then; a snapshot of another engine, machine (profile and
    /// overrides) or base image is refused with `snapshot-mismatch` and nothing changes.
    #[serde(default)]
    #[tsify(optional)]
    pub resume: Option<Resume>,
    /// The persistent cache of the images' fetched chunks (default: on, 512 MiB).
    #[serde(default)]
    #[tsify(optional)]
    pub read_cache: Option<ReadCacheOptions>,
    /// Options of the QEMU engine: `{jit: false}` runs a JIT build's interpreter instead
    /// (the engine reports its mode in `execution` events).
    #[serde(default)]
    #[tsify(optional)]
    pub qemu: Option<QemuOptions>,
}

/// Options of `attachDisplay(vmId, canvas, options)`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisplayOptions {
    /// How the canvas takes keyboard and pointer input (default: keys while it has the
    /// focus, the pointer over it, focus on click, no pointer lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub input: Option<InputOptions>,
    /// The largest guest screen shown, in pixels (default 1024x768; larger screens are
    /// refused by the display ring). Each ring holds three screens of this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub max_width: Option<u32>,
    /// See `maxWidth` (default 768).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub max_height: Option<u32>,
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    Ok(value.serialize(&serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true))?)
}

/// A `QemuError` with `code`, about `vm_id`.
fn error_value(code: ErrorCode, message: &str, vm_id: Option<&str>) -> JsValue {
    qemu_error(code, message, vm_id, None, &JsValue::UNDEFINED)
}

fn runtime_error(e: &RuntimeError, vm_id: Option<&str>) -> JsValue {
    error_value(e.code(), &e.to_string(), vm_id)
}

/// A storage failure of a page-side command as a `QemuError` with code `storage`.
fn storage_error(e: qemuweb_storage::StorageError, vm_id: &str) -> JsValue {
    error_value(ErrorCode::Storage, &e.to_string(), Some(vm_id))
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
        &mut assets.qemu_dir,
        &mut assets.qemu_worker,
    ]
    .into_iter()
    .flatten()
    {
        *u = resolve_url(u, base);
    }
    for a in [&mut assets.bios, &mut assets.vga_bios]
        .into_iter()
        .flatten()
    {
        if let AssetSource::Url { url } = a {
            *url = resolve_url(url, base);
        }
    }
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
    /// Messages (with what they transfer) waiting for the worker to be ready.
    queue: RefCell<Vec<(JsValue, Array)>>,
    pending: RefCell<HashMap<u64, Pending>>,
    closures: RefCell<Vec<Box<dyn std::any::Any>>>,
    /// What only lasts while the VM starts.
    start: RefCell<Option<Starting>>,
}

/// The `progress` callback and `signal` of a `startVm` that has not settled.
struct Starting {
    progress: Option<Function>,
    abort: Option<(web_sys::AbortSignal, Closure<dyn FnMut()>)>,
    /// What the start message transfers to the worker (its network port).
    transfer: Array,
}

impl VmConn {
    /// The start settled: its progress callback and abort listener go.
    fn end_start(&self) {
        if let Some(Starting {
            abort: Some((signal, listener)),
            ..
        }) = self.start.borrow_mut().take()
        {
            let _ = signal
                .remove_event_listener_with_callback("abort", listener.as_ref().unchecked_ref());
        }
    }
}

/// A canvas showing a VM's screen: the page's end of its display ring, polled once an
/// animation frame.
struct Display {
    buffer: js_sys::SharedArrayBuffer,
    canvas: web_sys::HtmlCanvasElement,
    /// The listeners that send the user's keys and pointer to the guest.
    input: RefCell<Option<CanvasInput>>,
    canvas_display: RefCell<qemuweb_sidecar::CanvasDisplay>,
    running: Cell<bool>,
    frame_callback: RefCell<Option<FrameCallback>>,
    /// The pending `requestAnimationFrame`, cancelled when the display goes (its callback
    /// must not run after the closure is dropped).
    frame_request: Cell<Option<i32>>,
}

/// A `requestAnimationFrame` callback.
type FrameCallback = Closure<dyn FnMut(f64)>;

impl Display {
    fn request_frame(&self) {
        if let (Some(cb), Some(window)) = (self.frame_callback.borrow().as_ref(), web_sys::window())
        {
            self.frame_request.set(
                window
                    .request_animation_frame(cb.as_ref().unchecked_ref())
                    .ok(),
            );
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        if let (Some(id), Some(window)) = (self.frame_request.get(), web_sys::window()) {
            let _ = window.cancel_animation_frame(id);
        }
    }
}

/// The largest guest screen a display ring holds by default (1024x768 RGBA; VGA text is
/// 720x400).
const DISPLAY_MAX_WIDTH: u32 = 1024;
/// See [`DISPLAY_MAX_WIDTH`].
const DISPLAY_MAX_HEIGHT: u32 = 768;

struct Inner {
    worker_url: String,
    displays: RefCell<HashMap<String, Rc<Display>>>,
    assets: EngineAssets,
    vms: RefCell<HashMap<String, Rc<VmConn>>>,
    states: RefCell<HashMap<String, VmState>>,
    listeners: Listeners,
    caps: RefCell<Option<JsValue>>,
    next_id: Cell<u64>,
    /// A function that returns `undefined` (to settle promises with nothing).
    noop: Closure<dyn FnMut(JsValue)>,
    /// The DevTools hook, when `devtools: true`.
    devtools: RefCell<Option<Rc<devtools::Hook>>>,
    /// The switch the VMs' NICs are on.
    network: Rc<network::ClientNetwork>,
}

/// The page-side API: starts each VM in its own module worker and talks to it.
///
/// Commands return promises that settle with the worker's answer; rejections are
/// `QemuError`s (an `Error` with an `ErrorCode` as `code`, and `vmId`). Events go to the
/// listeners of `on(type, listener)` (any number per event; typed from the `Event` union)
/// and to the single-slot `onX` callbacks.
///
/// A VM's disk writes are kept in IndexedDB, keyed by its `vmId` and the disk id (`disk0`
/// for the boot disk, then `disk1`, ...): starting the same `vmId` again continues from
/// them. `overlays`, `resetOverlay` and `deleteOverlays` show and remove them;
/// `persistence: "memory"` in `startVm`'s options keeps a run's writes in memory only.
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
        let network = network::ClientNetwork::new(
            options
                .networks
                .unwrap_or_else(qemuweb_config::default_networks),
        )
        .map_err(|e| JsError::new(&e.to_string()))?;
        let client = QemuClient {
            inner: Rc::new(Inner {
                worker_url,
                displays: RefCell::default(),
                assets,
                vms: RefCell::default(),
                states: RefCell::default(),
                listeners: Listeners::default(),
                caps: RefCell::default(),
                next_id: Cell::new(1),
                noop: Closure::new(|_| {}),
                devtools: RefCell::default(),
                network,
            }),
        };
        if options.devtools == Some(true) {
            if let Some(hook) = devtools::Hook::install(&client.inner) {
                let weak = Rc::downgrade(&hook);
                client.inner.listeners.set_observer(Rc::new(move |event| {
                    if let Some(hook) = weak.upgrade() {
                        hook.observe(event);
                    }
                }));
                *client.inner.devtools.borrow_mut() = Some(hook);
            }
        }
        Ok(client)
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

    /// Starts VM `vmId` in a new worker; resolves once the guest runs. `options` (all
    /// optional): `overrides`, `engine`, `assets`, `persistence`, `files` (the `File`s and
    /// `Blob`s inputs of kind `file` name), `progress` and `signal` (see `StartOptions`).
    ///
    /// Rejects with a `QemuError`: `invalid-profile`, `invalid-inputs`, `unsupported`,
    /// `missing-bios`, `fetch`, `storage`, `engine`, `worker`, `out-of-order` (the VM is
    /// already running), `malformed` (arguments of the wrong shape) or `aborted`.
    #[wasm_bindgen(js_name = startVm, unchecked_return_type = "Promise<void>")]
    pub fn start_vm(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        profile: Ts<VmProfile>,
        inputs: Ts<VmInputs>,
        #[wasm_bindgen(unchecked_optional_param_type = "StartOptions")] options: Option<Object>,
    ) -> Promise {
        let (message, starting) = match self.start_message(&vm_id, profile, inputs, options) {
            Ok(m) => m,
            Err(e) => return Promise::reject(&e),
        };
        let signal = starting.abort.as_ref().map(|(s, _)| s.clone());
        if let Some(signal) = signal.filter(|s| s.aborted()) {
            self.inner.network.detach(&vm_id);
            return Promise::reject(&aborted(&vm_id, &signal));
        }
        let profile = get(&get(&get(&message, "command"), "profile"), "id");
        let started = self
            .inner
            .clone()
            .spawn_and_send(vm_id.clone(), message, starting);
        let hook = self.inner.devtools.borrow().clone();
        if let Some(hook) = hook {
            hook.starting(&vm_id, &profile.as_string().unwrap_or_default());
        }
        started
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
        #[wasm_bindgen(unchecked_optional_param_type = "ExportFormat")] format: Option<JsValue>,
    ) -> Promise {
        let format = format.unwrap_or(JsValue::UNDEFINED);
        let format = if format.is_undefined() || format.is_null() {
            ExportFormat::Compact
        } else {
            match serde_wasm_bindgen::from_value::<ExportFormat>(format.clone()) {
                Ok(f) => f,
                Err(_) => {
                    let name = format.as_string().unwrap_or_else(|| format!("{format:?}"));
                    return Promise::reject(&error_value(
                        ErrorCode::Malformed,
                        &format!("unknown export format {name:?} (compact or qcow2)"),
                        Some(&vm_id),
                    ));
                }
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
    /// `failed`), or `undefined` for a VM this client never started. A start cancelled
    /// through its signal leaves `stopped`.
    #[wasm_bindgen(js_name = getVmState, unchecked_return_type = "VmState | undefined")]
    pub fn get_vm_state(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) -> JsValue {
        match self.inner.states.borrow().get(&vm_id) {
            Some(s) => state_name(*s).into(),
            None => JsValue::UNDEFINED,
        }
    }

    /// The stored disks of VM `vmId` (whether or not it runs): one `OverlayInfo` per disk
    /// whose writes are kept in IndexedDB; empty for a VM with none.
    #[wasm_bindgen(unchecked_return_type = "Promise<OverlayInfo[]>")]
    pub fn overlays(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) -> Promise {
        if let Err(e) = check_id("vmId", &vm_id) {
            return Promise::reject(&runtime_error(&e, Some(&vm_id)));
        }
        future_to_promise(async move {
            let list = overlays::list(&vm_id)
                .await
                .map_err(|e| storage_error(e, &vm_id))?;
            to_js(&list).map_err(JsValue::from)
        })
    }

    /// Forgets the writes of disk `diskId` of VM `vmId`: its next start reads the base
    /// image as it is. Rejects with `out-of-order` while this client runs the VM, and
    /// with `storage` while another page or worker has the disk open.
    #[wasm_bindgen(js_name = resetOverlay, unchecked_return_type = "Promise<void>")]
    pub fn reset_overlay(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        #[wasm_bindgen(js_name = "diskId")] disk_id: String,
    ) -> Promise {
        self.delete_stored(vm_id, Some(disk_id))
    }

    /// Forgets the writes of every disk of VM `vmId`. Rejects as `resetOverlay` does.
    #[wasm_bindgen(js_name = deleteOverlays, unchecked_return_type = "Promise<void>")]
    pub fn delete_overlays(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) -> Promise {
        self.delete_stored(vm_id, None)
    }

    /// `on(type, listener)`: see the TypeScript declaration (`events::TYPESCRIPT`).
    #[wasm_bindgen(skip_typescript)]
    pub fn on(&self, r#type: String, listener: Function) -> Function {
        self.add_listener(r#type, listener, false)
    }

    /// `once(type, listener)`: `on` for one event.
    #[wasm_bindgen(skip_typescript)]
    pub fn once(&self, r#type: String, listener: Function) -> Function {
        self.add_listener(r#type, listener, true)
    }

    /// `off(type, listener)`: removes `listener`.
    #[wasm_bindgen(skip_typescript)]
    pub fn off(&self, r#type: String, listener: Function) {
        self.inner.listeners.remove_function(&r#type, &listener);
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

    /// Shows VM `vmId`'s screen on `canvas` (resized to the guest's screen) and, unless
    /// `options.input` says otherwise, sends what the user types and does with the
    /// pointer on it to the guest (keys while the canvas has the focus; a click focuses
    /// it). Call it before `startVm`: the VM's worker then renders its screen into a
    /// `SharedArrayBuffer` ring and the page draws what changed once an animation
    /// frame. Needs a cross-origin isolated page (COOP/COEP); otherwise throws a
    /// `QemuError` with code `unsupported`. Replaces an earlier canvas of the same VM.
    #[wasm_bindgen(js_name = attachDisplay)]
    pub fn attach_display(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        canvas: web_sys::HtmlCanvasElement,
        options: Option<Ts<DisplayOptions>>,
    ) -> Result<(), JsValue> {
        check_id("vmId", &vm_id).map_err(|e| runtime_error(&e, Some(&vm_id)))?;
        let options = match options {
            Some(o) => o.to_rust().map_err(|e| {
                error_value(
                    ErrorCode::Malformed,
                    &format!("display options: {e}"),
                    Some(&vm_id),
                )
            })?,
            None => DisplayOptions::default(),
        };
        let max_width = options.max_width.unwrap_or(DISPLAY_MAX_WIDTH);
        let max_height = options.max_height.unwrap_or(DISPLAY_MAX_HEIGHT);
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
        let buffer = qemuweb_sidecar::CanvasDisplay::create_ring(max_width, max_height, 3)
            .map_err(browser)?;
        let canvas_display =
            qemuweb_sidecar::CanvasDisplay::new(canvas.clone(), buffer.clone()).map_err(browser)?;
        let input_options = options.input.unwrap_or_default();
        let input = (input_options.keyboard() || input_options.pointer()).then(|| {
            let inner = Rc::downgrade(&self.inner);
            let id = vm_id.clone();
            let sink: crate::canvas_input::InputSink = Rc::new(move |events| {
                if let Some(inner) = inner.upgrade() {
                    inner.send_input_quietly(&id, events);
                }
            });
            CanvasInput::attach(&canvas, input_options, sink)
        });
        let display = Rc::new(Display {
            buffer,
            canvas,
            input: RefCell::new(input),
            canvas_display: RefCell::new(canvas_display),
            running: Cell::new(true),
            frame_callback: RefCell::new(None),
            frame_request: Cell::new(None),
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
                    let message = String::from(js_sys::Error::from(e).message());
                    inner.report_error(&id, ErrorCode::Browser, &message);
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
            d.input.borrow_mut().take();
        }
    }

    /// Sends keyboard and pointer events to VM `vmId`'s guest, in order (see
    /// `InputEvent`); resolves once the engine took them.
    #[wasm_bindgen(js_name = sendInput, unchecked_return_type = "Promise<void>")]
    pub fn send_input(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        #[wasm_bindgen(unchecked_param_type = "InputEvent[]")] events: JsValue,
    ) -> Promise {
        match serde_wasm_bindgen::from_value::<Vec<InputEvent>>(events) {
            Ok(events) => self.inner.send_input(&vm_id, events),
            Err(e) => Promise::reject(&error_value(
                ErrorCode::Malformed,
                &format!("sendInput takes an array of InputEvent: {e}"),
                Some(&vm_id),
            )),
        }
    }

    /// Presses the keys `codes` (`KeyboardEvent.code` names) together, like QEMU's
    /// `sendkey`: down in order, then up in reverse order. `sendKeys(vm, ["ControlLeft",
    /// "AltLeft", "Delete"])` is Ctrl-Alt-Del.
    #[wasm_bindgen(js_name = sendKeys, unchecked_return_type = "Promise<void>")]
    pub fn send_keys(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        codes: Vec<String>,
    ) -> Promise {
        self.inner.send_input(&vm_id, chord(&codes))
    }

    /// Sends Ctrl-Alt-Del to VM `vmId`'s guest (which a browser never passes from the
    /// keyboard).
    #[wasm_bindgen(js_name = sendCtrlAltDel, unchecked_return_type = "Promise<void>")]
    pub fn send_ctrl_alt_del(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) -> Promise {
        self.inner
            .send_input(&vm_id, chord(&["ControlLeft", "AltLeft", "Delete"]))
    }

    /// Types `text` into VM `vmId`'s guest as key strokes on a US keyboard layout
    /// (Shift where needed; `\n` is Enter). Rejects with code `malformed`, sending
    /// nothing, if a character has no key.
    #[wasm_bindgen(js_name = typeText, unchecked_return_type = "Promise<void>")]
    pub fn type_text(
        &self,
        #[wasm_bindgen(js_name = "vmId")] vm_id: String,
        text: String,
    ) -> Promise {
        match text_events(&text) {
            Ok(events) => self.inner.send_input(&vm_id, events),
            Err(e) => Promise::reject(&runtime_error(&e, Some(&vm_id))),
        }
    }

    /// VM `vmId`'s screen as the canvas shows it, as a PNG `Blob`. Rejects with code
    /// `out-of-order` without an attached display.
    #[wasm_bindgen(unchecked_return_type = "Promise<Blob>")]
    pub fn screenshot(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) -> Promise {
        let canvas = self
            .inner
            .displays
            .borrow()
            .get(&vm_id)
            .map(|d| d.canvas.clone());
        let Some(canvas) = canvas else {
            return Promise::reject(&error_value(
                ErrorCode::OutOfOrder,
                "no display is attached for this VM: call attachDisplay first",
                Some(&vm_id),
            ));
        };
        let id = vm_id.clone();
        Promise::new(&mut |resolve, reject| {
            let (resolve, reject2, id2) = (resolve.clone(), reject.clone(), id.clone());
            let done = Closure::once_into_js(move |blob: JsValue| {
                if blob.is_null() {
                    let e = error_value(ErrorCode::Browser, "the canvas gave no PNG", Some(&id2));
                    let _ = reject2.call1(&JsValue::NULL, &e);
                } else {
                    let _ = resolve.call1(&JsValue::NULL, &blob);
                }
            });
            if let Err(e) = canvas.to_blob_with_type(done.unchecked_ref(), "image/png") {
                let e = error_value(ErrorCode::Browser, &js_text(&e), Some(&id));
                let _ = reject.call1(&JsValue::NULL, &e);
            }
        })
    }

    /// Also sends what VM `vmId`'s display draws to the frame receiver at `url`
    /// (`ws://` or `wss://`, e.g. qemuweb-sidecar's `frame-server` `/sink`) over a
    /// WebSocket (`RemoteTransport`), starting with the current screen; replaces an
    /// earlier forwarding of that display. Returns a `DisplayForward` (`stats()`,
    /// `flush(timeoutMs)`, `close()`). Throws a `QemuError` with code `out-of-order`
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

    /// The counters of VM `vmId`'s NIC on the page's network (frames and bytes sent and
    /// received, drops by reason), or `undefined` for a VM that is not on one.
    #[wasm_bindgen(js_name = networkStats, unchecked_return_type = "NicStats | undefined")]
    pub fn network_stats(&self, #[wasm_bindgen(js_name = "vmId")] vm_id: String) -> JsValue {
        match self.inner.network.stats(&vm_id) {
            Some(stats) => to_js(&stats).unwrap_or(JsValue::UNDEFINED),
            None => JsValue::UNDEFINED,
        }
    }

    /// Connects network `network` to its way out: `qemuweb network` on the user's machine,
    /// whose WebSocket `url` (`ws://127.0.0.1:PORT/network`) and `token` it printed at
    /// start. The relay becomes the network's uplink in the page's switch: what the VMs
    /// send beyond the network (or to the gateway's own address, which the relay maps to
    /// the host's 127.0.0.1 when run with `--allow-loopback`) goes to it, its frames come
    /// back to the VMs, and the relay's `--forward`s reach the VMs. DHCP, DNS, ARP and ping
    /// stay answered in the page.
    ///
    /// Resolves with a `NetworkUplink` once connected (its `closed` promise settles with
    /// an `UplinkClosed` when the connection ends, after which the network has no way out
    /// until connected again); rejects with a `QemuError`: code `invalid-inputs` for a
    /// network this client does not define, an isolated one, or one connected already;
    /// `browser` when the relay cannot be reached or refuses (a wrong token or origin).
    #[wasm_bindgen(js_name = connectNetwork, unchecked_return_type = "Promise<NetworkUplink>")]
    pub fn connect_network(&self, network: String, url: String, token: String) -> Promise {
        self.inner.network.connect(network, url, token)
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

    /// Sugar for one `serialOut` listener: `callback(vmId, bytes)`; `null` removes it.
    #[wasm_bindgen(js_name = onSerialOut)]
    pub fn on_serial_out(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, bytes: Uint8Array) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.listeners.set_slot(Slot::SerialOut, callback);
    }

    /// Sugar for one `started` listener: `callback(vmId, engine)`.
    #[wasm_bindgen(js_name = onStarted)]
    pub fn on_started(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, engine: EngineKind) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.listeners.set_slot(Slot::Started, callback);
    }

    /// Sugar for one `stopped` listener: `callback(vmId, reason)`.
    #[wasm_bindgen(js_name = onStopped)]
    pub fn on_stopped(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, reason: StopReason) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.listeners.set_slot(Slot::Stopped, callback);
    }

    /// Sugar for one `progress` listener: `callback(vmId, event)`.
    #[wasm_bindgen(js_name = onProgress)]
    pub fn on_progress(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, progress: QemuEventOf<\"progress\">) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.listeners.set_slot(Slot::Progress, callback);
    }

    /// Sugar for one `log` listener: `callback(vmId, level, message)`.
    #[wasm_bindgen(js_name = onLog)]
    pub fn on_log(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, level: LogLevel, message: string) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.listeners.set_slot(Slot::Log, callback);
    }

    /// Sugar for one `error` listener: `callback(vmId, error)`, with the error as a
    /// `QemuError` (`code`, `message`, `vmId`, `requestId` when it answers a command).
    #[wasm_bindgen(js_name = onError)]
    pub fn on_error(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, error: Error & { code: ErrorCode; vmId?: string; requestId?: number }) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.listeners.set_slot(Slot::Error, callback);
    }

    /// Sugar for one `capabilities` listener: `callback(vmId, capabilities)`.
    #[wasm_bindgen(js_name = onCapabilities)]
    pub fn on_capabilities(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "((vmId: string, capabilities: RuntimeCapabilities) => void) | null"
        )]
        callback: Option<Function>,
    ) {
        self.inner.listeners.set_slot(Slot::Capabilities, callback);
    }
}

fn state_name(s: VmState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The names of the fields `T`'s `Deserialize` reads (of a struct with named fields).
fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    /// A deserializer that only records the field list it is asked for.
    struct Fields(&'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(serde::de::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields = Fields(&[]);
    let _ = T::deserialize(&mut fields);
    fields.0
}

/// The rejection of a start cancelled through `signal`.
fn aborted(vm_id: &str, signal: &web_sys::AbortSignal) -> JsValue {
    qemu_error(
        ErrorCode::Aborted,
        &format!("the start of VM {vm_id:?} was aborted"),
        Some(vm_id),
        None,
        &signal.reason(),
    )
}

impl QemuClient {
    fn add_listener(&self, kind: String, listener: Function, once: bool) -> Function {
        let id = self.inner.listeners.add(&kind, listener, once);
        let inner = Rc::downgrade(&self.inner);
        let remove = Closure::<dyn FnMut()>::new(move || {
            if let Some(inner) = inner.upgrade() {
                inner.listeners.remove(&kind, id);
            }
        });
        remove.into_js_value().unchecked_into()
    }

    fn delete_stored(&self, vm_id: String, disk_id: Option<String>) -> Promise {
        let checked = check_id("vmId", &vm_id)
            .and_then(|()| disk_id.as_deref().map_or(Ok(()), |d| check_id("diskId", d)));
        if let Err(e) = checked {
            return Promise::reject(&runtime_error(&e, Some(&vm_id)));
        }
        if self.inner.vms.borrow().contains_key(&vm_id) {
            return Promise::reject(&error_value(
                ErrorCode::OutOfOrder,
                &format!("VM {vm_id:?} is running in this client: stop it first"),
                Some(&vm_id),
            ));
        }
        future_to_promise(async move {
            overlays::delete(&vm_id, disk_id.as_deref())
                .await
                .map_err(|e| storage_error(e, &vm_id))?;
            Ok(JsValue::UNDEFINED)
        })
    }

    fn start_message(
        &self,
        vm_id: &str,
        profile: Ts<VmProfile>,
        inputs: Ts<VmInputs>,
        options: Option<Object>,
    ) -> Result<(JsValue, Starting), JsValue> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
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
        let profile = profile.to_rust().map_err(|e| bad("profile", &e))?;
        let mut inputs = inputs.to_rust().map_err(|e| bad("inputs", &e))?;
        let options: StartOptions = match options {
            Some(o) => {
                // serde_wasm_bindgen reads only the fields it knows: refuse the others here
                // (`{memoryMiB}` of the old positional `overrides` argument, typos).
                let known = struct_fields::<StartOptions>();
                let unknown: Vec<String> = Object::keys(&o)
                    .iter()
                    .filter_map(|k| k.as_string())
                    .filter(|k| !known.contains(&k.as_str()))
                    .collect();
                if !unknown.is_empty() {
                    return Err(bad(
                        "options",
                        &format!(
                            "unknown option {} (startVm(vmId, profile, inputs, {{{}}}); \
                             profile changes such as memoryMiB go in `overrides`)",
                            unknown.join(", "),
                            known.join(", ")
                        ),
                    ));
                }
                serde_wasm_bindgen::from_value(o.into()).map_err(|e| bad("options", &e))?
            }
            None => StartOptions::default(),
        };
        let function = |v: &JsValue, what: &str| -> Result<Option<Function>, JsValue> {
            match v {
                v if v.is_undefined() || v.is_null() => Ok(None),
                v => v
                    .dyn_ref::<Function>()
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| bad("options", &format!("{what} must be a function"))),
            }
        };
        let progress = function(&options.progress, "progress")?;
        let signal = match &options.signal {
            v if v.is_undefined() || v.is_null() => None,
            v => Some(
                v.dyn_ref::<web_sys::AbortSignal>()
                    .cloned()
                    .ok_or_else(|| bad("options", &"signal must be an AbortSignal"))?,
            ),
        };
        let files = &options.files;
        if !(files.is_undefined() || files.is_null() || files.is_object()) {
            return Err(bad("options", &"files must map names to Blobs"));
        }
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
                overrides: options.overrides,
                engine: options.engine,
                assets,
                persistence: options.persistence.unwrap_or_default(),
                limits: options.limits.unwrap_or_default(),
                resume: options.resume.map(|r| match r {
                    Resume::Published { url } => Resume::Published {
                        url: resolve_url(&url, base),
                    },
                    other => other,
                }),
                read_cache: options.read_cache.unwrap_or_default(),
                qemu: options.qemu.unwrap_or_default(),
            },
        };
        let message = to_js(&request).map_err(JsValue::from)?;
        let transfer = Array::new();
        if let Some(port) = self.attach_network(vm_id, &request.command)? {
            let _ = Reflect::set(&get(&message, "command"), &"network".into(), &port);
            transfer.push(&port);
        }
        if files.is_object() {
            let _ = Reflect::set(&get(&message, "command"), &"files".into(), files);
        }
        if let Some(display) = self.inner.displays.borrow().get(vm_id) {
            let _ = Reflect::set(
                &get(&message, "command"),
                &"display".into(),
                &display.buffer,
            );
        }
        // The abort listener is made here and armed in `spawn_and_send`.
        let abort = signal.map(|s| (s, Closure::<dyn FnMut()>::new(|| {})));
        Ok((
            message,
            Starting {
                progress,
                abort,
                transfer,
            },
        ))
    }
}

impl QemuClient {
    /// Puts the NIC that VM `vm_id`'s start asks for (if any) on the page's network;
    /// returns the port its worker gets. Refuses what no engine could connect (the QEMU
    /// engine, an unknown network, more NICs than the engine has).
    fn attach_network(
        &self,
        vm_id: &str,
        command: &Command,
    ) -> Result<Option<web_sys::MessagePort>, JsValue> {
        let Command::Start {
            profile,
            overrides,
            engine,
            ..
        } = command
        else {
            return Ok(None);
        };
        // A profile no engine runs is the worker's to refuse, with its reasons.
        let Ok(engine) = crate::engine::select_engine(profile, overrides.as_ref(), *engine) else {
            return Ok(None);
        };
        let nics = crate::network::plan_nics(vm_id, profile, overrides.as_ref(), engine)
            .map_err(|e| runtime_error(&e, Some(vm_id)))?;
        let Some(nic) = nics.first() else {
            return Ok(None);
        };
        // A VM stopped earlier may still hold its port until its worker is closed.
        if !self.inner.vms.borrow().contains_key(vm_id) {
            self.inner.network.detach(vm_id);
        }
        self.inner
            .network
            .attach(vm_id, nic)
            .map(Some)
            .map_err(|e| runtime_error(&e, Some(vm_id)))
    }
}

fn js_text(v: &JsValue) -> String {
    v.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| v.as_string())
        .unwrap_or_else(|| format!("{v:?}"))
}

impl Inner {
    /// Sends `events` to VM `vm_id` in commands of at most [`MAX_INPUT_EVENTS`]; the
    /// promise settles when the last is answered.
    fn send_input(&self, vm_id: &str, events: Vec<InputEvent>) -> Promise {
        let promises: js_sys::Array = events
            .chunks(MAX_INPUT_EVENTS)
            .map(|chunk| {
                JsValue::from(self.send(
                    vm_id,
                    Command::Input {
                        vm_id: vm_id.to_string(),
                        events: chunk.to_vec(),
                    },
                ))
            })
            .collect();
        Promise::all(&promises).then(&self.noop)
    }

    /// What the display canvas sends: dropped unless the VM runs, failures reported
    /// through `onError` only.
    fn send_input_quietly(&self, vm_id: &str, events: Vec<InputEvent>) {
        if self.states.borrow().get(vm_id) != Some(&VmState::Running) {
            return;
        }
        let _ = self.send_input(vm_id, events).catch(&self.noop);
    }

    fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Dispatches an `error` event about `vm_id` that the client itself found.
    fn report_error(&self, vm_id: &str, code: ErrorCode, message: &str) {
        let event = Event::Error {
            request_id: None,
            vm_id: Some(vm_id.to_string()),
            code,
            message: message.to_string(),
        };
        if let Ok(e) = to_js(&event) {
            self.listeners
                .dispatch(&e, Some(&error_value(code, message, Some(vm_id))));
        }
    }

    fn spawn_and_send(
        self: Rc<Self>,
        vm_id: String,
        message: JsValue,
        mut starting: Starting,
    ) -> Promise {
        let options = web_sys::WorkerOptions::new();
        options.set_type(web_sys::WorkerType::Module);
        options.set_name(&format!("qemuweb-{vm_id}"));
        let worker = match web_sys::Worker::new_with_options(&self.worker_url, &options) {
            Ok(w) => w,
            Err(e) => {
                self.network.detach(&vm_id);
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
            start: RefCell::default(),
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
                inner.report_error(&conn.vm_id, ErrorCode::Worker, &message);
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
        if let Some((signal, listener)) = starting.abort.as_mut() {
            let weak_inner = Rc::downgrade(&self);
            let weak_conn = Rc::downgrade(&conn);
            let signal_ = signal.clone();
            *listener = Closure::<dyn FnMut()>::new(move || {
                if let (Some(inner), Some(conn)) = (weak_inner.upgrade(), weak_conn.upgrade()) {
                    inner.abort_start(&conn, &signal_);
                }
            });
            let _ =
                signal.add_event_listener_with_callback("abort", listener.as_ref().unchecked_ref());
        }
        let transfer = std::mem::take(&mut starting.transfer);
        *conn.start.borrow_mut() = Some(starting);
        self.vms.borrow_mut().insert(vm_id.clone(), conn.clone());
        self.states.borrow_mut().insert(vm_id, VmState::Starting);
        self.post(&conn, message, true, transfer)
    }

    /// Cancels a start that has not settled: its promise rejects with `aborted`, the
    /// worker is terminated (the browser then releases its locks) and the VM is stopped.
    fn abort_start(&self, conn: &Rc<VmConn>, signal: &web_sys::AbortSignal) {
        let start = conn
            .pending
            .borrow()
            .iter()
            .find(|(_, p)| p.is_start)
            .map(|(id, _)| *id);
        let Some(id) = start else { return };
        let pending = conn.pending.borrow_mut().remove(&id);
        if let Some(p) = pending {
            let _ = p
                .reject
                .call1(&JsValue::NULL, &aborted(&conn.vm_id, signal));
        }
        conn.end_start();
        self.close(conn, ErrorCode::Aborted, "the VM's start was aborted");
        self.vms.borrow_mut().remove(&conn.vm_id);
        self.states
            .borrow_mut()
            .insert(conn.vm_id.clone(), VmState::Stopped);
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
            Ok(message) => self.post(&conn, message, false, Array::new()),
            Err(e) => Promise::reject(&JsValue::from(e)),
        }
    }

    /// Posts `message` to the worker (or queues it until the worker is ready), moving the
    /// objects in `transfer`; the promise settles with the worker's answer.
    fn post(&self, conn: &VmConn, message: JsValue, is_start: bool, transfer: Array) -> Promise {
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
            let _ = conn.worker.post_message_with_transfer(&message, &transfer);
        } else {
            conn.queue.borrow_mut().push((message, transfer));
        }
        promise
    }

    /// Rejects every pending command and terminates the worker.
    fn close(&self, conn: &VmConn, code: ErrorCode, message: &str) {
        conn.end_start();
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
        self.network.detach(&conn.vm_id);
    }

    fn on_event(&self, conn: &Rc<VmConn>, data: JsValue) {
        let event: Event = match serde_wasm_bindgen::from_value(data.clone()) {
            Ok(e) => e,
            Err(e) => {
                let message = format!("the worker sent a malformed event: {e}");
                return self.report_error(&conn.vm_id, ErrorCode::Malformed, &message);
            }
        };
        // Every event the client dispatches names its VM (a worker runs one VM).
        if is_public(&event) {
            let _ = Reflect::set(&data, &"vmId".into(), &conn.vm_id.as_str().into());
        }
        match &event {
            Event::Ready { version, .. } => {
                let version = *version;
                if version != PROTOCOL_VERSION {
                    let e = RuntimeError::VersionMismatch {
                        page: PROTOCOL_VERSION,
                        worker: version,
                    };
                    self.report_error(&conn.vm_id, e.code(), &e.to_string());
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
                for (m, transfer) in conn.queue.borrow_mut().drain(..) {
                    let _ = conn.worker.post_message_with_transfer(&m, &transfer);
                }
                return;
            }
            Event::Started { .. } => {
                self.states
                    .borrow_mut()
                    .insert(conn.vm_id.clone(), VmState::Running);
            }
            Event::Stopped { .. } => {
                self.states
                    .borrow_mut()
                    .insert(conn.vm_id.clone(), VmState::Stopped);
            }
            Event::Phase { .. } | Event::Progress { .. } => {
                let progress = conn
                    .start
                    .borrow()
                    .as_ref()
                    .and_then(|s| s.progress.clone());
                if let Some(f) = progress {
                    // A throwing callback must not break the client's event handling.
                    if let Err(e) = f.call1(&JsValue::NULL, &data) {
                        events::report(&e);
                    }
                }
            }
            Event::Done { request_id, result } => {
                let pending = conn.pending.borrow_mut().remove(request_id);
                if let Some(p) = pending {
                    if p.is_start {
                        conn.end_start();
                    }
                    let value = match result {
                        Reply::Ok => JsValue::UNDEFINED,
                        Reply::State { state } => state_name(*state).into(),
                        Reply::Exported { .. } => get(&get(&data, "result"), "data"),
                        Reply::Snapshot { .. } => get(&get(&data, "result"), "snapshot"),
                    };
                    let _ = p.resolve.call1(&JsValue::NULL, &value);
                }
                let stopped = self.states.borrow().get(&conn.vm_id) == Some(&VmState::Stopped);
                if stopped && conn.pending.borrow().is_empty() {
                    self.close(conn, ErrorCode::Worker, "the VM stopped");
                    self.vms.borrow_mut().remove(&conn.vm_id);
                }
                return;
            }
            Event::Error {
                request_id,
                code,
                message,
                ..
            } => {
                let error = qemu_error(
                    *code,
                    message,
                    Some(&conn.vm_id),
                    *request_id,
                    &JsValue::UNDEFINED,
                );
                self.listeners.dispatch(&data, Some(&error));
                let pending = request_id.and_then(|id| conn.pending.borrow_mut().remove(&id));
                if let Some(p) = pending {
                    let _ = p.reject.call1(&JsValue::NULL, &error);
                    if p.is_start {
                        // A VM that failed to start has nothing left in its worker.
                        self.states
                            .borrow_mut()
                            .insert(conn.vm_id.clone(), VmState::Failed);
                        self.close(conn, *code, message);
                        self.vms.borrow_mut().remove(&conn.vm_id);
                    }
                }
                return;
            }
            _ => {}
        }
        self.listeners.dispatch(&data, None);
    }
}
