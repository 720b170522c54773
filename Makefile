# Every target sets up .venv first, so a fresh clone needs only python3 and pip.
# bash: `make test` keeps each suite's exit status through a pipe (pipefail).
SHELL   := bash
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The package as users get it: the per-message path compiled by mypyc (setup.py).
# The editable install in $(VENV) stays pure Python, so that edits take effect.
COMPILED := $(VENV)/compiled
SOURCES  := $(shell find actors supervisors benchmarks -name '*.py') setup.py pyproject.toml

# Supported Pythons (requires-python >= 3.11), each tested on both builds by `make test`.
# $(PY) is one of them (3.11 on our machines) and keeps .venv, which every other
# target uses. The others need not be on the PATH: PYTHON_3.12=/path/to/python3.12
# names one; otherwise pyenv's newest 3.12.N, else python3.12 on the PATH. Each gets
# its own venv inside .venv, so git ignores it and `make clean` removes it.
PYTHONS    := 3.11 3.12 3.13
SUITES     := $(addprefix suite-,$(PYTHONS))
SUMMARY    := $(VENV)/test-summary
# Lazy (=): only `make test` and suite-* pay for asking python3 and pyenv.
PY_VERSION  = $(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo "$$HOME/.pyenv")
# Only plain releases: 3.13.0, not 3.13-dev, 3.13.0t (free-threaded) or a virtualenv.
pyenv_dir   = $(lastword $(shell ls -d $(PYENV_ROOT)/versions/$(1).* 2>/dev/null \
                  | grep -xE '.*/$(subst .,\.,$(1))\.[0-9]+' | sort -V))
python_for  = $(if $(filter $(1),$(PY_VERSION)),$(PY),$(or $(PYTHON_$(1)), \
                  $(if $(call pyenv_dir,$(1)),$(wildcard $(call pyenv_dir,$(1))/bin/python$(1))), \
                  $(shell command -v python$(1) 2>/dev/null)))
venv_for    = $(if $(filter $(1),$(PY_VERSION)),$(VENV),$(VENV)/py$(1))

.PHONY: browser test lint typecheck check-wheel pytest pytest-compiled compiled demo demo-cluster demo-dashboard bench bench-quick clean $(SUITES)

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'  # editable: pure Python (setup.py)
	touch $(STAMP)

# A build that cannot compile fails (setup.py), and the log's tail says why; the check
# after it is a guard that what was built is the compiled package.
$(COMPILED)/.built: $(STAMP) $(SOURCES)
	rm -rf $(COMPILED) build  # pip builds in the tree: no stale objects
	$(BIN)/python -m pip install --verbose --no-deps --target $(COMPILED) . > $(VENV)/compiled.log 2>&1 \
		|| { tail -n 40 $(VENV)/compiled.log; exit 1; }
	PYTHONPATH=$(COMPILED) $(BIN)/python -P -c 'import actors, sys; sys.exit(not actors.COMPILED)' \
		|| { grep -E -m 10 'error:|mypyc failed|mypyc is not' $(VENV)/compiled.log; \
		     echo "mypyc did not compile the package (is a C compiler installed?); see $(VENV)/compiled.log"; \
		     exit 1; }
	touch $@

compiled: $(COMPILED)/.built

# ruff, mypy and the wheel check once (ruff and mypy read the sources, whatever runs
# them; the wheel check runs on $(PY), the build settings it covers being the same for
# every Python), then the whole suite on every supported Python the machine has, twice
# each: on the pure-Python sources and on the compiled package. -k: a failing suite does
# not hide how the others went; the summary at the end says what ran, and make test
# fails if any suite did.
# The dashboard's browser tests drive Debian's headless Chromium and its driver. As root
# (CI), they are installed when missing; elsewhere, those tests skip and say why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver for the dashboard's browser tests"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
		|| echo "could not install chromium: the dashboard's browser tests will skip"; \
	else echo "no headless Chromium (apt-get install chromium chromium-driver):" \
		"the dashboard's browser tests will skip"; fi

test: lint typecheck check-wheel browser
	@rm -f $(SUMMARY); start=$$SECONDS; \
	$(MAKE) --no-print-directory -k $(SUITES); status=$$?; \
	echo; echo "make test: ruff, mypy and the wheel check passed; the suite took $$((SECONDS - start))s:"; \
	cat $(SUMMARY); \
	awk '$$3 == "FAILED" && !/ (passed|failed|errors?) / { f++ } \
		{ for (i = 2; i <= NF; i++) { n = $$(i - 1) + 0; \
			if ($$i ~ /^passed/) p += n; else if ($$i ~ /^(failed|errors?)/) f += n; \
			else if ($$i ~ /^skipped/) s += n } } \
		END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' $(SUMMARY); \
	exit $$status

