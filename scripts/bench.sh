#!/usr/bin/env bash
# make bench: holdfast (epoll and io_uring) against the tokio reference
# servers and the floor, in one run, then the syscall counts of
# scripts/syscalls.sh.
#
# holdfast is built once, in release with `--features uring`, and run as two
# servers: `holdfast` (`--backend epoll`) and `holdfast_uring` (`--backend
# uring`). If this kernel cannot run the io_uring driver (the binary's
# `serve --check --backend uring` says why), the uring server is left out
# with that reason printed and written in the report.
#
# The floor (reference/floor/, issue 18): two minimal C echo servers, one
# epoll loop (`floor_epoll`) and one liburing loop (`floor_uring`), built
# here with `cc -O2` into target/floor/. The report gives every row's CPU
# per request as a ratio to its floor (×floor): floor_uring's for the
# io_uring servers, floor_epoll's for the others. liburing-dev is installed
# with apt-get if its header is missing; if that fails, or this kernel
# refuses the ring (`echo_uring --check` says why), floor_uring is left out
# with the reason printed and written in the report.
#
# Every server runs pinned to CPU 0, the load generator (holdfast bench)
# to CPU 1. Servers are alternated cell by cell and the whole matrix is
# repeated ROUNDS times, with the server order rotated each round, so slow
# drift (thermal, other tenants) lands on every server alike; the report
# takes the median over rounds. Each cell starts a fresh server.
#
# Knobs (environment): ROUNDS (3), DURATION (1200ms), WARMUP (300ms),
# IDLE_CONNS (10000), OUT (target/bench); a smaller matrix with CONNS
# ("1 100 1000 10000"), SIZES ("64 4096"), PIPELINES ("1 16"), SERVERS
# ("holdfast holdfast_uring tokio_ct tokio_mt floor_epoll floor_uring";
# tokio_ct is the baseline of the ×ct ratios, or else the first server
# listed); SYSCALLS=0 skips the
# syscall counts; IDLE=0 skips the idle-memory measurement.
# URING_TARGET_DIR as in the Makefile.
# BASELINE=/path/to/an/older/holdfast adds the servers `base` and
# `base_uring` (that binary, epoll and io_uring) to SERVERS, so a change is
# measured against the commit before it side by side in one run (build the
# old commit with `cargo build --release --features uring` in a worktree).
# FRONT_ARGS="--max-conns-per-ip 100000 --request-rate 10000000" adds the
# servers `front` and `front_uring` (this build, epoll and io_uring, with
# those flags), to measure what features cost against the same build
# without them.
# At the end it runs scripts/bench_proxy.sh (holdfast proxy vs nutcracker)
# unless SKIP_PROXY=1, scripts/bench_cluster.sh (the proxy in front of a
# local Redis Cluster; appended to results.md) unless SKIP_CLUSTER=1, then
# scripts/bench_pubsub.sh (Redis Pub/Sub, holdfast vs redis-server, on
# the backend PUBSUB_BACKEND, default epoll; its table is appended to
# results.md) unless SKIP_PUBSUB=1.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-1200ms}
WARMUP=${WARMUP:-300ms}
IDLE_CONNS=${IDLE_CONNS:-10000}
OUT=${OUT:-target/bench}
read -r -a CONNS <<< "${CONNS:-1 100 1000 10000}"
read -r -a SIZES <<< "${SIZES:-64 4096}"
read -r -a PIPELINES <<< "${PIPELINES:-1 16}"
read -r -a SERVERS <<< "${SERVERS:-holdfast holdfast_uring tokio_ct tokio_mt floor_epoll floor_uring}"
BASELINE=${BASELINE:-}
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || { echo "make bench: BASELINE $BASELINE is not an executable" >&2; exit 1; }
    SERVERS+=(base base_uring)
fi
FRONT_ARGS=${FRONT_ARGS:-}
read -r -a FRONT <<< "$FRONT_ARGS"
if [ -n "$FRONT_ARGS" ]; then
    SERVERS+=(front front_uring)
fi
export FRONT_ARGS
SYSCALLS=${SYSCALLS:-1}
IDLE=${IDLE:-1}
URING_TARGET_DIR=${URING_TARGET_DIR:-}
PORT=7400
SERVER_CPU=0
CLIENT_CPU=1

need() { command -v "$1" >/dev/null 2>&1 || { echo "make bench needs $1 ($2)" >&2; exit 1; }; }
need taskset "apt-get install util-linux"
need python3 "apt-get install python3"
need cargo "a Rust toolchain"
need cc "apt-get install gcc"
if [ "$(nproc)" -lt 2 ]; then
    echo "make bench needs 2 CPUs (server on CPU 0, load on CPU 1); nproc is $(nproc)" >&2
    exit 1
