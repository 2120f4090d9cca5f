# Two commands do all the set-up on a fresh CPU-only machine:
#   make demo   - create .venv, install, run the end-to-end demo on the built-in synthetic dataset
#   make test   - create .venv if needed, run the test suite
# TORCH_SPEC pins the CPU build of torch for development and CI only; users install torch as they like.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.posefeed-installed
DEMO_OUT ?= demo-output

.PHONY: venv test test-gpu demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu

demo: $(STAMP)
	$(VENV)/bin/posefeed demo --out $(DEMO_OUT)

bench: $(STAMP)
	$(VENV)/bin/posefeed bench synthetic

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache build *.egg-info
