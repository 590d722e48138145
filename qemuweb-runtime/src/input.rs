//! Keyboard and pointer input for a guest: the events the page sends (the `input`
//! command), and their translation into what each engine takes.
//!
//! Keys are named by the W3C `KeyboardEvent.code` values (`"KeyA"`, `"ShiftLeft"`,
//! `"ArrowUp"`, ...): the key's *position* on the keyboard, whatever the host's layout;
//! the guest applies its own layout, as on a real machine. [`Key::from_code`] resolves a
//! name through Chromium's key table (the `keycode` crate) to the Linux evdev code
//! (what QEMU's input layer is given, as `qemu_input_linux_to_qcode` expects) and the
//! PC/AT scan code set 1 bytes (what v86's PS/2 controller takes through its
//! `keyboard-code` bus event; [`Key::set1`]).
//!
//! The pointer reports an absolute position (0..=[`ABS_MAX`] on each axis of the guest's
//! screen, for a tablet) and the relative motion in guest pixels (for a PS/2 mouse) in the
//! same [`InputEvent::Move`]: the engine uses what the guest's pointing device takes.
//!
//! ```
//! use qemuweb_runtime::input::{text_events, InputEvent, Key};
//! let a = Key::from_code("KeyA").unwrap();
//! assert_eq!((a.evdev, a.set1(true), a.set1(false)), (30, vec![0x1e], vec![0x9e]));
//! let up = Key::from_code("ArrowUp").unwrap();
//! assert_eq!(up.set1(true), vec![0xe0, 0x48]);
//! // "A" is Shift + KeyA on a US layout.
//! let events = text_events("A").unwrap();
//! assert_eq!(events[0], InputEvent::Key { code: "ShiftLeft".into(), down: true });
//! assert_eq!(events.len(), 4);
//! ```

use crate::error::RuntimeError;
use keycode::{KeyMap, KeyMappingCode};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use tsify::Tsify;

/// The largest absolute pointer coordinate (QEMU's `INPUT_EVENT_ABS_MAX`): `x = 0` is the
/// screen's left edge, `x = ABS_MAX` its right edge.
pub const ABS_MAX: u32 = 0x7fff;

/// The most events one `input` command may carry.
pub const MAX_INPUT_EVENTS: usize = 1024;

/// The largest relative motion or wheel step one event may carry, each axis.
pub const MAX_DELTA: i32 = 4096;

/// A pointer button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum PointerButton {
    /// The primary (left) button.
    Left,
    /// The middle button (wheel click).
    Middle,
    /// The secondary (right) button.
    Right,
}

impl PointerButton {
    /// The button of a DOM `MouseEvent.button` value (0 left, 1 middle, 2 right).
    pub fn from_dom(button: i16) -> Option<PointerButton> {
        match button {
            0 => Some(PointerButton::Left),
            1 => Some(PointerButton::Middle),
            2 => Some(PointerButton::Right),
            _ => None,
        }
    }
}

/// One input event for the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum InputEvent {
    /// A key went down (again, for auto-repeat) or up.
    Key {
        /// The key: a `KeyboardEvent.code` name (`"KeyA"`, `"Enter"`, `"ControlLeft"`).
        code: String,
        /// Pressed (`true`) or released.
        down: bool,
    },
    /// The pointer moved.
    Move {
        /// Absolute position, 0..=[`ABS_MAX`] from the screen's left edge (for a tablet).
        x: u32,
        /// Absolute position, 0..=[`ABS_MAX`] from the screen's top edge.
        y: u32,
        /// Relative motion in guest pixels, right positive (for a mouse).
        dx: i32,
        /// Relative motion in guest pixels, down positive.
        dy: i32,
    },
    /// A pointer button went down or up.
    Button {
        /// Which.
        button: PointerButton,
        /// Pressed (`true`) or released.
        down: bool,
    },
    /// The wheel turned, in notches.
    Wheel {
        /// Horizontal notches, right positive.
        dx: i32,
        /// Vertical notches, down (towards the user) positive, as DOM `deltaY`.
        dy: i32,
    },
}

/// How a display canvas takes input (the `input` of `attachDisplay`'s options). Every
/// field is optional; the defaults give a canvas you click and type into.
///
/// ```
/// let o: qemuweb_runtime::input::InputOptions = serde_json::from_str(r#"{"pointerLock":true}"#).unwrap();
/// assert!(o.keyboard() && o.pointer() && o.pointer_lock() && o.focus_on_click());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputOptions {
    /// Keys typed while the canvas has the focus go to the guest (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub keyboard: Option<bool>,
    /// Pointer motion, buttons and wheel over the canvas go to the guest: to its tablet
    /// as an absolute position where it has one, else to its mouse as relative motion
    /// (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub pointer: Option<bool>,
    /// A click locks the pointer to the canvas (relative motion with no screen edges,
    /// for guests with a mouse but no tablet); Escape releases it (default `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub pointer_lock: Option<bool>,
    /// A click on the canvas gives it the keyboard focus (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub focus_on_click: Option<bool>,
}

