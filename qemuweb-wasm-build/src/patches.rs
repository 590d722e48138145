//! Our changes to QEMU: a patch series kept in the repository
//! (`qemuweb-wasm-build/patches/<series>/`), applied with `patch -p1` in the order of the
//! series' `series` file.
//!
//! ```text
//! patches/qemu-10.2.2/series                      one patch file per line, `#` comments,
//!                                                 an optional condition: `0010-x.patch [tcg=jit]`
//! patches/qemu-10.2.2/0001-wasm64-host.patch      a header, then a `git diff`-style diff:
//!
//!     Subject: <one line>
//!     What: <what it changes>
//!     Why: <why we need it>
//!     Upstream: <what upstream did / when to drop it>
//!     ---
//!     diff --git a/configure b/configure
//!     ...
//! ```
//!
//! The plan records each patch's name, subject and SHA-256 and the `series` file's SHA-256
//! ([`PatchSeries`]), so the plan's hash, and with it the output's cache key, follows every
//! byte of the series. The bytes themselves come from a [`PatchSource`]: the copy built
//! into this tool ([`PatchSource::embedded`], what `cargo build` saw under `patches/`), or
//! a directory given with `--patches DIR` while iterating on a patch.
//!
//! ```
//! use qemuweb_wasm_build::patches::PatchSource;
//! let series = PatchSource::embedded().series("qemu-10.2.2").unwrap();
//! assert_eq!(series.patches[0].file, "0001-wasm64-host.patch");
//! assert_eq!(series.patches[0].sha256.len(), 64);
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::plan::{hex, TcgBackend};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/patches.rs"));
}

/// The name of the file listing a series' patches in order.
pub const SERIES_FILE: &str = "series";

/// The header fields every patch starts with, in this order, before a `---` line.
pub const HEADER_FIELDS: [&str; 4] = ["Subject", "What", "Why", "Upstream"];

/// When a patch applies: a plan setting and the value it must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "key", content = "value", rename_all = "lowercase")]
pub enum PatchCondition {
    /// Only for this TCG backend (`[tcg=jit]` in the series file).
    Tcg(TcgBackend),
}

impl PatchCondition {
    /// Parses `key=value` as written in a series file.
    ///
    /// ```
    /// use qemuweb_wasm_build::{patches::PatchCondition, TcgBackend};
    /// assert_eq!(PatchCondition::parse("tcg=jit"), Ok(PatchCondition::Tcg(TcgBackend::Jit)));
    /// assert!(PatchCondition::parse("arch=x86").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// A message naming what is not understood.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("condition {text:?} is not key=value"))?;
        match key.trim() {
            "tcg" => match value.trim() {
                "interpreter" => Ok(PatchCondition::Tcg(TcgBackend::Interpreter)),
                "jit" => Ok(PatchCondition::Tcg(TcgBackend::Jit)),
                other => Err(format!(
                    "condition tcg={other}: the TCG backends are interpreter and jit"
                )),
            },
            other => Err(format!(
                "condition {other}=...: the only condition key is tcg"
            )),
        }
    }
}

/// One patch of a series, as the plan records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchInfo {
    /// Its file name, e.g. `0001-wasm64-host.patch`.
    pub file: String,
    /// Its `Subject:` line.
    pub subject: String,
    /// The SHA-256 of the whole file (header and diff), hex.
    pub sha256: String,
    /// When it applies; always when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<PatchCondition>,
}

impl PatchInfo {
    /// Whether the patch applies to a build with this TCG backend.
    pub fn applies(&self, tcg: TcgBackend) -> bool {
        match &self.when {
            None => true,
            Some(PatchCondition::Tcg(t)) => *t == tcg,
        }
    }
}

/// A patch series as the plan records it: names, subjects and checksums, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchSeries {
    /// The series' directory under `patches/`, e.g. `qemu-10.2.2`.
    pub name: String,
    /// The SHA-256 of its `series` file.
    pub series_sha256: String,
    /// The patches, in the order they are applied.
    pub patches: Vec<PatchInfo>,
}

