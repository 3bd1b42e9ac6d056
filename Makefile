# tfprune: `make demo` trains the default SNIP experiment; `make test` runs the fast tests.
# Every target sets up what it needs: the virtual environment, the Python packages and, when
# run as root, Debian's dataset-fashion-mnist package (the offline default dataset).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# Test files run in TEST_WORKERS processes (pytest-xdist), each file whole in one of them.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=15

.PHONY: demo test test-all lint setup data clean

setup: $(STAMP) data

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,plot]"
	touch $(STAMP)

data:
	@if [ ! -f $(FASHION_MNIST) ]; then \
		if [ "$$(id -u)" = "0" ]; then \
			apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
		else \
			echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'"; \
		fi; \
	fi

demo: setup
	$(BIN)/python -m tfprune.train --gin_file=gin_configs/snip.gin

test: setup
	$(PYTEST) -m "not slow" tests

test-all: setup
	$(PYTEST) tests

lint: setup
	$(BIN)/ruff check tfprune tests scripts setup.py

clean:
	rm -rf $(VENV) build *.egg-info