impl InputOptions {
    /// Whether keys go to the guest.
    pub fn keyboard(&self) -> bool {
        self.keyboard.unwrap_or(true)
    }

    /// Whether the pointer goes to the guest.
    pub fn pointer(&self) -> bool {
        self.pointer.unwrap_or(true)
    }

    /// Whether a click locks the pointer.
    pub fn pointer_lock(&self) -> bool {
        self.pointer_lock.unwrap_or(false)
    }

    /// Whether a click focuses the canvas.
    pub fn focus_on_click(&self) -> bool {
        self.focus_on_click.unwrap_or(true)
    }
}

/// A key resolved for the engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Linux evdev code (`KEY_A` = 30).
    pub evdev: u16,
    /// Scan code set 1 make code; `0xe0xx` for an extended key.
    set1: u16,
}

impl Key {
    /// Resolves a `KeyboardEvent.code` name.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Malformed`] for a name that is not a key of the table, or a key
    /// the PC keyboard has no scan code for.
    pub fn from_code(code: &str) -> Result<Key, RuntimeError> {
        let unknown = || {
            RuntimeError::Malformed(format!(
                "unknown key {:?}: keys are KeyboardEvent.code names such as \"KeyA\", \
                 \"Enter\" or \"ControlLeft\"",
                code.chars().take(32).collect::<String>()
            ))
        };
        let name = KeyMappingCode::from_str(code).map_err(|_| unknown())?;
        let map = KeyMap::from(name);
        // Chromium's "win" column is Windows' scan codes, which swap NumLock and Pause
        // against the PC/AT set 1 the PS/2 controller speaks.
        let set1 = match code {
            "NumLock" => 0x45,
            "Pause" => 0xe11d,
            _ => map.win,
        };
        if map.evdev == 0 || set1 == 0 || set1 == 0xffff {
            return Err(unknown());
        }
        Ok(Key {
            evdev: map.evdev,
            set1,
        })
    }

    /// The scan code set 1 bytes of pressing (`down`) or releasing the key: the make
    /// code, or the make code with bit 7 set, after an `0xe0` prefix for extended keys.
    /// Pause sends its whole make/break sequence when pressed and nothing when released.
    pub fn set1(&self, down: bool) -> Vec<u8> {
        let [prefix, code] = self.set1.to_be_bytes();
        match (prefix, down) {
            (0xe1, true) => vec![0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5],
            (0xe1, false) => Vec::new(),
            (0, true) => vec![code],
            (0, false) => vec![code | 0x80],
            (p, true) => vec![p, code],
            (p, false) => vec![p, code | 0x80],
        }
    }
}

/// Checks a batch of events from the page: how many, every key name, the ranges.
///
/// ```
/// use qemuweb_runtime::input::{check_events, InputEvent};
/// assert!(check_events(&[InputEvent::Wheel { dx: 0, dy: 1 }]).is_ok());
/// let bad = InputEvent::Key { code: "Shift".into(), down: true };
/// assert!(check_events(&[bad]).is_err());
/// ```
///
/// # Errors
///
/// [`RuntimeError::Malformed`] naming the first bad event.
pub fn check_events(events: &[InputEvent]) -> Result<(), RuntimeError> {
    if events.len() > MAX_INPUT_EVENTS {
        return Err(RuntimeError::Malformed(format!(
            "input carries {} events, more than the {MAX_INPUT_EVENTS} allowed in one message",
            events.len()
        )));
    }
    let delta = |what: &str, d: i32| {
        if (-MAX_DELTA..=MAX_DELTA).contains(&d) {
            Ok(())
        } else {
            Err(RuntimeError::Malformed(format!(
                "input: {what} {d} is outside -{MAX_DELTA}..={MAX_DELTA}"
            )))
        }
    };
    for e in events {
        match e {
            InputEvent::Key { code, .. } => {
                Key::from_code(code)?;
            }
            InputEvent::Move { x, y, dx, dy } => {
                if *x > ABS_MAX || *y > ABS_MAX {
                    return Err(RuntimeError::Malformed(format!(
                        "input: pointer position ({x}, {y}) is outside 0..={ABS_MAX}"
                    )));
                }
                delta("dx", *dx)?;
                delta("dy", *dy)?;
            }
            InputEvent::Button { .. } => {}
            InputEvent::Wheel { dx, dy } => {
                delta("wheel dx", *dx)?;
                delta("wheel dy", *dy)?;
            }
        }
    }
    Ok(())
}

