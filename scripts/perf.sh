#!/usr/bin/env bash
# make perf: profile holdfast under a standard load in one command.
#
# The server (one shard) runs pinned to CPU 0 and `holdfast bench` to CPU 1:
# 1000 connections, 64 B echo, pipeline 16. After a second of warm-up,
# `perf record -g` samples the server for PERF_SECONDS (10) seconds; then
# the top of the report is printed. Release builds keep frame pointers and
# line tables (Cargo.toml, .cargo/config.toml), so stacks are whole.
#
# The data stays in target/perf/perf.data for `perf report -i` (try
# `--children`, or `-g caller` for the call graphs).
set -euo pipefail
cd "$(dirname "$0")/.."

PERF_SECONDS=${PERF_SECONDS:-10}
OUT=target/perf
ADDR=127.0.0.1:7399

if ! command -v perf >/dev/null 2>&1; then
    echo "make perf: perf is not installed (Debian: apt-get install linux-perf)" >&2
    exit 1
fi
# Hardware counters are often absent in VMs; the cpu-clock software event
# works wherever perf may sample at all.
if ! perf stat -e cpu-clock true >/dev/null 2>&1; then
    paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo '?')
    echo "make perf: perf is not permitted here (kernel.perf_event_paranoid=$paranoid," \
         "or a container without perf_event_open); run as root or" \
         "'sysctl kernel.perf_event_paranoid=1'" >&2
    exit 1
fi
event=cpu-clock
if perf stat -e cycles true 2>&1 | grep -q "cycles" && ! perf stat -e cycles true 2>&1 | grep -q "not supported"; then
    event=cycles
fi

cargo build --release --bin holdfast
ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"
taskset -c 0 target/release/holdfast serve --listen "$ADDR" --admin off --threads 1 \
    --log-level info >"$OUT/server.log" 2>&1 &
server=$!
trap 'kill -9 $server 2>/dev/null || true' EXIT
for _ in $(seq 250); do
    grep -q "listening on" "$OUT/server.log" && break
    sleep 0.02
done
taskset -c 1 target/release/holdfast bench --target "$ADDR" --conns 1000 --size 64 \
    --pipeline 16 --duration "$((PERF_SECONDS + 2))s" --warmup 0ms >"$OUT/bench.txt" &
bench=$!
sleep 1
echo "== perf record -e $event -g on holdfast (pid $server) for ${PERF_SECONDS}s: 1000 conns, 64 B, pipeline 16"
perf record -e "$event" -F 1999 -g -p "$server" -o "$OUT/perf.data" -- sleep "$PERF_SECONDS" 2>&1 | grep -v "^\[ perf record: Woken" || true
wait "$bench"
cat "$OUT/bench.txt"
echo "== perf report (flat, self time; full data in $OUT/perf.data)"
# head closes the pipe early: that SIGPIPE is not a failure.
set +o pipefail
perf report -i "$OUT/perf.data" --stdio --no-children -g none --percent-limit 0.3 \
    --sort dso,symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60
