#!/usr/bin/env bash
# Checks deploy/ and vagrant/ without a VM (tests/run.sh runs it; root):
#  - shellcheck of every script, `ruby -c` and `vagrant validate` of the Vagrantfile;
#  - ovagent.env names every flag of `ovagent --help`;
#  - etcd-tls.sh, etcd-cluster.sh and install.sh (into a DESTDIR: files,
#    modes, idempotence), `systemd-analyze verify` of the installed units;
#  - the namespace lab: vagrant/prepare-host.sh and vagrant/provision.sh set
#    up three hosts (network namespaces on a bridge in a fourth), each host's
#    etcd member starts from its installed /etc/default/etcd with the
#    generated TLS material and the three form a healthy cluster; each agent
#    starts from its installed unit and env file, with only the unit's
#    capabilities (setpriv), and reaches etcd over TLS with its client
#    certificate; vagrant/demo.sh runs across them
#    (tests/deploy/lab-run.sh in place of `vagrant ssh`).
# Everything it starts it stops by PID; every namespace it makes it deletes.
# OVNET_CHECK_VERBOSE=1 prints the output of passing checks too.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
[ "$(id -u)" -eq 0 ] || { echo "check.sh: run as root (network namespaces)" >&2; exit 1; }
bin_dir=$(cd "${OVNET_BIN_DIR:-target/debug}" && pwd)

tmp=$(mktemp -d /tmp/ovdeploy.XXXXXX)
P="ovdep$$-" # every namespace of this run starts with it
pids=()
passed=0 failed=0

stop_pid() {
  local pid=$1 end=$((SECONDS + 10)) st
  kill -TERM "$pid" 2>/dev/null || return 0
  # Until it is gone or a zombie (state Z in /proc/PID/stat, after "(comm) ").
  while st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) && [ "${st:0:1}" != Z ]; do
    [ "$SECONDS" -lt "$end" ] || { kill -KILL "$pid" 2>/dev/null || true; break; }
    sleep 0.1
  done
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid ns
  for pid in ${pids[@]+"${pids[@]}"}; do stop_pid "$pid"; done
  for ns in $(ip netns list | awk -v p="$P" 'index($1, p) == 1 { print $1 }'); do
    ip netns del "$ns" || echo "check.sh: could not delete namespace $ns" >&2
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# check WHAT FUNC ARGS...: runs FUNC with errexit in a subshell, counts it.
check() {
  local what=$1 rc
  shift
  set +e
  (set -e; "$@") >"$tmp/check.out" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "ok   $what"
    [ -z "${OVNET_CHECK_VERBOSE:-}" ] || sed 's/^/     /' "$tmp/check.out"
  else
    failed=$((failed + 1))
    echo "FAIL $what"
    tail -n 40 "$tmp/check.out" | sed 's/^/     /'
  fi
  return 0
}

# wait_until SECS CMD...: polls CMD until it succeeds or SECS pass.
wait_until() {
  local end=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.2
  done
}

fail() { echo "$*" >&2; return 1; }

# mode PATH: octal permissions.
mode() { stat -c %a "$1"; }

# --- static checks ---------------------------------------------------------

scripts=(deploy/*.sh vagrant/*.sh tests/deploy/*.sh)
check "shellcheck ${scripts[*]}" shellcheck -x "${scripts[@]}"
check "ruby -c vagrant/Vagrantfile" ruby -c vagrant/Vagrantfile

# vagrant validate needs a usable provider. VirtualBox is not in Debian and
# cannot run here, so its provider block is checked by `ruby -c` only; the
# libvirt provider (Debian's vagrant-libvirt plugin) validates without a
# libvirt daemon or a box. `-p` validates all but the provider blocks.
vagrant_validate() {
  (
    cd vagrant
    export HOME=$tmp/vhome VAGRANT_HOME=$tmp/vhome/.vagrant.d VAGRANT_DOTFILE_PATH=$tmp/vdot
    export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_DEFAULT_PROVIDER="$1"
    shift
    vagrant validate "$@"
  )
}
check "vagrant validate -p (provider-neutral)" vagrant_validate libvirt -p
if [ -d /usr/share/vagrant-plugins/plugins.d ] && grep -qs libvirt /usr/share/vagrant-plugins/plugins.d/*; then
  check "vagrant validate (libvirt provider)" vagrant_validate libvirt
else
  echo "skip vagrant validate with the libvirt provider: Debian's vagrant-libvirt is not installed"
fi

env_documents_flags() {
  local help vars v
  help=$("$bin_dir/ovagent" --help)
  vars=$(grep -o '\[env: [A-Z_]*=' <<<"$help" | sed 's/\[env: //; s/=$//' | sort -u)
  [ -n "$vars" ] || fail "no [env: ...] in ovagent --help"
  for v in $vars; do
    grep -q "^#\?$v=" deploy/ovagent.env || fail "deploy/ovagent.env lacks $v (a flag of ovagent --help)"
  done
  while read -r v; do
    # Read from the environment only: the log filter, and the etcd password (never a flag).
    case "$v" in OVNET_LOG | OVNET_ETCD_PASSWORD) continue ;; esac
    grep -qx "$v" <<<"$vars" || fail "deploy/ovagent.env sets $v, which ovagent does not know"
  done < <(sed -n 's/^#\?\(OVNET_[A-Z_]*\)=.*/\1/p' deploy/ovagent.env)
}
check "deploy/ovagent.env documents every flag of ovagent --help" env_documents_flags

