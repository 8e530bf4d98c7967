#!/usr/bin/env bash
# Redis Pub/Sub: holdfast --protocol resp against redis-server, both driven
# by `holdfast bench --pubsub` (every message checked).
#
#   scripts/bench_pubsub.sh          (or: make bench-pubsub; also at the end of make bench)
#
# Servers: `holdfast` (one shard: --threads 1, pinned to CPU 0),
# `redis` (redis-server, persistence off, pinned to CPU 0) and, at the
# largest subscriber count only, `holdfast2` (--threads 2 on CPUs 0 and 1:
# on a 2-CPU machine its second shard shares CPU 1 with the load
# generator). The load generator runs on CPU 1. For each subscriber count
# (1000 and 10000), each round (3, the server order rotated every round)
# and each server, three fresh servers:
#
#   idle   RSS of the server, then N subscribers connect and SUBSCRIBE
#          (holdfast bench --pubsub --idle); once every subscription is
#          confirmed (the client's "holding N subscribed idle connections"),
#          RSS again: (after - before) / N is the RSS per idle subscriber.
#   flat   N subscribers over PUBSUB_CHANNELS channels, PUBSUB_PUBLISHERS
#          publishers flat out, each with PUBSUB_PIPELINE messages in flight
#          (a message is in flight until every subscriber of its channel
#          has it): delivered messages/s, and the server's CPU time
#          (utime+stime, /proc/PID/stat, over the measured window) per
#          delivered message.
#   paced  the same connections at a fixed rate of PUBSUB_PACED deliveries
#          a second (--rate PUBSUB_PACED x channels / N messages a second):
#          publish-to-delivery p99 below saturation.
#
# Before the rounds each server gets one SUBSCRIBE; one that answers with
# an error has no pub/sub: its rows say so (with the reply) and are never
# run. A run whose checks fail (a message missing, duplicated, out of
# order, corrupt, a wrong receiver count, an error) is marked ✗ in the
# table with its counts, never averaged in.
#
# Writes target/bench/pubsub.md (medians over rounds, ratios to
# redis-server) and target/bench/pubsub_raw.jsonl (every run's JSON).
#
# Settings (environment): ROUNDS (3), DURATION (2s), WARMUP (500ms),
# PUBSUB_SUBSCRIBERS ("1000 10000"), PUBSUB_CHANNELS (10),
# PUBSUB_PUBLISHERS (4), PUBSUB_PIPELINE (8), PUBSUB_SIZE (64),
# PUBSUB_PACED (20000), PUBSUB_SHARDS2 (10000: the subscriber counts the
# two-shard server runs at; empty for none), HOLDFAST (the binary,
# target/release/holdfast), HOLDFAST_BACKEND (the build's default),
# SERVER_CPU (0), CLIENT_CPU (1), OUT (target/bench). Ports 7380-7389.

set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-2s}
WARMUP=${WARMUP:-500ms}
read -r -a COUNTS <<< "${PUBSUB_SUBSCRIBERS:-1000 10000}"
CHANNELS=${PUBSUB_CHANNELS:-10}
PUBLISHERS=${PUBSUB_PUBLISHERS:-4}
PIPELINE=${PUBSUB_PIPELINE:-8}
SIZE=${PUBSUB_SIZE:-64}
PACED=${PUBSUB_PACED:-20000}
SHARDS2=${PUBSUB_SHARDS2-10000}
HOLDFAST=${HOLDFAST:-target/release/holdfast}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-target/bench}
RAW=$OUT/pubsub_raw.jsonl

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench_pubsub.sh needs $1 ($2)" >&2; exit 1; }; }
need redis-server "make deps"
need taskset "apt-get install util-linux"
need python3 "apt-get install python3"
[ -x "$HOLDFAST" ] || cargo build --release --bin holdfast
if [ "$(nproc)" -lt 2 ]; then
    echo "bench_pubsub.sh needs 2 CPUs (servers on CPU $SERVER_CPU, load on CPU $CLIENT_CPU)" >&2
    exit 1
fi
largest=0
for n in "${COUNTS[@]}"; do [ "$n" -gt "$largest" ] && largest=$n; done
# The client holds N + publishers sockets, the server as many.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((largest + PUBLISHERS + 200)) ]; then
    echo "bench_pubsub.sh: RLIMIT_NOFILE $(ulimit -n) is too low for $largest subscribers" >&2
    exit 1
