//! `qemuweb emulator`: a long-running local VM managed like a service.
//!
//! A state directory holds everything about one VM: `emulator.json` (the base image
//! and its format), `disk.qcow2` (a qcow2 overlay over the base, so the base never
//! changes and data persists across stop and start), `qemu.pid`, the QMP socket
//! `qmp.sock` and `serial.log`. QEMU runs daemonized with the arguments
//! `qemuweb-config` builds for the host, with the serial port in `serial.log` and
//! user-network port forwards bound to `127.0.0.1` (its `serialFile` and `portForwards`
//! overrides). `stop` asks the guest to power down over QMP, then quits QEMU;
//! `reset` replaces the overlay with an empty one; `status` reads QMP. A PID file whose
//! process is gone (or is not QEMU) is stale and is removed.
//!
//! The base image is vetted at every start ([`crate::gate`]): a backing or data file it
//! names is refused unless [`StartOptions::backing_dir`] allows it, and QEMU is given the
//! overlay and the vetted chain below it with every file and format stated. The overlay
//! is made without opening the base (`qemu-img create -u`, the size given).

use crate::boot::AccelArg;
use crate::error::{CliError, Result};
use crate::gate::{vet_image, VettedImage};
use crate::run_tool;
use qemuweb_config::{
    build_qemu_args, overlay_create_args, profile_by_id, DiskFormat, DiskInput, HostCaps,
    ImageSource, NativeTarget, PortForward, Target, VmInputs, VmOverrides,
};
use qemuweb_storage::format::ImageFormat;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How to start the emulator.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The base image; `None` uses the one recorded by an earlier start.
    pub image: Option<PathBuf>,
    /// The VM profile id.
    pub profile: String,
    /// The accelerator.
    pub accel: AccelArg,
    /// vCPUs, overriding the profile.
    pub cpus: Option<u32>,
    /// Guest RAM in MiB, overriding the profile.
    pub memory_mib: Option<u32>,
    /// Host ports forwarded to the guest.
    pub forwards: Vec<PortForward>,
    /// A kernel to boot directly (`-kernel`) instead of the disk's boot loader.
    pub kernel: Option<PathBuf>,
    /// An initial ramdisk for the kernel.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub append: Option<String>,
    /// The directory backing and data files the base image names may come from (plain
    /// relative names, resolved inside it); `None` keeps the one recorded with the base
    /// image, or refuses them all.
    pub backing_dir: Option<PathBuf>,
}

/// What `emulator.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    base: PathBuf,
    format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backing_dir: Option<PathBuf>,
}

impl Record {
    /// The base image, vetted again (it may have changed since it was recorded).
    fn vet(&self) -> Result<VettedImage> {
        let format = ImageFormat::from_name(&self.format).ok_or_else(|| {
            CliError::InvalidArgument(format!("unknown base image format {:?}", self.format))
        })?;
        vet_image(&self.base, Some(format), self.backing_dir.as_deref())
    }
}

/// One emulator's state directory.
#[derive(Debug, Clone)]
pub struct Emulator {
    dir: PathBuf,
}

/// Whether the emulator runs, as [`Emulator::status`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not running; `stale_pid` when a PID file of a dead process was removed.
    Stopped {
        /// A stale PID file was found (and removed).
        stale_pid: Option<u32>,
    },
    /// Running.
    Running {
        /// QEMU's process id.
        pid: u32,
        /// The VM state QMP reports (`running`, `paused`, ...).
        vm_status: String,
        /// QMP's `info usernet`: the user network's connections and forwards.
        usernet: String,
    },
}

impl Emulator {
    /// The emulator whose state lives in `dir` (made absolute: a daemonized QEMU
    /// changes its working directory to `/`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Emulator {
            dir: std::path::absolute(&dir).unwrap_or(dir),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The overlay disk the guest writes to.
    pub fn overlay(&self) -> PathBuf {
        self.path("disk.qcow2")
    }

    /// The guest's serial console output.
    pub fn serial_log(&self) -> PathBuf {
        self.path("serial.log")
    }

