#!/usr/bin/env bash
# Installs the system packages the build needs, from Debian's packages:
# libclang-dev for bindgen (the `rocksdb` crate generates its bindings with
# it; RocksDB's C++ itself is built from the crate's sources, because
# Debian's librocksdb is too old to link). Idempotent and quick when present.
set -euo pipefail

need=()
if ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)

if [ ${#need[@]} -eq 0 ]; then
  echo "build dependencies present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo -n"
  else
    echo "error: need ${need[*]} from apt but am not root and have no sudo; install them: apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
echo "installing ${need[*]} (apt)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null || echo "warning: apt-get update failed; trying the install anyway" >&2
if ! $sudo apt-get install -y -qq "${need[@]}" >/dev/null; then
  echo "error: apt-get install ${need[*]} failed; install them by hand and re-run" >&2
  exit 1
fi
echo "installed ${need[*]}"
