//! Downloads into the cache, verified by SHA-256.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::plan::{hex, SourceFile};

/// The SHA-256 of a file, lower-case hex.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("f");
/// std::fs::write(&p, b"abc").unwrap();
/// assert_eq!(
///     qemuweb_wasm_build::fetch::sha256_file(&p).unwrap(),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// ```
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Checks that `path` has the SHA-256 `expected`.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("f");
/// std::fs::write(&p, b"abc").unwrap();
/// let err = qemuweb_wasm_build::fetch::verify(&p, &"0".repeat(64)).unwrap_err();
/// assert_eq!(err.kind(), qemuweb_wasm_build::ErrorKind::ChecksumMismatch);
/// ```
pub fn verify(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(Error::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Makes sure `downloads/<file>` exists with the pinned checksum, downloading it if it is
/// missing or wrong, and returns its path. `log` receives one line per file.
///
/// A `file://` URL is copied, which is how the tests exercise it without a network.
pub fn fetch(file: &SourceFile, downloads: &Path, log: &mut dyn Write) -> Result<PathBuf> {
    std::fs::create_dir_all(downloads).map_err(|e| Error::io(downloads, e))?;
    let dest = downloads.join(&file.file);
    if dest.exists() && verify(&dest, &file.sha256).is_ok() {
        let _ = writeln!(log, "cached   {} (sha256 ok)", file.file);
        return Ok(dest);
    }
    let partial = downloads.join(format!(".{}.part", file.file));
    let started = std::time::Instant::now();
    let bytes = download(&file.url, &partial)?;
    if let Err(e) = verify(&partial, &file.sha256) {
        let _ = std::fs::remove_file(&partial);
        if let Error::ChecksumMismatch {
            expected, actual, ..
        } = e
        {
            return Err(Error::ChecksumMismatch {
                path: PathBuf::from(&file.url),
                expected,
                actual,
            });
        }
        return Err(e);
    }
    std::fs::rename(&partial, &dest).map_err(|e| Error::io(&dest, e))?;
    let _ = writeln!(
        log,
        "download {} ({bytes} bytes, {:.1} s, sha256 ok) from {}",
        file.file,
        started.elapsed().as_secs_f64(),
        file.url
    );
    Ok(dest)
}

fn download(url: &str, dest: &Path) -> Result<u64> {
    let fail = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
    };
    if let Some(path) = url.strip_prefix("file://") {
        return std::fs::copy(path, dest).map_err(|e| fail(e.to_string()));
    }
    let response = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut body = response.into_body();
    let mut reader = body.as_reader();
    let mut out = File::create(dest).map_err(|e| Error::io(dest, e))?;
    std::io::copy(&mut reader, &mut out).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn local_source(dir: &Path, content: &[u8], sha256: &str) -> SourceFile {
        let origin = dir.join("origin.tar");
        std::fs::write(&origin, content).unwrap();
        SourceFile {
            file: "thing.tar".into(),
            url: format!("file://{}", origin.display()),
            sha256: sha256.into(),
        }
    }

    #[test]
    fn a_file_with_the_pinned_checksum_is_fetched_once() {
        let dir = tempfile::tempdir().unwrap();
        let digest = hex(&Sha256::digest(b"real bytes"));
        let src = local_source(dir.path(), b"real bytes", &digest);
        let downloads = dir.path().join("downloads");
        let mut log = Vec::new();
        let got = fetch(&src, &downloads, &mut log).unwrap();
        assert_eq!(std::fs::read(&got).unwrap(), b"real bytes");
        fetch(&src, &downloads, &mut log).unwrap();
        let log = String::from_utf8(log).unwrap();
        assert!(
            log.starts_with("download thing.tar") && log.contains("cached   thing.tar"),
            "{log}"
        );
    }

    #[test]
    fn a_checksum_mismatch_is_a_typed_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wrong = hex(&Sha256::digest(b"other bytes"));
        let src = local_source(dir.path(), b"real bytes", &wrong);
        let downloads = dir.path().join("downloads");
        let err = fetch(&src, &downloads, &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ChecksumMismatch);
        let msg = err.to_string();
        assert!(
            msg.contains(&wrong) && msg.contains(&hex(&Sha256::digest(b"real bytes"))),
            "{msg}"
        );
        assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 0);
    }

    #[test]
    fn a_corrupted_cached_file_is_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let digest = hex(&Sha256::digest(b"real bytes"));
        let src = local_source(dir.path(), b"real bytes", &digest);
        let downloads = dir.path().join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        std::fs::write(downloads.join("thing.tar"), b"corrupt").unwrap();
        let got = fetch(&src, &downloads, &mut Vec::new()).unwrap();
        assert_eq!(std::fs::read(got).unwrap(), b"real bytes");
    }

    #[test]
    fn a_missing_url_is_a_download_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = SourceFile {
            file: "x".into(),
            url: format!("file://{}/does-not-exist", dir.path().display()),
            sha256: "0".repeat(64),
        };
        let err = fetch(&src, &dir.path().join("d"), &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Download);
    }
}
