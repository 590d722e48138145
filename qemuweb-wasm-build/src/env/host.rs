//! Emscripten already installed on this machine: scripts run with bash directly.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use super::{emcc_version, run_on_host, run_probe, BuildEnv, EnvKind, Probe};
use crate::error::Result;
use crate::plan::BuildPlan;
use crate::steps::{Place, Step};

/// Runs step scripts with `bash` on this machine, in `<dir>/work`.
///
/// [`HostEnv::new`] makes one without any toolchain check, for running plain shell steps:
///
/// ```
/// use qemuweb_wasm_build::{BuildEnv, HostEnv, Place};
/// let dir = tempfile::tempdir().unwrap();
/// let mut env = HostEnv::new(dir.path());
/// let log = std::fs::File::create(dir.path().join("log")).unwrap();
/// let status = env.run_script("hi", Place::Env, "echo hi", 1, log).unwrap();
/// assert!(status.success());
/// ```
#[derive(Debug, Clone)]
pub struct HostEnv {
    dir: PathBuf,
    emcc: Option<String>,
}

impl HostEnv {
    /// A host environment keeping its work directory and scripts under `dir`.
    pub fn new(dir: &Path) -> Self {
        HostEnv {
            dir: dir.to_path_buf(),
            emcc: None,
        }
    }

    /// Opens the host environment if `emcc` is on the probe's `PATH` and reports the
    /// plan's Emscripten version; otherwise says why not.
    pub(crate) fn probe(plan: &BuildPlan, probe: &Probe, dir: &Path) -> Result<Self, String> {
        let emcc = probe.which("emcc").ok_or("emcc is not on PATH")?;
        let (ok, out) = run_probe(probe, &emcc, &["--version"], Duration::from_secs(120));
        if !ok {
            return Err(format!(
                "`{} --version` failed: {}",
                emcc.display(),
                out.trim()
            ));
        }
        let found = emcc_version(&out).unwrap_or_else(|| "unknown".into());
        if found != plan.emscripten.version {
            return Err(format!(
                "{} is Emscripten {found}; the plan was tested with {}",
                emcc.display(),
                plan.emscripten.version
            ));
        }
        Ok(HostEnv {
            dir: dir.to_path_buf(),
            emcc: Some(format!("{} {found}", emcc.display())),
        })
    }
}

impl BuildEnv for HostEnv {
    fn kind(&self) -> EnvKind {
        EnvKind::Host
    }

    fn description(&self) -> String {
        match &self.emcc {
            Some(emcc) => format!("host, {emcc}"),
            None => "host (no toolchain check)".into(),
        }
    }

    fn host_work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    fn env_work_dir(&self) -> String {
        self.host_work_dir().to_string_lossy().into_owned()
    }

    fn setup_steps(&self, plan: &BuildPlan) -> Vec<Step> {
        let script = format!(
            "set -euxo pipefail\n\
             for tool in emcc em++ emar emconfigure emmake meson ninja pkg-config autoreconf \
             libtoolize dtc python3 tar make; do command -v \"$tool\"; done\n\
             emcc --version | head -1 | grep -F ' {} '\n",
            plan.emscripten.version
        );
        vec![Step::script("toolchain", Place::Host, &script)]
    }

    fn run_script(
        &mut self,
        step: &str,
        _place: Place,
        script: &str,
        jobs: usize,
        log: File,
    ) -> Result<ExitStatus> {
        run_on_host(&self.dir, step, script, jobs, &self.host_work_dir(), log)
    }
}
