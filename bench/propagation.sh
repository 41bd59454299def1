#!/usr/bin/env bash
# Endpoint propagation (issue 8): `berth server` and 3 hollow agents (`berth agent --hollow`:
# instances reported Ready with made-up 127/8 addresses, no process; each node's proxy and DNS
# fed by watches exactly as on a real node), all on loopback port-0 listeners in temporary
# directories. The driver (control/examples/propagation.rs) creates SERVICES services x
# INSTANCES instances spread over the 3 nodes, then makes RATE endpoint changes a second for
# DURATION seconds (an instance goes not-ready, or comes back ready) and measures, for each,
# the time from the status write to the moment EVERY node's DNS answers the instance's name
# and EVERY node's proxy has it in the service's cluster. One line:
#   case=propagation endpoints=<n> changes_per_s=<r> p50_ms=<x> p99_ms=<y>
# then `#` lines: removals, the control/node split, and each agent's data-plane step times.
# Target: p99 <= 100 ms at 10,000 endpoints.
#
# Environment: SERVICES (1000), INSTANCES (10), RATE (100), DURATION (30), NODES (3).
set -euo pipefail
cd "$(dirname "$0")/.."
SERVICES=${SERVICES:-1000}
INSTANCES=${INSTANCES:-10}
RATE=${RATE:-100}
DURATION=${DURATION:-30}
NODES=${NODES:-3}

cargo build --release -q -p berth --bin berth --example propagation
BERTH=$PWD/target/release/berth
DRIVER=$PWD/target/release/examples/propagation

tmp=$(mktemp -d /tmp/berth-propagation.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then echo "# logs kept in $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

# The first line a process prints matching $2 (its banner), waiting up to 30 s.
banner() {
    local file=$1 pattern=$2
    for _ in $(seq 300); do
        if grep -q "$pattern" "$file" 2>/dev/null; then
            grep -m1 "$pattern" "$file"
            return
        fi
        sleep 0.1
    done
    echo "no banner in $file:" >&2
    cat "$file" >&2
    exit 1
}

# Node leases longer than the default: a loaded 2-core machine must not lose hollow nodes.
"$BERTH" server --data-dir "$tmp/server" --listen 127.0.0.1:0 --node-lease-seconds 60 \
    >"$tmp/server.out" 2>"$tmp/server.err" &
pids+=($!)
api=$(banner "$tmp/server.out" "API on" | sed -E 's/.*API on (http:\/\/[0-9.:]+).*/\1/')
admin=$(awk '/role: admin/{f=1} f && /token:/{print $2; exit}' "$tmp/server/tokens.yaml")
if [ -z "$admin" ]; then
    admin=$(awk '/token:/{t=$2} /role: admin/{print t; exit}' "$tmp/server/tokens.yaml")
fi
export BERTH_SERVER=$api

dns_args=()
for i in $(seq 0 $((NODES - 1))); do
    node=hollow-$i
    token=$(BERTH_TOKEN=$admin "$BERTH" token create "$node" --role node --node "$node")
    BERTH_TOKEN=$token BERTH_LOG=${BERTH_LOG:-warn,berth::agent=debug} "$BERTH" agent --hollow \
        --node "$node" --data-dir "$tmp/$node" --ingress 127.0.0.1:0 --dns 127.0.0.1:0 \
        --proxy-admin 127.0.0.1:0 --heartbeat-seconds 2 \
        >"$tmp/$node.out" 2>>"$tmp/$node.err" &
    pids+=($!)
    line=$(banner "$tmp/$node.out" "proxy admin")
    dns=$(echo "$line" | sed -E 's/.*dns ([0-9.:]+).*/\1/')
    padmin=$(echo "$line" | sed -E 's/.*proxy admin http:\/\/([0-9.:]+).*/\1/')
    dns_args+=(--dns "$dns" --admin "$padmin")
done

echo "# load before: $(uptime)"
BERTH_TOKEN=$admin "$DRIVER" --server "$api" "${dns_args[@]}" --services "$SERVICES" \
    --instances "$INSTANCES" --rate "$RATE" --seconds "$DURATION" \
    >"$tmp/driver.out" 2> >(tee "$tmp/driver.err" >&2) &
driver=$!
pids+=($driver)
# Only the agents' steps of the measured run count: the logs so far hold the initial sync
# (agents append to their logs, so truncating them here is safe).
until grep -q "every node serves them" "$tmp/driver.err" 2>/dev/null; do
    kill -0 "$driver" 2>/dev/null || break
    sleep 0.2
done
for i in $(seq 0 $((NODES - 1))); do : >"$tmp/hollow-$i.err"; done
wait "$driver"
cat "$tmp/driver.out"
echo "# load after: $(uptime)"

# Where the node side spends its time: each agent's data-plane steps during the run.
for i in $(seq 0 $((NODES - 1))); do
    { grep "data plane updated" "$tmp/hollow-$i.err" || true; } | sed -E 's/\x1b\[[0-9;]*m//g' | awk -v node="hollow-$i" '
        {
            kind = ($0 ~ /Incremental/) ? "incremental" : "full";
            match($0, /elapsed=[0-9.]+(µs|ms|s|ns)/);
            v = substr($0, RSTART + 8, RLENGTH - 8);
            ms = v + 0;
            if (v ~ /µs/) ms /= 1000; else if (v ~ /ns/) ms /= 1e6; else if (v ~ /[^m]s$/) ms *= 1000;
            n[kind]++; sum[kind] += ms; if (ms > max[kind]) max[kind] = ms;
        }
        END {
            for (k in n) printf "# %s %s steps=%d mean_ms=%.2f max_ms=%.2f\n", node, k, n[k], sum[k] / n[k], max[k];
        }'
done
