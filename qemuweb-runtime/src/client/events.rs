//! The client's events: listeners per event type (`on`, `once`, `off`), the single-slot
//! `onX` callbacks kept as sugar, and `QemuError`, the error every rejection and error
//! event of the client carries.
//!
//! An event is the worker's [`Event`] object as it arrived (structured-cloned), with the
//! VM's id set; its TypeScript type is the generated `Event` union (see
//! [`TYPESCRIPT`]), so a new [`Event`] variant gets typed listeners with no other wiring.

use crate::protocol::{ErrorCode, Event};
use js_sys::{Array, Function, Reflect};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// The TypeScript of the event API: the event types derive from the generated `Event`
/// union, and `QemuClient`'s `on`/`once`/`off` (written in Rust with `skip_typescript`)
/// are declared generic over them by merging an interface into the generated class.
#[wasm_bindgen(typescript_custom_section)]
pub const TYPESCRIPT: &'static str = r#"
/**
 * An event of a `QemuClient`: one of the worker's events (the `Event` union without the
 * protocol's own `ready` and `done`), with the id of the VM it is about.
 */
export type QemuEvent = Exclude<Event, { type: "ready" | "done" }> & { vmId: string };
/** The names of the events a `QemuClient` dispatches: `"serialOut"`, `"progress"`, ... */
export type QemuEventType = QemuEvent["type"];
/** The event named `K`, e.g. `QemuEventOf<"serialOut">`. */
export type QemuEventOf<K extends QemuEventType> = Extract<QemuEvent, { type: K }>;
/** A listener of the events named `K`. */
export type QemuEventListener<K extends QemuEventType> = (event: QemuEventOf<K>) => void;

export interface QemuClient {
  /**
   * Calls `listener` with every event named `type` (of every VM of this client), after the
   * listeners added before it. Any number of listeners may listen to one event. Returns a
   * function that removes this listener.
   */
  on<K extends QemuEventType>(type: K, listener: QemuEventListener<K>): () => void;
  /** As `on`, for the next such event only. */
  once<K extends QemuEventType>(type: K, listener: QemuEventListener<K>): () => void;
  /** Removes `listener` from the event named `type` (every time it was added). */
  off<K extends QemuEventType>(type: K, listener: QemuEventListener<K>): void;
}
"#;

#[wasm_bindgen(module = "/js/qemu-error.js")]
extern "C" {
    /// `QemuError` of `js/qemu-error.js`: an `Error` with `code`, `vmId` and `requestId`.
    #[wasm_bindgen(js_name = QemuError)]
    type JsQemuError;

    #[wasm_bindgen(constructor, js_class = "QemuError")]
    fn new(
        code: &str,
        message: &str,
        vm_id: Option<String>,
        request_id: Option<f64>,
        cause: &JsValue,
    ) -> JsQemuError;
}

/// The wire name of `code` (`out-of-order`, ...).
pub(crate) fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A `QemuError` with `code` and `message`, about `vm_id`, answering `request_id`.
pub(crate) fn qemu_error(
    code: ErrorCode,
    message: &str,
    vm_id: Option<&str>,
    request_id: Option<u64>,
    cause: &JsValue,
) -> JsValue {
    JsQemuError::new(
        &code_name(code),
        message,
        vm_id.map(str::to_string),
        request_id.map(|id| id as f64),
        cause,
    )
    .into()
}

/// The single-slot callbacks of `onSerialOut`, `onError`, ... (each called with its own
/// arguments, see [`Listeners::dispatch`]).
#[derive(Default)]
struct Slots {
    serial_out: Option<Function>,
    started: Option<Function>,
    stopped: Option<Function>,
    progress: Option<Function>,
    log: Option<Function>,
    error: Option<Function>,
    capabilities: Option<Function>,
}

/// Which slot an `onX` setter fills.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    SerialOut,
    Started,
    Stopped,
    Progress,
    Log,
    Error,
    Capabilities,
}

struct Listener {
    id: u64,
    function: Function,
    once: bool,
}

/// Every listener of one client.
#[derive(Default)]
pub(crate) struct Listeners {
    by_type: RefCell<HashMap<String, Vec<Listener>>>,
    slots: RefCell<Slots>,
    next_id: Cell<u64>,
    /// Hears every event before the listeners (the DevTools hook, when it is on).
    observer: RefCell<Option<Observer>>,
}

/// A function that hears every event a client dispatches.
pub(crate) type Observer = Rc<dyn Fn(&JsValue)>;

