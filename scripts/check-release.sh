#!/usr/bin/env bash
# Builds the static release binaries (scripts/build-release.sh) and checks each:
#   - static (no interpreter, no NEEDED), within the size budget;
#   - runs: natively on x86_64, under Debian's qemu-user (qemu-aarch64,
#     qemu-arm) otherwise: `--version`, then an offline smoke test: the hub
#     with an unreachable apiserver (https://127.0.0.1:1) and a pre-filled
#     cache answers kubelet's GET of a ConfigMap from the cache, and exits 0
#     on SIGTERM. Loopback only, every wait bounded.
#
# usage: scripts/check-release.sh [TRIPLE...]     (default: all three)
# Size budget per binary: YURTHUB_SIZE_BUDGET bytes (default 4 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

SIZE_BUDGET=${YURTHUB_SIZE_BUDGET:-4194304}
ALL_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)

LOG_NAME=check-release
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

targets=("$@")
((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")
apt_install qemu-user curl python3 binutils
scripts/build-release.sh "${targets[@]}"

work=$(mktemp -d /tmp/yurthub-check-release.XXXXXX)
hub_pid=""
cleanup() {
  if [[ -n $hub_pid ]]; then kill -9 "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

runner_for() {
  case "$1" in
    x86_64-*) echo "" ;;
    aarch64-*) echo qemu-aarch64 ;;
    armv7-*) echo qemu-arm ;;
    *) die "no runner for $1" ;;
  esac
}


smoke() {
  local t=$1 bin=$2 run=$3 dir=$work/$1 proxy_port serve_port i rc
  local cm=$dir/cache/kubelet/configmaps/default/cm1.json
  mkdir -p "$(dirname "$cm")"
  chmod -R 0700 "$dir"
  cat >"$cm" <<'JSON'
{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm1","namespace":"default","uid":"9a1c4f0e-5d1b-4c59-9a57-3f0c1e2b7d11","resourceVersion":"4711","creationTimestamp":"2026-01-01T00:00:00Z"},"data":{"answer":"from the offline cache"}}
JSON
  chmod 0600 "$cm"
  local attempt url
  for attempt in 1 2 3; do
    read -r proxy_port serve_port < <(free_ports)
    # $run is empty (native) or one qemu command: unquoted on purpose.
    # shellcheck disable=SC2086
    $run "$bin" --server-addr https://127.0.0.1:1 --node-name smoke \
      --bind-address 127.0.0.1 --proxy-port "$proxy_port" --serve-port "$serve_port" \
      --proxy-secure-port 0 --disk-cache-path "$dir/cache/" --root-dir "$dir/root" \
      --kubelet-ca-file "$dir/no-ca.crt" --kubelet-client-certificate "$dir/no-cert.pem" \
      2>"$dir/hub.log" &
    hub_pid=$!
    url=http://127.0.0.1:$proxy_port/api/v1/namespaces/default/configmaps/cm1
    for ((i = 0; i < 300; i++)); do
      curl -fsS -m 5 -o "$dir/got.json" -H 'User-Agent: kubelet/v1.20.2' -H 'Accept: application/json' "$url" 2>/dev/null && break 2
      if ! kill -0 "$hub_pid" 2>/dev/null; then
        wait "$hub_pid" || true
        hub_pid=""
        # Another process took a port between the check and the bind: retry.
        grep -q 'Address in use' "$dir/hub.log" && ((attempt < 3)) && continue 2
        die "$t: the hub exited: $(cat "$dir/hub.log")"
      fi
      sleep 0.1
    done
    break
  done
  [[ -s $dir/got.json ]] || die "$t: no answer from $url in 30 s: $(cat "$dir/hub.log")"
  python3 - "$cm" "$dir/got.json" <<'PY' || die "$t: the offline answer differs from the cached object"
import json, sys
want, got = (json.load(open(p)) for p in sys.argv[1:3])
assert want == got, (want, got)
PY
  curl -sS -m 5 "http://127.0.0.1:$serve_port/v1/readyz" | grep -q 'from the cache' \
    || die "$t: /v1/readyz does not say it answers from the cache"
  kill -TERM "$hub_pid"
  for ((i = 0; i < 100; i++)); do kill -0 "$hub_pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$hub_pid" 2>/dev/null && die "$t: still running 10 s after SIGTERM"
  rc=0; wait "$hub_pid" || rc=$?
  hub_pid=""
  ((rc == 0)) || die "$t: exit status $rc after SIGTERM: $(cat "$dir/hub.log")"
}

printf '\n%-32s %10s %8s  %s\n' target bytes MiB 'ran (--version, offline smoke test)'
for t in "${targets[@]}"; do
  bin=target/$t/release/yurthub
  size=$(stat -c %s "$bin")
  ((size <= SIZE_BUDGET)) || die "$t: $size bytes is over the size budget of $SIZE_BUDGET bytes"
  run=$(runner_for "$t")
  # shellcheck disable=SC2086
  out=$($run "$bin" --version 2>&1) || die "$t: --version failed: $out"
  [[ $out == *"$VERSION"* ]] || die "$t: --version printed '$out', not version $VERSION"
  start=$SECONDS
  smoke "$t" "$bin" "$run"
  printf '%-32s %10d %8s  %s: "%s", offline GET ok, SIGTERM exit 0 (%ds)\n' "$t" "$size" \
    "$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }')" "${run:-native}" "$out" "$((SECONDS - start))"
done
log "OK (size budget $SIZE_BUDGET bytes per binary)"