impl PatchSeries {
    /// The patches that apply to a build with this TCG backend, in order.
    pub fn applicable(&self, tcg: TcgBackend) -> impl Iterator<Item = &PatchInfo> {
        self.patches.iter().filter(move |p| p.applies(tcg))
    }
}

/// The header of a patch file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchHeader {
    /// `Subject:`.
    pub subject: String,
    /// `What:`.
    pub what: String,
    /// `Why:`.
    pub why: String,
    /// `Upstream:`.
    pub upstream: String,
}

/// Reads and checks a patch's header: the four [`HEADER_FIELDS`] in order (a field may
/// continue on indented lines), a `---` line, then a diff.
///
/// ```
/// let text = "Subject: s\nWhat: w\n  more\nWhy: y\nUpstream: u\n---\ndiff --git a/f b/f\n--- a/f\n+++ b/f\n";
/// let h = qemuweb_wasm_build::patches::parse_header(text).unwrap();
/// assert_eq!(h.what, "w more");
/// assert!(qemuweb_wasm_build::patches::parse_header("diff --git a/f b/f\n").is_err());
/// ```
///
/// # Errors
///
/// A message saying what is missing.
pub fn parse_header(text: &str) -> std::result::Result<PatchHeader, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines();
    let mut ended = false;
    for line in lines.by_ref() {
        if line == "---" {
            ended = true;
            break;
        }
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = fields.last_mut() else {
                return Err("the patch starts with an indented line, not Subject:".into());
            };
            value.push(' ');
            value.push_str(line.trim());
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!(
                "header line {line:?} is not `Field: value` (the header ends with a `---` line)"
            ));
        };
        fields.push((key.trim().to_string(), value.trim().to_string()));
    }
    if !ended {
        return Err("no `---` line ends the header".into());
    }
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    if keys != HEADER_FIELDS {
        return Err(format!(
            "the header has the fields {keys:?}; it must have {HEADER_FIELDS:?} in this order"
        ));
    }
    if let Some((key, _)) = fields.iter().find(|(_, v)| v.is_empty()) {
        return Err(format!("the header's {key}: is empty"));
    }
    let rest: Vec<&str> = lines.collect();
    if !rest
        .iter()
        .any(|l| l.starts_with("diff --git ") || l.starts_with("--- "))
    {
        return Err("no diff after the header".into());
    }
    let mut values = fields.into_iter().map(|(_, v)| v);
    let mut next = || values.next().unwrap_or_default();
    Ok(PatchHeader {
        subject: next(),
        what: next(),
        why: next(),
        upstream: next(),
    })
}

/// Whether `name` looks like `NNNN-short-name.patch`.
fn valid_patch_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".patch") else {
        return false;
    };
    let bytes = stem.as_bytes();
    bytes.len() > 5
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5..].iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// Where the patch files' bytes come from.
#[derive(Debug, Clone)]
pub struct PatchSource {
    /// `series/file` -> bytes.
    files: BTreeMap<String, Vec<u8>>,
    origin: String,
}

impl PatchSource {
    /// The patches built into this tool (what `patches/` held when it was compiled).
    pub fn embedded() -> Self {
        PatchSource {
            files: embedded::EMBEDDED
                .iter()
                .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
                .collect(),
            origin: "built into qemuweb-wasm-build".into(),
        }
    }

