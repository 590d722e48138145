//! Child processes in a process group of their own, ended as a whole.
//!
//! - [`in_own_group`]: makes a [`Command`] start its program as the leader of a new
//!   process group, so every helper it starts (and does not move elsewhere) shares it.
//! - [`die_with_parent`]: the program is killed when the process that started it dies
//!   (Linux), so a group of its own does not let it outlive a killed parent.
//! - [`ProcessGroup`]: signals the whole group and waits until no process of it runs;
//!   [`ProcessGroup::kill_and_wait`] is the "nothing of it is left" that must come before
//!   a directory the processes use is removed or handed to the next run.
//!
//! A process that leaves the group on purpose (`setsid`, QEMU's `-daemonize`) is not
//! followed. Unix only; on other targets the crate is empty.
#![cfg(unix)]
#![warn(missing_docs)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How often [`ProcessGroup::wait_gone`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// Makes `cmd` start its program as the leader of a new process group (its pgid is its
/// pid), and returns `cmd` for chaining.
///
/// ```
/// use qemuweb_proc::{in_own_group, ProcessGroup};
/// use std::process::Command;
/// let mut child = in_own_group(&mut Command::new("true")).spawn().unwrap();
/// let group = ProcessGroup::of(&child);
/// assert_eq!(group.id(), child.id() as i32);
/// child.wait().unwrap();
/// ```
pub fn in_own_group(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0)
}

/// Makes `cmd`'s program get `SIGKILL` when the thread that starts it ends (with this
/// process, or killed from outside: a watchdog's `SIGKILL` included), on Linux; elsewhere
/// it does nothing. For a program in a group of its own (so a group kill of this one does
/// not reach it) that must still not outlive it, e.g. a browser whose helpers end when
/// it does. Returns `cmd` for chaining.
///
/// ```
/// use qemuweb_proc::{die_with_parent, in_own_group};
/// use std::process::Command;
/// let mut child = die_with_parent(in_own_group(&mut Command::new("true"))).spawn().unwrap();
/// assert!(child.wait().unwrap().success());
/// ```
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid has no memory effects.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    cmd
}

/// The process group a child leads (started through [`in_own_group`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessGroup {
    pgid: i32,
}

impl ProcessGroup {
    /// The group `child` leads; `child` must have been started through [`in_own_group`].
    pub fn of(child: &Child) -> Self {
        Self {
            pgid: child.id() as i32,
        }
    }

    /// The group's id.
    pub fn id(&self) -> i32 {
        self.pgid
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to every process of the group. A group with
    /// no process left is not an error.
    ///
    /// # Errors
    ///
    /// The `kill` system call's error other than "no such process" (e.g. `EPERM`).
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        if self.pgid <= 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to signal process group {}", self.pgid),
            ));
        }
        // SAFETY: kill has no memory effects; a negative pid addresses the group only.
        if unsafe { libc::kill(-self.pgid, signal) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(e)
        }
    }

    /// Whether a process of the group still runs. Zombies (exited, not yet reaped) do not
    /// count: they hold no files and write nothing.
    ///
    /// ```
    /// use qemuweb_proc::{in_own_group, ProcessGroup};
    /// use std::process::Command;
    /// let mut child = in_own_group(Command::new("sleep").arg("30")).spawn().unwrap();
    /// let group = ProcessGroup::of(&child);
    /// assert!(group.running());
    /// assert!(group.kill_and_wait(&mut child, std::time::Duration::from_secs(10)));
    /// assert!(!group.running());
    /// ```
    pub fn running(&self) -> bool {
        match std::fs::read_dir("/proc") {
            Ok(entries) if std::path::Path::new("/proc/self/stat").exists() => entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .any(|e| {
                    std::fs::read_to_string(e.path().join("stat"))
                        .ok()
                        .and_then(|s| parse_stat(&s))
                        .is_some_and(|(state, pgrp)| pgrp == self.pgid && !is_dead(state))
                }),
            // Without /proc: whether any process (zombies included) has the group.
            // SAFETY: signal 0 only checks for existence.
            _ => (unsafe { libc::kill(-self.pgid, 0) }) == 0,
        }
    }

    /// Waits up to `limit` until no process of the group runs; returns whether that
    /// happened.
    pub fn wait_gone(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if !self.running() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills every process of the group (`SIGKILL`), reaps `child` (the leader) and waits
    /// up to `limit` until no process of the group runs; returns whether none does.
    pub fn kill_and_wait(&self, child: &mut Child, limit: Duration) -> bool {
        let _ = self.signal(libc::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        self.wait_gone(limit)
    }

    /// Asks every process of the group to end (`SIGTERM`), gives them `grace`, then kills
    /// what is left as [`kill_and_wait`](Self::kill_and_wait) does; returns whether no
    /// process of the group runs.
    pub fn terminate(&self, child: &mut Child, grace: Duration, limit: Duration) -> bool {
        let _ = self.signal(libc::SIGTERM);
        if self.wait_gone(grace) {
            let _ = child.wait();
            return true;
        }
        self.kill_and_wait(child, limit)
    }
}

/// `(state, pgrp)` from the text of `/proc/PID/stat`: the fields after the command name
/// (which may itself hold spaces and parentheses, so the last `)` ends it).
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Zombie or dead: the process runs no more.
fn is_dead(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_odd_command_names() {
        assert_eq!(
            parse_stat("123 (a) b) (c) S 1 4567 4567 0 -1"),
            Some(('S', 4567))
        );
        assert_eq!(parse_stat("9 (zombie) Z 1 9 9"), Some(('Z', 9)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_whole_group_goes_including_helpers_the_leader_started() {
        // The shell starts two helpers and waits: killing the shell alone would leave them.
        let mut child = in_own_group(Command::new("sh").args(["-c", "sleep 60 & sleep 60 & wait"]))
            .spawn()
            .unwrap();
        let group = ProcessGroup::of(&child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let helpers = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|s| s.contains("(sleep)"))
                .filter_map(|s| parse_stat(&s))
                .filter(|&(st, pg)| pg == group.id() && !is_dead(st))
                .count()
        };
        while helpers() < 2 {
            assert!(Instant::now() < deadline, "the helpers did not start");
            std::thread::sleep(POLL);
        }
        assert!(group.kill_and_wait(&mut child, Duration::from_secs(10)));
        assert_eq!(helpers(), 0);
        assert!(!group.running());
    }

    #[test]
    fn terminate_lets_a_process_that_obeys_sigterm_end() {
        let mut child = in_own_group(Command::new("sleep").arg("60"))
            .spawn()
            .unwrap();
        let group = ProcessGroup::of(&child);
        assert!(group.terminate(&mut child, Duration::from_secs(10), Duration::from_secs(10)));
        assert!(!group.running());
    }

    #[test]
    fn refuses_to_signal_init_or_everyone() {
        for pgid in [0, 1, -1] {
            assert!(ProcessGroup { pgid }.signal(0).is_err());
        }
    }
}