# The suite on one Python, both builds: the targets below, run with that Python's venv.
# Each build adds a line to $(SUMMARY): version, build, outcome, pytest's tally, and the
# time with the venv or the mypyc build. A Python this machine lacks is skipped, loudly.
# The first Python's ($(PY)) compiled build, the one users install, runs every test; the
# other suites leave out the few slow files (tests/conftest.py SLOW_FILES: chaos, crash,
# demo and benchmark runs, minutes of real processes), as "deselected": they are there
# for what differs between versions and builds, and keep make test within its budget.
$(SUITES): suite-%:
	@py='$(strip $(call python_for,$*))'; venv='$(call venv_for,$*)'; \
	version=$$([ -n "$$py" ] && "$$py" -c 'import platform; print(platform.python_version())' 2>/dev/null); \
	if [ "$${version%.*}" != $* ]; then \
		echo "== Python $*: not found (tried PYTHON_$*, pyenv's $(PYENV_ROOT)/versions/$*.N," \
			"python$* on the PATH): skipped"; \
		printf '%-8s %-9s %-7s %s\n' $* - skipped "not installed on this machine" >> $(SUMMARY); \
		exit 0; \
	fi; \
	mkdir -p $$venv; set -o pipefail; failed=0; \
	for build in pure compiled; do \
		skip_slow=1; [ $* != $(PY_VERSION) ] || [ $$build != compiled ] || skip_slow=0; \
		target=pytest; [ $$build = pure ] || target=pytest-compiled; \
		echo "== Python $$version ($$py), $$build build, in $$venv"; start=$$SECONDS; \
		INORDER_SKIP_SLOW=$$skip_slow $(MAKE) --no-print-directory VENV=$$venv PY="$$py" $$target 2>&1 \
			| tee $$venv/test-$$build.log \
			&& outcome=passed || { outcome=FAILED; failed=1; }; \
		tally=$$(grep -E '^(=+ )?[0-9]+ [a-z]+.* in [0-9.]+s' $$venv/test-$$build.log | tail -n 1 | sed -E 's/^=+ | =+$$//g'); \
		printf '%-8s %-9s %-7s %s [%ss in all]\n' $$version $$build $$outcome \
			"$${tally:-no tally: pytest did not finish, see $$venv/test-$$build.log}" \
			$$((SECONDS - start)) >> $(SUMMARY); \
	done; \
	exit $$failed

lint: $(STAMP)
	$(BIN)/ruff check actors supervisors tests benchmarks examples setup.py
	$(BIN)/ruff format --check actors supervisors

typecheck: $(STAMP)
	$(BIN)/mypy actors supervisors

# The package as users get it from pip: a copy of the tree built in pip's isolated build
# env (only [build-system] requires: no redis), installed in a fresh venv, is compiled;
# a build that cannot compile fails and says how to get the pure-Python package
# (tests/test_build.py, the tests named wheel; the suites skip them). About a minute.
check-wheel: $(STAMP)
	INORDER_TEST_WHEEL=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_build.py -k wheel

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

# -P and --import-mode=append keep the source tree from shadowing the compiled copy.
pytest-compiled: $(COMPILED)/.built
	INORDER_EXPECT_COMPILED=1 PYTHONPATH=$(COMPILED) $(BIN)/python -P -m pytest -q \
		--import-mode=append -p no:cacheprovider

demo: $(STAMP)
	$(BIN)/python -m examples.chat_backend

# A simulated bot with its dashboard and /metrics on 127.0.0.1:8321 (until Ctrl-C).
demo-dashboard: $(STAMP)
	$(BIN)/python -m examples.dashboard_demo $(DEMO_ARGS)

# Three node processes and a producer on an embedded Valkey server (127.0.0.1), one node
# killed midway. Options go in DEMO_ARGS, e.g. make demo-cluster DEMO_ARGS="--users 60".
demo-cluster: $(STAMP)
	$(BIN)/python -m examples.cluster_demo $(DEMO_ARGS)

# Benchmarks measure the package as installed by users: compiled.
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--repeat 3 --markdown".
bench: $(COMPILED)/.built
	PYTHONPATH=$(COMPILED) $(BIN)/python -P -m benchmarks $(BENCH_ARGS)

bench-quick: $(COMPILED)/.built
	PYTHONPATH=$(COMPILED) $(BIN)/python -P -m benchmarks --quick

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
