#!/usr/bin/env bash
# make syscalls: system calls per request of the holdfast server, epoll
# against io_uring, under the same load.
#
# For each backend and each pipeline depth: a fresh release server (one
# shard, `--backend B`, admin on) pinned to CPU 0, `holdfast bench` pinned
# to CPU 1 with CONNS connections of SIZE-byte echo requests. Once every
# connection is open and WARM seconds of load have passed:
#
#   1. a PLAIN-second window without strace: requests (from the server's
#      holdfast_bytes_written_total ÷ SIZE), server CPU per request
#      (/proc/PID/stat), loop turns and io_uring enters per request (the
#      server's own counters). This is the undisturbed reference.
#   2. `strace -c -f -p PID` is attached to the server (every thread); once
#      it reports every thread attached, the counters are read, WINDOW
#      seconds pass, the counters are read again, strace is stopped (its
#      summary is written on SIGTERM). Syscalls per request = the summary's
#      calls ÷ the requests answered between the two readings.
#
# strace stops the server at every syscall, so the server runs many times
# slower while it is attached: the counts are good for counting, never for
# timing. A slower server also finds more work per wake-up, so the strace
# window can batch a little more than the plain one (compare the loop turns
# per request of the two windows, both in the report). The attach and
# detach moments fall just outside the counted window, so the syscalls of a
# few milliseconds of extra load (and of the two /metrics scrapes) are
# included: a small overcount.
#
# `holdfast bench` runs for a duration, not a number of requests, so the
# requests are counted by the server (bytes written ÷ SIZE: raw echo writes
# back exactly what it read).
#
# Knobs (environment): CONNS (1000), SIZE (64), PIPELINES ("1 16"),
# BACKENDS ("epoll uring"), WARM (1), PLAIN (2), WINDOW (3) seconds,
# OUT (target/bench), BUILD (1; 0: use the binary as it is, for bench.sh),
# HOLDFAST (the release binary built with --features uring), PORT (7950:
# the first port tried; ports 7950-7999, clear of make bench's 7401-7900;
# a taken one is skipped).
# Writes OUT/syscalls.md (the tables) and OUT/syscalls.jsonl (raw figures).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-1000}
SIZE=${SIZE:-64}
read -r -a PIPELINES <<< "${PIPELINES:-1 16}"
read -r -a BACKENDS <<< "${BACKENDS:-epoll uring}"
WARM=${WARM:-1}
PLAIN=${PLAIN:-2}
WINDOW=${WINDOW:-3}
OUT=${OUT:-target/bench}
BUILD=${BUILD:-1}
URING_TARGET_DIR=${URING_TARGET_DIR:-}
HOLDFAST=${HOLDFAST:-${URING_TARGET_DIR:-target}/release/holdfast}
PORT=${PORT:-7950}
SERVER_CPU=0
CLIENT_CPU=1

need() { command -v "$1" >/dev/null 2>&1 || { echo "make syscalls needs $1 ($2)" >&2; exit 1; }; }
need taskset "apt-get install util-linux"
need python3 "apt-get install python3"
need curl "apt-get install curl"
if ! command -v strace >/dev/null 2>&1; then
    echo "== installing strace (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null
fi
need strace "apt-get install strace"
if [ "$(nproc)" -lt 2 ]; then
    echo "make syscalls needs 2 CPUs (server on CPU 0, load on CPU 1); nproc is $(nproc)" >&2
    exit 1
fi
ulimit -n "$(ulimit -Hn)"

if [ "$BUILD" = 1 ]; then
    echo "== building (release, --features uring)"
    if [ -n "$URING_TARGET_DIR" ]; then
        CARGO_TARGET_DIR=$URING_TARGET_DIR cargo build --release --features uring --bin holdfast
    else
        cargo build --release --features uring --bin holdfast
    fi
fi
[ -x "$HOLDFAST" ] || { echo "make syscalls: no binary at $HOLDFAST" >&2; exit 1; }

mkdir -p "$OUT"
RAW="$OUT/syscalls.jsonl"
: > "$RAW"
WORK=$(mktemp -d)
SERVER_PID=
BENCH_PID=
STRACE_PID=

