//! The one `Range`/`If-Range` decision of the project's servers (RFC 9110 14.2, 13.1.5).
//!
//! The header's syntax is read by the `http-range-header` crate (what tower-http uses);
//! the decision for one representation is made here: one satisfiable range is answered
//! with `206`, a range that starts past the end with `416`, and anything else (several
//! ranges, another unit, a malformed value, an `If-Range` that does not match) with the
//! whole representation, as RFC 9110 allows.

use http_range_header::{EndPosition, StartPosition};
use std::time::SystemTime;

/// What to answer to a request's `Range` for a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// `200` with everything.
    Full,
    /// `206` with the bytes `first..=last`.
    Partial {
        /// The first byte.
        first: u64,
        /// The last byte (inclusive).
        last: u64,
    },
    /// `416` with `Content-Range: bytes */SIZE`.
    Unsatisfiable,
}

/// The decision for the `Range` header `value` alone.
///
/// ```
/// use qemuweb_http::range::{parse, RangeDecision::*};
/// assert_eq!(parse("bytes=0-99", 1000), Partial { first: 0, last: 99 });
/// assert_eq!(parse("bytes=990-2000", 1000), Partial { first: 990, last: 999 });
/// assert_eq!(parse("bytes=-100", 1000), Partial { first: 900, last: 999 });
/// assert_eq!(parse("bytes=1000-", 1000), Unsatisfiable);
/// assert_eq!(parse("bytes=0-1,5-6", 1000), Full);
/// ```
pub fn parse(value: &str, size: u64) -> RangeDecision {
    let Ok(parsed) = http_range_header::parse_range_header(value.trim()) else {
        // `bytes=-0` is well formed and can never be satisfied; other errors are syntax.
        return if value.trim() == "bytes=-0" {
            RangeDecision::Unsatisfiable
        } else {
            RangeDecision::Full
        };
    };
    let [one] = parsed.ranges.as_slice() else {
        return RangeDecision::Full;
    };
    match (one.start, one.end) {
        (StartPosition::FromLast(n), _) => {
            if n == 0 || size == 0 {
                RangeDecision::Unsatisfiable
            } else {
                RangeDecision::Partial {
                    first: size - n.min(size),
                    last: size - 1,
                }
            }
        }
        (StartPosition::Index(first), end) => {
            let last = match end {
                EndPosition::Index(last) if last < first => return RangeDecision::Full,
                EndPosition::Index(last) => last,
                EndPosition::LastByte => u64::MAX,
            };
            if first >= size {
                RangeDecision::Unsatisfiable
            } else {
                RangeDecision::Partial {
                    first,
                    last: last.min(size - 1),
                }
            }
        }
    }
}

/// The decision for a request with `range` and `if_range` headers, for a representation
/// of `size` bytes whose validators are `etag` and `modified`: the range is used only if
/// `If-Range` is absent or names the current version (a strong comparison: a weak tag
/// never matches; a date must equal `Last-Modified` to the second).
///
/// ```
/// use qemuweb_http::range::{decide, RangeDecision::*};
/// let etag = "\"v1\"";
/// assert_eq!(decide(Some("bytes=0-3"), Some("\"v1\""), 10, etag, None), Partial { first: 0, last: 3 });
/// assert_eq!(decide(Some("bytes=0-3"), Some("\"v0\""), 10, etag, None), Full);
/// assert_eq!(decide(Some("bytes=0-3"), Some("W/\"v1\""), 10, etag, None), Full);
/// assert_eq!(decide(None, None, 10, etag, None), Full);
/// ```
pub fn decide(
    range: Option<&str>,
    if_range: Option<&str>,
    size: u64,
    etag: &str,
    modified: Option<SystemTime>,
) -> RangeDecision {
    let Some(range) = range else {
        return RangeDecision::Full;
    };
    let current = match if_range.map(str::trim) {
        None => true,
        Some(v) if v.starts_with('"') => v == etag && !etag.starts_with("W/"),
        Some(v) if v.starts_with("W/") => false,
        Some(v) => match (httpdate::parse_http_date(v), modified) {
            (Ok(date), Some(m)) => httpdate::fmt_http_date(date) == httpdate::fmt_http_date(m),
            _ => false,
        },
    };
    if current {
        parse(range, size)
    } else {
        RangeDecision::Full
    }
}

#[cfg(test)]
mod tests {
    use super::RangeDecision::*;
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-99", 1000), Partial { first: 0, last: 99 });
        assert_eq!(
            parse("bytes=10-", 1000),
            Partial {
                first: 10,
                last: 999
            }
        );
        assert_eq!(
            parse("bytes=-5000", 1000),
            Partial {
                first: 0,
                last: 999
            }
        );
        assert_eq!(
            parse("bytes=999-999", 1000),
            Partial {
                first: 999,
                last: 999
            }
        );
        assert_eq!(parse("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse("bytes=-1", 0), Unsatisfiable);
        // Malformed, several or foreign: the whole file.
        for v in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=",
            "",
            "bytes=1-2-3",
        ] {
            assert_eq!(parse(v, 1000), Full, "{v}");
        }
        // Numbers past u64 are not a range we can answer.
        assert_eq!(parse("bytes=99999999999999999999999-", 1000), Full);
    }

    #[test]
    fn if_range_dates() {
        let t = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let d = |v| decide(Some("bytes=1-2"), Some(v), 10, "\"x\"", Some(t));
        assert_eq!(
            d("Sun, 06 Nov 1994 08:49:37 GMT"),
            Partial { first: 1, last: 2 }
        );
        assert_eq!(d("Sun, 06 Nov 1994 08:49:38 GMT"), Full);
        assert_eq!(d("garbage"), Full);
        // A weak current tag never satisfies If-Range.
        assert_eq!(
            decide(Some("bytes=1-2"), Some("W/\"x\""), 10, "W/\"x\"", None),
            Full
        );
    }
}
