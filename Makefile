# yinyi: the two commands are `make demo` and `make test`.
# One shared target dir and one profile (release, overflow checks on) so RocksDB compiles once.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/yinyi/target
CARGO ?= cargo
BIN := $(CARGO_TARGET_DIR)/release

.PHONY: demo test deps build fmt clippy unit smoke bench chaos history anchor pg-anchor

## demo: build, then play a compressed outpatient day against a local 3-node cluster and a bank
## simulator, with a leader killed and restarted on the way, and print the summary and the checks
demo: deps build
	$(BIN)/yinyi-loadtest --local 3 --day 60s --visits 6000 --accounts 20000 \
		--bank-faults decline=0.03,lost=0.02,latency=5ms --chaos kill-leader@25s,restart@35s \
		--report target/demo-report

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

## unit: every test; the binaries first, since the cluster and failure tests run the real `yinyi`
unit: build
	$(CARGO) test --release --workspace

## smoke: a short load run against a local 3-node cluster; fails on any invariant violation
smoke: build
	$(BIN)/yinyi-loadtest --local 3 --day 20s --visits 3000 --accounts 2000 \
		--bank-faults decline=0.03,lost=0.02 --chaos kill-leader@8s,restart@12s

bench: deps build
	$(BIN)/yinyi bench --proposers 1,16,256

## chaos: the failure suite's long random schedule (5 minutes; prints its seed, SEED=… replays it)
chaos: deps build
	$(BIN)/yinyi-chaos --duration $(or $(DURATION),5m) $(if $(SEED),--seed $(SEED))

## anchor / pg-anchor: yinyi and PostgreSQL (a synchronous standby on the same box) on the same
## mix — charge 60%, top-up 25%, query 15% — over ACCOUNTS accounts (1,000,000), 32 clients;
## run one right after the other on an idle machine and compare the ratio and CPU per transaction
anchor: deps build
	$(BIN)/yinyi-loadtest --local 3 --mix anchor --clients 32 --accounts $(or $(ACCOUNTS),1000000) \
		--duration $(or $(DURATION),60)s

pg-anchor:
	ACCOUNTS=$(or $(ACCOUNTS),1000000) DURATION=$(or $(DURATION),60) scripts/pg-anchor.sh

## history: issue 17's acceptance at a big hospital's 90 days (2,000,000 accounts, 9,000,000
## journal entries through Raft), then under load a node added by snapshot and a follower down
## for 10 minutes, then a backup after two leader changes restored into a fresh cluster
## (about 40 minutes and 25 GB of disk here; ACCOUNTS=, ENTRIES=, DOWN= make it smaller)
history: deps build
	$(BIN)/yinyi history --accounts $(or $(ACCOUNTS),2000000) --entries $(or $(ENTRIES),9000000) \
		--down $(or $(DOWN),10m) --json target/history.json
