# Every target sets up .venv first, so a fresh clone needs only python3 and pip.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The package as users get it: the per-message path compiled by mypyc (setup.py).
# The editable install in $(VENV) stays pure Python, so that edits take effect.
COMPILED := $(VENV)/compiled
SOURCES  := $(shell find actors supervisors benchmarks -name '*.py') setup.py pyproject.toml

.PHONY: test lint typecheck pytest pytest-compiled compiled demo bench bench-quick clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'  # editable: pure Python (setup.py)
	touch $(STAMP)

$(COMPILED)/.built: $(STAMP) $(SOURCES)
	rm -rf $(COMPILED) build  # pip builds in the tree: no stale objects
	$(BIN)/python -m pip install --quiet --no-deps --target $(COMPILED) .
	PYTHONPATH=$(COMPILED) $(BIN)/python -P -c 'import actors, sys; sys.exit(not actors.COMPILED)' \
		|| { echo "mypyc did not compile the package (is a C compiler installed?)"; exit 1; }
	touch $@

compiled: $(COMPILED)/.built

# The whole suite runs twice: on the pure-Python sources and on the compiled package.
test: lint typecheck pytest pytest-compiled

lint: $(STAMP)
	$(BIN)/ruff check actors supervisors tests benchmarks examples setup.py
	$(BIN)/ruff format --check actors supervisors

typecheck: $(STAMP)
	$(BIN)/mypy actors supervisors

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

# -P and --import-mode=append keep the source tree from shadowing the compiled copy.
pytest-compiled: $(COMPILED)/.built
	INORDER_EXPECT_COMPILED=1 PYTHONPATH=$(COMPILED) $(BIN)/python -P -m pytest -q \
		--import-mode=append -p no:cacheprovider

demo: $(STAMP)
	$(BIN)/python -m examples.chat_backend

# Benchmarks measure the package as installed by users: compiled.
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--repeat 3 --markdown".
bench: $(COMPILED)/.built
	PYTHONPATH=$(COMPILED) $(BIN)/python -P -m benchmarks $(BENCH_ARGS)

bench-quick: $(COMPILED)/.built
	PYTHONPATH=$(COMPILED) $(BIN)/python -P -m benchmarks --quick

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
