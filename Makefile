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

.PHONY: demo test test-all lint setup data constraints clean

setup: $(STAMP) data

# The packages come in the exact versions of constraints.txt, so that a fresh machine gets the
# environment the tests passed in.
$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -c constraints.txt pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,plot,ray]"
	touch $(STAMP)

# Rewrites constraints.txt from a fresh environment holding the newest releases that the bounds
# in pyproject.toml allow; then run `make clean test` and commit the file if the tests pass.
CONSTRAINTS_VENV := build/constraints-venv
constraints:
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CONSTRAINTS_VENV)/bin/python -m pip install --quiet ".[test,plot,ray]"
	{ \
		echo "# The exact versions of a working environment of tfprune[test,plot,ray]: \`make\` installs"; \
		echo "# with them (-c constraints.txt). Written by \`make constraints\` on $$($(CONSTRAINTS_VENV)/bin/python -V)."; \
		$(CONSTRAINTS_VENV)/bin/python -m pip freeze --all --exclude tfprune; \
	} > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf build

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
