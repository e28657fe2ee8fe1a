# Fresh-machine entry points. `make demo` and `make test` set up .venv themselves.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY ?= $(shell command -v python3.11 || command -v python3)
# pip's extra local indexes warn for every package they do not hold; keep the log readable.
QUIET_PIP := grep -v 'is ignored: it is neither a file nor a directory' || true
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

setup: $(STAMP)

# torch first, pinned to the local CPU wheel: installing the rest before it would pull a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | { $(QUIET_PIP); }
	$(BIN)/python -m pip install -q torch==2.13.0 2>&1 | { $(QUIET_PIP); }
	$(BIN)/python -m pip install -q -e '.[dev]' 2>&1 | { $(QUIET_PIP); }
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python jobs/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=30

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
