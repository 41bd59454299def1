#!/usr/bin/env bash
# berth-cni against the reference bridge + host-local (Debian containernetworking-plugins), in
# the same run: 40 fresh namespaces each, alternating, same /24 subnet size, CNI 1.0.0.
# Everything runs inside a host namespace the driver creates; nothing touches the root
# namespace. Needs root and iproute2.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-40}"
if [ ! -x /usr/lib/cni/bridge ] || [ ! -x /usr/lib/cni/host-local ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins >/dev/null
fi
command -v ip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; }
cargo build --release -q -p berth-cni --bin berth-cni --example cnibench
echo "load: $(uptime)" >&2
target/release/examples/cnibench "$PWD/target/release" /usr/lib/cni "$ROUNDS"
echo "load: $(uptime)" >&2
