//! `qemuweb boot`: boot an image with QEMU on the host, its serial console on the
//! terminal.
//!
//! The arguments come from [`qemuweb_config::build_qemu_args`] for a
//! [`NativeTarget`]: KVM, HVF or TCG as the host allows (or as `--accel` says). The
//! serial port is QEMU's standard input and output, so the guest's console is this
//! program's. Ctrl-C (`SIGINT` to the process group) stops QEMU cleanly and this program
//! exits with QEMU's status; QEMU dies with this program (Linux: `PR_SET_PDEATHSIG`) and
//! is killed when the time limit passes.
//!
//! The image is vetted first ([`crate::gate`]): QEMU gets its chain with every file and
//! format stated, and a backing or data file it names is refused unless
//! [`BootOptions::backing_dir`] allows it.
//!
//! With `--browser` ([`boot_in_browser`]) the same image boots instead through
//! `QemuClient` in headless Chromium (the `qemuweb-headless` crate), its serial console
//! on the terminal too.

use crate::error::{CliError, Result};
use qemuweb_config::{
    build_qemu_args, profile_by_id, Accelerator, DiskFormat, DiskInput, HostCaps, ImageSource,
    NativeTarget, QemuArgsResult, Target, VmInputs, VmOverrides,
};
use qemuweb_storage::format::ImageFormat;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The accelerators `--accel` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelArg {
    /// KVM or HVF when usable for the guest arch, else TCG.
    Auto,
    /// Linux KVM.
    Kvm,
    /// macOS Hypervisor.framework.
    Hvf,
    /// Software emulation.
    Tcg,
}

impl From<AccelArg> for Accelerator {
    fn from(a: AccelArg) -> Self {
        match a {
            AccelArg::Auto => Accelerator::Auto,
            AccelArg::Kvm => Accelerator::Kvm,
            AccelArg::Hvf => Accelerator::Hvf,
            AccelArg::Tcg => Accelerator::Tcg,
        }
    }
}

/// Disk formats `--format` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// A raw image.
    Raw,
    /// A qcow2 image.
    Qcow2,
}

/// The browser engines `--engine` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineArg {
    /// v86 (32-bit x86 guests).
    #[default]
    V86,
    /// QEMU compiled to wasm.
    Qemu,
}

/// Settings of `boot --browser` that native boots do not have.
#[derive(Debug, Clone, Default)]
pub struct BrowserBoot {
    /// The browser engine.
    pub engine: EngineArg,
    /// The BIOS (default Debian's SeaBIOS; with the QEMU engine the QEMU directory's).
    pub bios: Option<PathBuf>,
    /// The QEMU engine's directory (a `qemuweb-wasm-build` output: `qemu-build.json`, the
    /// modules and firmware); default `$QEMUWEB_QEMU_DIR`.
    pub qemu_dir: Option<PathBuf>,
    /// Report the page's progress and Chromium's output on stderr.
    pub verbose: bool,
    /// v86's directory (`libv86.mjs`, `v86.wasm`); default the data directory's, fetched
    /// from the npm registry on first use (`qemuweb assets fetch`).
    pub v86_dir: Option<PathBuf>,
    /// A runtime web bundle directory instead of the one built into this binary.
    pub bundle: Option<PathBuf>,
    /// When the run ends (stdin closes, or the time limit), save the VM's whole state
    /// beside the image (`IMAGE.boot-state/`, see [`crate::boot_state`]); the next boot
    /// resumes it.
    pub save: bool,
    /// Boot cold: ignore a state saved beside the image (or published with it, see
    /// [`crate::boot_state::state_to_resume`]).
    pub cold: bool,
    /// Serve the control API on this loopback address (see
    /// [`RunnerOptions::control`](qemuweb_headless::RunnerOptions::control)).
    pub control: Option<std::net::SocketAddr>,
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The VM profile id (see `qemuweb_config::default_profiles`).
    pub profile: String,
    /// The disk image; may be `None` when a kernel is given.
    pub image: Option<PathBuf>,
    /// A kernel for direct boot (`-kernel`), e.g. for `virt` machines without firmware.
    pub kernel: Option<PathBuf>,
    /// An initial ramdisk (`-initrd`); needs a kernel.
    pub initrd: Option<PathBuf>,
    /// The kernel command line (`-append`); needs a kernel.
    pub append: Option<String>,
    /// The image format; `None` goes by its magic (read by our own reader), and QEMU is
    /// told the format either way.
    pub format: Option<FormatArg>,
    /// The directory backing and data files the image names may come from (plain relative
    /// names, resolved inside it); `None` refuses them all. Native boots only.
    pub backing_dir: Option<PathBuf>,
    /// The accelerator.
    pub accel: AccelArg,
    /// Guest RAM in MiB, overriding the profile.
    pub memory_mib: Option<u32>,
    /// vCPUs, overriding the profile.
    pub smp: Option<u32>,
    /// Discard the guest's disk writes (QEMU `snapshot=on`).
    pub snapshot: bool,
    /// Stop the VM after this long.
    pub timeout: Option<Duration>,
}

