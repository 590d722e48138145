//! What a VM worker would do with a `start` command, worked out natively: the command as
//! the page posts it (JSON, decoded and validated as the worker does), the engine picked for
//! the profile, and the engine's plan (disks with their overlay ids, memory, kernel, and for
//! the QEMU engine its arguments and firmware).
//!
//! ```sh
//! cargo run -p qemuweb-runtime --example plan -- [--profile ID] [--engine v86|qemu]
//!     [--vm-id ID] [--memory MIB] [--kernel URL [--initrd URL] [--append CMDLINE]] [DISK_URL]
//! ```
//!
//! The profile defaults to `linux-i386-pc-nographic`, the disk to the test guest's usual
//! place `images/x86-bios.qcow2`. Exit status: 0, 1 when the worker would refuse the
//! command (its error event is printed on standard error), 2 on usage errors.

use qemuweb_config::profile_by_id;
use qemuweb_runtime::engine::plan;
use qemuweb_runtime::protocol::{decode_request_json, Command, Event};
use serde_json::{json, Map, Value};
use std::process::ExitCode;

const USAGE: &str = "usage: plan [--profile ID] [--engine v86|qemu] [--vm-id ID] [--memory MIB] \
[--kernel URL [--initrd URL] [--append CMDLINE]] [DISK_URL]";

/// The `start` command's JSON, as a page builds it, from the command line.
fn start_message(args: impl Iterator<Item = String>) -> Result<Value, String> {
    let mut args = args.peekable();
    let mut profile_id = "linux-i386-pc-nographic".to_string();
    let mut vm_id = "vm1".to_string();
    let mut inputs = Map::new();
    let mut overrides = Map::new();
    let mut engine = None;
    let mut disk = None;
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--profile" => profile_id = value()?,
            "--vm-id" => vm_id = value()?,
            "--engine" => engine = Some(value()?),
            "--memory" => {
                let v = value()?;
                let mib: u32 = v
                    .parse()
                    .map_err(|_| format!("--memory {v:?}: not a number of MiB"))?;
                overrides.insert("memoryMiB".into(), mib.into());
            }
            "--kernel" => {
                drop(inputs.insert("kernel".into(), json!({"kind": "url", "url": value()?})))
            }
            "--initrd" => {
                drop(inputs.insert("initrd".into(), json!({"kind": "url", "url": value()?})))
            }
            "--append" => drop(inputs.insert("kernelCmdline".into(), value()?.into())),
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if disk.is_some() => return Err(format!("a second disk {a:?}")),
            _ => disk = Some(a),
        }
    }
    let profile = profile_by_id(&profile_id).map_err(|e| e.to_string())?;
    if disk.is_none() && !inputs.contains_key("kernel") {
        disk = Some("images/x86-bios.qcow2".into());
    }
    if let Some(url) = disk {
        inputs.insert(
            "disk".into(),
            json!({"source": {"kind": "url", "url": url}}),
        );
    }
    let mut start = json!({
        "type": "start",
        "vmId": vm_id,
        "profile": profile,
        "inputs": inputs,
        "overrides": overrides,
    });
    if let Some(e) = engine {
        start["engine"] = e.into();
    }
    Ok(json!({"id": 1, "command": start}))
}

fn main() -> ExitCode {
    let message = match start_message(std::env::args().skip(1)) {
        Ok(m) => m,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("plan: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!("== the start command, as the page posts it");
    println!(
        "{}",
        serde_json::to_string_pretty(&message).unwrap_or_default()
    );

    // The worker's side: decode and validate the untrusted message, then plan the boot.
    let planned = decode_request_json(&message.to_string())
        .map_err(|d| (d.request_id, d.error))
        .and_then(|request| match &request.command {
            Command::Start {
                profile,
                inputs,
                overrides,
                engine,
                ..
            } => plan(profile, inputs, overrides.as_ref(), *engine)
                .map_err(|e| (Some(request.id), e)),
            other => unreachable!("built a start command, decoded {}", other.type_name()),
        });
    let p = match planned {
        Ok(p) => p,
        Err((id, error)) => {
            let vm_id = message["command"]["vmId"].as_str();
            let event = Event::error(id, vm_id, &error);
            eprintln!("== the worker answers with an error event");
            eprintln!(
                "{}",
                serde_json::to_string_pretty(&event).unwrap_or_default()
            );
            return ExitCode::FAILURE;
        }
    };
    println!("== the plan");
    println!("engine: {}", p.engine.as_str());
    println!(
        "memory: {} MiB, graphics: {}, storage block size: {} bytes",
        p.memory_bytes >> 20,
        p.graphics,
        p.block_size
    );
    for d in &p.disks {
        let overlay = if d.read_only {
            "read-only, writes dropped"
        } else {
            "IndexedDB overlay"
        };
        println!(
            "{}: {} ({overlay} {}/{})",
            d.id,
            d.source.location(),
            message["command"]["vmId"].as_str().unwrap_or_default(),
            d.id
        );
    }
    if let Some(k) = &p.kernel {
        println!("kernel: {}", k.location());
    }
    if let Some(i) = &p.initrd {
        println!("initrd: {}", i.location());
    }
    if let Some(c) = &p.cmdline {
        println!("cmdline: {c}");
    }
    for w in &p.warnings {
        println!("warning: {w}");
    }
    if let Some(q) = &p.qemu {
        let program = match q.arch {
            qemuweb_config::Arch::Aarch64 => "qemu-system-aarch64",
            _ => "qemu-system-x86_64",
        };
        println!("{program} {}", q.args.join(" "));
        println!(
            "firmware (in {}): {}",
            q.firmware_dir,
            q.firmware.join(", ")
        );
        println!("disk paths: {}", q.disk_paths.join(", "));
    }
    ExitCode::SUCCESS
}
