#!/usr/bin/env bash
# Static release binaries: target/<triple>/release/yurthub for
#   x86_64-unknown-linux-musl      rustup target + Debian musl-tools
#   aarch64-unknown-linux-musl     cargo-zigbuild + ziglang (both PyPI wheels)
#   armv7-unknown-linux-gnueabihf  glibc linked statically (+crt-static, for
#                                  this target only), Debian's arm gcc as linker
# With a working container engine (`docker info` or `podman info`) and `cross`
# installed, `cross build` is used instead (see Cross.toml).
#
# usage: scripts/build-release.sh [TRIPLE...]     (default: all three)
# The toolchain is pinned (YURTHUB_TOOLCHAIN, default 1.95.0) and run as
# `cargo +TOOLCHAIN`: the default toolchain is never changed.
# Checks each binary is static, prints its size. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

TOOLCHAIN=${YURTHUB_TOOLCHAIN:-1.95.0}
ALL_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
# Versions known to work together here (2026-11).
CARGO_ZIGBUILD_VERSION=${CARGO_ZIGBUILD_VERSION:-0.24.1}
ZIGLANG_VERSION=${ZIGLANG_VERSION:-0.17.1}

LOG_NAME=build-release
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

ensure_toolchain() {
  rustup toolchain list | grep -q "^$TOOLCHAIN" \
    || rustup toolchain install "$TOOLCHAIN" --profile minimal >&2
}

ensure_target() {
  rustup target list --installed --toolchain "$TOOLCHAIN" | grep -qx "$1" \
    || rustup target add --toolchain "$TOOLCHAIN" "$1" >&2
}

ensure_zig() {
  # cargo-zigbuild and zig both come from PyPI as prebuilt wheels, into their
  # own virtualenv (Debian's python refuses a system-wide pip install): about
  # 30 s once, against minutes for `cargo install cargo-zigbuild`.
  local venv=${YURTHUB_ZIG_VENV:-$HOME/.cache/yurthub/ziglang-$ZIGLANG_VERSION}
  if [[ ! -x $venv/bin/cargo-zigbuild ]] || ! "$venv/bin/python3" -m ziglang version >/dev/null 2>&1; then
    log "pip install ziglang==$ZIGLANG_VERSION cargo-zigbuild==$CARGO_ZIGBUILD_VERSION into $venv"
    python3 -m venv "$venv" >&2 || { apt_install python3-venv; python3 -m venv "$venv" >&2; }
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
      "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" >&2
  fi
  # cargo-zigbuild runs `zig` from PATH, else `python3 -m ziglang`: the
  # virtualenv's python3 comes first on PATH.
  export PATH=$venv/bin:$PATH
}

have_container_engine() {
  command -v cross >/dev/null 2>&1 || return 1
  { command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; } \
    || { command -v podman >/dev/null 2>&1 && timeout 10 podman info >/dev/null 2>&1; }
}

armv7_env=(
  CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static"
)

build_one() {
  local t=$1
  if ((use_cross)); then
    log "cross build $t"
    env "${armv7_env[@]}" cross "+$TOOLCHAIN" build --release --locked --target "$t" >&2
    return
  fi
  ensure_target "$t"
  case "$t" in
    x86_64-unknown-linux-musl)
      apt_install musl-tools
      cargo "+$TOOLCHAIN" build --release --locked --target "$t" >&2
      ;;
    aarch64-unknown-linux-musl)
      ensure_zig
      cargo "+$TOOLCHAIN" zigbuild --release --locked --target "$t" >&2
      ;;
    armv7-unknown-linux-gnueabihf)
      apt_install gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
      env "${armv7_env[@]}" \
        CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc \
        CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc \
        AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar \
        cargo "+$TOOLCHAIN" build --release --locked --target "$t" >&2
      ;;
    *) die "unsupported target $t (supported: ${ALL_TARGETS[*]})" ;;
  esac
}

# A static binary: no PT_INTERP and no NEEDED entry.
check_static() {
  local bin=$1
  [[ -x $bin ]] || die "$bin was not built"
  if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    die "$bin has a program interpreter (dynamically linked)"
  fi
  if readelf -d "$bin" 2>/dev/null | grep -q '(NEEDED)'; then
    die "$bin needs shared libraries: $(readelf -d "$bin" | grep '(NEEDED)' | tr -s ' ')"
  fi
}

targets=("$@")
((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")
apt_install file binutils python3
ensure_toolchain
use_cross=0
if have_container_engine; then use_cross=1; log "container engine found: using cross"; fi

for t in "${targets[@]}"; do
  start=$SECONDS
  build_one "$t"
  bin=target/$t/release/yurthub
  check_static "$bin"
  size=$(stat -c %s "$bin")
  printf '%-32s %9d bytes %6s MiB  built in %ds  %s\n' "$t" "$size" \
    "$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }')" "$((SECONDS - start))" \
    "$(file -b "$bin" | cut -d, -f1-2)"
done
