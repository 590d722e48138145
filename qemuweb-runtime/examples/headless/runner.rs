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

use clap::Parser;
use qemuweb_headless::{qemu_dir_or_env, run, Console, Engine, Outcome, RunnerOptions};

/// Boots a disk image (or a kernel) through QemuClient in headless Chromium, with the
/// guest's serial console on this terminal.
#[derive(Debug, Parser)]
#[command(name = "headless")]
struct Args {
    /// The VM profile id.
    #[arg(long)]
    profile: String,
    /// The disk image: a file or an http(s) URL.
    #[arg(long, required_unless_present = "kernel")]
    disk: Option<String>,
    /// The BIOS (default Debian's SeaBIOS).
    #[arg(long)]
    bios: Option<PathBuf>,
    /// The VGA BIOS.
    #[arg(long)]
    vga_bios: Option<PathBuf>,
    /// The engine: v86 or qemu.
    #[arg(long, default_value = "v86")]
    engine: Engine,
    /// With --engine qemu: the QEMU-in-wasm build directory (default $QEMUWEB_QEMU_DIR).
    #[arg(long)]
    qemu_dir: Option<PathBuf>,
    /// A kernel to boot directly (a file or URL).
    #[arg(long)]
    kernel: Option<String>,
    /// An initial ramdisk for the kernel.
    #[arg(long)]
    initrd: Option<String>,
    /// The kernel command line.
    #[arg(long)]
    append: Option<String>,
    /// Guest RAM in MiB.
    #[arg(long)]
    memory: Option<u32>,
    /// The VM id (names its IndexedDB overlays).
    #[arg(long)]
    vm_id: Option<String>,
    /// Stop after this many seconds (exit status 124).
    #[arg(long, value_parser = positive_seconds)]
    timeout: Option<Duration>,
    /// A directory with libv86.mjs and v86.wasm.
    #[arg(long)]
    v86_dir: Option<PathBuf>,
    /// The runtime's web bundle directory.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// The Chromium binary.
    #[arg(long)]
    chromium: Option<PathBuf>,
    /// Keep the browser profile (and the guest's disk writes) in DIR across runs.
    #[arg(long)]
    user_data_dir: Option<PathBuf>,
    /// Report the page's progress and Chromium's output on stderr.
    #[arg(long)]
    verbose: bool,
    /// Serve the control API on this loopback address (127.0.0.1:PORT); its token is
    /// printed on stderr, and the run ends with its `stop` command.
    #[arg(long, value_name = "ADDR")]
    control: Option<std::net::SocketAddr>,
}

fn positive_seconds(v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("{v}: not a positive number of seconds")),
    }
}

fn options(args: Args) -> Result<RunnerOptions, String> {
    let mut a = RunnerOptions::new(args.profile);
    a.disk = args.disk;
    a.bios = args.bios;
    a.vga_bios = args.vga_bios;
    a.engine = args.engine;
    a.kernel = args.kernel;
    a.initrd = args.initrd;
    a.append = args.append;
    a.memory_mib = args.memory;
    a.vm_id = args.vm_id;
    a.timeout = args.timeout;
    a.v86_dir = args.v86_dir;
    a.bundle = args.bundle;
    a.chromium = args.chromium;
    a.user_data_dir = args.user_data_dir;
    a.verbose = args.verbose;
    a.control = args.control;
    if a.engine == Engine::Qemu {
        let dir = qemu_dir_or_env(args.qemu_dir)
            .ok_or("--engine qemu needs --qemu-dir DIR (or QEMUWEB_QEMU_DIR): a qemuweb-wasm-build output directory (scripts/build-qemu)")?;
        a.use_qemu_dir(dir).map_err(|e| e.to_string())?;
    } else if args.qemu_dir.is_some() {
        return Err("--qemu-dir goes with --engine qemu".into());
    }
    Ok(a)
}

pub fn main() -> ExitCode {
    let opts = match options(Args::parse()) {
        Ok(opts) => opts,
        Err(m) => {
            eprintln!("headless: {m}");
            return ExitCode::from(2);
        }
    };
    match run(&opts, Console::stdio()) {
        Ok(Outcome::InputClosed | Outcome::Stopped) => ExitCode::SUCCESS,
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
