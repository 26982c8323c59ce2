#!/usr/bin/env bash
# Writes the TLS material of an etcd cluster: a CA, one certificate per member
# (server and peer: its IP, 127.0.0.1, its name and localhost in the SAN) and
# client certificates (default: one for ovagent). Run it once, on one machine,
# and copy the files to the hosts (deploy/install.sh --etcd-tls DIR does it).
# Idempotent: existing keys and certificates are kept; a member certificate is
# issued again only when it is missing, no longer matches its IP, or was not
# signed by the CA in DIR. Needs openssl (OpenSSL or LibreSSL).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: etcd-tls.sh [-o DIR] [--days N] [--client NAME]... NAME=IP...

  -o, --out DIR     where to write (default ./etcd-tls):
                      ca.crt ca.key            the CA (keep ca.key off the hosts)
                      NAME.crt NAME.key        per member, server and peer
                      CLIENT.crt CLIENT.key    per client (clientAuth only)
  --days N          validity of new certificates in days (default 3650)
  --client NAME     a client certificate with CN=NAME (repeatable; default ovagent)

example: etcd-tls.sh -o pki h1=192.168.56.11 h2=192.168.56.12 h3=192.168.56.13
EOF
}

die() { echo "etcd-tls.sh: $*" >&2; exit 2; }

out=./etcd-tls
days=3650
clients=()
members=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o | --out) out=${2:?}; shift 2 ;;
    --days) days=${2:?}; shift 2 ;;
    --client) clients+=("${2:?}"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) members+=("$1"); shift ;;
  esac
done
[ ${#members[@]} -gt 0 ] || { usage >&2; die "no members given"; }
[ ${#clients[@]} -gt 0 ] || clients=(ovagent)
[[ $days =~ ^[0-9]+$ ]] || die "--days wants a number, not '$days'"
command -v openssl >/dev/null || die "openssl not found"

valid_name() { [[ $1 =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; }
valid_ipv4() {
  local IFS=. o
  [[ $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
  for o in $1; do [ "$o" -le 255 ] || return 1; done
}
for m in "${members[@]}"; do
  if ! valid_name "${m%%=*}" || ! valid_ipv4 "${m#*=}"; then die "'$m' is not NAME=IPv4"; fi
done
for c in "${clients[@]}"; do valid_name "$c" || die "bad client name '$c'"; done

mkdir -p "$out"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

newkey() { openssl ecparam -name prime256v1 -genkey -noout -out "$1"; }

# The CA: created once, reused on every later run.
if [ ! -s "$out/ca.key" ] || [ ! -s "$out/ca.crt" ]; then
  cat >"$tmp/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = ovnet etcd CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
EOF
  newkey "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -config "$tmp/ca.cnf" -extensions v3_ca \
    -days "$days" -out "$out/ca.crt"
  chmod 0644 "$out/ca.crt"
  echo "wrote $out/ca.crt"
fi

# issue NAME EKU SAN: a key (kept if present) and a certificate signed by the CA.
issue() {
  local name=$1 eku=$2 san=$3
  [ -s "$out/$name.key" ] || newkey "$out/$name.key"
  {
    echo "basicConstraints = critical,CA:FALSE"
    echo "keyUsage = critical,digitalSignature"
    echo "extendedKeyUsage = $eku"
    [ -z "$san" ] || echo "subjectAltName = $san"
  } >"$tmp/$name.ext"
  openssl req -new -key "$out/$name.key" -subj "/CN=$name" -out "$tmp/$name.csr"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -extfile "$tmp/$name.ext" \
    -out "$out/$name.crt" 2>/dev/null
  chmod 0644 "$out/$name.crt"
  echo "wrote $out/$name.crt"
}

# current NAME IP: the certificate exists, the CA signed it and it names IP.
current() {
  [ -s "$out/$1.crt" ] && [ -s "$out/$1.key" ] || return 1
  openssl verify -CAfile "$out/ca.crt" "$out/$1.crt" >/dev/null 2>&1 || return 1
  [ -z "${2:-}" ] || openssl x509 -in "$out/$1.crt" -noout -text | grep -q "IP Address:$2\(,\|$\)"
}

for m in "${members[@]}"; do
  name=${m%%=*} ip=${m#*=}
  current "$name" "$ip" ||
    issue "$name" serverAuth,clientAuth "IP:$ip,IP:127.0.0.1,DNS:$name,DNS:localhost"
done
for c in "${clients[@]}"; do
  current "$c" || issue "$c" clientAuth ""
done
echo "TLS material in $out (CA: ca.crt; keys are mode 0600)"
