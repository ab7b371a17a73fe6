# Everything runs inside .venv, created on first use from the python3.11 (or python3) on PATH.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test unit integration chaos bench bench-scheduling lint format clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/corral up

test: $(STAMP)
	$(BIN)/python -m pytest -m "not bench" -q

unit: $(STAMP)
	$(BIN)/python -m pytest -m unit -q

integration: $(STAMP)
	$(BIN)/python -m pytest -m "integration or chaos" -q

# LiteLLM is a peer the scheduling benchmark compares against, not a dependency: installed here only.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet litellm || echo "litellm did not install: the scheduling benchmark leaves it out"
	$(BIN)/python -m bench

bench-scheduling: $(STAMP)
	$(BIN)/python -m pip install --quiet litellm || echo "litellm did not install: the scheduling benchmark leaves it out"
	$(BIN)/python -m bench --scheduling

lint: $(STAMP)
	$(BIN)/ruff check api worker common tests bench
	$(BIN)/ruff format --check api worker common tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format api worker common tests bench
	$(BIN)/ruff check --fix api worker common tests bench

clean:
	rm -rf $(VENV) .corral .pytest_cache .mypy_cache .ruff_cache *.egg-info
