//! `qemuweb create`: an ext4 disk image from a directory, without root and without loop
//! mounts.
//!
//! `mkfs.ext4 -d DIR` (e2fsprogs) writes the file system straight into a sparse raw file,
//! and `qemu-img convert -c` turns it into a compressed qcow2 with 64 KiB clusters, the
//! unit our HTTP device streams lazily.

use crate::error::{CliError, Result};
use crate::run_tool;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image formats `create` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CreateFormat {
    /// A compressed qcow2 image with 64 KiB clusters.
    Qcow2,
    /// A sparse raw image.
    Raw,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The directory whose contents become the file system's root.
    pub from_dir: PathBuf,
    /// The image to write.
    pub out: PathBuf,
    /// The disk size in bytes; `None` picks one from the directory's contents.
    pub size: Option<u64>,
    /// The image format.
    pub format: CreateFormat,
    /// The file system label (at most 16 bytes).
    pub label: Option<String>,
    /// Replace `out` if it exists.
    pub force: bool,
}

/// The qcow2 cluster size `create` uses: small enough that a lazy reader fetches little
/// it does not need, large enough for few HTTP requests.
pub const QCOW2_CLUSTER_SIZE: u32 = 64 * 1024;

const MIB: u64 = 1024 * 1024;

/// Parses a size such as `4096`, `512K`, `64M`, `2G` or `1T` (binary units; an optional
/// trailing `B` or `iB` is accepted).
///
/// ```
/// assert_eq!(qemuweb_cli::create::parse_size("64M").unwrap(), 64 << 20);
/// assert_eq!(qemuweb_cli::create::parse_size("1GiB").unwrap(), 1 << 30);
/// assert!(qemuweb_cli::create::parse_size("12Q").is_err());
/// ```
///
/// # Errors
///
/// [`CliError::InvalidArgument`] for anything else, zero, or an overflow.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || CliError::InvalidArgument(format!("invalid size '{s}' (e.g. 64M, 2G)"));
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    let v = n.checked_mul(1u64 << shift).ok_or_else(bad)?;
    if v == 0 {
        return Err(bad());
    }
    Ok(v)
}

/// A disk size that holds `dir`: its files rounded to 4 KiB blocks plus a block per
/// entry, a quarter more for metadata, plus 16 MiB for the journal; at least 32 MiB,
/// rounded up to a MiB.
///
/// # Errors
///
/// [`CliError::Io`] when the directory cannot be walked.
pub fn default_size(dir: &Path) -> Result<u64> {
    let data = tree_bytes(dir)?;
    let size = (data + data / 4 + 16 * MIB).max(32 * MIB);
    Ok(size.div_ceil(MIB) * MIB)
}

fn tree_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0u64;
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io(dir, e))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| CliError::io(&path, e))?;
        total += 4096;
        if meta.is_dir() {
            total += tree_bytes(&path)?;
        } else if meta.is_file() {
            total += meta.len().div_ceil(4096) * 4096;
        }
    }
    Ok(total)
}

/// Removes a temporary file when dropped, unless it was kept.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Builds the image. `step` is told what is happening (for a progress display).
///
/// # Errors
///
/// [`CliError::InvalidArgument`] for a missing source directory, an existing output
/// without `force`, a too-long label or a size too small for the contents
/// ([`CliError::Tool`] from `mkfs.ext4` then names the reason); [`CliError::Tool`] when
/// `mkfs.ext4` or `qemu-img` is missing or fails; [`CliError::Io`] for file errors.
pub fn create(opts: &CreateOptions, step: &dyn Fn(&str)) -> Result<()> {
    if !opts.from_dir.is_dir() {
        return Err(CliError::InvalidArgument(format!(
            "{} is not a directory",
            opts.from_dir.display()
        )));
    }
    if let Some(label) = &opts.label {
        if label.len() > 16 {
            return Err(CliError::InvalidArgument(format!(
                "label '{label}' is longer than 16 bytes"
            )));
        }
    }
    if opts.out.exists() && !opts.force {
        return Err(CliError::InvalidArgument(format!(
            "{} exists (use --force to replace it)",
            opts.out.display()
        )));
    }
    let size = match opts.size {
        Some(s) => s,
        None => default_size(&opts.from_dir)?,
    };
    if size % 1024 != 0 {
        return Err(CliError::InvalidArgument(format!(
            "size {size} is not a multiple of 1 KiB"
        )));
    }
    let file_name = opts
        .out
        .file_name()
        .ok_or_else(|| CliError::InvalidArgument("the output needs a file name".into()))?
        .to_string_lossy()
        .into_owned();
    let raw_path = opts
        .out
        .with_file_name(format!(".{file_name}.{}.raw.tmp", std::process::id()));
    let mut raw = TempFile(Some(raw_path.clone()));
    {
        let f = std::fs::File::create(&raw_path).map_err(|e| CliError::io(&raw_path, e))?;
        f.set_len(size).map_err(|e| CliError::io(&raw_path, e))?;
    }

    step(&format!(
        "writing an ext4 file system of {} MiB from {}",
        size / MIB,
        opts.from_dir.display()
    ));
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-m", "0"]);
    if let Some(label) = &opts.label {
        mkfs.args(["-L", label]);
    }
    mkfs.arg("-d").arg(&opts.from_dir).arg(&raw_path);
    run_tool(&mut mkfs, "mkfs.ext4", "e2fsprogs")?;

    match opts.format {
        CreateFormat::Raw => {
            step("moving the raw image into place");
            std::fs::rename(&raw_path, &opts.out).map_err(|e| CliError::io(&opts.out, e))?;
            raw.0 = None;
        }
        CreateFormat::Qcow2 => {
            step("compressing to qcow2");
            let mut out_tmp = TempFile(Some(
                opts.out
                    .with_file_name(format!(".{file_name}.{}.qcow2.tmp", std::process::id())),
            ));
            let out_tmp_path = out_tmp.0.clone().unwrap_or_default();
            let mut convert = Command::new("qemu-img");
            convert
                .args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o"])
                .arg(format!("cluster_size={QCOW2_CLUSTER_SIZE}"))
                .arg(&raw_path)
                .arg(&out_tmp_path);
            run_tool(&mut convert, "qemu-img", "qemu-utils")?;
            std::fs::rename(&out_tmp_path, &opts.out).map_err(|e| CliError::io(&opts.out, e))?;
            out_tmp.0 = None;
        }
    }
    drop(raw);
    Ok(())
}
