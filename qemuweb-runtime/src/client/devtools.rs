//! The page side of the DevTools hook (see [`crate::devtools`] for its messages): made by
//! `new QemuClient({devtools: true})`, it listens to `message` events of the page's own
//! window (`event.source === window`, same origin; everything else is ignored), answers
//! the panel's commands by calling the client's own methods, and pushes the VMs' serial
//! output, events and state changes while a panel listens (from its first command until
//! `detach`).

use super::events::field as get;
use super::{overlays, to_js, Inner, QemuClient};
use crate::devtools::{
    bytes_to_binary_string, decode_panel_message, message_id, DevtoolsDisk, DevtoolsEvent,
    DevtoolsVm, PageBody, PageMessage, PanelCommand, VmHistory, DEVTOOLS_SOURCE, DEVTOOLS_VERSION,
};
use crate::protocol::{EngineKind, ExportFormat, ProgressTotal, VmState};
use js_sys::{Promise, Uint8Array};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};

/// What the hook knows of one VM beyond the client's state.
#[derive(Default)]
struct VmRecord {
    profile: String,
    engine: Option<EngineKind>,
    /// `Date.now()` when its guest started running (while it runs).
    started_at: Option<f64>,
    history: VmHistory,
    /// Bytes read of each disk's image: `(loaded, total, totalOf)` of its last `progress`.
    disks: BTreeMap<String, (u64, Option<u64>, Option<ProgressTotal>)>,
}

/// What a command's answer becomes once its promise resolved.
enum Then {
    /// Nothing: `done`.
    Nothing,
    /// The saved snapshot's id.
    SnapshotId,
    /// The exported bytes, saved as a download of this name.
    Download(String),
}

/// The hook of one client.
pub(crate) struct Hook {
    inner: Weak<Inner>,
    window: web_sys::Window,
    origin: String,
    vms: RefCell<HashMap<String, VmRecord>>,
    /// Whether a panel listens (since its last command, until `detach`).
    attached: Cell<bool>,
    listener: RefCell<Option<MessageListener>>,
}

/// The window's `message` listener.
type MessageListener = Closure<dyn FnMut(web_sys::MessageEvent)>;

impl Hook {
    /// Installs the hook for `inner` on the page's window (`None` where there is no window:
    /// a worker) and says so to a panel that may be listening.
    pub fn install(inner: &Rc<Inner>) -> Option<Rc<Hook>> {
        let window = web_sys::window()?;
        let origin = window.location().origin().ok()?;
        let hook = Rc::new(Hook {
            inner: Rc::downgrade(inner),
            window: window.clone(),
            origin,
            vms: RefCell::default(),
            attached: Cell::new(false),
            listener: RefCell::default(),
        });
        let weak = Rc::downgrade(&hook);
        let listener = MessageListener::new(move |e: web_sys::MessageEvent| {
            if let Some(hook) = weak.upgrade() {
                hook.on_message(&e);
            }
        });
        window
            .add_event_listener_with_callback("message", listener.as_ref().unchecked_ref())
            .ok()?;
        *hook.listener.borrow_mut() = Some(listener);
        hook.post(PageBody::Hello {
            version: DEVTOOLS_VERSION,
        });
        Some(hook)
    }

    fn post(&self, body: PageBody) {
        if let Ok(message) = to_js(&PageMessage::new(body)) {
            let _ = self.window.post_message(&message, &self.origin);
        }
    }

    /// `startVm(vmId, profile, ...)` was called.
    pub fn starting(&self, vm_id: &str, profile: &str) {
        let mut vms = self.vms.borrow_mut();
        let record = vms.entry(vm_id.to_string()).or_default();
        record.profile = profile.to_string();
        record.started_at = None;
        record.disks.clear();
        drop(vms);
        self.push_vms();
    }

