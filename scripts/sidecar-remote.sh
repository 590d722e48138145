#!/usr/bin/env bash
# qemuweb-sidecar's RemoteTransport in headless Chromium against its native peer: starts
# `frame-server` on 127.0.0.1 (a free port), compiles its URL into the Chromium test as
# QEMUWEB_FRAME_SERVER and runs tests/remote_web.rs (`bench` instead: the display
# benchmark, tests/bench_web.rs, in release mode, which then includes the WebSocket path).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
if [ "${1:-}" = bench ]; then profile=release; fi
cargo build -q -p qemuweb-sidecar --bin frame-server $([ $profile = release ] && echo --release)
log=$(mktemp)
"${CARGO_TARGET_DIR:-target}/$profile/frame-server" >"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  grep -q '^frame-server listening on ' "$log" && break
  sleep 0.1
done
url=$(sed -n 's/^frame-server listening on //p' "$log")
if [ -z "$url" ]; then
  echo "frame-server did not start" >&2
  exit 1
fi
echo "frame-server at $url"
cd qemuweb-sidecar
export QEMUWEB_FRAME_SERVER=$url CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver} \
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
if [ "${1:-}" = bench ]; then
  cargo test -p qemuweb-sidecar --release --target wasm32-unknown-unknown --test bench_web -- --nocapture
else
  cargo test -p qemuweb-sidecar --target wasm32-unknown-unknown --test remote_web
fi
