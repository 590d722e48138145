//! Running steps with stamps and logs, and the whole build.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::cache::{step_key, Stamp, Stamps};
use crate::env::{detect, BuildEnv, EnvChoice, Probe};
use crate::error::{Error, Result};
use crate::fetch::fetch;
use crate::output::{
    collect, default_output_dir, finished_build, output_key, CollectInput, EnvironmentInfo,
    Manifest, StepReport,
};
use crate::patches::PatchSource;
use crate::plan::BuildPlan;
use crate::steps::{build_steps, Action, Step, PATCH_FAILED_MARKER};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM stop the build between steps instead of killing the process,
/// so that the environment is always cleaned up (the debootstrap build root unmounted).
/// A step's own processes still receive a terminal's SIGINT and end it at once.
pub fn stop_on_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// How many lines of a failed step's log its error shows.
pub const TAIL_LINES: usize = 40;

/// Where [`run_steps`] keeps its state.
#[derive(Debug, Clone)]
pub struct StepState {
    /// Stamps (`<dir>/stamps`), logs (`<dir>/logs/<step>.log`) and the summary
    /// `<dir>/build.log` with every step's duration.
    pub dir: PathBuf,
    /// The download cache shared by all environments.
    pub downloads: PathBuf,
    /// `JOBS` for the scripts.
    pub jobs: usize,
    /// Where the `patches` step takes the patch files from.
    pub patches: PatchSource,
}

/// Runs `steps` in order in `env`. A step whose stamp matches its chained key is skipped;
/// once one step runs, every later one runs too. A failing step stops the run with
/// [`Error::StepFailed`] naming it and showing the tail of its log, or
/// [`Error::PatchFailed`] naming the patch that does not apply.
///
/// ```
/// use qemuweb_wasm_build::{runner::{run_steps, StepState}, HostEnv, Place, Step};
/// let dir = tempfile::tempdir().unwrap();
/// let mut env = HostEnv::new(&dir.path().join("env"));
/// let state = StepState {
///     dir: dir.path().join("state"),
///     downloads: dir.path().join("dl"),
///     jobs: 1,
///     patches: qemuweb_wasm_build::patches::PatchSource::embedded(),
/// };
/// let steps = [Step::script("hello", Place::Env, "echo hello > out.txt")];
/// let first = run_steps(&mut env, &steps, &state, &mut std::io::sink()).unwrap();
/// let again = run_steps(&mut env, &steps, &state, &mut std::io::sink()).unwrap();
/// assert!(!first[0].cached && again[0].cached);
/// ```
pub fn run_steps(
    env: &mut dyn BuildEnv,
    steps: &[Step],
    state: &StepState,
    progress: &mut dyn Write,
) -> Result<Vec<StepReport>> {
    let stamps = Stamps::new(state.dir.join("stamps"));
    let logs = state.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    let summary_path = state.dir.join("build.log");
    let mut summary = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&summary_path)
        .map_err(|e| Error::io(&summary_path, e))?;
    let _ = writeln!(
        summary,
        "== run in {} ({} steps)",
        env.description(),
        steps.len()
    );
    let mut previous = String::new();
    let mut dirty = false;
    let mut reports = Vec::new();
    for step in steps {
        let key = step_key(&previous, step);
        previous.clone_from(&key);
        if !dirty {
            if let Some(stamp) = stamps.get(&step.name).filter(|s| s.key == key) {
                let _ = writeln!(
                    progress,
                    "cached  {:<16} ({:.0} s when built)",
                    step.name, stamp.seconds
                );
                let _ = writeln!(
                    summary,
                    "{:<16} cached ({:.1} s when built)",
                    step.name, stamp.seconds
                );
                reports.push(StepReport {
                    name: step.name.clone(),
                    seconds: stamp.seconds,
                    cached: true,
                });
                continue;
            }
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(Error::Interrupted {
                before: step.name.clone(),
            });
        }
        dirty = true;
        stamps.remove(&step.name)?;
        let log_path = logs.join(format!("{}.log", step.name));
        let _ = writeln!(
            progress,
            "running {:<16} log {}",
            step.name,
            log_path.display()
        );
        let started = Instant::now();
        let result = run_one(env, step, state, &log_path);
        let seconds = started.elapsed().as_secs_f64();
        let outcome = if result.is_ok() { "ok" } else { "FAILED" };
        let _ = writeln!(summary, "{:<16} {outcome} in {seconds:.1} s", step.name);
        let _ = writeln!(progress, "{outcome:<7} {:<16} {seconds:.1} s", step.name);
        result?;
        stamps.put(&step.name, &Stamp { key, seconds })?;
        reports.push(StepReport {
            name: step.name.clone(),
            seconds,
            cached: false,
        });
    }
    Ok(reports)
}

