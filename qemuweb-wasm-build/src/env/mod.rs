//! Build environments: where the step scripts run, and how one is chosen.
//!
//! - [`HostEnv`]: Emscripten already installed (`emcc` on `PATH`, the plan's version).
//! - [`ContainerEnv`]: a working `docker` or `podman` with the emsdk image.
//! - [`DebootstrapEnv`]: on Debian-family hosts, a `debootstrap --variant=minbase` build
//!   root with Debian's `emscripten`, entered with `chroot`.

mod container;
mod debootstrap;
mod host;

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use container::ContainerEnv;
pub use debootstrap::{chroot_command, DebootstrapEnv};
pub use host::HostEnv;

use crate::error::{Error, Result};
use crate::plan::BuildPlan;
use crate::steps::{Place, Step};

/// The three kinds of environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvKind {
    /// Emscripten installed on this machine.
    Host,
    /// docker or podman with the emsdk image.
    Container,
    /// A Debian build root entered with chroot.
    Debootstrap,
}

impl EnvKind {
    /// The name used on the command line and in directory names.
    pub fn name(self) -> &'static str {
        match self {
            EnvKind::Host => "host",
            EnvKind::Container => "container",
            EnvKind::Debootstrap => "debootstrap",
        }
    }
}

impl fmt::Display for EnvKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which environment to use: one by name, or the first usable in the order host,
/// container, debootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvChoice {
    /// The first usable.
    #[default]
    Auto,
    /// This one, or an error saying why it is not usable.
    Only(EnvKind),
}

impl std::str::FromStr for EnvChoice {
    type Err = Error;

    /// Parses `auto`, `host`, `container` or `debootstrap`.
    ///
    /// ```
    /// use qemuweb_wasm_build::{EnvChoice, EnvKind};
    /// assert_eq!("debootstrap".parse::<EnvChoice>().unwrap(), EnvChoice::Only(EnvKind::Debootstrap));
    /// assert!("vm".parse::<EnvChoice>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => EnvChoice::Auto,
            "host" => EnvChoice::Only(EnvKind::Host),
            "container" => EnvChoice::Only(EnvKind::Container),
            "debootstrap" => EnvChoice::Only(EnvKind::Debootstrap),
            other => {
                return Err(Error::InvalidPlan(format!(
                    "unknown environment {other:?} (auto, host, container, debootstrap)"
                )))
            }
        })
    }
}

/// One environment checked during detection, and why it was not usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvCheck {
    /// The environment.
    pub kind: EnvKind,
    /// Why it is not usable.
    pub reason: String,
}

impl fmt::Display for EnvCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.reason)
    }
}

/// What detection looks at; [`Probe::system`] is this machine, tests use another `PATH`.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The `PATH` searched for `emcc`, `docker`, `podman`, `debootstrap` and `chroot`.
    pub path: OsString,
    /// Whether this is a Debian-family system (has `/etc/debian_version`).
    pub debian: bool,
    /// Whether this process runs as root (debootstrap, mount and chroot need it).
    pub root: bool,
}

impl Probe {
    /// This machine as it is.
    pub fn system() -> Self {
        Probe {
            path: std::env::var_os("PATH").unwrap_or_default(),
            debian: Path::new("/etc/debian_version").exists(),
            // SAFETY: geteuid has no preconditions and cannot fail.
            root: unsafe { libc::geteuid() } == 0,
        }
    }

