//! The DevTools hook's messages: what the QemuWeb DevTools extension
//! (`extensions/chrome`) and a page whose `QemuClient` was made with `devtools: true`
//! say to each other through `window.postMessage` (the extension's content script relays
//! them to and from its panel).
//!
//! Every message is an object with `source: "qemuweb-devtools"`, `version`
//! ([`DEVTOOLS_VERSION`]) and `direction`: `"panel"` for what the panel asks
//! ([`PanelMessage`]: an `id` and a [`PanelCommand`]), `"page"` for what the page answers or
//! pushes ([`PageMessage`]: a [`PageBody`]). The page reads only messages that its own
//! window posted (`event.source === window`, same origin); [`decode_panel_message`] turns
//! everything else about them into a typed [`DevtoolsError`] and nothing happens.
//!
//! The hook is off unless the page turns it on (`new QemuClient({devtools: true})`), so a
//! page that does not want to be inspected is not.
//!
//! ```
//! use qemuweb_runtime::devtools::*;
//! let m = serde_json::json!({"source": "qemuweb-devtools", "direction": "panel",
//!     "version": 1, "id": 7, "command": {"type": "stop", "vmId": "vm1"}});
//! let (id, command) = decode_panel_message(&m).unwrap().unwrap();
//! assert_eq!(id, 7);
//! assert_eq!(command, PanelCommand::Stop { vm_id: "vm1".into(), force: false });
//! ```

use crate::protocol::{check_id, EngineKind, ExportFormat, ProgressTotal, VmState};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tsify::Tsify;

/// The `source` of every message of the hook.
pub const DEVTOOLS_SOURCE: &str = "qemuweb-devtools";

/// The version of the hook's messages; a message of another version is refused with
/// [`DevtoolsError::VersionMismatch`].
pub const DEVTOOLS_VERSION: u32 = 1;

/// The most bytes of serial output the page keeps per VM for a panel that opens late.
pub const SERIAL_HISTORY: usize = 64 * 1024;

/// The most recent events the page keeps per VM.
pub const EVENT_HISTORY: usize = 200;

/// The most bytes one `serialIn` command may carry.
pub const MAX_PANEL_SERIAL_IN: usize = 4096;

/// The command names a panel (or the extension's service worker) may send.
pub const PANEL_COMMANDS: [&str; 10] = [
    "list",
    "detach",
    "serial",
    "disks",
    "events",
    "serialIn",
    "stop",
    "reset",
    "exportOverlay",
    "saveSnapshot",
];

/// What the panel asks the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum PanelCommand {
    /// The VMs of the page's client (answered with [`PageBody::Vms`]); the page pushes
    /// serial output and events to the panel from then on.
    List,
    /// No panel listens any more (the extension's service worker sends it when the last
    /// panel of the tab closed): the page stops pushing until the next command.
    Detach,
    /// The serial output kept of VM `vm_id` (at most [`SERIAL_HISTORY`] bytes).
    #[serde(rename_all = "camelCase")]
    Serial {
        /// The VM.
        vm_id: String,
    },
    /// VM `vm_id`'s disks: bytes read of each image, its stored writes.
    #[serde(rename_all = "camelCase")]
    Disks {
        /// The VM.
        vm_id: String,
    },
    /// The recent events of VM `vm_id` (at most [`EVENT_HISTORY`]).
    #[serde(rename_all = "camelCase")]
    Events {
        /// The VM.
        vm_id: String,
    },
    /// Text for the guest's serial port (at most [`MAX_PANEL_SERIAL_IN`] bytes).
    #[serde(rename_all = "camelCase")]
    SerialIn {
        /// The VM.
        vm_id: String,
        /// The text, sent as UTF-8.
        data: String,
    },
    /// `stopVm(vmId, force)`.
    #[serde(rename_all = "camelCase")]
    Stop {
        /// The VM.
        vm_id: String,
        /// Skip the final sync.
        #[serde(default)]
        #[tsify(optional)]
        force: bool,
    },
    /// `resetVm(vmId)`.
    #[serde(rename_all = "camelCase")]
    Reset {
        /// The VM.
        vm_id: String,
    },
    /// `exportOverlay(vmId, diskId, format)`; the page saves the file as a download.
    #[serde(rename_all = "camelCase")]
    ExportOverlay {
        /// The VM.
        vm_id: String,
        /// The disk (`disk0`, ...).
        disk_id: String,
        /// `compact` (default) or `qcow2`.
        #[serde(default)]
        #[tsify(optional)]
        format: Option<ExportFormat>,
    },
    /// `saveSnapshot(vmId)` (both engines save snapshots).
    #[serde(rename_all = "camelCase")]
    SaveSnapshot {
        /// The VM.
        vm_id: String,
    },
}