/// The QEMU program and arguments for `opts` on this host.
///
/// # Errors
///
/// [`CliError::Config`] for an unknown profile or a configuration the builder rejects
/// (e.g. KVM requested where there is none, or nothing to boot);
/// [`CliError::InvalidArgument`] for a URL; [`CliError::Io`] for a missing file;
/// [`CliError::Storage`] for an image the gate refuses
/// ([`vet_image`](crate::gate::vet_image)).
pub fn plan(opts: &BootOptions) -> Result<QemuArgsResult> {
    let local = |path: &PathBuf| -> Result<String> {
        let location = path.to_string_lossy();
        if location.starts_with("http://") || location.starts_with("https://") {
            return Err(CliError::InvalidArgument(format!(
                "native boot needs local files, not a URL ({location})"
            )));
        }
        if !path.is_file() {
            return Err(CliError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        Ok(location.into_owned())
    };
    let profile = profile_by_id(&opts.profile)?;
    let disk = match &opts.image {
        Some(image) => {
            local(image)?;
            let stated = opts.format.map(|f| match f {
                FormatArg::Raw => ImageFormat::Raw,
                FormatArg::Qcow2 => ImageFormat::Qcow2,
            });
            let vetted = crate::gate::vet_image(image, stated, opts.backing_dir.as_deref())?;
            let format = match vetted.format() {
                ImageFormat::Raw => DiskFormat::Raw,
                ImageFormat::Qcow2 => DiskFormat::Qcow2,
            };
            Some(DiskInput::new(
                ImageSource::file(vetted.qemu_filename()),
                format,
            ))
        }
        None => None,
    };
    let inputs = VmInputs {
        disk,
        kernel: opts
            .kernel
            .as_ref()
            .map(local)
            .transpose()?
            .map(ImageSource::file),
        initrd: opts
            .initrd
            .as_ref()
            .map(local)
            .transpose()?
            .map(ImageSource::file),
        kernel_cmdline: opts.append.clone(),
        ..VmInputs::default()
    };
    let mut overrides = VmOverrides {
        memory_mib: opts.memory_mib,
        smp: opts.smp,
        ..VmOverrides::default()
    };
    if opts.snapshot {
        overrides.extra_args.push("-snapshot".into());
    }
    let target = Target::Native(NativeTarget::new(opts.accel.into(), HostCaps::detect()));
    Ok(build_qemu_args(&profile, &inputs, Some(&overrides), &target).into_result()?)
}

/// Kills and reaps a child process when dropped.
#[derive(Debug)]
pub(crate) struct ChildGuard(pub(crate) Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Makes the child get SIGKILL when this process dies, so QEMU never outlives it, and
/// gives it the default `SIGINT` disposition even while this process ignores `SIGINT`.
#[cfg(target_os = "linux")]
pub(crate) fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (signal, prctl, getppid, _exit).
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn die_with_parent(_cmd: &mut Command) {}

/// Ignores `SIGINT` in this process while alive, restoring the previous disposition
/// when dropped: Ctrl-C on the terminal reaches QEMU (same process group), which shuts
/// down cleanly and restores the terminal, and this program then reports its status.
struct IgnoreInterrupt(libc::sighandler_t);

impl IgnoreInterrupt {
    fn new() -> Self {
        // SAFETY: installing SIG_IGN has no handler code to be unsafe.
        IgnoreInterrupt(unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) })
    }
}

impl Drop for IgnoreInterrupt {
    fn drop(&mut self) {
        // SAFETY: puts back the disposition that was there before.
        unsafe {
            libc::signal(libc::SIGINT, self.0);
        }
    }
}

/// Runs QEMU for `opts` with the serial console on this process's stdin and stdout;
/// messages go to stderr. Returns QEMU's exit status.
///
/// # Errors
///
/// Those of [`plan`]; [`CliError::Tool`] when QEMU cannot be started;
/// [`CliError::Timeout`] when the time limit passed (QEMU is killed).
pub fn boot(opts: &BootOptions) -> Result<ExitStatus> {
    let plan = plan(opts)?;
    for w in &plan.warnings {
        eprintln!("qemuweb: warning: {}", w.message);
    }
    let mut cmd = Command::new(&plan.binary);
    cmd.args(&plan.args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    let _interrupt = IgnoreInterrupt::new();
    let child = cmd.spawn().map_err(|e| CliError::Tool {
        program: plan.binary.clone(),
        message: format!("cannot start it (Debian packages qemu-system-x86, qemu-system-arm): {e}"),
    })?;
    // One write, so readers never see half the line.
    let line = format!(
        "qemuweb: started {} (pid {}): {}\n",
        plan.binary,
        child.id(),
        plan.args.join(" ")
    );
    eprint!("{line}");
    let mut guard = ChildGuard(Some(child));
    let started = Instant::now();
    loop {
        let child = guard.0.as_mut().expect("child present until reaped");
        match child.try_wait() {
            Ok(Some(status)) => {
                guard.0 = None;
                return Ok(status);
            }
            Ok(None) => {}
            Err(e) => return Err(CliError::io(&plan.binary, e)),
        }
        if let Some(limit) = opts.timeout {
            if started.elapsed() >= limit {
                drop(guard);
                return Err(CliError::Timeout {
                    seconds: limit.as_secs(),
                });
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The runner's options for booting `opts` in headless Chromium.
///
/// ```
/// use qemuweb_cli::boot::{browser_options, AccelArg, BootOptions, BrowserBoot};
/// let opts = BootOptions {
///     profile: "linux-i386-pc-nographic".into(),
///     image: Some("https://example.com/disk.qcow2".into()),
///     kernel: None,
///     initrd: None,
///     append: None,
///     format: None,
///     backing_dir: None,
///     accel: AccelArg::Auto,
///     memory_mib: Some(64),
///     smp: None,
///     snapshot: false,
///     timeout: None,
/// };
/// let runner = browser_options(&opts, &BrowserBoot::default()).unwrap();
/// assert_eq!(runner.disk.as_deref(), Some("https://example.com/disk.qcow2"));
/// assert_eq!(runner.memory_mib, Some(64));
/// ```
///
/// # Errors
///
/// [`CliError::InvalidArgument`] for settings only a native boot has (`--accel` other
/// than `auto`, `--smp`, `--backing-dir`), for `--qemu-dir` without `--engine qemu`, and for the QEMU
/// engine without a QEMU directory (`--qemu-dir` or `$QEMUWEB_QEMU_DIR`) holding its
/// module, wasm and BIOS.
pub fn browser_options(
    opts: &BootOptions,
    browser: &BrowserBoot,
) -> Result<qemuweb_headless::RunnerOptions> {
    if opts.accel != AccelArg::Auto {
        return Err(CliError::InvalidArgument(
            "--accel is for native boots; the browser runs the guest on its engine".into(),
        ));
    }
    if opts.smp.is_some() {
        return Err(CliError::InvalidArgument(
            "--smp is for native boots; the browser engines run one vCPU".into(),
        ));
    }
    if opts.backing_dir.is_some() {
        return Err(CliError::InvalidArgument(
            "--backing-dir is for native boots; the browser runtime refuses every file an \
             image names"
                .into(),
        ));
    }
    let location = |p: &PathBuf| p.to_string_lossy().into_owned();
    let mut runner = qemuweb_headless::RunnerOptions::new(opts.profile.clone());
    runner.bios = browser.bios.clone();
    match browser.engine {
        EngineArg::V86 if browser.qemu_dir.is_some() => {
            return Err(CliError::InvalidArgument(
                "--qemu-dir goes with --engine qemu".into(),
            ))
        }
        EngineArg::V86 => runner.engine = qemuweb_headless::Engine::V86,
        EngineArg::Qemu if browser.v86_dir.is_some() => {
            return Err(CliError::InvalidArgument(
                "--v86-dir goes with --engine v86".into(),
            ))
        }
        EngineArg::Qemu => {
            let dir =
                qemuweb_headless::qemu_dir_or_env(browser.qemu_dir.clone()).ok_or_else(|| {
                    CliError::InvalidArgument(
                        "--engine qemu needs --qemu-dir DIR (or QEMUWEB_QEMU_DIR): a \
                     qemuweb-wasm-build output directory (scripts/build-qemu)"
                            .into(),
                    )
                })?;
            runner
                .use_qemu_dir(dir)
                .map_err(|e| CliError::InvalidArgument(e.to_string()))?;
        }
    }
    runner.disk = opts.image.as_ref().map(location);
    runner.kernel = opts.kernel.as_ref().map(location);
    runner.initrd = opts.initrd.as_ref().map(location);
    runner.append = opts.append.clone();
    runner.memory_mib = opts.memory_mib;
    runner.timeout = opts.timeout;
    runner.verbose = browser.verbose;
    runner.v86_dir = browser.v86_dir.clone();
    runner.bundle = browser.bundle.clone();
    runner.control = browser.control;
    Ok(runner)
}

/// Boots `opts` through `QemuClient` in headless Chromium with the serial console on this
/// process's stdin and stdout, until stdin ends (the VM is stopped with a final sync), the
/// time limit, Ctrl-C, or a fatal error in the page. The browser profile is temporary, so
/// the guest's disk writes are discarded as with `--snapshot`.
///
/// # Errors
///
/// Those of [`browser_options`]; [`CliError::InvalidArgument`] for unusable options (an
/// unknown profile, a missing file); [`CliError::Browser`] when the runtime refuses the VM
/// or Chromium cannot start; [`CliError::Timeout`] when the time limit passed.
pub fn boot_in_browser(
    opts: &BootOptions,
    browser: &BrowserBoot,
) -> Result<qemuweb_headless::Outcome> {
    let mut runner = browser_options(opts, browser)?;
    if runner.engine == qemuweb_headless::Engine::V86 && runner.v86_dir.is_none() {
        runner.v86_dir = Some(qemuweb_headless::assets::ensure_v86()?);
    }
    let local = opts
        .image
        .as_ref()
        .filter(|p| !p.to_string_lossy().contains("://"));
    let state_dir = local.map(|p| crate::boot_state::state_dir_for(p));
    if browser.save && state_dir.is_none() {
        return Err(CliError::InvalidArgument(
            "--save keeps the state beside the image: it needs a local disk image".into(),
        ));
    }
    let resume = local
        .filter(|_| !browser.cold)
        .and_then(|image| Some((image, crate::boot_state::state_to_resume(image)?)));
    if let Some((image, manifest)) = resume {
        let dir = manifest.parent().unwrap_or(std::path::Path::new("."));
        match crate::boot_state::check_state(&manifest, image) {
            Ok(_) => {
                eprintln!(
                    "qemuweb: resuming the state saved in {} (--cold boots without it)",
                    dir.display()
                );
                runner.resume_published = Some(manifest);
            }
            Err(e) => eprintln!(
                "qemuweb: the state saved in {} cannot be resumed ({e}); booting cold",
                dir.display()
            ),
        }
    }
    let saving = match (&state_dir, browser.save) {
        (Some(dir), true) => {
            let file = tempfile::Builder::new()
                .prefix(".qemuweb-state-")
                .tempfile_in(dir.parent().unwrap_or(std::path::Path::new(".")))
                .map_err(|e| CliError::io(dir, e))?
                .into_temp_path();
            runner.save_snapshot = Some(file.to_path_buf());
            Some((dir.clone(), file))
        }
        _ => None,
    };
    let outcome = match qemuweb_headless::run(&runner, qemuweb_headless::Console::stdio()) {
        Ok(outcome) => outcome,
        Err(e) if e.kind() == qemuweb_headless::ErrorKind::InvalidOptions => {
            return Err(CliError::InvalidArgument(e.to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    if let (Some((dir, file)), Some(image)) = (&saving, local) {
        if matches!(
            outcome,
            qemuweb_headless::Outcome::InputClosed | qemuweb_headless::Outcome::Timeout
        ) {
            let state = crate::boot_state::publish_state(file, image, dir)?;
            eprintln!(
                "qemuweb: saved the VM's state in {} ({} bytes)",
                dir.display(),
                state.file_bytes
            );
        }
    }
    match outcome {
        qemuweb_headless::Outcome::Timeout => Err(CliError::Timeout {
            seconds: opts.timeout.map_or(0, |t| t.as_secs()),
        }),
        outcome => Ok(outcome),
    }
}
