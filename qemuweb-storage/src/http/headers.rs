//! The HTTP header values [`HttpBlockDevice`](crate::HttpBlockDevice) reads from untrusted
//! servers, parsed in one place: `Content-Range`, and the origin and `Location` of
//! redirects. Pure functions, so they are tested and fuzzed natively (`fuzz/`'s
//! `content_range` target).

/// A parsed `Content-Range`: the inclusive byte range (`None` for `*`) and the total
/// size (`None` for `*`).
pub type ContentRange = (Option<(u64, u64)>, Option<u64>);

/// Parses `bytes START-END/TOTAL` or `bytes */TOTAL`; either part may be `*`. Numbers are
/// ASCII digits only (no sign, no spaces inside, at most 20 digits, within `u64`), and
/// `END` is not below `START`.
///
/// ```
/// use qemuweb_storage::http_headers::parse_content_range;
/// assert_eq!(parse_content_range("bytes 0-9/100"), Some((Some((0, 9)), Some(100))));
/// assert_eq!(parse_content_range("bytes */100"), Some((None, Some(100))));
/// assert_eq!(parse_content_range("bytes 9-0/100"), None);
/// ```
pub fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes")?;
    let rest = rest.strip_prefix(' ')?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let total = if total.trim() == "*" {
        None
    } else {
        Some(num(total)?)
    };
    let range = if range.trim() == "*" {
        None
    } else {
        let (a, b) = range.split_once('-')?;
        let (a, b) = (num(a)?, num(b)?);
        if b < a {
            return None;
        }
        Some((a, b))
    };
    Some((range, total))
}

/// The origin of an absolute `http`/`https` URL, as `scheme://host[:port]` in lower case
/// with the scheme's default port left out, and the rest of the URL; `None` for anything
/// else (another scheme, no host, user info, whitespace or backslashes in the authority).
///
/// ```
/// use qemuweb_storage::http_headers::origin;
/// assert_eq!(origin("HTTP://Example.COM:80/a?b").unwrap().0, "http://example.com");
/// assert_eq!(origin("https://h:8443").unwrap(), ("https://h:8443".into(), ""));
/// assert!(origin("http://user@h/").is_none());
/// assert!(origin("ftp://h/").is_none());
/// ```
pub fn origin(url: &str) -> Option<(String, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(split);
    if authority.is_empty()
        || authority.starts_with(':')
        || authority.contains('@')
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some((format!("{scheme}://{authority}"), rest))
}

/// Where a redirect from `from` (an absolute URL) to `location` (a `Location` header:
/// absolute, scheme-relative `//host/...`, absolute-path `/...` or relative) leads, as an
/// absolute URL; `None` when `location` is empty, holds whitespace or control characters,
/// or names another scheme than `http`/`https`.
///
/// ```
/// use qemuweb_storage::http_headers::resolve_location;
/// let from = "http://h:8/images/disk.img?x";
/// assert_eq!(resolve_location(from, "/a").unwrap(), "http://h:8/a");
/// assert_eq!(resolve_location(from, "b.img").unwrap(), "http://h:8/images/b.img");
/// assert_eq!(resolve_location(from, "//other/c").unwrap(), "http://other/c");
/// assert_eq!(resolve_location(from, "https://x/y").unwrap(), "https://x/y");
/// assert!(resolve_location(from, "javascript:alert(1)").is_none());
/// ```
pub fn resolve_location(from: &str, location: &str) -> Option<String> {
    if location.is_empty()
        || location
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let (from_origin, from_rest) = origin(from)?;
    let resolved = if let Some(rest) = location.strip_prefix("//") {
        let scheme = &from_origin[..from_origin.find("://")?];
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{from_origin}{location}")
    } else if location
        .split(['/', '?', '#'])
        .next()
        .is_some_and(|first| first.contains(':'))
    {
        // A scheme of its own (`https:`, `data:`, `javascript:` ...).
        location.to_string()
    } else if location.starts_with(['?', '#']) {
        let path = &from_rest[..from_rest.find(['?', '#']).unwrap_or(from_rest.len())];
        let path = if path.is_empty() { "/" } else { path };
        format!("{from_origin}{path}{location}")
    } else {
        let path = &from_rest[..from_rest.find(['?', '#']).unwrap_or(from_rest.len())];
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{from_origin}{dir}{location}")
    };
    if origin(&resolved).is_some() {
        Some(resolved)
    } else {
        None
    }
}

/// Whether two absolute URLs have the same origin (scheme, host and port).
///
/// ```
/// use qemuweb_storage::http_headers::same_origin;
/// assert!(same_origin("http://h/a", "HTTP://H:80/b"));
/// assert!(!same_origin("http://127.0.0.1:8/a", "http://localhost:8/a"));
/// assert!(!same_origin("http://h/a", "https://h/a"));
/// ```
pub fn same_origin(a: &str, b: &str) -> bool {
    match (origin(a), origin(b)) {
        (Some((a, _)), Some((b, _))) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some((Some((0, 9)), Some(100)))
        );
        assert_eq!(parse_content_range("bytes */100"), Some((None, Some(100))));
        assert_eq!(
            parse_content_range("bytes 0-9/*"),
            Some((Some((0, 9)), None))
        );
        assert_eq!(
            parse_content_range(&format!("bytes 0-0/{}", u64::MAX)),
            Some((Some((0, 0)), Some(u64::MAX)))
        );
        for bad in [
            "",
            "bytes",
            "bytes 9-0/100",
            "bytes -1-9/100",
            "bytes 0-9",
            "items 0-9/100",
            "bytes 0-9/1x",
            "bytes 0-99999999999999999999999/1",
            "bytes 0-9/18446744073709551616",
            "bytes +0-9/100",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let from = "https://Host.example:443/a/b/disk.img?v=1#f";
        for (loc, want) in [
            ("/x", Some("https://host.example/x")),
            ("x.img", Some("https://host.example/a/b/x.img")),
            ("?v=2", Some("https://host.example/a/b/disk.img?v=2")),
            ("//cdn.example/x", Some("https://cdn.example/x")),
            ("http://h/x", Some("http://h/x")),
            ("data:text/plain,x", None),
            ("http://u:p@h/x", None),
            ("/x y", None),
            ("", None),
            ("http://h\\@evil/x", None),
        ] {
            assert_eq!(resolve_location(from, loc).as_deref(), want, "{loc}");
        }
        let top = "http://h";
        assert_eq!(resolve_location(top, "x").unwrap(), "http://h/x");
        assert!(same_origin(from, &resolve_location(from, "/x").unwrap()));
        assert!(!same_origin(
            from,
            &resolve_location(from, "//cdn.example/x").unwrap()
        ));
        assert!(!same_origin("http://h:8/", "http://h:9/"));
        assert!(!same_origin("http://h/", "not a url"));
    }
}
