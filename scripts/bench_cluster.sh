#!/usr/bin/env bash
# holdfast proxy in front of a Redis Cluster vs the same proxy over plain
# upstreams, and redis-benchmark --cluster going straight to the cluster.
#
#   scripts/bench_cluster.sh          (also run at the end of make bench)
#
# A local cluster of six redis-servers (three primaries, a replica each,
# `redis-cli --cluster create`) and three standalone redis-servers, all on
# CPU 1 with redis-benchmark; the proxy (--threads 1) pinned to CPU 0. Per
# round, alternated: the proxy with --cluster (keys by hash slot, redirects
# followed) and with --upstream over the three standalone servers (keys by
# ketama): the same fan-out, so the difference is what routing by slot
# costs. Random keys (-r) spread over every slot. For each it records
# requests/s and p50/p99 from redis-benchmark's --csv and the proxy's CPU
# per request (utime+stime from /proc/PID/stat over the run). Then
# redis-benchmark --cluster against the cluster directly (no proxy; its own
# connections to every primary), for requests/s only. Prints a Markdown
# table of medians over the rounds. Target (issue 17): cluster mode's CPU
# per request at most 1.1x plain mode's.
#
# Settings (environment): ROUNDS (3), CONNS (50), REQUESTS_P1 (200000),
# REQUESTS_P16 (1000000), TESTS (set,get), KEYSPACE (100000), HOLDFAST
# (target/release/holdfast), PORT_BASE (7600: the cluster uses PORT_BASE+1..6
# and PORT_BASE+11..16 for its bus, the plain servers PORT_BASE+21..23, the
# proxy PORT_BASE+30), PROXY_CPU (0), OTHER_CPU (1), SUFFIX.

set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
REQUESTS_P1=${REQUESTS_P1:-200000}
REQUESTS_P16=${REQUESTS_P16:-1000000}
TESTS=${TESTS:-set,get}
KEYSPACE=${KEYSPACE:-100000}
PORT_BASE=${PORT_BASE:-7600}
HOLDFAST=${HOLDFAST:-target/release/holdfast}
PROXY_CPU=${PROXY_CPU:-0}
OTHER_CPU=${OTHER_CPU:-1}
OUT=target/bench
RAW=$OUT/cluster_raw${SUFFIX:-}.csv
PROXY_PORT=$((PORT_BASE + 30))

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench_cluster.sh needs $1 (apt-get install -y $2)" >&2; exit 1; }; }
need redis-server redis-server
need redis-cli redis-tools
need redis-benchmark redis-tools
need taskset util-linux
[ -x "$HOLDFAST" ] || cargo build --release --bin holdfast
mkdir -p "$OUT"
CLK_TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d)

pids=()
proxy_pid=
stop() { # PID: kill and reap
    if [ -n "$1" ]; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop "$proxy_pid"
    for pid in "${pids[@]}"; do stop "$pid"; done
    rm -rf "$TMP"
}
trap cleanup EXIT

cpu_ticks() { # utime + stime of PID, fields 14 and 15 (after the comm)
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

wait_port() { # PORT: until something answers PING on it
    for _ in $(seq 1 100); do
        redis-cli -p "$1" PING >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "nothing answered PING on port $1" >&2
    exit 1
}

redis() { # PORT ARGS...: a redis-server on CPU OTHER_CPU
    local port=$1
    shift
    taskset -c "$OTHER_CPU" redis-server --port "$port" --bind 127.0.0.1 --save '' \
        --appendonly no --loglevel warning --dir "$TMP" "$@" >/dev/null &
    pids+=($!)
    wait_port "$port"
}

nodes=()
for i in 1 2 3 4 5 6; do
    redis $((PORT_BASE + i)) --cluster-enabled yes --cluster-port $((PORT_BASE + 10 + i)) \
        --cluster-config-file "nodes-$i.conf" --cluster-node-timeout 2000
    nodes+=("127.0.0.1:$((PORT_BASE + i))")
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$TMP/create.log"
for _ in $(seq 1 100); do
    redis-cli -p $((PORT_BASE + 1)) CLUSTER INFO | grep -q cluster_state:ok && break
    sleep 0.1
done
plain=()
for i in 1 2 3; do
    redis $((PORT_BASE + 20 + i))
    plain+=(--upstream "127.0.0.1:$((PORT_BASE + 20 + i))")
done

start_proxy() { # mode → sets proxy_pid
    local upstreams
    case $1 in
    cluster) upstreams=(--cluster "127.0.0.1:$((PORT_BASE + 1))") ;;
    plain) upstreams=("${plain[@]}") ;;
    esac
    taskset -c "$PROXY_CPU" "$HOLDFAST" proxy --threads 1 --listen "127.0.0.1:$PROXY_PORT" \
        --admin off --log-level warn "${upstreams[@]}" &
    proxy_pid=$!
    wait_port "$PROXY_PORT"
}

