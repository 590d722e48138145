//! Headless mode: boots a disk image through `QemuClient` in headless Chromium and bridges the
//! guest's serial console to this process's standard input and output.
//!
//! ```text
//! cargo run -p qemuweb-runtime --example headless -- --profile linux-i386-pc-nographic \
//!     --disk x86-bios.qcow2 [--bios FILE] [--engine v86|qemu] [--qemu-dir DIR] [--timeout SECS]
//! ```
//!
//! With `--engine qemu` the QEMU module and its firmware come from `--qemu-dir DIR` (a
//! `qemuweb-wasm-build` output directory; default `$QEMUWEB_QEMU_DIR`).
//!
//! A thin command line over the `qemuweb-headless` crate, which serves everything the page
//! needs on 127.0.0.1, starts Chromium on a temporary profile, copies serial output to
//! stdout and stdin to the guest. It exits when stdin closes (after a final overlay sync;
//! status 0), when `--timeout` passes (124), on Ctrl-C (130), or when the page reports a
//! fatal error (1); usage errors exit 2. Chromium is killed and temporary files are removed
//! in every case.
//!
//! The browser profile is temporary unless `--user-data-dir DIR` is given: then it is kept,
//! with the port the runner served on, so the next run has the same origin and the guest's
//! disk writes (its IndexedDB overlays) are there again.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use qemuweb_headless::{
    qemu_dir_or_env, run, Console, Engine, HeadlessError, Outcome, RunnerOptions,
};

const USAGE: &str =
    "usage: headless --profile ID --disk PATH_OR_URL [--bios FILE] [--vga-bios FILE] \
[--engine v86|qemu] [--qemu-dir DIR] [--kernel PATH_OR_URL] [--initrd PATH_OR_URL] [--append CMDLINE] [--memory MIB] \
[--vm-id ID] [--timeout SECS] [--v86-dir DIR] [--bundle DIR] [--chromium PATH] \
[--user-data-dir DIR] [--verbose]";

fn parse_args() -> Result<RunnerOptions, String> {
    let mut profile = None;
    let mut qemu_dir = None;
    let mut a = RunnerOptions::new("");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--profile" => profile = Some(value()?),
            "--disk" => a.disk = Some(value()?),
            "--bios" => a.bios = Some(value()?.into()),
            "--vga-bios" => a.vga_bios = Some(value()?.into()),
            "--engine" => a.engine = value()?.parse().map_err(|e: HeadlessError| e.to_string())?,
            "--qemu-dir" => qemu_dir = Some(PathBuf::from(value()?)),
            "--kernel" => a.kernel = Some(value()?),
            "--initrd" => a.initrd = Some(value()?),
            "--append" => a.append = Some(value()?),
            "--memory" => {
                let v = value()?;
                a.memory_mib = Some(
                    v.parse()
                        .map_err(|_| format!("--memory {v}: not a number of MiB"))?,
                );
            }
            "--vm-id" => a.vm_id = Some(value()?),
            "--timeout" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--timeout {v}: not a number of seconds"))?;
                if !(secs > 0.0 && secs.is_finite()) {
                    return Err(format!(
                        "--timeout {v}: must be a positive number of seconds"
                    ));
                }
                a.timeout = Some(Duration::from_secs_f64(secs));
            }
            "--v86-dir" => a.v86_dir = Some(value()?.into()),
            "--bundle" => a.bundle = Some(value()?.into()),
            "--chromium" => a.chromium = Some(value()?.into()),
            "--user-data-dir" => a.user_data_dir = Some(value()?.into()),
            "--verbose" => a.verbose = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.profile = profile.ok_or("--profile is required")?;
    if a.engine == Engine::Qemu {
        let dir = qemu_dir_or_env(qemu_dir)
            .ok_or("--engine qemu needs --qemu-dir DIR (or QEMUWEB_QEMU_DIR): a qemuweb-wasm-build output directory (scripts/build-qemu)")?;
        a.use_qemu_dir(dir).map_err(|e| e.to_string())?;
    } else if qemu_dir.is_some() {
        return Err("--qemu-dir goes with --engine qemu".into());
    }
    if a.disk.is_none() && a.kernel.is_none() {
        return Err("give --disk or --kernel".into());
    }
    Ok(a)
}

pub fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(m) if m.is_empty() => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        Err(m) => {
            eprintln!("headless: {m}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts, Console::stdio()) {
        Ok(Outcome::InputClosed) => ExitCode::SUCCESS,
        Ok(outcome) => {
            eprintln!("headless: {outcome}");
            ExitCode::from(outcome.exit_code())
        }
        Err(err) => {
            eprintln!("headless: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
