# Every target sets up what it needs; see README.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= examples/responder.yml

.PHONY: venv test demo lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check responder tests
	$(VENV)/bin/ruff format --check responder tests
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

demo: $(STAMP)
	$(VENV)/bin/responder serve --config $(CONFIG)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
