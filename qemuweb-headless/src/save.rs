//! A run that saves its VM's state: the page sends the state's snapshot file in pieces
//! (`POST /snapshot?at=OFFSET`, in order) and then says how many bytes it sent (the
//! `saved` event); [`SnapshotSink`] writes them to the file the runner was given.

use std::io::Write;

use http::{Response, StatusCode};
use qemuweb_http::{empty, text, Body};

use crate::site::Bridge;

/// The file a saved state is written to, piece by piece, in order.
pub(crate) struct SnapshotSink {
    file: std::fs::File,
    written: u64,
    /// The page said it sent everything (`saved` with this many bytes).
    complete: bool,
}

impl SnapshotSink {
    /// Creates (or empties) `path`.
    pub(crate) fn create(path: &std::path::Path) -> crate::Result<Self> {
        let file =
            std::fs::File::create(path).map_err(|e| crate::HeadlessError::io(path.display(), e))?;
        Ok(Self {
            file,
            written: 0,
            complete: false,
        })
    }

    /// Appends `body` when it starts at `at`, the end of what came so far.
    fn piece(&mut self, at: Option<u64>, body: &[u8]) -> Response<Body> {
        if at != Some(self.written) {
            return text(StatusCode::CONFLICT, "pieces must come in order");
        }
        match self.file.write_all(body) {
            Ok(()) => {
                self.written += body.len() as u64;
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }
}

/// The `at=N` of a query string.
fn offset(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("at="))
        .and_then(|v| v.parse().ok())
}

impl Bridge {
    /// Whether a state was saved and every byte of it received.
    pub(crate) fn snapshot_saved(&self) -> bool {
        let sink = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        sink.as_ref().is_some_and(|s| s.complete)
    }

    /// `POST /snapshot?at=OFFSET`: appends a piece of the saved state (pieces come in
    /// order; `404` when this run saves nothing, `409` out of order).
    pub(crate) fn snapshot_piece(&self, query: Option<&str>, body: &[u8]) -> Response<Body> {
        let mut sink = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        match sink.as_mut() {
            Some(sink) => sink.piece(offset(query), body),
            None => text(StatusCode::NOT_FOUND, "this run saves no state"),
        }
    }

    /// The `saved` event: the page sent all `bytes` of the state.
    pub(crate) fn snapshot_done(&self, bytes: u64) {
        let mut sink = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = sink.as_mut() {
            sink.complete = sink.written == bytes && sink.file.flush().is_ok();
        }
        if self.verbose {
            eprintln!("headless: the VM's state was saved ({bytes} bytes)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_taken_in_order_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut sink = SnapshotSink::create(&path).unwrap();
        assert_eq!(sink.piece(Some(0), b"abc").status(), StatusCode::NO_CONTENT);
        assert_eq!(sink.piece(Some(0), b"abc").status(), StatusCode::CONFLICT);
        assert_eq!(sink.piece(None, b"x").status(), StatusCode::CONFLICT);
        assert_eq!(sink.piece(Some(3), b"de").status(), StatusCode::NO_CONTENT);
        drop(sink);
        assert_eq!(std::fs::read(&path).unwrap(), b"abcde");
        assert_eq!(offset(Some("x=1&at=42")), Some(42));
        assert_eq!(offset(Some("at=-1")), None);
    }
}
