//! `qemuweb-wasm-build`: builds QEMU to WebAssembly from the pinned plan.
//!
//! `build` prints the output directory on its last stdout line; when it fails, the last
//! stdout line is `FAILED <step or error kind>` and the exit code is 1.

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::path::PathBuf;
    use std::process::ExitCode;

    use clap::{Args, Parser, Subcommand};
    use qemuweb_wasm_build::{
        build, built_output, cache, BuildOptions, BuildPlan, EnvChoice, Error, PatchSource,
        TcgBackend,
    };

    /// Node flags `node` passes first: WebAssembly features Chromium ships (branch hints,
    /// which the JIT's modules carry) that Node 24's V8 has behind a flag.
    const NODE_WASM_FLAGS: &[&str] = &["--experimental-wasm-branch-hinting"];

    /// Whether the build root's Node runs with `flag` (it exits with an error on a flag it
    /// does not know).
    fn node_accepts(root: &std::path::Path, flag: &str) -> bool {
        let args = [flag, "-e", ""].map(std::ffi::OsString::from);
        qemuweb_wasm_build::env::chroot_command(root, &[], "node", &args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    #[derive(Parser)]
    #[command(
        name = "qemuweb-wasm-build",
        version,
        about = "Build QEMU to WebAssembly with Emscripten"
    )]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Print the plan as JSON.
        Plan(PlanArgs),
        /// Build (or reuse) the plan's output and print its directory last.
        Build {
            #[command(flatten)]
            plan: PlanArgs,
            #[command(flatten)]
            dirs: DirArgs,
            /// auto, host, container or debootstrap.
            #[arg(long, default_value = "auto")]
            env: String,
            /// Parallel jobs for make and ninja (default: the number of CPUs).
            #[arg(long)]
            jobs: Option<usize>,
        },
        /// Print where the plan's output is (exit code 1 if it is not built).
        PrintDir {
            #[command(flatten)]
            plan: PlanArgs,
            #[command(flatten)]
            dirs: DirArgs,
        },
        /// Write the plan's output (built) as the npm package @qemuweb/qemu-wasm into DEST,
        /// ready for `npm pack DEST`; prints DEST.
        NpmPackage {
            /// Where the package directory goes (replaced).
            dest: PathBuf,
            /// The output directory to package (default: the plan's, which must be built).
            #[arg(long)]
            from: Option<PathBuf>,
            #[command(flatten)]
            plan: PlanArgs,
            #[command(flatten)]
            dirs: DirArgs,
        },
        /// Run the build root's Node (24: it runs wasm64 modules; the host's may not) on
        /// ARGS, with each --bind directory visible at its own path; exits with its status.
        /// Node gets those of `NODE_WASM_FLAGS` it knows first: the WebAssembly features
        /// Chromium ships that Node 24's V8 keeps behind flags, so that QEMU's modules run as
        /// in the page.
        Node {
            /// A host directory the program needs (repeatable), e.g. the output directory.
            #[arg(long = "bind")]
            binds: Vec<PathBuf>,
            /// The cache directory.
            #[arg(long)]
            cache: Option<PathBuf>,
            /// Node's arguments.
            #[arg(last = true)]
            args: Vec<std::ffi::OsString>,
        },
        /// Print the script of one build step (as the debootstrap environment runs it, in
        /// /work), e.g. `script qemu-configure`.
        Script {
            /// The step's name (`qemu-source`, `glib`, ...).
            step: String,
            #[command(flatten)]
            plan: PlanArgs,
        },
        /// Remove the cache directory (refused while a build root is mounted).
        Clean {
            /// The cache directory.
            #[arg(long)]
            cache: Option<PathBuf>,
        },
    }

    #[derive(Args)]
    struct PlanArgs {
        /// The plan: `wasm32` (the default: qemu-system-i386, Emscripten 3.1.69), `wasm64`
        /// (qemu-system-x86_64 and qemu-system-aarch64, Emscripten 6.0.5, Memory64) or a
        /// plan JSON file.
        #[arg(long, value_name = "wasm32|wasm64|FILE", default_value = "wasm32")]
        plan: String,
        /// QEMU targets instead of the plan's (repeatable), e.g. x86_64-softmmu.
        #[arg(long = "target")]
        targets: Vec<String>,
        /// The TCG backend instead of the plan's: interpreter or jit.
        #[arg(long)]
        tcg: Option<String>,
        /// Take the patch series from DIR (a directory like qemuweb-wasm-build/patches)
        /// instead of the copy built into this tool: edit a patch, rerun, and only the
        /// steps from the patched source on run again.
        #[arg(long, value_name = "DIR", env = "QEMUWEB_PATCHES_DIR")]
        patches: Option<PathBuf>,
    }

    #[derive(Args)]
    struct DirArgs {
        /// The output directory (default: under the cache).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The cache directory (default: $QEMUWEB_CACHE/wasm-build or ~/.cache/qemuweb/wasm-build).
        #[arg(long)]
        cache: Option<PathBuf>,
    }

    impl PlanArgs {
        /// Where the patches come from.
        fn patch_source(&self) -> Result<PatchSource, Error> {
            match &self.patches {
                Some(dir) => PatchSource::from_dir(dir),
                None => Ok(PatchSource::embedded()),
            }
        }

        /// The plan and the patches it is built with.
        fn load(&self) -> Result<(BuildPlan, PatchSource), Error> {
            let source = self.patch_source()?;
            let mut plan = match self.plan.as_str() {
                "wasm32" => BuildPlan::wasm32(),
                "wasm64" => BuildPlan::wasm64(),
                file => {
                    let path = PathBuf::from(file);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| Error::Io { path, source: e })?;
                    BuildPlan::from_json(&text)?
                }
            };
            if self.patches.is_some() {
                // The plan records the series read from DIR, so its hash follows the edits.
                plan.qemu.patches = source.series(&plan.qemu.patches.name)?;
            }
            if let Some(tcg) = &self.tcg {
                plan = plan.with_tcg(tcg.parse::<TcgBackend>()?);
            }
            if !self.targets.is_empty() {
                plan = plan.with_targets(&self.targets);
            }
            Ok((plan, source))
        }
    }

    impl DirArgs {
        fn options(self) -> BuildOptions {
            let mut opts = BuildOptions::new();
            if let Some(cache) = self.cache {
                opts.cache_dir = cache;
            }
            opts.out_dir = self.out;
            opts
        }
    }

    /// Prints a line on stdout; a closed pipe (`| head`) is not an error worth a panic.
    fn say(line: std::fmt::Arguments<'_>) {
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        match run(cli.command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("qemuweb-wasm-build: error: {e}");
                say(format_args!("FAILED {}", e.failure_label()));
                ExitCode::FAILURE
            }
        }
    }

    fn run(cmd: Cmd) -> Result<ExitCode, Error> {
        match cmd {
            Cmd::Plan(args) => {
                let (plan, source) = args.load()?;
                plan.validate()?;
                source.check(&plan.qemu.patches)?;
                say(format_args!("{}", plan.to_json()));
            }
            Cmd::Build {
                plan,
                dirs,
                env,
                jobs,
            } => {
                let (plan, source) = plan.load()?;
                let mut opts = dirs.options();
                opts.patches = source;
                opts.env = env.parse::<EnvChoice>()?;
                if let Some(jobs) = jobs {
                    opts.jobs = jobs;
                }
                qemuweb_wasm_build::runner::stop_on_signals();
                let outcome = build(&plan, &opts, &mut std::io::stderr())?;
                say(format_args!("{}", outcome.out_dir.display()));
            }
            Cmd::PrintDir { plan, dirs } => {
                let (plan, _) = plan.load()?;
                let opts = dirs.options();
                return Ok(match built_output(&plan, &opts) {
                    Ok(dir) => {
                        say(format_args!("{}", dir.display()));
                        ExitCode::SUCCESS
                    }
                    Err(Error::NotBuilt(dir)) => {
                        say(format_args!("{}", dir.display()));
                        eprintln!("qemuweb-wasm-build: not built yet");
                        ExitCode::FAILURE
                    }
                    Err(e) => return Err(e),
                });
            }
            Cmd::NpmPackage {
                dest,
                from,
                plan,
                dirs,
            } => {
                let (plan, source) = plan.load()?;
                let opts = dirs.options();
                let out = match from {
                    Some(dir) => dir,
                    None => built_output(&plan, &opts)?,
                };
                let dest = qemuweb_wasm_build::npm::write_package(
                    &out,
                    &dest,
                    env!("CARGO_PKG_VERSION"),
                    &source,
                )?;
                say(format_args!("{}", dest.display()));
            }
            Cmd::Node { binds, cache, args } => {
                let cache = cache.unwrap_or_else(cache::default_cache_dir);
                let root = cache
                    .join(qemuweb_wasm_build::env::env_dir_name(
                        qemuweb_wasm_build::EnvKind::Debootstrap,
                        &BuildPlan::wasm64(),
                    ))
                    .join("root");
                if !root.join("usr/bin/node").exists() {
                    return Err(Error::NotBuilt(root));
                }
                let mut binds = binds;
                for b in &mut binds {
                    *b = b.canonicalize().map_err(|e| Error::Io {
                        path: b.clone(),
                        source: e,
                    })?;
                }
                // Only the flags this Node still knows: a later one that ships the feature
                // without its flag would refuse the whole command line.
                let args: Vec<std::ffi::OsString> = NODE_WASM_FLAGS
                    .iter()
                    .filter(|flag| node_accepts(&root, flag))
                    .map(std::ffi::OsString::from)
                    .chain(args)
                    .collect();
                let status = qemuweb_wasm_build::env::chroot_command(&root, &binds, "node", &args)
                    .status()
                    .map_err(|e| Error::Io {
                        path: "unshare".into(),
                        source: e,
                    })?;
                return Ok(ExitCode::from(
                    status.code().unwrap_or(1).clamp(0, 255) as u8
                ));
            }
            Cmd::Script { step, plan } => {
                let (plan, _) = plan.load()?;
                let cpu = plan.validate()?;
                let steps = qemuweb_wasm_build::steps::build_steps(&plan, cpu, "/work");
                let names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
                match steps.into_iter().find(|s| s.name == step) {
                    Some(qemuweb_wasm_build::Step {
                        action: qemuweb_wasm_build::steps::Action::Script { script, .. },
                        ..
                    }) => say(format_args!("{script}")),
                    Some(_) => say(format_args!("# {step} is not a script step")),
                    None => {
                        return Err(Error::InvalidPlan(format!(
                            "no step {step:?} (steps: {})",
                            names.join(", ")
                        )))
                    }
                }
            }
            Cmd::Clean { cache: dir } => {
                let dir = dir.unwrap_or_else(cache::default_cache_dir);
                cache::clean(&dir)?;
                say(format_args!("removed {}", dir.display()));
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
