# holdfast — build, run, test.
#
#   make run    release build, serve echo on 127.0.0.1:7000 (admin 127.0.0.1:7001)
#   make test   format and lint checks (clippy with and without --features uring), then every
#               unit, property and integration test on epoll, then again on io_uring
#               (--features uring) unless the kernel refuses io_uring (one line says so)
#   make test-uring  only the io_uring test run (fails if the kernel refuses io_uring)
#   make fmt    format the code
#   make lint   the import graph (scripts/imports.py: no cycle, no upward import), then clippy on
#               every target, warnings are errors
#   make bench  release build (--features uring), then holdfast epoll and io_uring vs tokio and the
#               floor (minimal C epoll and io_uring echo servers, reference/floor/; pinned,
#               alternated, 3 rounds), then make syscalls; target/bench/results.md
#   make bench-redis  holdfast --protocol resp vs redis-server under redis-benchmark (pinned, 3 rounds)
#   make bench-pubsub Redis Pub/Sub, holdfast vs redis-server under holdfast bench --pubsub
#               (1000 and 10000 subscribers; pinned, 3 rounds; also at the end of make bench)
#   make bench-cluster  holdfast proxy --cluster vs the same proxy over plain upstreams, and
#               redis-benchmark --cluster direct (a local 6-node cluster; also at the end of make bench)
#   make perf   perf record -g of holdfast under a standard load, top of the report
#   make syscalls  syscalls per request, epoll vs io_uring (strace -c on the pinned server)
#   make fuzz   run each decoder's (and the PROXY header parser's) fuzz target for FUZZ_SECONDS
#               (needs cargo-fuzz; installed if missing)

CARGO ?= cargo
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := raw line length resp proxy_header

.PHONY: all build release run test test-uring deps check-fmt lint fmt fuzz clean bench bench-redis bench-pubsub bench-cluster perf syscalls

# Where the `--features uring` build goes. Empty (the default): cargo's own
# target/, shared with the epoll build. Both builds' artifacts live side by
# side there (the feature is part of each crate's hash; only io-uring and
# holdfast itself are compiled twice) and switching between them recompiles
# nothing, while a separate directory compiles every dependency twice.
# Measured on the 2-CPU VM (other builds running, load average 5-8): a
# second `make test` took 29-30 s either way; from clean, 485 s shared
# against 727 s plus 185 s for the uring test targets in a separate one.
# Set it (e.g. target/uring) to keep the two builds apart anyway.
URING_TARGET_DIR ?=
export CARGO URING_TARGET_DIR
URING_CARGO = $(if $(URING_TARGET_DIR),CARGO_TARGET_DIR=$(URING_TARGET_DIR) )$(CARGO)

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

run: release
	./target/release/holdfast serve

# The epoll run decides; the io_uring run follows when the kernel allows it
# (scripts/test_uring.sh probes with `holdfast serve --check --backend uring`).
test: deps check-fmt lint
	$(CARGO) test --all-targets
	$(CARGO) test --doc
	scripts/test_uring.sh --if-available

test-uring: deps
	scripts/test_uring.sh

# Toxiproxy's Python client (PyPI's toxiproxy-python), in a venv of its
# own, drives `holdfast chaos proxy` in tests/it/chaos_proxy.rs.
PYCLIENT := target/pyclient

# The resp integration tests drive the server with redis-cli; the front-door
# tests put a real HAProxy in front of it and drop packets with nft (in a
# network namespace they make with unshare and ip; they need root).
deps:
	command -v redis-cli >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-tools)
	command -v redis-server >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server)
	command -v haproxy >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy)
	command -v systemd-socket-activate >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y systemd)
	command -v nft >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nftables)
	command -v ip >/dev/null && command -v ss >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2)
	test -x $(PYCLIENT)/bin/python && $(PYCLIENT)/bin/python -c 'import toxiproxy' 2>/dev/null || \
		(python3 -m venv $(PYCLIENT) && $(PYCLIENT)/bin/pip install -q toxiproxy-python==0.1.1)

check-fmt:
	$(CARGO) fmt --all -- --check

lint:
	python3 scripts/imports.py
	$(CARGO) clippy --all-targets -- -D warnings
	$(URING_CARGO) clippy --all-targets --features uring -- -D warnings

fmt:
	$(CARGO) fmt --all

# cargo-fuzz needs a nightly compiler for its sanitizer flags. Use the
# nightly toolchain when rustup has one; otherwise let stable accept them.
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then tc=+nightly; boot=; else tc=; boot=RUSTC_BOOTSTRAP=1; fi; \
	for target in $(FUZZ_TARGETS); do \
		echo "== fuzz $$target for $(FUZZ_SECONDS)s"; \
		(cd fuzz && env $$boot cargo $$tc fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS)) || exit 1; \
	done

bench:
	scripts/bench.sh

bench-redis: release
	scripts/bench_redis.sh

bench-pubsub: release
	scripts/bench_pubsub.sh

bench-cluster: release
	scripts/bench_cluster.sh

perf:
	scripts/perf.sh

syscalls:
	scripts/syscalls.sh

clean:
	$(CARGO) clean
