#!/usr/bin/env bash
# What berth-proxy's optional features cost per request: the same proxy build, one worker
# thread, same backend, variants run alternately in the same run; wrk with 1 thread and 50
# keep-alive connections. Loopback only.
#
#   bench/proxy-features.sh                  # DURATION=5 s per run, ROUNDS=3
#
# Variants (one proxy process each):
#   plain       request_id: off, a route without policy, a plain cluster (the baseline)
#   request_id  request_id: keep (the default): a generated X-Request-Id per request
#   route       request_id: off, a route with two header matches, a host rewrite and four
#               header edits
#   breakers    request_id: off, a cluster with circuit breakers (hyper-util's pool over
#               berth's counting connector instead of the plain HTTP/1 pool)
#
# Prints one line per variant:
# case=<name> rps=<mean> p99_ms=<mean> vs_plain=<rps/plain rps>
# and `# uptime` lines recording the machine's load next to the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
VARIANTS=(plain request_id route breakers)

if ! command -v wrk >/dev/null; then
    echo "# installing wrk" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

cargo build --release -q -p berth-proxy --example bench_proxy --example bench_backend
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target/release/examples"

tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# Free loopback ports below the ephemeral range, checked free.
read -r BACKEND P_PLAIN P_ID P_ROUTE P_BREAKERS < <(free_ports 5)
declare -A PORT=([plain]=$P_PLAIN [request_id]=$P_ID [route]=$P_ROUTE [breakers]=$P_BREAKERS)

"$bin/bench_backend" "127.0.0.1:$BACKEND" &
pids+=($!)

config() { # name port request_id route_extra cluster_extra
    cat >"$tmp/$1.yaml" <<EOF
listeners: [{name: web, address: "127.0.0.1:$2", protocol: http}]
request_id: $3
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - {path_prefix: /, cluster: app$4}
clusters:
  - {name: app, endpoints: [{address: "127.0.0.1:$BACKEND"}]$5}
EOF
}
route_policy=', headers: [{name: user-agent, present: false}, {name: x-never, present: false}], host_rewrite: app.internal, request_headers_to_add: [{name: x-env, value: prod}], request_headers_to_remove: [x-debug], response_headers_to_add: [{name: x-served-by, value: berth}], response_headers_to_remove: [server]'
config plain "$P_PLAIN" off "" ""
config request_id "$P_ID" keep "" ""
config route "$P_ROUTE" off "$route_policy" ""
config breakers "$P_BREAKERS" off "" ", circuit_breakers: {max_connections: 4096, max_pending_requests: 4096, max_requests: 4096}"

for v in "${VARIANTS[@]}"; do
    RUST_LOG=warn "$bin/bench_proxy" "$tmp/$v.yaml" &
    pids+=($!)
done

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port $1 never opened" >&2
    exit 1
}
wait_port "$BACKEND"
for v in "${VARIANTS[@]}"; do wait_port "${PORT[$v]}"; done

# One wrk run: prints "<rps> <p99 ms>" (wrk sends no User-Agent, so the route matches).
run() {
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$1/" \
        | python3 -c '
import re, sys
text = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if errors:
    sys.exit("non-2xx responses: " + errors.group(1))
print(rps, p99)'
}

declare -A RPS P99
for v in "${VARIANTS[@]}"; do RPS[$v]=0; P99[$v]=0; done
for round in $(seq "$ROUNDS"); do
    echo "# round $round uptime: $(uptime)"
    # Each round starts with another variant, so that no variant always runs first.
    n=${#VARIANTS[@]}
    for i in $(seq 0 $((n - 1))); do
        v=${VARIANTS[$(((i + round) % n))]}
        read -r rps p99 < <(run "${PORT[$v]}")
        RPS[$v]=$(python3 -c "print(${RPS[$v]} + $rps)")
        P99[$v]=$(python3 -c "print(${P99[$v]} + $p99)")
    done
done
echo "# end uptime: $(uptime)"
plain=$(python3 -c "print(${RPS[plain]} / $ROUNDS)")
for v in "${VARIANTS[@]}"; do
    python3 -c "
rps = ${RPS[$v]} / $ROUNDS
p99 = ${P99[$v]} / $ROUNDS
print(f'case=$v rps={rps:.0f} p99_ms={p99:.2f} vs_plain={rps / $plain:.3f}')"
done