cleanup() {
    # strace first (it detaches on SIGTERM), then the load, then the server.
    if [ -n "$STRACE_PID" ]; then kill -TERM "$STRACE_PID" 2>/dev/null || true; wait "$STRACE_PID" 2>/dev/null || true; fi
    if [ -n "$BENCH_PID" ]; then kill -9 "$BENCH_PID" 2>/dev/null || true; wait "$BENCH_PID" 2>/dev/null || true; fi
    if [ -n "$SERVER_PID" ]; then kill -9 "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server BACKEND: a fresh server on CPU 0 with its admin port; sets
# SERVER_PID, TARGET, ADMIN. A port pair another process holds is skipped.
start_server() {
    local attempt log="$WORK/server.log"
    for attempt in $(seq 20); do
        [ "$PORT" -ge 7999 ] && PORT=7950
        TARGET="127.0.0.1:$PORT"
        ADMIN="127.0.0.1:$((PORT + 1))"
        PORT=$((PORT + 2))
        taskset -c $SERVER_CPU "$HOLDFAST" serve --listen "$TARGET" --admin "$ADMIN" \
            --threads 1 --protocol echo --backend "$1" --log-level warn >"$log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 250); do
            curl -sf -o /dev/null "http://$ADMIN/healthz" 2>/dev/null && return 0
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.02
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
        if grep -qi "in use" "$log" 2>/dev/null; then
            echo "port $TARGET or $ADMIN is taken; trying the next pair" >&2
            continue
        fi
        break
    done
    echo "server --backend $1 did not start:" >&2; cat "$log" >&2; exit 1
}

stop() { # stop PIDVAR SIGNAL
    local pid=${!1}
    if [ -n "$pid" ]; then
        kill "-$2" "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    printf -v "$1" '%s' ''
}

# snapshot FILE: the server's counters and CPU ticks, now.
snapshot() {
    {
        echo "time $(date +%s.%N)"
        echo "cpu_ticks $(awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat")"
        curl -sf "http://$ADMIN/metrics" | awk '
            /^holdfast_(bytes_written_total|loop_iterations_total|uring_enters_total|connections_open)[{ ]/ {
                name = $1; sub(/\{.*/, "", name); sum[name] += $NF }
            END { for (n in sum) printf "%s %d\n", n, sum[n] }'
    } > "$1"
}

PROBE=""
echo "== $CONNS conns × $SIZE B × pipeline {${PIPELINES[*]}}; backends ${BACKENDS[*]}; plain ${PLAIN}s, strace ${WINDOW}s"
for backend in "${BACKENDS[@]}"; do
    if [ "$backend" = uring ]; then
        if ! PROBE=$(scripts/uring_probe.sh "$HOLDFAST"); then
            echo "skipping --backend uring: $PROBE"
            printf '{"kind":"skip","backend":"uring","reason":"%s"}\n' "$(printf '%s' "$PROBE" | tr -d '"\\')" >> "$RAW"
            PROBE=""
            continue
        fi
    fi
    for pipeline in "${PIPELINES[@]}"; do
        start_server "$backend"
        taskset -c $CLIENT_CPU "$HOLDFAST" bench --target "$TARGET" --conns "$CONNS" --size "$SIZE" \
            --pipeline "$pipeline" --warmup 0ms --duration 600s --json >"$WORK/bench.json" 2>"$WORK/bench.err" &
        BENCH_PID=$!
        open=0
        for _ in $(seq 600); do # up to 30 s for every connection to be accepted
            open=$(curl -sf "http://$ADMIN/metrics" | awk '/^holdfast_connections_open[{ ]/ { s += $NF } END { print s + 0 }')
            [ "$open" -ge "$CONNS" ] && break
            kill -0 "$BENCH_PID" 2>/dev/null || break
            sleep 0.05
        done
        if [ "$open" -lt "$CONNS" ]; then
            echo "only $open of $CONNS connections reached the server --backend $backend:" >&2
            cat "$WORK/bench.err" >&2
            exit 1
        fi
        sleep "$WARM"
        snapshot "$WORK/s0"; sleep "$PLAIN"; snapshot "$WORK/s1"

        strace -c -f -S calls -p "$SERVER_PID" -o "$WORK/strace.out" 2>"$WORK/strace.err" &
        STRACE_PID=$!
        # strace says "Process PID attached with N threads" once it holds
        # them all (io_uring worker threads cannot be traced: it reports
        # those as failures). Up to 10 s.
        tasks=$(find "/proc/$SERVER_PID/task" -mindepth 1 -maxdepth 1 | wc -l)
        for _ in $(seq 200); do
            grep -q "Process $SERVER_PID attached" "$WORK/strace.err" && break
            kill -0 "$STRACE_PID" 2>/dev/null || { cat "$WORK/strace.err" >&2; echo "strace exited early" >&2; exit 1; }
            sleep 0.05
        done
        if ! grep -q "Process $SERVER_PID attached" "$WORK/strace.err"; then
            cat "$WORK/strace.err" >&2; echo "strace did not attach within 10 s" >&2; exit 1
        fi
        snapshot "$WORK/s2"; sleep "$WINDOW"; snapshot "$WORK/s3"
        attached=$(sed -n "s/.*Process $SERVER_PID attached with \([0-9]*\) threads.*/\1/p" "$WORK/strace.err" | head -n1)
        [ -n "$attached" ] || attached=1
        stop STRACE_PID TERM
        stop BENCH_PID 9
        stop SERVER_PID 9
        python3 scripts/syscalls_report.py row "$backend" "$CONNS" "$SIZE" "$pipeline" "$tasks" "$attached" \
            "$(getconf CLK_TCK)" "$WORK/s0" "$WORK/s1" "$WORK/s2" "$WORK/s3" "$WORK/strace.out" >> "$RAW"
        python3 scripts/syscalls_report.py line "$(tail -n1 "$RAW")"
    done
done

python3 scripts/syscalls_report.py table "$RAW" "$OUT/syscalls.md" "$PROBE"
cat "$OUT/syscalls.md"
echo "wrote $OUT/syscalls.md and $RAW"