    /// Records an event the client dispatches (and pushes it to an attached panel).
    pub fn observe(self: &Rc<Self>, event: &JsValue) {
        let Some(vm_id) = get(event, "vmId").as_string() else {
            return;
        };
        let kind = get(event, "type").as_string().unwrap_or_default();
        let now = js_sys::Date::now();
        let mut vms = self.vms.borrow_mut();
        let record = vms.entry(vm_id.clone()).or_default();
        let text = |k: &str| get(event, k).as_string().unwrap_or_default();
        let number = |k: &str| get(event, k).as_f64();
        let (line, error) = match kind.as_str() {
            "serialOut" => {
                let bytes = get(event, "data")
                    .dyn_into::<Uint8Array>()
                    .map(|a| a.to_vec())
                    .unwrap_or_default();
                record.history.push_serial(&bytes);
                drop(vms);
                if self.attached.get() {
                    self.post(PageBody::Serial {
                        id: None,
                        vm_id,
                        data: bytes_to_binary_string(&bytes),
                    });
                }
                return;
            }
            "progress" => {
                let what = text("what");
                if what.starts_with("disk") {
                    let total_of = serde_wasm_bindgen::from_value(get(event, "totalOf")).ok();
                    let entry = (
                        number("loaded").unwrap_or(0.0) as u64,
                        number("total").map(|t| t as u64),
                        total_of,
                    );
                    record.disks.insert(what, entry);
                }
                return;
            }
            "capabilities" => return,
            "snapshotProgress" => {
                if number("loaded") != number("total") {
                    return;
                }
                (
                    format!(
                        "{} of snapshot {} done",
                        text("operation"),
                        text("snapshotId")
                    ),
                    false,
                )
            }
            "started" => {
                record.started_at = Some(now);
                record.engine = serde_wasm_bindgen::from_value(get(event, "engine")).ok();
                (format!("started on {}", text("engine")), false)
            }
            "stopped" => {
                record.started_at = None;
                (format!("stopped ({})", text("reason")), false)
            }
            "phase" => (
                format!(
                    "start step {} of {}: {}",
                    number("step").unwrap_or(0.0),
                    number("steps").unwrap_or(0.0),
                    text("phase")
                ),
                false,
            ),
            "log" => (format!("{}: {}", text("level"), text("message")), false),
            "error" => (format!("{}: {}", text("code"), text("message")), true),
            other => (other.to_string(), false),
        };
        let record_event = DevtoolsEvent {
            at: now,
            kind: kind.clone(),
            error,
            text: line,
        };
        record.history.push_event(record_event.clone());
        drop(vms);
        if !self.attached.get() {
            return;
        }
        self.post(PageBody::Events {
            id: None,
            vm_id,
            events: vec![record_event],
        });
        if matches!(kind.as_str(), "started" | "stopped" | "error") {
            // After the client's own handling of the event (a failed start is marked so
            // once its listeners heard the error).
            let hook = Rc::clone(self);
            spawn_local(async move { hook.push_vms() });
        }
    }

    fn push_vms(&self) {
        if self.attached.get() {
            self.post(PageBody::Vms {
                id: None,
                vms: self.summaries(),
            });
        }
    }

    fn summaries(&self) -> Vec<DevtoolsVm> {
        let Some(inner) = self.inner.upgrade() else {
            return Vec::new();
        };
        let states = inner.states.borrow();
        let vms = self.vms.borrow();
        let now = js_sys::Date::now();
        let mut list: Vec<DevtoolsVm> = states
            .iter()
            .map(|(vm_id, state)| {
                let record = vms.get(vm_id);
                let engine = record.and_then(|r| r.engine);
                DevtoolsVm {
                    vm_id: vm_id.clone(),
                    engine,
                    profile: record.map(|r| r.profile.clone()).unwrap_or_default(),
                    state: *state,
                    uptime_ms: record
                        .and_then(|r| r.started_at)
                        .filter(|_| *state == VmState::Running)
                        .map(|t| now - t),
                    snapshots: engine.is_some(),
                }
            })
            .collect();
        list.sort_by(|a, b| a.vm_id.cmp(&b.vm_id));
        list
    }

    fn on_message(self: &Rc<Self>, e: &web_sys::MessageEvent) {
        // Only what this window posted to itself (the content script shares it): never
        // another frame's or origin's message.
        let own = e
            .source()
            .is_some_and(|s| JsValue::from(s) == JsValue::from(&self.window));
        if !own || e.origin() != self.origin {
            return;
        }
        let data = e.data();
        if get(&data, "source").as_string().as_deref() != Some(DEVTOOLS_SOURCE)
            || get(&data, "direction").as_string().as_deref() != Some("panel")
        {
            return;
        }
        let value: serde_json::Value = match serde_wasm_bindgen::from_value(data) {
            Ok(v) => v,
            Err(e) => {
                return self.post(PageBody::Failure {
                    id: None,
                    code: "malformed".into(),
                    message: format!("malformed DevTools message: {e}"),
                })
            }
        };
        match decode_panel_message(&value) {
            Ok(None) => {}
            Ok(Some((_, PanelCommand::Detach))) => self.attached.set(false),
            Ok(Some((id, command))) => {
                self.attached.set(true);
                Rc::clone(self).run(id, command);
            }
            Err(e) => self.post(PageBody::Failure {
                id: message_id(&value),
                code: e.kind().into(),
                message: e.to_string(),
            }),
        }
    }

