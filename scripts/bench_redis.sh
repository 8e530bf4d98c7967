#!/usr/bin/env bash
# holdfast --protocol resp vs redis-server, both driven by redis-benchmark.
#
#   scripts/bench_redis.sh            (or: make bench-redis)
#
# Each server runs alone, pinned to CPU 0 (--threads 1 for holdfast;
# persistence off for redis), with redis-benchmark pinned to CPU 1. Servers
# alternate within each round, 3 rounds. For every (server, pipeline, test)
# it records requests/s and p50/p99 from redis-benchmark's --csv, and the
# server's CPU time per request: utime+stime from /proc/PID/stat across the
# run, divided by the requests it served. redis-benchmark can saturate its
# own core before either server does, so CPU per request is the primary
# figure. Prints a Markdown table of medians with ratios to redis-server.
#
# Settings (environment): ROUNDS (3), CONNS (50), REQUESTS_P1 (200000),
# REQUESTS_P16 (2000000), TESTS (ping,set,get), PORT_HOLDFAST (7390),
# PORT_REDIS (7391), SERVER_CPU (0), CLIENT_CPU (1).

set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
REQUESTS_P1=${REQUESTS_P1:-200000}
REQUESTS_P16=${REQUESTS_P16:-2000000}
TESTS=${TESTS:-ping,set,get}
PORT_HOLDFAST=${PORT_HOLDFAST:-7390}
PORT_REDIS=${PORT_REDIS:-7391}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=target/bench
RAW=$OUT/redis_raw.csv

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    apt-get update && apt-get install -y redis-server redis-tools
fi
[ -x target/release/holdfast ] || cargo build --release
mkdir -p "$OUT"
CLK_TCK=$(getconf CLK_TCK)

server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

cpu_ticks() { # utime + stime of PID, fields 14 and 15 (after the comm)
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

wait_port() {
    for _ in $(seq 1 100); do
        redis-cli -p "$1" PING >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "server on port $1 did not answer PING" >&2
    exit 1
}

start_server() { # name → sets server_pid, port
    case $1 in
    holdfast)
        port=$PORT_HOLDFAST
        taskset -c "$SERVER_CPU" target/release/holdfast serve --protocol resp \
            --threads 1 --listen "127.0.0.1:$port" --admin off --max-memory 0 \
            --log-level warn &
        ;;
    redis)
        port=$PORT_REDIS
        taskset -c "$SERVER_CPU" redis-server --port "$port" --bind 127.0.0.1 \
            --save '' --appendonly no --daemonize no --loglevel warning >/dev/null &
        ;;
    esac
    server_pid=$!
    wait_port "$port"
}

echo "server,round,pipeline,test,requests,rps,p50_ms,p99_ms,cpu_s" >"$RAW"
for round in $(seq 1 "$ROUNDS"); do
    # Alternate which server goes first, so drift in the machine's state
    # (other load, thermal) does not favour one.
    if [ $((round % 2)) -eq 1 ]; then order="holdfast redis"; else order="redis holdfast"; fi
    for server in $order; do
        start_server "$server"
        for pipeline in 1 16; do
            requests=$REQUESTS_P1
            [ "$pipeline" -eq 16 ] && requests=$REQUESTS_P16
            for test in ${TESTS//,/ }; do
                before=$(cpu_ticks "$server_pid")
                csv=$(taskset -c "$CLIENT_CPU" redis-benchmark -h 127.0.0.1 -p "$port" \
                    -t "$test" -c "$CONNS" -n "$requests" -P "$pipeline" --csv)
                after=$(cpu_ticks "$server_pid")
                # `-t ping` runs PING_INLINE and PING_MBULK: count both.
                echo "$csv" | awk -F'","' -v s="$server" -v r="$round" -v p="$pipeline" \
                    -v t="$test" -v n="$requests" -v ticks=$((after - before)) \
                    -v hz="$CLK_TCK" '
                    NR > 1 { gsub(/"/, ""); split($0, f, ","); rps += f[2]; p50 += f[5]; p99 += f[7]; lines++ }
                    END { if (lines) printf "%s,%d,%d,%s,%d,%.0f,%.3f,%.3f,%.2f\n",
                          s, r, p, t, n * lines, rps / lines, p50 / lines, p99 / lines, ticks / hz }' \
                    >>"$RAW"
                tail -1 "$RAW"
            done
        done
        cleanup
        server_pid=
    done
done

python3 - "$RAW" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def med(server, p, t, key):
    vals = [float(r[key]) for r in rows if r["server"] == server and r["pipeline"] == p and r["test"] == t]
    return statistics.median(vals) if vals else float("nan")
def cpu_us(server, p, t):
    vals = [float(r["cpu_s"]) * 1e6 / int(r["requests"]) for r in rows
            if r["server"] == server and r["pipeline"] == p and r["test"] == t]
    return statistics.median(vals) if vals else float("nan")
print("| test | -P | server | req/s | p50 ms | p99 ms | CPU µs/req | req/s vs redis | CPU vs redis |")
print("|---|---|---|---|---|---|---|---|---|")
pipes = sorted({r["pipeline"] for r in rows}, key=int)
tests = list(dict.fromkeys(r["test"] for r in rows))
for p in pipes:
    for t in tests:
        base_rps, base_cpu = med("redis", p, t, "rps"), cpu_us("redis", p, t)
        for server in ("holdfast", "redis"):
            rps, cpu = med(server, p, t, "rps"), cpu_us(server, p, t)
            ratio_rps = f"{rps / base_rps:.2f}×" if server == "holdfast" else ""
            ratio_cpu = f"{cpu / base_cpu:.2f}×" if server == "holdfast" else ""
            print(f"| {t} | {p} | {server} | {rps:,.0f} | {med(server, p, t, 'p50_ms'):.3f} "
                  f"| {med(server, p, t, 'p99_ms'):.3f} | {cpu:.2f} | {ratio_rps} | {ratio_cpu} |")
EOF
