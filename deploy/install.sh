#!/usr/bin/env bash
# Installs ovnet on a host: ovagent and ovctl, the ovagent unit, its
# environment file and, with --etcd-member, the host's etcd member (its
# /etc/default/etcd, TLS files and a drop-in for Debian's etcd.service).
# Idempotent: files already right are left alone, /etc/ovnet/ovagent.env is
# written once and afterwards only changed by --env. Starts nothing unless
# told (--enable, --start). With DESTDIR everything lands under it and
# systemctl is never run, so it can be exercised without touching the system.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: install.sh [options]

  --bin-dir DIR       where the built ovagent and ovctl are (default ./target/release)
  --prefix DIR        install prefix (default $PREFIX or /usr/local): DIR/bin/ovagent ...
  --destdir DIR       stage everything under DIR (default $DESTDIR); no systemctl
  --env KEY=VALUE     set KEY in /etc/ovnet/ovagent.env (repeatable), e.g.
                      --env OVNET_ADVERTISE_ADDR=192.168.56.11
  --etcd-member NAME  also install this host's etcd member NAME, from
  --etcd-config DIR     DIR/NAME.env of deploy/etcd-cluster.sh -> /etc/default/etcd
  --etcd-tls DIR        deploy/etcd-tls.sh's output: ca.crt NAME.crt NAME.key ->
                        /etc/etcd/tls; ca.crt ovagent.crt ovagent.key -> /etc/ovnet/tls
                        (omit with etcd-cluster.sh --no-tls)
  --enable            systemctl enable the units (ovagent; etcd with --etcd-member)
  --start             enable them and start them now, without waiting
                      (restarting those whose files changed)
EOF
}

die() { echo "install.sh: $*" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
bin_dir=./target/release
prefix=${PREFIX:-/usr/local}
destdir=${DESTDIR:-}
envs=()
member="" etcd_config="" etcd_tls=""
enable=0 start=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=${2:?}; shift 2 ;;
    --prefix) prefix=${2:?}; shift 2 ;;
    --destdir) destdir=${2:?}; shift 2 ;;
    --env) envs+=("${2:?}"); shift 2 ;;
    --etcd-member) member=${2:?}; shift 2 ;;
    --etcd-config) etcd_config=${2:?}; shift 2 ;;
    --etcd-tls) etcd_tls=${2:?}; shift 2 ;;
    --enable) enable=1; shift ;;
    --start) enable=1 start=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
  esac
done
[[ $prefix =~ ^/[A-Za-z0-9._/-]*$ ]] || die "--prefix must be an absolute path, not '$prefix'"
[ -z "$destdir" ] || destdir=$(mkdir -p "$destdir" && cd "$destdir" && pwd)
for b in ovagent ovctl; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b not found: build it (cargo build --release) or pass --bin-dir"
done
for kv in "${envs[@]}"; do
  [[ $kv =~ ^[A-Z_][A-Z0-9_]*=[A-Za-z0-9_./:,@%+=-]*$ ]] || die "--env wants KEY=VALUE (plain value), not '$kv'"
done
if [ -n "$member" ]; then
  [ -n "$etcd_config" ] || die "--etcd-member needs --etcd-config"
  [ -f "$etcd_config/$member.env" ] || die "$etcd_config/$member.env not found (deploy/etcd-cluster.sh writes it)"
  if [ -n "$etcd_tls" ]; then
    for f in ca.crt "$member.crt" "$member.key"; do
      [ -f "$etcd_tls/$f" ] || die "$etcd_tls/$f not found (deploy/etcd-tls.sh writes it)"
    done
  elif grep -q '^ETCD_CERT_FILE=' "$etcd_config/$member.env"; then
    die "$etcd_config/$member.env uses TLS: pass --etcd-tls DIR"
  fi
fi
if [ "$(id -u)" -ne 0 ] && [ -z "$destdir" ]; then
  die "run as root (or with --destdir)"
fi

changed_agent=0 changed_etcd=0 changed_units=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# put MODE SRC DST [FLAG...]: installs SRC as DST (under destdir) unless it
# is already identical, and then sets each FLAG variable to 1. Replaces by
# rename, so a running binary is never written into.
put() {
  local mode=$1 src=$2 dst=$destdir$3 flag
  shift 3
  mkdir -p "$(dirname "$dst")"
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
    chmod "$mode" "$dst"
    return 0
  fi
  cp "$src" "$dst.ovnet-new"
  chmod "$mode" "$dst.ovnet-new"
  mv -f "$dst.ovnet-new" "$dst"
  echo "installed $dst"
  for flag in "$@"; do printf -v "$flag" 1; done
}

# set_env FILE KEY VALUE: replaces the first "KEY=" line, else the first
# "#KEY=" line, else appends.
set_env() {
  awk -v k="$2" -v v="$3" '
    BEGIN { n = 0 }
    { lines[++n] = $0 }
    index($0, k "=") == 1 && !set { set = n }
    index($0, "#" k "=") == 1 && !com { com = n }
    END {
      at = set ? set : com
      for (i = 1; i <= n; i++) print (i == at ? k "=" v : lines[i])
      if (!at) print k "=" v
    }' "$1" >"$1.new"
  mv -f "$1.new" "$1"
}