# --- deploy/ scripts ---------------------------------------------------------

members=(m1=172.31.200.11 m2=172.31.200.12 m3=172.31.200.13)

tls_script() {
  local d=$tmp/tls-test m out
  deploy/etcd-tls.sh -o "$d" "${members[@]}"
  cp "$d/ca.crt" "$d/ca.first"
  out=$(deploy/etcd-tls.sh -o "$d" "${members[@]}")
  if grep -q wrote <<<"$out"; then fail "second run wrote files: $out"; fi
  cmp "$d/ca.crt" "$d/ca.first"
  for m in "${members[@]}"; do
    openssl verify -CAfile "$d/ca.crt" "$d/${m%%=*}.crt"
    openssl x509 -in "$d/${m%%=*}.crt" -noout -text | grep -q "IP Address:${m#*=},"
    [ "$(mode "$d/${m%%=*}.key")" = 600 ] || fail "key mode $(mode "$d/${m%%=*}.key")"
  done
  openssl verify -CAfile "$d/ca.crt" -purpose sslclient "$d/ovagent.crt"
  # A member that moves to another IP gets a new certificate.
  out=$(deploy/etcd-tls.sh -o "$d" m1=172.31.200.21)
  grep -q "wrote $d/m1.crt" <<<"$out"
  openssl x509 -in "$d/m1.crt" -noout -text | grep -q "IP Address:172.31.200.21,"
  if deploy/etcd-tls.sh -o "$d" m1=300.1.1.1 2>/dev/null; then fail "accepted a bad IP"; fi
}
check "etcd-tls.sh: CA, member certs with their IP, client cert; idempotent" tls_script

cluster_script() {
  local d=$tmp/cluster-test
  deploy/etcd-cluster.sh -o "$d" "${members[@]}"
  [ "$(find "$d" -name '*.env' | wc -l)" = 3 ]
  grep -qx 'ETCD_NAME="m2"' "$d/m2.env"
  grep -qx 'ETCD_INITIAL_CLUSTER="m1=https://172.31.200.11:2380,m2=https://172.31.200.12:2380,m3=https://172.31.200.13:2380"' "$d/m2.env"
  grep -qx 'ETCD_LISTEN_CLIENT_URLS="https://172.31.200.12:2379,http://127.0.0.1:2379"' "$d/m2.env"
  grep -qx 'ETCD_PEER_CERT_FILE="/etc/etcd/tls/m2.crt"' "$d/m2.env"
  # Readable by systemd's EnvironmentFile= and by sh alike.
  # shellcheck source=/dev/null
  (set -a; . "$d/m2.env"; [ "$ETCD_PEER_CLIENT_CERT_AUTH" = true ])
  deploy/etcd-cluster.sh -o "$d/plain" --no-tls "${members[@]}"
  if grep -q TLS "$d/plain/m1.env" || grep -q https "$d/plain/m1.env"; then fail "--no-tls kept TLS"; fi
  if deploy/etcd-cluster.sh -o "$d" m1=172.31.200.11 m1=172.31.200.12 2>/dev/null; then
    fail "accepted a duplicate member"
  fi
}
check "etcd-cluster.sh: one /etc/default/etcd per member" cluster_script

