#!/usr/bin/env bash
# Installs what building and running ovnet needs on a fresh Debian machine:
# etcd (Debian's etcd-server), iproute2, ping, protoc (etcd-client's build runs it).
# With --test, also what the test suite needs: for tests/deploy/check.sh etcdctl,
# openssl, shellcheck, ruby, vagrant with the libvirt plugin (vagrant validate),
# systemd-analyze, nsenter; for ovbench iperf3; for the isolation test tcpdump;
# nft, which the firewall tests read the agent's table with; ethtool for the
# overlay test.
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
# protoc's well-known types (google/protobuf/descriptor.proto), which etcd-client's
# protos import; without recommends, protobuf-compiler does not bring them.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
if [ "${1:-}" = "--test" ]; then
command -v nft >/dev/null || need+=(nftables) # firewall tests: an independent read of the table
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v openssl >/dev/null || need+=(openssl)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v ruby >/dev/null || need+=(ruby)
command -v vagrant >/dev/null || need+=(vagrant)
[ "$(dpkg-query -W -f='${Status}' vagrant-libvirt 2>/dev/null)" = "install ok installed" ] || need+=(vagrant-libvirt)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v nsenter >/dev/null || need+=(util-linux)
command -v iperf3 >/dev/null || need+=(iperf3) # ovbench datapath
command -v tcpdump >/dev/null || need+=(tcpdump) # isolation test: captures VXLAN on the underlay
command -v ethtool >/dev/null || need+=(ethtool) # overlay test: reads the VXLAN device's GRO setting
fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup)" >&2; exit 1; }
