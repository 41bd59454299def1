#!/usr/bin/env bash
# Control plane latency through the API on loopback (issue 7):
#   create and update p50/p99 with 10,000 objects stored (each write durable before it is
#   acknowledged), and the time for one change to reach 1,000 watch streams.
# Targets: create p99 <= 50 ms, fan-out to 1,000 watchers <= 100 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p berth --example control_bench 2>&1 | grep -v "^ *Compiling" || true
# 1,000 watch streams are 2,000 sockets in this one process.
ulimit -n "$(ulimit -Hn)"
echo "# load: $(uptime)"
target/release/examples/control_bench --objects 10000 --samples 1000 --watchers 1000 --events 50 "$@"
