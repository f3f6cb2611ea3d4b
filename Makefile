# Two entry points (see README): `make demo` and `make test`. Both create .venv/ first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo clip: a real tennis serve from a PyPI sdist (override: make demo VIDEO=path/to/video.mp4).
VIDEO ?=

.PHONY: setup demo test clean

setup: $(VENV)/.installed

# torch is pinned and installed before anything else: on our machines 2.13.0 is a local CPU build,
# while an unpinned torch pulls gigabytes of CUDA packages.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: setup
	$(BIN)/co2 weights install i3d-rgb
	$(BIN)/co2 localize "$(if $(VIDEO),$(VIDEO),$$($(BIN)/co2 sample-video))" --plot demo-plots

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info demo-plots
