#!/usr/bin/env bash
# berth-proxy against HAProxy and nginx, one worker thread each, same backend, same run,
# alternating peers; wrk with 1 thread and 50 connections. Loopback only.
#
#   bench/proxy.sh                 # DURATION=10 s per run, ROUNDS=3
#   DURATION=5 ROUNDS=1 CASES="keepalive tcp" bench/proxy.sh
#   BENCH_BIN_DIR=/some/release/examples bench/proxy.sh   # a prebuilt berth instead of building
#   INSTRUCTIONS=1 CASES= bench/proxy.sh   # user-space instructions per request (callgrind)
#
# With INSTRUCTIONS=1, berth and HAProxy also run under callgrind (Debian package valgrind),
# which counts the instructions each executes per proxied request: a figure that, unlike
# requests per second, does not move with the load other processes put on the machine.
#
# Prints one line per case:
# case=<name> berth=<rps> haproxy=<rps> nginx=<rps> berth_p99_ms=<x> best_peer_p99_ms=<y> ratio_vs_best=<r>
# Figures are means over the rounds; `# uptime` lines record the machine's load next to them.
#
# Where the time goes (CPU=0 turns it off): after each case line, one comment line per peer,
# # cpu case=<name> peer=<p> proxy_user_us=<x> proxy_sys_us=<y> backend_us=<z> wrk_us=<w> proxy_cores=<c> proxy_runq=<q>
# CPU microseconds per request over all rounds of that case: the proxy's user and system time and
# the backend's (utime+stime of /proc/PID/stat, all threads, read around each wrk run; clock
# ticks, so keep DURATION long enough that a run is many ticks), wrk's (its getrusage), and the
# proxy's CPU time over wall time (1.00 = its one worker never waited) and the share of wall
# time its threads were runnable but waited for a core (/proc/PID/task/*/schedstat). On a
# machine with fewer cores than proxy + backend + wrk need, the three share them: a peer that
# costs wrk or the backend more per request also leaves itself less.
#
# Equal work: berth's HTTP listeners add X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host
# and a generated X-Request-Id to every request and return the X-Request-Id on the response,
# so HAProxy and nginx are configured to do the same (the backend and wrk then parse the same
# headers behind each; nginx also forwards the client's Host as berth and HAProxy do, instead
# of the upstream's name). Ids differ in form only: berth 36 characters (UUID layout), HAProxy
# and nginx 32 hex digits. A request that brings its own X-Request-Id (wrk's do not) keeps it in
# berth; nginx replaces it and HAProxy appends a second one. `PEER_HEADERS=none` gives the
# peers their plain configuration instead, as in notes before 2026-11-22 13:30 (berth still adds
# its headers).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
PEER_HEADERS=${PEER_HEADERS:-equal}
CONNECTIONS=${CONNECTIONS:-50}

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v wrk >/dev/null || need+=(wrk)
[ -z "${INSTRUCTIONS:-}" ] || command -v valgrind >/dev/null || need+=(valgrind)
if [ ${#need[@]} -gt 0 ]; then
    echo "# installing ${need[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ -n "${BENCH_BIN_DIR:-}" ]; then
    # Prebuilt bench_proxy and bench_backend (to compare two builds with the same script).
    bin=$BENCH_BIN_DIR
else
    cargo build --release -q -p berth-proxy --example bench_proxy --example bench_backend
    target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    bin="$target/release/examples"
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# Free loopback ports, picked at random below the kernel's ephemeral range (so that no
# outgoing connection of another process takes one meanwhile) and checked free.
read -r BACKEND B_HTTP B_TCP B_ADMIN H_HTTP H_TCP N_HTTP N_TCP B_TLS H_TLS N_TLS < <(free_ports 11)

"$bin/bench_backend" "127.0.0.1:$BACKEND" & backend_pid=$!; pids+=($!)

# One self-signed ECDSA P-256 certificate for every peer.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/haproxy.pem"

cat >"$tmp/berth.yaml" <<YAML
listeners:
  - {name: http, address: "127.0.0.1:$B_HTTP", protocol: http}
  - {name: tcp, address: "127.0.0.1:$B_TCP", protocol: tcp, cluster: backend}
  - {name: tls, address: "127.0.0.1:$B_TLS", protocol: http, tls: {default_certificate: bench}}
admin: {address: "127.0.0.1:$B_ADMIN"}
certificates:
  - {name: bench, domains: [bench.test], cert_file: "$tmp/cert.pem", key_file: "$tmp/key.pem"}
virtual_hosts:
  - {name: all, domains: ["*"], routes: [{path_prefix: /, cluster: backend}]}
clusters:
  - {name: backend, endpoints: [{address: "127.0.0.1:$BACKEND"}]}
YAML
"$bin/bench_proxy" "$tmp/berth.yaml" & berth_pid=$!; pids+=($!)

haproxy_headers="" nginx_headers=""
if [ "$PEER_HEADERS" = equal ]; then
    haproxy_headers="    option forwardfor
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    unique-id-format %{+X}o%ci%cp%fp%Ts%rt%pid
    unique-id-header X-Request-Id
    http-response set-header X-Request-Id %[unique-id]"
    nginx_headers="            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;"
fi
cat >"$tmp/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 8000
defaults
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend http
    mode http
    bind 127.0.0.1:$H_HTTP
    bind 127.0.0.1:$H_TLS ssl crt $tmp/haproxy.pem alpn http/1.1
$haproxy_headers
    default_backend backend
backend backend
    mode http
    http-reuse always
    server b1 127.0.0.1:$BACKEND
listen tcp
    mode tcp
    bind 127.0.0.1:$H_TCP
    server b1 127.0.0.1:$BACKEND
CFG
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 & haproxy_pid=$!; pids+=($!)

cat >"$tmp/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
master_process off;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 8000; }
http {
    access_log off;
    client_body_temp_path $tmp;
    proxy_temp_path $tmp;
    upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
    server {
        listen 127.0.0.1:$N_HTTP;
        listen 127.0.0.1:$N_TLS ssl;
        # nginx 1.22 (Debian 12) defaults to TLS 1.0-1.2; the others negotiate TLS 1.3, whose
        # resumed handshakes still run ECDHE while TLS 1.2's do not. The same protocol for
        # every peer: the default of nginx >= 1.23.4.
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $tmp/cert.pem;
        ssl_certificate_key $tmp/key.pem;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
$nginx_headers
        }
    }
}
stream {
    server { listen 127.0.0.1:$N_TCP; proxy_pass 127.0.0.1:$BACKEND; }
}
CFG
nginx -c "$tmp/nginx.conf" & nginx_pid=$!; pids+=($!)

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1 never opened" >&2; cat "$tmp"/*.log "$tmp"/*.err >&2 2>/dev/null
    exit 1
}
for p in $BACKEND $B_HTTP $B_TCP $B_TLS $H_HTTP $H_TCP $H_TLS $N_HTTP $N_TCP $N_TLS; do wait_port "$p"; done

