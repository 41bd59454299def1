#!/usr/bin/env bash
# berth-dns against Knot and NSD: the same zone (1,000 headless services x 3 ready instances,
# A and SRV), one worker each, the same dnsperf run (A and SRV questions in equal parts) against
# each in turn, alternating, on loopback only. Prints one line per case:
#   case=<name> berth=<qps> knot=<qps> nsd=<qps> berth_p99_ms=<x> lost=<n> ratio_vs_best=<x>
# then the update figures (time to apply an update touching every record; qps while 100
# single-service updates a second apply).
#
# The udp case also runs berth with precomputed answers off (berth_general=: every answer
# parsed and encoded per query by hickory), to measure one path against the other.
#
# Environment: DURATION (seconds per run, default 10), ROUNDS (default 3, the median is kept),
# CASES (default "udp udp_edns tcp"), NICE (default -10: servers and dnsperf run at this
# niceness, all alike, so that other users' compilers on a shared machine disturb less).
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CASES=${CASES:-"udp udp_edns tcp"}
NICE=${NICE:--10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v knotd >/dev/null || need+=(knot)
command -v nsd >/dev/null || need+=(nsd)
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

(cd "$ROOT" && cargo build --release -q -p berth-dns --examples)
BIN=$ROOT/target/release/examples

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/bench_zone" "$WORK"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

write_knot_conf() { # port
    mkdir -p "$WORK/knot"
    cp "$WORK/berth.local.zone" "$WORK/knot/berth.local.zone"
    cat >"$WORK/knot/knot.conf" <<CONF
server:
    listen: 127.0.0.1@$1
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    rundir: $WORK/knot
database:
    storage: $WORK/knot
log:
  - target: stderr
    any: error
zone:
  - domain: berth.local
    storage: $WORK/knot
    file: berth.local.zone
    zonefile-sync: -1
    journal-content: none
CONF
}

write_nsd_conf() { # port
    mkdir -p "$WORK/nsd"
    cp "$WORK/berth.local.zone" "$WORK/nsd/berth.local.zone"
    cat >"$WORK/nsd/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1
    port: $1
    server-count: 1
    username: ""
    zonesdir: "$WORK/nsd"
    pidfile: "$WORK/nsd/nsd.pid"
    database: ""
    xfrdfile: "$WORK/nsd/xfrd.state"
    zonelistfile: "$WORK/nsd/zone.list"
    logfile: "$WORK/nsd/nsd.log"
    verbosity: 0
remote-control:
    control-enable: no
zone:
    name: berth.local
    zonefile: berth.local.zone
CONF
}

# Starts server $1 on port $2 (extra berth args after), leaves its pid in SERVER_PID.
start() {
    local name=$1 port=$2
    shift 2
    case $name in
    berth) nice -n "$NICE" "$BIN/bench_serve" "$WORK/zone.json" "127.0.0.1:$port" 1 "$@" &;;
    berth_general) BERTH_DNS_PRECOMPUTED=0 nice -n "$NICE" "$BIN/bench_serve" "$WORK/zone.json" "127.0.0.1:$port" 1 "$@" &;;
    knot) write_knot_conf "$port"; nice -n "$NICE" knotd -c "$WORK/knot/knot.conf" &;;
    nsd) write_nsd_conf "$port"; nice -n "$NICE" nsd -d -c "$WORK/nsd/nsd.conf" &;;
    esac
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 100); do
        if dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" svc0.default.svc.berth.local A | grep -q .; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name did not start on port $port" >&2
    exit 1
}

stop() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

dnsperf_args() { # case port
    local args=(-s 127.0.0.1 -p "$2" -d "$WORK/queries.txt" -l "$DURATION" -t 2 -q 100)
    case $1 in
    udp) ;;
    udp_edns) args+=(-e) ;;
    tcp) args+=(-m tcp -c 4) ;;
    esac
    echo "${args[@]}"
}

# One dnsperf run: prints "<qps> <lost>".
perf() { # case port
    # shellcheck disable=SC2046
    nice -n "$NICE" dnsperf $(dnsperf_args "$1" "$2") 2>&1 | awk '
        /Queries lost:/ {lost=$3}
        /Queries per second:/ {qps=$4}
        END {printf "%d %d\n", qps, lost}'
}

# p99 latency in ms from a verbose run (one line per response, so a little less load).
p99() { # case port
    # shellcheck disable=SC2046
    nice -n "$NICE" dnsperf $(dnsperf_args "$1" "$2" | sed "s/-l $DURATION/-l 3/") -v 2>/dev/null |
        awk '/^> /{print $NF}' | sort -g | awk '{v[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.3f\n", v[i]*1000}'
}

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

for case in $CASES; do
    declare -A qps=() lost=()
    for round in $(seq "$ROUNDS"); do
        servers=(berth knot nsd)
        [[ $case == udp ]] && servers=(berth berth_general knot nsd)
        for server in "${servers[@]}"; do
            port=$(free_port)
            start "$server" "$port"
            read -r q l < <(perf "$case" "$port")
            qps[$server]+="$q "
            lost[$server]+="$l "
            if [[ $server == berth && $round == "$ROUNDS" ]]; then
                p99_ms=$(p99 "$case" "$port")
            fi
            stop
        done
    done
    b=$(tr ' ' '\n' <<<"${qps[berth]}" | grep . | median)
    k=$(tr ' ' '\n' <<<"${qps[knot]}" | grep . | median)
    n=$(tr ' ' '\n' <<<"${qps[nsd]}" | grep . | median)
    g=$(tr ' ' '\n' <<<"${qps[berth_general]:-}" | grep . | median || true)
    bl=$(tr ' ' '\n' <<<"${lost[berth]}" | grep . | awk '{s+=$1} END {print s}')
    best=$((k > n ? k : n))
    ratio=$(awk -v b="$b" -v p="$best" 'BEGIN {printf "%.2f", p ? b / p : 0}')
    echo "case=$case berth=$b knot=$k nsd=$n berth_p99_ms=$p99_ms lost=$bl ratio_vs_best=$ratio${g:+ berth_general=$g} load=\"$(uptime | sed 's/.*load average: //')\" rounds=\"berth:${qps[berth]% } knot:${qps[knot]% } nsd:${qps[nsd]% }\""
    unset qps lost
done

# An update that changes every address of the zone (every A, SRV additional and PTR).
"$BIN/bench_serve" --apply "$WORK/zone.json" "$WORK/zone2.json" | sed 's/^/case=apply_all /'

# qps while 100 single-service updates a second apply (each one service's addresses change).
port=$(free_port)
start berth "$port" 100 "$WORK/zone2.json"
read -r q l < <(perf udp "$port")
stop
port=$(free_port)
start berth "$port"
read -r q0 l0 < <(perf udp "$port")
stop
echo "case=udp_100_updates_per_s berth=$q lost=$l berth_static=$q0 ratio_vs_static=$(awk -v a="$q" -v b="$q0" 'BEGIN {printf "%.2f", a / b}') load=\"$(uptime | sed 's/.*load average: //')\""
