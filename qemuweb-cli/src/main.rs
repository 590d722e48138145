//! `qemuweb`: serve, create and boot VM disk images. See the crate documentation.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use clap::{Parser, Subcommand};
    use qemuweb_cli::boot::{AccelArg, BootOptions, BrowserBoot, EngineArg, FormatArg};
    use qemuweb_cli::boot_state::SaveWhen;
    use qemuweb_cli::create::{CreateFormat, CreateOptions};
    use qemuweb_cli::emulator::{Emulator, StartOptions, Status};
    use qemuweb_cli::prepare::{BootStateOptions, PrepareFormat, PrepareOptions};
    use qemuweb_cli::serve::ServeOptions;
    use qemuweb_cli::{CliError, ErrorKind};
    use qemuweb_config::PortForward;
    use qemuweb_storage::format::ImageFormat;
    use std::io::Write;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::Duration;

    /// Tools for QemuWeb VMs on the host.
    #[derive(Debug, Parser)]
    #[command(name = "qemuweb", version, about)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Debug, Subcommand)]
    enum Cmd {
        /// Serve a directory over HTTP for browser VMs: COOP/COEP/CORP, Range requests,
        /// strong ETags, MIME types. Pages of other origins cannot read it unless named
        /// with --cors-origin (or --cors-any).
        Serve {
            /// The directory to serve.
            dir: PathBuf,
            /// The address to listen on (only this machine by default).
            #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
            bind: IpAddr,
            /// The TCP port; 0 picks a free one.
            #[arg(long, short, default_value_t = 8080)]
            port: u16,
            /// Let pages of this origin read the files (CORS), e.g. http://127.0.0.1:5173.
            /// Repeatable.
            #[arg(long = "cors-origin", value_name = "ORIGIN")]
            cors_origins: Vec<String>,
            /// Let pages of any origin read the files (Access-Control-Allow-Origin: *).
            #[arg(long, conflicts_with = "cors_origins")]
            cors_any: bool,
            /// Also answer requests for this Host (name:port), beyond the bound address
            /// (others are refused against DNS rebinding). Repeatable.
            #[arg(long = "allow-host", value_name = "HOST")]
            allow_hosts: Vec<String>,
            /// Do not log requests on stderr.
            #[arg(long, short)]
            quiet: bool,
        },
        /// Make an ext4 disk image from a directory (no root, no loop mounts).
        Create {
            /// The directory whose contents become the file system.
            #[arg(long)]
            from_dir: PathBuf,
            /// The image to write.
            out: PathBuf,
            /// The disk size, e.g. 64M or 2G (default: fits the directory with room).
            #[arg(long, value_parser = parse_size)]
            size: Option<u64>,
            /// The image format.
            #[arg(long, value_enum, default_value_t = CreateFormat::Qcow2)]
            format: CreateFormat,
            /// The file system label (up to 16 bytes).
            #[arg(long)]
            label: Option<String>,
            /// Replace OUT if it exists.
            #[arg(long)]
            force: bool,
        },
        /// Boot a disk image (or a kernel) with QEMU on this machine, or with --browser in
        /// headless Chromium; the serial console is the terminal.
        Boot {
            /// The VM profile id.
            #[arg(long, default_value = qemuweb_config::LINUX_X86_64_PC_NOGRAPHIC)]
            profile: String,
            /// The disk image (raw or qcow2); optional with --kernel.
            #[arg(required_unless_present = "kernel")]
            image: Option<PathBuf>,
            #[command(flatten)]
            direct: DirectBoot,
            /// The image format (default: by its magic); QEMU is told it either way.
            #[arg(long, value_enum)]
            format: Option<FormatArg>,
            /// Allow the backing and data files the image names, as plain relative names
            /// inside DIR (refused by default). Native boots only.
            #[arg(long, value_name = "DIR", conflicts_with = "browser")]
            backing_dir: Option<PathBuf>,
            /// The accelerator.
            #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
            accel: AccelArg,
            /// Guest RAM in MiB (default: the profile's).
            #[arg(long)]
            memory: Option<u32>,
            /// Number of vCPUs (default: the profile's).
            #[arg(long)]
            smp: Option<u32>,
            /// Discard the guest's disk writes when QEMU exits.
            #[arg(long)]
            snapshot: bool,
            /// Stop the VM after this many seconds (exit status 124).
            #[arg(long)]
            timeout: Option<u64>,
            /// Boot in headless Chromium through QemuClient instead of native QEMU (the
            /// image may then be an http(s) URL).
            #[arg(long)]
            browser: bool,
            /// The browser engine.
            #[arg(long, value_enum, default_value_t = EngineArg::V86, requires = "browser")]
            engine: EngineArg,
            /// The BIOS for the v86 engine in the browser (default Debian's SeaBIOS; the
            /// QEMU engine takes its firmware from the QEMU directory).
            #[arg(long, requires = "browser")]
            bios: Option<PathBuf>,
            /// With --engine qemu: the QEMU-in-wasm build directory (qemu-build.json, the
            /// modules and firmware; scripts/build-qemu). Default $QEMUWEB_QEMU_DIR.
            #[arg(long, requires = "browser")]
            qemu_dir: Option<PathBuf>,
            /// Report the page's progress and Chromium's output on stderr.
            #[arg(long, requires = "browser")]
            verbose: bool,
            /// With the v86 engine: v86's directory (libv86.mjs, v86.wasm). Default: the
            /// data directory's, fetched on first use (see `qemuweb assets`).
            #[arg(long, requires = "browser")]
            v86_dir: Option<PathBuf>,
            /// A runtime web bundle directory (scripts/build-web) instead of the built-in one.
            #[arg(long, requires = "browser")]
            bundle: Option<PathBuf>,
            /// When the run ends (stdin closes, or the time limit), save the VM's whole
            /// state beside the image (IMAGE.boot-state/); the next boot resumes it.
            #[arg(long, requires = "browser")]
            save: bool,
            /// Boot cold, without the state saved beside the image (or the one
            /// `prepare --boot-state` published in the image's site).
            #[arg(long, requires = "browser")]
            cold: bool,
            /// Serve the control API on this loopback address (127.0.0.1:PORT; port 0 picks
            /// one): JSON commands (type, keys, move, click, screenshot, serialIn,
            /// serialOut, stop) with the token printed on stderr; the run then ends with
            /// `stop`, --timeout or Ctrl-C rather than at the end of stdin.
            #[arg(long, value_name = "ADDR", requires = "browser")]
            control: Option<std::net::SocketAddr>,
        },
        /// Make an image ready for a static web host: a qcow2 with the HTTP block size as
        /// cluster size (or raw), vm.json, _headers and manifest.json with SHA-256s.
        Prepare {
            /// The source image (raw or qcow2).
            image: PathBuf,
            /// The source image's format (default: by its magic).
            #[arg(long, value_enum)]
            source_format: Option<FormatArg>,
            /// Allow the backing and data files the source names, as plain relative names
            /// inside DIR (refused by default).
            #[arg(long, value_name = "DIR")]
            backing_dir: Option<PathBuf>,
            /// The output directory.
            out_dir: PathBuf,
            /// The VM profile id for vm.json.
            #[arg(long, default_value = qemuweb_config::LINUX_I386_PC_NOGRAPHIC)]
            profile: String,
            /// The output format.
            #[arg(long, value_enum, default_value_t = PrepareFormat::Qcow2)]
            format: PrepareFormat,
            /// Do not compress qcow2 clusters.
            #[arg(long)]
            no_compress: bool,
            /// The qcow2 cluster size, e.g. 64K (default: the HTTP device's block size).
            #[arg(long, value_parser = parse_size)]
            cluster_size: Option<u64>,
            /// Also split the disk into a content-addressed Atlas store in OUT_DIR/atlas.
            #[arg(long)]
            atlas: bool,
            /// Guest RAM in MiB for vm.json (default: the profile's).
            #[arg(long)]
            memory: Option<u32>,
            /// Write into a non-empty OUT_DIR.
            #[arg(long)]
            force: bool,
            /// A built web app to copy in, opening on the disk (e.g. the dist/ directory
            /// scripts/build-example makes from examples/vm-launcher).
            #[arg(long)]
            app: Option<PathBuf>,
            /// Boot the prepared disk once in headless Chromium (on --engine) and publish the VM's
            /// state in OUT_DIR/boot-state/, so pages resume at the prompt instead of
            /// booting. Needs --boot-until or --boot-seconds.
            #[arg(long)]
            boot_state: bool,
            /// With --boot-state: save when this text appears on the serial console (a
            /// shell prompt).
            #[arg(long, requires = "boot_state", conflicts_with = "boot_seconds")]
            boot_until: Option<String>,
            /// With --boot-state: save after this many seconds.
            #[arg(long, requires = "boot_state")]
            boot_seconds: Option<u64>,
            /// With --boot-state: how long the boot may take, in seconds.
            #[arg(long, requires = "boot_state", default_value_t = 600)]
            boot_timeout: u64,
            /// The engine the page runs the VM on (vm.json's `engine`), and with
            /// --boot-state the one its state is saved on (a state resumes only on the
            /// engine that saved it).
            #[arg(long, value_enum, default_value_t = EngineArg::V86)]
            engine: EngineArg,
            /// With --engine qemu: the QEMU-in-wasm build directory (scripts/build-qemu)
            /// that --boot-state runs and --app copies into OUT_DIR/qemu/. Default
            /// $QEMUWEB_QEMU_DIR.
            #[arg(long)]
            qemu_dir: Option<PathBuf>,
            /// With --boot-state: v86's directory (default: the data directory's).
            #[arg(long, requires = "boot_state")]
            v86_dir: Option<PathBuf>,
            /// With --boot-state: a runtime web bundle directory instead of the built-in one.
            #[arg(long, requires = "boot_state")]
            bundle: Option<PathBuf>,
            /// With --boot-state: show the guest's console and the page's progress on stderr.
            #[arg(long, requires = "boot_state")]
            verbose: bool,
        },
        /// What `boot --browser` needs besides this binary: v86 (from the npm registry, at
        /// a pinned version and SHA-512) in the data directory ($QEMUWEB_DATA_DIR, else
        /// $XDG_DATA_HOME/qemuweb or ~/.local/share/qemuweb), and Debian's SeaBIOS.
        Assets {
            #[command(subcommand)]
            command: AssetsCmd,
        },
        /// The way out of a page's virtual network: a user-mode TCP/IP stack that carries
        /// its guests' TCP connections and UDP datagrams to the host (and their pings, when
        /// net.ipv4.ping_group_range allows), and forwards host ports to guests. The
        /// page connects with QemuClient.connectNetwork(network, url, token) to the URL and
        /// token printed at start. Guests cannot reach the host's loopback or private
        /// ranges unless allowed.
        Network {
            /// Where the page's WebSocket connects: 127.0.0.1 and a port (0 picks a free
            /// one).
            #[arg(long, default_value = "127.0.0.1:8765")]
            listen: SocketAddr,
            /// The network whose uplink this is (`default`: 10.0.2.0/24, gateway 10.0.2.2).
            #[arg(long, default_value = "default")]
            network: String,
            /// Forward 127.0.0.1:HOSTPORT to port PORT of VM (its name on the network, or
            /// an address), e.g. 8080:vm1:80. Repeatable.
            #[arg(long = "forward", value_name = "HOSTPORT:VM:PORT")]
            forwards: Vec<qemuweb_config::NetworkPortForward>,
            /// Let guests reach the host's loopback: 127.0.0.0/8, and the gateway's address
            /// (10.0.2.2 on the default network) as 127.0.0.1.
            #[arg(long)]
            allow_loopback: bool,
            /// Let guests reach private, shared and link-local ranges (10/8, 172.16/12,
            /// 192.168/16, 100.64/10, 169.254/16).
            #[arg(long)]
            allow_private: bool,
            /// Also accept pages of this origin (loopback pages of any port are accepted),
            /// e.g. http://box.local:8080. Repeatable.
            #[arg(long = "origin", value_name = "ORIGIN")]
            origins: Vec<String>,
            /// Print each connection and refusal on stderr.
            #[arg(long, short)]
            verbose: bool,
        },
        /// A long-running local VM: a base image plus an overlay, QMP, port forwards.
        Emulator {
            /// The state directory (overlay, PID file, QMP socket, serial log).
            /// Default: $XDG_STATE_HOME/qemuweb/emulator.
            #[arg(long, global = true, env = "QEMUWEB_EMULATOR_DIR")]
            state_dir: Option<PathBuf>,
            #[command(subcommand)]
            command: EmuCmd,
        },
    }

    /// A kernel booted directly (`-kernel`), for `virt` profiles or instead of the disk's
    /// boot loader (the image is then a data disk).
    #[derive(Debug, clap::Args)]
    struct DirectBoot {
        /// A kernel to boot directly.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// An initial ramdisk for the kernel.
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// The kernel command line.
        #[arg(long, requires = "kernel")]
        append: Option<String>,
    }

    #[derive(Debug, Subcommand)]
    enum AssetsCmd {
        /// Download v86 into the data directory (again with --force).
        Fetch {
            /// Replace a v86 already there.
            #[arg(long)]
            force: bool,
        },
        /// Say where each asset is found, or that it is missing (exit 3 when one is).
        Status,
    }

    #[derive(Debug, Subcommand)]
    enum EmuCmd {
        /// Start the VM in the background (the overlay is created on first start).
        Start {
            /// The base image (remembered in the state directory for later starts).
            #[arg(long)]
            image: Option<PathBuf>,
            /// The VM profile id.
            #[arg(long, default_value = qemuweb_config::LINUX_X86_64_PC_NOGRAPHIC)]
            profile: String,
            /// The accelerator.
            #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
            accel: AccelArg,
            /// Number of vCPUs (default: the profile's).
            #[arg(long, env = "QEMUWEB_EMULATOR_CPUS")]
            cpus: Option<u32>,
            /// Guest RAM in MiB (default: the profile's).
            #[arg(long, env = "QEMUWEB_EMULATOR_MEMORY_MIB")]
            memory: Option<u32>,
            /// Forward a host port on 127.0.0.1 to a guest port: [tcp:|udp:]HOST:GUEST.
            #[arg(long = "forward", value_parser = parse_forward)]
            forwards: Vec<PortForward>,
            /// Allow the backing and data files the base image names, as plain relative
            /// names inside DIR (refused by default; remembered with the base image).
            #[arg(long, value_name = "DIR")]
            backing_dir: Option<PathBuf>,
            #[command(flatten)]
            direct: DirectBoot,
        },
        /// Stop the VM: ACPI power-down, then quit after the grace period.
        Stop {
            /// Seconds the guest gets to power off by itself (0: quit at once).
            #[arg(long, default_value_t = 10)]
            grace: u64,
        },
        /// Wipe the overlay: the disk becomes the base image again (VM must be stopped).
        Reset,
        /// Whether the VM runs, its QMP state and its user-network forwards.
        Status,
    }

    fn parse_forward(s: &str) -> Result<PortForward, String> {
        s.parse()
            .map_err(|e: qemuweb_config::ConfigError| e.to_string())
    }

    fn default_state_dir() -> PathBuf {
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("qemuweb/emulator")
    }

    fn parse_size(s: &str) -> Result<u64, String> {
        qemuweb_cli::create::parse_size(s).map_err(|e| e.to_string())
    }

    pub(crate) fn main() -> ExitCode {
        let cli = Cli::parse();
        match run(cli.command) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("qemuweb: {err}");
                match err.kind() {
                    ErrorKind::Timeout => ExitCode::from(124),
                    ErrorKind::InvalidArgument => ExitCode::from(2),
                    _ => ExitCode::FAILURE,
                }
            }
        }
    }

    fn run(cmd: Cmd) -> Result<ExitCode, CliError> {
        match cmd {
            Cmd::Serve {
                dir,
                bind,
                port,
                cors_origins,
                cors_any,
                allow_hosts,
                quiet,
            } => {
                let cors = if cors_any {
                    qemuweb_http::CorsPolicy::Any
                } else {
                    qemuweb_http::CorsPolicy::origins(&cors_origins)
                        .map_err(|e| CliError::InvalidArgument(format!("--cors-origin: {e}")))?
                };
                let opts = ServeOptions {
                    cors,
                    allow_hosts,
                    quiet,
                    ..ServeOptions::new(&dir, SocketAddr::new(bind, port))
                };
                let server = qemuweb_cli::serve::start(&opts)?;
                let addr = server.local_addr();
                let host = match addr.ip() {
                    IpAddr::V6(ip) => format!("[{ip}]"),
                    IpAddr::V4(ip) => ip.to_string(),
                };
                println!(
                    "Serving {} at http://{host}:{}/",
                    dir.display(),
                    addr.port()
                );
                let _ = std::io::stdout().flush();
                server.wait();
                Ok(ExitCode::SUCCESS)
            }
            Cmd::Network {
                listen,
                network,
                forwards,
                allow_loopback,
                allow_private,
                origins,
                verbose,
            } => {
                if listen.ip() != IpAddr::V4(Ipv4Addr::LOCALHOST) {
                    return Err(CliError::InvalidArgument(format!(
                        "--listen {listen}: the relay listens on 127.0.0.1 only"
                    )));
                }
                let plan = qemuweb_config::network_by_id(&network)?.plan()?;
                let mut config = qemuweb_relay::RelayConfig::new(plan.clone(), listen.port());
                config.policy = qemuweb_relay::Policy {
                    allow_loopback,
                    allow_private,
                };
                config.forwards = forwards;
                config.origins = origins;
                config.verbose = verbose;
                let relay = qemuweb_relay::Relay::start(config).map_err(|e| match e {
                    qemuweb_relay::RelayError::Io { what, source } => CliError::Io {
                        path: what.into(),
                        source,
                    },
                    other => CliError::InvalidArgument(other.to_string()),
                })?;
                println!(
                    "Network {network} ({}, gateway {}) relayed at {} token {}",
                    plan.cidr(),
                    plan.gateway,
                    relay.url(),
                    relay.token().as_str()
                );
                let _ = std::io::stdout().flush();
                relay.wait();
                Ok(ExitCode::SUCCESS)
            }
            Cmd::Create {
                from_dir,
                out,
                size,
                format,
                label,
                force,
            } => {
                let opts = CreateOptions {
                    from_dir,
                    out,
                    size,
                    format,
                    label,
                    force,
                };
                with_spinner(|step| qemuweb_cli::create::create(&opts, step))?;
                let size = std::fs::metadata(&opts.out)
                    .map_err(|e| CliError::io(&opts.out, e))?
                    .len();
                println!("Wrote {} ({size} bytes)", opts.out.display());
                Ok(ExitCode::SUCCESS)
            }
            Cmd::Boot {
                profile,
                image,
                direct,
                format,
                backing_dir,
                accel,
                memory,
                smp,
                snapshot,
                timeout,
                browser,
                engine,
                bios,
                qemu_dir,
                verbose,
                v86_dir,
                bundle,
                save,
                cold,
                control,
            } => {
                let opts = BootOptions {
                    profile,
                    image,
                    kernel: direct.kernel,
                    initrd: direct.initrd,
                    append: direct.append,
                    format,
                    backing_dir,
                    accel,
                    memory_mib: memory,
                    smp,
                    snapshot,
                    timeout: timeout.map(Duration::from_secs),
                };
                if browser {
                    let browser = BrowserBoot {
                        engine,
                        bios,
                        qemu_dir,
                        verbose,
                        v86_dir,
                        bundle,
                        save,
                        cold,
                        control,
                    };
                    let outcome = qemuweb_cli::boot::boot_in_browser(&opts, &browser)?;
                    if outcome.exit_code() != 0 {
                        eprintln!("qemuweb: {outcome}");
                    }
                    return Ok(ExitCode::from(outcome.exit_code()));
                }
                let status = qemuweb_cli::boot::boot(&opts)?;
                Ok(exit_code(status))
            }
            Cmd::Prepare {
                image,
                source_format,
                backing_dir,
                out_dir,
                profile,
                format,
                no_compress,
                cluster_size,
                atlas,
                memory,
                force,
                app,
                boot_state,
                boot_until,
                boot_seconds,
                boot_timeout,
                engine,
                qemu_dir,
                v86_dir,
                bundle,
                verbose,
            } => {
                let boot_state = if boot_state {
                    let when = match (boot_until, boot_seconds) {
                        (Some(text), None) => SaveWhen::Prompt(text),
                        (None, Some(s)) => SaveWhen::After(Duration::from_secs(s)),
                        _ => {
                            return Err(CliError::InvalidArgument(
                                "--boot-state needs --boot-until TEXT or --boot-seconds N".into(),
                            ))
                        }
                    };
                    Some(BootStateOptions {
                        when,
                        timeout: Duration::from_secs(boot_timeout),
                        browser: BrowserBoot {
                            v86_dir,
                            bundle,
                            verbose,
                            ..BrowserBoot::default()
                        },
                    })
                } else {
                    None
                };
                let cluster_size = cluster_size
                    .map(|c| {
                        u32::try_from(c).map_err(|_| {
                            CliError::InvalidArgument(format!("cluster size {c}: too large"))
                        })
                    })
                    .transpose()?;
                let opts = PrepareOptions {
                    image,
                    source_format: source_format.map(|f| match f {
                        FormatArg::Raw => ImageFormat::Raw,
                        FormatArg::Qcow2 => ImageFormat::Qcow2,
                    }),
                    backing_dir,
                    out_dir,
                    profile,
                    format,
                    compress: !no_compress,
                    cluster_size,
                    atlas,
                    memory_mib: memory,
                    force,
                    app,
                    engine,
                    qemu_dir,
                    boot_state,
                };
                let manifest = with_spinner(|step| qemuweb_cli::prepare::prepare(&opts, step))?;
                for f in &manifest.files {
                    println!("{}  {:>12}  {}", f.sha256, f.size, f.path);
                }
                if let Some(a) = &manifest.atlas {
                    println!("atlas: {} chunks, manifest {}", a.chunks, a.manifest_hash);
                }
                println!("Wrote {}", opts.out_dir.join("manifest.json").display());
                Ok(ExitCode::SUCCESS)
            }
            Cmd::Assets { command } => qemuweb_cli::assets::run(match command {
                AssetsCmd::Fetch { force } => qemuweb_cli::assets::Action::Fetch { force },
                AssetsCmd::Status => qemuweb_cli::assets::Action::Status,
            }),
            Cmd::Emulator { state_dir, command } => {
                let emu = Emulator::new(state_dir.unwrap_or_else(default_state_dir));
                match command {
                    EmuCmd::Start {
                        image,
                        profile,
                        accel,
                        cpus,
                        memory,
                        forwards,
                        backing_dir,
                        direct,
                    } => {
                        let pid = emu.start(&StartOptions {
                            image,
                            profile,
                            accel,
                            cpus,
                            memory_mib: memory,
                            forwards: forwards.clone(),
                            kernel: direct.kernel,
                            initrd: direct.initrd,
                            append: direct.append,
                            backing_dir,
                        })?;
                        println!("started (pid {pid})");
                        println!("serial console: {}", emu.serial_log().display());
                        println!("QMP: {}", emu.qmp_socket().display());
                        for f in &forwards {
                            println!(
                                "forward: 127.0.0.1:{} -> guest {}",
                                f.host_port, f.guest_port
                            );
                        }
                    }
                    EmuCmd::Stop { grace } => {
                        if emu.stop(Duration::from_secs(grace))? {
                            println!("stopped");
                        } else {
                            println!("not running");
                        }
                    }
                    EmuCmd::Reset => {
                        emu.reset()?;
                        println!("reset: {} is empty", emu.overlay().display());
                    }
                    EmuCmd::Status => match emu.status()? {
                        Status::Stopped { stale_pid } => {
                            if let Some(pid) = stale_pid {
                                println!("removed a stale PID file (pid {pid})");
                            }
                            println!("stopped");
                            return Ok(ExitCode::from(3));
                        }
                        Status::Running {
                            pid,
                            vm_status,
                            usernet,
                        } => {
                            println!("running (pid {pid})");
                            println!("vm: {vm_status}");
                            print!("{usernet}");
                        }
                    },
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }

    /// Runs `work` with a terminal spinner showing the step it reports, cleared at the end.
    fn with_spinner<T>(work: impl FnOnce(&dyn Fn(&str)) -> T) -> T {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(100));
        let result = work(&|msg| bar.set_message(msg.to_string()));
        bar.finish_and_clear();
        result
    }

    /// QEMU's exit status as this program's.
    fn exit_code(status: std::process::ExitStatus) -> ExitCode {
        match status.code() {
            Some(c) => ExitCode::from(c.clamp(0, 255) as u8),
            None => {
                eprintln!("qemuweb: QEMU ended by {status}");
                ExitCode::FAILURE
            }
        }
    }
}
