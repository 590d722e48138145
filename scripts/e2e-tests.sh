#!/usr/bin/env bash
# Runs the end-to-end tests in e2e/ (Node's test runner + playwright-core driving Debian's
# headless Chromium against pages served by qemuweb-test-server on 127.0.0.1).
# Dependencies must be installed (scripts/setup). Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
export CARGO_TARGET_DIR=$target_dir

cargo build -q -p qemuweb-testkit --bin qemuweb-test-server
scripts/build-web qemuweb-storage-js "$target_dir/web/storage"
# qemuweb-runtime: its bundle, and the x86 test guest writer its tests use.
scripts/build-web qemuweb-runtime
cargo build -q -p qemuweb-guests
cargo build -q -p qemuweb-runtime --example headless

(cd e2e && npm ci --no-audit --no-fund --silent)
cd e2e
# One file at a time: each test drives whole browsers and the machine has two cores.
node --test --test-concurrency=1 "${@:-.}"
