//! The commands: their JSON, their checks, and what the page is asked to do.

use crate::error::{ControlError, Result};
use qemuweb_runtime::input::{chord, text_events, InputEvent, Key, PointerButton};
use serde::{Deserialize, Serialize};

/// The longest text one `type` command types.
pub const MAX_TEXT: usize = 16 * 1024;
/// The most keys one `keys` chord presses.
pub const MAX_KEYS: usize = 16;
/// The largest pointer coordinate (guest pixels).
pub const MAX_COORD: u32 = 16384;
/// The most bytes one `serialIn` sends.
pub const MAX_SERIAL_IN: usize = 64 * 1024;

/// A command, as JSON: `{"cmd": "type", "text": "ls\n"}`.
///
/// | `cmd` | fields | answer |
/// | --- | --- | --- |
/// | `type` | `text` (a US keyboard layout; `\n` is Enter) | `{"ok": true}` once the guest's keyboard got it |
/// | `keys` | `keys`: `KeyboardEvent.code` names pressed together, released in reverse (`["ControlLeft", "AltLeft", "Delete"]`) | `{"ok": true}` |
/// | `move` | `x`, `y`: the pointer to this guest pixel | `{"ok": true}` |
/// | `click` | `button` (`left`, `middle`, `right`; default `left`), optionally `x`, `y` to move first | `{"ok": true}` |
/// | `screenshot` | | the screen as `image/png` |
/// | `serialIn` | `data` (text, sent as UTF-8) | `{"ok": true}` |
/// | `serialOut` | `since` (a cursor; default 0) | `{"ok": true, "data", "cursor", "lost"}`: the output after `since`, the cursor to ask from next, bytes no longer kept |
/// | `stop` | | `{"ok": true}`; the VM stops (its writes synced) and the runner exits |
///
/// ```
/// use qemuweb_control::ControlCommand;
/// let c = ControlCommand::parse(br#"{"cmd":"keys","keys":["ControlLeft","AltLeft","Delete"]}"#).unwrap();
/// assert!(matches!(c, ControlCommand::Keys { .. }));
/// assert!(ControlCommand::parse(br#"{"cmd":"keys","keys":["Ctrl"]}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "cmd", rename_all = "camelCase", deny_unknown_fields)]
pub enum ControlCommand {
    /// Type text.
    Type {
        /// The text.
        text: String,
    },
    /// Press keys together.
    Keys {
        /// `KeyboardEvent.code` names.
        keys: Vec<String>,
    },
    /// Move the pointer.
    Move {
        /// Guest pixel column.
        x: u32,
        /// Guest pixel row.
        y: u32,
    },
    /// Click a button (after moving, if `x` and `y` are given).
    Click {
        /// Guest pixel column.
        #[serde(default)]
        x: Option<u32>,
        /// Guest pixel row.
        #[serde(default)]
        y: Option<u32>,
        /// The button (default left).
        #[serde(default)]
        button: Option<PointerButton>,
    },
    /// The screen as PNG.
    Screenshot,
    /// Bytes for the guest's serial port.
    SerialIn {
        /// The text.
        data: String,
    },
    /// The guest's serial output after a cursor.
    SerialOut {
        /// The cursor of the last read (0: from the start).
        #[serde(default)]
        since: u64,
    },
    /// Stop the VM.
    Stop,
}

/// What the page is asked to do, as JSON (`{"id": N, "op": "input", "events": [...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum PageOp {
    /// `QemuClient.sendInput(vmId, events)`.
    Input {
        /// The events.
        events: Vec<InputEvent>,
    },
    /// Move the pointer to a guest pixel (the page knows the screen's size and where the
    /// pointer was).
    Move {
        /// Column.
        x: u32,
        /// Row.
        y: u32,
    },
    /// Press and release a button, after moving if `x` and `y` are given.
    Click {
        /// Column.
        x: Option<u32>,
        /// Row.
        y: Option<u32>,
        /// The button.
        button: PointerButton,
    },
    /// `QemuClient.screenshot(vmId)`, the PNG sent back in base64.
    Screenshot,
}

fn malformed<T>(why: String) -> Result<T> {
    Err(ControlError::Malformed(why))
}

impl ControlCommand {
    /// Parses and checks a request body.
    ///
    /// # Errors
    ///
    /// [`ControlError::Malformed`] for anything that is not one valid command: not JSON,
    /// an unknown `cmd` or field, text no US keyboard types or longer than [`MAX_TEXT`],
    /// unknown keys or more than [`MAX_KEYS`], coordinates past [`MAX_COORD`], serial input
    /// over 64 KiB.
    pub fn parse(body: &[u8]) -> Result<ControlCommand> {
        let command: ControlCommand = serde_json::from_slice(body).map_err(|e| {
            ControlError::Malformed(format!(
                "{e} (a command is a JSON object such as {{\"cmd\": \"type\", \"text\": \"ls\\n\"}})"
            ))
        })?;
        command.check()?;
        Ok(command)
    }