averaged() { # CSV of redis-benchmark → "rps p50 p99" averaged over its result lines
    # (--cluster first prints the primaries it found: not CSV, left out)
    awk -F'","' '/^"[A-Z]/ && !/^"test"/ { gsub(/"/, ""); split($0, f, ","); rps += f[2]; p50 += f[5]; p99 += f[7]; n++ }
        END { if (n) printf "%.0f %.3f %.3f\n", rps / n, p50 / n, p99 / n }'
}

echo "mode,round,pipeline,test,requests,rps,p50_ms,p99_ms,cpu_s" >"$RAW"
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="cluster plain"; else order="plain cluster"; fi
    for mode in $order direct; do
        [ "$mode" = direct ] || start_proxy "$mode"
        for pipeline in 1 16; do
            requests=$REQUESTS_P1
            [ "$pipeline" -eq 16 ] && requests=$REQUESTS_P16
            for test in ${TESTS//,/ }; do
                if [ "$mode" = direct ]; then
                    target=(--cluster -p $((PORT_BASE + 1)))
                    before=0
                else
                    target=(-p "$PROXY_PORT")
                    before=$(cpu_ticks "$proxy_pid")
                fi
                # stderr: redis-benchmark warns that CONFIG GET is refused.
                read -r rps p50 p99 < <(taskset -c "$OTHER_CPU" redis-benchmark -h 127.0.0.1 \
                    "${target[@]}" -t "$test" -c "$CONNS" -n "$requests" -P "$pipeline" \
                    -r "$KEYSPACE" --csv 2>/dev/null | averaged)
                after=$before
                [ "$mode" = direct ] || after=$(cpu_ticks "$proxy_pid")
                cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
                echo "$mode,$round,$pipeline,$test,$requests,$rps,$p50,$p99,$cpu" | tee -a "$RAW"
            done
        done
        stop "$proxy_pid"
        proxy_pid=
    done
done

python3 - "$RAW" "$OUT/cluster${SUFFIX:-}.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def med(mode, p, t, key):
    vals = [float(r[key]) for r in rows if r["mode"] == mode and r["pipeline"] == p and r["test"] == t]
    return statistics.median(vals) if vals else float("nan")
def cpu_us(mode, p, t):
    vals = [float(r["cpu_s"]) * 1e6 / int(r["requests"]) for r in rows
            if r["mode"] == mode and r["pipeline"] == p and r["test"] == t]
    return statistics.median(vals) if vals else float("nan")
lines = [
    "| test | -P | mode | req/s | p50 ms | p99 ms | proxy CPU µs/req | CPU vs plain | req/s vs direct |",
    "|---|---|---|---|---|---|---|---|---|",
]
pipes = sorted({r["pipeline"] for r in rows}, key=int)
tests = list(dict.fromkeys(r["test"] for r in rows))
for p in pipes:
    for t in tests:
        plain_cpu, direct_rps = cpu_us("plain", p, t), med("direct", p, t, "rps")
        for mode in ("cluster", "plain", "direct"):
            rps = med(mode, p, t, "rps")
            cpu = f"{cpu_us(mode, p, t):.2f}" if mode != "direct" else ""
            vs_plain = f"{cpu_us(mode, p, t) / plain_cpu:.2f}×" if mode == "cluster" else ""
            vs_direct = f"{rps / direct_rps:.2f}×" if mode != "direct" else ""
            lines.append(f"| {t} | {p} | {mode} | {rps:,.0f} | {med(mode, p, t, 'p50_ms'):.3f} "
                         f"| {med(mode, p, t, 'p99_ms'):.3f} | {cpu} | {vs_plain} | {vs_direct} |")
text = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(text)
print(text, end="")
EOF
echo "wrote $OUT/cluster${SUFFIX:-}.md and $RAW"
