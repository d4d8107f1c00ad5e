# Two set-up commands on a fresh clone: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv and installs what it needs by itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test unit integration browser notebooks bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	env -u RAY_ADDRESS $(BIN)/python scripts/demo.py

# The browser tests and the notebooks run in pytest processes of their own, after the tests' session Ray has
# stopped: each starts its own Ray (in a JupyterLab kernel, or nbval's). The browser tests skip, saying why,
# where no Chromium is installed (.ci/run installs Debian's).
test: $(VENV)/.dev
	env -u RAY_ADDRESS PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest tests --ignore=tests/browser $(PYTEST_ARGS)
	env -u RAY_ADDRESS PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest tests/browser -rs $(PYTEST_ARGS)
	env -u RAY_ADDRESS PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest --nbval-lax notebooks $(PYTEST_ARGS)

# JupyterLab in headless Chromium: the %%serve widget renders, scales with +, shows live request figures.
# Screenshots: BROWSER_SCREENSHOTS=DIR (default: pytest's temporary dir).
browser: $(VENV)/.dev
	env -u RAY_ADDRESS PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest tests/browser -rs \
		$(if $(BROWSER_SCREENSHOTS),--browser-screenshots "$(BROWSER_SCREENSHOTS)") $(PYTEST_ARGS)

notebooks: $(VENV)/.dev
	env -u RAY_ADDRESS PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest --nbval-lax notebooks $(PYTEST_ARGS)

unit: $(VENV)/.dev
	$(BIN)/python -m pytest tests/unit -q

integration: $(VENV)/.dev
	env -u RAY_ADDRESS $(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# Benchmark beside Ray Serve (same Ray version): installs the bench extra and wrk if it can.
bench: $(VENV)/.dev
	$(BIN)/pip install -q -e ".[bench]"
	command -v wrk >/dev/null || (apt-get install -y -qq wrk >/dev/null 2>&1 || echo "wrk not installed: using the Python load generator")
	env -u RAY_ADDRESS $(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
