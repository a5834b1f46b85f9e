# Two commands on a fresh machine (see README): `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000

.PHONY: install install-dev run test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Each install leaves a stamp: pip runs again only when a requirements file changed.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Installs (when requirements changed), creates or upgrades the database (SQLite
# under instance/ unless DATABASE_URL is set) and serves Parley on
# http://127.0.0.1:$(PORT) (PORT=8000 make run for another port). With no model
# configured, llm steps are answered by the built-in scripted demo model.
# Ctrl-C stops the server, and make with it, quietly: the server runs as a job of
# its own on a terminal (bash's `set -m`), so Ctrl-C reaches it and not make
# (piped, as in `make run | tee log`, Ctrl-C stops both the usual way).
run: install
	$(BIN)/flask --app app db upgrade heads
	@echo "Parley on http://127.0.0.1:$(PORT)/  (Ctrl-C to stop)"
	@bash -c 'if [ -t 0 ] && [ -t 1 ]; then set -m; fi; $(BIN)/flask --app app run --host 127.0.0.1 --port $(PORT); status=$$?; \
	  if [ $$status -eq 0 ] || [ $$status -eq 130 ] || [ $$status -eq 143 ]; then echo "Stopped."; exit 0; fi; \
	  exit $$status'

# Lint, then the whole suite on SQLite and, when PostgreSQL answers on
# 127.0.0.1:5432 (or PARLEY_TEST_POSTGRES_URL), again on PostgreSQL.
test: install-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
