#!/usr/bin/env bash
# The test suite: unit tests, ipam-store against a real etcd, and the
# multi-host lab tests (real etcd, agents and namespaces). Runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh --test
# Generated output goes under target/ (ignored); a run must not add or change
# tracked or unignored files. What git shows now is the baseline.
git_state() { git status --porcelain=v1 --untracked-files=all 2>/dev/null || true; }
before=$(git_state)
cargo fmt --all -- --check
cargo build --workspace --bins
cargo clippy --workspace --all-targets -- -D warnings
bash tests/deploy/check.sh # deploy/ and vagrant/: scripts, units, Vagrantfile, a 3-member etcd lab
echo "== ovbench all --smoke: debug build, tiny counts; checks that every scenario runs, judges no target (BENCHMARKS.md)"
target/debug/ovbench all --smoke
echo "== ovchaos: a short chaos soak, a fixed seed, then a random one (printed first; --seed replays it)"
target/debug/ovchaos --seed 1 --duration 45s --hosts 3 --max-outage 8s --out target/chaos-seed1
target/debug/ovchaos --duration 45s --hosts 3 --max-outage 8s --out target/chaos-random
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
# Nothing the run wrote may land outside ignored paths.
after=$(git_state)
if [ "$before" != "$after" ]; then
  echo "the run added or changed files that git sees (generated output belongs under target/):" >&2
  diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") | sed -n 's/^> /  /p' >&2
  status=1
fi
# One closing line with the totals of every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "cargo test: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
