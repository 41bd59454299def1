#!/usr/bin/env bash
# Scheduler placement benchmark (issue 6): one line per case and size, in the issue's format:
#   case=basic|anti|spread nodes=<n> instances=<m> placements_per_s=<x> p99_us=<y> nodes_used=<k> ffd_nodes=<j>
# Sizes: 1,000/5,000/10,000 nodes with 10,000/50,000/150,000 instances. Pinned to one core
# (`taskset -c ${CORE:-1}`) because the target is "on one core". The machine load is printed
# before each case, since other builds share the machine.
# kube-scheduler and Nomad are not run side by side (they need a Kubernetes API server or a
# Nomad cluster); their published figures are the anchors the issue gives.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p berth-scheduler --example bench >&2
bin=target/release/examples/bench
pin=()
if command -v taskset >/dev/null; then pin=(taskset -c "${CORE:-1}"); fi
for case in ${CASES:-basic anti spread}; do
    echo "# uptime: $(uptime)" >&2
    "${pin[@]}" "$bin" "$case"
done