    /// The full path of `program` on [`Self::path`].
    ///
    /// ```
    /// let probe = qemuweb_wasm_build::Probe::system();
    /// assert!(probe.which("sh").is_some());
    /// assert!(probe.which("surely-not-a-program-qw").is_none());
    /// ```
    pub fn which(&self, program: &str) -> Option<PathBuf> {
        std::env::split_paths(&self.path)
            .map(|d| d.join(program))
            .find(|p| is_executable(p))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A place to run the build's step scripts.
pub trait BuildEnv {
    /// Which kind it is.
    fn kind(&self) -> EnvKind;

    /// A one-line description for logs and `qemu-build.json`.
    fn description(&self) -> String;

    /// The work directory as this process sees it (sources go to `src/`, QEMU is built in
    /// `build/qemu`, firmware lands in `firmware/`).
    fn host_work_dir(&self) -> PathBuf;

    /// The same directory as the step scripts see it.
    fn env_work_dir(&self) -> String;

    /// The steps that prepare the environment itself (build root, image, toolchain
    /// check); they run before the plan's steps and are cached like them.
    fn setup_steps(&self, plan: &BuildPlan) -> Vec<Step>;

    /// Runs one step's script at `place` with output to `log`, passing the job count in
    /// `JOBS`, and returns how it exited.
    fn run_script(
        &mut self,
        step: &str,
        place: Place,
        script: &str,
        jobs: usize,
        log: File,
    ) -> Result<ExitStatus>;

    /// Releases what the environment holds (mounts); also done on drop.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Chooses and opens an environment for `plan` under the cache directory `cache`.
///
/// Fails with [`Error::NoEnvironment`] (listing every check) when none is usable, or
/// [`Error::EnvUnavailable`] when the one asked for is not.
///
/// ```
/// use qemuweb_wasm_build::{detect, BuildPlan, EnvChoice, ErrorKind, Probe};
/// let nothing = Probe { path: "/nonexistent".into(), debian: false, root: false };
/// let plan = BuildPlan::wasm64();
/// let err = detect(&plan, EnvChoice::Auto, &nothing, "/tmp/qw-cache".as_ref()).err().unwrap();
/// assert_eq!(err.kind(), ErrorKind::NoEnvironment);
/// ```
pub fn detect(
    plan: &BuildPlan,
    choice: EnvChoice,
    probe: &Probe,
    cache: &Path,
) -> Result<Box<dyn BuildEnv>> {
    let kinds = match choice {
        EnvChoice::Auto => vec![EnvKind::Host, EnvKind::Container, EnvKind::Debootstrap],
        EnvChoice::Only(kind) => vec![kind],
    };
    let mut checked = Vec::new();
    for kind in kinds {
        let dir = cache.join(env_dir_name(kind, plan));
        let opened: std::result::Result<Box<dyn BuildEnv>, String> = match kind {
            EnvKind::Host => HostEnv::probe(plan, probe, &dir).map(|e| Box::new(e) as _),
            EnvKind::Container => ContainerEnv::probe(plan, probe, &dir).map(|e| Box::new(e) as _),
            EnvKind::Debootstrap => {
                DebootstrapEnv::probe(plan, probe, &dir).map(|e| Box::new(e) as _)
            }
        };
        match opened {
            Ok(env) => return Ok(env),
            Err(reason) => checked.push(EnvCheck { kind, reason }),
        }
    }
    match choice {
        EnvChoice::Only(kind) => Err(Error::EnvUnavailable {
            env: kind.name().to_string(),
            reason: checked.pop().map(|c| c.reason).unwrap_or_default(),
        }),
        EnvChoice::Auto => Err(Error::NoEnvironment { checked }),
    }
}

/// The directory (under the cache) of environment `kind` for `plan`: one per memory
/// model, so that the wasm64 and wasm32 plans (different build roots and toolchains) keep
/// their own work and stamps, e.g. `debootstrap-wasm64`.
///
/// ```
/// use qemuweb_wasm_build::{env::env_dir_name, BuildPlan, EnvKind};
/// assert_eq!(env_dir_name(EnvKind::Debootstrap, &BuildPlan::wasm64()), "debootstrap-wasm64");
/// assert_eq!(env_dir_name(EnvKind::Host, &BuildPlan::wasm32()), "host");
/// ```
pub fn env_dir_name(kind: EnvKind, plan: &BuildPlan) -> String {
    if plan.qemu.wasm64 {
        format!("{}-wasm64", kind.name())
    } else {
        // The wasm32 plan keeps the directory it had before there was a wasm64 plan, so
        // that its build root and steps are reused.
        kind.name().to_string()
    }
}

/// Runs `cmd` with stdout and stderr appended to `log`.
pub(crate) fn run_logged(mut cmd: Command, log: File) -> Result<ExitStatus> {
    let err_log = log.try_clone().map_err(|e| Error::io("step log", e))?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(err_log);
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.status().map_err(|e| Error::io(program, e))
}

/// Runs `program args` with a time limit; returns its success and its combined output.
pub(crate) fn run_probe(
    probe: &Probe,
    program: &Path,
    args: &[&str],
    limit: Duration,
) -> (bool, String) {
    let child = Command::new(program)
        .args(args)
        .env("PATH", &probe.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (false, e.to_string()),
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return (false, format!("no answer within {} s", limit.as_secs()));
            }
        }
    }
    match child.wait_with_output() {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
        Err(e) => (false, e.to_string()),
    }
}

/// The version in `emcc --version`'s first line, e.g. `3.1.69` from
/// `emcc (Emscripten gcc/clang-like replacement + linker emulating GNU ld) 3.1.69 ()`.
///
/// ```
/// let line = "emcc (Emscripten gcc/clang-like replacement + linker emulating GNU ld) 3.1.69 ()";
/// assert_eq!(qemuweb_wasm_build::env::emcc_version(line).as_deref(), Some("3.1.69"));
/// assert_eq!(qemuweb_wasm_build::env::emcc_version("garbage"), None);
/// ```
pub fn emcc_version(output: &str) -> Option<String> {
    output
        .lines()
        .next()?
        .split_whitespace()
        .find(|w| w.split('.').count() >= 3 && w.split('.').all(|p| p.parse::<u32>().is_ok()))
        .map(str::to_string)
}

/// Writes a step's script to `<dir>/scripts/<step>.sh` and runs it with bash on this
/// machine in `cwd`, with `JOBS` and `STEP_DIR` (the scripts directory) set.
pub(crate) fn run_on_host(
    dir: &Path,
    step: &str,
    script: &str,
    jobs: usize,
    cwd: &Path,
    log: File,
) -> Result<ExitStatus> {
    let scripts = dir.join("scripts");
    let path = scripts.join(format!("{step}.sh"));
    write_script(&path, script)?;
    std::fs::create_dir_all(cwd).map_err(|e| Error::io(cwd, e))?;
    let mut cmd = Command::new("bash");
    cmd.arg(&path)
        .env("JOBS", jobs.to_string())
        .env("STEP_DIR", &scripts)
        .current_dir(cwd);
    run_logged(cmd, log)
}

/// Writes `script` to `path` (creating its directory).
pub(crate) fn write_script(path: &Path, script: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, script).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn empty_probe(dir: &Path) -> Probe {
        Probe {
            path: dir.as_os_str().to_owned(),
            debian: true,
            root: true,
        }
    }