fi
mkdir -p "$OUT"
: > "$RAW"
backend=()
[ -n "${HOLDFAST_BACKEND:-}" ] && backend=(--backend "$HOLDFAST_BACKEND")
BACKEND=$("$HOLDFAST" serve --check --protocol resp --listen 127.0.0.1:0 --admin off "${backend[@]}" 2>&1 \
    | sed -n 's/.*backend \([a-z_]*\).*/\1/p' | head -1)

server_pid=
client_pid=
TMP=$(mktemp -d)
cleanup() {
    if [ -n "$client_pid" ]; then kill "$client_pid" 2>/dev/null || true; fi
    if [ -n "$server_pid" ]; then kill -9 "$server_pid" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=7389
free_port() { # sets PORT to the next of 7380-7389 nothing listens on
    local tries
    for tries in $(seq 10); do
        PORT=$(( PORT >= 7389 ? 7380 : PORT + 1 ))
        ( { exec 3<>"/dev/tcp/127.0.0.1/$PORT"; } 2>/dev/null ) || return 0
    done
    echo "bench_pubsub.sh: ports 7380-7389 are all taken" >&2
    exit 1
}

# first_reply PORT COMMAND...: the first line the server answers COMMAND
# with (RESP multibulk), or nothing within 2 s.
first_reply() {
    local port=$1 arg line=""
    shift
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 0
    {
        printf '*%d\r\n' $#
        for arg in "$@"; do printf '$%d\r\n%s\r\n' ${#arg} "$arg"; done
    } >&3
    IFS= read -r -t 2 line <&3 || true
    exec 3<&- 3>&-
    printf '%s' "${line%$'\r'}"
}

start_server() { # NAME → server_pid, PORT
    free_port
    case $1 in
    holdfast)
        taskset -c "$SERVER_CPU" "$HOLDFAST" serve --protocol resp --threads 1 \
            --listen "127.0.0.1:$PORT" --admin off --max-memory 0 --log-level warn \
            "${backend[@]}" &
        ;;
    holdfast2)
        taskset -c "$SERVER_CPU,$CLIENT_CPU" "$HOLDFAST" serve --protocol resp --threads 2 \
            --listen "127.0.0.1:$PORT" --admin off --max-memory 0 --log-level warn \
            "${backend[@]}" &
        ;;
    redis)
        # The load connects from 127.0.0.1 to 127.0.0.250: protected mode
        # would refuse all but the first.
        taskset -c "$SERVER_CPU" redis-server --port "$PORT" --bind 127.0.0.1 \
            --save '' --appendonly no --protected-mode no --maxclients 19000 \
            --daemonize no --loglevel warning >/dev/null &
        ;;
    esac
    server_pid=$!
    for _ in $(seq 200); do
        [ "$(first_reply "$PORT" PING)" = "+PONG" ] && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.025
    done
    echo "bench_pubsub.sh: $1 did not answer PING on port $PORT" >&2
    exit 1
}