fi
# Each process may hold up to the hard limit; 10000 connections need
# 10000 fds in the client and 10000 in the server.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((IDLE_CONNS + 200)) ]; then
    echo "make bench: RLIMIT_NOFILE $(ulimit -n) is below the $((IDLE_CONNS + 200)) needed for 10000 connections" >&2
    exit 1
fi

start_time=$(date +%s)
echo "== building (release, --features uring)"
if [ -n "$URING_TARGET_DIR" ]; then
    CARGO_TARGET_DIR=$URING_TARGET_DIR cargo build --release --features uring --bin holdfast
else
    cargo build --release --features uring --bin holdfast
fi
cargo build --release --manifest-path reference/tokio-echo/Cargo.toml
HOLDFAST=${URING_TARGET_DIR:-target}/release/holdfast
TOKIO=reference/tokio-echo/target/release/tokio-echo
FLOOR=target/floor
mkdir -p "$OUT" "$FLOOR"
RAW="$OUT/raw.jsonl"
: > "$RAW"

# skip_server NAME REASON [NOTE]: leaves NAME out of this run, saying why
# (on the terminal, after NOTE, and in the report).
skip_server() {
    echo "skipping $1${3:+ $3}: $2"
    printf '{"kind":"skip","server":"%s","reason":"%s"}\n' "$1" "$(printf '%s' "$2" | tr -d '"\\')" >> "$RAW"
    local kept=() server
    for server in "${SERVERS[@]}"; do [ "$server" = "$1" ] || kept+=("$server"); done
    SERVERS=("${kept[@]}")
}
has_server() { [[ " ${SERVERS[*]} " == *" $1 "* ]]; }

# The io_uring server only where this kernel can run it.
if has_server holdfast_uring; then
    if probe=$(scripts/uring_probe.sh "$HOLDFAST"); then
        echo "io_uring probe: $probe"
    else
        skip_server holdfast_uring "$probe" "(--backend uring)"
    fi
fi

# The floor: minimal C servers (reference/floor/).
if has_server floor_epoll; then
    cc -O2 -Wall -Wextra -o "$FLOOR/echo_epoll" reference/floor/echo_epoll.c
fi
if has_server floor_uring; then
    if [ ! -e /usr/include/liburing.h ]; then
        echo "== installing liburing-dev (the floor's io_uring server)"
        { apt-get install -y liburing-dev || { apt-get update && apt-get install -y liburing-dev; }; } \
            </dev/null >"$OUT/apt.log" 2>&1 || true
    fi
    if [ ! -e /usr/include/liburing.h ]; then
        skip_server floor_uring "liburing-dev is not installed and apt-get install -y liburing-dev failed ($(tail -n1 "$OUT/apt.log" 2>/dev/null))"
    elif ! cc -O2 -Wall -Wextra -o "$FLOOR/echo_uring" reference/floor/echo_uring.c -luring 2>"$OUT/cc.log"; then
        cat "$OUT/cc.log" >&2
        skip_server floor_uring "reference/floor/echo_uring.c did not build: $(head -n1 "$OUT/cc.log")"
    elif ! probe=$(timeout 30 "$FLOOR/echo_uring" --check 2>&1); then
        skip_server floor_uring "this kernel refuses the ring: $probe"
    else
        echo "floor io_uring probe: $probe"
    fi
fi
SERVER_PID=
SERVER_LOG="$OUT/server.log"

