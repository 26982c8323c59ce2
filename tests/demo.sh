#!/usr/bin/env bash
# The demo: a lab of 3 hosts in network namespaces, an ovagent on each, one
# overlay network, a container on every host, and the cross-host pings.
# Extra arguments go to `ovlab demo` (e.g. --keep, --hosts 5).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh
cargo build --workspace --bins
exec target/debug/ovlab demo "$@"
