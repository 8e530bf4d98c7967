#!/usr/bin/env bash
# holdfast proxy vs nutcracker (twemproxy), each in front of the same
# redis-server, both driven by redis-benchmark.
#
#   scripts/bench_proxy.sh            (also run at the end of make bench)
#
# The proxy under test runs pinned to CPU 0 (holdfast with --threads 1);
# redis-server and redis-benchmark share CPU 1. On a 2-CPU machine that is
# the only split that gives the proxy a core of its own: the load generator
# and the upstream then compete with each other, not with the proxy, and
# equally for both proxies. Proxies alternate within each round (the first
# one swaps every round). For every (proxy, pipeline, test) it records
# requests/s and p50/p99 from redis-benchmark's --csv, and the proxy's CPU
# time per request: utime+stime from /proc/PID/stat across the run, divided
# by the requests it served. Prints a Markdown table of medians over the
# rounds with ratios to nutcracker. Targets (issue 7): CPU per request at
# most 0.8x nutcracker's, p99 no worse.
#
# Settings (environment): ROUNDS (3), CONNS (50), REQUESTS_P1 (200000),
# REQUESTS_P16 (1000000), TESTS (set,get), HOLDFAST (the binary,
# target/release/holdfast), HOLDFAST_BACKEND (the build's default: epoll, or
# uring in a --features uring build), PORT_REDIS (7491),
# PORT_HOLDFAST (7492), PORT_NUTCRACKER (7493), PORT_STATS (7494),
# PROXY_CPU (0), OTHER_CPU (1), SUFFIX (appended to the output file names).

set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
REQUESTS_P1=${REQUESTS_P1:-200000}
REQUESTS_P16=${REQUESTS_P16:-1000000}
TESTS=${TESTS:-set,get}
PORT_REDIS=${PORT_REDIS:-7491}
PORT_HOLDFAST=${PORT_HOLDFAST:-7492}
PORT_NUTCRACKER=${PORT_NUTCRACKER:-7493}
PORT_STATS=${PORT_STATS:-7494}
HOLDFAST=${HOLDFAST:-target/release/holdfast}
PROXY_CPU=${PROXY_CPU:-0}
OTHER_CPU=${OTHER_CPU:-1}
OUT=target/bench
RAW=$OUT/proxy_raw${SUFFIX:-}.csv

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench_proxy.sh needs $1 (apt-get install -y $2)" >&2; exit 1; }; }
need redis-server redis-server
need redis-benchmark redis-tools
# nutcracker is the table's reference and nothing else needs it: a Debian
# package, installed here when missing (as bench.sh installs liburing-dev).
if ! command -v nutcracker >/dev/null 2>&1; then
    mkdir -p "$OUT"
    echo "== installing nutcracker (the reference of this table)"
    { apt-get install -y nutcracker || { apt-get update && apt-get install -y nutcracker; }; } \
        </dev/null >"$OUT/apt-nutcracker.log" 2>&1 || true
fi
need nutcracker nutcracker
need taskset util-linux
[ -x "$HOLDFAST" ] || cargo build --release --bin holdfast
mkdir -p "$OUT"
CLK_TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d)

redis_pid=
proxy_pid=
stop() { # PID: kill and reap
    if [ -n "$1" ]; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop "$proxy_pid"
    stop "$redis_pid"
    rm -rf "$TMP"
}
trap cleanup EXIT

cpu_ticks() { # utime + stime of PID, fields 14 and 15 (after the comm)
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

wait_port() { # PORT: until a PING through it is answered
    for _ in $(seq 1 100); do
        [ "$(redis-cli -p "$1" PING 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    echo "nothing answered PING on port $1" >&2
    exit 1
}

taskset -c "$OTHER_CPU" redis-server --port "$PORT_REDIS" --bind 127.0.0.1 \
    --save '' --appendonly no --daemonize no --loglevel warning >/dev/null &
redis_pid=$!
wait_port "$PORT_REDIS"

cat >"$TMP/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$PORT_NUTCRACKER
  hash: fnv1a_64
  distribution: ketama
  redis: true
  servers:
   - 127.0.0.1:$PORT_REDIS:1
EOF

start_proxy() { # name → sets proxy_pid, port
    case $1 in
    holdfast)
        port=$PORT_HOLDFAST
        backend=()
        [ -n "${HOLDFAST_BACKEND:-}" ] && backend=(--backend "$HOLDFAST_BACKEND")
        taskset -c "$PROXY_CPU" "$HOLDFAST" proxy --threads 1 \
            --listen "127.0.0.1:$port" --admin off --log-level warn "${backend[@]}" \
            --upstream "127.0.0.1:$PORT_REDIS" &
        ;;
    nutcracker)
        port=$PORT_NUTCRACKER
        taskset -c "$PROXY_CPU" nutcracker -c "$TMP/nutcracker.yml" -s "$PORT_STATS" \
            -a 127.0.0.1 -o "$TMP/nutcracker.log" -p "$TMP/nutcracker.pid" &
        ;;
    esac
    proxy_pid=$!
    wait_port "$port"
}

