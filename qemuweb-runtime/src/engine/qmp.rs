//! QEMU's QMP monitor as the QEMU engine uses it: to pause, save and resume the machine
//! for snapshots, with no QEMU patch.
//!
//! Every QEMU the engine starts has a QMP monitor ([`monitor_args`]) on a `pipe` chardev
//! whose file is a device of the module's filesystem (`web/qemu-worker.js`): QEMU reads
//! commands from the channel's QMP ring (`qemu_channel::QMP_RING`, written by the VM
//! worker) and its replies are posted back. This module is the plain part: the commands,
//! the reply parser (bounded) and the arguments.
//!
//! **Save** ([`save_steps`]): with the guest stopped (`stop`), an empty qcow2 image is
//! made in the module's filesystem at [`VMSTATE_PATH`] (`blockdev-create` of the file,
//! `blockdev-add`, `blockdev-create` of the qcow2 on it, `blockdev-add`), the machine is
//! saved into it (`snapshot-save` with that image as both the state's home and the only
//! device snapshotted: the guest's own disks are raw files whose point the storage stack
//! pins), and the image is closed (`blockdev-del`); the QEMU worker then hands the file
//! over in chunks. `migrate` to a `file:` URI is not used: in this build its migration
//! thread, which runs block-layer coroutines (Emscripten fibers) while it completes,
//! never exits, so QEMU's cleanup joins it forever and the monitor stops answering.
//! `snapshot-save` does the same work in QEMU's main loop.
//!
//! **Resume** ([`resume_args`], [`load_steps`]): the image is written into the module's
//! filesystem before QEMU starts, QEMU starts paused (`-S`) with the image as a block node,
//! `snapshot-load` restores the machine from it, and `cont` lets the guest run on.
//!
//! ```
//! use qemuweb_runtime::engine::qmp::{command, LineBuffer, Message};
//! assert_eq!(command("stop", None), b"{\"execute\":\"stop\"}\n");
//! let mut lines = LineBuffer::default();
//! let got = lines.push(b"{\"QMP\": {}}\n{\"return\": {}}\n{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\n");
//! assert_eq!(got.len(), 3);
//! assert!(matches!(got[0], Ok(Message::Greeting)));
//! assert!(matches!(got[2], Ok(Message::Error { .. })));
//! ```

use crate::error::RuntimeError;
use serde_json::{json, Value};

/// The id of the monitor's chardev.
pub const CHARDEV_ID: &str = "qemuweb-qmp";
/// The device file of the module's filesystem the chardev opens.
pub const DEVICE_PATH: &str = "/dev/qemuweb-qmp";
/// Where the machine state (a qcow2 image) is in the module's filesystem.
pub const VMSTATE_PATH: &str = "/qemuweb/vmstate.qcow2";
/// The qcow2 block node of the state.
pub const VMSTATE_NODE: &str = "qemuweb-vmstate";
/// The file block node under it (save only).
pub const VMSTATE_FILE_NODE: &str = "qemuweb-vmstate-file";
/// The internal snapshot's tag in the image.
pub const SNAPSHOT_TAG: &str = "qemuweb";
/// The virtual size of the state image (the state lives past it, in the image's vmstate
/// area).
pub const VMSTATE_IMAGE_BYTES: u64 = 1 << 20;
/// The longest reply line kept: longer ones are dropped with an error (replies the
/// engine reads are a few KiB).
pub const MAX_LINE: usize = 1 << 20;
/// How long one command may take to be answered, in milliseconds.
pub const COMMAND_TIMEOUT_MS: u32 = 120_000;
/// How often a job's state is asked for while it runs, in milliseconds.
pub const JOB_POLL_MS: u32 = 20;

/// The arguments that give QEMU its monitor.
///
/// ```
/// let a = qemuweb_runtime::engine::qmp::monitor_args().join(" ");
/// assert_eq!(a, "-chardev pipe,id=qemuweb-qmp,path=/dev/qemuweb-qmp -mon chardev=qemuweb-qmp,mode=control");
/// ```
pub fn monitor_args() -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("pipe,id={CHARDEV_ID},path={DEVICE_PATH}"),
        "-mon".into(),
        format!("chardev={CHARDEV_ID},mode=control"),
    ]
}

/// The arguments of a QEMU that resumes the state at [`VMSTATE_PATH`]: paused, with the
/// image as a block node.
pub fn resume_args() -> Vec<String> {
    vec![
        "-S".into(),
        "-blockdev".into(),
        format!(
            "driver=qcow2,node-name={VMSTATE_NODE},file.driver=file,file.filename={VMSTATE_PATH}"
        ),
    ]
}

