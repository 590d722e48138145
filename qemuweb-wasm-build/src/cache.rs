//! The cache: where it lives, the per-step stamps and their chained keys.
//!
//! Each step's key hashes the previous step's key and the step's
//! [`fingerprint`](crate::Step::fingerprint), so a changed step invalidates itself and every
//! step after it, and nothing before it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::plan::hex;
use crate::steps::Step;

/// The default cache directory:
/// `${QEMUWEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qemuweb}/wasm-build`.
///
/// ```
/// let dir = qemuweb_wasm_build::default_cache_dir();
/// assert!(dir.ends_with("wasm-build"));
/// ```
pub fn default_cache_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = var("QEMUWEB_CACHE").unwrap_or_else(|| {
        var("XDG_CACHE_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/var/cache"))
            .join("qemuweb")
    });
    base.join("wasm-build")
}

/// The key of a step following a step whose key is `previous` (empty for the first).
///
/// ```
/// use qemuweb_wasm_build::{cache::step_key, Place, Step};
/// let a = Step::script("a", Place::Env, "true");
/// assert_ne!(step_key("", &a), step_key("x", &a));
/// ```
pub fn step_key(previous: &str, step: &Step) -> String {
    let mut h = Sha256::new();
    h.update(previous.as_bytes());
    h.update([0]);
    h.update(step.fingerprint().as_bytes());
    hex(&h.finalize())
}

/// What a finished step leaves behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamp {
    /// The step's key when it ran.
    pub key: String,
    /// How long it took, in seconds.
    pub seconds: f64,
}

/// The stamps of one environment, one JSON file per step.
#[derive(Debug, Clone)]
pub struct Stamps {
    dir: PathBuf,
}

impl Stamps {
    /// Stamps kept in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Stamps { dir: dir.into() }
    }

    fn path(&self, step: &str) -> PathBuf {
        self.dir.join(format!("{step}.json"))
    }

    /// The step's stamp, if it has a readable one.
    pub fn get(&self, step: &str) -> Option<Stamp> {
        let text = std::fs::read_to_string(self.path(step)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Records that `step` finished.
    pub fn put(&self, step: &str, stamp: &Stamp) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let path = self.path(step);
        let json = serde_json::to_string(stamp)?;
        std::fs::write(&path, json).map_err(|e| Error::io(&path, e))
    }

    /// Forgets `step` (before it runs again, so an interrupted run is never taken as done).
    pub fn remove(&self, step: &str) -> Result<()> {
        let path = self.path(step);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
            _ => Ok(()),
        }
    }
}

/// Every mount point at or below `dir`, deepest first (from `/proc/self/mountinfo`).
///
/// ```
/// let none = qemuweb_wasm_build::cache::mounts_under(std::path::Path::new("/nonexistent-dir"));
/// assert!(none.is_empty());
/// ```
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(&dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Mount paths in mountinfo escape space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> PathBuf {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// Removes the cache directory `dir`, refusing while anything is mounted below it (a
/// build root's `/dev` bind mount would otherwise be emptied).
pub fn clean(dir: &Path) -> Result<()> {
    let mounts = mounts_under(dir);
    if let Some(m) = mounts.first() {
        return Err(Error::Mount {
            action: "clean",
            path: m.clone(),
            reason: format!(
                "{} file systems are still mounted below the cache",
                mounts.len()
            ),
        });
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Place;

    #[test]
    fn stamps_round_trip_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let stamps = Stamps::new(dir.path().join("stamps"));
        assert_eq!(stamps.get("a"), None);
        let s = Stamp {
            key: "k".into(),
            seconds: 1.5,
        };
        stamps.put("a", &s).unwrap();
        assert_eq!(stamps.get("a"), Some(s));
        stamps.remove("a").unwrap();
        stamps.remove("a").unwrap();
        assert_eq!(stamps.get("a"), None);
    }

    #[test]
    fn keys_chain() {
        let a = Step::script("a", Place::Env, "echo a");
        let b = Step::script("b", Place::Env, "echo b");
        let ka = step_key("", &a);
        let kb = step_key(&ka, &b);
        let a2 = Step::script("a", Place::Env, "echo A");
        assert_ne!(step_key(&step_key("", &a2), &b), kb);
        assert_eq!(step_key(&step_key("", &a), &b), kb);
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape_mount_path(r"/plain"), PathBuf::from("/plain"));
    }

    #[test]
    fn mounts_below_a_directory_are_found_deepest_first() {
        // /dev always has /dev/pts (and usually /dev/shm) mounted below it.
        let found = mounts_under(Path::new("/dev"));
        assert!(found.contains(&PathBuf::from("/dev/pts")), "{found:?}");
        let depths: Vec<usize> = found.iter().map(|p| p.components().count()).collect();
        assert!(depths.windows(2).all(|w| w[0] >= w[1]), "{found:?}");
    }

    #[test]
    fn clean_removes_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("wasm-build");
        std::fs::create_dir_all(cache.join("x/y")).unwrap();
        clean(&cache).unwrap();
        assert!(!cache.exists());
        clean(&cache).unwrap();
    }

    #[test]
    fn clean_refuses_a_directory_with_a_mount_below() {
        // /proc is always mounted: cleaning "/" must be refused without touching anything.
        let err = clean(Path::new("/")).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Mount);
    }
}