# One wrk run against "<scheme>:<port>", with the pid of the proxy behind that port: prints
# "<rps> <p99 ms> <requests> <proxy user ticks> <proxy system ticks> <backend ticks> <wrk us>
# <proxy run-queue ns>". The CPU figures are read around the run: utime/stime of /proc/PID/stat
# (all threads, clock ticks) for the proxy and the backend, getrusage of the finished wrk, and
# the time the proxy's threads waited runnable for a CPU (/proc/PID/task/*/schedstat).
run_wrk() {
    local target=$1 pid=$2; shift 2
    local scheme=${target%%:*} port=${target##*:}
    python3 - "$pid" "$backend_pid" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" \
        "$scheme://127.0.0.1:$port/" <<'PY'
import glob, re, resource, subprocess, sys
def ticks(pid):
    # Fields after the ")" that closes the command name: utime and stime are the 12th and 13th.
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])
def run_queue_ns(pid):
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass  # a thread that ended meanwhile
    return total
proxy, backend, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
p0, b0, q0 = ticks(proxy), ticks(backend), run_queue_ns(proxy)
w0 = resource.getrusage(resource.RUSAGE_CHILDREN)
out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
w1 = resource.getrusage(resource.RUSAGE_CHILDREN)
p1, b1, q1 = ticks(proxy), ticks(backend), run_queue_ns(proxy)
rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
n = re.search(r"^\s*(\d+) requests in", out, re.M)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
if not rps or not p99 or not n:
    sys.stderr.write(out); print("0 0 0 0 0 0 0 0"); sys.exit()
scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
if errors: sys.stderr.write("# wrk: " + errors.group(0) + "\n")
wrk_us = (w1.ru_utime - w0.ru_utime + w1.ru_stime - w0.ru_stime) * 1e6
print(rps.group(1), float(p99.group(1)) * scale, n.group(1), p1[0] - p0[0], p1[1] - p0[1],
      sum(b1) - sum(b0), round(wrk_us), q1 - q0)
PY
}

echo "# uptime: $(uptime)"
read -r rps p99 _ < <(run_wrk "http:$BACKEND" "$backend_pid")
echo "# direct to backend: rps=$rps p99_ms=$p99"

declare -A port_of=(
    [keepalive:berth]=http:$B_HTTP [keepalive:haproxy]=http:$H_HTTP [keepalive:nginx]=http:$N_HTTP
    [new_connection:berth]=http:$B_HTTP [new_connection:haproxy]=http:$H_HTTP [new_connection:nginx]=http:$N_HTTP
    [tls_keepalive:berth]=https:$B_TLS [tls_keepalive:haproxy]=https:$H_TLS [tls_keepalive:nginx]=https:$N_TLS
    [tls_handshake:berth]=https:$B_TLS [tls_handshake:haproxy]=https:$H_TLS [tls_handshake:nginx]=https:$N_TLS
    [tcp:berth]=http:$B_TCP [tcp:haproxy]=http:$H_TCP [tcp:nginx]=http:$N_TCP
)
declare -A pid_of=([berth]=$berth_pid [haproxy]=$haproxy_pid [nginx]=$nginx_pid)
peers=(berth haproxy nginx)
for case in ${CASES-keepalive new_connection tls_keepalive tls_handshake tcp}; do
    args=()
    case $case in new_connection|tls_handshake) args=(-H "Connection: close") ;; esac
    : >"$tmp/runs"
    for round in $(seq "$ROUNDS"); do
        # Rotate the order each round so that no peer always runs first or last.
        for i in 0 1 2; do
            peer=${peers[$(( (i + round) % 3 ))]}
            echo "$peer $(run_wrk "${port_of[$case:$peer]}" "${pid_of[$peer]}" "${args[@]}")" >>"$tmp/runs"
        done
    done
    echo "# uptime: $(uptime)"
    python3 - "$case" "$ROUNDS" "$DURATION" "$(getconf CLK_TCK)" "${CPU:-1}" "$tmp/runs" <<'PY'