/// The events of pressing `codes` together, like QEMU's `sendkey ctrl-alt-delete`: each
/// key goes down in order, then up in reverse order.
///
/// ```
/// let e = qemuweb_runtime::input::chord(&["ControlLeft", "AltLeft", "Delete"]);
/// assert_eq!(e.len(), 6);
/// ```
pub fn chord<S: AsRef<str>>(codes: &[S]) -> Vec<InputEvent> {
    let key = |c: &S, down| InputEvent::Key {
        code: c.as_ref().to_string(),
        down,
    };
    let mut events: Vec<InputEvent> = codes.iter().map(|c| key(c, true)).collect();
    events.extend(codes.iter().rev().map(|c| key(c, false)));
    events
}

/// The key for `c` on a US keyboard and whether it needs Shift.
fn us_key(c: char) -> Option<(&'static str, bool)> {
    const LETTERS: [&str; 26] = [
        "KeyA", "KeyB", "KeyC", "KeyD", "KeyE", "KeyF", "KeyG", "KeyH", "KeyI", "KeyJ", "KeyK",
        "KeyL", "KeyM", "KeyN", "KeyO", "KeyP", "KeyQ", "KeyR", "KeyS", "KeyT", "KeyU", "KeyV",
        "KeyW", "KeyX", "KeyY", "KeyZ",
    ];
    const DIGITS: [&str; 10] = [
        "Digit0", "Digit1", "Digit2", "Digit3", "Digit4", "Digit5", "Digit6", "Digit7", "Digit8",
        "Digit9",
    ];
    // The shifted digit row, ")!@#$%^&*(" from 0 to 9.
    const SHIFTED_DIGITS: &str = ")!@#$%^&*(";
    const PUNCTUATION: [(char, char, &str); 11] = [
        ('-', '_', "Minus"),
        ('=', '+', "Equal"),
        ('[', '{', "BracketLeft"),
        (']', '}', "BracketRight"),
        ('\\', '|', "Backslash"),
        (';', ':', "Semicolon"),
        ('\'', '"', "Quote"),
        ('`', '~', "Backquote"),
        (',', '<', "Comma"),
        ('.', '>', "Period"),
        ('/', '?', "Slash"),
    ];
    match c {
        'a'..='z' => Some((LETTERS[c as usize - 'a' as usize], false)),
        'A'..='Z' => Some((LETTERS[c as usize - 'A' as usize], true)),
        '0'..='9' => Some((DIGITS[c as usize - '0' as usize], false)),
        ' ' => Some(("Space", false)),
        '\n' | '\r' => Some(("Enter", false)),
        '\t' => Some(("Tab", false)),
        '\u{8}' => Some(("Backspace", false)),
        '\u{1b}' => Some(("Escape", false)),
        _ => {
            if let Some(i) = SHIFTED_DIGITS.find(c) {
                return Some((DIGITS[i], true));
            }
            PUNCTUATION.iter().find_map(|&(plain, shifted, code)| {
                (c == plain)
                    .then_some((code, false))
                    .or((c == shifted).then_some((code, true)))
            })
        }
    }
}

