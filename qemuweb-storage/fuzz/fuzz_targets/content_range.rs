//! The HTTP header values an image server controls, on arbitrary input: `Content-Range`
//! (parsed, then printed and parsed again to the same value) and redirect `Location`s
//! resolved against a URL (a result is always an absolute http(s) URL whose origin parses,
//! and same-origin is symmetric). Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qemuweb_storage::http_headers::{origin, parse_content_range, resolve_location, same_origin};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (first, second, third) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    if let Some((range, total)) = parse_content_range(first) {
        if let Some((a, b)) = range {
            assert!(a <= b, "{first:?}");
        }
        let printed = format!(
            "bytes {}/{}",
            range.map_or("*".to_string(), |(a, b)| format!("{a}-{b}")),
            total.map_or("*".to_string(), |t| t.to_string())
        );
        assert_eq!(parse_content_range(&printed), Some((range, total)), "{first:?}");
    }
    // A base URL and a Location, as a server would answer.
    let base = if second.starts_with("http") {
        second.to_string()
    } else {
        format!("http://h.example/{second}")
    };
    if let Some(next) = resolve_location(&base, third) {
        assert!(origin(&next).is_some(), "{base:?} + {third:?} = {next:?}");
        assert_eq!(same_origin(&base, &next), same_origin(&next, &base));
    }
});
