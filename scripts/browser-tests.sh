#!/usr/bin/env bash
# Runs qemuweb-storage's browser tests (tests/web_*.rs) in headless Chromium against the
# real test server:
#
#   1. generates the qemu-img fixtures and a few plain test files into a temporary
#      directory,
#   2. starts qemuweb-test-server on it in the background (stopped on exit),
#   3. builds the wasm tests with the server's URL in QEMUWEB_TEST_SERVER and runs
#      `cargo test -p qemuweb-storage --target wasm32-unknown-unknown` through
#      wasm-bindgen-test-runner and chromedriver.
#
# It fails (non-zero) if any test fails or if a browser test file ran no test.
# Dependencies (chromium, chromedriver, qemu-img, wasm-bindgen-cli, the wasm32 target)
# must already be installed. Honours CARGO_TARGET_DIR. Extra arguments go to `cargo test`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

work="$(mktemp -d "${TMPDIR:-/tmp}/qemuweb-browser-tests.XXXXXX")"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "browser-tests: $*" >&2
    exit 1
}

for tool in wasm-bindgen-test-runner chromedriver; do
    command -v "$tool" >/dev/null || [[ -x "/usr/bin/$tool" ]] || die "$tool is not installed"
done

# 1. The served directory.
serve="$work/serve"
mkdir -p "$serve/dir" "$serve/fixtures"
head -c 1000003 /dev/urandom >"$serve/disk.img"   # web_support::DISK_SIZE
head -c 70000 /dev/urandom >"$serve/dir/top.img"
head -c 50000 /dev/urandom >"$serve/dir/base.img"
if [[ -f qemuweb-testkit/src/bin/make-fixtures.rs ]]; then
    echo "browser-tests: generating fixtures"
    cargo run -q -p qemuweb-testkit --bin make-fixtures -- "$serve/fixtures"
    [[ -s "$serve/fixtures/fixtures.tsv" ]] || die "make-fixtures wrote no fixtures.tsv"
else
    die "qemuweb-testkit has no make-fixtures binary"
fi

# 2. The server.
cargo build -q -p qemuweb-testkit --bin qemuweb-test-server
"$target_dir/debug/qemuweb-test-server" --root "$serve" --port-file "$work/url" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    [[ -s "$work/url" ]] && break
    kill -0 "$server_pid" 2>/dev/null || die "the test server exited: $(cat "$work/server.log")"
    sleep 0.1
done
[[ -s "$work/url" ]] || die "the test server did not start"
QEMUWEB_TEST_SERVER="$(head -n1 "$work/url")"
export QEMUWEB_TEST_SERVER
echo "browser-tests: test server at $QEMUWEB_TEST_SERVER"

# 3. The tests.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-600}"
# webdriver.json (Chromium flags for running as root, headless) is read from the
# directory cargo runs the tests in: the crate directory.
export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$repo/qemuweb-storage/webdriver.json"

out="$work/test-output.txt"
set +e
cargo test -p qemuweb-storage --target wasm32-unknown-unknown --no-fail-fast "$@" 2>&1 | tee "$out"
status="${PIPESTATUS[0]}"
set -e

# Every browser test file must have run at least one test.
summary="$(awk '
    /Running tests\// { file = $2; sub(/^tests\//, "", file); sub(/ .*$/, "", file) }
    /^test result: ok\./ && file ~ /^web_/ {
        for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^passed/) { passed[file] += $i }
    }
    END { for (f in passed) print f, passed[f] }
' "$out" | sort)"
echo "browser-tests: passed per browser test file:"
echo "${summary:-  (none)}" | sed 's/^/  /'
# Without arguments every tests/web_*.rs must have run; with a filter (e.g.
# `--test web_http`) every browser test file cargo ran.
if [[ $# -eq 0 ]]; then
    expected="$(cd qemuweb-storage/tests && ls web_*.rs)"
else
    expected="$(sed -n 's|^ *Running tests/\(web_[^ ]*\.rs\) .*|\1|p' "$out" | sort -u)"
    [[ -n "$expected" ]] || { echo "browser-tests: no browser test file ran" >&2; status=1; }
fi
total=0
for name in $expected; do
    n="$(echo "$summary" | awk -v f="$name" '$1 == f { print $2 }')"
    if [[ -z "$n" || "$n" -eq 0 ]]; then
        echo "browser-tests: no test passed in $name" >&2
        status=1
    else
        total=$((total + n))
    fi
done
if [[ "$status" -ne 0 ]]; then
    echo "browser-tests: FAILED" >&2
    exit "$status"
fi
echo "browser-tests: ok, $total browser tests passed"
