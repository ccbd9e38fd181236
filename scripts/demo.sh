#!/usr/bin/env bash
# Runs the hub on this machine with nothing else to set up: starts a real
# kube-apiserver + etcd on loopback (scripts/testbed.sh), starts yurthub in
# front of it, and shows kubectl working through the hub. Ctrl-C stops it all.
#
#   scripts/demo.sh            # keeps running until Ctrl-C
#   scripts/demo.sh --no-wait  # shows the requests, then stops everything
set -euo pipefail
cd "$(dirname "$0")/.."

wait_for_ctrl_c=1
[ "${1:-}" = "--no-wait" ] && wait_for_ctrl_c=0

scripts/testbed.sh install
cargo build --release --locked
work=$(mktemp -d /tmp/yurthub-demo.XXXXXX)
hub_pid=
cleanup() {
  [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null
  scripts/testbed.sh down "$work/bed" >/dev/null 2>&1 || true
  echo "stopped; logs were in $work"
}
trap cleanup EXIT

scripts/testbed.sh up "$work/bed"
# shellcheck disable=SC1091
. "$work/bed/env"

proxy_port=${YURTHUB_PROXY_PORT:-10261}
serve_port=${YURTHUB_SERVE_PORT:-10267}
target/release/yurthub \
  --server-addr "$SERVER_ADDRS" \
  --node-name "$NODE_NAME" \
  --proxy-port "$proxy_port" --serve-port "$serve_port" --proxy-secure-port 0 \
  --disk-cache-path "$work/cache" --root-dir "$work/root" \
  --kubelet-ca-file "$CA_FILE" \
  --kubelet-client-certificate "$ADMIN_PEM" \
  --cache-agents kubectl \
  --heartbeat-interval-seconds 2 --heartbeat-failed-retry 2 \
  >"$work/yurthub.log" 2>&1 &
hub_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$serve_port/v1/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

cat >"$work/hub.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: hub
  cluster:
    server: http://127.0.0.1:$proxy_port
contexts:
- name: hub
  context: {cluster: hub, user: hub}
current-context: hub
users:
- name: hub
  user: {}
KUBECONFIG

run() { printf '\n$ %s\n' "$*"; "$@"; }
export KUBECONFIG="$work/hub.kubeconfig"
run curl -sS "http://127.0.0.1:$serve_port/v1/readyz"; echo
run kubectl create namespace demo
run kubectl -n demo create configmap hello --from-literal=greeting=hi
run kubectl -n demo get configmap hello -o jsonpath='{.data.greeting}'; echo
run kubectl get namespaces
run kubectl -n demo get configmaps -o json >/dev/null   # reads through the hub fill its cache
run sh -c "curl -sS http://127.0.0.1:$serve_port/metrics | grep -E '^node_yurthub_(server_healthy|requests_total)' | head"

echo; echo "== the cloud goes away: stopping kube-apiserver"
scripts/testbed.sh stop-apiserver "$work/bed" 0
for _ in $(seq 150); do   # the health checker notices within two probes
  curl -sS "http://127.0.0.1:$serve_port/metrics" | grep -q '^node_yurthub_server_healthy_status{.*} 0$' && break
  sleep 0.1
done
run curl -sS "http://127.0.0.1:$serve_port/v1/readyz"; echo
run kubectl -n demo get configmap hello -o jsonpath='{.data.greeting}'; echo
run kubectl -n demo get configmaps
run find "$work/cache/kubectl" -name '*.json'

echo
echo "yurthub is answering http://127.0.0.1:$proxy_port from its cache; the apiserver is stopped"
echo "bring it back: scripts/testbed.sh start-apiserver $work/bed 0"
echo "try: KUBECONFIG=$work/hub.kubeconfig kubectl get all -A"
if [ "$wait_for_ctrl_c" = 1 ]; then
  echo "Ctrl-C to stop"
  wait "$hub_pid"
fi
