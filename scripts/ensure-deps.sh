#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build yinyi: libclang (for RocksDB's bindings)
# and protoc (for the gRPC code). As root it uses apt; otherwise it says what to install.
set -euo pipefail
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
command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install Rust 1.95 with rustup (https://rustup.rs)" >&2; exit 1; }
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
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
