# The two commands: `make run` (everything, from nothing, with demo data) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: install run lint test bench migrate clean-db stop-db browsers

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput

# run_stack migrates, creates the admin, loads demo data, trains a first model, then serves.
run: install
	$(PY) manage.py run_stack --port $(PORT)

# Lint and types (configured in pyproject.toml). mypy's Django plugin imports config.settings, which
# starts the embedded PostgreSQL when DATABASE_URL is unset; a URL that is parsed but never
# connected to keeps a type check from starting (or needing) a database.
MYPY_DATABASE_URL := postgresql://mypy@localhost/mypy

# All three run even when one fails, so one CI log shows every finding; any failure fails the target.
lint: install
	@status=0; \
	echo "ruff check ."; $(VENV)/bin/ruff check . || status=1; \
	echo "ruff format --check ."; $(VENV)/bin/ruff format --check . || status=1; \
	echo "mypy"; DATABASE_URL=$(MYPY_DATABASE_URL) $(VENV)/bin/mypy || status=1; \
	exit $$status

test: install lint
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) -m pytest $(PYTEST_ARGS)

bench: migrate
	$(PY) -m bench $(BENCH_ARGS)

# Not through manage.py: loading the settings would start the server we want to stop.
stop-db: install
	$(PY) -c "from config.embedded_postgres import stop; print('stopped' if stop() else 'not running')"

clean-db: stop-db
	rm -rf .pgdata
