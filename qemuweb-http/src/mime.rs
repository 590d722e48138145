//! MIME types by file extension.

use std::path::Path;

/// The `Content-Type` a browser needs for `path`, by extension: pages, modules and wasm
/// (for `WebAssembly.instantiateStreaming`) by name, disk images and anything unknown as
/// `application/octet-stream`.
///
/// ```
/// use qemuweb_http::mime_type;
/// use std::path::Path;
/// assert_eq!(mime_type(Path::new("a/qemu.wasm")), "application/wasm");
/// assert_eq!(mime_type(Path::new("x.MJS")), "text/javascript; charset=utf-8");
/// assert_eq!(mime_type(Path::new("disk.qcow2")), "application/octet-stream");
/// ```
pub fn mime_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" | "cjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "css" => "text/css; charset=utf-8",
        "txt" | "md" | "tsv" | "ts" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "gz" => "application/gzip",
        "zst" => "application/zstd",
        "tar" => "application/x-tar",
        "iso" => "application/x-iso9660-image",
        // qcow2, raw, img, bin and anything else: bytes.
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_browsers_need() {
        for (name, mime) in [
            ("index.html", "text/html; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.mjs", "text/javascript; charset=utf-8"),
            ("a.wasm", "application/wasm"),
            ("a.json", "application/json"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.svg", "image/svg+xml"),
            ("disk.qcow2", "application/octet-stream"),
            ("disk.raw", "application/octet-stream"),
            ("disk.img", "application/octet-stream"),
            ("bios.bin", "application/octet-stream"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(mime_type(Path::new(name)), mime, "{name}");
        }
    }
}
