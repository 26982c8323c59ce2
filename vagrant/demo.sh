#!/usr/bin/env bash
# The demo across the three VMs, run from the host after `vagrant up`: waits
# for every agent, creates an overlay network, a container namespace on each
# VM (`ip netns add`), connects each, and pings every container from every
# other. Removes what it made at the end unless --keep.
#
# Every step is a root shell command on one host, run through
# `vagrant ssh HOST -c`. With OVNET_DEMO_RUN=PROG it runs `PROG HOST CMD`
# instead; tests/deploy/check.sh runs this script that way in its namespace
# lab. Also: OVNET_DEMO_HOSTS (default "vm1 vm2 vm3"), OVNET_DEMO_NETWORK
# (default demo), OVNET_DEMO_PREFIX (container namespaces PREFIXc1...,
# default demo-), OVNET_DEMO_TIMEOUT (seconds per wait, default 180).
set -euo pipefail

keep=0
case "${1:-}" in
  --keep) keep=1 ;;
  "") ;;
  *) echo "usage: demo.sh [--keep]" >&2; exit 2 ;;
esac
read -r -a hosts <<<"${OVNET_DEMO_HOSTS:-vm1 vm2 vm3}"
net=${OVNET_DEMO_NETWORK:-demo}
prefix=${OVNET_DEMO_PREFIX:-demo-}
timeout=${OVNET_DEMO_TIMEOUT:-180}
cd "$(dirname "$0")"

# on HOST CMD: runs CMD with bash as root on HOST, prints its stdout.
on() {
  if [ -n "${OVNET_DEMO_RUN:-}" ]; then
    "$OVNET_DEMO_RUN" "$1" "$2"
  else
    vagrant ssh "$1" -c "sudo bash -c $(printf %q "$2")"
  fi
}

# wait_for WHAT HOST CMD: runs CMD on HOST until it succeeds, for at most
# $timeout seconds (one ssh round per try).
wait_for() {
  local what=$1 deadline=$((SECONDS + timeout))
  until on "$2" "$3" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo: gave up after ${timeout}s waiting for $what" >&2
      return 1
    fi
    sleep 2
  done
}

cleanup() {
  local i
  for i in "${!hosts[@]}"; do
    on "${hosts[$i]}" "ovctl network disconnect $net ${prefix}c$((i + 1)) >/dev/null 2>&1;
      ip netns del ${prefix}c$((i + 1)) 2>/dev/null; true" || true
  done
  on "${hosts[0]}" "ovctl network rm $net >/dev/null 2>&1; true" || true
}

n=${#hosts[@]}
echo "== waiting for $n agents to be alive (ovctl host ls on ${hosts[0]})"
wait_for "$n alive hosts" "${hosts[0]}" \
  "[ \"\$(ovctl host ls --format json | grep -c '\"alive\": *true')\" -ge $n ]"
on "${hosts[0]}" "ovctl host ls"

cleanup # leftovers of an earlier run
echo "== ovctl network create -d overlay $net (on ${hosts[0]})"
on "${hosts[0]}" "ovctl network create -d overlay $net" >/dev/null
on "${hosts[0]}" "ovctl network ls"

ips=()
for i in "${!hosts[@]}"; do
  h=${hosts[$i]} c=${prefix}c$((i + 1))
  wait_for "$net on $h" "$h" "ovctl network ls | grep -q '^$net '"
  ip=$(on "$h" "ip netns add $c && ovctl network connect $net $c" | tail -n 1 | tr -d '\r')
  [[ $ip =~ ^[0-9.]+$ ]] || { echo "demo: connecting $c on $h failed: '$ip'" >&2; exit 1; }
  echo "== $h: ip netns add $c; ovctl network connect $net $c -> $ip"
  ips+=("$ip")
done

ok=0 failed=0
for i in "${!hosts[@]}"; do
  for j in "${!hosts[@]}"; do
    [ "$i" != "$j" ] || continue
    from=${prefix}c$((i + 1)) to=${prefix}c$((j + 1))
    # The first packets may beat the remote agent's FDB entries: retry a while.
    if out=$(on "${hosts[$i]}" "set -o pipefail; end=\$((SECONDS + 30))
        until ip netns exec $from ping -c 1 -W 1 ${ips[$j]} >/dev/null; do
          [ \$SECONDS -lt \$end ] || exit 1
        done
        ip netns exec $from ping -c 3 -i 0.2 -W 2 ${ips[$j]} | tail -n 2 | sed 's/^/    /'"); then
      echo "ping $from (${hosts[$i]}) -> $to (${hosts[$j]}, ${ips[$j]}): ok"
      echo "$out"
      ok=$((ok + 1))
    else
      echo "ping $from (${hosts[$i]}) -> $to (${hosts[$j]}, ${ips[$j]}): FAILED"
      failed=$((failed + 1))
    fi
  done
done

if [ "$keep" = 1 ]; then
  echo "== kept: network $net, namespaces ${prefix}c1..${prefix}c$n (run demo.sh again to replace them)"
else
  cleanup
fi
echo "demo: $ok pings ok, $failed failed"
[ "$failed" = 0 ]
