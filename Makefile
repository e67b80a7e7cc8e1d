# The two commands of the README: `make demo` and `make test`. Both set up everything first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.alray-installed

.PHONY: setup demo test lint bench peers clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v java >/dev/null 2>&1 || { \
		echo "[setup] java missing: installing a JRE for Spark"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq openjdk-17-jre-headless; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: this version is a CPU build; an open range may pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,text,onnx,hf,labelstudio]"
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/alray demo

lint: setup
	$(VENV)/bin/ruff check alray jobs tests benchmarks
	$(VENV)/bin/mypy alray

test: lint
	$(VENV)/bin/python -m pytest

bench: setup
	$(PY) benchmarks/coreset.py --quick

# scikit-activeml's and baal's strategies on the simulator's loop (dev-only dependencies)
peers: setup
	$(PY) -m pip install -q -e ".[peers]"
	$(PY) benchmarks/peers.py

clean:
	rm -rf demo .pytest_cache .mypy_cache .ruff_cache