impl PanelCommand {
    /// The VM the command is about (`None` for `list`).
    pub fn vm_id(&self) -> Option<&str> {
        match self {
            PanelCommand::List | PanelCommand::Detach => None,
            PanelCommand::Serial { vm_id }
            | PanelCommand::Disks { vm_id }
            | PanelCommand::Events { vm_id }
            | PanelCommand::SerialIn { vm_id, .. }
            | PanelCommand::Stop { vm_id, .. }
            | PanelCommand::Reset { vm_id }
            | PanelCommand::ExportOverlay { vm_id, .. }
            | PanelCommand::SaveSnapshot { vm_id } => Some(vm_id),
        }
    }
}

/// A message from the panel (decoded by [`decode_panel_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct PanelMessage {
    /// [`DEVTOOLS_SOURCE`].
    pub source: String,
    /// `"panel"`.
    pub direction: String,
    /// [`DEVTOOLS_VERSION`].
    pub version: u32,
    /// Chosen by the panel; the answer carries it.
    pub id: u64,
    /// What to do.
    pub command: PanelCommand,
}

/// One VM of the page, as the panel lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct DevtoolsVm {
    /// The VM's id.
    pub vm_id: String,
    /// Its engine, once it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub engine: Option<EngineKind>,
    /// The id of its profile.
    pub profile: String,
    /// The client's last known state.
    pub state: VmState,
    /// Milliseconds since its guest started running (while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub uptime_ms: Option<f64>,
    /// Whether its engine saves snapshots (v86 and QEMU do; false before it started).
    pub snapshots: bool,
}

/// One disk of a VM, as the panel shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct DevtoolsDisk {
    /// The disk (`disk0` is the boot disk).
    pub disk_id: String,
    /// Bytes of its image read so far (over HTTP, or from a page's `Blob`), from its
    /// `progress` events; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub bytes_read: Option<u64>,
    /// The image's size, when known (`totalOf` says what it counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub image_size: Option<u64>,
    /// What `imageSize` counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub total_of: Option<ProgressTotal>,
    /// Blocks of its overlay stored in IndexedDB (absent without a stored overlay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub overlay_blocks: Option<u64>,
    /// The bytes they hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub overlay_bytes: Option<u64>,
    /// The base image the overlay belongs to, as recorded when it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub base: Option<String>,
}

/// One event kept for the panel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct DevtoolsEvent {
    /// When it happened (`Date.now()` of the page).
    pub at: f64,
    /// The event's type (`started`, `stopped`, `phase`, `log`, `error`, ...).
    pub kind: String,
    /// Whether it is an error.
    pub error: bool,
    /// What it says, for people.
    pub text: String,
}

/// What the page answers or pushes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Tsify)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PageBody {
    /// The hook is on (posted when the client is made and after each `list`).
    #[serde(rename_all = "camelCase")]
    Hello {
        /// [`DEVTOOLS_VERSION`] of the page.
        version: u32,
    },
    /// The page's VMs: the answer to `list` (`id` set), and pushed on every state change.
    #[serde(rename_all = "camelCase")]
    Vms {
        /// The `list` this answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        id: Option<u64>,
        /// The VMs, by id.
        vms: Vec<DevtoolsVm>,
    },
    /// Serial output of a VM: the answer to `serial` (`id` set, the kept history), or
    /// pushed as it comes.
    #[serde(rename_all = "camelCase")]
    Serial {
        /// The `serial` this answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        id: Option<u64>,
        /// The VM.
        vm_id: String,
        /// The bytes, one character (U+0000 to U+00FF) per byte.
        data: String,
    },
    /// A VM's disks (answers `disks`).
    #[serde(rename_all = "camelCase")]
    Disks {
        /// The `disks` this answers.
        id: u64,
        /// The VM.
        vm_id: String,
        /// Its disks, by id.
        disks: Vec<DevtoolsDisk>,
    },
    /// Events of a VM: the answer to `events` (`id` set), or one pushed as it comes.
    #[serde(rename_all = "camelCase")]
    Events {
        /// The `events` this answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        id: Option<u64>,
        /// The VM.
        vm_id: String,
        /// The events, oldest first.
        events: Vec<DevtoolsEvent>,
    },
    /// A command (`serialIn`, `stop`, `reset`, `exportOverlay`, `saveSnapshot`) completed.
    #[serde(rename_all = "camelCase")]
    Done {
        /// The command.
        id: u64,
        /// What it made, if anything: the exported file's name and size, the snapshot id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        detail: Option<String>,
    },
    /// A message was refused or a command failed; nothing changed for a refused one.
    #[serde(rename_all = "camelCase")]
    Failure {
        /// The message's `id`, when it had a readable one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        id: Option<u64>,
        /// What kind of failure: [`DevtoolsError::kind`] for refused messages, the
        /// `QemuError` code (`out-of-order`, `storage`, ...) for failed commands.
        code: String,
        /// What to tell the user.
        message: String,
    },
}