install_script() {
  local d=$tmp/destdir out f
  deploy/etcd-tls.sh -o "$tmp/tls-i" "${members[@]}" >/dev/null
  deploy/etcd-cluster.sh -o "$tmp/cluster-i" "${members[@]}" >/dev/null
  local args=(--bin-dir "$bin_dir" --destdir "$d" --env OVNET_NODE_NAME=m1
    --etcd-member m1 --etcd-config "$tmp/cluster-i" --etcd-tls "$tmp/tls-i")
  deploy/install.sh "${args[@]}"
  while read -r want f; do
    [ -f "$d$f" ] || fail "missing $f"
    [ "$(mode "$d$f")" = "$want" ] || fail "$f has mode $(mode "$d$f"), want $want"
  done <<'EOF'
755 /usr/local/bin/ovagent
755 /usr/local/bin/ovctl
644 /etc/systemd/system/ovagent.service
640 /etc/ovnet/ovagent.env
644 /etc/default/etcd
644 /etc/systemd/system/etcd.service.d/ovnet.conf
644 /etc/etcd/tls/ca.crt
644 /etc/etcd/tls/m1.crt
600 /etc/etcd/tls/m1.key
600 /etc/ovnet/tls/ovagent.key
644 /usr/local/share/doc/ovnet/README.md
EOF
  [ "$(mode "$d/etc/ovnet/tls")" = 700 ] || fail "/etc/ovnet/tls mode $(mode "$d/etc/ovnet/tls")"
  cmp "$bin_dir/ovagent" "$d/usr/local/bin/ovagent"
  grep -qx ExecStart=/usr/local/bin/ovagent "$d/etc/systemd/system/ovagent.service"
  grep -qx OVNET_NODE_NAME=m1 "$d/etc/ovnet/ovagent.env"
  [ "$(grep -c '^#\?OVNET_NODE_NAME=' "$d/etc/ovnet/ovagent.env")" = 1 ] || fail "OVNET_NODE_NAME twice"
  # Again: nothing changes; an operator's edit of the env file survives.
  echo "OVNET_LEASE_TTL=20" >>"$d/etc/ovnet/ovagent.env"
  out=$(deploy/install.sh "${args[@]}")
  [ -z "$out" ] || fail "second run changed: $out"
  grep -qx OVNET_LEASE_TTL=20 "$d/etc/ovnet/ovagent.env"
  # --prefix moves the binaries and the unit's ExecStart.
  deploy/install.sh --bin-dir "$bin_dir" --destdir "$tmp/destdir-usr" --prefix /usr >/dev/null
  [ -x "$tmp/destdir-usr/usr/bin/ovagent" ]
  grep -qx ExecStart=/usr/bin/ovagent "$tmp/destdir-usr/etc/systemd/system/ovagent.service"
  [ ! -e "$tmp/destdir-usr/etc/default/etcd" ] || fail "installed etcd config without --etcd-member"
  if deploy/install.sh --bin-dir "$tmp/nowhere" --destdir "$tmp/destdir-x" 2>/dev/null; then
    fail "installed from a missing --bin-dir"
  fi
}
check "install.sh into a DESTDIR: files, modes, idempotent, --prefix" install_script

# systemd-analyze verify in a root holding Debian's units (for the targets
# the units name), etcd.service and a stand-in /usr/bin/etcd, plus what
# install.sh put there: ExecStart is checked against the installed copy.
verify_units() {
  local r=$tmp/verify-root out
  mkdir -p "$r/usr/lib/systemd" "$r/usr/bin"
  cp -a /usr/lib/systemd/system "$r/usr/lib/systemd/"
  [ -f "$r/usr/lib/systemd/system/etcd.service" ] || fail "no etcd.service: install etcd-server"
  printf '#!/bin/sh\n' >"$r/usr/bin/etcd"
  chmod 0755 "$r/usr/bin/etcd"
  deploy/install.sh --bin-dir "$bin_dir" --destdir "$r" --etcd-member m1 \
    --etcd-config "$tmp/cluster-i" --etcd-tls "$tmp/tls-i" >/dev/null
  out=$(systemd-analyze verify --root="$r" ovagent.service etcd.service 2>&1) || fail "$out"
  [ -z "$out" ] || fail "systemd-analyze verify warns: $out"
  # It does catch mistakes: a typo in a copy of the unit.
  sed 's/^Restart=on-failure/Restart=on-failur/' "$r/etc/systemd/system/ovagent.service" \
    >"$r/etc/systemd/system/ovagent-typo.service"
  out=$(systemd-analyze verify --root="$r" ovagent-typo.service 2>&1 || true)
  [ -n "$out" ] || fail "a bad Restart= went unnoticed"
}
check "systemd-analyze verify ovagent.service and etcd.service with the drop-in" verify_units

