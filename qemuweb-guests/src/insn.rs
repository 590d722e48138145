//! Instruction-level test guests: bare-metal programs that run instruction tests on an
//! x86_64 (`-M pc`) or aarch64 (`-M virt -cpu cortex-a57`) CPU and print one line per
//! test on the serial port, so that two QEMU builds (the WebAssembly JIT and native TCG)
//! can be compared line by line.
//!
//! They cover arithmetic and flags, multiplication and division, shifts and rotates, bit
//! operations, loads and stores of every width and alignment (inside a page and across a
//! page boundary), string and SIMD instructions, exclusives, exceptions (divide error,
//! undefined instruction, breakpoints, system calls, general protection, page faults and
//! aborts on read, write, fetch and page-crossing accesses), self-modifying code, a timer
//! interrupt and a long hot loop. Each line is a test name followed by 64-bit hex values;
//! the last line is [`INSN_DONE`].
//!
//! ```
//! let disk = qemuweb_guests::x86_insn_disk();
//! assert_eq!(disk.len() as u64, qemuweb_guests::X86_INSN_SECTORS * 512);
//! assert_eq!(&disk[510..512], &[0x55, 0xaa]);
//! let kernel = qemuweb_guests::aarch64_insn_kernel();
//! assert_eq!(&kernel[0x38..0x3c], b"ARM\x64");
//! ```

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

static X86_INSN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/x86-insn.bin"));
static AARCH64_INSN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/aarch64-insn.img"));

/// The first line the x86_64 instruction guest prints.
pub const X86_INSN_BANNER: &str = "x86-insn v1";
/// The first line the aarch64 instruction guest prints.
pub const AARCH64_INSN_BANNER: &str = "aarch64-insn v1";
/// The last line both instruction guests print.
pub const INSN_DONE: &str = "ALL DONE";
/// Size of [`x86_insn_disk`] in sectors.
pub const X86_INSN_SECTORS: u64 = 64;
/// Sectors the x86 instruction guest's boot sector loads after itself.
const X86_INSN_LOADED: usize = 48;

/// The x86_64 instruction guest as a raw BIOS-bootable disk (boot it as an IDE disk on
/// `-M pc`, see [`x86_insn_qemu_args`]).
pub fn x86_insn_disk() -> Vec<u8> {
    assert!(
        X86_INSN.len() <= (1 + X86_INSN_LOADED) * crate::SECTOR_SIZE,
        "x86-insn.asm outgrew the {X86_INSN_LOADED} sectors its boot sector loads"
    );
    let mut disk = X86_INSN.to_vec();
    disk.resize(X86_INSN_SECTORS as usize * crate::SECTOR_SIZE, 0);
    disk
}

/// The aarch64 instruction guest: an arm64 Linux `Image` for `-M virt -kernel` (see
/// [`aarch64_insn_qemu_args`]).
pub fn aarch64_insn_kernel() -> &'static [u8] {
    AARCH64_INSN
}

/// The QEMU arguments that run the x86_64 instruction guest from `disk` (a file holding
/// [`x86_insn_disk`]) with its serial port on standard output.
///
/// ```
/// let args = qemuweb_guests::x86_insn_qemu_args(std::path::Path::new("/t/x86-insn.img"));
/// assert!(args.contains(&"file=/t/x86-insn.img,format=raw,if=ide".to_string()));
/// ```
pub fn x86_insn_qemu_args(disk: &Path) -> Vec<String> {
    [
        "-M", "pc", "-m", "64", "-nic", "none", "-display", "none", "-monitor", "none", "-serial",
        "stdio", "-drive",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("file={},format=raw,if=ide", disk.display())])
    .collect()
}

/// The QEMU arguments that run the aarch64 instruction guest from `kernel` (a file
/// holding [`aarch64_insn_kernel`]) with its UART on standard output.
///
/// ```
/// let args = qemuweb_guests::aarch64_insn_qemu_args(std::path::Path::new("/t/a.img"));
/// assert_eq!(args[..4], ["-M", "virt", "-cpu", "cortex-a57"]);
/// ```
pub fn aarch64_insn_qemu_args(kernel: &Path) -> Vec<String> {
    [
        "-M",
        "virt",
        "-cpu",
        "cortex-a57",
        "-m",
        "128",
        "-nic",
        "none",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-kernel",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([kernel.display().to_string()])
    .collect()
}

/// Why a serial log is not a complete run of an instruction guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsnLogError {
    /// The banner never appeared.
    NoBanner,
    /// The guest hit an exception no test expected (the line it printed).
    Unexpected(String),
    /// The log ends before [`INSN_DONE`] (the number of result lines seen).
    Incomplete(usize),
}