    /// The patches in `dir` (a directory holding series directories, like the
    /// repository's `qemuweb-wasm-build/patches`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be read.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut files = BTreeMap::new();
        let series_dirs = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for series in series_dirs {
            let series = series.map_err(|e| Error::io(dir, e))?.path();
            if !series.is_dir() {
                continue;
            }
            let entries = std::fs::read_dir(&series).map_err(|e| Error::io(&series, e))?;
            for entry in entries {
                let path = entry.map_err(|e| Error::io(&series, e))?.path();
                if path.is_file() {
                    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                    let name = format!(
                        "{}/{}",
                        series.file_name().unwrap_or_default().to_string_lossy(),
                        path.file_name().unwrap_or_default().to_string_lossy()
                    );
                    files.insert(name, bytes);
                }
            }
        }
        Ok(PatchSource {
            files,
            origin: dir.display().to_string(),
        })
    }

    /// Where the bytes come from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The bytes of `file` of series `series`.
    pub fn bytes(&self, series: &str, file: &str) -> Option<&[u8]> {
        self.files
            .get(&format!("{series}/{file}"))
            .map(Vec::as_slice)
    }

    /// Reads series `name`: its `series` file, every patch it lists (header checked), and
    /// checks that every `.patch` file of the directory is listed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPatch`] naming the patch (or the series file) and what is wrong.
    pub fn series(&self, name: &str) -> Result<PatchSeries> {
        let bad = |patch: &str, reason: String| Error::InvalidPatch {
            series: name.to_string(),
            patch: patch.to_string(),
            reason,
        };
        let list = self.bytes(name, SERIES_FILE).ok_or_else(|| {
            bad(
                SERIES_FILE,
                format!("no series file (patches from {})", self.origin),
            )
        })?;
        let text = std::str::from_utf8(list)
            .map_err(|_| bad(SERIES_FILE, "the series file is not UTF-8".into()))?;
        let mut patches: Vec<PatchInfo> = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (file, when) = match line.split_once('[') {
                Some((file, rest)) => {
                    let cond = rest.strip_suffix(']').ok_or_else(|| {
                        bad(
                            SERIES_FILE,
                            format!("line {line:?}: a condition ends with ]"),
                        )
                    })?;
                    let cond = PatchCondition::parse(cond).map_err(|r| bad(file.trim(), r))?;
                    (file.trim(), Some(cond))
                }
                None => (line, None),
            };
            if !valid_patch_name(file) {
                return Err(bad(
                    file,
                    "a patch file is named NNNN-short-name.patch (lower case)".into(),
                ));
            }
            if let Some(last) = patches.last() {
                if last.file[..4] >= file[..4] {
                    return Err(bad(
                        file,
                        format!("listed after {}: numbers must increase", last.file),
                    ));
                }
            }
            let bytes = self.bytes(name, file).ok_or_else(|| {
                bad(
                    file,
                    format!("listed in the series but missing from {}", self.origin),
                )
            })?;
            let text = std::str::from_utf8(bytes)
                .map_err(|_| bad(file, "the patch is not UTF-8".into()))?;
            let header = parse_header(text).map_err(|r| bad(file, r))?;
            patches.push(PatchInfo {
                file: file.to_string(),
                subject: header.subject,
                sha256: hex(&Sha256::digest(bytes)),
                when,
            });
        }
        let prefix = format!("{name}/");
        for key in self.files.keys() {
            if let Some(file) = key.strip_prefix(&prefix) {
                if file.ends_with(".patch") && !patches.iter().any(|p| p.file == file) {
                    return Err(bad(
                        file,
                        "not listed in the series file (add it there, in order)".into(),
                    ));
                }
            }
        }
        Ok(PatchSeries {
            name: name.to_string(),
            series_sha256: hex(&Sha256::digest(list)),
            patches,
        })
    }

    /// Checks that this source holds exactly the bytes `series` records.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPatch`] for a patch that is missing or differs.
    pub fn check(&self, series: &PatchSeries) -> Result<()> {
        let found = self.series(&series.name)?;
        if found == *series {
            return Ok(());
        }
        let differing = series
            .patches
            .iter()
            .find(|p| !found.patches.contains(p))
            .map(|p| p.file.clone())
            .unwrap_or_else(|| SERIES_FILE.to_string());
        Err(Error::InvalidPatch {
            series: series.name.clone(),
            patch: differing,
            reason: format!(
                "the plan records other bytes than the patches from {} (rebuild the tool or \
                 pass the plan's patches with --patches)",
                self.origin
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const GOOD: &str = "Subject: s\nWhat: w\nWhy: y\nUpstream: u\n---\ndiff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n";

    fn source(files: &[(&str, &str)]) -> PatchSource {
        PatchSource {
            files: files
                .iter()
                .map(|(n, t)| (format!("s/{n}"), t.as_bytes().to_vec()))
                .collect(),
            origin: "test".into(),
        }
    }

    #[test]
    fn the_embedded_series_is_complete_and_every_header_is_checked() {
        let src = PatchSource::embedded();
        let series = src.series("qemu-10.2.2").unwrap();
        assert!(series.patches.len() >= 2);
        for p in &series.patches {
            let text = std::str::from_utf8(src.bytes("qemu-10.2.2", &p.file).unwrap()).unwrap();
            let h = parse_header(text).unwrap();
            assert!(!h.upstream.is_empty(), "{}", p.file);
        }
        src.check(&series).unwrap();
    }

    #[test]
    fn series_files_are_parsed_with_conditions_and_order() {
        let src = source(&[
            (
                "series",
                "# comment\n0001-a.patch\n\n0010-b.patch [tcg=jit]\n",
            ),
            ("0001-a.patch", GOOD),
            ("0010-b.patch", GOOD),
        ]);
        let s = src.series("s").unwrap();
        assert_eq!(s.patches.len(), 2);
        assert_eq!(
            s.patches[1].when,
            Some(PatchCondition::Tcg(TcgBackend::Jit))
        );
        let names = |t| s.applicable(t).map(|p| p.file.as_str()).collect::<Vec<_>>();
        assert_eq!(names(TcgBackend::Interpreter), ["0001-a.patch"]);
        assert_eq!(names(TcgBackend::Jit), ["0001-a.patch", "0010-b.patch"]);
    }

    #[test]
    fn broken_series_name_the_patch() {
        /// The series directory's files, the patch the error names, words it contains.
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (&[("series", "0001-a.patch\n")], "0001-a.patch", "missing"),
            (
                &[
                    ("series", "0001-a.patch\n"),
                    ("0001-a.patch", "diff --git a/f b/f\n"),
                ],
                "0001-a.patch",
                "`Field: value`",
            ),
            (
                &[
                    ("series", "0001-a.patch\n"),
                    (
                        "0001-a.patch",
                        "Subject: s\nWhy: y\nWhat: w\nUpstream: u\n---\n--- a/f\n",
                    ),
                ],
                "0001-a.patch",
                "in this order",
            ),
            (
                &[
                    ("series", "0001-a.patch\n"),
                    ("0001-a.patch", GOOD),
                    ("0002-b.patch", GOOD),
                ],
                "0002-b.patch",
                "not listed",
            ),
            (
                &[
                    ("series", "0002-a.patch\n0001-b.patch\n"),
                    ("0002-a.patch", GOOD),
                    ("0001-b.patch", GOOD),
                ],
                "0001-b.patch",
                "increase",
            ),
            (&[("series", "fix.patch\n")], "fix.patch", "NNNN"),
            (
                &[
                    ("series", "0001-a.patch [arch=x]\n"),
                    ("0001-a.patch", GOOD),
                ],
                "0001-a.patch",
                "condition",
            ),
            (&[], "series", "no series file"),
        ];
        for (files, patch, words) in cases {
            let err = source(files).series("s").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidPatch, "{err}");
            let msg = err.to_string();
            assert!(msg.contains(patch) && msg.contains(words), "{msg}");
        }
    }

    #[test]
    fn a_changed_patch_changes_the_series_and_is_caught_by_check() {
        let a = source(&[("series", "0001-a.patch\n"), ("0001-a.patch", GOOD)]);
        let changed = GOOD.replace("+b", "+c");
        let b = source(&[("series", "0001-a.patch\n"), ("0001-a.patch", &changed)]);
        let (sa, sb) = (a.series("s").unwrap(), b.series("s").unwrap());
        assert_ne!(sa, sb);
        assert_eq!(sa.series_sha256, sb.series_sha256);
        let err = b.check(&sa).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPatch);
        assert!(err.to_string().contains("0001-a.patch"), "{err}");
    }

    #[test]
    fn a_directory_source_reads_like_the_embedded_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("s")).unwrap();
        std::fs::write(dir.path().join("s/series"), "0001-a.patch\n").unwrap();
        std::fs::write(dir.path().join("s/0001-a.patch"), GOOD).unwrap();
        let src = PatchSource::from_dir(dir.path()).unwrap();
        assert_eq!(src.series("s").unwrap().patches[0].subject, "s");
        assert!(src.origin().contains(&dir.path().display().to_string()));
    }
}