    fn run(self: Rc<Self>, id: u64, command: PanelCommand) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let client = QemuClient { inner };
        let (promise, then): (Promise, Then) = match command {
            PanelCommand::Detach => return self.attached.set(false),
            PanelCommand::List => {
                return self.post(PageBody::Vms {
                    id: Some(id),
                    vms: self.summaries(),
                })
            }
            PanelCommand::Serial { vm_id } => {
                let data = self
                    .vms
                    .borrow()
                    .get(&vm_id)
                    .map(|r| bytes_to_binary_string(&r.history.serial()))
                    .unwrap_or_default();
                return self.post(PageBody::Serial {
                    id: Some(id),
                    vm_id,
                    data,
                });
            }
            PanelCommand::Events { vm_id } => {
                let events = self
                    .vms
                    .borrow()
                    .get(&vm_id)
                    .map(|r| r.history.events())
                    .unwrap_or_default();
                return self.post(PageBody::Events {
                    id: Some(id),
                    vm_id,
                    events,
                });
            }
            PanelCommand::Disks { vm_id } => return spawn_local(self.disks(id, vm_id)),
            PanelCommand::SerialIn { vm_id, data } => {
                let promise = match client.send_serial_in(vm_id, data.into()) {
                    Ok(()) => Promise::resolve(&JsValue::UNDEFINED),
                    Err(e) => Promise::reject(&e),
                };
                (promise, Then::Nothing)
            }
            PanelCommand::Stop { vm_id, force } => {
                (client.stop_vm(vm_id, Some(force)), Then::Nothing)
            }
            PanelCommand::Reset { vm_id } => (client.reset_vm(vm_id), Then::Nothing),
            PanelCommand::SaveSnapshot { vm_id } => {
                (client.save_snapshot(vm_id, None), Then::SnapshotId)
            }
            PanelCommand::ExportOverlay {
                vm_id,
                disk_id,
                format,
            } => {
                let format = format.unwrap_or_default();
                let name = format!(
                    "{vm_id}-{disk_id}.overlay.{}",
                    match format {
                        ExportFormat::Compact => "compact",
                        ExportFormat::Qcow2 => "qcow2",
                    }
                );
                let promise = client.export_overlay(
                    vm_id,
                    disk_id,
                    serde_wasm_bindgen::to_value(&format).ok(),
                );
                (promise, Then::Download(name))
            }
        };
        spawn_local(async move {
            let done = JsFuture::from(promise).await.and_then(|v| match then {
                Then::Nothing => Ok(None),
                Then::SnapshotId => Ok(get(&v, "id").as_string()),
                Then::Download(name) => {
                    let size = v.dyn_ref::<Uint8Array>().map_or(0, |a| a.length());
                    download(&self.window, &v, &name)?;
                    Ok(Some(format!("{name} ({size} bytes)")))
                }
            });
            let body = match done {
                Ok(detail) => PageBody::Done { id, detail },
                Err(e) => PageBody::Failure {
                    id: Some(id),
                    code: get(&e, "code")
                        .as_string()
                        .unwrap_or_else(|| "browser".into()),
                    message: get(&e, "message")
                        .as_string()
                        .unwrap_or_else(|| format!("{e:?}")),
                },
            };
            self.post(body);
        });
    }

    /// Answers `disks`: bytes read of each image (from its `progress` events) and the
    /// overlay IndexedDB holds for each disk (as the worker last synced it, within a
    /// second of the guest's write).
    async fn disks(self: Rc<Self>, id: u64, vm_id: String) {
        let stored = match overlays::list(&vm_id).await {
            Ok(s) => s,
            Err(e) => {
                return self.post(PageBody::Failure {
                    id: Some(id),
                    code: "storage".into(),
                    message: e.to_string(),
                })
            }
        };
        let mut disks: BTreeMap<String, DevtoolsDisk> = BTreeMap::new();
        if let Some(r) = self.vms.borrow().get(&vm_id) {
            for (disk_id, (loaded, total, total_of)) in &r.disks {
                disks.insert(
                    disk_id.clone(),
                    DevtoolsDisk {
                        disk_id: disk_id.clone(),
                        bytes_read: Some(*loaded),
                        image_size: *total,
                        total_of: *total_of,
                        overlay_blocks: None,
                        overlay_bytes: None,
                        base: None,
                    },
                );
            }
        }
        for o in stored {
            let d = disks
                .entry(o.disk_id.clone())
                .or_insert_with(|| DevtoolsDisk {
                    disk_id: o.disk_id.clone(),
                    bytes_read: None,
                    image_size: None,
                    total_of: None,
                    overlay_blocks: None,
                    overlay_bytes: None,
                    base: None,
                });
            d.overlay_blocks = Some(o.blocks);
            d.overlay_bytes = Some(o.bytes);
            d.base = o.base;
        }
        self.post(PageBody::Disks {
            id,
            vm_id,
            disks: disks.into_values().collect(),
        });
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let Some(l) = self.listener.borrow_mut().take() {
            let _ = self
                .window
                .remove_event_listener_with_callback("message", l.as_ref().unchecked_ref());
        }
    }
}

/// Saves `bytes` (a `Uint8Array`) as a download named `name` from the page.
fn download(window: &web_sys::Window, bytes: &JsValue, name: &str) -> Result<(), JsValue> {
    let parts = js_sys::Array::of1(bytes);
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob)?;
    let document = window
        .document()
        .ok_or_else(|| JsValue::from_str("the page has no document"))?;
    let a: web_sys::HtmlAnchorElement = document.create_element("a")?.unchecked_into();
    a.set_href(&url);
    a.set_download(name);
    a.click();
    // The download has taken the blob once the click's task ran.
    let revoke = Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    window.set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 10_000)?;
    Ok(())
}