impl fmt::Display for InsnLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsnLogError::NoBanner => write!(f, "no banner in the serial log"),
            InsnLogError::Unexpected(line) => write!(f, "unexpected exception: {line}"),
            InsnLogError::Incomplete(n) => {
                write!(f, "the log ends after {n} result lines, before {INSN_DONE}")
            }
        }
    }
}

impl std::error::Error for InsnLogError {}

/// The result lines of an instruction guest's serial log: the lines after its banner and
/// before [`INSN_DONE`], without line ends (anything before the banner, such as firmware
/// output, is ignored).
///
/// ```
/// let log = "SeaBIOS\r\nx86-insn v1\r\nadd8 00ff\r\nALL DONE\r\n";
/// assert_eq!(qemuweb_guests::insn_results(log, qemuweb_guests::X86_INSN_BANNER).unwrap(), ["add8 00ff"]);
/// ```
pub fn insn_results(log: &str, banner: &str) -> Result<Vec<String>, InsnLogError> {
    let mut lines = log.lines().map(|l| l.trim_end_matches('\r'));
    if !lines.any(|l| l.ends_with(banner)) {
        return Err(InsnLogError::NoBanner);
    }
    let mut results = Vec::new();
    for line in lines {
        if line == INSN_DONE {
            return Ok(results);
        }
        if line.starts_with("UNEXPECTED") {
            return Err(InsnLogError::Unexpected(line.to_string()));
        }
        results.push(line.to_string());
    }
    Err(InsnLogError::Incomplete(results.len()))
}

/// The lines where two runs differ, as `(reference, other)` pairs (`None` where one
/// run has fewer lines).
///
/// ```
/// let a = vec!["add8 1".to_string(), "sub8 2".to_string()];
/// let b = vec!["add8 1".to_string(), "sub8 3".to_string()];
/// assert_eq!(qemuweb_guests::insn_mismatches(&a, &b), [(Some("sub8 2".to_string()), Some("sub8 3".to_string()))]);
/// ```
pub fn insn_mismatches(
    reference: &[String],
    other: &[String],
) -> Vec<(Option<String>, Option<String>)> {
    (0..reference.len().max(other.len()))
        .filter_map(|i| {
            let (a, b) = (reference.get(i), other.get(i));
            (a != b).then(|| (a.cloned(), b.cloned()))
        })
        .collect()
}

/// The CRC-32 the instruction guests print last (`crc32`): four passes over the 16 KiB
/// they generate from `0x0123456789abcdef` (each 64-bit word rotated right by 7 and
/// multiplied by `0x100000001b3` gives the next), the CRC register carried over passes.
///
/// ```
/// assert_eq!(qemuweb_guests::insn_crc32(), 0x438d_c67b);
/// ```
pub fn insn_crc32() -> u32 {
    let mut data = Vec::with_capacity(0x4000);
    let mut v: u64 = 0x0123_4567_89ab_cdef;
    for _ in 0..0x4000 / 8 {
        data.extend_from_slice(&v.to_le_bytes());
        v = v.rotate_right(7).wrapping_mul(0x100_0000_01b3);
    }
    let mut crc = crc32fast::Hasher::new();
    for _ in 0..4 {
        crc.update(&data);
    }
    crc.finalize()
}

/// Runs `cmd` (a QEMU with the guest's serial port on standard output) until the output
/// has a line [`INSN_DONE`] or an `UNEXPECTED` line, the process ends, or `timeout`
/// passes; then kills it and returns everything it printed. Standard error is
/// discarded; standard input is closed. The process runs in a process group of its own,
/// killed as a whole at the end.
///
/// # Errors
///
/// If the process cannot be started, or `timeout` passes first (the error message ends
/// with the last 2000 bytes of the output).
pub fn run_insn_guest(mut cmd: Command, timeout: Duration) -> io::Result<String> {
    #[cfg(unix)]
    qemuweb_proc::in_own_group(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let finished = loop {
        let text = String::from_utf8_lossy(&out);
        if text.lines().any(|l| {
            let l = l.trim_end_matches('\r');
            l == INSN_DONE || l.starts_with("UNEXPECTED")
        }) {
            break true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        match rx.recv_timeout(left) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Timeout) => break false,
            Err(mpsc::RecvTimeoutError::Disconnected) => break true,
        }
    };
    #[cfg(unix)]
    qemuweb_proc::ProcessGroup::of(&child).kill_and_wait(&mut child, Duration::from_secs(10));
    #[cfg(not(unix))]
    {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    if finished {
        Ok(text)
    } else {
        let tail = &text[text.len().saturating_sub(2000)..];
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no {INSN_DONE} after {timeout:?}; output ends with:\n{tail}"),
        ))
    }
}