echo "proxy,round,pipeline,test,requests,rps,p50_ms,p99_ms,cpu_s" >"$RAW"
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="holdfast nutcracker"; else order="nutcracker holdfast"; fi
    for proxy in $order; do
        start_proxy "$proxy"
        for pipeline in 1 16; do
            requests=$REQUESTS_P1
            [ "$pipeline" -eq 16 ] && requests=$REQUESTS_P16
            for test in ${TESTS//,/ }; do
                before=$(cpu_ticks "$proxy_pid")
                # stderr: redis-benchmark warns that CONFIG GET is refused
                # (both proxies refuse it).
                csv=$(taskset -c "$OTHER_CPU" redis-benchmark -h 127.0.0.1 -p "$port" \
                    -t "$test" -c "$CONNS" -n "$requests" -P "$pipeline" --csv 2>/dev/null)
                after=$(cpu_ticks "$proxy_pid")
                echo "$csv" | awk -F'","' -v s="$proxy" -v r="$round" -v p="$pipeline" \
                    -v t="$test" -v n="$requests" -v ticks=$((after - before)) \
                    -v hz="$CLK_TCK" '
                    NR > 1 { gsub(/"/, ""); split($0, f, ","); rps += f[2]; p50 += f[5]; p99 += f[7]; lines++ }
                    END { if (lines) printf "%s,%d,%d,%s,%d,%.0f,%.3f,%.3f,%.2f\n",
                          s, r, p, t, n * lines, rps / lines, p50 / lines, p99 / lines, ticks / hz }' \
                    >>"$RAW"
                tail -1 "$RAW"
            done
        done
        stop "$proxy_pid"
        proxy_pid=
    done
done

python3 - "$RAW" "$OUT/proxy${SUFFIX:-}.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def med(proxy, p, t, key):
    vals = [float(r[key]) for r in rows if r["proxy"] == proxy and r["pipeline"] == p and r["test"] == t]
    return statistics.median(vals) if vals else float("nan")
def cpu_us(proxy, p, t):
    vals = [float(r["cpu_s"]) * 1e6 / int(r["requests"]) for r in rows
            if r["proxy"] == proxy and r["pipeline"] == p and r["test"] == t]
    return statistics.median(vals) if vals else float("nan")
lines = [
    "| test | -P | proxy | req/s | p50 ms | p99 ms | CPU µs/req | CPU vs nutcracker | p99 vs nutcracker |",
    "|---|---|---|---|---|---|---|---|---|",
]
pipes = sorted({r["pipeline"] for r in rows}, key=int)
tests = list(dict.fromkeys(r["test"] for r in rows))
for p in pipes:
    for t in tests:
        base_cpu, base_p99 = cpu_us("nutcracker", p, t), med("nutcracker", p, t, "p99_ms")
        for proxy in ("holdfast", "nutcracker"):
            cpu, p99 = cpu_us(proxy, p, t), med(proxy, p, t, "p99_ms")
            ratio_cpu = f"{cpu / base_cpu:.2f}×" if proxy == "holdfast" else ""
            ratio_p99 = f"{p99 / base_p99:.2f}×" if proxy == "holdfast" else ""
            lines.append(
                f"| {t} | {p} | {proxy} | {med(proxy, p, t, 'rps'):,.0f} | {med(proxy, p, t, 'p50_ms'):.3f} "
                f"| {p99:.3f} | {cpu:.2f} | {ratio_cpu} | {ratio_p99} |")
text = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(text)
print(text, end="")
EOF
echo "wrote $OUT/proxy${SUFFIX:-}.md and $RAW"