    fn check(&self) -> Result<()> {
        let coord = |what: &str, v: Option<u32>| match v {
            Some(v) if v >= MAX_COORD => malformed(format!("{what} {v} is past {MAX_COORD}")),
            _ => Ok(()),
        };
        match self {
            ControlCommand::Type { text } => {
                if text.len() > MAX_TEXT {
                    return malformed(format!(
                        "type: {} bytes of text, more than {MAX_TEXT}",
                        text.len()
                    ));
                }
                text_events(text).map_err(|e| ControlError::Malformed(e.to_string()))?;
            }
            ControlCommand::Keys { keys } => {
                if keys.is_empty() || keys.len() > MAX_KEYS {
                    return malformed(format!("keys: 1 to {MAX_KEYS} keys, not {}", keys.len()));
                }
                for k in keys {
                    Key::from_code(k).map_err(|e| ControlError::Malformed(e.to_string()))?;
                }
            }
            ControlCommand::Move { x, y } => {
                coord("x", Some(*x))?;
                coord("y", Some(*y))?;
            }
            ControlCommand::Click { x, y, .. } => {
                if x.is_some() != y.is_some() {
                    return malformed("click: give both x and y, or neither".into());
                }
                coord("x", *x)?;
                coord("y", *y)?;
            }
            ControlCommand::SerialIn { data } if data.len() > MAX_SERIAL_IN => {
                return malformed(format!(
                    "serialIn: {} bytes, more than {MAX_SERIAL_IN}",
                    data.len()
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// What the page does for this command (`None` for the runner's own: serial and stop).
    pub fn page_op(&self) -> Option<PageOp> {
        Some(match self {
            // Checked in `parse`: both convert.
            ControlCommand::Type { text } => PageOp::Input {
                events: text_events(text).unwrap_or_default(),
            },
            ControlCommand::Keys { keys } => PageOp::Input {
                events: chord(keys),
            },
            ControlCommand::Move { x, y } => PageOp::Move { x: *x, y: *y },
            ControlCommand::Click { x, y, button } => PageOp::Click {
                x: *x,
                y: *y,
                button: button.unwrap_or(PointerButton::Left),
            },
            ControlCommand::Screenshot => PageOp::Screenshot,
            ControlCommand::SerialIn { .. }
            | ControlCommand::SerialOut { .. }
            | ControlCommand::Stop => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses_and_bad_ones_are_refused_with_a_reason() {
        let good = [
            r#"{"cmd":"type","text":"echo hi\n"}"#,
            r#"{"cmd":"keys","keys":["ShiftLeft","KeyA"]}"#,
            r#"{"cmd":"move","x":10,"y":20}"#,
            r#"{"cmd":"click"}"#,
            r#"{"cmd":"click","x":1,"y":2,"button":"right"}"#,
            r#"{"cmd":"screenshot"}"#,
            r#"{"cmd":"serialIn","data":"info\r"}"#,
            r#"{"cmd":"serialOut","since":12}"#,
            r#"{"cmd":"serialOut"}"#,
            r#"{"cmd":"stop"}"#,
        ];
        for g in good {
            ControlCommand::parse(g.as_bytes()).unwrap_or_else(|e| panic!("{g}: {e}"));
        }
        let bad = [
            ("", "EOF"),
            ("[]", "missing field `cmd`"),
            (r#"{"cmd":"dance"}"#, "unknown variant"),
            (r#"{"cmd":"type"}"#, "missing field"),
            (r#"{"cmd":"type","text":"é"}"#, "US keyboard"),
            (r#"{"cmd":"type","text":"a","speed":2}"#, "unknown field"),
            (r#"{"cmd":"keys","keys":[]}"#, "1 to 16"),
            (r#"{"cmd":"keys","keys":["KeyQ","Hyper"]}"#, "unknown key"),
            (r#"{"cmd":"move","x":-1,"y":0}"#, "invalid value"),
            (r#"{"cmd":"move","x":16384,"y":0}"#, "past"),
            (r#"{"cmd":"click","x":3}"#, "both"),
            (r#"{"cmd":"click","button":"back"}"#, "unknown variant"),
            (r#"{"cmd":"serialOut","since":"x"}"#, "invalid type"),
        ];
        for (b, why) in bad {
            let e = ControlCommand::parse(b.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Malformed, "{b}");
            assert!(e.to_string().contains(why), "{b}: {e}");
        }
        let long = format!(r#"{{"cmd":"type","text":"{}"}}"#, "a".repeat(MAX_TEXT + 1));
        assert!(ControlCommand::parse(long.as_bytes()).is_err());
    }

    #[test]
    fn the_page_gets_input_events_and_pointer_moves() {
        let c = ControlCommand::parse(br#"{"cmd":"type","text":"A"}"#).unwrap();
        let op = serde_json::to_value(c.page_op().unwrap()).unwrap();
        assert_eq!(op["op"], "input");
        assert_eq!(op["events"][0]["code"], "ShiftLeft");
        assert_eq!(op["events"].as_array().unwrap().len(), 4);
        let c = ControlCommand::parse(br#"{"cmd":"click","x":5,"y":6}"#).unwrap();
        assert_eq!(
            serde_json::to_value(c.page_op().unwrap()).unwrap(),
            serde_json::json!({"op": "click", "x": 5, "y": 6, "button": "left"})
        );
        assert!(ControlCommand::Stop.page_op().is_none());
    }
}