    #[test]
    fn no_environment_is_a_typed_error_listing_every_check() {
        let dir = tempfile::tempdir().unwrap();
        let plan = BuildPlan::wasm64();
        let err = detect(&plan, EnvChoice::Auto, &empty_probe(dir.path()), dir.path())
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::NoEnvironment);
        let Error::NoEnvironment { checked } = &err else {
            unreachable!()
        };
        let kinds: Vec<EnvKind> = checked.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [EnvKind::Host, EnvKind::Container, EnvKind::Debootstrap]
        );
        let msg = err.to_string();
        for word in ["emcc", "docker", "podman", "debootstrap"] {
            assert!(msg.contains(word), "{word} in {msg}");
        }
    }

    #[test]
    fn a_named_environment_that_is_missing_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let plan = BuildPlan::wasm64();
        let probe = Probe {
            debian: false,
            ..empty_probe(dir.path())
        };
        let err = detect(
            &plan,
            EnvChoice::Only(EnvKind::Debootstrap),
            &probe,
            dir.path(),
        )
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::EnvUnavailable);
        assert!(err.to_string().contains("Debian"), "{err}");
    }

    #[test]
    fn a_wrong_emcc_version_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let emcc = dir.path().join("emcc");
        std::fs::write(
            &emcc,
            "#!/bin/sh\necho 'emcc (Emscripten gcc/clang-like replacement + linker emulating GNU ld) 4.0.10 (abc)'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&emcc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plan = BuildPlan::wasm64();
        let err = detect(
            &plan,
            EnvChoice::Only(EnvKind::Host),
            &empty_probe(dir.path()),
            dir.path(),
        )
        .err()
        .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("4.0.10") && msg.contains("6.0.5"), "{msg}");
    }

    #[test]
    fn emcc_versions_parse() {
        assert_eq!(
            emcc_version("emcc (Emscripten gcc/clang-like replacement + linker emulating GNU ld) 4.0.10 (f3a9a9b)").as_deref(),
            Some("4.0.10")
        );
    }
}
