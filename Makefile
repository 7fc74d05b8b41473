# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

# The server with its dashboard and an embedded worker on ./conveyor.db, with the demo handlers.
run: install
	$(BIN)/python -m examples.enqueue_demo
	$(BIN)/conveyor serve --app examples.demo_app:app

test: install
	bash scripts/ensure-services.sh
	$(BIN)/ruff check src tests examples bench
	$(BIN)/mypy
	CI=$${CI:-true} $(BIN)/pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy

bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/bench_sqlite.py

clean:
	rm -rf $(VENV) build dist *.egg-info