    /// The QMP socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.path("qmp.sock")
    }

    fn pid_file(&self) -> PathBuf {
        self.path("qemu.pid")
    }

    fn record(&self) -> Result<Option<Record>> {
        let p = self.path("emulator.json");
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CliError::InvalidArgument(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CliError::io(p, e)),
        }
    }

    /// The running QEMU's pid; a stale PID file is removed and reported in `stale`.
    fn running_pid(&self, stale: &mut Option<u32>) -> Result<Option<u32>> {
        let p = self.pid_file();
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CliError::io(p, e)),
        };
        let pid = text.trim().parse::<u32>().ok();
        if let Some(pid) = pid.filter(|&pid| is_qemu(pid)) {
            return Ok(Some(pid));
        }
        *stale = Some(pid.unwrap_or(0));
        std::fs::remove_file(&p).map_err(|e| CliError::io(&p, e))?;
        let _ = std::fs::remove_file(self.qmp_socket());
        Ok(None)
    }

    /// Starts QEMU in the background. The overlay is created on the first start (or
    /// after [`reset`](Self::reset)) and kept otherwise.
    ///
    /// # Errors
    ///
    /// [`CliError::InvalidArgument`] when it already runs or no base image is known;
    /// [`CliError::Storage`] when the base image is refused ([`vet_image`]);
    /// [`CliError::Config`] when the configuration is rejected; [`CliError::Tool`] when
    /// `qemu-img` or QEMU fail.
    pub fn start(&self, opts: &StartOptions) -> Result<u32> {
        std::fs::create_dir_all(&self.dir).map_err(|e| CliError::io(&self.dir, e))?;
        let mut stale = None;
        if let Some(pid) = self.running_pid(&mut stale)? {
            return Err(CliError::InvalidArgument(format!(
                "the emulator in {} is already running (pid {pid})",
                self.dir.display()
            )));
        }
        let record = match (&opts.image, self.record()?) {
            (Some(image), old) => {
                let base = image.canonicalize().map_err(|e| CliError::io(image, e))?;
                if old.as_ref().is_some_and(|r| r.base != base) && self.overlay().exists() {
                    return Err(CliError::InvalidArgument(format!(
                        "the emulator in {} has an overlay over {}; run `reset` to change the base image",
                        self.dir.display(),
                        old.map(|r| r.base.display().to_string()).unwrap_or_default()
                    )));
                }
                let vetted = vet_image(&base, None, opts.backing_dir.as_deref())?;
                Record {
                    format: vetted.format().name().to_string(),
                    base,
                    backing_dir: opts.backing_dir.clone(),
                }
            }
            (None, Some(mut r)) => {
                if opts.backing_dir.is_some() {
                    r.backing_dir = opts.backing_dir.clone();
                }
                r
            }
            (None, None) => {
                return Err(CliError::InvalidArgument(format!(
                    "no base image for the emulator in {}: pass --image",
                    self.dir.display()
                )))
            }
        };
        let vetted = record.vet()?;
        let p = self.path("emulator.json");
        let json = serde_json::to_vec_pretty(&record).expect("serializable");
        std::fs::write(&p, json).map_err(|e| CliError::io(p, e))?;
        let format = disk_format(vetted.format());
        if !self.overlay().exists() {
            self.create_overlay(&record, &vetted)?;
        }

        let profile = profile_by_id(&opts.profile)?;
        let base = record.base.to_string_lossy().into_owned();
        let file = |p: &PathBuf| -> Result<ImageSource> {
            let abs = p.canonicalize().map_err(|e| CliError::io(p, e))?;
            Ok(ImageSource::file(abs.to_string_lossy()))
        };
        let inputs = VmInputs {
            disk: Some(DiskInput::new(ImageSource::file(base), format)),
            kernel: opts.kernel.as_ref().map(file).transpose()?,
            initrd: opts.initrd.as_ref().map(file).transpose()?,
            kernel_cmdline: opts.append.clone(),
            ..VmInputs::default()
        };
        let overrides = VmOverrides {
            memory_mib: opts.memory_mib,
            smp: opts.cpus,
            port_forwards: opts.forwards.clone(),
            serial_file: Some(self.serial_log().to_string_lossy().into_owned()),
            ..VmOverrides::default()
        };
        let mut target = NativeTarget::new(opts.accel.into(), HostCaps::detect());
        // The overlay with the vetted chain as its backing node, not the name it stores.
        target.disk_overlay = Some(vetted.overlay_filename(&self.overlay()));
        let plan = build_qemu_args(&profile, &inputs, Some(&overrides), &Target::Native(target))
            .into_result()?;
        for w in &plan.warnings {
            eprintln!("qemuweb: warning: {}", w.message);
        }
        let args = daemon_args(plan.args, &self.qmp_socket(), &self.pid_file());
        let _ = std::fs::remove_file(self.qmp_socket());
        // With -daemonize QEMU returns once the VM is set up, after writing the PID file.
        let mut cmd = Command::new(&plan.binary);
        cmd.args(&args).stdin(Stdio::null());
        run_tool(&mut cmd, &plan.binary, "qemu-system-x86 or qemu-system-arm")?;
        let mut stale = None;
        let pid = self
            .running_pid(&mut stale)?
            .ok_or_else(|| CliError::Tool {
                program: plan.binary.clone(),
                message: "QEMU exited without leaving a running VM".into(),
            })?;
        // QMP answers once QEMU runs: check before reporting success, and leave no
        // QEMU behind when it does not.
        let checked = Qmp::connect(&self.qmp_socket(), Duration::from_secs(10))
            .and_then(|mut qmp| qmp.execute("query-status"));
        if let Err(e) = checked {
            // SAFETY: a signal to the QEMU this call just started (verified by is_qemu).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            wait_exit(pid, Duration::from_secs(5));
            let _ = self.cleanup();
            return Err(e);
        }
        Ok(pid)
    }

    fn create_overlay(&self, record: &Record, base: &VettedImage) -> Result<()> {
        let overlay = self.overlay();
        let mut args = overlay_create_args(
            &record.base.to_string_lossy(),
            disk_format(base.format()),
            &overlay.to_string_lossy(),
        );
        // `-u` and the size: qemu-img does not open the base (nor anything it names).
        args.insert(1, "-u".into());
        args.push(
            base.virtual_size()
                .div_ceil(512)
                .saturating_mul(512)
                .to_string(),
        );
        run_tool(
            Command::new("qemu-img").args(&args),
            "qemu-img",
            "qemu-utils",
        )
    }

    /// Stops QEMU: `system_powerdown` over QMP and up to `grace` for the guest to power
    /// off, then `quit`, then `SIGKILL`. Returns `false` when it was not running.
    ///
    /// # Errors
    ///
    /// [`CliError::Io`] for state files; [`CliError::Tool`] when QEMU does not go away.
    pub fn stop(&self, grace: Duration) -> Result<bool> {
        let mut stale = None;
        let Some(pid) = self.running_pid(&mut stale)? else {
            return Ok(false);
        };
        if let Ok(mut qmp) = Qmp::connect(&self.qmp_socket(), Duration::from_secs(2)) {
            if !grace.is_zero() && qmp.execute("system_powerdown").is_ok() && wait_exit(pid, grace)
            {
                return self.cleanup().map(|_| true);
            }
            let _ = qmp.execute("quit");
        }
        if !wait_exit(pid, Duration::from_secs(5)) {
            // SAFETY: a signal to a process verified to be our QEMU.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            if !wait_exit(pid, Duration::from_secs(5)) {
                return Err(CliError::Tool {
                    program: "qemu".into(),
                    message: format!("pid {pid} did not exit"),
                });
            }
        }
        self.cleanup().map(|_| true)
    }

    fn cleanup(&self) -> Result<()> {
        for p in [self.pid_file(), self.qmp_socket()] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CliError::io(p, e)),
            }
        }
        Ok(())
    }

    /// Replaces the overlay with an empty one: the disk is the base image again.
    ///
    /// # Errors
    ///
    /// [`CliError::InvalidArgument`] while running or when no base image is known.
    pub fn reset(&self) -> Result<()> {
        let mut stale = None;
        if let Some(pid) = self.running_pid(&mut stale)? {
            return Err(CliError::InvalidArgument(format!(
                "the emulator is running (pid {pid}); stop it first"
            )));
        }
        let record = self.record()?.ok_or_else(|| {
            CliError::InvalidArgument(format!("no emulator in {}", self.dir.display()))
        })?;
        let overlay = self.overlay();
        match std::fs::remove_file(&overlay) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CliError::io(overlay, e)),
        }
        let vetted = record.vet()?;
        self.create_overlay(&record, &vetted)
    }

    /// Whether it runs, and what QMP says.
    ///
    /// # Errors
    ///
    /// [`CliError::Io`] for state files; [`CliError::Tool`] when QMP fails.
    pub fn status(&self) -> Result<Status> {
        let mut stale = None;
        let Some(pid) = self.running_pid(&mut stale)? else {
            return Ok(Status::Stopped { stale_pid: stale });
        };
        let mut qmp = Qmp::connect(&self.qmp_socket(), Duration::from_secs(5))?;
        let st = qmp.execute("query-status")?;
        let vm_status = st["status"].as_str().unwrap_or("unknown").to_string();
        let usernet = qmp.hmp("info usernet")?;
        Ok(Status::Running {
            pid,
            vm_status,
            usernet,
        })
    }
}

