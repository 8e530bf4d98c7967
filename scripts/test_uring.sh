#!/usr/bin/env bash
# The test suite again, on the io_uring driver: `cargo test --features
# uring`. In that build uring is the default backend, so every integration
# test that starts a server runs it on io_uring.
#
# First the uring build's own binary asks the kernel (scripts/uring_probe.sh:
# `holdfast serve --check --backend uring ...` creates a ring with the real
# flags, checks the opcodes, registers a provided buffer ring). If that fails
# (kernel.io_uring_disabled, a seccomp profile, a kernel older than 6.1), a
# test server would quietly fall back to epoll and the run would prove
# nothing about io_uring, so it is not run:
#
#   scripts/test_uring.sh --if-available   (make test) prints one line,
#       "skipping the io_uring test run: <the binary's message>", exits 0
#   scripts/test_uring.sh                  (make test-uring) prints the
#       reason and exits 1: you asked for this run
#
# REQUIRE_URING=1 makes the skip a failure as well (for a CI box known to
# have io_uring, where a skip would hide a broken probe).
#
# The probe's binary is the one the integration tests run
# (CARGO_BIN_EXE_holdfast), built by `cargo test --no-run`: a plain `cargo
# build` would compile several dependencies a second time with other
# features (no dev-dependency unification). So the uring test targets are
# always compiled, even where the kernel then refuses to run them.
#
# Environment: CARGO (cargo); URING_TARGET_DIR (a target directory for the
# uring build; empty, the default: cargo's own, shared with the epoll build,
# see the Makefile).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
if_available=0
case "${1:-}" in
    --if-available) if_available=1 ;;
    "") ;;
    *) echo "usage: $0 [--if-available]" >&2; exit 2 ;;
esac
URING_TARGET_DIR=${URING_TARGET_DIR:-}
if [ -n "$URING_TARGET_DIR" ]; then
    export CARGO_TARGET_DIR=$URING_TARGET_DIR
fi
bin="${CARGO_TARGET_DIR:-target}/debug/holdfast"

echo "== io_uring test run (--features uring${CARGO_TARGET_DIR:+, target dir $CARGO_TARGET_DIR})"
$CARGO test --features uring --all-targets --no-run

if ! reason=$(scripts/uring_probe.sh "$bin"); then
    if [ "$if_available" -eq 1 ] && [ "${REQUIRE_URING:-0}" != 1 ]; then
        echo "skipping the io_uring test run: $reason"
        exit 0
    fi
    echo "the io_uring test run cannot run: $reason" >&2
    exit 1
fi
echo "io_uring probe: $reason"

$CARGO test --features uring --all-targets
$CARGO test --features uring --doc
