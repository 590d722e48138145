#!/usr/bin/env bash
# Runs the end-to-end tests in e2e/ (Node's test runner + playwright-core driving Debian's
# headless Chromium against pages served on 127.0.0.1): qemuweb-storage's persistence and
# interop tests, qemuweb-runtime's VM tests and the example app's click-through (examples/). The Linux boot is its own step
# (scripts/e2e-linux.sh). Dependencies must be installed (scripts/setup).
# Honours CARGO_TARGET_DIR; extra arguments are test files or directories under e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
export CARGO_TARGET_DIR=$target_dir

cargo build -q -p qemuweb-testkit --bin qemuweb-test-server
cargo build -q -p qemuweb-guests
cargo build -q -p qemuweb-sidecar --bin frame-server   # display.test.mjs forwards to its sink
cargo build -q -p qemuweb-runtime --example headless
scripts/build-web --dev qemuweb-storage-js "$target_dir/web/storage" >/dev/null
scripts/build-web qemuweb-runtime >/dev/null
scripts/build-npm >/dev/null
# The QEMU modules as @qemuweb/qemu-wasm (consumer/qemu-consumer.test.mjs), when there is a build.
if [ -n "${QEMUWEB_QEMU_DIR:-}" ]; then scripts/build-qemu-npm >/dev/null; else rm -f "$target_dir"/npm/qemuweb-qemu-wasm-*.tgz; fi

(cd e2e && npm ci --no-audit --no-fund --silent)
cd e2e
# One file at a time: each test drives whole browsers and the machine has two cores.
node --test --test-concurrency=1 "${@:-.}"