# ovagent and ovctl, docs, completion.
put 0755 "$bin_dir/ovagent" "$prefix/bin/ovagent" changed_agent
put 0755 "$bin_dir/ovctl" "$prefix/bin/ovctl"
if [ -f "$here/../README.md" ]; then
  put 0644 "$here/../README.md" "$prefix/share/doc/ovnet/README.md"
fi
if "$bin_dir/ovctl" completion bash >"$tmp/ovctl.bash" 2>/dev/null; then
  put 0644 "$tmp/ovctl.bash" "$prefix/share/bash-completion/completions/ovctl"
fi

# The unit, pointing at the prefix.
sed -e "s|^ExecStart=/usr/local/bin/|ExecStart=$prefix/bin/|" \
  -e "s|^Documentation=file:/usr/local/|Documentation=file:$prefix/|" \
  "$here/ovagent.service" >"$tmp/ovagent.service"
put 0644 "$tmp/ovagent.service" /etc/systemd/system/ovagent.service changed_agent changed_units

# The environment file: the example once, then only the --env settings.
if [ -f "$destdir/etc/ovnet/ovagent.env" ]; then
  cp "$destdir/etc/ovnet/ovagent.env" "$tmp/ovagent.env"
else
  cp "$here/ovagent.env" "$tmp/ovagent.env"
fi
for kv in "${envs[@]}"; do set_env "$tmp/ovagent.env" "${kv%%=*}" "${kv#*=}"; done
mkdir -p "$destdir/etc/ovnet"
chmod 0755 "$destdir/etc/ovnet"
put 0640 "$tmp/ovagent.env" /etc/ovnet/ovagent.env changed_agent

# This host's etcd member.
if [ -n "$member" ]; then
  if [ -f "$destdir/etc/default/etcd" ] && [ ! -f "$destdir/etc/default/etcd.before-ovnet" ] &&
    ! grep -q '^# Written by deploy/etcd-cluster.sh' "$destdir/etc/default/etcd"; then
    cp -p "$destdir/etc/default/etcd" "$destdir/etc/default/etcd.before-ovnet"
  fi
  put 0644 "$etcd_config/$member.env" /etc/default/etcd changed_etcd
  put 0644 "$here/etcd-ovnet.conf" /etc/systemd/system/etcd.service.d/ovnet.conf changed_etcd changed_units
  if [ -n "$etcd_tls" ]; then
    mkdir -p "$destdir/etc/etcd/tls" "$destdir/etc/ovnet/tls"
    chmod 0755 "$destdir/etc/etcd/tls"
    chmod 0700 "$destdir/etc/ovnet/tls"
    put 0644 "$etcd_tls/ca.crt" /etc/etcd/tls/ca.crt changed_etcd
    put 0644 "$etcd_tls/$member.crt" "/etc/etcd/tls/$member.crt" changed_etcd
    put 0600 "$etcd_tls/$member.key" "/etc/etcd/tls/$member.key" changed_etcd
    # etcd runs as user etcd (Debian's etcd-server creates it).
    if [ -z "$destdir" ]; then
      if getent passwd etcd >/dev/null; then
        chown etcd: "/etc/etcd/tls/$member.key"
      else
        echo "install.sh: warning: no user etcd (install etcd-server first): /etc/etcd/tls/$member.key stays root's" >&2
      fi
    fi
    # The client certificate for ovagent (OVNET_ETCD_CERT, OVNET_ETCD_KEY) and etcdctl.
    put 0644 "$etcd_tls/ca.crt" /etc/ovnet/tls/ca.crt
    if [ -f "$etcd_tls/ovagent.key" ]; then
      put 0644 "$etcd_tls/ovagent.crt" /etc/ovnet/tls/ovagent.crt
      put 0600 "$etcd_tls/ovagent.key" /etc/ovnet/tls/ovagent.key
    fi
  fi
fi

# systemd: only on the real system, and only when it runs.
units=(ovagent.service)
[ -z "$member" ] || units=(etcd.service ovagent.service)
if [ -n "$destdir" ]; then
  exit 0
fi
if [ ! -d /run/systemd/system ]; then
  [ "$enable" = 0 ] || echo "install.sh: systemd is not running here: enable and start ${units[*]} yourself" >&2
  exit 0
fi
[ "$changed_units" = 0 ] || systemctl daemon-reload
[ "$enable" = 0 ] || systemctl enable "${units[@]}"
if [ "$start" = 1 ]; then
  # --no-block: a new etcd member is ready only once a quorum runs, which may
  # need hosts not yet set up; ovagent is ordered after it and waits too.
  if [ -n "$member" ] && [ "$changed_etcd" = 1 ]; then
    systemctl restart --no-block etcd.service
  elif [ -n "$member" ]; then
    systemctl start --no-block etcd.service
  fi
  if [ "$changed_agent" = 1 ]; then
    systemctl restart --no-block ovagent.service
  else
    systemctl start --no-block ovagent.service
  fi
fi
