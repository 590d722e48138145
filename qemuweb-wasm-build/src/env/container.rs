//! A container runtime (docker or podman) with the emsdk image, as QEMU's own
//! Emscripten recipe uses: the work directory is mounted at `/work`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{run_logged, run_on_host, run_probe, write_script, BuildEnv, EnvKind, Probe};
use crate::error::Result;
use crate::plan::BuildPlan;
use crate::steps::{sh_quote, Place, Step};

/// Runs step scripts in a container built from the plan's emsdk image.
#[derive(Debug, Clone)]
pub struct ContainerEnv {
    dir: PathBuf,
    runtime: PathBuf,
    image: String,
}

/// The tools the recipe needs on top of the emsdk image (Ubuntu based). meson comes from
/// pip because QEMU 10 needs meson >= 1.5.
fn dockerfile(plan: &BuildPlan) -> String {
    format!(
        "FROM {}\n\
         RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
         ninja-build pkg-config autoconf automake libtool libltdl-dev texinfo device-tree-compiler \
         python3 python3-pip python3-venv bzip2 xz-utils file dpkg && rm -rf /var/lib/apt/lists/*\n\
         RUN pip3 install --no-cache-dir meson==1.7.0\n",
        plan.emscripten.container_image
    )
}

impl ContainerEnv {
    /// Opens the container environment if `docker` or `podman` answers `info`.
    pub(crate) fn probe(plan: &BuildPlan, probe: &Probe, dir: &Path) -> Result<Self, String> {
        let mut reasons = Vec::new();
        for name in ["docker", "podman"] {
            let Some(runtime) = probe.which(name) else {
                reasons.push(format!("{name} is not on PATH"));
                continue;
            };
            let (ok, out) = run_probe(probe, &runtime, &["info"], Duration::from_secs(30));
            if ok {
                let tag = &crate::plan::hex(&Sha256::digest(dockerfile(plan).as_bytes()))[..12];
                return Ok(ContainerEnv {
                    dir: dir.to_path_buf(),
                    runtime,
                    image: format!("qemuweb-wasm-build:{tag}"),
                });
            }
            let last = out.trim().lines().last().unwrap_or("").to_string();
            reasons.push(format!("`{name} info` failed: {last}"));
        }
        Err(reasons.join("; "))
    }
}

impl BuildEnv for ContainerEnv {
    fn kind(&self) -> EnvKind {
        EnvKind::Container
    }

    fn description(&self) -> String {
        format!("container, {} image {}", self.runtime.display(), self.image)
    }

    fn host_work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    fn env_work_dir(&self) -> String {
        "/work".into()
    }

    fn setup_steps(&self, plan: &BuildPlan) -> Vec<Step> {
        let script = format!(
            "set -euxo pipefail\n\
             cat > \"$STEP_DIR/Dockerfile\" <<'DOCKERFILE'\n{}DOCKERFILE\n\
             {} build -t {} \"$STEP_DIR\"\n\
             {} run --rm {} emcc --version | head -1 | grep -F ' {} '\n",
            dockerfile(plan),
            sh_quote(&self.runtime.to_string_lossy()),
            sh_quote(&self.image),
            sh_quote(&self.runtime.to_string_lossy()),
            sh_quote(&self.image),
            plan.emscripten.version,
        );
        vec![Step::script("image", Place::Host, &script)]
    }

    fn run_script(
        &mut self,
        step: &str,
        place: Place,
        script: &str,
        jobs: usize,
        log: File,
    ) -> Result<ExitStatus> {
        let work = self.host_work_dir();
        std::fs::create_dir_all(&work).map_err(|e| crate::Error::io(&work, e))?;
        match place {
            Place::Host => run_on_host(&self.dir, step, script, jobs, &self.dir, log),
            Place::Env => {
                write_script(&work.join(".steps").join(format!("{step}.sh")), script)?;
                let mut cmd = Command::new(&self.runtime);
                cmd.args(["run", "--rm", "-e"])
                    .arg(format!("JOBS={jobs}"))
                    .arg("-v")
                    .arg(format!("{}:/work", work.display()))
                    .args(["-w", "/work", &self.image, "bash"])
                    .arg(format!("/work/.steps/{step}.sh"));
                run_logged(cmd, log)
            }
        }
    }
}
