#!/usr/bin/env bash
# OVNET_DEMO_RUN for vagrant/demo.sh in check.sh's namespace lab: runs CMD as
# a root shell on lab host HOST, i.e. in its network namespace, with its
# installed ovctl on PATH and OVNET_HOST at its agent's socket: what
# `vagrant ssh HOST -c` is on a VM.
# Usage: lab-run.sh HOST CMD, with LAB_NS_PREFIX (HOST's namespace is
# $LAB_NS_PREFIX$HOST) and LAB_ROOT (HOST was provisioned into $LAB_ROOT/HOST).
set -euo pipefail
host=$1 cmd=$2
root=$LAB_ROOT/$host
listen=$(sed -n 's/^OVNET_LISTEN=//p' "$root/etc/ovnet/ovagent.env")
# nsenter, not `ip netns exec`: only the network namespace changes, so the
# namespaces that CMD adds (ip netns add) are seen by everyone, as on a VM.
exec nsenter --net="/run/netns/$LAB_NS_PREFIX$host" \
  env PATH="$root/usr/local/bin:$PATH" OVNET_HOST="$listen" bash -c "$cmd"
