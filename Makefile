# Developer shortcuts; CI runs .ci/run.
PY := .venv/bin/python

.PHONY: install lint test bench bench-suite demo
install:
	python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
test:
	$(PY) -m pytest
bench:
	$(PY) bench/offline_throughput.py --count 5000
bench-suite:
	.venv/bin/pip install -e '.[bench]' && $(PY) -m bench.suite --out bench/results/latest
demo:
	.venv/bin/batch-processor demo
