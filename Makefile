# Two commands from a fresh clone:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
# torch is installed first, on its own: on the reference machine these versions come from a
# local wheel cache. Elsewhere, override: make demo TORCH="torch torchvision"
TORCH  ?= torch==2.14.1 torchvision==0.29.1
BIN    := $(VENV)/bin

.PHONY: setup demo test test-slow lint bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,radiomics,onnx,tensorboard,mlflow]"
	touch $@

setup: $(VENV)/.installed  ## create .venv with mtlkit, its test tools and the radiomics, onnx and logger extras

demo: setup  ## train and evaluate the quick config on built-in synthetic data
	$(BIN)/mtl run configs/quick.yaml

test: setup  ## the default test suite (a few minutes on 2 CPU cores; the browser test needs chromium)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: setup  ## long and real-data tests
	$(BIN)/python -m pytest -m slow -q; code=$$?; [ $$code -eq 0 ] || [ $$code -eq 5 ]

lint: setup
	$(BIN)/ruff check core plugins tests benchmarks examples
	$(BIN)/ruff format --check core plugins tests benchmarks examples

bench: setup  ## every figure of docs/performance.md (about 25 minutes on 2 idle CPU cores)
	$(BIN)/python benchmarks/train_overhead.py
	$(BIN)/python benchmarks/busi_throughput.py
	$(BIN)/python benchmarks/checkpoint_writes.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/onnx_settings.py
	$(BIN)/python benchmarks/ddp_check.py
	$(BIN)/python benchmarks/scaling.py

clean-venv:
	rm -rf $(VENV)
