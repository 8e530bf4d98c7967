# holdfast — build, run, test.
#
#   make run    release build, serve echo on 127.0.0.1:7000 (admin 127.0.0.1:7001)
#   make test   format and lint checks, then every unit, property and integration test
#   make fmt    format the code
#   make lint   clippy on every target, warnings are errors
#   make bench  release build, then holdfast vs tokio (pinned, alternated, 3 rounds); target/bench/results.md
#   make bench-redis  holdfast --protocol resp vs redis-server under redis-benchmark (pinned, 3 rounds)
#   make perf   perf record -g of holdfast under a standard load, top of the report
#   make fuzz   run each decoder's fuzz target for FUZZ_SECONDS (needs cargo-fuzz; installed if missing)

CARGO ?= cargo
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := raw line length resp

.PHONY: all build release run test deps check-fmt lint fmt fuzz clean bench bench-redis perf

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

run: release
	./target/release/holdfast serve

test: deps check-fmt lint
	$(CARGO) test --all-targets
	$(CARGO) test --doc

# The resp integration tests drive the server with redis-cli.
deps:
	command -v redis-cli >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-tools)
	command -v redis-server >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server)

check-fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --all-targets -- -D warnings

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

perf:
	scripts/perf.sh

clean:
	$(CARGO) clean