/// One QMP command: `{"execute": ..., "arguments": ...}` and a newline.
pub fn command(execute: &str, arguments: Option<&Value>) -> Vec<u8> {
    let mut v = json!({ "execute": execute });
    if let Some(a) = arguments {
        v["arguments"] = a.clone();
    }
    let mut bytes = v.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// One step of a save or resume.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The command.
    pub execute: &'static str,
    /// Its arguments.
    pub arguments: Option<Value>,
    /// The id of the job it starts, waited for until it concludes (and dismissed).
    pub job: Option<&'static str>,
}

fn step(execute: &'static str, arguments: Value, job: Option<&'static str>) -> Step {
    Step {
        execute,
        arguments: Some(arguments),
        job,
    }
}

/// The steps that save a stopped machine into the image at [`VMSTATE_PATH`] and close it.
///
/// ```
/// let steps = qemuweb_runtime::engine::qmp::save_steps();
/// let names: Vec<_> = steps.iter().map(|s| s.execute).collect();
/// assert_eq!(names, ["blockdev-create", "blockdev-add", "blockdev-create", "blockdev-add",
///                    "snapshot-save", "blockdev-del", "blockdev-del"]);
/// ```
pub fn save_steps() -> Vec<Step> {
    vec![
        step(
            "blockdev-create",
            json!({"job-id": "qemuweb-create-file",
                   "options": {"driver": "file", "filename": VMSTATE_PATH, "size": 0}}),
            Some("qemuweb-create-file"),
        ),
        step(
            "blockdev-add",
            json!({"driver": "file", "node-name": VMSTATE_FILE_NODE, "filename": VMSTATE_PATH}),
            None,
        ),
        step(
            "blockdev-create",
            json!({"job-id": "qemuweb-create-qcow2",
                   "options": {"driver": "qcow2", "file": VMSTATE_FILE_NODE,
                               "size": VMSTATE_IMAGE_BYTES}}),
            Some("qemuweb-create-qcow2"),
        ),
        step(
            "blockdev-add",
            json!({"driver": "qcow2", "node-name": VMSTATE_NODE, "file": VMSTATE_FILE_NODE}),
            None,
        ),
        step(
            "snapshot-save",
            json!({"job-id": "qemuweb-save", "tag": SNAPSHOT_TAG, "vmstate": VMSTATE_NODE,
                   "devices": [VMSTATE_NODE]}),
            Some("qemuweb-save"),
        ),
        step("blockdev-del", json!({"node-name": VMSTATE_NODE}), None),
        step(
            "blockdev-del",
            json!({"node-name": VMSTATE_FILE_NODE}),
            None,
        ),
    ]
}

/// The steps that undo a failed save's nodes (each may fail: it may not have been made).
pub fn save_cleanup_steps() -> Vec<Step> {
    vec![
        step("blockdev-del", json!({"node-name": VMSTATE_NODE}), None),
        step(
            "blockdev-del",
            json!({"node-name": VMSTATE_FILE_NODE}),
            None,
        ),
    ]
}

/// The steps that load the state of a QEMU started with [`resume_args`].
pub fn load_steps() -> Vec<Step> {
    vec![step(
        "snapshot-load",
        json!({"job-id": "qemuweb-load", "tag": SNAPSHOT_TAG, "vmstate": VMSTATE_NODE,
               "devices": [VMSTATE_NODE]}),
        Some("qemuweb-load"),
    )]
}

/// What a job is doing, from a `query-jobs` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not concluded yet.
    Running,
    /// Concluded without an error.
    Done,
    /// Concluded with QEMU's error message.
    Failed(String),
    /// Not in the list.
    Missing,
}

/// The state of job `id` in the `return` of `query-jobs`.
///
/// ```
/// use qemuweb_runtime::engine::qmp::{job_state, JobState};
/// use serde_json::json;
/// let r = json!([{"id": "j", "status": "concluded", "error": "No space"}]);
/// assert_eq!(job_state(&r, "j"), JobState::Failed("No space".into()));
/// assert_eq!(job_state(&json!([{"id": "j", "status": "running"}]), "j"), JobState::Running);
/// assert_eq!(job_state(&json!([]), "j"), JobState::Missing);
/// ```
pub fn job_state(jobs: &Value, id: &str) -> JobState {
    let Some(job) = jobs
        .as_array()
        .and_then(|a| a.iter().find(|j| j["id"] == id))
    else {
        return JobState::Missing;
    };
    if job["status"] != "concluded" {
        return JobState::Running;
    }
    match job["error"].as_str() {
        Some(e) => JobState::Failed(e.to_string()),
        None => JobState::Done,
    }
}