/// The key events that type `text` on a US keyboard layout (what QEMU's monitor
/// `sendkey` and v86's `keyboard_send_text` assume): each character is its key pressed
/// and released, with Shift around it where needed. `\n` is Enter.
///
/// # Errors
///
/// [`RuntimeError::Malformed`] for a character a US keyboard cannot type (the guest's
/// own layout decides what the keys mean).
pub fn text_events(text: &str) -> Result<Vec<InputEvent>, RuntimeError> {
    let mut events = Vec::new();
    for c in text.chars() {
        let (code, shift) = us_key(c).ok_or_else(|| {
            RuntimeError::Malformed(format!(
                "{c:?} cannot be typed on a US keyboard layout: send its keys instead"
            ))
        })?;
        if shift {
            events.extend(chord(&["ShiftLeft", code]));
        } else {
            events.extend(chord(&[code]));
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_codes_of_the_keys_the_tests_use() {
        let cases: &[(&str, u16, &[u8], &[u8])] = &[
            ("Escape", 1, &[0x01], &[0x81]),
            ("Enter", 28, &[0x1c], &[0x9c]),
            ("ShiftLeft", 42, &[0x2a], &[0xaa]),
            ("ControlLeft", 29, &[0x1d], &[0x9d]),
            ("ControlRight", 97, &[0xe0, 0x1d], &[0xe0, 0x9d]),
            ("AltLeft", 56, &[0x38], &[0xb8]),
            ("AltRight", 100, &[0xe0, 0x38], &[0xe0, 0xb8]),
            ("Delete", 111, &[0xe0, 0x53], &[0xe0, 0xd3]),
            ("NumpadEnter", 96, &[0xe0, 0x1c], &[0xe0, 0x9c]),
            ("NumLock", 69, &[0x45], &[0xc5]),
            ("F1", 59, &[0x3b], &[0xbb]),
            ("F12", 88, &[0x58], &[0xd8]),
            ("MetaLeft", 125, &[0xe0, 0x5b], &[0xe0, 0xdb]),
            ("Space", 57, &[0x39], &[0xb9]),
            ("Digit1", 2, &[0x02], &[0x82]),
            ("Slash", 53, &[0x35], &[0xb5]),
            ("NumpadDivide", 98, &[0xe0, 0x35], &[0xe0, 0xb5]),
        ];
        for &(code, evdev, make, brk) in cases {
            let k = Key::from_code(code).unwrap();
            assert_eq!(k.evdev, evdev, "{code}");
            assert_eq!(k.set1(true), make, "{code}");
            assert_eq!(k.set1(false), brk, "{code}");
        }
        let pause = Key::from_code("Pause").unwrap();
        assert_eq!(pause.evdev, 119);
        assert_eq!(pause.set1(true), [0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5]);
        assert!(pause.set1(false).is_empty());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for bad in ["", "keya", "Shift", "KeyA ", "\u{0}", &"K".repeat(5000)] {
            let e = Key::from_code(bad).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::Malformed);
            assert!(
                e.to_string().len() < 300,
                "the message quotes a bounded name"
            );
        }
    }

    #[test]
    fn text_is_typed_with_shift_where_a_us_keyboard_needs_it() {
        let events = text_events("hI!\n").unwrap();
        let keys: Vec<String> = events
            .iter()
            .map(|e| match e {
                InputEvent::Key { code, down } => {
                    format!("{}{code}", if *down { "+" } else { "-" })
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "+KeyH",
                "-KeyH",
                "+ShiftLeft",
                "+KeyI",
                "-KeyI",
                "-ShiftLeft",
                "+ShiftLeft",
                "+Digit1",
                "-Digit1",
                "-ShiftLeft",
                "+Enter",
                "-Enter"
            ]
        );
        // Every printable ASCII character can be typed, and each resolves to a real key.
        let all: String = (' '..='~').collect();
        let events = text_events(&all).unwrap();
        check_events(&events).unwrap();
        assert_eq!(
            text_events("é").unwrap_err().code(),
            crate::ErrorCode::Malformed
        );
    }

    #[test]
    fn batches_are_bounded_and_ranges_checked() {
        let many = vec![InputEvent::Wheel { dx: 0, dy: 1 }; MAX_INPUT_EVENTS + 1];
        assert!(check_events(&many).is_err());
        assert!(check_events(&many[1..]).is_ok());
        let far = InputEvent::Move {
            x: ABS_MAX + 1,
            y: 0,
            dx: 0,
            dy: 0,
        };
        assert!(check_events(&[far]).is_err());
        let fast = InputEvent::Move {
            x: 0,
            y: ABS_MAX,
            dx: MAX_DELTA + 1,
            dy: 0,
        };
        assert!(check_events(&[fast]).is_err());
        let spin = InputEvent::Wheel {
            dx: 0,
            dy: -MAX_DELTA - 1,
        };
        assert!(check_events(&[spin]).is_err());
    }

    #[test]
    fn events_have_their_wire_shape() {
        let e: Vec<InputEvent> = serde_json::from_str(
            r#"[{"type":"key","code":"KeyA","down":true},
                {"type":"move","x":16383,"y":0,"dx":-3,"dy":4},
                {"type":"button","button":"left","down":false},
                {"type":"wheel","dx":0,"dy":-1}]"#,
        )
        .unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(
            e[2],
            InputEvent::Button {
                button: PointerButton::Left,
                down: false
            }
        );
        assert!(serde_json::from_str::<InputEvent>(r#"{"type":"key","code":"KeyA"}"#).is_err());
        assert!(serde_json::from_str::<InputEvent>(
            r#"{"type":"button","button":"back","down":true}"#
        )
        .is_err());
    }
}
