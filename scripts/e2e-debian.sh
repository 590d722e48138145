#!/usr/bin/env bash
# Real Debian bookworm disks (scripts/debian-disk: amd64 with SYSLINUX on an MBR disk, arm64
# booted with -kernel; cached outside the repository) end to end:
#   1. on native qemu-system-x86_64/-aarch64 (TCG): QemuWeb's short init and the full boot to
#      the root shell, a command answered, a file kept across boots (e2e/debian/native.test.mjs);
#   2. in headless Chromium through QemuClient on the QEMU engine (wasm64), from qcow2 over HTTP
#      on 127.0.0.1: the short init, a command answered, a file kept across a page reload from
#      the IndexedDB overlay (e2e/debian/page.test.mjs). Without a wasm64 module for a disk's
#      arch these tests are SKIPPED (and fail when CI=true).
# Every part is bounded from outside: the disk build by `timeout -k` (QEMUWEB_DEBIAN_DISK_TIMEOUT
# seconds, default 1500), each test file likewise (QEMUWEB_DEBIAN_E2E_TIMEOUT, default 1800);
# a timeout fails the script with the output's tail (scripts/lib/bounded.sh). scripts/test runs
# the page part on both disks with the short init, the reload on amd64 only
# (QEMUWEB_DEBIAN_PAGE_BOOT=check, QEMUWEB_DEBIAN_PAGE_RELOAD=amd64).
#
#   scripts/e2e-debian.sh [native|page]...     (default: both)
#
# The first run builds the disks (scripts/debian-disk, both arches in parallel; about 170 MB
# of Debian packages): amd64 178 s and arm64 504 s from an empty cache on a loaded 2-core
# machine alone, 400 s and 658 s side by side; later runs reuse them. Measured (2 cores, load
# 6-12): `native` 148 s with the disks cached, 794 s with both built from an empty cache; `page`
# on the wasm64 JIT build: amd64's full boot reached the root shell 869 s after page start
# (1371 s on the first JIT build), the short init after the reload 315 s (load 11-15); on a
# quiet machine with the HPET build, the short init 150 s, 131 s after the reload.
# Honours CARGO_TARGET_DIR, QEMUWEB_CACHE, QEMUWEB_QEMU64_DIR
# (else QEMUWEB_QEMU_DIR: the module directory of the page tests), QEMUWEB_DEBIAN_ARCHS
# (comma-separated, default amd64,arm64), QEMUWEB_DEBIAN_DIRS (arch=DIR,...: disks built
# before), QEMUWEB_DEBIAN_PAGE_BOOT (full or check) and QEMUWEB_DEBIAN_PAGE_RELOAD (the arches
# that reload the page; see e2e/debian/page.test.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
. scripts/lib/bounded.sh
limit=${QEMUWEB_DEBIAN_E2E_TIMEOUT:-1800}
disk_limit=${QEMUWEB_DEBIAN_DISK_TIMEOUT:-1500}
parts=("$@")
[[ $# -gt 0 ]] || parts=(native page)

SECONDS=0
archs=${QEMUWEB_DEBIAN_ARCHS:-amd64,arm64}
if [[ -z ${QEMUWEB_DEBIAN_DIRS:-} ]]; then
    # shellcheck disable=SC2086 # one word per arch
    bounded "$disk_limit" "scripts/debian-disk" scripts/debian-disk ${archs//,/ }
fi
echo "e2e-debian: disks ready after ${SECONDS}s"
(cd e2e && npm ci --no-audit --no-fund --silent)
for part in "${parts[@]}"; do
    case $part in
        native) ;;
        page)
            cargo build -q -p qemuweb-testkit --bin qemuweb-test-server
            cargo build -q -p qemuweb-guests
            scripts/build-web qemuweb-runtime >/dev/null
            ;;
        *) echo "e2e-debian: unknown part '$part' (native, page)" >&2; exit 2 ;;
    esac
    started=$SECONDS
    (cd e2e && export QEMUWEB_E2E_DEBIAN=1 && bounded "$limit" "e2e/debian/$part.test.mjs" \
        node --test --test-concurrency=1 "debian/$part.test.mjs")
    echo "e2e-debian: $part tests took $((SECONDS - started))s"
done
echo "e2e-debian: done in ${SECONDS}s"
