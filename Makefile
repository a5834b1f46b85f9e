# Two commands on a fresh machine (see README): `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev run test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt

# Installs, creates or upgrades the database (SQLite under instance/ unless
# DATABASE_URL is set) and serves Parley on http://127.0.0.1:5000.
run: install
	$(BIN)/flask --app app db upgrade heads
	$(BIN)/flask --app app run --host 127.0.0.1 --port $${PORT:-5000}

# Lint, then the whole suite on SQLite and, when PostgreSQL answers on
# 127.0.0.1:5432 (or PARLEY_TEST_POSTGRES_URL), again on PostgreSQL.
test: install-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
