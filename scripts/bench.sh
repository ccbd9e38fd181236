#!/usr/bin/env bash
# Benchmarks of the hub, each printed beside a baseline measured in the same run:
# pass-through (direct / nginx / hub), offline answers, watch relay latency,
# footprint, cold start, binary size, bytes from the apiserver with and without
# the shared watch. See BENCHMARKS.md for what each row means.
#
#   scripts/bench.sh                 # full run (about 10 minutes on 2 cores)
#   scripts/bench.sh --quick         # reduced run, as CI does (well under 2 minutes)
#   BENCH_ONLY=shared scripts/bench.sh   # the shared-watch section alone (under a minute)
#   scripts/bench.sh --out FILE      # results file (default target/bench-results.txt)
#   BENCH_REPS=3 BENCH_SECONDS=2 scripts/bench.sh   # override wrk repetitions/duration
#
# Needs root for apt-get (wrk, nginx, openssl) the first time; installs only
# what is missing. Loopback only. Nothing is pass/fail: the run exits non-zero
# only when something is broken (a server never ready, a wrong answer, errors).
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
out=${BENCH_OUT:-target/bench-results.txt}
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) args+=(--quick) ;;
    --out) out=${2:?--out needs a file}; shift ;;
    --out=*) out=${1#--out=} ;;
    *) echo "usage: $0 [--quick] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done

# Tools: Debian packages, installed once, non-interactively.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v openssl >/dev/null || missing+=(openssl)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Debian's nginx package would start a system nginx: forbid service starts
  # while installing (policy-rc.d), unless a policy is already in place.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
  fi
  apt-get update -qq || true
  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=120 "${missing[@]}" >/dev/null ||
    status=$?
  if [ -n "$policy" ]; then rm -f "$policy"; fi
  if [ "${status:-0}" -ne 0 ]; then echo "apt-get install ${missing[*]} failed" >&2; exit 1; fi
fi
export PATH="$PATH:/usr/sbin"
export PYTHONDONTWRITEBYTECODE=1

# BENCH_BINARY measures another build of the hub (the shipped static musl
# binary, for one), else the release build of this tree.
binary=${BENCH_BINARY:-target/release/yurthub}
if [ -z "${BENCH_BINARY:-}" ]; then cargo build --release --locked --quiet; fi

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "${TMPDIR:-/tmp}/yurthub-bench.XXXXXX")
pidfile="$work/pids"
: >"$pidfile"
main_pid=""

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$main_pid" ] && kill -0 "$main_pid" 2>/dev/null; then
    kill -TERM "$main_pid" 2>/dev/null || true
    # bounded wait for the Python driver to stop its children
    for _ in $(seq 100); do
      kill -0 "$main_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$main_pid" 2>/dev/null || true
  fi
  # Safety net: any child the driver started that is still alive and ours.
  local pid
  while read -r pid; do
    if [ -n "$pid" ] && grep -qF "$work" "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done <"$pidfile"
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The driver runs in the background so that a signal reaches the trap at once.
python3 scripts/bench_main.py --binary "$binary" --work "$work" \
  --out "$out" --pidfile "$pidfile" "${args[@]}" &
main_pid=$!
status=0
wait "$main_pid" || status=$?
main_pid=""
if [ "$status" -ne 0 ]; then
  echo "benchmark FAILED (exit $status): something is broken, see above" >&2
  exit "$status"
fi
echo "results written to $out"
