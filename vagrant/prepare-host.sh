#!/usr/bin/env bash
# Run on the host by the Vagrantfile before `vagrant up|provision|reload|rsync`:
# stages what the VMs install into vagrant/.stage (rsynced to /ovnet with the
# repository): bin/ovagent and bin/ovctl from $OVNET_BIN_DIR (default
# target/release), and tls/: the CA certificate, each member's certificate
# and key and ovagent's client certificate, made by deploy/etcd-tls.sh in
# vagrant/.pki (which also holds the CA key and is not synced).
# Idempotent; the TLS material is made once and reused.
# Usage: prepare-host.sh NAME=IP...   (OVNET_STAGE, OVNET_PKI: other folders)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bin_dir=${OVNET_BIN_DIR:-$repo/target/release}
stage=${OVNET_STAGE:-$here/.stage}
pki=${OVNET_PKI:-$here/.pki}
[ $# -gt 0 ] || { echo "usage: prepare-host.sh NAME=IP..." >&2; exit 2; }

for b in ovagent ovctl; do
  if [ ! -x "$bin_dir/$b" ]; then
    echo "prepare-host.sh: $bin_dir/$b not found. Build it first: cargo build --release" >&2
    echo "  (on a Linux x86_64 host; elsewhere build on such a machine and set OVNET_BIN_DIR)" >&2
    exit 1
  fi
  if [ "$(head -c 4 "$bin_dir/$b" | od -An -tx1 | tr -d ' \n')" != 7f454c46 ]; then
    echo "prepare-host.sh: $bin_dir/$b is not a Linux (ELF) binary: build it on Linux, set OVNET_BIN_DIR" >&2
    exit 1
  fi
done

mkdir -p "$stage/bin" "$stage/tls"
for b in ovagent ovctl; do
  cmp -s "$bin_dir/$b" "$stage/bin/$b" || cp "$bin_dir/$b" "$stage/bin/$b"
done

bash "$repo/deploy/etcd-tls.sh" -o "$pki" "$@" >/dev/null
for f in "$pki"/*.crt "$pki"/*.key; do
  case "$(basename "$f")" in ca.key) continue ;; esac
  cmp -s "$f" "$stage/tls/$(basename "$f")" || cp -p "$f" "$stage/tls/"
done
echo "prepare-host.sh: staged binaries from $bin_dir and TLS material in $stage"
