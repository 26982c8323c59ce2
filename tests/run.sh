#!/usr/bin/env bash
# The test suite: unit tests, ipam-store against a real etcd, and the
# multi-host lab tests (real etcd, agents and namespaces). Runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh --test
cargo fmt --all -- --check
cargo build --workspace --bins
cargo clippy --workspace --all-targets -- -D warnings
bash tests/deploy/check.sh # deploy/ and vagrant/: scripts, units, Vagrantfile, a 3-member etcd lab
target/debug/ovbench all --smoke # every benchmark scenario, tiny counts, no timing verdicts (BENCHMARKS.md)
target/debug/ovchaos --seed 1 --duration 45s --hosts 3 --max-outage 8s --out target/chaos-seed1 && target/debug/ovchaos --duration 45s --hosts 3 --max-outage 8s --out target/chaos-random # chaos soak: a fixed seed, then a random one (printed first; --seed replays it)
# Lab tests start several agents each; two at a time suits a 2-core machine.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Each reliability test records what it held here; start from nothing.
export OVNET_REPORT_DIR="$PWD/target/reliability"
rm -rf "$OVNET_REPORT_DIR"
status=0
cargo test --workspace -- --test-threads "${OVNET_TEST_THREADS:-2}" 2>&1 | tee "$log" || status=$?
# The reliability table of this run (docs/reliability.md is one such run);
# fails if any test lost a ping, handed something out twice or panicked.
target/debug/ovreport --check --out target/reliability.md || status=1
# One closing line with the totals of every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "cargo test: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
