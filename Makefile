# Two entry points for a fresh machine: `make run` and `make test` (see README.md).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
# `make run` is the one-box default: SQLite in instance/, a secret key generated once and
# kept in instance/. Set TSD_ENV=production and TSD_SECRET_KEY for a real deployment.
export TSD_ENV ?= development

.PHONY: run test install install-test lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/activate
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[test]'

# The instance folder holds the SQLite database (emails, password hashes, the audit trail)
# and the secret key: only you may read it. umask 077 keeps new files private; chmod closes
# a folder that an older `make run` left readable by everyone.
INSTANCE_DIR := $${TSD_INSTANCE_PATH:-instance}

run: install
	umask 077 && mkdir -p "$(INSTANCE_DIR)" && chmod go= "$(INSTANCE_DIR)" && \
	  $(BIN)/flask --app tsd_server db upgrade
	umask 077 && exec $(BIN)/gunicorn --config gunicorn.conf.py --bind $(HOST):$(PORT) wsgi:app

lint: install-test
	$(BIN)/ruff check tsd_server tsd_agent tests bench

# Runs on SQLite and on PostgreSQL (a fresh database per run on 127.0.0.1:5432).
test: install-test lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The tests against the oldest dependency versions setup.cfg allows, in a venv of their own
# (/tmp/tsd-lowest-venv): not part of `make test`; see .ci/test-lowest for when to run it.
.PHONY: test-lowest
test-lowest:
	bash .ci/test-lowest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