/// A message from the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct PageMessage {
    /// [`DEVTOOLS_SOURCE`].
    pub source: String,
    /// `"page"`.
    pub direction: String,
    /// [`DEVTOOLS_VERSION`].
    pub version: u32,
    /// What it says.
    pub body: PageBody,
}

impl PageMessage {
    /// A message of this version carrying `body`.
    pub fn new(body: PageBody) -> Self {
        PageMessage {
            source: DEVTOOLS_SOURCE.to_string(),
            direction: "page".to_string(),
            version: DEVTOOLS_VERSION,
            body,
        }
    }
}

/// Why a panel message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DevtoolsError {
    /// The message speaks another version of the hook.
    #[error("the panel speaks version {got} of the DevTools messages, the page version {DEVTOOLS_VERSION}: update the extension or the page")]
    VersionMismatch {
        /// The version the message gave.
        got: String,
    },
    /// The command's `type` is not one the hook knows.
    #[error("unknown DevTools command {0:?}")]
    UnknownCommand(String),
    /// The message or its command has the wrong shape or types.
    #[error("malformed DevTools message: {0}")]
    Malformed(String),
}

impl DevtoolsError {
    /// The failure's code in [`PageBody::Failure`]: `version-mismatch`,
    /// `unknown-command` or `malformed`.
    pub fn kind(&self) -> &'static str {
        match self {
            DevtoolsError::VersionMismatch { .. } => "version-mismatch",
            DevtoolsError::UnknownCommand(_) => "unknown-command",
            DevtoolsError::Malformed(_) => "malformed",
        }
    }
}

/// Whether `message` is one of the hook's messages coming from the panel (a cheap test
/// before decoding; the page's own messages and everything else are ignored).
pub fn is_panel_message(message: &Value) -> bool {
    message.get("source").and_then(Value::as_str) == Some(DEVTOOLS_SOURCE)
        && message.get("direction").and_then(Value::as_str) == Some("panel")
}

/// The `id` of a panel message, when it has a readable one (for the answer to a refused
/// message).
pub fn message_id(message: &Value) -> Option<u64> {
    message.get("id").and_then(Value::as_u64)
}

/// Decodes a message posted to the page: `Ok(None)` for messages that are not the panel's
/// (another `source` or `direction`: the page's own, other scripts'), `Ok(Some((id,
/// command)))` for a well-formed command, and a [`DevtoolsError`] for a panel message of
/// another version, an unknown command, or fields of the wrong type, a bad VM or disk id
/// or too much serial input.
pub fn decode_panel_message(message: &Value) -> Result<Option<(u64, PanelCommand)>, DevtoolsError> {
    if !is_panel_message(message) {
        return Ok(None);
    }
    match message.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(DEVTOOLS_VERSION)) => {}
        other => {
            return Err(DevtoolsError::VersionMismatch {
                got: other.map_or_else(|| "(none)".to_string(), Value::to_string),
            })
        }
    }
    let id = message_id(message)
        .ok_or_else(|| DevtoolsError::Malformed("`id` must be a non-negative integer".into()))?;
    let command = message
        .get("command")
        .filter(|c| c.is_object())
        .ok_or_else(|| DevtoolsError::Malformed("`command` must be an object".into()))?;
    let kind = command
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| DevtoolsError::Malformed("`command.type` must be a string".into()))?;
    if !PANEL_COMMANDS.contains(&kind) {
        return Err(DevtoolsError::UnknownCommand(
            kind.chars().take(64).collect(),
        ));
    }
    let command: PanelCommand = serde_json::from_value(command.clone())
        .map_err(|e| DevtoolsError::Malformed(format!("{kind}: {e}")))?;
    if let Some(vm_id) = command.vm_id() {
        check_id("vmId", vm_id).map_err(|e| DevtoolsError::Malformed(e.to_string()))?;
    }
    match &command {
        PanelCommand::SerialIn { data, .. } if data.len() > MAX_PANEL_SERIAL_IN => {
            return Err(DevtoolsError::Malformed(format!(
                "serialIn carries {} bytes, more than {MAX_PANEL_SERIAL_IN}",
                data.len()
            )));
        }
        PanelCommand::ExportOverlay { disk_id, .. } => {
            check_id("diskId", disk_id).map_err(|e| DevtoolsError::Malformed(e.to_string()))?;
        }
        _ => {}
    }
    Ok(Some((id, command)))
}

