#!/usr/bin/env bash
# Installs what building and running ovnet needs on a fresh Debian machine:
# etcd (Debian's etcd-server), iproute2, ping, protoc (etcd-client's build runs it).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: the lab creates network namespaces" >&2
  exit 1
fi
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v ip >/dev/null && command -v bridge >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup)" >&2; exit 1; }