/// One message from the monitor.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The greeting (`{"QMP": ...}`), sent when the monitor opens.
    Greeting,
    /// An event (`STOP`, `RESUME`, `JOB_STATUS_CHANGE`, ...).
    Event(String),
    /// A command's success, with its `return`.
    Return(Value),
    /// A command's failure.
    Error {
        /// QEMU's error class.
        class: String,
        /// QEMU's message.
        desc: String,
    },
}

impl Message {
    /// Parses one line.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Engine`] for a line that is no QMP message.
    pub fn parse(line: &[u8]) -> Result<Self, RuntimeError> {
        let bad = |why: String| RuntimeError::Engine(format!("QEMU's monitor sent {why}"));
        let v: Value = serde_json::from_slice(line).map_err(|e| bad(format!("bad JSON: {e}")))?;
        if v.get("QMP").is_some() {
            Ok(Message::Greeting)
        } else if let Some(e) = v.get("event") {
            Ok(Message::Event(e.as_str().unwrap_or_default().to_string()))
        } else if let Some(r) = v.get("return") {
            Ok(Message::Return(r.clone()))
        } else if let Some(e) = v.get("error") {
            Ok(Message::Error {
                class: e["class"].as_str().unwrap_or("GenericError").to_string(),
                desc: e["desc"].as_str().unwrap_or_default().to_string(),
            })
        } else {
            Err(bad(format!("an unknown message: {v}")))
        }
    }
}

/// Splits the monitor's output into messages, keeping at most [`MAX_LINE`] bytes of an
/// unfinished line.
#[derive(Debug, Default)]
pub struct LineBuffer {
    line: Vec<u8>,
    overflowed: bool,
}

impl LineBuffer {
    /// Adds `bytes`; returns the messages of the lines they complete (a line too long is
    /// an error in its place).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<Message, RuntimeError>> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                if std::mem::take(&mut self.overflowed) {
                    out.push(Err(RuntimeError::Engine(format!(
                        "QEMU's monitor sent a line longer than {MAX_LINE} bytes"
                    ))));
                } else if !line.iter().all(u8::is_ascii_whitespace) {
                    out.push(Message::parse(&line));
                }
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.overflowed = true;
            }
        }
        out
    }
}

/// The error of command `execute` that QEMU answered with `class` and `desc`.
pub fn failure(execute: &str, class: &str, desc: &str) -> RuntimeError {
    RuntimeError::Qmp {
        command: execute.to_string(),
        class: class.to_string(),
        message: desc.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn lines_split_across_pushes_and_stay_bounded() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"{\"return\": ").is_empty());
        let got = b.push(b"{\"status\": \"running\"}}\r\n\n{\"event\": \"STOP\"}\n");
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].as_ref().unwrap(),
            &Message::Return(json!({"status": "running"}))
        );
        assert_eq!(got[1].as_ref().unwrap(), &Message::Event("STOP".into()));
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(b.push(&long).is_empty());
        let got = b.push(b"\n{\"return\": {}}\n");
        assert!(got[0].is_err());
        assert_eq!(got[1].as_ref().unwrap(), &Message::Return(json!({})));
        assert!(b.push(b"[1,2]\n")[0].is_err());
        assert!(b.push(b"not json\n")[0].is_err());
    }

    #[test]
    fn failures_are_typed_with_qemus_message() {
        let e = failure("snapshot-save", "GenericError", "Device has no medium");
        assert_eq!(e.code(), ErrorCode::Engine);
        let text = e.to_string();
        assert!(
            text.contains("snapshot-save") && text.contains("Device has no medium"),
            "{text}"
        );
    }

    #[test]
    fn steps_name_the_state_node() {
        let load = load_steps();
        assert_eq!(
            load[0].arguments.as_ref().unwrap()["devices"][0],
            VMSTATE_NODE
        );
        let save = save_steps();
        assert!(save.iter().filter(|s| s.job.is_some()).count() == 3);
        assert!(resume_args().join(" ").contains(VMSTATE_PATH));
        let c = command("migrate", Some(&json!({"uri": "x"})));
        assert_eq!(c.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(v["arguments"]["uri"], "x");
    }
}