cleanup() {
    if [ -n "${idle_pid:-}" ]; then kill "$idle_pid" 2>/dev/null || true; fi
    if [ -n "$SERVER_PID" ]; then kill -9 "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME: starts it on CPU 0, waits for its "listening on" line.
# A port some other process holds is skipped (up to 20 tries).
start_server() {
    local attempt
    for attempt in $(seq 20); do
        PORT=$((PORT + 1))
        [ "$PORT" -gt 7900 ] && PORT=7401
        local addr="127.0.0.1:$PORT"
        case "$1" in
            holdfast) taskset -c $SERVER_CPU "$HOLDFAST" serve --listen "$addr" --admin off \
                          --threads 1 --log-level info --protocol echo --backend epoll >"$SERVER_LOG" 2>&1 & ;;
            holdfast_uring) taskset -c $SERVER_CPU "$HOLDFAST" serve --listen "$addr" --admin off \
                          --threads 1 --log-level info --protocol echo --backend uring >"$SERVER_LOG" 2>&1 & ;;
            base) taskset -c $SERVER_CPU "$BASELINE" serve --listen "$addr" --admin off \
                          --threads 1 --log-level info --protocol echo --backend epoll >"$SERVER_LOG" 2>&1 & ;;
            base_uring) taskset -c $SERVER_CPU "$BASELINE" serve --listen "$addr" --admin off \
                          --threads 1 --log-level info --protocol echo --backend uring >"$SERVER_LOG" 2>&1 & ;;
            front) taskset -c $SERVER_CPU "$HOLDFAST" serve --listen "$addr" --admin off \
                          --threads 1 --log-level info --protocol echo --backend epoll "${FRONT[@]}" >"$SERVER_LOG" 2>&1 & ;;
            front_uring) taskset -c $SERVER_CPU "$HOLDFAST" serve --listen "$addr" --admin off \
                          --threads 1 --log-level info --protocol echo --backend uring "${FRONT[@]}" >"$SERVER_LOG" 2>&1 & ;;
            tokio_ct) taskset -c $SERVER_CPU "$TOKIO" --runtime current_thread --listen "$addr" \
                          --protocol echo >"$SERVER_LOG" 2>&1 & ;;
            tokio_mt) taskset -c $SERVER_CPU "$TOKIO" --runtime multi_thread --listen "$addr" \
                          --protocol echo >"$SERVER_LOG" 2>&1 & ;;
            floor_epoll) taskset -c $SERVER_CPU "$FLOOR/echo_epoll" --listen "$addr" >"$SERVER_LOG" 2>&1 & ;;
            floor_uring) taskset -c $SERVER_CPU "$FLOOR/echo_uring" --listen "$addr" >"$SERVER_LOG" 2>&1 & ;;
        esac
        SERVER_PID=$!
        TARGET=$addr
        for _ in $(seq 250); do
            grep -q "listening on" "$SERVER_LOG" 2>/dev/null && return 0
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.02
        done
        if grep -qi "in use" "$SERVER_LOG" 2>/dev/null; then
            wait "$SERVER_PID" 2>/dev/null || true
            echo "port $PORT is taken; trying the next one" >&2
            continue
        fi
        break
    done
    echo "server $1 did not start:" >&2; cat "$SERVER_LOG" >&2; exit 1
}

