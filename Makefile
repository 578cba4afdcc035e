# Two commands do all the set-up: `make demo` runs the main job, `make test` the whole suite.
# Each builds the local virtual environment .venv from nothing the first time.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test interop bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

demo: $(STAMP)
	$(BIN)/actdsl demo --backend numba

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=30

# The optional integrations (PyTorch's CPU build, JAX, Dask, xarray), so that their tests run
interop: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[interop]' torch==2.13.0

# The benchmark and its peers (PyTorch CPU, JAX, numexpr); writes benchmarks/results/*.json
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]' torch==2.13.0
	$(BIN)/python benchmarks/bench.py --peak-gib 2
	$(BIN)/python benchmarks/bench.py --dtype float64 --no-compile

# The documentation (Sphinx HTML, formulas as MathML: no network needed to view it), warnings as errors
docs: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build