fn run_one(env: &mut dyn BuildEnv, step: &Step, state: &StepState, log_path: &Path) -> Result<()> {
    let mut log = File::create(log_path).map_err(|e| Error::io(log_path, e))?;
    match &step.action {
        Action::Script { place, script } => {
            let status = env.run_script(&step.name, *place, script, state.jobs, log)?;
            if status.success() {
                Ok(())
            } else if let Some(patch) = failed_patch(log_path) {
                Err(Error::PatchFailed {
                    series: patch.0,
                    patch: patch.1,
                    log: log_path.to_path_buf(),
                    output: tail(log_path, TAIL_LINES),
                })
            } else {
                Err(Error::StepFailed {
                    step: step.name.clone(),
                    status: status.to_string(),
                    log: log_path.to_path_buf(),
                    tail: tail(log_path, TAIL_LINES),
                })
            }
        }
        Action::Patches(series) => {
            state.patches.check(series)?;
            let dir = env.host_work_dir().join("patches").join(&series.name);
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&dir, e))
                }
                _ => {}
            }
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let _ = writeln!(log, "patches from {}", state.patches.origin());
            for p in &series.patches {
                let bytes = state.patches.bytes(&series.name, &p.file).ok_or_else(|| {
                    Error::InvalidPatch {
                        series: series.name.clone(),
                        patch: p.file.clone(),
                        reason: format!("missing from {}", state.patches.origin()),
                    }
                })?;
                let path = dir.join(&p.file);
                std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
                let _ = writeln!(log, "{} {} {}", p.sha256, p.file, p.subject);
            }
            Ok(())
        }
        Action::Fetch(files) => {
            let src = env.host_work_dir().join("src");
            std::fs::create_dir_all(&src).map_err(|e| Error::io(&src, e))?;
            for file in files {
                let cached = fetch(file, &state.downloads, &mut log)?;
                let dest = src.join(&file.file);
                let _ = std::fs::remove_file(&dest);
                if std::fs::hard_link(&cached, &dest).is_err() {
                    std::fs::copy(&cached, &dest).map_err(|e| Error::io(&dest, e))?;
                }
            }
            Ok(())
        }
    }
}

/// The series and file of the patch a failed `qemu-source` log names
/// (`QEMUWEB-PATCH-FAILED <file>` after the `patch` output), if any.
fn failed_patch(log: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(PATCH_FAILED_MARKER))?;
    let file = line.trim().to_string();
    // The script's trace shows where the patch came from: $W/patches/<series>/<file>.
    let series = text
        .lines()
        .find_map(|l| {
            let at = l.find("/patches/")?;
            let rest = &l[at + "/patches/".len()..];
            let end = rest.find('/')?;
            Some(rest[..end].to_string())
        })
        .unwrap_or_default();
    Some((series, file))
}

