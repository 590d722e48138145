#!/usr/bin/env bash
# Benchmark of the QEMU engine's wasm64 build (not a test): page start to the test guest's
# banner through QemuClient on linux-x86_64-pc-nographic, minimal-x86_64 and
# linux-aarch64-virt-nographic, against native qemu-system-x86_64/-aarch64 (TCG) with the
# same profile's command line on the same qcow2 image; ratios, and the bytes fetched over
# HTTP against the image's size. Builds (or reuses) the module with scripts/build-qemu.
#
#   scripts/bench-qemu.sh [--runs N]
#
# Honours CARGO_TARGET_DIR and QEMUWEB_QEMU_DIR (skips the build when set).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${QEMUWEB_QEMU_DIR:-}" ]; then
  QEMUWEB_QEMU_DIR=$(scripts/build-qemu --plan wasm64 | tail -n 1)
  [ -f "$QEMUWEB_QEMU_DIR/qemu-build.json" ] || { echo "bench-qemu: scripts/build-qemu failed: $QEMUWEB_QEMU_DIR" >&2; exit 1; }
  export QEMUWEB_QEMU_DIR
fi
cargo build -q -p qemuweb-testkit --bin qemuweb-test-server
cargo build -q -p qemuweb-guests
cargo build -q -p qemuweb-config --example qemu_args
scripts/build-web qemuweb-runtime >/dev/null
(cd e2e && npm ci --no-audit --no-fund --silent)
exec node e2e/runtime/bench-qemu.mjs "$@"