# --- the namespace lab ------------------------------------------------------

declare -A ip_of=()
for m in "${members[@]}"; do ip_of[${m%%=*}]=${m#*=}; done
names=(m1 m2 m3)

provision_lab() {
  OVNET_BIN_DIR=$bin_dir OVNET_STAGE=$tmp/stage OVNET_PKI=$tmp/pki \
    bash vagrant/prepare-host.sh "${members[@]}"
  [ -f "$tmp/pki/ca.key" ]
  if [ -e "$tmp/stage/tls/ca.key" ]; then fail "the CA key was staged"; fi
  for n in "${names[@]}"; do
    bash vagrant/provision.sh --stage "$tmp/stage" --destdir "$tmp/$n" \
      --env "OVNET_LISTEN=unix://$tmp/$n/run/ovagent.sock" "$n" "${members[@]}"
    grep -qx "ETCD_NAME=\"$n\"" "$tmp/$n/etc/default/etcd"
    grep -qx "OVNET_ADVERTISE_ADDR=${ip_of[$n]}" "$tmp/$n/etc/ovnet/ovagent.env"
    # The agent talks TLS with its client certificate to every member.
    grep -qx "OVNET_ETCD_ENDPOINTS=https://${ip_of[m1]}:2379,https://${ip_of[m2]}:2379,https://${ip_of[m3]}:2379" \
      "$tmp/$n/etc/ovnet/ovagent.env"
    grep -qx "OVNET_ETCD_CERT=$tmp/$n/etc/ovnet/tls/ovagent.crt" "$tmp/$n/etc/ovnet/ovagent.env"
  done
}
check "vagrant/prepare-host.sh and provision.sh --destdir for 3 hosts" provision_lab

# Namespaces: ${P}ul holds the underlay bridge, ${P}m1..3 are the hosts.
make_lab() {
  local n i=0
  ip netns add "${P}ul"
  ip -n "${P}ul" link add ul type bridge
  ip -n "${P}ul" link set ul up
  for n in "${names[@]}"; do
    i=$((i + 1))
    ip netns add "$P$n"
    ip -n "${P}ul" link add "p$i" type veth peer name eth0 netns "$P$n"
    ip -n "${P}ul" link set "p$i" master ul up
    ip -n "$P$n" addr add "${ip_of[$n]}/24" dev eth0
    ip -n "$P$n" link set eth0 up
    ip -n "$P$n" link set lo up
  done
}

# launch NAME NS ENVFILE CMD...: starts CMD in namespace NS with only the
# variables of ENVFILE (as systemd's EnvironmentFile= gives them).
launch() {
  local name=$1 ns=$2 envfile=$3
  shift 3
  # shellcheck disable=SC2016 # expanded by the inner bash
  ip netns exec "$ns" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c 'set -a; . "$1"; set +a; shift; exec "$@"' launch "$envfile" "$@" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
}

# unit_exec UNIT: the command systemd would run for UNIT under DESTDIR $2:
# setpriv with the unit's CapabilityBoundingSet= and NoNewPrivileges=, then
# ExecStart (a plain path, as ours is).
unit_exec() {
  local unit=$1 root=$2 caps
  caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit" | tr 'A-Z ' 'a-z\n' | sed -n 's/^cap_/+/p' | paste -sd, -)
  printf '%s\n' setpriv "--bounding-set=-all,$caps"
  if grep -qx NoNewPrivileges=yes "$unit"; then echo --no-new-privs; fi
  echo "$root$(sed -n 's/^ExecStart=//p' "$unit")"
}

etcdctl_tls() {
  local n=$1
  shift
  ip netns exec "$P$n" etcdctl --dial-timeout=2s --command-timeout=5s \
    --endpoints "https://${ip_of[m1]}:2379,https://${ip_of[m2]}:2379,https://${ip_of[m3]}:2379" \
    --cacert "$tmp/$n/etc/ovnet/tls/ca.crt" --cert "$tmp/$n/etc/ovnet/tls/ovagent.crt" \
    --key "$tmp/$n/etc/ovnet/tls/ovagent.key" "$@"
}

cluster_healthy() {
  if ! wait_until 60 etcdctl_tls m1 endpoint health; then
    tail -n 5 "$tmp"/etcd-m*.log
    fail "the cluster did not become healthy within 60s"
  fi
  local list
  list=$(etcdctl_tls m2 member list)
  echo "$list"
  [ "$(grep -c ', started, ' <<<"$list")" = 3 ] || fail "want 3 started members"
  for n in "${names[@]}"; do
    grep -q ", started, $n, https://${ip_of[$n]}:2380, https://${ip_of[$n]}:2379" <<<"$list"
  done
}

cluster_tls() {
  # Written over TLS through m1, read on m3's plain loopback listener.
  etcdctl_tls m1 put /ovdeploy/probe "$P"
  [ "$(ip netns exec "${P}m3" etcdctl --endpoints http://127.0.0.1:2379 get --print-value-only /ovdeploy/probe)" = "$P" ]
  etcdctl_tls m1 del /ovdeploy/probe >/dev/null
  # No client certificate, no answer on the network listener.
  if ip netns exec "${P}m2" etcdctl --dial-timeout=2s --command-timeout=3s \
    --endpoints "https://${ip_of[m1]}:2379" --cacert "$tmp/m2/etc/ovnet/tls/ca.crt" endpoint health; then
    fail "a client without a certificate was served"
  fi
  wait_until 10 grep -q "client didn't provide a certificate" "$tmp/etcd-m1.log"
}

alive_hosts_are() {
  [ "$(tests/deploy/lab-run.sh m3 "ovctl host ls --format json" | grep -c '"alive": *true')" = "$1" ]
}

agents_alive() {
  local pid eff
  if ! wait_until 60 alive_hosts_are 3; then
    tail -n 5 "$tmp"/agent-m*.log
    fail "3 alive agents not seen within 60s"
  fi
  tests/deploy/lab-run.sh m3 "ovctl host ls"
  # They run with CAP_NET_ADMIN (12), CAP_NET_RAW (13, for iptables with
  # --docker-plugin) and CAP_SYS_ADMIN (21) only.
  for pid in "${pids[@]:3}"; do
    eff=$(sed -n 's/^CapEff:[[:space:]]*//p' "/proc/$pid/status")
    [ "$eff" = 0000000000203000 ] || fail "agent $pid has capabilities $eff"
  done
}

demo_across_hosts() {
  OVNET_DEMO_RUN=$repo/tests/deploy/lab-run.sh OVNET_DEMO_HOSTS="${names[*]}" \
    OVNET_DEMO_PREFIX="$P" OVNET_DEMO_NETWORK=ovdeploy OVNET_DEMO_TIMEOUT=60 \
    bash vagrant/demo.sh | tee "$tmp/demo.out"
  grep -qx "demo: 6 pings ok, 0 failed" "$tmp/demo.out"
  [ -z "$(ip netns list | awk -v p="${P}c" 'index($1, p) == 1')" ] || fail "demo left namespaces"
}

# lab_step WHAT FUNC: a check that needs the ones before it; once one
# failed, the rest are counted as failed without running (no long waits).
lab_broken=""
lab_step() {
  if [ -n "$lab_broken" ]; then
    failed=$((failed + 1))
    echo "FAIL $1 (not run: $lab_broken failed)"
    return 0
  fi
  local before=$failed
  check "$@"
  [ "$failed" = "$before" ] || lab_broken=$1
}

export LAB_NS_PREFIX=$P LAB_ROOT=$tmp
[ -e "$tmp/m3/etc/default/etcd" ] || lab_broken="provisioning"
if [ -z "$lab_broken" ]; then
  make_lab
  for n in "${names[@]}"; do launch "etcd-$n" "$P$n" "$tmp/$n/etc/default/etcd" etcd; done
fi
lab_step "3 etcd members from their generated config form a healthy TLS cluster" cluster_healthy
lab_step "etcd: peers and clients on TLS, client cert required, plain loopback listener" cluster_tls
if [ -z "$lab_broken" ]; then
  # Each agent as its installed unit would start it: its env file, its
  # capabilities only, its ExecStart.
  for n in "${names[@]}"; do
    mapfile -t cmd < <(unit_exec "$tmp/$n/etc/systemd/system/ovagent.service" "$tmp/$n")
    launch "agent-$n" "$P$n" "$tmp/$n/etc/ovnet/ovagent.env" "${cmd[@]}"
  done
fi
lab_step "3 agents from their installed unit and env file (etcd over TLS) register as alive" agents_alive
lab_step "vagrant/demo.sh across the 3 lab hosts (lab-run.sh for vagrant ssh)" demo_across_hosts

cleanup
trap - EXIT
if [ -n "$(ip netns list | awk -v p="$P" 'index($1, p) == 1')" ]; then
  echo "FAIL namespaces left behind"
  failed=$((failed + 1))
fi
echo "deploy checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