/// The last `lines` lines of a file (lossy UTF-8; at most the last 64 KiB are read).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Options of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Which environment.
    pub env: EnvChoice,
    /// The cache directory (see [`crate::default_cache_dir`]).
    pub cache_dir: PathBuf,
    /// The output directory; default `<cache>/out/qemu-<version>-<key>`.
    pub out_dir: Option<PathBuf>,
    /// Parallel jobs for make and ninja.
    pub jobs: usize,
    /// What environment detection looks at.
    pub probe: Probe,
    /// Where the patch files come from (default: the ones built into the tool).
    pub patches: PatchSource,
}

impl BuildOptions {
    /// Options for this machine with the default cache, automatic environment and as
    /// many jobs as CPUs.
    pub fn new() -> Self {
        BuildOptions {
            env: EnvChoice::Auto,
            cache_dir: crate::cache::default_cache_dir(),
            out_dir: None,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            probe: Probe::system(),
            patches: PatchSource::embedded(),
        }
    }

    /// The output directory for `plan`.
    pub fn output_dir(&self, plan: &BuildPlan) -> Result<PathBuf> {
        match &self.out_dir {
            Some(dir) => Ok(dir.clone()),
            None => default_output_dir(plan, &self.cache_dir),
        }
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`build`] did.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The output directory.
    pub out_dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// True when the output already existed and nothing ran.
    pub up_to_date: bool,
}

/// Builds `plan`: checks its targets up front, returns at once when its output exists,
/// otherwise chooses an environment, runs the setup and build steps (cached) and
/// collects the output.
pub fn build(
    plan: &BuildPlan,
    opts: &BuildOptions,
    progress: &mut dyn Write,
) -> Result<BuildOutcome> {
    let started = Instant::now();
    plan.validate()?;
    opts.patches.check(&plan.qemu.patches)?;
    let key = output_key(plan)?;
    let out_dir = opts.output_dir(plan)?;
    if let Some(manifest) = finished_build(&out_dir, &key) {
        let _ = writeln!(progress, "up to date: {}", out_dir.display());
        return Ok(BuildOutcome {
            out_dir,
            manifest,
            up_to_date: true,
        });
    }
    let mut env = detect(plan, opts.env, &opts.probe, &opts.cache_dir)?;
    let _ = writeln!(progress, "environment: {}", env.description());
    let state_dir = opts
        .cache_dir
        .join(crate::env::env_dir_name(env.kind(), plan));
    // Builds from other checkouts on this machine share the cache: one at a time per
    // environment directory.
    let _lock = lock_dir(&state_dir, progress)?;
    if let Some(manifest) = finished_build(&out_dir, &key) {
        let _ = writeln!(progress, "built meanwhile: {}", out_dir.display());
        return Ok(BuildOutcome {
            out_dir,
            manifest,
            up_to_date: true,
        });
    }
    let cpu = plan.validate()?;
    let mut steps = env.setup_steps(plan);
    steps.extend(build_steps(plan, cpu, &env.env_work_dir()));
    let state = StepState {
        dir: state_dir.clone(),
        downloads: opts.cache_dir.join("downloads"),
        jobs: opts.jobs.max(1),
        patches: opts.patches.clone(),
    };
    let ran = run_steps(env.as_mut(), &steps, &state, progress);
    let finished = env.finish();
    let reports = ran?;
    finished?;
    let work = env.host_work_dir();
    let emcc = std::fs::read_to_string(work.join("build/emcc-version.txt")).unwrap_or_default();
    let manifest = collect(
        plan,
        &out_dir,
        CollectInput {
            work: &work,
            environment: EnvironmentInfo {
                kind: env.kind(),
                description: env.description(),
                emcc: emcc.trim().to_string(),
            },
            steps: reports,
            run_seconds: started.elapsed().as_secs_f64(),
        },
    )?;
    let _ = writeln!(
        progress,
        "built in {:.0} s (steps total {:.0} s): {}",
        started.elapsed().as_secs_f64(),
        manifest.build_seconds,
        out_dir.display()
    );
    Ok(BuildOutcome {
        out_dir,
        manifest,
        up_to_date: false,
    })
}

