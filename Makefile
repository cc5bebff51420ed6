# kdiag: the README's two commands are `make demo` and `make test`; both run scripts/setup first.
.PHONY: all setup kernel demo test test-unit test-integration bench lint clean

PY := .venv/bin/python

all: kernel

setup:
	@scripts/setup

kernel: setup
	@$(MAKE) -s -C kernel

demo: kernel
	@$(PY) scripts/demo.py

test: kernel
	@scripts/run-tests

test-unit: setup
	@$(PY) -m pytest -q tests/unit tests/golden

test-integration: kernel
	@$(PY) -m pytest -q -m integration tests/integration

bench: kernel
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: setup
	@$(PY) -m ruff check kdiag gdbext qmp_tools tests bench scripts
	@$(PY) -m mypy

clean:
	@$(MAKE) -s -C kernel clean
	@rm -rf .pytest_cache
