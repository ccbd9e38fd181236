#!/usr/bin/env bash
# Checks the node install files in deploy/:
#   1. deploy/yurthub.service passes `systemd-analyze verify` (in a scratch
#      root holding the unit, the system's units and the built binary at
#      /usr/local/bin/yurthub, so nothing on this machine is touched) and
#      `systemd-analyze security --offline` stays under an exposure budget;
#   2. deploy/yurthub.yaml is accepted by a real kube-apiserver
#      (`kubectl apply --dry-run=server`, test bed from scripts/testbed.sh);
#   3. deploy/kubelet.kubeconfig points at http://127.0.0.1:10261 with no
#      credentials, and a client using it (port rewritten to a free one)
#      reaches the test bed through the hub as the node.
# Idempotent; installs what it needs; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# Exposure score from `systemd-analyze security` (0 = locked down, 10 = none).
SECURITY_BUDGET=${YURTHUB_UNIT_EXPOSURE_BUDGET:-2.5}

LOG_NAME=check-deploy
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

apt_install systemd kubectl curl python3
scripts/testbed.sh install >/dev/null

log "building the release binary"
cargo build --release --locked --quiet
bin=$PWD/target/release/yurthub

work=$(mktemp -d /tmp/yurthub-check-deploy.XXXXXX)
hub_pid=""
testbed_up=0
cleanup() {
  if [[ -n $hub_pid ]]; then kill "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true; fi
  if ((testbed_up)); then scripts/testbed.sh down "$work/testbed" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---------------------------------------------------------- systemd unit --
log "systemd-analyze verify deploy/yurthub.service"
root=$work/root
mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/default" "$root/usr/lib/systemd"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "$bin" "$root/usr/local/bin/yurthub"
cp deploy/yurthub.service "$root/etc/systemd/system/yurthub.service"
cp deploy/yurthub.env "$root/etc/default/yurthub"
# verify exits 0 on some findings (an unknown key is only "ignoring"): any
# output at all is a failure.
out=$(systemd-analyze verify --root="$root" /etc/systemd/system/yurthub.service 2>&1) \
  || die "systemd-analyze verify: $out"
[[ -z $out ]] || die "systemd-analyze verify: $out"

grep -q '^Before=kubelet.service$' deploy/yurthub.service || die "unit lacks Before=kubelet.service"
grep -q '^Restart=always$' deploy/yurthub.service || die "unit lacks Restart=always"
# Every variable the unit uses is set in the example environment file.
# shellcheck disable=SC2016 # literal ${...} in the patterns
for v in $(grep -o '\${\?YURTHUB_[A-Z_]*' deploy/yurthub.service | tr -d '${' | sort -u); do
  grep -q "^$v=" deploy/yurthub.env || die "deploy/yurthub.env does not set $v"
done
nofile=$(sed -n 's/^LimitNOFILE=//p' deploy/yurthub.service)
((nofile >= 2 * 512 + 128)) || die "LimitNOFILE=$nofile is below 2*512+128"

score=$(systemd-analyze security --offline=true deploy/yurthub.service 2>/dev/null \
  | sed -n 's/.*Overall exposure level for yurthub.service: \([0-9.]*\).*/\1/p')
[[ -n $score ]] || die "systemd-analyze security gave no score"
log "unit exposure level $score (budget $SECURITY_BUDGET)"
python3 -c "import sys; sys.exit(0 if float('$score') <= float('$SECURITY_BUDGET') else 1)" \
  || die "exposure level $score is above the budget $SECURITY_BUDGET"

# -------------------------------------------------------------- test bed --
log "starting the test bed"
scripts/testbed.sh up "$work/testbed" >/dev/null
testbed_up=1
# shellcheck disable=SC1091
source "$work/testbed/env"

# The test bed runs no controller-manager, so kube-system has no "default"
# service account yet; every real cluster has it (ServiceAccount admission
# looks it up even for a pod that mounts no token).
kubectl --kubeconfig "$ADMIN_KUBECONFIG" -n kube-system get serviceaccount default >/dev/null 2>&1 \
  || kubectl --kubeconfig "$ADMIN_KUBECONFIG" -n kube-system create serviceaccount default >/dev/null
log "kubectl apply --dry-run=server -f deploy/yurthub.yaml"
kubectl --kubeconfig "$ADMIN_KUBECONFIG" apply --dry-run=server -f deploy/yurthub.yaml >&2 \
  || die "the apiserver refused deploy/yurthub.yaml"
# Fields the node relies on, as the apiserver returned them.
pod=$(kubectl --kubeconfig "$ADMIN_KUBECONFIG" apply --dry-run=server -o json -f deploy/yurthub.yaml)
python3 - "$pod" <<'PY' || die "deploy/yurthub.yaml lacks a required setting"
import json, sys
p = json.loads(sys.argv[1]); s = p["spec"]; c = s["containers"][0]
assert p["metadata"]["namespace"] == "kube-system"
assert s["hostNetwork"] is True
assert s["priorityClassName"] == "system-node-critical" and s["priority"] == 2000001000
assert c["livenessProbe"]["httpGet"]["path"] == "/v1/healthz" and c["livenessProbe"]["httpGet"]["port"] == 10267
assert c["readinessProbe"]["httpGet"]["path"] == "/v1/readyz" and c["readinessProbe"]["httpGet"]["port"] == 10267
mounts = {m["mountPath"]: m.get("readOnly", False) for m in c["volumeMounts"]}
assert mounts == {"/etc/kubernetes/cache": False, "/var/lib/yurthub": False,
                  "/var/lib/kubelet/pki": True, "/etc/kubernetes/pki/ca.crt": True}, mounts
PY

# ------------------------------------------------------------ kubeconfig --
log "deploy/kubelet.kubeconfig"
server=$(kubectl config view --kubeconfig deploy/kubelet.kubeconfig --raw -o jsonpath='{.clusters[0].cluster.server}')
[[ $server == http://127.0.0.1:10261 ]] || die "kubelet.kubeconfig server is '$server'"
user=$(kubectl config view --kubeconfig deploy/kubelet.kubeconfig --raw -o json \
  | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["users"][0].get("user") or {}))')
[[ $user == '{}' ]] || die "kubelet.kubeconfig carries credentials: $user"

# The same file with a free port, against the hub in front of the test bed.
read -r proxy_port serve_port < <(free_ports)
sed "s#http://127.0.0.1:10261#http://127.0.0.1:$proxy_port#" deploy/kubelet.kubeconfig >"$work/kubelet.kubeconfig"
# The hub runs with the unit's own ExecStart flags (so they are flags the
# binary accepts), then overrides for this machine: a repeated flag keeps
# its last value.
# shellcheck disable=SC2016 # literal $YURTHUB_ARGS in the pattern
mapfile -t unit_args < <(sed -n '/^ExecStart=/,/[^\\]$/p' deploy/yurthub.service \
  | sed -e 's/^ExecStart=//' -e 's/\\$//' | tr -s ' ' '\n' | sed -e '/^$/d' -e '1d' \
  | sed -e "s#\${YURTHUB_SERVER_ADDR}#$SERVER_ADDR#" -e "s#%H#$NODE_NAME#" -e '/^\$YURTHUB_ARGS$/d')
((${#unit_args[@]} >= 5)) || die "could not read ExecStart from the unit"
log "unit flags: ${unit_args[*]}"
"$bin" "${unit_args[@]}" \
  --proxy-port="$proxy_port" --serve-port="$serve_port" --proxy-secure-port=0 \
  --disk-cache-path="$work/cache/" --root-dir="$work/root-dir" \
  --kubelet-ca-file="$CA_FILE" --kubelet-client-certificate="$NODE_PEM" \
  --heartbeat-interval-seconds=1 2>"$work/hub.log" &
hub_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$serve_port/v1/readyz" >/dev/null 2>&1 && break
  kill -0 "$hub_pid" 2>/dev/null || die "the hub exited: $(cat "$work/hub.log")"
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$serve_port/v1/readyz" >/dev/null || die "hub not ready in 10 s: $(cat "$work/hub.log")"
# The node may read its own Node object: "NotFound" (no kubelet registered
# it here) proves the apiserver saw system:node:$NODE_NAME; anonymous would
# be Forbidden/Unauthorized.
out=$(kubectl --kubeconfig "$work/kubelet.kubeconfig" get --raw "/api/v1/nodes/$NODE_NAME" 2>&1 || true)
[[ $out == *'"kind":"Node"'* || $out == *NotFound* || $out == *'not found'* ]] \
  || die "request through the hub with kubelet.kubeconfig: $out"
log "through the hub as the node: $(head -c 120 <<<"$out")"

log "OK"