/// Bytes as a string of one character per byte (U+0000 to U+00FF), which survives JSON and
/// structured cloning; the panel turns it back into bytes.
pub fn bytes_to_binary_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The page's record of one VM for the panel: its serial output and events, bounded.
#[derive(Debug, Clone, Default)]
pub struct VmHistory {
    serial: std::collections::VecDeque<u8>,
    events: std::collections::VecDeque<DevtoolsEvent>,
}

impl VmHistory {
    /// Keeps `bytes` of serial output (the oldest go past [`SERIAL_HISTORY`]).
    pub fn push_serial(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(SERIAL_HISTORY)..];
        let over = (self.serial.len() + bytes.len()).saturating_sub(SERIAL_HISTORY);
        self.serial.drain(..over);
        self.serial.extend(bytes);
    }

    /// Keeps `event` (the oldest go past [`EVENT_HISTORY`]).
    pub fn push_event(&mut self, event: DevtoolsEvent) {
        if self.events.len() == EVENT_HISTORY {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The kept serial output.
    pub fn serial(&self) -> Vec<u8> {
        self.serial.iter().copied().collect()
    }

    /// The kept events, oldest first.
    pub fn events(&self) -> Vec<DevtoolsEvent> {
        self.events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn panel(version: Value, command: Value) -> Value {
        json!({"source": DEVTOOLS_SOURCE, "direction": "panel", "version": version, "id": 3, "command": command})
    }

    #[test]
    fn other_messages_are_ignored() {
        for m in [
            json!({"source": "other", "direction": "panel", "version": 1, "id": 1, "command": {"type": "list"}}),
            json!({"source": DEVTOOLS_SOURCE, "direction": "page", "version": 1, "body": {"type": "hello", "version": 1}}),
            json!("qemuweb-devtools"),
            json!(null),
            json!([1, 2]),
        ] {
            assert_eq!(decode_panel_message(&m), Ok(None), "{m}");
        }
    }

    #[test]
    fn every_command_decodes() {
        let cases = [
            (json!({"type": "list"}), PanelCommand::List),
            (json!({"type": "detach"}), PanelCommand::Detach),
            (
                json!({"type": "serial", "vmId": "a"}),
                PanelCommand::Serial { vm_id: "a".into() },
            ),
            (
                json!({"type": "disks", "vmId": "a"}),
                PanelCommand::Disks { vm_id: "a".into() },
            ),
            (
                json!({"type": "events", "vmId": "a"}),
                PanelCommand::Events { vm_id: "a".into() },
            ),
            (
                json!({"type": "serialIn", "vmId": "a", "data": "echo hi\r"}),
                PanelCommand::SerialIn {
                    vm_id: "a".into(),
                    data: "echo hi\r".into(),
                },
            ),
            (
                json!({"type": "stop", "vmId": "a", "force": true}),
                PanelCommand::Stop {
                    vm_id: "a".into(),
                    force: true,
                },
            ),
            (
                json!({"type": "reset", "vmId": "a"}),
                PanelCommand::Reset { vm_id: "a".into() },
            ),
            (
                json!({"type": "exportOverlay", "vmId": "a", "diskId": "disk0", "format": "qcow2"}),
                PanelCommand::ExportOverlay {
                    vm_id: "a".into(),
                    disk_id: "disk0".into(),
                    format: Some(ExportFormat::Qcow2),
                },
            ),
            (
                json!({"type": "saveSnapshot", "vmId": "a"}),
                PanelCommand::SaveSnapshot { vm_id: "a".into() },
            ),
        ];
        assert_eq!(cases.len(), PANEL_COMMANDS.len());
        for (command, want) in cases {
            let got = decode_panel_message(&panel(json!(1), command.clone()));
            assert_eq!(got, Ok(Some((3, want.clone()))), "{command}");
            // And the encoding is what the panel's TypeScript type describes.
            assert_eq!(serde_json::to_value(&want).unwrap(), command);
        }
    }

    #[test]
    fn wrong_versions_are_refused() {
        for v in [
            json!(0),
            json!(2),
            json!("1"),
            json!(1.5),
            json!(null),
            json!(-1),
        ] {
            let e = decode_panel_message(&panel(v.clone(), json!({"type": "list"}))).unwrap_err();
            assert_eq!(e.kind(), "version-mismatch", "{v}");
            assert!(e.to_string().contains("version"), "{e}");
        }
        let mut m = panel(json!(1), json!({"type": "list"}));
        m.as_object_mut().unwrap().remove("version");
        assert_eq!(
            decode_panel_message(&m).unwrap_err().kind(),
            "version-mismatch"
        );
    }

    #[test]
    fn unknown_commands_are_refused() {
        for t in ["startVm", "eval", "", "LIST"] {
            let e = decode_panel_message(&panel(json!(1), json!({"type": t, "vmId": "a"})))
                .unwrap_err();
            assert_eq!(e, DevtoolsError::UnknownCommand(t.into()));
            assert_eq!(e.kind(), "unknown-command");
        }
        let long = "x".repeat(10_000);
        match decode_panel_message(&panel(json!(1), json!({"type": long}))) {
            Err(DevtoolsError::UnknownCommand(t)) => assert_eq!(t.len(), 64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_types_are_malformed() {
        let cases = [
            json!({"type": "stop"}),                                  // no vmId
            json!({"type": "stop", "vmId": 5}),                       // a number
            json!({"type": "stop", "vmId": "a", "force": "yes"}),     // not a bool
            json!({"type": "stop", "vmId": "a", "extra": 1}),         // unknown field
            json!({"type": "serialIn", "vmId": "a", "data": [1, 2]}), // not a string
            json!({"type": "serialIn", "vmId": "a", "data": "x".repeat(MAX_PANEL_SERIAL_IN + 1)}),
            json!({"type": "exportOverlay", "vmId": "a", "diskId": "disk0", "format": "vmdk"}),
            json!({"type": "exportOverlay", "vmId": "a", "diskId": "../x"}),
            json!({"type": "reset", "vmId": ""}),
            json!({"type": "reset", "vmId": "x".repeat(65)}),
            json!({"type": 7}),
            json!("list"),
        ];
        for c in cases {
            let e = decode_panel_message(&panel(json!(1), c.clone())).unwrap_err();
            assert_eq!(e.kind(), "malformed", "{c}: {e}");
        }
        for id in [json!(-1), json!("3"), json!(null), json!(1.5)] {
            let mut m = panel(json!(1), json!({"type": "list"}));
            m["id"] = id.clone();
            assert_eq!(
                decode_panel_message(&m).unwrap_err().kind(),
                "malformed",
                "{id}"
            );
        }
    }

    #[test]
    fn history_is_bounded() {
        let mut h = VmHistory::default();
        h.push_serial(b"abc");
        h.push_serial(&vec![b'x'; SERIAL_HISTORY]);
        assert_eq!(h.serial().len(), SERIAL_HISTORY);
        assert!(h.serial().iter().all(|&b| b == b'x'));
        h.push_serial(b"tail");
        assert_eq!(h.serial().len(), SERIAL_HISTORY);
        assert!(h.serial().ends_with(b"tail"));
        h.push_serial(&vec![b'y'; SERIAL_HISTORY * 2]);
        assert_eq!(h.serial(), vec![b'y'; SERIAL_HISTORY]);
        for i in 0..EVENT_HISTORY + 5 {
            h.push_event(DevtoolsEvent {
                at: i as f64,
                kind: "log".into(),
                error: false,
                text: i.to_string(),
            });
        }
        let events = h.events();
        assert_eq!(events.len(), EVENT_HISTORY);
        assert_eq!(events[0].text, "5");
    }

    #[test]
    fn binary_strings_keep_every_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let s = bytes_to_binary_string(&bytes);
        assert_eq!(s.chars().count(), 256);
        let back: Vec<u8> = s.chars().map(|c| c as u32 as u8).collect();
        assert_eq!(back, bytes);
    }

    #[test]
    fn page_messages_carry_source_and_version() {
        let m = PageMessage::new(PageBody::Done {
            id: 4,
            detail: None,
        });
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["source"], DEVTOOLS_SOURCE);
        assert_eq!(v["direction"], "page");
        assert_eq!(v["version"], DEVTOOLS_VERSION);
        assert_eq!(v["body"], json!({"type": "done", "id": 4}));
        // The page's own messages are not taken for the panel's.
        assert_eq!(decode_panel_message(&v), Ok(None));
    }
}
