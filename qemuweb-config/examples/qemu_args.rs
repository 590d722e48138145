//! Prints the QEMU command line for a profile and what to boot, natively or for the browser.
//!
//! ```sh
//! cargo run -p qemuweb-config --example qemu_args -- --list
//! cargo run -p qemuweb-config --example qemu_args -- [--profile ID] [--browser | --accel auto|kvm|hvf|tcg]
//!     [--memory MIB] [--kernel FILE [--initrd FILE] [--append CMDLINE]] [DISK_OR_URL]
//! ```
//!
//! The profile defaults to `linux-i386-pc-nographic`. Natively the accelerator defaults to
//! `auto`: KVM when this host offers it for the guest arch, else TCG. The command line is
//! printed shell-quoted on standard output, then the files QEMU opens and the warnings, as
//! `#` comments. Exit status: 0, 1 when the combination cannot run (the errors are printed
//! on standard error), 2 on usage errors.

use qemuweb_config::{
    build_qemu_args, default_profiles, profile_by_id, Accelerator, BrowserTarget, DiskInput,
    ImageSource, Issue, NativeTarget, Target, VmInputs, VmOverrides,
};
use std::process::ExitCode;

const USAGE: &str =
    "usage: qemu_args [--list] [--profile ID] [--browser | --accel auto|kvm|hvf|tcg] \
[--memory MIB] [--kernel FILE [--initrd FILE] [--append CMDLINE]] [DISK_OR_URL]";

/// What the command line asked for.
struct Request {
    profile: String,
    browser: bool,
    accel: Accelerator,
    inputs: VmInputs,
    overrides: VmOverrides,
}

/// A path or an `http(s)://` URL as an image source.
fn source(s: String) -> ImageSource {
    if s.starts_with("http://") || s.starts_with("https://") {
        ImageSource::url(s)
    } else {
        ImageSource::file(s)
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Request>, String> {
    let mut r = Request {
        profile: "linux-i386-pc-nographic".into(),
        browser: false,
        accel: Accelerator::Auto,
        inputs: VmInputs::default(),
        overrides: VmOverrides::default(),
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--list" => return Ok(None),
            "--profile" => r.profile = value()?,
            "--browser" => r.browser = true,
            "--accel" => {
                r.accel = match value()?.as_str() {
                    "auto" => Accelerator::Auto,
                    "kvm" => Accelerator::Kvm,
                    "hvf" => Accelerator::Hvf,
                    "tcg" => Accelerator::Tcg,
                    other => return Err(format!("unknown accelerator {other:?}")),
                }
            }
            "--memory" => {
                let v = value()?;
                let mib = v
                    .parse()
                    .map_err(|_| format!("--memory {v:?}: not a number of MiB"))?;
                r.overrides.memory_mib = Some(mib);
            }
            "--kernel" => r.inputs.kernel = Some(source(value()?)),
            "--initrd" => r.inputs.initrd = Some(source(value()?)),
            "--append" => r.inputs.kernel_cmdline = Some(value()?),
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if r.inputs.disk.is_some() => return Err(format!("a second disk {a:?}")),
            _ => {
                r.inputs.disk = Some(DiskInput {
                    source: source(a),
                    format: None, // inferred from the name, with a warning if it cannot be
                    read_only: false,
                })
            }
        }
    }
    Ok(Some(r))
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=,:@%+".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `code: message`, the code as serialized (`format-guessed`, ...).
fn issue_line(i: &Issue) -> String {
    let code = serde_json::to_value(i.code).map_or_else(
        |_| format!("{:?}", i.code),
        |v| v.as_str().unwrap_or_default().to_string(),
    );
    format!("{code}: {}", i.message)
}

fn main() -> ExitCode {
    let request = match parse(std::env::args().skip(1)) {
        Ok(Some(r)) => r,
        Ok(None) => {
            for p in default_profiles() {
                println!("{:32} {:8} {}", p.id, p.arch.as_str(), p.name);
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            if !e.is_empty() {
                eprintln!("qemu_args: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let profile = match profile_by_id(&request.profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("qemu_args: {e} (--list shows the profiles)");
            return ExitCode::from(2);
        }
    };
    let target = if request.browser {
        Target::Browser(BrowserTarget::qemu_wasm64())
    } else {
        let mut native = NativeTarget::detect();
        native.accelerator = request.accel;
        Target::Native(native)
    };
    let result = build_qemu_args(&profile, &request.inputs, Some(&request.overrides), &target);
    for w in &result.warnings {
        println!("# warning {}", issue_line(w));
    }
    if !result.is_ok() {
        for e in &result.errors {
            eprintln!("qemu_args: error {}", issue_line(e));
        }
        return ExitCode::FAILURE;
    }
    for f in &result.files_to_mount {
        println!("# {:?} {} at {}", f.role, f.source.location(), f.path);
    }
    let line: Vec<String> = std::iter::once(&result.binary)
        .chain(&result.args)
        .map(|a| shell_quote(a))
        .collect();
    println!("{}", line.join(" "));
    ExitCode::SUCCESS
}
