#!/usr/bin/env bash
# scripts/uring_probe.sh BINARY: can this kernel run BINARY's io_uring driver?
#
# Runs `BINARY serve --check --backend uring --listen 127.0.0.1:0 --admin off`,
# which creates a ring with the real flags, checks the opcodes and registers
# a provided buffer ring, then exits. Prints one line on stdout either way:
# the binary's own line (`settings ok; backend uring`) and exit 0, or the
# reason it cannot (the first line the binary wrote on stderr) and exit 1.
set -euo pipefail

bin=${1:?usage: $0 BINARY}
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
status=0
timeout 30 "$bin" serve --check --backend uring --listen 127.0.0.1:0 --admin off \
    </dev/null >"$out" 2>"$err" || status=$?
if [ "$status" -eq 0 ]; then
    line=$(head -n1 "$out")
    if [[ "$line" == *uring* ]]; then
        echo "$line"
        exit 0
    fi
    # A probe that succeeds must name the backend it probed.
    echo "the probe exited 0 but printed '$line', not backend uring"
    exit 1
fi
reason=$(grep -m1 -v '^[[:space:]]*$' "$err" || true)
if [ "$status" -eq 124 ]; then
    reason="the probe did not finish within 30 s"
elif [ -z "$reason" ]; then
    reason="the probe exited $status without a message"
fi
echo "$reason (exit $status)"
exit 1
