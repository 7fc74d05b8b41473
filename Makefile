# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-run run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Everything: the backends' drivers, the HTTP server and the test and lint toolset.
install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

# Only what running the demo needs: the HTTP server and dashboard (the demo's store is
# SQLite, in the standard library). PORT=8001 make run if 8000 is taken.
install-run: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[api]'

# The server with its dashboard and an embedded worker on ./conveyor.db, with the demo handlers.
PORT ?= 8000
run: install-run
	$(BIN)/python -m examples.enqueue_demo
	$(BIN)/conveyor serve --app examples.demo_app:app --port $(PORT)

# Installs PostgreSQL, Redis and Chromium with apt when missing (Debian/Ubuntu).
test: install
	bash scripts/ensure-services.sh
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy
	CI=$${CI:-true} $(BIN)/pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy

bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/bench_sqlite.py

clean:
	rm -rf $(VENV) build dist *.egg-info
