# Every target that needs Python goes through ./.venv, which `make install` creates or refreshes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml setup.cfg
	# torch first, from its own pins: a plain range would pull a multi-GB CUDA build here.
	$(BIN)/pip install "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python -m video_aesthetics.airflow.demo

bench: install
	$(BIN)/python bench/scoring.py

clean:
	rm -rf $(VENV) build *.egg-info plugins/*.egg-info
