# eventcore developer commands. `make help` lists them.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.DEFAULT_GOAL := help
.PHONY: help demo install-test test check lint typecheck rust-test pytest bench bench-smoke stubtest
.PHONY: wheel wheel-smoke docs

help:  ## Show this help.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

demo:  ## Install eventcore (release build) and run the bank example on the in-memory store.
	$(PIP) install --quiet .
	$(PYTHON) examples/bank.py

install-test:  ## Install eventcore editable with the test dependencies (and PostgreSQL 15 if missing).
	bash scripts/ensure-postgres.sh
	@# A version-specific build left from before abi3 would shadow the new one on import.
	rm -f python/eventcore/_core.cpython-*.so
	$(PIP) install --quiet -e ".[test]"
	@# The wheel test's CPythons (3.11-3.13): pyenv installs missing ones; CI fails without.
	$(PYTHON) scripts/dist.py pythons --install || [ -z "$$CI" ]

test: install-test check docs pytest bench-smoke  ## Install what the tests need and run the whole suite.

check: lint typecheck rust-test stubtest  ## Static checks: ruff, mypy, cargo fmt/clippy/test, stubtest.

lint:  ## ruff (lint + format check) on all Python code.
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck:  ## mypy --strict on the package.
	$(PYTHON) -m mypy python/eventcore

rust-test:  ## cargo fmt --check, clippy -D warnings, cargo test.
	cargo fmt --check
	cargo clippy --all-targets --quiet -- -D warnings
	cargo test --quiet

stubtest:  ## Check python/eventcore/_core.pyi against the compiled module.
	$(PYTHON) -m mypy.stubtest eventcore._core

docs:  ## Build the documentation site into site/ (mkdocs --strict: a broken link or reference fails).
	@# (NO_MKDOCS_2_WARNING: Material's banner about MkDocs 2.0, printed on every build.)
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict --quiet

pytest:  ## Run the Python test suite (starts its own PostgreSQL server).
	$(PYTHON) -m pytest -q

wheel:  ## Build the sdist and, from it, the abi3 wheel (manylinux via zig on Linux) into dist/.
	$(PYTHON) scripts/dist.py build --out dist

wheel-smoke: wheel  ## Install dist/'s wheel into fresh venvs of CPython 3.11-3.13 and run the smoke suite.
	$(PYTHON) scripts/dist.py smoke dist/eventcore_py-*.whl

bench-smoke:  ## Run every pytest-benchmark once, untimed: the benchmarks still work.
	$(PYTHON) -m pytest benches -q --benchmark-disable

bench:  ## The headline benchmarks (starts its own PostgreSQL); writes docs/benchmarks.md.
	$(PIP) install --quiet -e ".[test,bench]"
	$(PYTHON) benches/headline.py --out docs/
