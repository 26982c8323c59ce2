#!/usr/bin/env bash
# The one list of what building and running ovnet needs on a fresh Debian
# machine (the README points here). It checks the Rust toolchain first and
# stops with a clear message before installing anything:
#   cargo and rustc at least the workspace's rust-version (Cargo.toml); with
#   --test also rustfmt and clippy (tests/run.sh runs cargo fmt and clippy).
# Then it installs with apt-get what is missing:
#   etcd (Debian's etcd-server), iproute2, ping, protoc and its well-known
#   types (etcd-client's build runs protoc).
# With --test, also what the test suite needs: for tests/deploy/check.sh etcdctl,
# openssl, shellcheck, ruby, vagrant with the libvirt plugin (vagrant validate),
# systemd-analyze, nsenter; for ovbench iperf3; for the isolation test tcpdump;
# nft, which the firewall tests read the agent's table with; ethtool for the
# overlay test; docker.io and busybox-static (the image) for the Docker tests;
# podman and containernetworking-plugins for the CNI tests.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: the lab creates network namespaces" >&2
  echo "  (Rust from rustup as a user: sudo env \"PATH=\$PATH\" tests/run.sh, since sudo alone drops ~/.cargo/bin from PATH)" >&2
  exit 1
fi
# The toolchain. A Rust installed with rustup as another user is not on
# root's PATH when sudo resets it.
toolchain_missing() {
  echo "$1" >&2
  echo "  install Rust with rustup (https://rustup.rs): rustup toolchain install stable --component rustfmt clippy" >&2
  if [ -n "${SUDO_USER:-}" ]; then
    echo "  sudo resets PATH; keep ~/.cargo/bin with: sudo env \"PATH=\$PATH\" tests/run.sh (or tests/demo.sh)" >&2
  fi
  exit 1
}
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml")
command -v cargo >/dev/null || toolchain_missing "cargo not found on PATH ($PATH)"
command -v rustc >/dev/null || toolchain_missing "rustc not found on PATH ($PATH)"
have=$(rustc --version | awk '{print $2}')
if [ -n "$msrv" ] && [ "$(printf '%s\n%s\n' "$msrv" "${have%%-*}" | sort -V | head -n1)" != "$msrv" ]; then
  toolchain_missing "rustc $have is too old: ovnet needs Rust $msrv or newer (rust-version in Cargo.toml)"
fi
if [ "${1:-}" = "--test" ]; then
  cargo fmt --version >/dev/null 2>&1 || toolchain_missing "rustfmt not found: tests/run.sh runs cargo fmt --check (rustup component add rustfmt)"
  cargo clippy --version >/dev/null 2>&1 || toolchain_missing "clippy not found: tests/run.sh runs cargo clippy (rustup component add clippy)"
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
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || need+=(docker.io) # Docker tests: a dockerd per lab host, Debian's 20.10 CLI
command -v podman >/dev/null || need+=(podman) # CNI tests: a podman per lab host
[ -d /usr/lib/cni ] || need+=(containernetworking-plugins) # podman's CNI backend
[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] || need+=(busybox-static) # the tests' image
fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
