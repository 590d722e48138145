//! The page's end of guest input (wasm32 only): listeners on a display canvas that turn
//! DOM keyboard, pointer and wheel events into [`InputEvent`]s for the VM's worker.
//!
//! - **Focus.** The canvas is made focusable (`tabindex="0"`) and takes the focus when
//!   clicked; keys go to the guest only while it has the focus, so the page's other
//!   inputs keep working. Keys that map to a PC key have their default action prevented
//!   (Tab, F5, Backspace, ... reach the guest, not the browser); others pass through.
//!   When the canvas loses the focus, every key and button still held is released in the
//!   guest (no stuck Shift).
//! - **Keys** are sent by `KeyboardEvent.code` (the physical key); auto-repeat sends the
//!   key down again, as a PC keyboard's typematic repeat does.
//! - **Pointer.** Every move carries the absolute position on the guest's screen
//!   (0..=[`ABS_MAX`] each axis) and the motion in guest pixels; buttons and vertical and
//!   horizontal wheel notches follow. With `pointerLock`, a click locks the pointer to
//!   the canvas (relative motion without edges; the browser releases it on Escape).

use crate::input::{InputEvent, InputOptions, PointerButton, ABS_MAX};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{HtmlCanvasElement, KeyboardEvent, PointerEvent, WheelEvent};

/// Where the events go (the client posts them to the VM's worker).
pub type InputSink = Rc<dyn Fn(Vec<InputEvent>)>;

/// Wheel travel, in pixels, that makes one notch (Chromium reports 100 per notch).
const PIXELS_PER_NOTCH: f64 = 100.0;

struct State {
    canvas: HtmlCanvasElement,
    options: InputOptions,
    sink: InputSink,
    /// Keys down, by code, to release on blur.
    keys: RefCell<BTreeSet<String>>,
    /// Buttons down.
    buttons: Cell<[bool; 3]>,
    /// Motion not yet sent (sub-pixel remainders), in guest pixels.
    carry: Cell<(f64, f64)>,
    /// Wheel travel not yet a whole notch, in pixels.
    wheel: Cell<(f64, f64)>,
}

/// A DOM event listener.
type Listener = Closure<dyn FnMut(web_sys::Event)>;

/// Listeners attached to a canvas; dropping it removes them.
pub struct CanvasInput {
    state: Rc<State>,
    listeners: Vec<(&'static str, Listener)>,
}

impl Drop for CanvasInput {
    fn drop(&mut self) {
        for (name, f) in &self.listeners {
            let _ = self
                .state
                .canvas
                .remove_event_listener_with_callback(name, f.as_ref().unchecked_ref());
        }
        self.state.release_all();
    }
}

fn button_index(b: PointerButton) -> usize {
    match b {
        PointerButton::Left => 0,
        PointerButton::Middle => 1,
        PointerButton::Right => 2,
    }
}

impl State {
    fn send(&self, events: Vec<InputEvent>) {
        if !events.is_empty() {
            (self.sink)(events);
        }
    }

    /// Releases every key and button held (the canvas lost the focus).
    fn release_all(&self) {
        let mut events: Vec<InputEvent> = std::mem::take(&mut *self.keys.borrow_mut())
            .into_iter()
            .map(|code| InputEvent::Key { code, down: false })
            .collect();
        let held = self.buttons.replace([false; 3]);
        for b in [
            PointerButton::Left,
            PointerButton::Middle,
            PointerButton::Right,
        ] {
            if held[button_index(b)] {
                events.push(InputEvent::Button {
                    button: b,
                    down: false,
                });
            }
        }
        self.send(events);
    }

    fn key(&self, e: &KeyboardEvent, down: bool) {
        let code = e.code();
        if crate::input::Key::from_code(&code).is_err() {
            return; // Not a PC key (or an IME composition): leave it to the browser.
        }
        e.prevent_default();
        if down {
            self.keys.borrow_mut().insert(code.clone());
        } else if !self.keys.borrow_mut().remove(&code) {
            return; // Pressed before the canvas had the focus.
        }
        self.send(vec![InputEvent::Key { code, down }]);
    }

    /// The pointer's absolute position and the canvas scale (guest pixels per CSS pixel).
    fn position(&self, e: &PointerEvent) -> (u32, u32, f64, f64) {
        let rect = self.canvas.get_bounding_client_rect();
        let (w, h) = (rect.width().max(1.0), rect.height().max(1.0));
        let fx = ((f64::from(e.client_x()) - rect.left()) / w).clamp(0.0, 1.0);
        let fy = ((f64::from(e.client_y()) - rect.top()) / h).clamp(0.0, 1.0);
        let abs = |f: f64| (f * f64::from(ABS_MAX)).round() as u32;
        (
            abs(fx),
            abs(fy),
            f64::from(self.canvas.width()) / w,
            f64::from(self.canvas.height()) / h,
        )
    }

