# yinyi: the two commands are `make demo` and `make test`.
# One shared target dir and one profile (release, overflow checks on) so RocksDB compiles once.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/yinyi/target
CARGO ?= cargo
BIN := $(CARGO_TARGET_DIR)/release

.PHONY: demo test deps build fmt clippy unit smoke bench

## demo: build, then start a local 3-node cluster and walk it through a patient's visit and a leader failure
demo: deps build
	$(BIN)/yinyi demo

## test: formatting, lints, every test and a short load run, in the one release profile
test: deps fmt clippy unit smoke

deps:
	@scripts/ensure-deps.sh

build:
	$(CARGO) build --release --workspace --bins

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --release --workspace

## smoke: a short load run against a local 3-node cluster; fails on any invariant violation
smoke: build
	$(BIN)/yinyi-loadtest --local 3 --day 20s --visits 3000 --patients 300

bench: deps build
	$(BIN)/yinyi bench --proposers 1,16,256