stop_server() {
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# Open file descriptors of a process: its connections, plus a handful.
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

UNDER=0 # runs where fewer connections were established than requested

cells=$(( ${#CONNS[@]} * ${#SIZES[@]} * ${#PIPELINES[@]} ))
echo "== $ROUNDS rounds × $cells cells × ${#SERVERS[@]} servers, $DURATION each after $WARMUP warm-up"
for round in $(seq "$ROUNDS"); do
    # Rotate the server order each round.
    order=()
    for i in "${!SERVERS[@]}"; do
        order+=("${SERVERS[$(( (i + round - 1) % ${#SERVERS[@]} ))]}")
    done
    for conns in "${CONNS[@]}"; do
        for size in "${SIZES[@]}"; do
            for pipeline in "${PIPELINES[@]}"; do
                for server in "${order[@]}"; do
                    start_server "$server"
                    json=$(taskset -c $CLIENT_CPU "$HOLDFAST" bench --target "$TARGET" \
                        --conns "$conns" --size "$size" --pipeline "$pipeline" \
                        --duration "$DURATION" --warmup "$WARMUP" \
                        --server-pid "$SERVER_PID" --json) || json='{"errors":-1}'
                    stop_server
                    echo "{\"kind\":\"load\",\"server\":\"$server\",\"round\":$round,${json#\{}" >> "$RAW"
                    line=$(echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); c=d.get("connected",0); n=d.get("conns",0); print("%10.0f req/s  p99 %8.1f us  cpu %6.3f us/req  errors %s  connect %.2fs%s" % (d.get("rps",0), d.get("p99_us",0), d.get("server_cpu_us_per_req",0), d.get("errors"), d.get("connect_s",0), "" if c >= n and n else "  UNDER-CONNECTED %s/%s" % (c, n)))')
                    case "$line" in *UNDER-CONNECTED*) UNDER=$((UNDER + 1)) ;; esac
                    printf 'round %s  %-14s conns %-5s size %-4s pipeline %-2s  %s\n' \
                        "$round" "$server" "$conns" "$size" "$pipeline" "$line"
                done
            done
        done
    done
    # Memory per idle connection: RSS is read only once the server holds
    # every one of the IDLE_CONNS connections (its fd count says so), while
    # the client still holds them; then the client is stopped (its sockets
    # close with a FIN: the TIME_WAIT they leave is on the client side,
    # spread over 250 source addresses).
    for server in "${order[@]}"; do
      [ "$IDLE" = 1 ] || break
      # A connection whose handshake the server's overflowing accept queue
      # dropped is established for the client but never reaches the
      # server; when that happens the measurement is taken again (up to 3
      # tries) and, if it never holds them all, flagged.
      for attempt in 1 2 3; do
        start_server "$server"
        sleep 0.2
        before=$(rss_kib "$SERVER_PID")
        fds_before=$(fd_count "$SERVER_PID")
        idle_log="$OUT/idle.log"
        taskset -c $CLIENT_CPU "$HOLDFAST" bench --idle --target "$TARGET" --conns "$IDLE_CONNS" \
            --duration 120s --warmup 0ms --json >/dev/null 2>"$idle_log" &
        idle_pid=$!
        held=0
        for _ in $(seq 300); do # up to 15 s
            held=$(( $(fd_count "$SERVER_PID") - fds_before ))
            [ "$held" -ge "$IDLE_CONNS" ] && break
            sleep 0.05
        done
        sleep 0.2 # let the last accepted connections be registered
        after=$(rss_kib "$SERVER_PID")
        held=$(( $(fd_count "$SERVER_PID") - fds_before ))
        kill "$idle_pid" 2>/dev/null || true
        wait "$idle_pid" 2>/dev/null || true
        idle_pid=
        stop_server
        note=""
        if [ "$held" -lt "$IDLE_CONNS" ]; then
            note="  UNDER-CONNECTED $held/$IDLE_CONNS (try $attempt of 3)"
        fi
        echo "round $round  $server idle: RSS $before KiB -> $after KiB with $held of $IDLE_CONNS connections held by the server ($(tr -d '\n' < "$idle_log"))$note"
        [ "$held" -ge "$IDLE_CONNS" ] && break
      done
      [ "$held" -lt "$IDLE_CONNS" ] && UNDER=$((UNDER + 1))
      echo "{\"kind\":\"idle\",\"server\":\"$server\",\"round\":$round,\"conns\":$IDLE_CONNS,\"held\":$held,\"tries\":$attempt,\"rss_before_kib\":$before,\"rss_after_kib\":$after,\"log\":\"$(tr -d '"\n' < "$idle_log")\"}" >> "$RAW"
    done
done

# Syscalls per request, epoll against io_uring (strace: counts only, never
# timings; its own defaults, not this matrix's knobs).
SYSCALLS_NOTE=""
if [ "$SYSCALLS" = 1 ]; then
    echo "== syscall counts (scripts/syscalls.sh)"
    rm -f "$OUT/syscalls.md"
    if ! env -u CONNS -u SIZE -u PIPELINES -u BACKENDS -u PORT BUILD=0 OUT="$OUT" HOLDFAST="$HOLDFAST" \
            scripts/syscalls.sh; then
        SYSCALLS_NOTE="scripts/syscalls.sh failed (see its output above)"
    fi
fi

elapsed=$(( $(date +%s) - start_time ))
python3 scripts/bench_report.py "$RAW" "$OUT/results.md" "$OUT/rps.svg" "$elapsed" "$DURATION" "$WARMUP" "$ROUNDS"
if [ "$SYSCALLS" = 1 ]; then
    if [ -n "$SYSCALLS_NOTE" ]; then
        printf '### Syscalls per request\n\n**Not measured**: %s.\n' "$SYSCALLS_NOTE" >> "$OUT/results.md"
    else
        cat "$OUT/syscalls.md" >> "$OUT/results.md"
    fi
fi
cat "$OUT/results.md"
echo "wrote $OUT/results.md and $OUT/rps.svg (make bench took ${elapsed}s)"
if [ -n "$SYSCALLS_NOTE" ]; then
    echo "WARNING: $SYSCALLS_NOTE" >&2
fi
if [ "$UNDER" -gt 0 ]; then
    echo "WARNING: $UNDER runs had fewer connections than requested (UNDER-CONNECTED above; marked ⚠ in the table)" >&2
fi
if [ "${SKIP_PROXY:-0}" != 1 ]; then
    echo "== holdfast proxy vs nutcracker (scripts/bench_proxy.sh)"
    scripts/bench_proxy.sh
fi
if [ "${SKIP_CLUSTER:-0}" != 1 ]; then
    echo "== holdfast proxy in front of a Redis Cluster (scripts/bench_cluster.sh)"
    env HOLDFAST="$HOLDFAST" ROUNDS="$ROUNDS" scripts/bench_cluster.sh
    cat "$OUT/cluster.md" >> "$OUT/results.md"
fi
if [ "${SKIP_PUBSUB:-0}" != 1 ]; then
    echo "== Redis Pub/Sub: holdfast vs redis-server (scripts/bench_pubsub.sh)"
    # Its own knobs (PUBSUB_*); the matrix's DURATION and WARMUP are for echo.
    # On epoll (PUBSUB_BACKEND), as `make bench-pubsub` measures it: this
    # build's servers would otherwise default to io_uring.
    env -u DURATION -u WARMUP HOLDFAST="$HOLDFAST" OUT="$OUT" ROUNDS="$ROUNDS" \
        HOLDFAST_BACKEND="${PUBSUB_BACKEND:-epoll}" scripts/bench_pubsub.sh
    cat "$OUT/pubsub.md" >> "$OUT/results.md"
fi
