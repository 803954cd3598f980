# Every target that needs Python goes through ./.venv, which `make install` creates or refreshes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# make ui OUT=/some/folder PORT=8081: where `make ui` keeps everything, and its api-server's port.
OUT ?= demo_output
PORT ?= 8080

.PHONY: install lint docs test demo ui bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml setup.cfg
	# torch first, from its own pins: a plain range would pull a multi-GB CUDA build here.
	$(BIN)/pip install "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# ruff, then mypy over the library, the Airflow wing and the DAG (both configured in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The documentation (mkdocs.yml, docs/), built into the ignored build/site; --strict fails on any warning.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

test: lint docs
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python -m video_aesthetics.airflow.demo

ui: install
	$(BIN)/python scripts/ui.py --out "$(OUT)" --port "$(PORT)"

bench: install
	$(BIN)/python bench/scoring.py

clean:
	rm -rf $(VENV) build *.egg-info plugins/*.egg-info
