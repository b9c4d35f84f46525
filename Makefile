# `make demo` and `make test` each do ALL the set-up on a fresh machine, then run.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the versions the project is tested with (a CUDA build that also
# runs on CPU); pip finds them in a local wheel store where the machine has one
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.qnas-installed

.PHONY: install test demo bench clean gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/qnas demo

bench: $(STAMP)
	$(VENV)/bin/qnas bench blocks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# issue 14's GPU measurements in one command (≤ 8 min on one NVIDIA GPU; no venv needed there)
GPU_OUT ?= experiments/results/gpu
gpu-check:
	scripts/gpu_check.sh $(GPU_OUT)
