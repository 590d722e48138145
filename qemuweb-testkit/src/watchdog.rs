//! A watchdog for tests that run a program which may hang: a guest in QEMU, a QEMU module
//! in Node, Chromium, a server.
//!
//! [`watch`] starts the program in a process group of its own with its standard output
//! and error captured, and a thread outside it that kills the whole group when the time
//! limit passes. A program spinning on its own timer thread (as Node did, 21 minutes past
//! its own `--timeout 180`) cannot stop that thread. Every wait of a [`Watched`]
//! ([`wait_for`](Watched::wait_for), [`finish`](Watched::finish), ...) then fails the test
//! at once, with the tail of both outputs; a [`Watched`] that is dropped kills and reaps
//! the whole group, so nothing of a failed test keeps running.
//!
//! ```
//! use qemuweb_testkit::watchdog::watch;
//! use std::process::Command;
//! use std::time::Duration;
//! let mut sh = watch("sh", Command::new("sh").args(["-c", "echo ready; read x; echo got $x"]),
//!     Duration::from_secs(30));
//! sh.wait_for("ready\n", Duration::from_secs(10));
//! sh.send("hello\n");
//! let done = sh.finish();
//! assert!(done.status.success());
//! assert_eq!(done.stdout_text(), "ready\ngot hello\n");
//! ```
//!
//! A program that outlives the limit fails the test with what it said last:
//!
//! ```should_panic
//! use qemuweb_testkit::watchdog::watch;
//! use std::process::Command;
//! use std::time::Duration;
//! let sleeper = watch("sleeper", Command::new("sh").args(["-c", "echo dozing; sleep 600"]),
//!     Duration::from_secs(1));
//! sleeper.finish(); // panics: "watchdog: sleeper was still running after 1s ... dozing"
//! ```

use qemuweb_proc::{in_own_group, ProcessGroup};
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How much of each output a failure message shows.
const TAIL: usize = 4000;
/// How long killing a group may take before the failure says so.
const KILL_WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct State {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Readers still open (2 until both outputs reach their end).
    open: u8,
    /// The watchdog fired: the group was killed.
    fired: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a change until `deadline`; `None` once the deadline has passed.
    fn wait_until<'a>(
        &self,
        state: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> Option<MutexGuard<'a, State>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        Some(
            self.changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0,
        )
    }
}

/// Which output a wait looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A program started by [`watch`].
pub struct Watched {
    name: String,
    limit: Duration,
    child: Child,
    group: ProcessGroup,
    stdin: Option<ChildStdin>,
    shared: Arc<Shared>,
    stop_timer: Option<mpsc::Sender<()>>,
    timer: Option<JoinHandle<()>>,
}

/// What a program that ended in time left behind.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// All of its standard output.
    pub stdout: Vec<u8>,
    /// All of its standard error.
    pub stderr: Vec<u8>,
}

impl Finished {
    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (lossy).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Starts `cmd` under a watchdog that kills its whole process group after `limit`.
/// Standard input, output and error become pipes (`cmd`'s own settings for them are
/// replaced); `name` names the program in failure messages.
///
/// # Panics
///
/// When the program cannot be started.
pub fn watch(name: &str, cmd: &mut Command, limit: Duration) -> Watched {
    in_own_group(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("watchdog: cannot start {name} ({cmd:?}): {e}"));
    let group = ProcessGroup::of(&child);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            open: 2,
            ..State::default()
        }),
        changed: Condvar::new(),
    });
    // The readers end when the outputs close (with the group at the latest); they are
    // not joined, so a helper that escaped the group cannot hold a test.
    reader(
        child.stdout.take().expect("piped"),
        shared.clone(),
        Stream::Stdout,
    );
    reader(
        child.stderr.take().expect("piped"),
        shared.clone(),
        Stream::Stderr,
    );
    let (stop_timer, stopped) = mpsc::channel::<()>();
    let timer = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(limit) {
                shared.lock().fired = true;
                let _ = group.signal(libc::SIGKILL);
                shared.changed.notify_all();
            }
        })
    };
    Watched {
        name: name.to_string(),
        limit,
        stdin: child.stdin.take(),
        child,
        group,
        shared,
        stop_timer: Some(stop_timer),
        timer: Some(timer),
    }
}

