# Two entry points (see README): `make serve` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[all]'
	touch $(STAMP)

.PHONY: setup serve test
setup: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/squeezer serve $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
