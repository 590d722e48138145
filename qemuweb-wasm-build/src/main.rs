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
        build, built_output, cache, BuildOptions, BuildPlan, EnvChoice, Error,
    };

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
        /// Remove the cache directory (refused while a build root is mounted).
        Clean {
            /// The cache directory.
            #[arg(long)]
            cache: Option<PathBuf>,
        },
    }

    #[derive(Args)]
    struct PlanArgs {
        /// A plan JSON file instead of the built-in plan.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// QEMU targets instead of the plan's (repeatable), e.g. i386-softmmu.
        #[arg(long = "target")]
        targets: Vec<String>,
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
        fn load(&self) -> Result<BuildPlan, Error> {
            let plan = match &self.plan {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
                        path: path.clone(),
                        source: e,
                    })?;
                    BuildPlan::from_json(&text)?
                }
                None => BuildPlan::default(),
            };
            Ok(if self.targets.is_empty() {
                plan
            } else {
                plan.with_targets(&self.targets)
            })
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
                let plan = args.load()?;
                plan.validate()?;
                say(format_args!("{}", plan.to_json()));
            }
            Cmd::Build {
                plan,
                dirs,
                env,
                jobs,
            } => {
                let plan = plan.load()?;
                let mut opts = dirs.options();
                opts.env = env.parse::<EnvChoice>()?;
                if let Some(jobs) = jobs {
                    opts.jobs = jobs;
                }
                qemuweb_wasm_build::runner::stop_on_signals();
                let outcome = build(&plan, &opts, &mut std::io::stderr())?;
                say(format_args!("{}", outcome.out_dir.display()));
            }
            Cmd::PrintDir { plan, dirs } => {
                let plan = plan.load()?;
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
