# Every target installs what it needs; a second run reinstalls nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
SYSDEPS := $(VENV)/.system-deps

.PHONY: help install test test-fast lint typecheck docs pytest demo bench soak attack clean

help:
	@echo "make demo   - set up and run the local horizontal-scaling demo"
	@echo "make test   - set up and run lint, type checks, the docs build and the test suite"
	@echo "make test-fast - the test suite without the tests marked slow (under a minute)"
	@echo "make lint   - ruff check, format check and the import layer contracts"
	@echo "make docs   - build the documentation site in strict mode (into $(VENV)/site)"
	@echo "make bench  - benchmarks (results in BENCHMARKS.md; BENCH_ARGS=--quick for a short run)"
	@echo "make soak   - one hour at half capacity (SOAK_ARGS=\"--minutes 5\" for a short run)"
	@echo "make attack - 30 minutes of attacks on the platform (ATTACK_ARGS=\"--minutes 5\")"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

$(SYSDEPS): scripts/system-deps.sh | $(PY)
	bash scripts/system-deps.sh
	@touch $@

install: $(INSTALLED)

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(INSTALLED)
	$(VENV)/bin/mypy worker tests bench

# The site is built outside the repository; --strict turns a broken link or anchor into a failure.
# NO_MKDOCS_2_WARNING silences the theme's notice about its successor, printed on every build.
docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(VENV)/site

pytest: $(INSTALLED) $(SYSDEPS)
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck docs pytest

# The edit-run loop: pytest without the tests marked slow (each over about a second).
test-fast: $(INSTALLED) $(SYSDEPS)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# DEMO_ARGS passes flags on, e.g. make demo DEMO_ARGS="--broker mosquitto --duration 30";
# only a Mosquitto demo needs the Debian package.
DEMO_ARGS ?=
demo: $(INSTALLED) $(if $(findstring mosquitto,$(DEMO_ARGS)),$(SYSDEPS))
	$(VENV)/bin/worker demo $(DEMO_ARGS)

bench: $(INSTALLED) $(SYSDEPS)
	$(PY) -m bench $(BENCH_ARGS)

# Not in CI: an hour of load (result in BENCHMARKS.md); SOAK_ARGS="--minutes 5" for a short run.
SOAK_ARGS ?=
soak: $(INSTALLED) $(SYSDEPS)
	$(PY) -m bench.soak $(SOAK_ARGS)

# Not in CI: every platform attack for 30 minutes in all under normal load (result in
# BENCHMARKS.md); ATTACK_ARGS="--minutes 5" for a short run.
ATTACK_ARGS ?=
attack: $(INSTALLED)
	$(PY) -m bench.attack $(ATTACK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