fn reader(mut from: impl Read + Send + 'static, shared: Arc<Shared>, which: Stream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            let mut st = shared.lock();
            if n == 0 {
                st.open -= 1;
                shared.changed.notify_all();
                return;
            }
            match which {
                Stream::Stdout => st.stdout.extend_from_slice(&buf[..n]),
                Stream::Stderr => st.stderr.extend_from_slice(&buf[..n]),
            }
            shared.changed.notify_all();
        }
    });
}

/// The last `TAIL` bytes of `bytes`, as text.
fn tail(bytes: &[u8]) -> String {
    let from = bytes.len().saturating_sub(TAIL);
    let text = String::from_utf8_lossy(&bytes[from..]);
    if from > 0 {
        format!("[... {from} bytes before ...]{text}")
    } else {
        text.into_owned()
    }
}

impl Watched {
    /// The program's process id (also its process group's id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Writes `text` to the program's standard input.
    ///
    /// # Panics
    ///
    /// When standard input was closed, or the write fails (with the output's tail).
    pub fn send(&mut self, text: &str) {
        let result = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("standard input is closed")),
        };
        if let Err(e) = result {
            let state = self.shared.lock();
            self.fail(&state, &format!("cannot write {text:?} to it: {e}"));
        }
    }

    /// Closes the program's standard input (it reads end of file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Takes the program's standard input, for a caller that writes it itself; it stays
    /// open as long as the caller keeps it.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Standard output so far, as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.shared.lock().stdout).into_owned()
    }

    /// Standard error so far, as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.shared.lock().stderr).into_owned()
    }

    /// Waits up to `limit` until standard output contains `text`, and returns all of it
    /// so far.
    ///
    /// # Panics
    ///
    /// When the limit or the watchdog's passes first, or the output ends without `text`;
    /// the message holds the tail of both outputs.
    pub fn wait_for(&self, text: &str, limit: Duration) -> String {
        self.wait_until(Stream::Stdout, limit, &format!("{text:?}"), |s| {
            s.contains(text)
        })
    }

    /// [`wait_for`](Self::wait_for) on standard error.
    pub fn wait_for_stderr(&self, text: &str, limit: Duration) -> String {
        self.wait_until(Stream::Stderr, limit, &format!("{text:?}"), |s| {
            s.contains(text)
        })
    }

    /// Waits until standard output holds a whole line (ended by `\n`) containing `text`.
    pub fn wait_for_line(&self, text: &str, limit: Duration) -> String {
        self.wait_line(Stream::Stdout, text, limit)
    }

    /// [`wait_for_line`](Self::wait_for_line) on standard error.
    pub fn wait_for_stderr_line(&self, text: &str, limit: Duration) -> String {
        self.wait_line(Stream::Stderr, text, limit)
    }

    fn wait_line(&self, stream: Stream, text: &str, limit: Duration) -> String {
        self.wait_until(stream, limit, &format!("a whole line with {text:?}"), |s| {
            s.find(text).is_some_and(|at| s[at..].contains('\n'))
        })
    }

    /// Waits up to `limit` until `done` holds for the text of `stream` so far; returns
    /// that text. `what` describes the wait in a failure.
    pub fn wait_until(
        &self,
        stream: Stream,
        limit: Duration,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let bytes =
            self.wait_until_bytes(stream, limit, what, |b| done(&String::from_utf8_lossy(b)));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// [`wait_until`](Self::wait_until) on the raw bytes of `stream`.
    pub fn wait_until_bytes(
        &self,
        stream: Stream,
        limit: Duration,
        what: &str,
        done: impl Fn(&[u8]) -> bool,
    ) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        let mut state = self.shared.lock();
        loop {
            let bytes = match stream {
                Stream::Stdout => &state.stdout,
                Stream::Stderr => &state.stderr,
            };
            if done(bytes) {
                return bytes.clone();
            }
            if state.fired {
                self.fail(&state, &format!("while waiting for {what}"));
            }
            if state.open == 0 {
                self.fail(&state, &format!("its output ended without {what}"));
            }
            if deadline <= Instant::now() {
                self.fail(&state, &format!("no {what} within {limit:?}"));
            }
            state = match self.shared.wait_until(state, deadline) {
                Some(s) => s,
                None => self.shared.lock(),
            };
        }
    }

    /// Fails the test now, with `what` and the tail of both outputs.
    pub fn fail_with(&self, what: &str) -> ! {
        let state = self.shared.lock();
        self.fail(&state, what)
    }

    /// Waits for the program to end (at most until the watchdog fires) and for its
    /// outputs to close; returns how it ended and everything it wrote.
    ///
    /// # Panics
    ///
    /// When the watchdog fired, with the tail of both outputs.
    pub fn finish(mut self) -> Finished {
        self.stdin = None;
        let status = self.child.wait();
        {
            // Helpers of the program may hold its outputs open: they end with the group.
            let mut state = self.shared.lock();
            while state.open > 0 && !state.fired {
                state = self
                    .shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if state.fired {
                self.fail(&state, "before it ended");
            }
        }
        let status = status.unwrap_or_else(|e| panic!("watchdog: waiting for {}: {e}", self.name));
        let mut state = self.shared.lock();
        Finished {
            status,
            stdout: std::mem::take(&mut state.stdout),
            stderr: std::mem::take(&mut state.stderr),
        }
    }

    /// Waits up to `limit` for the program to end by itself (e.g. after a signal or the
    /// end of its input) and for its outputs to close (within the same limit); returns its
    /// status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut state = self.shared.lock();
                while state.open > 0 && !state.fired {
                    match self.shared.wait_until(state, deadline) {
                        Some(s) => state = s,
                        None => break,
                    }
                }
                return Some(status);
            }
            if Instant::now() >= deadline || self.shared.lock().fired {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the program itself (`SIGKILL`), not the rest of its group, as when it crashes;
    /// what it started is left to end by itself (or when this is dropped).
    pub fn kill_program(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to every process of the program's group.
    pub fn signal(&self, signal: i32) {
        self.group
            .signal(signal)
            .unwrap_or_else(|e| panic!("watchdog: signalling {}: {e}", self.name));
    }

    fn fail(&self, state: &State, what: &str) -> ! {
        let how = if state.fired {
            format!(
                "was still running after {:?}; the watchdog killed its process group",
                self.limit
            )
        } else {
            "failed".to_string()
        };
        panic!(
            "watchdog: {} {how} ({what})\n--- the last of its stdout ---\n{}\n--- the last of its stderr ---\n{}\n---",
            self.name,
            tail(&state.stdout),
            tail(&state.stderr)
        );
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_timer.take() {
            let _ = stop.send(());
        }
        self.stdin = None;
        if let Some(timer) = self.timer.take() {
            let _ = timer.join();
        }
        let gone = self.group.kill_and_wait(&mut self.child, KILL_WAIT);
        if !gone && !std::thread::panicking() {
            panic!(
                "watchdog: a process of {}'s group (pgid {}) still runs {KILL_WAIT:?} after SIGKILL",
                self.name,
                self.group.id()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panic_text(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let err = std::panic::catch_unwind(f).expect_err("it must fail");
        err.downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn a_hang_fails_in_time_with_the_tail_and_leaves_nothing() {
        let started = Instant::now();
        let msg = panic_text(|| {
            // A child that ignores SIGTERM and starts a helper: both must go.
            let w = watch(
                "stubborn",
                Command::new("sh").args([
                    "-c",
                    "trap '' TERM; sleep 600 & echo dozing; echo moaning >&2; wait",
                ]),
                Duration::from_secs(1),
            );
            w.wait_for("never printed", Duration::from_secs(60));
        });
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert!(msg.contains("stubborn was still running after 1s"), "{msg}");
        assert!(msg.contains("dozing") && msg.contains("moaning"), "{msg}");
    }

    #[test]
    fn finish_fails_after_the_limit_and_an_early_end_is_reported() {
        let msg = panic_text(|| {
            watch(
                "sleeper",
                Command::new("sleep").arg("600"),
                Duration::from_secs(1),
            )
            .finish();
        });
        assert!(msg.contains("watchdog: sleeper was still running"), "{msg}");
        let msg = panic_text(|| {
            let w = watch(
                "quitter",
                Command::new("sh").args(["-c", "echo bye"]),
                Duration::from_secs(30),
            );
            w.wait_for("hello", Duration::from_secs(20));
        });
        assert!(msg.contains("its output ended without \"hello\""), "{msg}");
        assert!(msg.contains("bye"), "{msg}");
    }

    #[test]
    fn dropping_kills_the_group() {
        let w = watch(
            "helpers",
            Command::new("sh").args(["-c", "sleep 600 & sleep 600 & echo up; wait"]),
            Duration::from_secs(60),
        );
        w.wait_for("up", Duration::from_secs(10));
        let group = w.group;
        assert!(group.running());
        drop(w);
        assert!(!group.running());
    }
}
