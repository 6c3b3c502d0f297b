# credloader — the two commands a new machine needs are `make demo` and
# `make test`; both install what they need first (Debian, as root).

CARGO ?= cargo
# Honours CARGO_TARGET_DIR, like cargo itself.
RELEASE_BIN := $(or $(CARGO_TARGET_DIR),target)/release/credloader
# `credloader sync` from AWS Secrets Manager (docs/aws.md). The plain
# `cargo build` stays lean; release builds and the test suite include it.
FEATURES := --features aws

.PHONY: all build release demo test test-unit test-e2e test-releases release-roots-background test-long fuzz-smoke lint deps clean deb docs bench

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release $(FEATURES)

deps:
	@tests/deps.sh

## The main job end to end on a real systemd in a throwaway namespace.
demo: deps release
	tests/testbed/demo.sh $(RELEASE_BIN)

## Everything: formatting, lints, unit, integration and end-to-end tests,
## the end-to-end suites once more on each of E2E_RELEASES.
test: deps release-roots-background lint fuzz-smoke
	$(CARGO) test --all-targets $(FEATURES)
	$(MAKE) test-releases

## The Debian releases whose systemd the e2e suites also boot, besides the
## host's own root (Debian 12, systemd 252): see docs/testbed.md.
E2E_RELEASES ?= debian13
## What runs on each of them: every tests/e2e*.rs (a new one joins on its
## own), the bed's own tests and the units' exposure; not e2e_sync (its moto
## venv is built for the host's Python) nor lintian (a host tool: its verdict
## does not depend on the bed). The journal leak test runs there too.
MATRIX_SKIP := e2e_sync
MATRIX_TESTS := $(filter-out $(MATRIX_SKIP),$(basename $(notdir $(wildcard tests/e2e*.rs)))) \
	testbed_smoke hardening_units

## Starts building the roots of E2E_RELEASES that are missing, in the
## background (~2 minutes, mostly download and unpacking), so that a cold
## `make test` does not wait for them later: test-releases takes the same
## lock (tests/testbed/image.sh) and finds them built, or reports why not.
release-roots-background: deps
	@mkdir -p target
	@for r in $(E2E_RELEASES); do tests/testbed/image.sh path $$r; done \
	  >target/testbed-roots.log 2>&1 </dev/null &

## The e2e suites on each of E2E_RELEASES (its root is built on first use
## under target/testbed-roots/, ~2 minutes, then kept).
test-releases: deps
	@for r in $(E2E_RELEASES); do \
	  tests/testbed/image.sh path $$r >/dev/null || exit 1; \
	  echo "== the e2e suites on $$r"; \
	  CREDLOADER_TESTBED_RELEASE=$$r $(CARGO) test $(FEATURES) \
	    $(addprefix --test ,$(MATRIX_TESTS)) -- --skip lintian || exit 1; \
	  CREDLOADER_TESTBED_RELEASE=$$r $(CARGO) test $(FEATURES) \
	    --test hardening_leaks the_journal || exit 1; \
	done

## Only the unit tests and the --root integration tests (no systemd boot).
test-unit: deps
	$(CARGO) test --lib --test apply

## Only the tests that boot a real systemd.
test-e2e: deps
	$(CARGO) test --test e2e --test e2e_unitfile --test e2e_overrides --test testbed_smoke

## The hardening suite at full length (docs/threat-model.md): 1,000 crash
## kills and ten times the generated inputs. Fuzzing: see fuzz/README.md.
## Also the e2e suites on Debian testing (the newest systemd Debian has),
## as an early warning: a failure there is reported, not fatal.
test-long: deps
	CREDLOADER_LONG=1 $(CARGO) test --test 'hardening_*'
	$(MAKE) fuzz-smoke FUZZ_SECONDS=300 FUZZ_BUILD=-O
	@$(MAKE) test-releases E2E_RELEASES=testing || \
	  echo "make test-long: WARNING: the e2e suites FAILED on Debian testing" \
	    "(an early warning about the next systemd, not a failure of this run; see above)" >&2

## A bounded run of each cargo-fuzz target (fuzz/README.md); stable acts as
## nightly for it with RUSTC_BOOTSTRAP=1. FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 10
## The smoke run builds unoptimized and without AddressSanitizer (safe Rust;
## libFuzzer's coverage guidance stays): ~3 minutes less CI than -O with ASAN,
## which the long run keeps.
FUZZ_BUILD ?= --dev -s none
## Each target's raw output (libFuzzer's progress lines, the build) goes to
## FUZZ_LOGS/TARGET.log and is printed only when the target fails; a run
## that passes says one line.
FUZZ_LOGS ?= $(abspath $(or $(CARGO_TARGET_DIR),target))/fuzz-logs
fuzz-smoke: deps
	@mkdir -p $(FUZZ_LOGS)
	@cd fuzz && for t in config_loader env_round_trip env_parse; do \
	  log=$(FUZZ_LOGS)/$$t.log; \
	  if RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(FUZZ_BUILD) $$t -- \
	      -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 >$$log 2>&1; then \
	    echo "fuzz $$t: ok, $$(grep -o 'Done [0-9]* runs' $$log | tail -n 1 | cut -d' ' -f2) runs in $(FUZZ_SECONDS) s"; \
	  else \
	    echo "fuzz $$t: FAILED; its output ($$log):"; cat $$log; exit 1; \
	  fi; \
	done

## Speed and memory against the manual procedure (see docs/performance.md).
bench: deps
	@[ -x /usr/bin/time ] || apt-get install -y -qq time
	$(CARGO) bench --bench fleet

## The Debian package in target/debian/, checked with lintian (installs
## cargo-deb and lintian first if they are missing).
deb:
	packaging/build-deb.sh --lintian -- $(FEATURES)

## docs/cli.md from the CLI definition (tests/docs.rs checks it is current),
## with the features `make test` builds, so both see the same commands.
docs:
	$(CARGO) build $(FEATURES)
	packaging/cli-reference.sh target/debug/credloader > docs/cli.md

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --quiet $(FEATURES) -- -D warnings

clean:
	$(CARGO) clean