/// Turns the builder's foreground arguments into a daemon's: QMP socket, PID file,
/// `-daemonize` (the serial log and port forwards are in the builder's arguments already).
fn daemon_args(mut args: Vec<String>, qmp: &Path, pid_file: &Path) -> Vec<String> {
    args.extend([
        "-qmp".to_string(),
        format!("unix:{},server=on,wait=off", qmp.display()),
        "-pidfile".to_string(),
        pid_file.display().to_string(),
        "-daemonize".to_string(),
    ]);
    args
}

fn disk_format(format: ImageFormat) -> DiskFormat {
    match format {
        ImageFormat::Raw => DiskFormat::Raw,
        ImageFormat::Qcow2 => DiskFormat::Qcow2,
    }
}

/// Whether `pid` is alive and a QEMU system emulator.
fn is_qemu(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let exe = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false);
            !zombie && String::from_utf8_lossy(exe).contains("qemu-system")
        }
        // Without /proc (macOS), fall back to whether the process exists.
        // SAFETY: signal 0 only checks for existence.
        Err(_) => !Path::new("/proc/self").exists() && unsafe { libc::kill(pid as i32, 0) } == 0,
    }
}

fn wait_exit(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while is_qemu(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A QMP connection, after the capabilities handshake.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(socket: &Path, limit: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + limit;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(CliError::io(socket, e)),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| CliError::io(socket, e))?;
        let writer = stream.try_clone().map_err(|e| CliError::io(socket, e))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        qmp.read_message()?; // The greeting.
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| CliError::io("QMP", e))?;
        if n == 0 {
            return Err(CliError::Tool {
                program: "qemu".into(),
                message: "QMP connection closed".into(),
            });
        }
        serde_json::from_str(&line).map_err(|e| CliError::Tool {
            program: "qemu".into(),
            message: format!("bad QMP message: {e}"),
        })
    }

    fn send(&mut self, msg: serde_json::Value) -> Result<serde_json::Value> {
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| CliError::io("QMP", e))?;
        loop {
            let reply = self.read_message()?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(err) = reply.get("error") {
                return Err(CliError::Tool {
                    program: "qemu".into(),
                    message: format!("QMP {}: {}", msg["execute"], err["desc"]),
                });
            }
            return Ok(reply["return"].clone());
        }
    }

    fn execute(&mut self, command: &str) -> Result<serde_json::Value> {
        self.send(serde_json::json!({ "execute": command }))
    }

    fn hmp(&mut self, command: &str) -> Result<String> {
        let r = self.send(serde_json::json!({
            "execute": "human-monitor-command",
            "arguments": { "command-line": command },
        }))?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }
}
