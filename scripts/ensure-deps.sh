#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build yinyi: libclang (for RocksDB's bindings)
# and protoc (for the gRPC code); and, for the Python client example run by the tests
# (examples/python/), python3 with venv and a virtualenv holding the pinned packages of
# examples/python/requirements.txt. As root it uses apt; otherwise it says what to install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
missing=()
have_libclang() {
  # libclang.so or libclang-N.so (not libclang-cpp, which the base system may carry alone)
  local f
  for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
           /usr/lib/x86_64-linux-gnu/libclang.so* /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so*; do
    [ -e "$f" ] && return 0
  done
  return 1
}
have_libclang || missing+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
# `python3 -m venv` needs ensurepip, which Debian ships apart from python3 (python3-venv).
if ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install Rust 1.95 with rustup (https://rustup.rs)" >&2; exit 1; }
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "yinyi needs these Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

# The Python example's virtualenv. A stamp holds the hash of the requirements and of the
# interpreter's version: when it matches and the packages import, there is nothing to do
# (a fraction of a second); otherwise the virtualenv is made anew, so a package dropped from
# the requirements does not linger in it.
venv="${YINYI_VENV:-$HOME/.cache/yinyi/venv}"
requirements="$root/examples/python/requirements.txt"
stamp="$venv/.yinyi-requirements"
want="$( { cat "$requirements"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
   "$venv/bin/python" -c 'import grpc_tools.protoc, grpc_reflection, grpc_status' >/dev/null 2>&1; then
  exit 0
fi
if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
  echo "YINYI_VENV=$venv exists and is not a virtualenv: not touching it" >&2
  exit 1
fi
echo "making the Python virtualenv $venv (packages of examples/python/requirements.txt)" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  -r "$requirements"
"$venv/bin/python" -m pip check >/dev/null
echo "$want" > "$stamp"
