# The two commands that do everything on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# pytest-xdist: the suite runs in TEST_WORKERS processes (2: this machine's and CI's cores), each
# test module whole on one worker (--dist loadfile: its module-scoped servers start once, not once
# per worker). TEST_WORKERS=0 runs it in pytest's own process, one test after another.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile

.PHONY: install run test test-slow lint typecheck unit bench bench-quick bench-full soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/clarion serve --demo

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q -m "not slow" $(XDIST)

# The whole-system runs kept out of `make test` (clusters, outages, every docs block, the OpenAPI
# fuzzer); CI runs them after `make test`, one module after another: SLOW_WORKERS=2 runs two
# side by side (their kill/failover timings then share the cores).
SLOW_WORKERS ?= 0
test-slow: install
	scripts/ensure-browser
	scripts/ensure-nginx
	$(BIN)/pytest -q -m slow -n $(SLOW_WORKERS) --dist loadfile --durations=10

test: install lint typecheck
	scripts/ensure-browser
	scripts/ensure-axe
	scripts/ensure-nginx
	scripts/ensure-promtool
	$(BIN)/pytest -q -m "not slow" $(XDIST) --durations=15

# bench/history.py measures on PostgreSQL too (fresh databases, dropped after; loaded stores of
# 100,000 notifications and more are kept as template databases for the next run).
BENCH_POSTGRES ?= postgresql://postgres@127.0.0.1:5432

# Under 15 minutes: every peer's fan-out, memory and steady figures, Clarion's durable, transport
# and latency scenarios, and the history bench at 1,000 and 10,000 on SQLite (its plot, drawn
# from 100,000 stored and more, is left to bench-full).
bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/history.py --sizes 1000,10000 --plots none

bench-quick: install
	$(BIN)/python bench/run.py --quick
	$(BIN)/python bench/history.py --quick

# What does not fit in 15 minutes (an hour or more in all): the Node peers' paused variants,
# the connect storms and the 40,000-connection capacity run, and the history bench up to
# 1,000,000 notifications stored, on PostgreSQL too.
bench-full: install
	$(BIN)/python bench/run.py --peers all --scenarios all
	$(BIN)/python bench/history.py --sizes 1000,10000,100000,1000000 --postgres $(BENCH_POSTGRES)

# An hour of 10,000 connections, 5% reconnecting each minute, 200 publishes/s and a slowloris
# and idle-socket background; fails unless every acknowledged notification arrived exactly once.
soak: install
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
