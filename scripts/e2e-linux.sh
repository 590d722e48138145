#!/usr/bin/env bash
# The heavier end-to-end step of qemuweb-runtime: Debian's i386 Linux kernel and a busybox
# initramfs (scripts/linux-guest, cached outside the repository; the first run downloads
# about 53 MB of Debian packages) boot to a shell through QemuClient in headless Chromium.
# Honours CARGO_TARGET_DIR and QEMUWEB_LINUX_CACHE (the cache directory).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

cargo build -q -p qemuweb-testkit --bin qemuweb-test-server
cargo build -q -p qemuweb-guests
# The relay of runtime/relay.test.mjs: `qemuweb network`.
cargo build -q -p qemuweb-cli
scripts/build-web qemuweb-runtime >/dev/null
scripts/linux-guest ${QEMUWEB_LINUX_CACHE:+"$QEMUWEB_LINUX_CACHE"} >/dev/null
(cd e2e && npm ci --no-audit --no-fund --silent)
cd e2e
QEMUWEB_E2E_LINUX=1 node --test --test-concurrency=1 runtime/linux.test.mjs runtime/snapshot.test.mjs runtime/network.test.mjs runtime/relay.test.mjs
