# One way to run everything; CI runs `make test` too.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test check lint bench bench-quick bench-soak bench-retention bench-pg bench-nats bench-console bench-api bench-metrics bench-big bench-fleet clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev,bench,nats,postgres]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install iotpush with its tools

run: $(STAMP)  ## serve on 127.0.0.1:8080, keeping everything in ./iotpush.db
	$(VENV)/bin/iotpush serve

test: $(STAMP)  ## lint, type-check and run the whole test suite
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest

check: $(STAMP)  ## lint and type-check only
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)  ## the benchmark: iotpush vs bare ASGI vs the vendor pattern, 3 rounds
	$(PY) benchmarks/run.py

bench-quick: $(STAMP)  ## a few seconds per config, for development
	$(PY) benchmarks/run.py --quick

bench-pg: $(STAMP)  ## iotpush on PostgreSQL, one process and two sharing the port, vs bare ASGI
	$(PY) benchmarks/run.py --configs iotpush-pg,iotpush-pg2,baseline

bench-nats: $(STAMP)  ## iotpush with and without the NATS JetStream sink, vs bare ASGI
	$(PY) benchmarks/run.py --configs iotpush,iotpush-nats,baseline

bench-console: $(STAMP)  ## the console's pages on a store of 1M entries: p50 and p99
	$(PY) -m benchmarks.console --entries 1000000 --rounds 300

bench-metrics: $(STAMP)  ## iotpush with /metrics scraped every second vs --no-metrics, alternated
	$(PY) benchmarks/run.py --configs iotpush,iotpush-nometrics --rounds 6

bench-big: $(STAMP)  ## ingest on a store of 2M entries vs an empty one, alternated: ok/s, CPU, ratio
	$(PY) -m benchmarks.bigstore --entries 2000000

bench-fleet: $(STAMP)  ## the same with 300k devices in the store and in the load
	$(PY) -m benchmarks.bigstore --entries 2000000 --devices 300000

bench-soak: $(STAMP)  ## iotpush alone, 5 min at half its max rate: memory growth
	$(PY) benchmarks/run.py --soak 300

bench-retention: $(STAMP)  ## 3 min soaks at 500/s of the lifecycle mix: retention 30s with finished records kept 30s, kept forever, and retention off: store size, RSS, p99
	$(PY) benchmarks/run.py --soak 180 --rate 500 --lifecycles --retention 30s --finished-retention 30s --purge-interval 5s --out benchmarks/results/retention-on.json
	$(PY) benchmarks/run.py --soak 180 --rate 500 --lifecycles --retention 30s --finished-retention 0 --purge-interval 5s --out benchmarks/results/retention-unfinished.json
	$(PY) benchmarks/run.py --soak 180 --rate 500 --lifecycles --retention 0 --out benchmarks/results/retention-off.json

bench-api: $(STAMP)  ## the query API on 1M entries, 100k devices: p50/p99 per endpoint, SQLite and PostgreSQL
	$(PY) benchmarks/api_scale.py --store sqlite
	$(PY) benchmarks/api_scale.py --store postgres

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
