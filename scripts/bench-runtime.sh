#!/usr/bin/env bash
# Benchmark of qemuweb-runtime (not a test): page start to the x86 test guest's banner, and
# with --linux to the Debian i386 Linux shell prompt, through QemuClient against v86 used
# directly with the same guest in the same headless Chromium, and against native
# qemu-system-i386 (TCG). With QEMUWEB_QEMU_DIR (a qemuweb-wasm-build output directory) it also
# boots the guest on the QEMU engine. Prints medians and ratios.
#
#   scripts/bench-runtime.sh [--runs N] [--linux]
#   scripts/bench-runtime.sh --debian [--runs N] [--arch amd64,arm64,i386]
#
# --debian: real Debian disks (scripts/debian-disk), page start to the root shell prompt of the
# full boot, the QEMU engine against native TCG (and for i386 against the v86 engine), and the
# bytes fetched over HTTP against the image size (e2e/debian/bench.mjs).
# Honours CARGO_TARGET_DIR, QEMUWEB_QEMU_DIR and QEMUWEB_LINUX_CACHE (see scripts/linux-guest).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q -p qemuweb-testkit --bin qemuweb-test-server
cargo build -q -p qemuweb-guests
scripts/build-web qemuweb-runtime >/dev/null
(cd e2e && npm ci --no-audit --no-fund --silent)
if [[ ${1:-} == --debian ]]; then
  shift
  exec node e2e/debian/bench.mjs "$@"
fi
exec node e2e/runtime/bench.mjs "$@"
