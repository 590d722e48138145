//! Entity tags: a strong validator per file version, and `If-Match`/`If-None-Match` lists.

use std::time::SystemTime;

/// A strong `ETag` for a file from its inode, size and modification time (nanoseconds):
/// any rewrite of the file, in place or by rename, changes it.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let f = dir.path().join("a");
/// std::fs::write(&f, b"x")?;
/// let tag = qemuweb_http::etag_for(&std::fs::metadata(&f)?);
/// assert!(tag.starts_with('"') && tag.ends_with('"'));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn etag_for(meta: &std::fs::Metadata) -> String {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let ino = 0u64;
    let nanos = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("\"{ino:x}-{:x}-{nanos:x}\"", meta.len())
}

/// Whether the `If-Match`/`If-None-Match` value `list` matches `etag`: `*`, or a listed tag
/// by strong comparison (`strong`: `If-Match`, where a weak tag never matches) or weak
/// comparison (`If-None-Match`).
///
/// ```
/// use qemuweb_http::list_matches;
/// assert!(list_matches("\"a\", \"b\"", "\"b\"", true));
/// assert!(list_matches("W/\"b\"", "\"b\"", false));
/// assert!(!list_matches("W/\"b\"", "\"b\"", true));
/// assert!(list_matches("*", "\"b\"", true));
/// ```
pub fn list_matches(list: &str, etag: &str, strong: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    if strong && etag.starts_with("W/") {
        return false;
    }
    let ours = etag.strip_prefix("W/").unwrap_or(etag);
    list.split(',').map(str::trim).any(|tag| {
        if strong {
            tag == ours
        } else {
            tag.strip_prefix("W/").unwrap_or(tag) == ours
        }
    })
}
