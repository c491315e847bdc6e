# Two commands on a fresh machine: `make run` (the whole pipeline) and `make test`.
# Installs are stamped, so a second `make` with an unchanged pyproject.toml installs nothing.

VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN := $(VENV)/bin
# torch and torchvision are pinned exactly in pyproject.toml: pip takes them from this machine's disk.

.PHONY: run test install install-dev lint clean-venv

run: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@ $(VENV)/.installed

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src stages tests benchmarks

clean-venv:
	rm -rf $(VENV)