import sys
case, rounds, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
tick, cpu, runs = int(sys.argv[4]), sys.argv[5], sys.argv[6]
peers = ["berth", "haproxy", "nginx"]
sums = {p: [0.0] * 8 for p in peers}
for line in open(runs):
    peer, *values = line.split()
    sums[peer] = [a + float(b) for a, b in zip(sums[peer], values)]
b, h, n = (sums[p][0] / rounds for p in peers)
bp, hp, np_ = (sums[p][1] / rounds for p in peers)
best, best_p99 = (h, hp) if h >= n else (n, np_)
ratio = b / best if best else 0.0
print(f"case={case} berth={b:.0f} haproxy={h:.0f} nginx={n:.0f} "
      f"berth_p99_ms={bp:.2f} best_peer_p99_ms={best_p99:.2f} ratio_vs_best={ratio:.2f}")
if cpu != "0":
    # Microseconds of CPU per request over all rounds; proxy_cores is the proxy's CPU time over
    # wall time (1.00 = its one worker never waited), proxy_runq the share of wall time its
    # threads were runnable but waited for a core that other processes held.
    wall = rounds * duration
    for p in peers:
        _, _, req, user, system, backend, wrk, runq = sums[p]
        us = lambda t: t / tick / req * 1e6 if req else 0.0
        print(f"# cpu case={case} peer={p} proxy_user_us={us(user):.2f} proxy_sys_us={us(system):.2f} "
              f"backend_us={us(backend):.2f} wrk_us={(wrk / req if req else 0.0):.2f} "
              f"proxy_cores={(user + system) / tick / wall:.2f} proxy_runq={runq / 1e9 / wall:.2f}")
PY
done

# Instructions per request under callgrind, counted only while wrk runs (after a warm-up):
# prints "instructions case=<name> berth=<n> haproxy=<n>".
count_instructions() {
    local name=$1 port=$2 pid=$3 out=$4; shift 4
    wrk -t1 -c10 -d2s "$@" "http://127.0.0.1:$port/" >/dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    local requests
    requests=$(wrk -t1 -c10 -d5s "$@" "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    local total
    # shellcheck disable=SC2012 # our own file names (mktemp -d), no spaces or newlines
    total=$(callgrind_annotate "$(ls -t "$out"* | head -1)" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "$name $(( total / requests ))"
}
if [ -n "${INSTRUCTIONS:-}" ]; then
    read -r CB CH < <(free_ports 2)
    cat >"$tmp/cg-berth.yaml" <<YAML
listeners:
  - {name: http, address: "127.0.0.1:$CB", protocol: http}
virtual_hosts:
  - {name: all, domains: ["*"], routes: [{path_prefix: /, cluster: backend}]}
clusters:
  - {name: backend, endpoints: [{address: "127.0.0.1:$BACKEND"}]}
YAML
    sed -e "/^frontend http/,\$d" "$tmp/haproxy.cfg" >"$tmp/cg-haproxy.cfg"
    cat >>"$tmp/cg-haproxy.cfg" <<CFG
frontend http
    mode http
    bind 127.0.0.1:$CH
$haproxy_headers
    default_backend backend
backend backend
    mode http
    http-reuse always
    server b1 127.0.0.1:$BACKEND
CFG
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/cg-berth.out" \
        "$bin/bench_proxy" "$tmp/cg-berth.yaml" >/dev/null 2>&1 & cg_berth=$!; pids+=("$cg_berth")
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/cg-haproxy.out" \
        haproxy -db -f "$tmp/cg-haproxy.cfg" >/dev/null 2>&1 & cg_haproxy=$!; pids+=("$cg_haproxy")
    wait_port "$CB"; wait_port "$CH"
    for case in keepalive new_connection; do
        args=()
        [ "$case" = new_connection ] && args=(-H "Connection: close")
        read -r _ b < <(count_instructions berth "$CB" "$cg_berth" "$tmp/cg-berth.out" "${args[@]}")
        read -r _ h < <(count_instructions haproxy "$CH" "$cg_haproxy" "$tmp/cg-haproxy.out" "${args[@]}")
        echo "instructions case=$case berth=$b haproxy=$h"
    done
fi