/// An exclusive lock on `<dir>.lock`, held until the file is dropped; waits (saying so)
/// while another build holds it.
fn lock_dir(dir: &Path, progress: &mut dyn Write) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.with_extension("lock");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let _ = writeln!(
            progress,
            "waiting for another build that holds {}",
            path.display()
        );
        // SAFETY: as above; this call blocks until the other build ends.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(&path, std::io::Error::last_os_error()));
        }
    }
    Ok(file)
}

/// The output directory of `plan` if it holds a finished build, else [`Error::NotBuilt`].
pub fn built_output(plan: &BuildPlan, opts: &BuildOptions) -> Result<PathBuf> {
    let dir = opts.output_dir(plan)?;
    match finished_build(&dir, &output_key(plan)?) {
        Some(_) => Ok(dir),
        None => Err(Error::NotBuilt(dir)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, HostEnv, Place};

    /// A tiny plan of real shell steps: each appends its name to `ran.txt` in the work dir.
    fn fake_steps(third: &str) -> Vec<Step> {
        vec![
            Step::script("one", Place::Env, "echo one >> ran.txt"),
            Step::script("two", Place::Env, "echo two >> ran.txt; echo 2 > two.out"),
            Step::script(
                "three",
                Place::Env,
                &format!("echo three >> ran.txt; echo {third} > three.out"),
            ),
            Step::script(
                "four",
                Place::Env,
                "echo four >> ran.txt; cat two.out three.out > four.out",
            ),
        ]
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        env: HostEnv,
        state: StepState,
        work: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let env = HostEnv::new(&dir.path().join("env"));
        let work = env.host_work_dir();
        let state = StepState {
            dir: dir.path().join("state"),
            downloads: dir.path().join("downloads"),
            jobs: 1,
            patches: PatchSource::embedded(),
        };
        Fixture {
            _dir: dir,
            env,
            state,
            work,
        }
    }

    fn ran(f: &Fixture) -> Vec<String> {
        let text = std::fs::read_to_string(f.work.join("ran.txt")).unwrap_or_default();
        let _ = std::fs::remove_file(f.work.join("ran.txt"));
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn an_unchanged_plan_runs_nothing_and_a_change_reruns_exactly_the_later_steps() {
        let mut f = fixture();
        let reports =
            run_steps(&mut f.env, &fake_steps("3"), &f.state, &mut std::io::sink()).unwrap();
        assert_eq!(ran(&f), ["one", "two", "three", "four"]);
        assert!(reports.iter().all(|r| !r.cached));

        let reports =
            run_steps(&mut f.env, &fake_steps("3"), &f.state, &mut std::io::sink()).unwrap();
        assert!(ran(&f).is_empty());
        assert!(reports.iter().all(|r| r.cached));

        run_steps(
            &mut f.env,
            &fake_steps("THREE"),
            &f.state,
            &mut std::io::sink(),
        )
        .unwrap();
        assert_eq!(ran(&f), ["three", "four"]);
        assert_eq!(
            std::fs::read_to_string(f.work.join("four.out")).unwrap(),
            "2\nTHREE\n"
        );

        // Back to the first plan: step three's stamp is the other plan's, so three and four rerun.
        run_steps(&mut f.env, &fake_steps("3"), &f.state, &mut std::io::sink()).unwrap();
        assert_eq!(ran(&f), ["three", "four"]);
        let summary = std::fs::read_to_string(f.state.dir.join("build.log")).unwrap();
        assert!(summary.contains("three            ok in"), "{summary}");
    }

    #[test]
    fn a_failed_step_is_named_with_its_log_tail_and_is_retried_next_time() {
        let mut f = fixture();
        let mut steps = fake_steps("3");
        steps[2] = Step::script(
            "three",
            Place::Env,
            "set -x; echo three >> ran.txt; echo 'glib: config.h broke' >&2; exit 3",
        );
        let err = run_steps(&mut f.env, &steps, &f.state, &mut std::io::sink()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StepFailed);
        assert_eq!(err.failure_label(), "three");
        let msg = err.to_string();
        assert!(
            msg.contains("step three failed") && msg.contains("glib: config.h broke"),
            "{msg}"
        );
        assert!(
            msg.contains("+ exit 3"),
            "the log has the traced commands: {msg}"
        );
        assert_eq!(ran(&f), ["one", "two", "three"]);

        run_steps(&mut f.env, &fake_steps("3"), &f.state, &mut std::io::sink()).unwrap();
        assert_eq!(ran(&f), ["three", "four"]);
    }

    #[test]
    fn the_fetch_step_puts_verified_sources_in_the_work_dir() {
        use sha2::Digest;
        let mut f = fixture();
        let origin = f.state.dir.with_file_name("origin.tar");
        std::fs::write(&origin, b"tarball").unwrap();
        let file = crate::SourceFile {
            file: "dep.tar".into(),
            url: format!("file://{}", origin.display()),
            sha256: crate::plan::hex(&sha2::Sha256::digest(b"tarball")),
        };
        let steps = [Step {
            name: "fetch".into(),
            action: Action::Fetch(vec![file.clone()]),
        }];
        run_steps(&mut f.env, &steps, &f.state, &mut std::io::sink()).unwrap();
        assert_eq!(
            std::fs::read(f.work.join("src/dep.tar")).unwrap(),
            b"tarball"
        );

        let bad = crate::SourceFile {
            sha256: "0".repeat(64),
            ..file
        };
        let steps = [Step {
            name: "fetch".into(),
            action: Action::Fetch(vec![bad]),
        }];
        let err = run_steps(&mut f.env, &steps, &f.state, &mut std::io::sink()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ChecksumMismatch);
    }

    /// A plan whose "QEMU" is a tiny tarball (a `configure` file and the device config
    /// directories) and whose series is `patches` (name, text) in a temporary source.
    fn tiny_qemu(dir: &Path, patches: &[(&str, String)]) -> (BuildPlan, PatchSource) {
        let tree = dir.join("qemu-tiny");
        for t in ["x86_64-softmmu", "aarch64-softmmu"] {
            std::fs::create_dir_all(tree.join("configs/devices").join(t)).unwrap();
        }
        std::fs::write(tree.join("configure"), "line one\nline two\nline three\n").unwrap();
        let tarball = dir.join("qemu-tiny.tar.xz");
        let ok = std::process::Command::new("tar")
            .arg("-cJf")
            .arg(&tarball)
            .arg("-C")
            .arg(dir)
            .arg("qemu-tiny")
            .status()
            .unwrap();
        assert!(ok.success());
        let series_dir = dir.join("patches/tiny");
        std::fs::create_dir_all(&series_dir).unwrap();
        let mut list = String::new();
        for (name, text) in patches {
            std::fs::write(series_dir.join(name), text).unwrap();
            list.push_str(name);
            list.push('\n');
        }
        std::fs::write(series_dir.join("series"), list).unwrap();
        let source = PatchSource::from_dir(&dir.join("patches")).unwrap();
        let mut plan = BuildPlan::wasm64();
        plan.qemu.source = crate::SourceFile {
            file: "qemu-tiny.tar.xz".into(),
            url: format!("file://{}", tarball.display()),
            sha256: crate::fetch::sha256_file(&tarball).unwrap(),
        };
        plan.qemu.patches = source.series("tiny").unwrap();
        (plan, source)
    }

    fn change(from: &str, to: &str) -> String {
        format!(
            "Subject: change {from}\nWhat: w\nWhy: y\nUpstream: u\n---\n\
             diff --git a/configure b/configure\n--- a/configure\n+++ b/configure\n\
             @@ -1,3 +1,3 @@\n line one\n-{from}\n+{to}\n line three\n"
        )
    }

    /// Runs fetch, patches and qemu-source of `plan` on the host.
    fn source_steps(
        f: &mut Fixture,
        plan: &BuildPlan,
        source: PatchSource,
    ) -> Result<Vec<StepReport>> {
        f.state.patches = source;
        let mut steps = vec![Step {
            name: "fetch".into(),
            action: Action::Fetch(vec![plan.qemu.source.clone()]),
        }];
        let work = f.work.to_string_lossy().into_owned();
        steps.extend(
            build_steps(plan, plan.validate().unwrap(), &work)
                .into_iter()
                .filter(|s| s.name == "patches" || s.name == "qemu-source"),
        );
        run_steps(&mut f.env, &steps, &f.state, &mut std::io::sink())
    }

    #[test]
    fn the_series_is_applied_in_order_with_the_device_sets() {
        let mut f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let (plan, source) = tiny_qemu(
            dir.path(),
            &[
                ("0001-two.patch", change("line two", "line 2")),
                ("0002-again.patch", change("line 2", "line II")),
            ],
        );
        source_steps(&mut f, &plan, source).unwrap();
        let tree = f.work.join("build/qemu-src");
        assert_eq!(
            std::fs::read_to_string(tree.join("configure")).unwrap(),
            "line one\nline II\nline three\n"
        );
        let mak = std::fs::read_to_string(tree.join("configs/devices/aarch64-softmmu/qemuweb.mak"))
            .unwrap();
        assert!(mak.starts_with("CONFIG_ARM_VIRT=y\n"), "{mak}");
    }

    #[test]
    fn a_patch_that_no_longer_applies_is_a_typed_error_naming_it() {
        let mut f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let (plan, source) = tiny_qemu(
            dir.path(),
            &[
                ("0001-two.patch", change("line two", "line 2")),
                ("0002-stale.patch", change("line two", "line deux")),
            ],
        );
        let err = source_steps(&mut f, &plan, source).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PatchFailed, "{err}");
        assert_eq!(err.failure_label(), "patch 0002-stale.patch");
        let msg = err.to_string();
        assert!(
            msg.contains("patch 0002-stale.patch of series tiny does not apply")
                && msg.contains("FAILED"),
            "{msg}"
        );
    }

    #[test]
    fn patches_other_than_the_plans_are_refused_before_anything_runs() {
        let mut f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let (plan, _) = tiny_qemu(
            dir.path(),
            &[("0001-two.patch", change("line two", "line 2"))],
        );
        std::fs::write(
            dir.path().join("patches/tiny/0001-two.patch"),
            change("line two", "line 3"),
        )
        .unwrap();
        let edited = PatchSource::from_dir(&dir.path().join("patches")).unwrap();
        let err = source_steps(&mut f, &plan, edited).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPatch, "{err}");
        assert!(err.to_string().contains("0001-two.patch"), "{err}");
        assert!(!f.work.join("build/qemu-src").exists());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        assert_eq!(tail(&p, 2), "line 99\nline 100");
        assert_eq!(tail(&dir.path().join("missing"), 2), "");
    }

    #[test]
    fn refused_targets_fail_before_any_environment_is_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let opts = BuildOptions {
            cache_dir: dir.path().to_path_buf(),
            probe: Probe {
                path: dir.path().as_os_str().to_owned(),
                debian: false,
                root: false,
            },
            ..BuildOptions::new()
        };
        let plan = BuildPlan::wasm32().with_targets(&["x86_64-softmmu"]);
        let err = build(&plan, &opts, &mut std::io::sink()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TargetRefused);
        let err = build(&BuildPlan::wasm64(), &opts, &mut std::io::sink()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoEnvironment);
        assert_eq!(
            built_output(&BuildPlan::wasm64(), &opts)
                .unwrap_err()
                .kind(),
            ErrorKind::NotBuilt
        );
    }
}
