//! A Debian build root made by `debootstrap --variant=minbase`, with Debian's
//! `emscripten`, entered with `chroot`. `/proc`, `/dev`, `/dev/pts` and `/dev/shm` are
//! mounted while steps run inside it and always unmounted afterwards (also when a step
//! fails, and on drop).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use super::{run_logged, run_on_host, write_script, BuildEnv, EnvKind, Probe};
use crate::cache::mounts_under;
use crate::error::{Error, Result};
use crate::plan::BuildPlan;
use crate::steps::{sh_quote, Place, Step};

/// The mounts a chroot build needs, in mount order: (type or `--bind`, source, target).
const MOUNTS: &[(&str, &str, &str)] = &[
    ("proc", "proc", "proc"),
    ("--bind", "/dev", "dev"),
    ("--bind", "/dev/pts", "dev/pts"),
    ("tmpfs", "tmpfs", "dev/shm"),
];

/// Runs step scripts inside a debootstrap build root at `<dir>/root`.
#[derive(Debug)]
pub struct DebootstrapEnv {
    dir: PathBuf,
    suite: String,
    mounted: bool,
    stale_checked: bool,
}

impl DebootstrapEnv {
    /// Opens the debootstrap environment on a Debian-family host, as root, with
    /// `debootstrap`, `chroot` and `mount` available.
    pub(crate) fn probe(plan: &BuildPlan, probe: &Probe, dir: &Path) -> Result<Self, String> {
        if !probe.debian {
            return Err("not a Debian-family host (no /etc/debian_version)".into());
        }
        let missing: Vec<&str> = ["debootstrap", "chroot", "mount", "umount"]
            .into_iter()
            .filter(|p| probe.which(p).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} not on PATH (apt-get install debootstrap)",
                missing.join(", ")
            ));
        }
        if !probe.root {
            return Err("debootstrap, mount and chroot need root".into());
        }
        Ok(DebootstrapEnv {
            dir: dir.to_path_buf(),
            suite: plan.build_root.suite.clone(),
            mounted: false,
            stale_checked: false,
        })
    }

    /// The build root.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn mount_all(&mut self) -> Result<()> {
        let root = self.root();
        // Anything the work needs that a half-made root lacks fails in the step, not here.
        for (kind, source, target) in MOUNTS {
            let point = root.join(target);
            std::fs::create_dir_all(&point).map_err(|e| Error::io(&point, e))?;
            let mut cmd = Command::new("mount");
            if *kind == "--bind" {
                cmd.arg("--bind");
            } else {
                cmd.args(["-t", kind]);
            }
            cmd.arg(source).arg(&point);
            let result = command_result(cmd);
            self.mounted = true;
            if let Err(reason) = result {
                let _ = self.unmount_all();
                return Err(Error::Mount {
                    action: "mount",
                    path: point,
                    reason,
                });
            }
        }
        // Name resolution for apt inside the root; never write through a symlink.
        let resolv = root.join("etc/resolv.conf");
        let _ = std::fs::remove_file(&resolv);
        std::fs::copy("/etc/resolv.conf", &resolv).map_err(|e| Error::io(&resolv, e))?;
        Ok(())
    }

    /// Unmounts everything mounted below the root, deepest first, lazily if busy.
    fn unmount_all(&mut self) -> Result<()> {
        let root = self.root();
        let mut first_error = None;
        for point in mounts_under(&root) {
            let mut cmd = Command::new("umount");
            cmd.arg(&point);
            if let Err(reason) = command_result(cmd) {
                let mut lazy = Command::new("umount");
                lazy.arg("-l").arg(&point);
                if let Err(lazy_reason) = command_result(lazy) {
                    first_error.get_or_insert(Error::Mount {
                        action: "umount",
                        path: point.clone(),
                        reason: format!("{reason}; lazy: {lazy_reason}"),
                    });
                }
            }
        }
        self.mounted = false;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Runs `cmd`; `Err` carries its output when it fails.
fn command_result(mut cmd: Command) -> std::result::Result<(), String> {
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

impl BuildEnv for DebootstrapEnv {
    fn kind(&self) -> EnvKind {
        EnvKind::Debootstrap
    }

    fn description(&self) -> String {
        format!(
            "debootstrap {} build root at {} (chroot)",
            self.suite,
            self.root().display()
        )
    }

    fn host_work_dir(&self) -> PathBuf {
        self.root().join("work")
    }

    fn env_work_dir(&self) -> String {
        "/work".into()
    }

    fn setup_steps(&self, plan: &BuildPlan) -> Vec<Step> {
        let spec = &plan.build_root;
        let root = sh_quote(&self.root().to_string_lossy());
        let build_root = format!(
            "set -euxo pipefail\n\
             R={root}\n\
             # Never delete a root with file systems mounted in it.\n\
             if awk -v r=\"$R/\" 'index($5, r) == 1' /proc/self/mountinfo | grep -q .; then\n  \
               echo \"file systems are mounted below $R\" >&2; exit 1\n\
             fi\n\
             rm -rf \"$R\"\n\
             debootstrap --variant={variant} {suite} \"$R\" {mirror}{script}\n\
             printf 'deb %s %s main\\n' {mirror} {suite} > \"$R/etc/apt/sources.list\"\n\
             # The machine's clock may be past a Release file's Valid-Until.\n\
             echo 'Acquire::Check-Valid-Until \"false\";' > \"$R/etc/apt/apt.conf.d/99qemuweb-novalid\"\n\
             echo 'APT::Install-Recommends \"false\";' > \"$R/etc/apt/apt.conf.d/99qemuweb-norecommends\"\n",
            variant = sh_quote(&spec.variant),
            suite = sh_quote(&spec.suite),
            mirror = sh_quote(&spec.mirror),
            script = spec
                .script
                .as_deref()
                .map(|s| format!(" {}", sh_quote(s)))
                .unwrap_or_default(),
        );
        let packages = format!(
            "set -euxo pipefail\n\
             apt-get update\n\
             apt-get install -y --no-install-recommends {}\n\
             emcc --version | head -1 | grep -F ' {} '\n",
            spec.packages
                .iter()
                .map(|p| sh_quote(p))
                .collect::<Vec<_>>()
                .join(" "),
            plan.emscripten.version
        );
        vec![
            Step::script("build-root", Place::Host, &build_root),
            Step::script("packages", Place::Env, &packages),
        ]
    }

    fn run_script(
        &mut self,
        step: &str,
        place: Place,
        script: &str,
        jobs: usize,
        log: File,
    ) -> Result<ExitStatus> {
        if !self.stale_checked {
            // Mounts left by a run that was killed.
            self.unmount_all()?;
            self.stale_checked = true;
        }
        match place {
            Place::Host => {
                if self.mounted {
                    self.unmount_all()?;
                }
                run_on_host(&self.dir, step, script, jobs, &self.dir, log)
            }
            Place::Env => {
                let work = self.host_work_dir();
                write_script(&work.join(".steps").join(format!("{step}.sh")), script)?;
                if !self.mounted {
                    self.mount_all()?;
                }
                let mut cmd = Command::new("chroot");
                cmd.arg(self.root()).args([
                    "/usr/bin/env",
                    "-i",
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME=/root",
                    "LANG=C.UTF-8",
                    "DEBIAN_FRONTEND=noninteractive",
                ]);
                cmd.arg(format!("JOBS={jobs}"))
                    .arg("bash")
                    .arg(format!("/work/.steps/{step}.sh"));
                run_logged(cmd, log)
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.unmount_all()
    }
}

impl Drop for DebootstrapEnv {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = self.unmount_all() {
                eprintln!("qemuweb-wasm-build: {e}");
            }
        }
    }
}

/// A command that runs `program` (e.g. `node`) of the build root at `root` on `args`, in
/// a private mount namespace (`unshare --mount`) where the root has `/proc`, `/dev` and
/// `/dev/shm` and each of `binds` is bind-mounted at its own path: so host paths in `args`
/// work unchanged, and every mount vanishes with the process, even when it is killed.
///
/// The forky root's Node 24 runs Emscripten's wasm64 output, which the host's Node 20
/// cannot; Debian's Node loads parts of itself from `/usr/share/nodejs`, so it must run
/// inside the root.
///
/// ```
/// let cmd = qemuweb_wasm_build::env::chroot_command(
///     "/c/root".as_ref(), &["/tmp/x".into()], "node", &["-v".into()]);
/// assert_eq!(cmd.get_program(), "unshare");
/// ```
pub fn chroot_command(
    root: &Path,
    binds: &[PathBuf],
    program: &str,
    args: &[std::ffi::OsString],
) -> Command {
    let mut script = String::from(
        "set -eu\nR=\"$1\"; shift\nP=\"$1\"; shift\n\
         mount -t proc proc \"$R/proc\"\n\
         mount --rbind /dev \"$R/dev\"\n\
         mount -t tmpfs tmpfs \"$R/dev/shm\"\n\
         while [ \"$1\" != -- ]; do mkdir -p \"$R$1\"; mount --rbind \"$1\" \"$R$1\"; shift; done\n\
         shift\n\
         exec chroot \"$R\" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root \
         LANG=C.UTF-8 \"$P\" \"$@\"\n",
    );
    script.push('\n');
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--kill-child=SIGKILL",
        "bash",
        "-c",
        &script,
        "chroot-run",
    ])
    .arg(root)
    .arg(program);
    for b in binds {
        cmd.arg(b);
    }
    cmd.arg("--").args(args);
    cmd
}
