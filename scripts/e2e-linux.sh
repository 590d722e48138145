#!/usr/bin/env bash
# The heavier end-to-end step of qemuweb-runtime: Debian's i386 Linux kernel and a busybox
# initramfs (scripts/linux-guest, cached outside the repository; the first run downloads
# about 53 MB of Debian packages) boot to a shell through QemuClient in headless Chromium
# (snapshot.test.mjs also on the QEMU engine, with the build QEMUWEB_QEMU_DIR names), and the
# graphics profiles' USB keyboard and tablet seen by Linux on the QEMU engine
# (usb-input.test.mjs: the i386 kernel on linux-x86_64-pc-graphics, Debian's arm64 kernel,
# another 61 MB on the first run, on linux-aarch64-virt-graphics).
# Tests that skip themselves (the QEMU one without a build) are recorded for scripts/test's
# summary (scripts/lib/bounded.sh: note_skip).
# Honours CARGO_TARGET_DIR, QEMUWEB_QEMU_DIR and QEMUWEB_LINUX_CACHE (the cache directory).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bounded.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

cargo build -q -p qemuweb-testkit --bin qemuweb-test-server
cargo build -q -p qemuweb-guests
# The relay of runtime/relay.test.mjs: `qemuweb network`.
cargo build -q -p qemuweb-cli
scripts/build-web qemuweb-runtime >/dev/null
scripts/linux-guest ${QEMUWEB_LINUX_CACHE:+"$QEMUWEB_LINUX_CACHE"} >/dev/null
# The arm64 guest only for the QEMU engine's usb-input.test.mjs.
if [ -n "${QEMUWEB_QEMU_DIR:-}" ]; then
  scripts/linux-guest --arch arm64 ${QEMUWEB_LINUX_CACHE:+"$QEMUWEB_LINUX_CACHE"} >/dev/null
fi
(cd e2e && npm ci --no-audit --no-fund --silent)
cd e2e
tap=$(mktemp)
trap 'rm -f "$tap"' EXIT
rc=0
QEMUWEB_E2E_LINUX=1 node --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" \
  runtime/linux.test.mjs runtime/snapshot.test.mjs runtime/network.test.mjs runtime/relay.test.mjs \
  runtime/usb-input.test.mjs || rc=$?
# TAP: `ok N - name # SKIP reason` for each skipped test.
while IFS= read -r line; do
  note_skip "e2e Linux: ${line#*- }"
done < <(grep -E '^ *ok [0-9]+ - .* # SKIP' "$tap" | grep -v '# SKIP test name does not match pattern' || true)
exit "$rc"