impl Listeners {
    /// Adds `function` for events of type `kind`; returns its id for [`remove`](Self::remove).
    pub fn add(&self, kind: &str, function: Function, once: bool) -> u64 {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        self.by_type
            .borrow_mut()
            .entry(kind.to_string())
            .or_default()
            .push(Listener { id, function, once });
        id
    }

    /// Removes the listener with id `id`.
    pub fn remove(&self, kind: &str, id: u64) {
        if let Some(list) = self.by_type.borrow_mut().get_mut(kind) {
            list.retain(|l| l.id != id);
        }
    }

    /// Removes every listener of `kind` that is `function`.
    pub fn remove_function(&self, kind: &str, function: &Function) {
        if let Some(list) = self.by_type.borrow_mut().get_mut(kind) {
            list.retain(|l| JsValue::from(&l.function) != JsValue::from(function));
        }
    }

    /// Sets the function that hears every event before the listeners.
    pub fn set_observer(&self, observer: Observer) {
        *self.observer.borrow_mut() = Some(observer);
    }

    /// Fills (or with `None` empties) an `onX` slot.
    pub fn set_slot(&self, slot: Slot, function: Option<Function>) {
        let mut s = self.slots.borrow_mut();
        let place = match slot {
            Slot::SerialOut => &mut s.serial_out,
            Slot::Started => &mut s.started,
            Slot::Stopped => &mut s.stopped,
            Slot::Progress => &mut s.progress,
            Slot::Log => &mut s.log,
            Slot::Error => &mut s.error,
            Slot::Capabilities => &mut s.capabilities,
        };
        *place = function;
    }

    /// Sends `event` (an event object with `type` and `vmId`) to the listeners of its
    /// type, in the order they were added, then to the matching `onX` slot with that
    /// slot's arguments. `error` is the `QemuError` of an error event. A listener that
    /// throws does not stop the others: its exception goes to `reportError` (the console
    /// and the page's `error` event), as an `EventTarget`'s would.
    pub fn dispatch(&self, event: &JsValue, error: Option<&JsValue>) {
        let observer = self.observer.borrow().clone();
        if let Some(observer) = observer {
            observer(event);
        }
        let kind = field(event, "type").as_string().unwrap_or_default();
        let functions: Vec<Function> = {
            let mut by_type = self.by_type.borrow_mut();
            match by_type.get_mut(&kind) {
                Some(list) => {
                    let functions = list.iter().map(|l| l.function.clone()).collect();
                    list.retain(|l| !l.once);
                    functions
                }
                None => Vec::new(),
            }
        };
        for f in functions {
            if let Err(e) = f.call1(&JsValue::NULL, event) {
                report(&e);
            }
        }
        let vm = field(event, "vmId");
        let (slot, args): (Option<Function>, Vec<JsValue>) = {
            let s = self.slots.borrow();
            match kind.as_str() {
                "serialOut" => (s.serial_out.clone(), vec![vm, field(event, "data")]),
                "started" => (s.started.clone(), vec![vm, field(event, "engine")]),
                "stopped" => (s.stopped.clone(), vec![vm, field(event, "reason")]),
                "progress" => (s.progress.clone(), vec![vm, event.clone()]),
                "log" => (
                    s.log.clone(),
                    vec![vm, field(event, "level"), field(event, "message")],
                ),
                "error" => (
                    s.error.clone(),
                    vec![vm, error.cloned().unwrap_or_else(|| event.clone())],
                ),
                "capabilities" => (
                    s.capabilities.clone(),
                    vec![vm, field(event, "capabilities")],
                ),
                _ => (None, Vec::new()),
            }
        };
        if let Some(f) = slot {
            if let Err(e) = f.apply(&JsValue::NULL, &args.into_iter().collect::<Array>()) {
                report(&e);
            }
        }
    }
}

/// Hands a listener's exception to the global `reportError`, where there is one.
pub(crate) fn report(exception: &JsValue) {
    let global: JsValue = js_sys::global().into();
    if let Ok(f) = field(&global, "reportError").dyn_into::<Function>() {
        let _ = f.call1(&global, exception);
    }
}

/// `value[key]`, or `undefined`.
pub(crate) fn field(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// Whether the client dispatches events of this type (not the protocol's own `ready`
/// and `done`).
pub(crate) fn is_public(event: &Event) -> bool {
    !matches!(event, Event::Ready { .. } | Event::Done { .. })
}
