# The two front-door commands of the README: `make demo` and `make test`.
# Needs only Python 3.10+ with pip and venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c requirements/constraints.txt
# The real CT at hand: next to the checkout, or the workplace's shared data.
DEMO_CASE ?= $(firstword $(wildcard ../shared/data/real/totalsegmentator-example /work/shared/data/real/totalsegmentator-example))
DEMO_OUTPUT ?= demo-output

.PHONY: demo test install install-test install-train clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml requirements/constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e ".[test,train]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-train: install-test

demo: install
	$(BIN)/osteoscreen demo --case $(DEMO_CASE) --output-dir $(DEMO_OUTPUT) --overwrite

test: install-test
	$(BIN)/python -m pytest -q Testing/Python

clean:
	rm -rf $(VENV) $(DEMO_OUTPUT)
