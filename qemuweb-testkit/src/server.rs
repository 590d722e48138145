//! The test HTTP server (filled in by the HTTP work).
