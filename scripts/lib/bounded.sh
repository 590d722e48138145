# Shell helpers for bounding test steps from outside and reporting skipped parts; sourced by
# scripts/test and the test scripts it runs.
#
#   bounded SECS NAME CMD...   runs CMD under `timeout -k 30 SECS` (its whole process group
#                              is signalled), its output shown as it runs; on a timeout it
#                              says so loudly with the last 40 lines of that output and
#                              returns 124.
#   note_skip WHAT             records a skipped part: printed loudly now, and appended to
#                              $QEMUWEB_SKIP_LOG (when set) for scripts/test's summary.

bounded() {
  local secs=$1 name=$2
  shift 2
  local log rc
  log=$(mktemp "${TMPDIR:-/tmp}/qemuweb-bounded.XXXXXX")
  set +e
  timeout -k 30 "$secs" "$@" > >(tee "$log") 2>&1
  rc=$?
  set -e
  # The output pipe may still be draining.
  sleep 0.2
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    {
      printf '\n!!!! TIMEOUT: %s ran longer than %ss and was killed; the last of its output:\n' "$name" "$secs"
      tail -n 40 "$log"
      printf '!!!! (end of %s)\n' "$name"
    } >&2
    rc=124
  fi
  rm -f "$log"
  return "$rc"
}

note_skip() {
  printf '\n!!!! SKIPPED: %s !!!!\n' "$*" >&2
  if [ -n "${QEMUWEB_SKIP_LOG:-}" ]; then
    printf '%s\n' "$*" >>"$QEMUWEB_SKIP_LOG"
  fi
}