stop_server() {
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

record() { # KIND SERVER ROUND N JSON
    echo "{\"kind\":\"$1\",\"server\":\"$2\",\"round\":$3,\"n\":$4,${5#\{}" >> "$RAW"
}

# One SUBSCRIBE per server: an error reply means no pub/sub.
SERVERS=(holdfast redis)
[ -n "$SHARDS2" ] && SERVERS+=(holdfast2)
RUN=()
for server in "${SERVERS[@]}"; do
    start_server "$server"
    reply=$(first_reply "$PORT" SUBSCRIBE hfbench:probe)
    stop_server
    if [ "${reply:0:1}" = "*" ]; then
        RUN+=("$server")
    else
        echo "$server: no pub/sub (SUBSCRIBE answered: ${reply:-nothing})"
        reason=$(printf '%s' "${reply:-no reply}" | tr -d '"\\' | cut -c1-120)
        echo "{\"kind\":\"skip\",\"server\":\"$server\",\"reply\":\"$reason\"}" >> "$RAW"
    fi
done

idle_run() { # SERVER ROUND N
    start_server "$1"
    sleep 0.2
    local before after log=$TMP/idle.log held
    before=$(rss_kib "$server_pid")
    taskset -c "$CLIENT_CPU" "$HOLDFAST" bench --pubsub --idle --target "127.0.0.1:$PORT" \
        --subscribers "$3" --channels "$CHANNELS" --duration 120s --warmup 0ms --json \
        >"$TMP/idle.json" 2>"$log" &
    client_pid=$!
    for _ in $(seq 600); do # up to 30 s
        grep -q '^holding' "$log" && break
        kill -0 "$client_pid" 2>/dev/null || break
        sleep 0.05
    done
    sleep 0.5 # let the server settle after the last confirmation
    after=$(rss_kib "$server_pid")
    held=$(sed -n 's/^holding \([0-9]*\) subscribed.*/\1/p' "$log")
    kill "$client_pid" 2>/dev/null || true
    wait "$client_pid" 2>/dev/null || true
    client_pid=
    stop_server
    echo "round $2  $1 idle: RSS $before KiB -> $after KiB with ${held:-0} of $3 subscribed ($(tr -d '\n' < "$log"))"
    record idle "$1" "$2" "$3" "{\"held\":${held:-0},\"rss_before_kib\":$before,\"rss_after_kib\":$after}"
}

load_run() { # KIND SERVER ROUND N FLAGS...
    local kind=$1 server=$2 round=$3 n=$4 json code=0
    shift 4
    start_server "$server"
    json=$(taskset -c "$CLIENT_CPU" "$HOLDFAST" bench --pubsub --target "127.0.0.1:$PORT" \
        --subscribers "$n" --channels "$CHANNELS" --publishers "$PUBLISHERS" --size "$SIZE" \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$server_pid" --json "$@" \
        2>"$TMP/load.err") || code=$?
    stop_server
    if [ -z "$json" ]; then
        json="{\"passed\":false,\"first_error\":\"$(tr -d '"\\\n' < "$TMP/load.err")\"}"
    fi
    record "$kind" "$server" "$round" "$n" "{\"exit\":$code,${json#\{}"
    echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("round %s  %-9s %-5s %5s subs  %10.0f msg/s  p99 %9.1f us  cpu %7.3f us/msg  %s" % (sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], d.get("delivered_per_s",0), d.get("p99_us",0), d.get("server_cpu_us_per_msg",0), "ok" if d.get("passed") else "FAILED " + str({k: d[k] for k in ("missing","duplicates","out_of_order","corrupt","wrong_channel","receivers_mismatch","errors") if d.get(k)}) + " " + d.get("first_error","")))' \
        "$round" "$server" "$kind" "$n"
}

start_time=$(date +%s)
echo "== Redis Pub/Sub: ${RUN[*]:-no server with pub/sub}; $ROUNDS rounds, $DURATION after $WARMUP warm-up"
for round in $(seq "$ROUNDS"); do
    for n in "${COUNTS[@]}"; do
        rate=$(( PACED * CHANNELS / n ))
        [ "$rate" -ge 1 ] || rate=1
        order=()
        for i in "${!RUN[@]}"; do
            server=${RUN[$(( (i + round - 1) % ${#RUN[@]} ))]}
            if [ "$server" = holdfast2 ] && [[ " $SHARDS2 " != *" $n "* ]]; then continue; fi
            order+=("$server")
        done
        for server in "${order[@]}"; do
            idle_run "$server" "$round" "$n"
            load_run flat "$server" "$round" "$n" --pipeline "$PIPELINE"
            load_run paced "$server" "$round" "$n" --rate "$rate"
        done
    done
done
elapsed=$(( $(date +%s) - start_time ))

python3 - "$RAW" "$OUT/pubsub.md" "$elapsed" <<EOF
import json, statistics, sys
raw, out, elapsed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(line) for line in open(raw) if line.strip()]
skipped = {r["server"]: r["reply"] for r in rows if r["kind"] == "skip"}
counts = [int(n) for n in "${COUNTS[*]}".split()]
shards2 = [int(n) for n in "${SHARDS2}".split()]
label = {"holdfast": "holdfast (1 shard)", "redis": "redis-server", "holdfast2": "holdfast (2 shards)"}

def runs(kind, server, n):
    return [r for r in rows if r["kind"] == kind and r["server"] == server and r["n"] == n]

def med(values):
    return statistics.median(values) if values else None

def load(kind, server, n, key):
    """Median over the rounds that passed; the failed ones, described."""
    good = [r for r in runs(kind, server, n) if r.get("passed")]
    bad = [r for r in runs(kind, server, n) if not r.get("passed")]
    value = med([float(r.get(key, 0)) for r in good])
    failures = []
    for r in bad:
        counts_ = {k: r[k] for k in ("missing", "duplicates", "out_of_order", "corrupt",
                   "wrong_channel", "receivers_mismatch", "errors") if r.get(k)}
        shown = ", ".join("%s %s" % item for item in counts_.items())
        failures.append("round %s: %s; %s" % (r["round"], shown, r.get("first_error", "")))
    return value, failures

def rss_per_sub(server, n):
    vals = [(r["rss_after_kib"] - r["rss_before_kib"]) * 1024 / n
            for r in runs("idle", server, n) if r["held"] >= n]
    return med(vals)

def ratio(value, base, digits=2):
    return "–" if value is None or not base else ("%." + str(digits) + "f×") % (value / base)

def fmt(value, pattern):
    return "–" if value is None else pattern % value

lines = [
    "### Redis Pub/Sub: holdfast vs redis-server (\`holdfast bench --pubsub\`)",
    "",
    "${CHANNELS} channels (subscribers spread evenly), ${PUBLISHERS} publishers, ${SIZE} B messages, "
    "holdfast backend ${BACKEND:-?}; median of ${ROUNDS} rounds, ${DURATION} measured after ${WARMUP} warm-up. "
    "**Delivered msg/s** and **CPU µs/msg** (server utime+stime over the window ÷ messages delivered) "
    "flat out, ${PIPELINE} messages in flight per publisher; **p99** publish-to-delivery at a fixed "
    "${PACED} deliveries/s; **RSS/sub**: server RSS with N subscribed idle connections minus before, ÷ N. "
    "Servers pinned to CPU ${SERVER_CPU} (the 2-shard holdfast to CPUs ${SERVER_CPU},${CLIENT_CPU}), "
    "the load to CPU ${CLIENT_CPU}. Ratios are holdfast ÷ redis-server.",
    "",
    "| subscribers | server | delivered msg/s | CPU µs/msg | p99 µs (paced) | RSS B/sub | msg/s vs redis | CPU vs redis | p99 vs redis | RSS vs redis |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
notes = []
for n in counts:
    base = {
        "rate": load("flat", "redis", n, "delivered_per_s")[0],
        "cpu": load("flat", "redis", n, "server_cpu_us_per_msg")[0],
        "p99": load("paced", "redis", n, "p99_us")[0],
        "rss": rss_per_sub("redis", n),
    }
    for server in ("holdfast", "redis", "holdfast2"):
        if server == "holdfast2" and n not in shards2:
            continue
        if server in skipped:
            text = "holdfast: no pub/sub (SUBSCRIBE refused: %s)" % skipped[server] if server != "redis" \
                else "redis-server: no pub/sub (%s)" % skipped[server]
            lines.append("| %d | %s | %s | | | | | | | |" % (n, label[server], text))
            continue
        rate, bad_rate = load("flat", server, n, "delivered_per_s")
        cpu, _ = load("flat", server, n, "server_cpu_us_per_msg")
        p99, bad_p99 = load("paced", server, n, "p99_us")
        rss = rss_per_sub(server, n)
        mark = " ✗" if bad_rate or bad_p99 else ""
        for failure in bad_rate + bad_p99:
            notes.append("- %s, %d subscribers: ✗ %s" % (label[server], n, failure))
        if rss is None:
            notes.append("- %s, %d subscribers: ⚠ never held every idle subscription" % (label[server], n))
        theirs = server != "redis"
        lines.append("| %d | %s | %s%s | %s | %s | %s | %s | %s | %s | %s |" % (
            n, label[server], fmt(rate, "%.0f"), mark, fmt(cpu, "%.3f"), fmt(p99, "%.0f"),
            fmt(rss, "%.0f"),
            ratio(rate, base["rate"]) if theirs else "", ratio(cpu, base["cpu"]) if theirs else "",
            ratio(p99, base["p99"]) if theirs else "", ratio(rss, base["rss"]) if theirs else ""))
if notes:
    lines += ["", "Runs that failed their checks (left out of the medians):", ""] + notes
    print("WARNING: %d pub/sub runs failed their checks (✗ in the table, listed under it)"
          % sum("✗" in note for note in notes), file=sys.stderr)
lines += ["", "(scripts/bench_pubsub.sh took %ds)" % elapsed, ""]
text = "\n".join(lines)
open(out, "w").write(text)
print(text, end="")
EOF
echo "wrote $OUT/pubsub.md and $RAW"
