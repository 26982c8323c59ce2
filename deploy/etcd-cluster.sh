#!/usr/bin/env bash
# Writes the configuration of an etcd cluster with one member per host: for
# every NAME=IP, DIR/NAME.env, the ETCD_* variables that Debian's etcd
# (etcd-server) reads from /etc/default/etcd. deploy/install.sh --etcd-member
# NAME --etcd-config DIR installs a member's file there.
#
# With TLS (the default) peers talk https with client certificates both ways,
# clients (ovagent with --etcd-cacert/--etcd-cert/--etcd-key, etcdctl) reach
# every member on https://IP:2379 with a client certificate, and each member
# also serves plain http://127.0.0.1:2379 to its own host (--no-local-http
# turns that off).
# The TLS files (deploy/etcd-tls.sh) are expected in --tls-dir on each host.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: etcd-cluster.sh [options] NAME=IP...

  -o, --out DIR       where to write NAME.env for each member (default ./etcd-cluster)
  --tls-dir DIR       where each host keeps ca.crt, NAME.crt, NAME.key
                      (default /etc/etcd/tls, where install.sh puts them)
  --no-tls            plain http everywhere (labs only)
  --no-local-http     no http://127.0.0.1:2379 listener (when every client uses TLS)
  --data-dir DIR      member data directory (default /var/lib/etcd/ovnet)
  --token TOKEN       initial cluster token (default ovnet)
  --state new|existing  initial cluster state (default new; existing to add a
                      member to a running cluster after `etcdctl member add`)
  --client-port N     default 2379
  --peer-port N       default 2380

example: etcd-cluster.sh -o etcd h1=192.168.56.11 h2=192.168.56.12 h3=192.168.56.13
EOF
}

die() { echo "etcd-cluster.sh: $*" >&2; exit 2; }

out=./etcd-cluster
tls_dir=/etc/etcd/tls
tls=1
local_http=1
data_dir=/var/lib/etcd/ovnet
token=ovnet
state=new
client_port=2379
peer_port=2380
members=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o | --out) out=${2:?}; shift 2 ;;
    --tls-dir) tls_dir=${2:?}; shift 2 ;;
    --no-tls) tls=0; shift ;;
    --no-local-http) local_http=0; shift ;;
    --data-dir) data_dir=${2:?}; shift 2 ;;
    --token) token=${2:?}; shift 2 ;;
    --state) state=${2:?}; shift 2 ;;
    --client-port) client_port=${2:?}; shift 2 ;;
    --peer-port) peer_port=${2:?}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) members+=("$1"); shift ;;
  esac
done
[ ${#members[@]} -gt 0 ] || { usage >&2; die "no members given"; }
case "$state" in new | existing) ;; *) die "--state is new or existing, not '$state'" ;; esac
[[ $client_port =~ ^[0-9]+$ && $peer_port =~ ^[0-9]+$ ]] || die "ports are numbers"
[[ $token =~ ^[A-Za-z0-9._-]+$ ]] || die "bad token '$token'"
for v in "$tls_dir" "$data_dir"; do
  [[ $v =~ ^/[A-Za-z0-9._/-]*$ ]] || die "'$v' is not an absolute path of [A-Za-z0-9._/-]"
done

valid_ipv4() {
  local IFS=. o
  [[ $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
  for o in $1; do [ "$o" -le 255 ] || return 1; done
}
names=" "
cluster=""
for m in "${members[@]}"; do
  name=${m%%=*} ip=${m#*=}
  if ! [[ $name =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] || ! valid_ipv4 "$ip"; then
    die "'$m' is not NAME=IPv4"
  fi
  case "$names" in *" $name "*) die "member $name given twice" ;; esac
  names="$names$name "
done
[ $((${#members[@]} % 2)) -eq 1 ] ||
  echo "etcd-cluster.sh: warning: ${#members[@]} members; an odd number tolerates as many failures with one member less" >&2

scheme=https
[ "$tls" = 1 ] || scheme=http
for m in "${members[@]}"; do
  cluster="${cluster:+$cluster,}${m%%=*}=$scheme://${m#*=}:$peer_port"
done

mkdir -p "$out"
for m in "${members[@]}"; do
  name=${m%%=*} ip=${m#*=}
  listen_client="$scheme://$ip:$client_port"
  [ "$local_http" = 0 ] || listen_client="$listen_client,http://127.0.0.1:$client_port"
  {
    echo "# /etc/default/etcd for member $name of a ${#members[@]}-member etcd cluster."
    echo "# Written by deploy/etcd-cluster.sh; Debian's etcd.service reads it."
    echo "ETCD_NAME=\"$name\""
    echo "ETCD_DATA_DIR=\"$data_dir\""
    echo "ETCD_LISTEN_PEER_URLS=\"$scheme://$ip:$peer_port\""
    echo "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"$scheme://$ip:$peer_port\""
    echo "ETCD_LISTEN_CLIENT_URLS=\"$listen_client\""
    echo "ETCD_ADVERTISE_CLIENT_URLS=\"$scheme://$ip:$client_port\""
    echo "ETCD_INITIAL_CLUSTER=\"$cluster\""
    echo "ETCD_INITIAL_CLUSTER_STATE=\"$state\""
    echo "ETCD_INITIAL_CLUSTER_TOKEN=\"$token\""
    if [ "$tls" = 1 ]; then
      echo "# Clients on https://$ip:$client_port need a certificate signed by the CA."
      echo "ETCD_TRUSTED_CA_FILE=\"$tls_dir/ca.crt\""
      echo "ETCD_CERT_FILE=\"$tls_dir/$name.crt\""
      echo "ETCD_KEY_FILE=\"$tls_dir/$name.key\""
      echo "ETCD_CLIENT_CERT_AUTH=\"true\""
      echo "ETCD_PEER_TRUSTED_CA_FILE=\"$tls_dir/ca.crt\""
      echo "ETCD_PEER_CERT_FILE=\"$tls_dir/$name.crt\""
      echo "ETCD_PEER_KEY_FILE=\"$tls_dir/$name.key\""
      echo "ETCD_PEER_CLIENT_CERT_AUTH=\"true\""
    fi
  } >"$out/$name.env.tmp"
  mv -f "$out/$name.env.tmp" "$out/$name.env"
  echo "wrote $out/$name.env"
done
