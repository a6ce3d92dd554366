# Callsight: `make demo` runs the main job end to end on the embedded platform; `make test` runs every test.
# Both create the virtual environments they need on a fresh machine (only Python 3.11+ and make required).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .venv-sam
STAMP := $(VENV)/.installed
SAM_STAMP := $(SAM_VENV)/.installed
export SAM_CLI_TELEMETRY := 0
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv lock lock-upgrade lowest openapi demo serve admin test unit lint bench validate build clean

help:
	@echo "make demo      all five processes for the demo clinic end to end on the local platform (DEMO_ARGS=--keep-serving to stay up)"
	@echo "make serve     run the local platform (PORT=8000, DEMO_CALLS=200)"
	@echo "make admin     callsight-admin against the running local platform (ARGS=\"register-client ...\")"
	@echo "make test      lint + every test"
	@echo "make lint      ruff and mypy"
	@echo "make bench     benchmarks (sync rate, status cost, overhead, e2e, PostgreSQL sync, report, long recording; BENCH_ARGS=report)"
	@echo "make validate  sam validate --lint and cfn-lint"
	@echo "make build     sam build (needs python3.12 on PATH)"
	@echo "make lock      uv.lock from pyproject.toml and the requirements generated from it (lock-upgrade: newest)"
	@echo "make lowest    the unit tests on the lowest runtime versions pyproject.toml allows (LOWEST_TESTS=...)"
	@echo "make openapi   functions/api_docs/openapi.json again from the handlers' routes and models (commit it)"

PIP_VERSION := 26.3
PIP := --quiet --disable-pip-version-check
LOWEST := $(VENV)/lowest
LOWEST_TESTS ?= analy or transcri or chat

# Exactly the locked versions (requirements.lock, generated from uv.lock by `make lock`: every package pinned with
# its hashes), then the project itself without resolving anything again.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP) 'pip==$(PIP_VERSION)'
	$(BIN)/pip install $(PIP) -r requirements.lock
	$(BIN)/pip install $(PIP) --no-deps -e .
	touch $@

# uv.lock again from pyproject.toml (current pins kept where they still fit), and the files generated from it
lock: $(STAMP)
	$(BIN)/python -m infra.lock

# the same with the newest versions pyproject.toml allows
lock-upgrade: $(STAMP)
	$(BIN)/python -m infra.lock --upgrade

# the API's OpenAPI description from the handlers' routes and models (tests/unit/test_openapi.py fails on drift)
openapi: $(STAMP)
	$(BIN)/python -m infra.openapi

# the unit tests on the lowest versions pyproject.toml allows for the runtime dependencies (not part of `make test`)
lowest: $(STAMP)
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install $(PIP) -r requirements.lock
	$(LOWEST)/bin/pip install $(PIP) $$($(BIN)/python -m infra.lock --lowest)
	$(LOWEST)/bin/pip list --format=freeze | grep -iE '^(openai|pydantic|pydantic[-_]settings|httpx|aws[-_]lambda[-_]powertools|boto3|psycopg)=='
	PYTHONPATH=layers/callsight $(LOWEST)/bin/pytest -q -p no:cacheprovider tests/unit -k "$(LOWEST_TESTS)"

# SAM CLI pins its own boto3/pydantic versions: it lives in a venv of its own.
$(SAM_STAMP):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check 'aws-sam-cli>=1.130,<2'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m infra.demo $(DEMO_ARGS)

serve: $(STAMP)
	$(BIN)/python -m infra.serve

admin: $(STAMP)
	$(BIN)/python -m infra.admin $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	@for fn in functions/*/; do $(BIN)/mypy --no-error-summary $$fn/app.py || exit 1; done

validate: $(STAMP) $(SAM_STAMP)
	$(SAM_VENV)/bin/sam validate --lint
	$(BIN)/cfn-lint template.yaml

test: lint $(SAM_STAMP)
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest -m "not platform"

bench: $(STAMP)
	$(BIN)/python -m infra.bench $(BENCH_ARGS)

build: $(SAM_STAMP)
	PYENV_VERSION=$${PYENV_VERSION:-3.12.1:3.11.7} $(SAM_VENV)/bin/sam build

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache .local
