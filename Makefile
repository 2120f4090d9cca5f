# Two commands do all the set-up on a fresh CPU-only machine:
#   make demo   - create .venv, install, run the end-to-end demo on the built-in synthetic dataset
#   make test   - create .venv if needed, run the test suite
#   make test-integrations - a second venv (.venv-integrations) with the regular torch build,
#                 torchvision and DeepLabCut 3.0.2; runs tests_integrations/ against them
# TORCH_SPEC pins the CPU build of torch for development and CI only; users install torch as they like.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.posefeed-installed
DEMO_OUT ?= demo-output
# DeepLabCut imports torchvision, whose wheels do not load beside the CPU-only torch of .venv:
# the integration venv takes the regular torch build ("===" keeps pip off the local +cpu wheel).
INTEG_VENV ?= .venv-integrations
INTEG_SPEC ?= "torch===2.13.0" "torchvision===0.28.0" deeplabcut==3.0.2
INTEG_PY := $(INTEG_VENV)/bin/python
INTEG_STAMP := $(INTEG_VENV)/.posefeed-installed

.PHONY: venv test test-gpu test-integrations demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

$(INTEG_STAMP): pyproject.toml
	test -x $(INTEG_PY) || $(PYTHON) -m venv $(INTEG_VENV)
	$(INTEG_PY) -m pip install -q --disable-pip-version-check $(INTEG_SPEC)
	$(INTEG_PY) -m pip install -q --disable-pip-version-check -e ".[dev,deeplabcut]"
	touch $(INTEG_STAMP)

test-integrations: $(INTEG_STAMP)
	$(INTEG_PY) -m pytest -q tests_integrations

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu

# on a GPU machine: GPU tests, posefeed bench --device gpu --train (JPEG / PNG, uncached, host
# and device cache), codec benchmarks, host cost; docs/gpu-check.{json,md}. Says what it skipped.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py --out docs

demo: $(STAMP)
	$(VENV)/bin/posefeed demo --out $(DEMO_OUT)

bench: $(STAMP)
	$(VENV)/bin/posefeed bench synthetic

clean:
	rm -rf $(VENV) $(INTEG_VENV) $(DEMO_OUT) .pytest_cache build *.egg-info
