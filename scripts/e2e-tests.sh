#!/usr/bin/env bash
# Runs the end-to-end tests in e2e/ (Node's test runner + playwright-core driving Debian's
# headless Chromium against pages served on 127.0.0.1): qemuweb-storage's persistence and
# interop tests, qemuweb-runtime's VM tests, the DevTools extension (extension/) and the
# example app's click-through (examples/). The Linux boot is its own step
# (scripts/e2e-linux.sh). Dependencies must be installed (scripts/setup).
# Honours CARGO_TARGET_DIR; extra arguments are test files or directories under e2e/
# (and options for `node --test`, e.g. --test-name-pattern=...).
#
# Each test file runs in its own `node --test`, bounded from outside (QEMUWEB_E2E_FILE_SECONDS,
# default 900 s: a hung file fails with the tail of its output). Tests that skip themselves
# (t.skip, e.g. the QEMU tests without a QEMU module) are listed at the end and recorded for
# scripts/test's summary (scripts/lib/bounded.sh: note_skip).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bounded.sh
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
export CARGO_TARGET_DIR=$target_dir

cargo build -q -p qemuweb-testkit --bin qemuweb-test-server
cargo build -q -p qemuweb-guests
cargo build -q -p qemuweb-sidecar --bin frame-server   # display.test.mjs forwards to its sink
cargo build -q -p qemuweb-runtime --example headless
cargo build -q -p qemuweb-config --example qemu_args   # input.test.mjs: a profile's native command line
scripts/build-web --dev qemuweb-storage-js "$target_dir/web/storage" >/dev/null
scripts/build-web qemuweb-runtime >/dev/null
scripts/build-npm >/dev/null
scripts/build-extension >/dev/null   # extension/devtools.test.mjs loads it into Chromium
# The QEMU modules as @qemuweb/qemu-wasm (consumer/qemu-consumer.test.mjs), when there is a build.
if [ -n "${QEMUWEB_QEMU_DIR:-}" ]; then scripts/build-qemu-npm >/dev/null; else rm -f "$target_dir"/npm/qemuweb-qemu-wasm-*.tgz; fi

(cd e2e && npm ci --no-audit --no-fund --silent)
cd e2e
options=()
paths=()
for a in "$@"; do
  case "$a" in
    -*) options+=("$a") ;;
    *) paths+=("$a") ;;
  esac
done
# The files scripts/e2e-linux.sh runs as a step of its own (they skip themselves without
# QEMUWEB_E2E_LINUX=1), and those of scripts/e2e-debian.sh (QEMUWEB_E2E_DEBIAN=1; not in
# scripts/test yet): left out here unless named, so they are not counted as skipped.
own_step=(./runtime/linux.test.mjs ./runtime/snapshot.test.mjs ./runtime/network.test.mjs
  ./runtime/relay.test.mjs ./runtime/usb-input.test.mjs './debian/*')
exclude=()
if [ ${#paths[@]} -eq 0 ]; then
  paths=(.)
  for f in "${own_step[@]}"; do exclude+=(-not -path "$f"); done
fi
# The test files, one at a time: each drives whole browsers and the machine has two cores.
mapfile -t files < <(find "${paths[@]}" -path ./node_modules -prune -o -name '*.test.mjs' "${exclude[@]}" -print | sort)
[ ${#files[@]} -gt 0 ] || { echo "e2e: no test files under ${paths[*]}" >&2; exit 1; }
tap=$(mktemp)
trap 'rm -f "$tap"' EXIT
failed=()
skipped=0
for f in "${files[@]}"; do
  rc=0
  bounded "${QEMUWEB_E2E_FILE_SECONDS:-900}" "e2e $f" \
    node --test --test-concurrency=1 "${options[@]}" \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" "$f" || rc=$?
  [ "$rc" -eq 0 ] || failed+=("$f (exit $rc)")
  # TAP: `ok N - name # SKIP reason` for each skipped test.
  while IFS= read -r line; do
    skipped=$((skipped + 1))
    note_skip "e2e ${f#./}: ${line#*- }"
  done < <(grep -E '^ *ok [0-9]+ - .* # SKIP' "$tap" | grep -v '# SKIP test name does not match pattern' || true)
done
echo "e2e: ${#files[@]} test files, ${#failed[@]} failed, $skipped tests skipped"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'e2e: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
