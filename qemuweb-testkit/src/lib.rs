//! Test support shared by QemuWeb's native tests, browser-test harness and benchmarks.
//!
//! - [`fixtures`]: disk images generated with the real `qemu-img`/`qemu-io`, each with the
//!   raw bytes `qemu-img convert -O raw` gives for it (the oracle).
//! - [`server`]: a small HTTP/1.1 server on 127.0.0.1 that serves files with Range, ETag and
//!   CORS, and can misbehave on purpose (ignore Range, truncate, fail, swap the file).
//! - [`rng`]: the deterministic generator behind the fixtures, for seeded tests.
//! - [`watchdog`]: runs a program that may hang (QEMU, Node, Chromium, a server) under a
//!   time limit enforced from outside it; a hang fails the test with the output's tail.
#![warn(missing_docs)]

pub mod fixtures;
pub mod rng;
pub mod server;
#[cfg(unix)]
pub mod watchdog;
