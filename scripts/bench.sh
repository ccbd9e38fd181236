#!/usr/bin/env bash
# Benchmarks, printed side by side with a baseline measured in the same run.
# Today: cold start (process start -> first offline answer) with a large cache.
#
#   scripts/bench.sh           # full run (10,000 cached objects, 7 repetitions)
#   scripts/bench.sh --quick   # reduced run, as CI does
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
objects=10000 reps=7
if [ "${1:-}" = "--quick" ]; then objects=500 reps=2; fi
out=${BENCH_OUT:-target/bench-results.txt}
python3 scripts/bench_coldstart.py target/release/yurthub "$objects" "$reps" | tee "$out"
echo "results written to $out"
