#!/usr/bin/env bash
# Provisions one host of the three-VM lab, as root: installs etcd from
# Debian's packages, this host's member of the etcd cluster (config from
# deploy/etcd-cluster.sh, TLS files staged by prepare-host.sh), ovagent and
# its unit (deploy/install.sh), and starts both with systemd.
# The Vagrantfile runs it in each VM; nothing in it needs a VM: with
# --destdir it writes everything under a directory instead, installs no
# package and runs no systemctl (tests/deploy/check.sh uses that to start the
# same cluster and agents in network namespaces).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: provision.sh [--src DIR] [--stage DIR] [--destdir DIR] [--env KEY=VALUE]... NAME NAME=IP...

  NAME             this host, one of the members
  NAME=IP...       every member of the cluster (this host's IP is its VTEP)
  --src DIR        the ovnet repository (default: the one holding this script)
  --stage DIR      binaries in DIR/bin, TLS files in DIR/tls (default SRC/vagrant/.stage)
  --destdir DIR    install under DIR; no apt-get, no systemctl
  --env KEY=VALUE  more ovagent settings, passed to install.sh
EOF
}

die() { echo "provision.sh: $*" >&2; exit 2; }

src="" stage="" destdir=""
extra=()
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --src) src=${2:?}; shift 2 ;;
    --stage) stage=${2:?}; shift 2 ;;
    --destdir) destdir=${2:?}; shift 2 ;;
    --env) extra+=(--env "${2:?}"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) args+=("$1"); shift ;;
  esac
done
[ ${#args[@]} -ge 2 ] || { usage >&2; die "want NAME and the members"; }
name=${args[0]}
members=("${args[@]:1}")
[ -n "$src" ] || src=$(cd "$(dirname "$0")/.." && pwd)
[ -n "$stage" ] || stage=$src/vagrant/.stage
ip=""
for m in "${members[@]}"; do
  [ "${m%%=*}" != "$name" ] || ip=${m#*=}
done
[ -n "$ip" ] || die "$name is not among the members ${members[*]}"
for f in bin/ovagent bin/ovctl tls/ca.crt "tls/$name.crt" "tls/$name.key" tls/ovagent.crt tls/ovagent.key; do
  [ -e "$stage/$f" ] || die "$stage/$f missing (the Vagrantfile's prepare-host.sh stages it)"
done
# Built on the host: make sure it runs here (architecture, glibc).
"$stage/bin/ovagent" --version >/dev/null ||
  die "$stage/bin/ovagent does not run on this machine: build it on (or for) Linux $(uname -m)"

if [ -z "$destdir" ]; then
  need=()
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v etcdctl >/dev/null || need+=(etcd-client)
  command -v bridge >/dev/null || need+=(iproute2)
  command -v ping >/dev/null || need+=(iputils-ping)
  command -v nft >/dev/null || need+=(nftables) # to look at ovagent's table inet ovnet
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bash "$src/deploy/etcd-cluster.sh" -o "$tmp" --tls-dir "$destdir/etc/etcd/tls" \
  --data-dir "$destdir/var/lib/etcd/ovnet" "${members[@]}" >/dev/null

# ovagent talks TLS to every member, with the client certificate install.sh
# puts in /etc/ovnet/tls.
endpoints=""
for m in "${members[@]}"; do
  endpoints="${endpoints:+$endpoints,}https://${m#*=}:2379"
done
tls=$destdir/etc/ovnet/tls
install=(bash "$src/deploy/install.sh" --bin-dir "$stage/bin"
  --etcd-member "$name" --etcd-config "$tmp" --etcd-tls "$stage/tls"
  --env "OVNET_NODE_NAME=$name" --env "OVNET_ADVERTISE_ADDR=$ip"
  --env "OVNET_ETCD_ENDPOINTS=$endpoints" --env "OVNET_ETCD_CACERT=$tls/ca.crt"
  --env "OVNET_ETCD_CERT=$tls/ovagent.crt" --env "OVNET_ETCD_KEY=$tls/ovagent.key"
  ${extra[@]+"${extra[@]}"})
if [ -n "$destdir" ]; then
  "${install[@]}" --destdir "$destdir"
else
  # Starts without waiting: this member becomes ready (and ovagent, ordered
  # after it, starts) once a quorum of members runs.
  "${install[@]}" --start
fi
echo "provisioned $name ($ip)"