    fn moved(&self, e: &PointerEvent) {
        let (x, y, sx, sy) = self.position(e);
        let (cx, cy) = self.carry.get();
        let fx = cx + f64::from(e.movement_x()) * sx;
        let fy = cy + f64::from(e.movement_y()) * sy;
        let (dx, dy) = (fx.trunc(), fy.trunc());
        self.carry.set((fx - dx, fy - dy));
        let limit = f64::from(crate::input::MAX_DELTA);
        self.send(vec![InputEvent::Move {
            x,
            y,
            dx: dx.clamp(-limit, limit) as i32,
            dy: dy.clamp(-limit, limit) as i32,
        }]);
    }

    fn button(&self, e: &PointerEvent, down: bool) {
        let Some(button) = PointerButton::from_dom(e.button()) else {
            return;
        };
        e.prevent_default();
        let mut held = self.buttons.get();
        if held[button_index(button)] == down {
            return;
        }
        held[button_index(button)] = down;
        self.buttons.set(held);
        if down {
            if self.options.focus_on_click() {
                let _ = self.canvas.focus();
            }
            let _ = self.canvas.set_pointer_capture(e.pointer_id());
            if self.options.pointer_lock() {
                self.canvas.request_pointer_lock();
            }
        }
        // The button acts where the pointer is.
        let (x, y, _, _) = self.position(e);
        self.send(vec![
            InputEvent::Move { x, y, dx: 0, dy: 0 },
            InputEvent::Button { button, down },
        ]);
    }

    fn wheel(&self, e: &WheelEvent) {
        e.prevent_default();
        let scale = match e.delta_mode() {
            WheelEvent::DOM_DELTA_LINE => PIXELS_PER_NOTCH / 3.0,
            WheelEvent::DOM_DELTA_PAGE => PIXELS_PER_NOTCH * 3.0,
            _ => 1.0,
        };
        let (wx, wy) = self.wheel.get();
        let (tx, ty) = (wx + e.delta_x() * scale, wy + e.delta_y() * scale);
        // A notch as soon as half of one has been turned; the rest carries over.
        let notches = |t: f64| (t / PIXELS_PER_NOTCH).round();
        let (nx, ny) = (notches(tx), notches(ty));
        self.wheel
            .set((tx - nx * PIXELS_PER_NOTCH, ty - ny * PIXELS_PER_NOTCH));
        if nx != 0.0 || ny != 0.0 {
            let limit = f64::from(crate::input::MAX_DELTA);
            self.send(vec![InputEvent::Wheel {
                dx: nx.clamp(-limit, limit) as i32,
                dy: ny.clamp(-limit, limit) as i32,
            }]);
        }
    }
}

impl CanvasInput {
    /// Listens on `canvas` as `options` say and sends what the user does to `sink`.
    pub fn attach(canvas: &HtmlCanvasElement, options: InputOptions, sink: InputSink) -> Self {
        if options.keyboard() && !canvas.has_attribute("tabindex") {
            let _ = canvas.set_attribute("tabindex", "0");
        }
        let state = Rc::new(State {
            canvas: canvas.clone(),
            options,
            sink,
            keys: RefCell::default(),
            buttons: Cell::new([false; 3]),
            carry: Cell::new((0.0, 0.0)),
            wheel: Cell::new((0.0, 0.0)),
        });
        let mut this = CanvasInput {
            state: state.clone(),
            listeners: Vec::new(),
        };
        let keyboard = state.options.keyboard();
        let pointer = state.options.pointer();
        if keyboard {
            this.listen("keydown", |s, e| {
                if let Some(e) = e.dyn_ref::<KeyboardEvent>() {
                    s.key(e, true);
                }
            });
            this.listen("keyup", |s, e| {
                if let Some(e) = e.dyn_ref::<KeyboardEvent>() {
                    s.key(e, false);
                }
            });
        }
        this.listen("blur", |s, _| s.release_all());
        if pointer {
            this.listen("pointermove", |s, e| {
                if let Some(e) = e.dyn_ref::<PointerEvent>() {
                    s.moved(e);
                }
            });
            this.listen("pointerdown", |s, e| {
                if let Some(e) = e.dyn_ref::<PointerEvent>() {
                    s.button(e, true);
                }
            });
            this.listen("pointerup", |s, e| {
                if let Some(e) = e.dyn_ref::<PointerEvent>() {
                    s.button(e, false);
                }
            });
            this.listen("wheel", |s, e| {
                if let Some(e) = e.dyn_ref::<WheelEvent>() {
                    s.wheel(e);
                }
            });
            // The right button belongs to the guest.
            this.listen("contextmenu", |_, e| e.prevent_default());
        } else if keyboard && state.options.focus_on_click() {
            this.listen("pointerdown", |s, _| {
                let _ = s.canvas.focus();
            });
        }
        this
    }

    fn listen(&mut self, name: &'static str, handler: fn(&State, &web_sys::Event)) {
        let weak = Rc::downgrade(&self.state);
        let f = Listener::new(move |e: web_sys::Event| {
            if let Some(state) = weak.upgrade() {
                handler(&state, &e);
            }
        });
        let options = web_sys::AddEventListenerOptions::new();
        // `wheel` must be able to prevent the page from scrolling.
        options.set_passive(false);
        let _ = self
            .state
            .canvas
            .add_event_listener_with_callback_and_add_event_listener_options(
                name,
                f.as_ref().unchecked_ref(),
                &options,
            );
        self.listeners.push((name, f));
    }
}
