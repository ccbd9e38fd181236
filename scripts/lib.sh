# shellcheck shell=bash
# Shared by the scripts that install what they need: logging with the calling
# script's name, and installing missing Debian packages non-interactively.
# Source it after setting LOG_NAME.

log() { printf '[%s] %s\n' "${LOG_NAME:-script}" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# Installs the Debian packages not installed yet (apt-get update only when needed).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "apt-get install ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# Prints two free loopback ports.
free_ports() {
  python3 - <<'PY'
import random, socket
# Below the ephemeral range (32768+), so no outgoing connection of another
# process holds the number between this check and the hub's bind.
ports = []
while len(ports) < 2:
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); ports.append(p)
    except OSError:
        pass
    finally:
        s.close()
print(*ports)
PY
}
